//! hephy-deploy: deployers that run the releases of apps.
//!
//! [`local::LocalDeployer`] is the embedded default: with no cluster at all, every release runs
//! as a `runc` container on this host, behind a router that gives each app a stable address and
//! switches traffic only once a new release is healthy. Its building blocks are public too: the
//! durable release [`ledger`], image [`unpack`]ing, the [`runc`] runtime spec and commands, and
//! the TCP [`router`].
//!
//! When an app outgrows one machine, [`kubernetes::KubernetesDeployer`] runs its releases as
//! Deployments in a cluster (server-side apply, rollout watch, the release ledger in a
//! ConfigMap), and [`gitops::FluxDeployer`] hands them to Flux as one commit per release on a
//! GitOps repository. Both render the same objects with [`manifests`]. What of them has not
//! been verified against a live cluster is listed in `KUBERNETES.md`.
//!
//! Images are read with `hephy-oci` (OCI layouts, registry pulls). This crate is not for
//! building or publishing images (`hephy-backends`, `hephy-oci`) nor for receiving pushes
//! (`hephy-git`). The local deployer is also the control API's `hephy_api::AppRuntime`.
//!
//! # Example
//!
//! The ledger keeps numbered releases durably:
//!
//! ```
//! use std::time::SystemTime;
//! use hephy_core::{DeployConfig, NewRelease, ReleaseCause, ReleaseVersion};
//! use hephy_deploy::ledger::Ledger;
//!
//! let dir = tempfile::tempdir()?;
//! let ledger = Ledger::open(dir.path())?;
//! let app = "hello".parse()?;
//! ledger.create_app(&app)?;
//! let image = "hephy.local/hello:v1@sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824".parse()?;
//! let cause = ReleaseCause::Image { reference: "hello".into() };
//! let release = NewRelease::new(app.clone(), image, DeployConfig::default(), cause)
//!     .into_release(ledger.next_version(&app)?, SystemTime::now(), None);
//! ledger.record(&release)?;
//! assert_eq!(ledger.current(&app)?.map(|r| r.version), Some(ReleaseVersion::FIRST));
//! assert!(ledger.record(&release).is_err(), "releases are immutable");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Cargo features
//!
//! Each deployer is a feature, all on by default; an embedder who needs one turns the others
//! off (`default-features = false, features = ["local"]`) and compiles none of their
//! dependencies:
//! - `local`: [`local`], [`unpack`], [`runc`] and [`router`] (no kube, k8s-openapi or gix);
//! - `kubernetes`: [`kubernetes`] and [`manifests`] (kube's client with rustls);
//! - `gitops`: [`gitops`] and [`manifests`] (gix, kube's types without its client).
//!
//! The [`ledger`] is always there.
//!
//! # Public dependencies
//!
//! Foreign types in this crate's API come from crates re-exported here, so an embedder uses the
//! same versions without naming them in its own `Cargo.toml`: [`kube`] (5.0: the `Client` of
//! [`kubernetes::KubernetesDeployer`], the `DynamicObject` of [`manifests`]), [`k8s_openapi`]
//! (0.29: the objects [`manifests`] renders) and [`oci_spec`] (0.10 with `image` and
//! `runtime`: the image configuration of [`unpack`] and the runtime spec of [`runc`]).
#![deny(missing_docs)]

#[cfg(feature = "gitops")]
pub mod gitops;
#[cfg(feature = "kubernetes")]
pub mod kubernetes;
pub mod ledger;
#[cfg(feature = "local")]
pub mod local;
#[cfg(any(feature = "kubernetes", feature = "gitops"))]
pub mod manifests;
#[cfg(feature = "local")]
pub mod router;
#[cfg(feature = "local")]
pub mod runc;
#[cfg(feature = "local")]
pub mod unpack;

/// The kube version of [`kubernetes`] and [`manifests`] (5.0). With only `gitops` on, its
/// types without the client.
#[cfg(any(feature = "kubernetes", feature = "gitops"))]
pub use kube;

/// The k8s-openapi version of [`manifests`] (0.29, with the `latest` Kubernetes API).
#[cfg(any(feature = "kubernetes", feature = "gitops"))]
pub use k8s_openapi;

/// The oci-spec version of [`unpack`] and [`runc`] (0.10, with `image` and `runtime`).
#[cfg(feature = "local")]
pub use oci_spec;
