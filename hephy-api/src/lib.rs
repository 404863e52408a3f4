//! The control API of a hephy server, beside git: apps, keys, config vars, releases, rollback,
//! image deploys and logs, as JSON over HTTP with the same tokens as git pushes.
//!
//! - [`types`]: the JSON bodies, shared by both sides.
//! - [`Client`] (feature `client`, on by default): calls the API, as the `hephy` CLI does.
//! - `server::router` (feature `server`): serves it from a `hephy_git::GitServer` and its
//!   accounts; merge it with the git routes.
//! - [`image_policy`]: which images an image deploy may name (an app's the caller may push to, or
//!   a registry the admin allowed).
//! - [`AppRuntime`]: what the server needs from where apps run (lifecycle, URL, logs), beyond
//!   [`Deployer`](hephy_core::Deployer). `hephy-deploy`'s local deployer implements it.
//!
//! This crate is not for receiving pushes (`hephy-git`) or running apps (`hephy-deploy`).
//!
//! # Example
//!
//! ```
//! use hephy_api::types::WhoAmI;
//!
//! let me: WhoAmI = serde_json::from_str(r#"{"user":"alice","admin":false}"#)?;
//! assert_eq!(me.user, "alice");
//! # Ok::<(), serde_json::Error>(())
//! ```
#![deny(missing_docs)]

#[cfg(feature = "client")]
mod client;
pub mod image_policy;
mod runtime;
#[cfg(feature = "server")]
pub mod server;
pub mod types;

#[cfg(feature = "client")]
pub use client::{Client, ClientError};
pub use runtime::{AppRuntime, LineStream};
/// The [secrecy](https://docs.rs/secrecy/0.10) crate (0.10) that holds [`Client`]'s token:
/// use it through this re-export so the versions always match.
#[cfg(feature = "client")]
pub use secrecy;
#[cfg(feature = "server")]
pub use server::{router, ApiError, ApiState, Authed};
pub use types::*;
