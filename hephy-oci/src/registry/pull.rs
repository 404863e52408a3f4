//! Pulling an image (one platform, or a whole index) from a registry into an OCI layout.

use std::io::Write;

use futures_util::{StreamExt, TryStreamExt};
use hephy_core::{BoxError, Digest, Platform, Reference};
use oci_client::errors::OciDistributionError;
use oci_client::manifest::OciDescriptor;
use oci_client::RegistryOperation;
use oci_spec::image::{Descriptor, ImageIndex, ImageManifest, MediaType};
use serde::de::IgnoredAny;
use serde::Deserialize;

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

/// The most a manifest or index may weigh. Registries refuse larger ones on push (distribution's
/// limit is 4 MiB), so a larger one is not an image but a registry sending something else.
pub const MAX_MANIFEST_BYTES: usize = 4 << 20;

/// A manifest as the registry sent it: an index (OCI index or Docker manifest list) or one
/// image's manifest (OCI or Docker v2 schema 2, whose JSON has the same shape).
#[derive(Debug)]
enum Document {
    // Boxed: both are large, and a document is moved through a few matches.
    Index(Box<ImageIndex>),
    Image(Box<ImageManifest>),
}

/// Reads a manifest or index with oci-spec's types; the media type is the document's own
/// `mediaType`, or, where it has none (allowed by OCI), told by the presence of `manifests`.
fn parse_document(bytes: &[u8]) -> Result<(Document, String), String> {
    // Only the fields that tell the kind; the rest is read by oci-spec below.
    #[derive(Deserialize)]
    struct Kind {
        #[serde(rename = "mediaType")]
        media_type: Option<String>,
        manifests: Option<IgnoredAny>,
    }
    if bytes.len() > MAX_MANIFEST_BYTES {
        return Err(format!(
            "the manifest is {} bytes; the limit is {MAX_MANIFEST_BYTES}",
            bytes.len()
        ));
    }
    let kind: Kind =
        serde_json::from_slice(bytes).map_err(|e| format!("the manifest is not JSON: {e}"))?;
    let media_type = match kind.media_type {
        Some(m) => m,
        None if kind.manifests.is_some() => MediaType::ImageIndex.to_string(),
        None => MediaType::ImageManifest.to_string(),
    };
    let document = if is_index_media_type(&media_type) {
        Document::Index(Box::new(
            serde_json::from_slice(bytes)
                .map_err(|e| format!("the index ({media_type}) is not valid: {e}"))?,
        ))
    } else {
        Document::Image(Box::new(serde_json::from_slice(bytes).map_err(|e| {
            format!("the manifest ({media_type}) is not valid: {e}")
        })?))
    };
    Ok((document, media_type))
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
        let (document, media_type) = self.parse_manifest(&bytes)?;
        let (top_bytes, top_digest, top_media, top_platform) = match (document, platform) {
            (Document::Index(index), Some(platform)) => {
                let entry = self.choose(&index, platform)?;
                let target = self.target.clone_with_digest(entry.0.to_string());
                let (bytes, digest) = self.manifest(&target, &auth).await?;
                if digest != entry.0 {
                    return Err(self.invalid(format!(
                        "the index lists {} for {platform} but the registry sent {digest}",
                        entry.0
                    )));
                }
                let (Document::Image(manifest), media_type) = self.parse_manifest(&bytes)? else {
                    return Err(self.invalid("nested indexes are not supported"));
                };
                self.pull_image(&manifest, layout).await?;
                (bytes, digest, media_type, Some(entry.1))
            }
            (Document::Index(index), None) => {
                for m in index.manifests() {
                    let d = self.digest_of(m)?;
                    let target = self.target.clone_with_digest(d.to_string());
                    let (bytes, got) = self.manifest(&target, &auth).await?;
                    if got != d {
                        return Err(self
                            .invalid(format!("the index lists {d} but the registry sent {got}")));
                    }
                    let Document::Image(child) = self.parse_manifest(&bytes)?.0 else {
                        return Err(self.invalid("nested indexes are not supported"));
                    };
                    self.pull_image(&child, layout).await?;
                    self.write_manifest(layout, &bytes, &d)?;
                }
                (bytes.to_vec(), digest, media_type, None)
            }
            (Document::Image(manifest), _) => {
                self.pull_image(&manifest, layout).await?;
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

    fn parse_manifest(&self, bytes: &[u8]) -> Result<(Document, String), PullError> {
        parse_document(bytes).map_err(|problem| self.invalid(problem))
    }

    fn digest_of(&self, descriptor: &Descriptor) -> Result<Digest, PullError> {
        let text = descriptor.digest().to_string();
        text.parse()
            .map_err(|e| self.invalid(format!("bad digest {text:?}: {e}")))
    }

    /// The entry of an index for `platform`.
    fn choose(
        &self,
        index: &ImageIndex,
        platform: &Platform,
    ) -> Result<(Digest, Platform), PullError> {
        let mut available = Vec::new();
        for m in index.manifests() {
            let Some(p) = m.platform() else { continue };
            let text = match p.variant() {
                Some(v) => format!("{}/{}/{v}", p.os(), p.architecture()),
                None => format!("{}/{}", p.os(), p.architecture()),
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
    async fn pull_image(
        &self,
        manifest: &ImageManifest,
        layout: &OciLayout,
    ) -> Result<(), PullError> {
        let blobs = std::iter::once(manifest.config()).chain(manifest.layers());
        let mut wanted = Vec::new();
        for b in blobs {
            let digest = self.digest_of(b)?;
            let size = b.size();
            let media_type = b.media_type().to_string();
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

#[cfg(test)]
mod tests {
    use super::*;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

    #[test]
    fn docker_v2_schema_2_manifests_and_lists_parse() -> TestResult {
        let manifest = format!(
            r#"{{"schemaVersion": 2,
              "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
              "config": {{"mediaType": "application/vnd.docker.container.image.v1+json",
                          "size": 7023, "digest": "{D1}"}},
              "layers": [{{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                           "size": 32654, "digest": "{D2}"}}]}}"#
        );
        let (Document::Image(m), media_type) = parse_document(manifest.as_bytes())? else {
            return Err("a Docker manifest read as an index".into());
        };
        assert_eq!(
            media_type,
            "application/vnd.docker.distribution.manifest.v2+json"
        );
        assert_eq!(m.config().digest().to_string(), D1);
        assert_eq!(
            m.layers()[0].media_type().to_string(),
            "application/vnd.docker.image.rootfs.diff.tar.gzip"
        );
        assert_eq!(m.layers()[0].size(), 32654);

        let list = format!(
            r#"{{"schemaVersion": 2,
              "mediaType": "application/vnd.docker.distribution.manifest.list.v2+json",
              "manifests": [{{"mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                              "size": 7143, "digest": "{D1}",
                              "platform": {{"architecture": "arm", "os": "linux",
                                            "variant": "v7", "os.features": ["sse4"]}}}}]}}"#
        );
        let (Document::Index(i), media_type) = parse_document(list.as_bytes())? else {
            return Err("a Docker manifest list read as a manifest".into());
        };
        assert!(is_index_media_type(&media_type), "{media_type}");
        let platform = i.manifests()[0].platform().as_ref().ok_or("no platform")?;
        assert_eq!(platform.architecture().to_string(), "arm");
        assert_eq!(platform.variant().as_deref(), Some("v7"));
        Ok(())
    }

    #[test]
    fn oci_documents_without_a_media_type_are_told_apart_by_their_fields() -> TestResult {
        let index = format!(
            r#"{{"schemaVersion": 2, "manifests": [{{"mediaType":
                "application/vnd.oci.image.manifest.v1+json", "size": 1, "digest": "{D1}"}}]}}"#
        );
        let (doc, media_type) = parse_document(index.as_bytes())?;
        assert!(matches!(doc, Document::Index(_)), "{doc:?}");
        assert_eq!(media_type, "application/vnd.oci.image.index.v1+json");
        let manifest = format!(
            r#"{{"schemaVersion": 2, "config": {{"mediaType":
                "application/vnd.oci.image.config.v1+json", "size": 2, "digest": "{D1}"}},
                "layers": []}}"#
        );
        let (doc, media_type) = parse_document(manifest.as_bytes())?;
        assert!(matches!(doc, Document::Image(_)), "{doc:?}");
        assert_eq!(media_type, "application/vnd.oci.image.manifest.v1+json");
        Ok(())
    }

    #[test]
    fn invalid_and_oversized_manifests_are_refused_with_the_reason() {
        let no_config = br#"{"schemaVersion": 2, "layers": []}"#;
        let err = parse_document(no_config).err().unwrap_or_default();
        assert!(
            err.contains("is not valid") && err.contains("config"),
            "{err}"
        );
        let err = parse_document(b"[1, 2]").err().unwrap_or_default();
        assert!(err.contains("not JSON"), "{err}");
        let big = vec![b' '; MAX_MANIFEST_BYTES + 1];
        let err = parse_document(&big).err().unwrap_or_default();
        assert!(err.contains("the limit is 4194304"), "{err}");
    }
}
