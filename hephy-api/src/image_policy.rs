//! Which images `hephy deploy --image` may deploy: an image of an app the caller may push to, or an
//! image from a registry the admin allowed. Without it, a user could deploy another app's image (its
//! code and baked-in files) or any private image the server's own registry credentials can pull.

use hephy_core::{AppName, Reference};

/// Where a server keeps its apps' images, and which other registries an admin allowed.
///
/// ```
/// use hephy_api::image_policy::{ImagePolicy, ImageSource};
///
/// let policy = ImagePolicy::new("hephy.local", "").allow_registry("ghcr.io/acme");
/// let own: hephy_core::Reference = format!("hephy.local/hello@sha256:{}", "a".repeat(64)).parse()?;
/// assert_eq!(policy.classify(&own)?, ImageSource::App("hello".parse()?));
/// let theirs: hephy_core::Reference = format!("ghcr.io/acme/tool@sha256:{}", "b".repeat(64)).parse()?;
/// assert_eq!(policy.classify(&theirs)?, ImageSource::Allowed);
/// let other: hephy_core::Reference = format!("docker.io/library/redis@sha256:{}", "c".repeat(64)).parse()?;
/// assert!(policy.classify(&other).is_err());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImagePolicy {
    registry: String,
    prefix: String,
    allowed: Vec<String>,
}

/// What an image is, as far as the policy is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ImageSource {
    /// An image this server built for an app: the caller must be allowed to push to that app.
    App(AppName),
    /// An image from a registry the admin allowed.
    Allowed,
}

/// The error returned by [`ImagePolicy::classify`]: the image may not be deployed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ImagePolicyError {
    /// The image is in the server's own image store, but not under an app's name.
    #[error("{image} is in this server's image store but is no app's image: deploy REGISTRY/APP@sha256:... of an app you may push to")]
    NotAnApp {
        /// The refused image.
        image: String,
    },
    /// The image comes from a registry the admin did not allow.
    #[error("{image} comes from {registry}, which this server does not deploy from: deploy an image of an app you may push to ({own}/APP@sha256:...), or ask the admin to start hephy-server with --allow-image-registry {registry}")]
    RegistryNotAllowed {
        /// The refused image.
        image: String,
        /// Its registry.
        registry: String,
        /// Where this server's apps' images live.
        own: String,
    },
}

impl ImagePolicy {
    /// A policy for a server whose apps' images are `registry/prefix/APP` (`prefix` may be empty,
    /// as with the local image store `hephy.local/APP`). No other registry is allowed.
    pub fn new(registry: impl Into<String>, prefix: impl Into<String>) -> Self {
        ImagePolicy {
            registry: registry.into(),
            prefix: prefix.into().trim_matches('/').to_owned(),
            allowed: Vec::new(),
        }
    }

    /// Also allows every image under `registry` (`host[:port]`, or `host[:port]/path` for the
    /// repositories under that path only).
    pub fn allow_registry(mut self, registry: impl Into<String>) -> Self {
        let r = registry.into().trim_matches('/').to_owned();
        if !r.is_empty() {
            self.allowed.push(r);
        }
        self
    }

    /// The registries allowed besides the server's own image store.
    pub fn allowed_registries(&self) -> &[String] {
        &self.allowed
    }

    /// Whose `image` is: an app's (the caller must be allowed to push to it) or an allowed
    /// registry's; anything else is refused.
    pub fn classify(&self, image: &Reference) -> Result<ImageSource, ImagePolicyError> {
        let (registry, repository) = (image.registry(), image.repository());
        if registry == self.registry {
            let app = if self.prefix.is_empty() {
                Some(repository)
            } else {
                repository
                    .strip_prefix(self.prefix.as_str())
                    .and_then(|r| r.strip_prefix('/'))
            };
            if let Some(app) = app.and_then(|a| a.parse::<AppName>().ok()) {
                return Ok(ImageSource::App(app));
            }
            // Under the server's own prefix but not an app: still refused, even if the registry
            // itself is allowed below, so that no other app's build cache or image is reachable.
            if self.prefix.is_empty() || repository.starts_with(&format!("{}/", self.prefix)) {
                return Err(ImagePolicyError::NotAnApp {
                    image: image.to_string(),
                });
            }
        }
        let full = format!("{registry}/{repository}");
        let allowed = self.allowed.iter().any(|a| {
            a == registry || (full.starts_with(a.as_str()) && full[a.len()..].starts_with('/'))
        });
        if allowed {
            Ok(ImageSource::Allowed)
        } else {
            Err(ImagePolicyError::RegistryNotAllowed {
                image: image.to_string(),
                registry: registry.to_owned(),
                own: if self.prefix.is_empty() {
                    self.registry.clone()
                } else {
                    format!("{}/{}", self.registry, self.prefix)
                },
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Result<T = ()> = std::result::Result<T, Box<dyn std::error::Error>>;

    fn image(name: &str) -> Result<Reference> {
        Ok(format!("{name}@sha256:{}", "0".repeat(64)).parse()?)
    }

    #[test]
    fn apps_images_in_the_local_store() -> Result {
        let p = ImagePolicy::new("hephy.local", "");
        assert_eq!(
            p.classify(&image("hephy.local/hello")?)?,
            ImageSource::App("hello".parse()?)
        );
        let Err(e) = p.classify(&image("hephy.local/a/b")?) else {
            return Err("hephy.local/a/b must be refused".into());
        };
        assert!(matches!(e, ImagePolicyError::NotAnApp { .. }), "{e}");
        Ok(())
    }

    #[test]
    fn apps_images_under_a_registry_prefix() -> Result {
        let p =
            ImagePolicy::new("reg.example:5000", "team/apps").allow_registry("reg.example:5000");
        assert_eq!(
            p.classify(&image("reg.example:5000/team/apps/web")?)?,
            ImageSource::App("web".parse()?)
        );
        // The prefix's other repositories are nobody's to deploy, even from an allowed registry.
        assert!(p
            .classify(&image("reg.example:5000/team/apps/web/cache")?)
            .is_err());
        // Outside the prefix, the allowed registry decides.
        assert_eq!(
            p.classify(&image("reg.example:5000/tools/migrate")?)?,
            ImageSource::Allowed
        );
        Ok(())
    }

    #[test]
    fn other_registries_need_the_admins_word() -> Result {
        let p = ImagePolicy::new("hephy.local", "").allow_registry("ghcr.io/acme/");
        assert_eq!(
            p.classify(&image("ghcr.io/acme/tool")?)?,
            ImageSource::Allowed
        );
        // A path prefix allows whole path segments only.
        let Err(e) = p.classify(&image("ghcr.io/acmecorp/tool")?) else {
            return Err("ghcr.io/acmecorp/tool must be refused".into());
        };
        insta::assert_snapshot!(e.to_string(), @"ghcr.io/acmecorp/tool@sha256:0000000000000000000000000000000000000000000000000000000000000000 comes from ghcr.io, which this server does not deploy from: deploy an image of an app you may push to (hephy.local/APP@sha256:...), or ask the admin to start hephy-server with --allow-image-registry ghcr.io");
        Ok(())
    }
}
