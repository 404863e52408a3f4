//! Daemonless image building and publishing for hephy: the [`Backend`]s
//! that turn a build context into OCI images, and the [`Publisher`](hephy_core::Publisher)s that
//! put them in registries or OCI layouts on disk.
//!
//! Image assembly is shared by every backend: [`layout::OciLayout`] reads and writes OCI image
//! layouts, [`layer`] writes deterministic layers (sorted entries, fixed times and owners, tar
//! compressed and hashed in one streaming pass, several layers in parallel, large trees split so
//! a one-file change re-uploads one small layer), and [`image::ImageBuilder`] puts a
//! [`base::BaseImage`] and new layers together into a manifest. The same commit and settings
//! always give the same digest.
//!
//! This crate is not for running images (see `hephy-deploy`) or receiving pushes (`hephy-git`).
//!
//! # Example
//!
//! Ship a directory as an image on the default static base, and publish it into an OCI layout:
//!
//! ```
//! use std::sync::Arc;
//! use hephy_backends::{FilesBackend, OciLayoutPublisher};
//! use hephy_core::{AppConfig, BuildContext, Events, Job, Pipeline};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let tmp = std::env::temp_dir().join(format!("hephy-backends-doc-{}", std::process::id()));
//! let app = tmp.join("app");
//! std::fs::create_dir_all(app.join("public"))?;
//! std::fs::write(app.join("public/index.html"), "<h1>hello</h1>")?;
//! std::fs::write(app.join("hephy.toml"), "[build.files]\ndir = \"public\"\n")?;
//!
//! let pipeline = Pipeline::builder()
//!     .backend(Arc::new(FilesBackend::new()))
//!     .publisher(Arc::new(OciLayoutPublisher::new(tmp.join("images"))))
//!     .build()?;
//! let job = Job::context("hello".parse()?, BuildContext::open(&app)?, tmp.join("work"));
//! let report = pipeline.run(job.with_tag("v1"), &Events::discard()).await?;
//! assert_eq!(report.backend, "files");
//! assert!(report.published.reference.to_string().starts_with("hephy.local/hello:v1@sha256:"));
//! assert!(tmp.join("images/hephy.local/hello/index.json").is_file());
//! # std::fs::remove_dir_all(&tmp)?;
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

use std::sync::Arc;

use hephy_core::Backend;

pub mod base;
pub mod cargo;
pub mod check;
pub mod dockerfile;
pub mod exec;
pub mod files;
pub mod go;
pub mod image;
pub mod layer;
pub mod layout;
pub mod publish_layout;
pub mod registry;
pub mod spin;

#[cfg(feature = "testing")]
pub mod testing;

pub use cargo::CargoBackend;
pub use check::{explain, Explanation};
pub use dockerfile::DockerfileBackend;
pub use files::FilesBackend;
pub use go::GoBackend;
pub use publish_layout::{OciLayoutPublisher, LOCAL_REGISTRY};
pub use registry::{pull_to_layout, RegistryAuth, RegistryOptions, RegistryPublisher};
pub use spin::SpinBackend;

/// Every backend of this crate, in auto-detection order: dockerfile, spin, go, cargo, files
/// (the pipeline takes the most confident; among equals, the first).
pub fn default_backends() -> Vec<Arc<dyn Backend>> {
    vec![
        Arc::new(DockerfileBackend::new()),
        Arc::new(SpinBackend::new()),
        // Its check also refuses `import "C"`, as cgo is off (see `check::extra_checks`).
        Arc::new(check::Checked::new(GoBackend::new())),
        Arc::new(CargoBackend::new()),
        Arc::new(FilesBackend::new()),
        // `backend = "kaniko"` from old configurations; it never detects apps itself.
        Arc::new(DockerfileBackend::kaniko_alias()),
    ]
}
