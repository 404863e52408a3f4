//! Pulling an image (one platform, or a whole index) from a registry into an OCI layout.

use std::io::Write;

use futures_util::{StreamExt, TryStreamExt};
use hephy_core::{BoxError, Digest, Platform, Reference};
use oci_client::errors::OciDistributionError;
use oci_client::manifest::OciDescriptor;
use oci_client::RegistryOperation;
use oci_spec::image::{Descriptor, MediaType};
use serde_json::Value;

use super::{
    chain, is_index_media_type, is_transient, is_unauthorized, is_unreachable, oci_reference,
    refusal, status_of, Connection, RegistryOptions, MANIFEST_MEDIA_TYPES,
};
use crate::layout::{to_oci_digest, to_oci_platform, LayoutError, OciLayout};

/// The error returned by [`pull_to_layout`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PullError {
    /// The registry refused the credentials.
    #[error("registry {registry} refused the credentials for pulling {reference}: {hint}")]
    Unauthorized {
        /// The registry.
        registry: String,
        /// The image.
        reference: String,
        /// What to do.
        hint: String,
    },
    /// Nothing answered.
    #[error("cannot reach registry {registry}: {message}")]
    Unreachable {
        /// The registry.
        registry: String,
        /// What to check.
        message: String,
        /// Why.
        #[source]
        source: Option<BoxError>,
    },
    /// The registry has no such image.
    #[error("image {reference} not found: check the repository and tag, and that it was pushed")]
    NotFound {
        /// The image.
        reference: String,
    },
    /// The image index has no image for the platform.
    #[error("image {reference} has no image for {platform} (it has: {available}); build the base image for {platform} or choose other platforms")]
    NoPlatform {
        /// The image.
        reference: String,
        /// The platform asked for.
        platform: Platform,
        /// The platforms it has.
        available: String,
    },
    /// The registry sent something that is not a valid image.
    #[error("invalid image {reference}: {problem}")]
    Invalid {
        /// The image.
        reference: String,
        /// What is wrong.
        problem: String,
    },
    /// The layout could not be written.
    #[error(transparent)]
    Layout(#[from] LayoutError),
    /// Anything else.
    #[error("{message}")]
    Other {
        /// What failed.
        message: String,
        /// Why.
        #[source]
        source: Option<BoxError>,
    },
}

/// Pulls `reference` into `layout` and returns the digest of what was pulled, with the options
/// of [`RegistryOptions::from_env`] (Docker `config.json` credentials, plain HTTP only for the
/// registries in `HEPHY_INSECURE_REGISTRIES`).
///
/// With a `platform`, an index is resolved to that platform's manifest, and only that image is
/// pulled; without one, an index is pulled whole. The pulled manifest (or index) is added to
/// the layout's `index.json`, named by the reference's tag. Blobs stream to disk and are checked
/// against their digests; blobs already in the layout are not fetched again.
pub async fn pull_to_layout(
    reference: &Reference,
    platform: Option<&Platform>,
    layout: &OciLayout,
) -> Result<Digest, PullError> {
    RegistryOptions::from_env()
        .pull_to_layout(reference, platform, layout)
        .await
}

impl RegistryOptions {
    /// [`pull_to_layout`] with these options.
    pub async fn pull_to_layout(
        &self,
        reference: &Reference,
        platform: Option<&Platform>,
        layout: &OciLayout,
    ) -> Result<Digest, PullError> {
        Puller {
            connection: Connection::new(self.clone()),
            reference: reference.clone(),
            target: oci_reference(reference),
        }
        .run(platform, layout)
        .await
    }
}

struct Puller {
    connection: Connection,
    reference: Reference,
    target: oci_client::Reference,
}

