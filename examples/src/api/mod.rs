//! The control API of hephy-server: the JSON bodies, the axum routes, and the client.

mod client;
mod server;
mod types;

pub use client::{Client, ClientError};
pub use server::{router, ApiError, ApiState, AppRuntime, Authed, LineStream};
pub use types::*;
