//! Image references such as `registry.example.com:5000/team/app:v3@sha256:…`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::Digest;

/// The registry a reference without a registry part points at, as Docker reads it.
pub const DEFAULT_REGISTRY: &str = "docker.io";

/// The error returned by [`Reference::from_str`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReferenceError {
    /// Nothing was given.
    #[error("empty image reference: write it as [REGISTRY/]REPOSITORY[:TAG][@DIGEST], like localhost:5000/myapp:v1")]
    Empty,
    /// The registry host is not a valid host name or `host:port`.
    #[error("invalid registry {registry:?} in image reference {input:?}: use a host name with an optional :port, like registry.example.com:5000")]
    Registry {
        /// The text that was given.
        input: String,
        /// The registry part.
        registry: String,
    },
    /// A repository path component breaks the distribution spec's rules.
    #[error("invalid repository {repository:?} in image reference {input:?}: use lowercase letters, digits and single separators (. _ __ -) between them, with / between path components")]
    Repository {
        /// The text that was given.
        input: String,
        /// The repository part.
        repository: String,
    },
    /// The tag is too long or has characters tags cannot have.
    #[error("invalid tag {tag:?} in image reference {input:?}: a tag is 1 to 128 characters of letters, digits, _ . -, and cannot start with . or -")]
    Tag {
        /// The text that was given.
        input: String,
        /// The tag part.
        tag: String,
    },
    /// The digest after `@` is not valid.
    #[error("invalid digest in image reference {input:?}: {source}")]
    Digest {
        /// The text that was given.
        input: String,
        /// Why the digest is invalid.
        #[source]
        source: crate::DigestError,
    },
}

/// An image reference, parsed as Docker and OCI tools read it: `[registry/]repository[:tag][@digest]`.
///
/// A reference without a registry points at Docker Hub (`docker.io`), and a one-component
/// repository there gets Docker's `library/` prefix. Display writes the full form back.
///
/// ```
/// use hephy_core::Reference;
/// let r: Reference = "localhost:5000/apps/hello:v2".parse()?;
/// assert_eq!(r.registry(), "localhost:5000");
/// assert_eq!(r.repository(), "apps/hello");
/// assert_eq!(r.tag(), Some("v2"));
/// assert_eq!(r.digest(), None);
///
/// let hub: Reference = "alpine".parse()?;
/// assert_eq!(hub.to_string(), "docker.io/library/alpine");
/// # Ok::<(), hephy_core::ReferenceError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Reference {
    registry: String,
    repository: String,
    tag: Option<String>,
    digest: Option<Digest>,
}

impl Reference {
    /// A reference from its parts, validated as [`Reference::from_str`] would.
    pub fn new(
        registry: &str,
        repository: &str,
        tag: Option<&str>,
        digest: Option<Digest>,
    ) -> Result<Self, ReferenceError> {
        let mut text = format!("{registry}/{repository}");
        if let Some(tag) = tag {
            text.push(':');
            text.push_str(tag);
        }
        let mut r: Reference = text.parse()?;
        // "registry/x" with a registry that does not look like one is still meant as a registry.
        if r.registry != registry {
            r.registry = registry.to_owned();
            r.repository = repository.to_owned();
        }
        r.digest = digest;
        Ok(r)
    }

    /// The registry host, with its port if one was given: `localhost:5000`.
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The repository path within the registry: `apps/hello`.
    pub fn repository(&self) -> &str {
        &self.repository
    }

    /// The tag, if one was given.
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// The digest, if one was given.
    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    /// The same reference pinned to `digest` (the tag is kept for readers).
    pub fn with_digest(&self, digest: Digest) -> Self {
        Reference {
            digest: Some(digest),
            ..self.clone()
        }
    }

    /// The same repository with another tag and no digest.
    pub fn with_tag(&self, tag: &str) -> Result<Self, ReferenceError> {
        Reference::new(&self.registry, &self.repository, Some(tag), None)
    }

    /// The same repository with no tag and no digest.
    pub fn repository_only(&self) -> Self {
        Reference {
            tag: None,
            digest: None,
            ..self.clone()
        }
    }

    /// Whether the reference names an exact manifest by digest.
    pub fn is_pinned(&self) -> bool {
        self.digest.is_some()
    }
}

fn valid_registry(s: &str) -> bool {
    if s.is_empty() {
        return false;
    }
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        // IPv6 literal: [::1]:5000
        match rest.split_once(']') {
            Some((h, p))
                if !h.is_empty() && h.chars().all(|c| c.is_ascii_hexdigit() || c == ':') =>
            {
                return p.is_empty() || p.strip_prefix(':').is_some_and(valid_port);
            }
            _ => return false,
        }
    } else {
        match s.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    };
    let host_ok = !host.is_empty()
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    host_ok && port.is_none_or(valid_port)
}

fn valid_port(p: &str) -> bool {
    !p.is_empty()
        && p.len() <= 5
        && p.bytes().all(|b| b.is_ascii_digit())
        && p.parse::<u16>().is_ok()
}

fn valid_component(c: &str) -> bool {
    // [a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*
    let b = c.as_bytes();
    if b.is_empty() || !is_alnum(b[0]) || !is_alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if is_alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !is_alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
}

fn is_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

fn valid_tag(t: &str) -> bool {
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|&c| c.is_ascii_alphanumeric() || c == b'_' || c == b'.' || c == b'-')
}

impl FromStr for Reference {
    type Err = ReferenceError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        if input.trim().is_empty() {
            return Err(ReferenceError::Empty);
        }
        let (name_tag, digest) = match input.split_once('@') {
            Some((n, d)) => (
                n,
                Some(
                    d.parse::<Digest>()
                        .map_err(|source| ReferenceError::Digest {
                            input: input.to_owned(),
                            source,
                        })?,
                ),
            ),
            None => (input, None),
        };
        let (name, tag) = match name_tag.rfind(':') {
            Some(i) if !name_tag[i + 1..].contains('/') => {
                (&name_tag[..i], Some(name_tag[i + 1..].to_owned()))
            }
            _ => (name_tag, None),
        };
        let (registry, repository) = match name.split_once('/') {
            Some((first, rest))
                if first.contains('.')
                    || first.contains(':')
                    || first == "localhost"
                    || first.starts_with('[') =>
            {
                (first.to_owned(), rest.to_owned())
            }
            _ => (DEFAULT_REGISTRY.to_owned(), name.to_owned()),
        };
        if !valid_registry(&registry) {
            return Err(ReferenceError::Registry {
                input: input.to_owned(),
                registry,
            });
        }
        let repository = if registry == DEFAULT_REGISTRY && !repository.contains('/') {
            format!("library/{repository}")
        } else {
            repository
        };
        if repository.len() > 255 || !repository.split('/').all(valid_component) {
            return Err(ReferenceError::Repository {
                input: input.to_owned(),
                repository,
            });
        }
        if let Some(t) = &tag {
            if !valid_tag(t) {
                return Err(ReferenceError::Tag {
                    input: input.to_owned(),
                    tag: t.clone(),
                });
            }
        }
        Ok(Reference {
            registry,
            repository,
            tag,
            digest,
        })
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

impl Serialize for Reference {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Reference {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}
