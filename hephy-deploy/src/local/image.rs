//! The root filesystem of a release: its image found in a local OCI layout or pulled from its
//! registry, then unpacked (once per image) into the rootfs cache.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use hephy_core::{format_elapsed, DeployError, Events, Reference};
use hephy_oci::layout::OciLayout;

use super::{other, plain, LocalDeployer, LOCAL_REGISTRY};
use crate::unpack::{self, ResolvedImage};

impl LocalDeployer {
    /// Finds the image (in a local layout, or pulled from its registry) and unpacks it.
    pub(super) async fn prepare_image(
        &self,
        reference: &Reference,
        events: &Events,
    ) -> Result<(ResolvedImage, PathBuf), DeployError> {
        let digest = reference
            .digest()
            .cloned()
            .ok_or_else(|| plain(format!("image {reference} is not pinned to a digest: deploy the reference a publisher returned, which ends in @sha256:...")))?;
        let (layout, digest) = if reference.registry() == LOCAL_REGISTRY {
            let dir = self
                .inner
                .layout_root
                .join(LOCAL_REGISTRY)
                .join(reference.repository());
            (dir, digest)
        } else {
            // Pulled images are kept per repository, so later releases fetch only new blobs.
            let dir = self
                .inner
                .opts
                .data_dir
                .join("images")
                .join(reference.registry().replace(':', "_"))
                .join(reference.repository());
            events.log(format!("pulling {reference}"));
            let started = Instant::now();
            let layout = OciLayout::create(&dir).map_err(|e| {
                other(
                    format!("cannot create the image cache {}: {e}", dir.display()),
                    e,
                )
            })?;
            let pulled = self
                .inner
                .opts
                .registry
                .pull_to_layout(reference, Some(&self.inner.opts.platform), &layout)
                .await
                .map_err(|e| other(format!("cannot pull {reference}: {e}"), e))?;
            events.log(format!(
                "pulled {} in {}",
                pulled.short(),
                format_elapsed(started.elapsed())
            ));
            (dir, pulled)
        };
        let platform = self.inner.opts.platform.clone();
        let cache = self.inner.rootfs_cache.clone();
        let limits = self.inner.opts.unpack_limits;
        let ev = events.clone();
        let reference = reference.clone();
        tokio::task::spawn_blocking(move || {
            let image = unpack::resolve(&layout, &digest, &platform, &limits)
                .map_err(|e| other(format!("cannot read image {reference}: {e}"), e))?;
            if unpack::is_unpacked(&image, &cache) {
                ev.log(format!(
                    "image {} already unpacked",
                    image.manifest_digest.short()
                ));
            } else {
                ev.log(format!(
                    "unpacking {} layer(s) of {} for {platform}",
                    image.layers.len(),
                    image.manifest_digest.short()
                ));
            }
            let started = Instant::now();
            let rootfs = unpack::unpack_rootfs(&image, &cache, &limits)
                .map_err(|e| other(format!("cannot unpack image {reference}: {e}"), e))?;
            if started.elapsed() > Duration::from_millis(50) {
                ev.log(format!("unpacked in {}", format_elapsed(started.elapsed())));
            }
            Ok((image, rootfs))
        })
        .await
        .map_err(|e| other("unpacking the image stopped", e))?
    }
}
