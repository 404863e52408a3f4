//! What the API needs from where apps run, beyond the [`Deployer`](hephy_core::Deployer) trait.

use std::pin::Pin;

use futures_util::Stream;
use hephy_core::{async_trait, AppName, DeployError};

use crate::types::ProcessInfo;

/// A stream of log lines.
pub type LineStream = Pin<Box<dyn Stream<Item = String> + Send>>;

/// What the API needs from where apps run, beyond the [`Deployer`](hephy_core::Deployer) trait: their lifecycle, their
/// address and their logs.
#[async_trait]
pub trait AppRuntime: Send + Sync {
    /// Prepares a new app.
    async fn create(&self, app: &AppName) -> Result<(), DeployError>;
    /// Stops the app and forgets its releases.
    async fn destroy(&self, app: &AppName) -> Result<(), DeployError>;
    /// Where the app answers, if it runs.
    async fn url(&self, app: &AppName) -> Option<String>;
    /// The app's log, followed when `follow`.
    async fn logs(&self, app: &AppName, follow: bool) -> Result<LineStream, DeployError>;
    /// How the app's process fares, if this runtime watches it (default: it does not say).
    async fn process(&self, app: &AppName) -> Option<ProcessInfo> {
        let _ = app;
        None
    }
}
