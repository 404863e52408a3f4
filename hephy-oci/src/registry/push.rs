//! [`RegistryPublisher`]: pushes built images to an OCI registry.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::TryStreamExt;
use hephy_core::{
    async_trait, AppName, Digest, Events, Platform, PublishError, PublishRequest, Published,
    Publisher, Reference,
};
use oci_client::errors::OciDistributionError;
use oci_client::RegistryOperation;
use oci_spec::image::{Descriptor, ImageIndex, MediaType};
use reqwest::header::HeaderValue;
use serde_json::Value;

use super::{
    chain, human_bytes, is_index_media_type, is_unauthorized, is_unreachable, refusal, short,
    Connection, RegistryOptions,
};
use crate::layout::{canonical_json, to_oci_digest, to_oci_platform, OciLayout};

/// The manifest annotation naming the base image (set by the image builder).
const ANNOTATION_BASE_NAME: &str = "org.opencontainers.image.base.name";

/// Reads of blobs from disk for upload use this buffer size.
const READ_CHUNK: usize = 256 * 1024;

/// Publishes images to `<registry>/<prefix>/<app>:<tag>` in an OCI registry.
///
/// Blobs the registry already has are skipped (checked with `HEAD`), blobs it has in another
/// repository (a base image, or another app pushed by this publisher) are mounted instead of
/// uploaded, and the rest are streamed from disk, several at once. Manifests are pushed only
/// after all their blobs; several platforms end with one image index under the tag.
///
/// ```no_run
/// use std::sync::Arc;
/// use hephy_oci::registry::{RegistryAuth, RegistryOptions, RegistryPublisher};
/// # fn main() -> Result<(), hephy_core::PublishError> {
/// let publisher = RegistryPublisher::builder("registry.example:5000")
///     .prefix("apps")
///     .options(RegistryOptions::new().auth(RegistryAuth::basic("ci", "secret")))
///     .build()?;
/// // Pipeline::builder().publisher(Arc::new(publisher)) ...
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RegistryPublisher {
    registry: String,
    prefix: Option<String>,
    connection: Connection,
    /// Blob digest -> repositories of this registry known to hold it: mount sources.
    known: Arc<Mutex<HashMap<Digest, BTreeSet<String>>>>,
    last: Arc<Mutex<Option<PushStats>>>,
}

impl fmt::Debug for RegistryPublisher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistryPublisher")
            .field("registry", &self.registry)
            .field("prefix", &self.prefix)
            .field("options", &self.connection.options)
            .finish_non_exhaustive()
    }
}

/// Builds a [`RegistryPublisher`]; start with [`RegistryPublisher::builder`].
#[derive(Debug, Clone)]
pub struct RegistryPublisherBuilder {
    registry: String,
    prefix: Option<String>,
    options: RegistryOptions,
}

impl RegistryPublisherBuilder {
    /// Puts apps under `prefix/` in the registry (`team` or `org/team`).
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        let prefix = prefix.into();
        let prefix = prefix.trim_matches('/');
        self.prefix = (!prefix.is_empty()).then(|| prefix.to_owned());
        self
    }

    /// Credentials, insecure registries, retries and parallelism.
    pub fn options(mut self, options: RegistryOptions) -> Self {
        self.options = options;
        self
    }

    /// Checks the registry name and prefix and builds the publisher.
    pub fn build(self) -> Result<RegistryPublisher, PublishError> {
        let probe = match &self.prefix {
            Some(p) => format!("{p}/app"),
            None => "app".to_owned(),
        };
        Reference::new(&self.registry, &probe, None, None).map_err(|e| PublishError::Invalid {
            problem: format!(
                "invalid registry {:?} or prefix {:?}: {e}",
                self.registry,
                self.prefix.as_deref().unwrap_or("")
            ),
        })?;
        if self.registry.contains('/') || self.registry.contains("://") {
            return Err(PublishError::Invalid {
                problem: format!(
                    "invalid registry {:?}: give only host[:port], like registry.example:5000, and put the path in the prefix",
                    self.registry
                ),
            });
        }
        Ok(RegistryPublisher {
            registry: self.registry,
            prefix: self.prefix,
            connection: Connection::new(self.options),
            known: Arc::default(),
            last: Arc::default(),
        })
    }
}

