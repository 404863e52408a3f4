//! Base images: the default static base, an OCI layout on disk, or an image from a registry.

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

use hephy_core::{BuildError, Digest, Platform, Reference};
use oci_spec::image::{Descriptor, ImageConfiguration, ImageIndex, ImageManifest, MediaType};
use serde::{Deserialize, Deserializer};

use crate::layer::{write_layer, Entry, LayerError, LayerOptions};
use crate::layout::{from_oci_digest, LayoutError, OciLayout};
use crate::registry::RegistryOptions;

/// The user the default base and the Go and files backends run apps as.
pub const APP_UID: u32 = 65532;

/// Where the default base keeps the CA bundle (where Go, OpenSSL and rustls-native look).
pub const CA_BUNDLE_PATH: &str = "etc/ssl/certs/ca-certificates.crt";

/// The error returned by [`BaseImage::resolve`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BaseError {
    /// The base layout has no image for the platform.
    #[error("the base image {name} has no image for {platform}: build or pull the base for {platform}, or build for the platforms it has")]
    NoPlatform {
        /// The base.
        name: String,
        /// The platform.
        platform: Platform,
    },
    /// Pulling from a registry is not available.
    #[error("cannot pull base image {reference}: {message}")]
    Pull {
        /// The base.
        reference: String,
        /// Why, and what to do.
        message: String,
    },
    /// The base layout could not be read or the new one written.
    #[error(transparent)]
    Layout(#[from] LayoutError),
    /// The default base layer could not be written.
    #[error(transparent)]
    Layer(#[from] LayerError),
    /// A document of the base is malformed.
    #[error("invalid base image {name}: {message}")]
    Invalid {
        /// The base.
        name: String,
        /// What is wrong.
        message: String,
    },
}

impl From<BaseError> for BuildError {
    fn from(e: BaseError) -> Self {
        match e {
            BaseError::NoPlatform { .. } | BaseError::Invalid { .. } => {
                BuildError::InvalidContext {
                    problem: e.to_string(),
                }
            }
            other => BuildError::other(other.to_string(), other),
        }
    }
}

/// The image an app's files are put on.
///
/// In `hephy.toml` (`base = "..."` in `[build.go]` or `[build.files]`): `"default"`,
/// `"scratch"`, `"oci:PATH[:REF]"` for an OCI layout directory (relative to the context), or any registry
/// reference such as `"registry.example/library/alpine:3"`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum BaseImage {
    /// An empty base with what a static binary needs: `/etc/ssl/certs/ca-certificates.crt`
    /// (the host's when present, else the Mozilla bundle shipped in `webpki-root-certs`),
    /// `/etc/passwd` and `/etc/group` with `root` and the user `app` (uid and gid 65532), and
    /// `/tmp` (mode 1777).
    #[default]
    Default,
    /// No base at all (`"scratch"`): only the app's own layers.
    Scratch,
    /// An image in an OCI layout directory, chosen by platform (and by `ref.name` when given).
    Layout {
        /// The layout.
        path: PathBuf,
        /// The `org.opencontainers.image.ref.name` to use, if the layout holds several.
        reference: Option<String>,
    },
    /// An image pulled from a registry (an index is filtered by platform).
    Registry(Reference),
}

/// The error returned by [`BaseImage::from_str`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid base image {input:?}: {message}; write \"default\", \"oci:PATH[:REF]\" or a registry reference like \"registry.example/team/base:1\"")]
pub struct BaseImageError {
    input: String,
    message: String,
}

impl FromStr for BaseImage {
    type Err = BaseImageError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.is_empty() || s == "default" {
            return Ok(BaseImage::Default);
        }
        if s == "scratch" {
            return Ok(BaseImage::Scratch);
        }
        if let Some(rest) = s
            .strip_prefix("oci:")
            .or_else(|| s.strip_prefix("oci-layout:"))
        {
            let (path, reference) = match rest.rsplit_once(':') {
                Some((p, r)) if !r.contains('/') => (p, Some(r.to_owned())),
                _ => (rest, None),
            };
            return Ok(BaseImage::Layout {
                path: PathBuf::from(path),
                reference,
            });
        }
        s.parse::<Reference>()
            .map(BaseImage::Registry)
            .map_err(|e| BaseImageError {
                input: s.to_owned(),
                message: e.to_string(),
            })
    }
}

impl<'de> Deserialize<'de> for BaseImage {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A base image whose config and layers are in the layout being built.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ResolvedBase {
    /// The base's config.
    pub config: ImageConfiguration,
    /// Its layers, in order.
    pub layers: Vec<Descriptor>,
    /// Its name, for the `org.opencontainers.image.base.name` annotation (`None` for the
    /// default base, which has no name to pull it by).
    pub name: Option<String>,
    /// The digest of its manifest, for `org.opencontainers.image.base.digest`.
    pub digest: Option<Digest>,
}

impl BaseImage {
    /// Puts the base's blobs for `platform` into `target` and returns its config and layers.
    /// Relative layout paths are taken relative to `context_dir`; registry images are pulled
    /// with [`RegistryOptions::from_env`].
    pub async fn resolve(
        &self,
        platform: &Platform,
        target: &OciLayout,
        context_dir: &std::path::Path,
    ) -> Result<ResolvedBase, BaseError> {
        self.resolve_with(platform, target, context_dir, &RegistryOptions::from_env())
            .await
    }

