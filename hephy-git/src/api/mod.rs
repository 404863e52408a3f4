//! The control API of a hephy server, beside git: apps, keys, config vars, releases, rollback,
//! image deploys and logs, as JSON over HTTP with the same tokens as git pushes. [`router`] serves
//! it (merge it with [`GitServer::http_router`](crate::GitServer::http_router)); [`Client`] calls
//! it, as the `hephy` CLI does.

mod client;
mod server;
mod types;

pub use client::{Client, ClientError};
pub use server::{router, ApiError, ApiState, AppRuntime, Authed, LineStream};
pub use types::*;