/// Why fetching one blob failed.
#[derive(Debug, thiserror::Error)]
enum FetchError {
    #[error(transparent)]
    Oci(#[from] OciDistributionError),
    #[error("the download broke off: {0}")]
    Stream(#[source] std::io::Error),
    #[error(transparent)]
    Layout(#[from] LayoutError),
    #[error("blob {expected} arrived with digest {got} ({size} bytes)")]
    Digest {
        expected: Digest,
        got: Digest,
        size: u64,
    },
    #[error("the writing task stopped: {0}")]
    Task(String),
}

impl Puller {
    fn invalid(&self, problem: impl Into<String>) -> PullError {
        PullError::Invalid {
            reference: self.reference.to_string(),
            problem: problem.into(),
        }
    }

    fn error(&self, what: &str, e: OciDistributionError) -> PullError {
        let registry = self.reference.registry().to_owned();
        if is_unauthorized(&e) {
            return PullError::Unauthorized {
                reference: self.reference.to_string(),
                hint: format!(
                    "{} to {what} with {}: give hephy a registry user and password (or token) \
                     that may pull it, or run `docker login {registry}`",
                    refusal(&e),
                    self.connection.options.credentials().describe()
                ),
                registry,
            };
        }
        if is_unreachable(&e) {
            return PullError::Unreachable {
                message: self.connection.unreachable_message(
                    &registry,
                    "; if it serves plain HTTP, list it as an insecure registry (HEPHY_INSECURE_REGISTRIES)",
                ),
                registry,
                source: Some(Box::new(e)),
            };
        }
        if status_of(&e) == Some(404) {
            return PullError::NotFound {
                reference: self.reference.to_string(),
            };
        }
        PullError::Other {
            message: format!("cannot {what} for {}: {}", self.reference, chain(&e)),
            source: Some(Box::new(e)),
        }
    }

    fn fetch_error(&self, what: &str, e: FetchError) -> PullError {
        match e {
            FetchError::Oci(e) => self.error(what, e),
            FetchError::Layout(e) => PullError::Layout(e),
            other => PullError::Other {
                message: format!("cannot {what} for {}: {other}", self.reference),
                source: Some(Box::new(other)),
            },
        }
    }

    async fn run(
        self,
        platform: Option<&Platform>,
        layout: &OciLayout,
    ) -> Result<Digest, PullError> {
        let auth = self
            .connection
            .options
            .credentials()
            .resolve(self.reference.registry())
            .map_err(|e| PullError::Other {
                message: e.to_string(),
                source: Some(Box::new(e)),
            })?;
        let client = &self.connection.client;
        self.connection
            .retry(|| client.auth(&self.target, &auth, RegistryOperation::Pull))
            .await
            .map_err(|e| self.error("sign in", e))?;

        let (bytes, digest) = self.manifest(&self.target, &auth).await?;
        let (value, media_type) = self.parse_manifest(&bytes)?;
        let (top_bytes, top_digest, top_media, top_platform) =
            match (is_index_media_type(&media_type), platform) {
                (true, Some(platform)) => {
                    let entry = self.choose(&value, platform)?;
                    let target = self.target.clone_with_digest(entry.0.to_string());
                    let (bytes, digest) = self.manifest(&target, &auth).await?;
                    if digest != entry.0 {
                        return Err(self.invalid(format!(
                            "the index lists {} for {platform} but the registry sent {digest}",
                            entry.0
                        )));
                    }
                    let (value, media_type) = self.parse_manifest(&bytes)?;
                    self.pull_image(&value, layout).await?;
                    (bytes, digest, media_type, Some(entry.1))
                }
                (true, None) => {
                    for m in value
                        .get("manifests")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                    {
                        let d = self.digest_of(m)?;
                        let target = self.target.clone_with_digest(d.to_string());
                        let (bytes, got) = self.manifest(&target, &auth).await?;
                        if got != d {
                            return Err(self.invalid(format!(
                                "the index lists {d} but the registry sent {got}"
                            )));
                        }
                        let (child, child_media) = self.parse_manifest(&bytes)?;
                        if is_index_media_type(&child_media) {
                            return Err(self.invalid("nested indexes are not supported"));
                        }
                        self.pull_image(&child, layout).await?;
                        self.write_manifest(layout, &bytes, &d)?;
                    }
                    (bytes.to_vec(), digest, media_type, None)
                }
                (false, _) => {
                    self.pull_image(&value, layout).await?;
                    (bytes.to_vec(), digest, media_type, None)
                }
            };
        self.write_manifest(layout, &top_bytes, &top_digest)?;
        let mut descriptor = Descriptor::new(
            MediaType::from(top_media.as_str()),
            top_bytes.len() as u64,
            to_oci_digest(&top_digest)?,
        );
        if let Some(p) = top_platform {
            descriptor.set_platform(to_oci_platform(&p).ok());
        }
        layout.add_manifest(&descriptor, self.reference.tag())?;
        Ok(top_digest)
    }

    /// Fetches a manifest or index; the digest is checked against the bytes (and the
    /// reference's digest when it has one) by oci-client.
    async fn manifest(
        &self,
        target: &oci_client::Reference,
        auth: &oci_client::secrets::RegistryAuth,
    ) -> Result<(Vec<u8>, Digest), PullError> {
        let client = &self.connection.client;
        let (bytes, digest) = self
            .connection
            .retry(|| client.pull_manifest_raw(target, auth, MANIFEST_MEDIA_TYPES))
            .await
            .map_err(|e| self.error("fetch the manifest", e))?;
        let digest: Digest = digest
            .parse()
            .map_err(|e| self.invalid(format!("the registry sent a bad digest: {e}")))?;
        Ok((bytes.to_vec(), digest))
    }

    fn parse_manifest(&self, bytes: &[u8]) -> Result<(Value, String), PullError> {
        let value: Value = serde_json::from_slice(bytes)
            .map_err(|e| self.invalid(format!("the manifest is not JSON: {e}")))?;
        let media_type = match value.get("mediaType").and_then(Value::as_str) {
            Some(m) => m.to_owned(),
            None if value.get("manifests").is_some() => {
                "application/vnd.oci.image.index.v1+json".to_owned()
            }
            None => "application/vnd.oci.image.manifest.v1+json".to_owned(),
        };
        Ok((value, media_type))
    }

    fn digest_of(&self, descriptor: &Value) -> Result<Digest, PullError> {
        let text = descriptor
            .get("digest")
            .and_then(Value::as_str)
            .unwrap_or_default();
        text.parse()
            .map_err(|e| self.invalid(format!("bad digest {text:?}: {e}")))
    }

    /// The entry of an index for `platform`.
    fn choose(&self, index: &Value, platform: &Platform) -> Result<(Digest, Platform), PullError> {
        let mut available = Vec::new();
        for m in index
            .get("manifests")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let Some(p) = m.get("platform") else { continue };
            let os = p.get("os").and_then(Value::as_str).unwrap_or_default();
            let arch = p
                .get("architecture")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let text = match p.get("variant").and_then(Value::as_str) {
                Some(v) => format!("{os}/{arch}/{v}"),
                None => format!("{os}/{arch}"),
            };
            match text.parse::<Platform>() {
                Ok(found) if found.matches(platform) => return Ok((self.digest_of(m)?, found)),
                _ => available.push(text),
            }
        }
        Err(PullError::NoPlatform {
            reference: self.reference.to_string(),
            platform: platform.clone(),
            available: if available.is_empty() {
                "no platforms listed".to_owned()
            } else {
                available.join(", ")
            },
        })
    }

    /// Fetches an image manifest's config and layers, several at once.
    async fn pull_image(&self, manifest: &Value, layout: &OciLayout) -> Result<(), PullError> {
        let mut blobs = Vec::new();
        if let Some(c) = manifest.get("config") {
            blobs.push(c);
        }
        blobs.extend(
            manifest
                .get("layers")
                .and_then(Value::as_array)
                .into_iter()
                .flatten(),
        );
        if blobs.is_empty() {
            return Err(self.invalid("the manifest has no config and no layers"));
        }
        let mut wanted = Vec::new();
        for b in blobs {
            let digest = self.digest_of(b)?;
            let size = b.get("size").and_then(Value::as_u64).unwrap_or(0);
            let media_type = b
                .get("mediaType")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            if !layout.has_blob(&digest) && !wanted.iter().any(|(d, _, _)| d == &digest) {
                wanted.push((digest, size, media_type));
            }
        }
        futures_util::stream::iter(wanted.into_iter().map(Ok))
            .try_for_each_concurrent(
                self.connection.options.concurrency,
                |(d, size, mt)| async move {
                    self.connection
                        .retry_with(
                            || self.fetch_blob(&d, size, &mt, layout),
                            |e: &FetchError| match e {
                                FetchError::Oci(e) => is_transient(e),
                                FetchError::Stream(_) => true,
                                _ => false,
                            },
                        )
                        .await
                        .map_err(|e| self.fetch_error(&format!("fetch blob {d}"), e))
                },
            )
            .await
    }

    /// Streams one blob into the layout: chunks go through a small channel to a blocking
    /// writer that hashes as it writes, so memory stays bounded whatever the blob's size.
    async fn fetch_blob(
        &self,
        digest: &Digest,
        size: u64,
        media_type: &str,
        layout: &OciLayout,
    ) -> Result<(), FetchError> {
        let descriptor = OciDescriptor {
            media_type: media_type.to_owned(),
            digest: digest.to_string(),
            size: i64::try_from(size).unwrap_or(i64::MAX),
            ..OciDescriptor::default()
        };
        let mut stream = self
            .connection
            .client
            .pull_blob_stream(&self.target, &descriptor)
            .await?
            .stream;
        enum Msg {
            Chunk(bytes::Bytes),
            Done,
        }
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Msg>(16);
        let writer_layout = layout.clone();
        let writer =
            tokio::task::spawn_blocking(move || -> Result<Option<(Digest, u64)>, LayoutError> {
                let mut w = writer_layout.blob_writer()?;
                while let Some(msg) = rx.blocking_recv() {
                    match msg {
                        Msg::Chunk(c) => w.write_all(&c).map_err(|e| LayoutError::Io {
                            action: "write",
                            path: writer_layout.root().join("blobs"),
                            source: e,
                        })?,
                        Msg::Done => return w.finish().map(Some),
                    }
                }
                // The download stopped: dropping the writer removes the partial file.
                Ok(None)
            });
        let mut failure = None;
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(c) => {
                    if tx.send(Msg::Chunk(c)).await.is_err() {
                        break;
                    }
                }
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        if failure.is_none() {
            let _ = tx.send(Msg::Done).await;
        }
        drop(tx);
        let written = writer
            .await
            .map_err(|e| FetchError::Task(e.to_string()))??;
        if let Some(e) = failure {
            return Err(FetchError::Stream(e));
        }
        let Some((got, got_size)) = written else {
            return Err(FetchError::Task("the blob writer stopped early".to_owned()));
        };
        if &got != digest {
            // Stored under the digest of what arrived, which nothing refers to: remove it.
            let _ = std::fs::remove_file(layout.blob_path(&got));
            return Err(FetchError::Digest {
                expected: digest.clone(),
                got,
                size: got_size,
            });
        }
        Ok(())
    }

    fn write_manifest(
        &self,
        layout: &OciLayout,
        bytes: &[u8],
        expected: &Digest,
    ) -> Result<(), PullError> {
        let (digest, _) = layout.write_blob(bytes)?;
        if &digest != expected {
            let _ = std::fs::remove_file(layout.blob_path(&digest));
            return Err(self.invalid(format!("manifest {expected} hashes to {digest}")));
        }
        Ok(())
    }
}
