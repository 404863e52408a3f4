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
#![deny(missing_docs)]

pub mod gitops;
pub mod kubernetes;
pub mod ledger;
pub mod local;
pub mod manifests;
pub mod router;
pub mod runc;
pub mod unpack;
