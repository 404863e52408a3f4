//! [`OciLayoutPublisher`]: publishes into OCI layouts on disk, the default when no registry is
//! configured.

use std::path::PathBuf;

use hephy_core::{
    async_trait, Digest, Events, PublishError, PublishRequest, Published, Publisher, Reference,
};
use oci_spec::image::{Descriptor, ImageIndex, MediaType};

use crate::layout::{to_oci_digest, to_oci_platform, OciLayout};

/// The registry name of images published on disk: `hephy.local/<app>:<tag>` lives in the OCI
/// layout `<root>/hephy.local/<app>`.
pub const LOCAL_REGISTRY: &str = "hephy.local";

/// Publishes app X into the OCI layout `<root>/hephy.local/X`, several platforms as one image
/// index, the tag as its `org.opencontainers.image.ref.name`; blobs already there are skipped.
#[derive(Debug, Clone)]
pub struct OciLayoutPublisher {
    root: PathBuf,
}

impl OciLayoutPublisher {
    /// A publisher into layouts under `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        OciLayoutPublisher { root: root.into() }
    }

    /// The layout directory of `reference` if it is a `hephy.local` reference.
    pub fn layout_dir(&self, reference: &Reference) -> Option<PathBuf> {
        (reference.registry() == LOCAL_REGISTRY)
            .then(|| self.root.join(LOCAL_REGISTRY).join(reference.repository()))
    }
}

fn invalid(problem: impl Into<String>) -> PublishError {
    PublishError::Invalid {
        problem: problem.into(),
    }
}

#[async_trait]
impl Publisher for OciLayoutPublisher {
    async fn publish(
        &self,
        request: &PublishRequest,
        events: &Events,
    ) -> Result<Published, PublishError> {
        if request.images.is_empty() {
            return Err(invalid("nothing to publish: the build produced no images"));
        }
        let reference = Reference::new(
            LOCAL_REGISTRY,
            request.app.as_str(),
            Some(&request.tag),
            None,
        )
        .map_err(|e| invalid(format!("cannot name the image: {e}")))?;
        let dest_dir = self.root.join(LOCAL_REGISTRY).join(request.app.as_str());
        let request = request.clone();
        let events = events.clone();
        let (digest, platforms, is_index) =
            tokio::task::spawn_blocking(move || publish_blocking(&dest_dir, &request, &events))
                .await
                .map_err(|e| PublishError::other("the publishing task stopped", e))??;
        Ok(Published::new(reference, digest, platforms, is_index))
    }
}

fn publish_blocking(
    dest_dir: &std::path::Path,
    request: &PublishRequest,
    events: &Events,
) -> Result<(Digest, Vec<hephy_core::Platform>, bool), PublishError> {
    let dest = OciLayout::create(dest_dir)
        .map_err(|e| PublishError::other("cannot create the OCI layout", e))?;
    let mut descriptors = Vec::new();
    let mut platforms = Vec::new();
    let (mut copied, mut skipped) = (0usize, 0usize);
    for image in &request.images {
        let src = OciLayout::open(&image.layout).map_err(|e| {
            invalid(format!(
                "the built image at {} is not an OCI layout: {e}",
                image.layout.display()
            ))
        })?;
        let blobs = src
            .blobs_of(&image.manifest)
            .map_err(|e| invalid(format!("the built image is incomplete: {e}")))?;
        for b in &blobs {
            if dest
                .copy_blob_from(&src, b)
                .map_err(|e| PublishError::other("cannot copy a blob", e))?
            {
                copied += 1;
            } else {
                skipped += 1;
            }
        }
        let path = src.blob_path(&image.manifest);
        let size = std::fs::metadata(&path)
            .map_err(|e| PublishError::other(format!("cannot read {}", path.display()), e))?
            .len();
        let value: serde_json::Value = src
            .read_json(&image.manifest)
            .map_err(|e| invalid(format!("the built image is damaged: {e}")))?;
        let media_type = value
            .get("mediaType")
            .and_then(|m| m.as_str())
            .map(MediaType::from)
            .unwrap_or(MediaType::ImageManifest);
        let digest =
            to_oci_digest(&image.manifest).map_err(|e| PublishError::other("invalid digest", e))?;
        let mut d = Descriptor::new(media_type, size, digest);
        if let Some(p) = &image.platform {
            d.set_platform(Some(
                to_oci_platform(p).map_err(|e| PublishError::other("invalid platform", e))?,
            ));
            platforms.push(p.clone());
        }
        descriptors.push(d);
    }
    events.log(format!(
        "{copied} blobs copied, {skipped} already present in {}",
        dest.root().display()
    ));
    let (top, is_index) = if descriptors.len() == 1 && request.annotations.is_empty() {
        (descriptors.remove(0), false)
    } else if descriptors.len() == 1 {
        // One image: publish its manifest itself; the request's annotations go on the index
        // entry so they are still visible.
        let mut d = descriptors.remove(0);
        d.set_annotations(Some(request.annotations.clone().into_iter().collect()));
        (d, false)
    } else {
        descriptors.sort_by_key(|d| {
            d.platform()
                .as_ref()
                .map(|p| format!("{}/{}", p.os(), p.architecture()))
        });
        let mut index = ImageIndex::default();
        index.set_media_type(Some(MediaType::ImageIndex));
        index.set_manifests(descriptors);
        if !request.annotations.is_empty() {
            index.set_annotations(Some(request.annotations.clone().into_iter().collect()));
        }
        let d = dest
            .write_json(MediaType::ImageIndex, &index)
            .map_err(|e| PublishError::other("cannot write the image index", e))?;
        (d, true)
    };
    dest.add_manifest(&top, Some(&request.tag))
        .map_err(|e| PublishError::other("cannot update index.json", e))?;
    let digest = crate::layout::from_oci_digest(top.digest())
        .map_err(|e| PublishError::other("invalid digest", e))?;
    Ok((digest, platforms, is_index))
}