/// What one push moved, logged at its end and kept by [`RegistryPublisher::last_push_stats`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PushStats {
    /// Distinct blobs (configs and layers) the images refer to.
    pub blobs: usize,
    /// Their total size.
    pub blob_bytes: u64,
    /// Blobs uploaded.
    pub uploaded: usize,
    /// Bytes uploaded.
    pub uploaded_bytes: u64,
    /// Blobs the repository already had.
    pub existing: usize,
    /// Blobs mounted from another repository of the registry.
    pub mounted: usize,
    /// Manifests and indexes pushed.
    pub manifests: usize,
    /// How long the push took.
    pub elapsed: Duration,
}

impl fmt::Display for PushStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "uploaded {} of {} blobs ({} of {}), {} already there, {} mounted, {} manifests, in {}",
            self.uploaded,
            self.blobs,
            human_bytes(self.uploaded_bytes),
            human_bytes(self.blob_bytes),
            self.existing,
            self.mounted,
            self.manifests,
            hephy_core::format_elapsed(self.elapsed),
        )
    }
}

#[derive(Default)]
struct Counters {
    uploaded: AtomicUsize,
    uploaded_bytes: AtomicU64,
    existing: AtomicUsize,
    mounted: AtomicUsize,
}

/// A blob to push, read from a built layout.
#[derive(Debug, Clone)]
struct Blob {
    digest: Digest,
    size: u64,
    path: PathBuf,
    kind: &'static str,
    mount_from: Vec<String>,
}

/// A manifest to push, exactly as built.
#[derive(Debug)]
struct ManifestToPush {
    digest: Digest,
    bytes: Vec<u8>,
    media_type: String,
    platform: Option<Platform>,
}

impl RegistryPublisher {
    /// A builder for a publisher into `registry` (`host[:port]`).
    pub fn builder(registry: impl Into<String>) -> RegistryPublisherBuilder {
        RegistryPublisherBuilder {
            registry: registry.into(),
            prefix: None,
            options: RegistryOptions::default(),
        }
    }

    /// The registry pushed to.
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The repository `app` is pushed to: `<prefix>/<app>`.
    pub fn repository(&self, app: &AppName) -> String {
        match &self.prefix {
            Some(p) => format!("{p}/{app}"),
            None => app.to_string(),
        }
    }

    /// What the last push moved (`None` before the first push finished).
    pub fn last_push_stats(&self) -> Option<PushStats> {
        self.last.lock().ok().and_then(|s| s.clone())
    }

    /// Tells the publisher that `repository` of its registry holds `blobs`, so pushes of other
    /// repositories mount them from there instead of uploading them.
    pub fn remember_blobs(&self, repository: &str, blobs: impl IntoIterator<Item = Digest>) {
        if let Ok(mut known) = self.known.lock() {
            for b in blobs {
                known.entry(b).or_default().insert(repository.to_owned());
            }
        }
    }

    fn mount_sources(&self, digest: &Digest, target_repo: &str, base: Option<&str>) -> Vec<String> {
        let mut out: Vec<String> = base
            .filter(|b| *b != target_repo)
            .map(|b| vec![b.to_owned()])
            .unwrap_or_default();
        if let Ok(known) = self.known.lock() {
            if let Some(repos) = known.get(digest) {
                for r in repos {
                    if r != target_repo && !out.contains(r) {
                        out.push(r.clone());
                    }
                }
            }
        }
        out
    }

    fn error(&self, what: &str, e: OciDistributionError) -> PublishError {
        let registry = self.registry.clone();
        if is_unauthorized(&e) {
            return PublishError::Unauthorized {
                hint: format!(
                    "{} to {what} with {}: give hephy a registry user and password (or token) \
                     that may push there, or run `docker login {registry}` so that they are in \
                     ~/.docker/config.json; nothing was published",
                    refusal(&e),
                    self.connection.options.credentials().describe(),
                ),
                registry,
            };
        }
        if is_unreachable(&e) {
            return PublishError::Unreachable {
                message: self.connection.unreachable_message(
                    &registry,
                    "; if it serves plain HTTP, list it as an insecure registry",
                ),
                registry,
                source: Some(Box::new(e)),
            };
        }
        PublishError::Other {
            message: format!("cannot {what} at registry {registry}: {}", chain(&e)),
            source: Some(Box::new(e)),
        }
    }

