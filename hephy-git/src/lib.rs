//! The git side of hephy: `git push` over smart HTTP and SSH into one bare repository per app,
//! with the pipeline run before the deploy branch moves and its logs streamed to the pusher.
//!
//! [`GitServer`] implements the server side of `git push` (receive-pack, protocol v0/v1) on
//! gitoxide's building blocks: gix-packetline for pkt-lines and side-band, gix-pack to index
//! the received pack (completing thin packs from the repository), gix-ref transactions for
//! compare-and-swap ref updates. No `git` binary is needed at run time. [`GitSource`] is the
//! [`hephy_core::Source`] that checks a pushed commit out for the build.
//!
//! This crate is not for fetching or cloning (apps keep their code in their own git host) and
//! not for building or deploying: it hands the pushed revision to a [`hephy_core::Pipeline`].
//!
//! # Example
//!
//! A server without a pipeline (pushes only move refs), served over HTTP on a free port:
//!
//! ```
//! use hephy_git::GitServer;
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let data = tempfile::tempdir()?;
//! let server = GitServer::builder(data.path()).deploy_branch("main").build()?;
//! server.create_app(&"hello".parse()?, "alice")?;
//! assert_eq!(server.apps()?.len(), 1);
//!
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let url = format!("http://{}/hello.git", listener.local_addr()?);
//! let http = tokio::spawn(async move { server.serve_http(listener).await });
//! // `git push {url} main` now pushes to the app.
//! # let _ = url;
//! http.abort();
//! # Ok(()) }
//! ```
//!
//! # Pipeline and runtime
//!
//! [`GitServerBuilder::pipeline_with`] gives the pipeline a [`GitSource`] on the server's own
//! data directory; [`GitServerBuilder::build`] refuses a pipeline whose source reads another
//! one, and a tokio runtime without time or IO (every push needs both; see
//! [`hephy_core::check_runtime`]). Messages name no hephy CLI command unless the server is built
//! with [`GitServerBuilder::cli_hints`], as hephy-server is.
//!
//! # Public dependencies
//!
//! [`GitServer::serve_http`] and [`GitServer::serve_ssh`] need no web or SSH crate of your own.
//! Where foreign types still show ([`GitServer::http_router`] is an `axum::Router`,
//! [`auth::PublicKey`] and [`ssh::SshServer::host_public_key`] are russh's), the crates are
//! re-exported as [`axum`] and [`russh`]: use those paths instead of depending on them, so the
//! versions always match.
#![deny(missing_docs)]

pub mod auth;
#[cfg(fuzzing)]
#[doc(hidden)]
pub mod fuzzing;
mod http;
mod lock;
mod receive;
mod repo;
mod serve;
mod server;
mod source;
pub mod ssh;

/// The axum version hephy-git's router uses (0.8), re-exported so that
/// [`GitServer::http_router`] can be merged with your own routes and served without a second,
/// clashing axum in your dependency tree.
pub use axum;
/// The russh version of hephy-git's SSH server (0.65), whose key types appear in [`auth`] and
/// [`ssh`]; [`auth::PublicKey`] is the one most callers need.
pub use russh;

pub use lock::{LockError, LockHolder};
pub use receive::ReceiveError;
pub use repo::{repo_path, RepoPathError};
pub use serve::ServeError;
pub use server::{
    AppError, GitServer, GitServerBuilder, ServerBuildError, UrlHook, DEFAULT_KEEPALIVE,
    DEFAULT_MAX_PUSH_BYTES, DEFAULT_MAX_PUSH_OPTIONS, DEFAULT_MAX_PUSH_OPTIONS_BYTES,
    DEFAULT_MAX_REF_UPDATES, DEFAULT_MAX_REF_UPDATE_BYTES,
};
pub use source::GitSource;