    /// [`BaseImage::resolve`] with the registry options (credentials, plain-HTTP registries)
    /// to pull with.
    pub async fn resolve_with(
        &self,
        platform: &Platform,
        target: &OciLayout,
        context_dir: &std::path::Path,
        registry: &RegistryOptions,
    ) -> Result<ResolvedBase, BaseError> {
        match self {
            BaseImage::Default => {
                let target = target.clone();
                let platform = platform.clone();
                tokio::task::spawn_blocking(move || default_base(&platform, &target))
                    .await
                    .map_err(|e| BaseError::Layer(LayerError::Task(e.to_string())))?
            }
            BaseImage::Scratch => Ok(ResolvedBase {
                config: ImageConfiguration::default(),
                layers: Vec::new(),
                name: None,
                digest: None,
            }),
            BaseImage::Layout { path, reference } => {
                let path = context_dir.join(path);
                let source = OciLayout::open(&path)?;
                let name = match reference {
                    Some(r) => format!("oci:{}:{r}", path.display()),
                    None => format!("oci:{}", path.display()),
                };
                from_layout(&source, reference.as_deref(), platform, target, name)
            }
            BaseImage::Registry(reference) => {
                // Pulled into a shared cache layout: blobs already there are not fetched again,
                // and the target gets hard links to them.
                let cache = OciLayout::create(cache_dir().join("base-images"))?;
                let digest = registry
                    .pull_to_layout(reference, Some(platform), &cache)
                    .await
                    .map_err(|e| BaseError::Pull {
                        reference: reference.to_string(),
                        message: e.to_string(),
                    })?;
                let name = reference.repository_only().to_string();
                let name = match reference.tag() {
                    Some(t) => format!("{name}:{t}"),
                    None => name,
                };
                from_manifest(&cache, digest, target, name)
            }
        }
    }
}

/// hephy's cache directory: `$XDG_CACHE_HOME/hephy`, else `$HOME/.cache/hephy`, else one in the
/// temp directory.
pub fn cache_dir() -> PathBuf {
    std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|v| !v.is_empty())
                .map(|h| PathBuf::from(h).join(".cache"))
        })
        .unwrap_or_else(std::env::temp_dir)
        .join("hephy")
}

/// Picks the image for `platform` from the layout `source` (by `ref.name` when given), copies
/// its blobs into `target` and returns it as a base named `name`.
pub fn from_layout(
    source: &OciLayout,
    reference: Option<&str>,
    platform: &Platform,
    target: &OciLayout,
    name: String,
) -> Result<ResolvedBase, BaseError> {
    let invalid = |message: String| BaseError::Invalid {
        name: name.clone(),
        message,
    };
    let index = source.index()?;
    let candidates: Vec<Descriptor> = index
        .manifests()
        .iter()
        .filter(|d| reference.is_none() || crate::layout::ref_name_of(d) == reference)
        .cloned()
        .collect();
    let mut found: Option<Digest> = None;
    for d in candidates {
        if let Some(m) = pick_manifest(source, &d, platform, &invalid)? {
            found = Some(m);
            break;
        }
    }
    let Some(manifest_digest) = found else {
        return Err(BaseError::NoPlatform {
            name,
            platform: platform.clone(),
        });
    };
    from_manifest(source, manifest_digest, target, name)
}

/// Copies the image whose manifest is `manifest_digest` in `source` into `target` and returns
/// it as a base named `name`.
pub fn from_manifest(
    source: &OciLayout,
    manifest_digest: Digest,
    target: &OciLayout,
    name: String,
) -> Result<ResolvedBase, BaseError> {
    let invalid = |message: String| BaseError::Invalid {
        name: name.clone(),
        message,
    };
    let manifest: ImageManifest = source.read_json(&manifest_digest)?;
    let config_digest =
        from_oci_digest(manifest.config().digest()).map_err(|e| invalid(e.to_string()))?;
    let config: ImageConfiguration = source.read_json(&config_digest)?;
    target.copy_blob_from(source, &config_digest)?;
    for l in manifest.layers() {
        let d = from_oci_digest(l.digest()).map_err(|e| invalid(e.to_string()))?;
        target.copy_blob_from(source, &d)?;
    }
    Ok(ResolvedBase {
        config,
        layers: manifest.layers().clone(),
        name: Some(name),
        digest: Some(manifest_digest),
    })
}

