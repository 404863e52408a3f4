//! OCI images for hephy: what building and deploying share.
//!
//! [`layer`] writes deterministic layers (sorted entries, fixed times and owners, tar compressed
//! and hashed in one streaming pass, several layers in parallel, large trees split so a one-file
//! change re-uploads one small layer); [`image::ImageBuilder`] puts a [`base::BaseImage`] and new
//! layers together into a manifest; [`layout::OciLayout`] reads and writes OCI image layouts; and
//! [`registry`] pushes to and pulls from OCI registries (basic and bearer auth, Docker's
//! `config.json`, cross-repository mounts, retries). The two [`Publisher`](hephy_core::Publisher)s
//! put built images in a registry ([`RegistryPublisher`]) or an OCI layout on disk
//! ([`OciLayoutPublisher`]). The same inputs always give the same digest.
//!
//! This crate is not for building apps (the backends that run `go`, `cargo` or `buildah` are in
//! `hephy-backends`) nor for running images (`hephy-deploy`).
//!
//! # Example
//!
//! An image of one file on no base, written into an OCI layout:
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use hephy_core::Platform;
//! use hephy_oci::{image::ImageBuilder, layer::Entry, layout::OciLayout};
//!
//! let dir = tempfile::tempdir()?;
//! let layout = OciLayout::create(dir.path())?;
//! let image = ImageBuilder::new(Platform::linux_amd64())
//!     .entries(vec![Entry::bytes("hello.txt", b"hi\n".to_vec(), 0o644)])
//!     .entrypoint(["/bin/cat", "/hello.txt"])
//!     .write(&layout, Some("latest"))
//!     .await?;
//! assert_eq!(layout.resolve("latest")?.map(|d| d.size()), Some(image.manifest.size()));
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

pub mod base;
pub mod image;
pub mod layer;
pub mod layout;
pub mod publish_layout;
pub mod registry;

/// The [oci-spec](https://docs.rs/oci-spec/0.10) crate (0.10) whose types appear in this crate's
/// public API (`Descriptor`, `ImageManifest`, `ImageConfiguration`, `ImageIndex`): use it through
/// this re-export so the versions always match.
pub use oci_spec;
/// The [secrecy](https://docs.rs/secrecy/0.10) crate (0.10) that wraps the passwords and tokens of
/// [`registry::RegistryAuth`]: use it through this re-export so the versions always match.
pub use secrecy;

pub use publish_layout::{OciLayoutPublisher, LOCAL_REGISTRY};
pub use registry::{pull_to_layout, RegistryAuth, RegistryOptions, RegistryPublisher};
