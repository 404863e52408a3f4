//! The build backends of hephy: each turns a build context into an OCI image for one platform.
//! Go apps are built ko-style ([`GoBackend`]: `go build` per platform, no Dockerfile, no daemon),
//! directories are shipped as they are ([`FilesBackend`]), Dockerfiles go through buildah
//! ([`DockerfileBackend`]), Spin apps become Wasm artifacts ([`SpinBackend`]) and Rust crates
//! static binaries ([`CargoBackend`]). [`check::explain`] says which backend would build a
//! context, and why the others would not. Every outside tool runs through [`exec`], and every
//! path a pushed repository names, and every file a backend reads from it, through [`paths`]:
//! a push is untrusted.
//!
//! Image assembly (layers, manifests, OCI layouts) and publishing live in `hephy-oci`; this
//! crate is not for running images (`hephy-deploy`) or receiving pushes (`hephy-git`).
//!
//! # Example
//!
//! Ship a directory as an image on the default static base, and publish it into an OCI layout:
//!
//! ```
//! use std::sync::Arc;
//! use hephy_backends::FilesBackend;
//! use hephy_oci::OciLayoutPublisher;
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

pub mod build_env;
pub mod cargo;
pub mod check;
pub mod dockerfile;
pub mod exec;
pub mod files;
#[cfg(fuzzing)]
#[doc(hidden)]
pub mod fuzzing;
pub mod go;
pub mod paths;
pub mod sandbox;
pub mod spin;

pub use build_env::BuildEnv;
pub use cargo::CargoBackend;
pub use check::{explain, Explanation};
pub use dockerfile::DockerfileBackend;
pub use files::FilesBackend;
pub use go::GoBackend;
pub use spin::SpinBackend;

/// Every backend of this crate, in auto-detection order: dockerfile, spin, go, cargo, files
/// (the pipeline takes the most confident; among equals, the first). Their build tools run in
/// `env`: a sandbox on a server ([`BuildEnv::sandboxed`]).
pub fn default_backends(env: &BuildEnv) -> Vec<Arc<dyn Backend>> {
    vec![
        Arc::new(DockerfileBackend::new(env.clone())),
        Arc::new(SpinBackend::new(env.clone())),
        // Its check also refuses `import "C"`, as cgo is off (see `check::extra_checks`).
        Arc::new(check::Checked::new(GoBackend::new(env.clone()))),
        Arc::new(CargoBackend::new(env.clone())),
        Arc::new(FilesBackend::new()),
        // `backend = "kaniko"` from old configurations; it never detects apps itself.
        Arc::new(DockerfileBackend::kaniko_alias(env.clone())),
    ]
}
