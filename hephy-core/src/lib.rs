//! The stable API of hephy, a library for git-push-to-deploy.
//!
//! A `git push` brings a [`Revision`]; a [`Source`] materializes it into a [`BuildContext`]; a
//! [`Backend`] builds it into an OCI image for every asked [`Platform`] at once; a [`Publisher`]
//! puts the images under a [`Reference`] (one image index for several platforms); a [`Deployer`]
//! makes a numbered [`Release`] of it and runs it. The [`Pipeline`] composes the four and reports
//! every log line, stage and warning as an [`Event`], so a caller can stream a build live into the
//! pusher's terminal.
//!
//! This crate is for the traits, the value types they exchange and the pipeline. It is not for
//! talking to git, registries or clusters: `hephy-git`, `hephy-oci`, `hephy-backends` and
//! `hephy-deploy` implement the traits, and depend on this crate, never the other way round. Its dependencies
//! are few and stable (serde, thiserror, async-trait, toml, humantime, and tokio's `sync` and
//! `time`, `rt` and `net`), and its API changes only deliberately (see `STABILITY.md`). One small std-only module,
//! [`fs`], is the single way every hephy crate writes a state file durably and with the right
//! permissions.
//!
//! # Example
//!
//! A pipeline from an in-memory backend and publisher, run on a directory:
//!
//! ```
//! use std::sync::Arc;
//! use hephy_core::*;
//!
//! struct Echo;
//! #[async_trait]
//! impl Backend for Echo {
//!     fn name(&self) -> &str { "echo" }
//!     async fn detect(&self, _: &BuildContext) -> Detection {
//!         Detection::yes("echo", Confidence::Low, "it builds anything")
//!     }
//!     async fn build(&self, _: &BuildContext, t: &BuildTarget, ev: &Events) -> Result<BuiltImage, BuildError> {
//!         ev.log(format!("building for {}", t.platform));
//!         let d = Digest::sha256("0".repeat(64)).map_err(|e| BuildError::other("digest", e))?;
//!         Ok(BuiltImage::new(Some(t.platform.clone()), &t.out_dir, d))
//!     }
//! }
//!
//! struct Nowhere;
//! #[async_trait]
//! impl Publisher for Nowhere {
//!     async fn publish(&self, req: &PublishRequest, _: &Events) -> Result<Published, PublishError> {
//!         let r: Reference = format!("localhost:5000/{}:{}", req.app, req.tag).parse()
//!             .map_err(|e| PublishError::other("reference", e))?;
//!         let platforms = req.images.iter().filter_map(|i| i.platform.clone()).collect();
//!         Ok(Published::new(r, req.images[0].manifest.clone(), platforms, req.images.len() > 1))
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let pipeline = Pipeline::builder()
//!     .backend(Arc::new(Echo))
//!     .publisher(Arc::new(Nowhere))
//!     .build()?;
//!
//! let config = AppConfig::from_toml("hephy.toml", r#"
//!     [build]
//!     platforms = ["linux/amd64", "linux/arm64"]
//! "#)?;
//! let dir = std::env::temp_dir().join("hephy-core-doc");
//! let job = Job::context("hello".parse()?, BuildContext::new(&dir, config), &dir);
//! let events = Events::from_fn(|e| println!("{}", e.render()));
//! let report = pipeline.run(job, &events).await?;
//! assert_eq!(report.published.platforms.len(), 2);
//! assert_eq!(report.published.reference.tag(), Some("latest"));
//! # Ok(()) }
//! ```
//!
//! # The runtime
//!
//! [`Pipeline::run`] and [`Pipeline::run_streaming`] need a tokio runtime with time and IO
//! enabled (`#[tokio::main]` has both). [`PipelineBuilder::build`] checks the runtime it is
//! called on with [`check_runtime`] and returns a [`RuntimeError`] naming the fix instead of
//! letting a push panic later; a run checks again when it starts.
//!
//! # Errors and hints
//!
//! Error messages say what is wrong and what to do in the library's words. Advice that names
//! hephy's own CLI (`run \`hephy apps create hello\``) is kept apart, in `hint()`
//! ([`PipelineError::hint`], [`SourceError::hint`], [`DeployError::hint`]): hephy's tools show
//! it, an embedding program shows its own advice or none.
#![deny(missing_docs)]

mod app;
mod backend;
mod config;
mod context;
mod deploy;
mod digest;
mod error;
mod event;
pub mod fs;
mod job;
mod pipeline;
mod platform;
mod publish;
mod reference;
mod release;
mod runtime;
mod source;
mod unknown;

/// Re-exported so implementors use the same version as the traits.
pub use async_trait::async_trait;

pub use app::{AppName, AppNameError};
pub use backend::{Backend, BuildError, BuildTarget, BuiltImage, Confidence, Detection};
pub use config::{
    AppConfig, BackendChoice, BackendSettings, BuildConfig, ConfigError, DeployConfig, Egress,
    HealthCheck, PlatformFailurePolicy, Resources, Strategy, CONFIG_FILE,
};
pub use context::{BuildContext, Revision};
pub use deploy::{DeployError, Deployer};
pub use digest::{Digest, DigestError};
pub use error::BoxError;
pub use event::{format_elapsed, Event, EventKind, EventStream, Events, Outcome, Stage};
pub use job::{Job, Report};
pub use pipeline::{Pipeline, PipelineBuildError, PipelineBuilder, PipelineError, PlatformFailure};
pub use platform::{Platform, PlatformError};
pub use publish::{PublishError, PublishRequest, Published, Publisher};
pub use reference::{Reference, ReferenceError, DEFAULT_REGISTRY};
pub use release::{
    ConfigChange, ConfigVarError, ConfigVars, NewRelease, Release, ReleaseCause, ReleaseVersion,
    ReleaseVersionError, RESERVED_VARS,
};
pub use runtime::{check_runtime, RuntimeError};
pub use source::{Source, SourceError};