    /// Reads every image's manifest and blobs from its layout.
    async fn collect(
        &self,
        request: &PublishRequest,
        repository: &str,
    ) -> Result<(Vec<ManifestToPush>, Vec<Blob>), PublishError> {
        let invalid = |problem: String| PublishError::Invalid { problem };
        let mut manifests = Vec::new();
        let mut blobs: Vec<Blob> = Vec::new();
        for image in &request.images {
            let layout = OciLayout::open(&image.layout).map_err(|e| {
                invalid(format!(
                    "the built image at {} is not an OCI layout: {e}",
                    image.layout.display()
                ))
            })?;
            let path = layout.blob_path(&image.manifest);
            let bytes = tokio::fs::read(&path).await.map_err(|e| {
                invalid(format!(
                    "cannot read manifest {} of the built image at {}: {e}; rebuild the image",
                    image.manifest,
                    image.layout.display()
                ))
            })?;
            let manifest: Value = serde_json::from_slice(&bytes)
                .map_err(|e| invalid(format!("manifest {} is not JSON: {e}", image.manifest)))?;
            let media_type = manifest
                .get("mediaType")
                .and_then(Value::as_str)
                .unwrap_or("application/vnd.oci.image.manifest.v1+json")
                .to_owned();
            if is_index_media_type(&media_type) {
                return Err(invalid(format!(
                    "{} in {} is an index; give one image manifest per platform",
                    image.manifest,
                    image.layout.display()
                )));
            }
            let base = manifest
                .pointer("/annotations")
                .and_then(|a| a.get(ANNOTATION_BASE_NAME))
                .and_then(Value::as_str)
                .and_then(|n| n.parse::<Reference>().ok())
                .filter(|r| r.registry() == self.registry)
                .map(|r| r.repository().to_owned());
            let mut descriptors = Vec::new();
            if let Some(c) = manifest.get("config") {
                descriptors.push(("config", c));
            }
            for l in manifest
                .get("layers")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                descriptors.push(("layer", l));
            }
            let mut config_platform = None;
            for (kind, d) in descriptors {
                let text = d.get("digest").and_then(Value::as_str).unwrap_or_default();
                let digest: Digest = text.parse().map_err(|e| {
                    invalid(format!(
                        "manifest {} refers to a bad digest: {e}",
                        image.manifest
                    ))
                })?;
                let size = d.get("size").and_then(Value::as_u64).unwrap_or(0);
                let path = layout.blob_path(&digest);
                let on_disk = tokio::fs::metadata(&path).await.map_err(|_| {
                    invalid(format!(
                        "blob {digest} of the built image is missing from {}; rebuild the image",
                        image.layout.display()
                    ))
                })?;
                if on_disk.len() != size {
                    return Err(invalid(format!(
                        "blob {digest} in {} has {} bytes but the manifest says {size}; rebuild the image",
                        image.layout.display(),
                        on_disk.len()
                    )));
                }
                if kind == "config" {
                    config_platform = Some(read_platform(&path).await);
                }
                if !blobs.iter().any(|b| b.digest == digest) {
                    blobs.push(Blob {
                        mount_from: self.mount_sources(&digest, repository, base.as_deref()),
                        digest,
                        size,
                        path,
                        kind,
                    });
                }
            }
            // The platform the image says it is for wins over what the build was asked for.
            let platform = config_platform.flatten().or_else(|| image.platform.clone());
            manifests.push(ManifestToPush {
                digest: image.manifest.clone(),
                bytes,
                media_type,
                platform,
            });
        }
        Ok((manifests, blobs))
    }

    async fn push_blob(
        &self,
        target: &oci_client::Reference,
        blob: &Blob,
        events: &Events,
        counters: &Counters,
    ) -> Result<(), PublishError> {
        let client = &self.connection.client;
        let digest = blob.digest.to_string();
        let exists = self
            .connection
            .retry(|| client.blob_exists(target, &digest))
            .await
            .map_err(|e| self.error("check blobs", e))?;
        if exists {
            events.log(format!(
                "{} {} already exists",
                blob.kind,
                short(&blob.digest)
            ));
            counters.existing.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        for from in &blob.mount_from {
            let source = oci_client::Reference::with_tag(
                self.registry.clone(),
                from.clone(),
                "latest".to_owned(),
            );
            // A registry that cannot mount answers 202 and opens an upload instead, which
            // oci-client reports as an error: then we upload.
            match client.mount_blob(target, &source, &digest).await {
                Ok(()) => {
                    events.log(format!(
                        "{} {} mounted from {from}",
                        blob.kind,
                        short(&blob.digest)
                    ));
                    counters.mounted.fetch_add(1, Ordering::Relaxed);
                    return Ok(());
                }
                Err(e) => tracing::debug!(error = %e, from, "cross-repository mount failed"),
            }
        }
        events.log(format!(
            "pushing {} {} ({})",
            blob.kind,
            short(&blob.digest),
            human_bytes(blob.size)
        ));
        let started = Instant::now();
        self.connection
            .retry(|| async {
                // Reopened on every try: a retried upload starts from the first byte.
                let file = tokio::fs::File::open(&blob.path).await?;
                let stream = tokio_util::io::ReaderStream::with_capacity(file, READ_CHUNK)
                    .map_err(OciDistributionError::IoError);
                client
                    .push_blob_stream(target, stream, &digest, Some(blob.size))
                    .await
            })
            .await
            .map_err(|e| self.error("upload blobs", e))?;
        tracing::debug!(digest = %blob.digest, elapsed = ?started.elapsed(), "blob uploaded");
        counters.uploaded.fetch_add(1, Ordering::Relaxed);
        counters
            .uploaded_bytes
            .fetch_add(blob.size, Ordering::Relaxed);
        Ok(())
    }

    async fn push_manifest(
        &self,
        target: &oci_client::Reference,
        bytes: Vec<u8>,
        media_type: &str,
        what: &str,
    ) -> Result<(), PublishError> {
        let content_type =
            HeaderValue::from_str(media_type).map_err(|_| PublishError::Invalid {
                problem: format!("invalid media type {media_type:?} in {what}"),
            })?;
        let bytes = bytes::Bytes::from(bytes);
        self.connection
            .retry(|| {
                self.connection.client.push_manifest_raw(
                    target,
                    bytes.clone(),
                    content_type.clone(),
                )
            })
            .await
            .map_err(|e| self.error(&format!("push {what}"), e))?;
        Ok(())
    }
}