fn pick_manifest(
    layout: &OciLayout,
    d: &Descriptor,
    platform: &Platform,
    invalid: &dyn Fn(String) -> BaseError,
) -> Result<Option<Digest>, BaseError> {
    let digest = from_oci_digest(d.digest()).map_err(|e| invalid(e.to_string()))?;
    let matches = |os: &str, arch: &str, variant: Option<&str>| {
        let text = match variant {
            Some(v) => format!("{os}/{arch}/{v}"),
            None => format!("{os}/{arch}"),
        };
        text.parse::<Platform>()
            .map(|p| p.matches(platform))
            .unwrap_or(false)
    };
    match d.media_type() {
        MediaType::ImageIndex => {
            let index: ImageIndex = layout.read_json(&digest)?;
            for m in index.manifests() {
                if let Some(found) = pick_manifest(layout, m, platform, invalid)? {
                    return Ok(Some(found));
                }
            }
            Ok(None)
        }
        _ => {
            if let Some(p) = d.platform() {
                return Ok(matches(
                    &p.os().to_string(),
                    &p.architecture().to_string(),
                    p.variant().as_deref(),
                )
                .then_some(digest));
            }
            // No platform on the descriptor: ask the config.
            let manifest: ImageManifest = layout.read_json(&digest)?;
            let cd =
                from_oci_digest(manifest.config().digest()).map_err(|e| invalid(e.to_string()))?;
            let config: ImageConfiguration = layout.read_json(&cd)?;
            Ok(matches(
                &config.os().to_string(),
                &config.architecture().to_string(),
                config.variant().as_deref(),
            )
            .then_some(digest))
        }
    }
}

/// The CA bundle of the default base: the host's, else the one shipped with hephy.
pub fn ca_bundle() -> Arc<[u8]> {
    if let Ok(b) = std::fs::read(std::path::Path::new("/").join(CA_BUNDLE_PATH)) {
        if !b.is_empty() {
            return b.into();
        }
    }
    shipped_ca_bundle()
}

/// The Mozilla CA bundle of the `webpki-root-certs` crate, as PEM.
pub fn shipped_ca_bundle() -> Arc<[u8]> {
    use base64::Engine as _;
    let mut out = String::new();
    for cert in webpki_root_certs::TLS_SERVER_ROOT_CERTS {
        let b64 = base64::engine::general_purpose::STANDARD.encode(cert.as_ref());
        out.push_str("-----BEGIN CERTIFICATE-----\n");
        for chunk in b64.as_bytes().chunks(64) {
            out.push_str(&String::from_utf8_lossy(chunk));
            out.push('\n');
        }
        out.push_str("-----END CERTIFICATE-----\n");
    }
    out.into_bytes().into()
}

/// The entries of the default base's one layer.
pub fn default_base_entries() -> Vec<Entry> {
    let passwd = format!(
        "root:x:0:0:root:/root:/sbin/nologin\napp:x:{APP_UID}:{APP_UID}:app:/home/app:/sbin/nologin\n"
    );
    let group = format!("root:x:0:\napp:x:{APP_UID}:\n");
    vec![
        Entry::dir("etc"),
        Entry::bytes("etc/passwd", passwd.into_bytes(), 0o644),
        Entry::bytes("etc/group", group.into_bytes(), 0o644),
        Entry::bytes(CA_BUNDLE_PATH, ca_bundle(), 0o644),
        Entry::dir("home/app").with_mode(0o755),
        Entry::dir("tmp").with_mode(0o1777),
    ]
}

fn default_base(platform: &Platform, target: &OciLayout) -> Result<ResolvedBase, BaseError> {
    // Fixed time and owner, so every app shares this layer's blob.
    let entries = crate::layer::normalize(default_base_entries())?;
    let layer = write_layer(target, &entries, &LayerOptions::default())?;
    let mut config = ImageConfiguration::default();
    config.set_architecture(oci_spec::image::Arch::from(platform.architecture()));
    config.set_os(oci_spec::image::Os::from(platform.os()));
    let mut rootfs = oci_spec::image::RootFs::default();
    rootfs.set_typ("layers".to_owned());
    rootfs.set_diff_ids(vec![layer.diff_id.to_string()]);
    config.set_rootfs(rootfs);
    let mut h = oci_spec::image::History::default();
    h.set_created(Some("1970-01-01T00:00:00Z".to_owned()));
    h.set_created_by(Some("hephy default base".to_owned()));
    config.set_history(Some(vec![h]));
    let mut run = oci_spec::image::Config::default();
    run.set_env(Some(vec![
        "PATH=/usr/local/bin:/usr/bin:/bin".to_owned(),
        format!("SSL_CERT_FILE=/{CA_BUNDLE_PATH}"),
    ]));
    run.set_user(Some(APP_UID.to_string()));
    run.set_working_dir(Some("/".to_owned()));
    config.set_config(Some(run));
    Ok(ResolvedBase {
        config,
        layers: vec![layer.descriptor()],
        name: None,
        digest: None,
    })
}