/// `os`/`architecture`/`variant` of an image config.
async fn read_platform(path: &std::path::Path) -> Option<Platform> {
    let bytes = tokio::fs::read(path).await.ok()?;
    let config: Value = serde_json::from_slice(&bytes).ok()?;
    let os = config.get("os")?.as_str()?;
    let arch = config.get("architecture")?.as_str()?;
    let text = match config.get("variant").and_then(Value::as_str) {
        Some(v) => format!("{os}/{arch}/{v}"),
        None => format!("{os}/{arch}"),
    };
    text.parse().ok()
}

fn index_entry(m: &ManifestToPush) -> Result<Descriptor, PublishError> {
    let digest = to_oci_digest(&m.digest).map_err(|e| PublishError::other("invalid digest", e))?;
    let mut d = Descriptor::new(
        MediaType::from(m.media_type.as_str()),
        m.bytes.len() as u64,
        digest,
    );
    if let Some(p) = &m.platform {
        d.set_platform(Some(
            to_oci_platform(p).map_err(|e| PublishError::other("invalid platform", e))?,
        ));
    }
    Ok(d)
}

#[async_trait]
impl Publisher for RegistryPublisher {
    async fn publish(
        &self,
        request: &PublishRequest,
        events: &Events,
    ) -> Result<Published, PublishError> {
        let started = Instant::now();
        if request.images.is_empty() {
            return Err(PublishError::Invalid {
                problem: "nothing to publish: the build produced no images".to_owned(),
            });
        }
        let repository = self.repository(&request.app);
        let reference = Reference::new(&self.registry, &repository, Some(&request.tag), None)
            .map_err(|e| PublishError::Invalid {
                problem: format!("cannot name the image: {e}"),
            })?;
        let (mut manifests, blobs) = self.collect(request, &repository).await?;
        // The index lists platforms in a fixed order, so the same build gives the same digest
        // whatever order the builds finished in.
        manifests.sort_by_key(|m| m.platform.as_ref().map(Platform::to_string));
        let target = super::oci_reference(&reference);
        events.log(format!("pushing to {reference}"));

        let auth = self
            .connection
            .options
            .credentials()
            .resolve(&self.registry)
            .map_err(|e| PublishError::other(e.to_string(), e))?;
        let client = &self.connection.client;
        self.connection
            .retry(|| client.auth(&target, &auth, RegistryOperation::Push))
            .await
            .map_err(|e| self.error("sign in", e))?;

        let counters = Counters::default();
        futures_util::stream::iter(blobs.iter().map(Ok))
            .try_for_each_concurrent(self.connection.options.concurrency, |blob| {
                self.push_blob(&target, blob, events, &counters)
            })
            .await?;

        // Blobs are all there: now the manifests, which the registry checks against them.
        let mut pushed = 0;
        let (digest, is_index) = if manifests.len() == 1 {
            let m = &manifests[0];
            self.push_manifest(&target, m.bytes.clone(), &m.media_type, "the manifest")
                .await?;
            pushed += 1;
            (m.digest.clone(), false)
        } else {
            let mut entries = Vec::new();
            for m in &manifests {
                let by_digest = target.clone_with_digest(m.digest.to_string());
                let what = match &m.platform {
                    Some(p) => format!("the manifest for {p}"),
                    None => format!("manifest {}", short(&m.digest)),
                };
                self.push_manifest(&by_digest, m.bytes.clone(), &m.media_type, &what)
                    .await?;
                pushed += 1;
                entries.push(index_entry(m)?);
            }
            let mut index = ImageIndex::default();
            index.set_media_type(Some(MediaType::ImageIndex));
            index.set_manifests(entries);
            if !request.annotations.is_empty() {
                index.set_annotations(Some(request.annotations.clone().into_iter().collect()));
            }
            let bytes = canonical_json(&index)
                .map_err(|e| PublishError::other("cannot serialize the image index", e))?;
            let digest = Digest::sha256(hex_sha256(&bytes))
                .map_err(|e| PublishError::other("cannot hash the image index", e))?;
            self.push_manifest(
                &target,
                bytes,
                "application/vnd.oci.image.index.v1+json",
                "the image index",
            )
            .await?;
            pushed += 1;
            (digest, true)
        };
        let platforms: Vec<Platform> = manifests
            .iter()
            .filter_map(|m| m.platform.clone())
            .collect();
        self.remember_blobs(&repository, blobs.iter().map(|b| b.digest.clone()));

        let stats = PushStats {
            blobs: blobs.len(),
            blob_bytes: blobs.iter().map(|b| b.size).sum(),
            uploaded: counters.uploaded.load(Ordering::Relaxed),
            uploaded_bytes: counters.uploaded_bytes.load(Ordering::Relaxed),
            existing: counters.existing.load(Ordering::Relaxed),
            mounted: counters.mounted.load(Ordering::Relaxed),
            manifests: pushed,
            elapsed: started.elapsed(),
        };
        events.log(format!("pushed {reference}@{digest}: {stats}"));
        tracing::info!(%reference, %digest, %stats, "pushed");
        if let Ok(mut last) = self.last.lock() {
            *last = Some(stats);
        }
        Ok(Published::new(reference, digest, platforms, is_index))
    }
}

fn hex_sha256(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(bytes))
}
