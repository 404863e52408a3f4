//! The [`Deployer`] trait: runs releases and keeps their history.

use std::sync::Arc;

use async_trait::async_trait;

use crate::{
    AppName, BoxError, ConfigChange, ConfigVarError, Events, NewRelease, Release, ReleaseCause,
    ReleaseVersion,
};

/// The error returned by [`Deployer`] methods.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeployError {
    /// The app is not known to the deployer.
    #[error("unknown app {app}: create the app first")]
    UnknownApp {
        /// The app.
        app: AppName,
    },
    /// The app has no release yet, so there is nothing to roll back or reconfigure.
    #[error("app {app} has no release yet: deploy it once first")]
    NoRelease {
        /// The app.
        app: AppName,
    },
    /// The release asked for does not exist.
    #[error("app {app} has no release {version}: its releases are v1 to {latest}")]
    UnknownRelease {
        /// The app.
        app: AppName,
        /// The release asked for.
        version: ReleaseVersion,
        /// The newest release.
        latest: ReleaseVersion,
    },
    /// A config change is invalid.
    #[error(transparent)]
    Config(#[from] ConfigVarError),
    /// The new release did not become healthy; the previous release keeps serving.
    #[error("{version} of {app} did not become healthy: {reason}; the previous release keeps serving{}", tail(.log_tail))]
    Unhealthy {
        /// The app.
        app: AppName,
        /// The release that failed.
        version: ReleaseVersion,
        /// Why.
        reason: String,
        /// The last lines the release wrote.
        log_tail: Vec<String>,
    },
    /// Anything else.
    #[error("{message}")]
    Other {
        /// What failed.
        message: String,
        /// Why.
        #[source]
        source: Option<BoxError>,
    },
}

fn tail(lines: &[String]) -> String {
    if lines.is_empty() {
        String::new()
    } else {
        format!("\nlast lines of its log:\n{}", lines.join("\n"))
    }
}

impl DeployError {
    /// A [`DeployError::Other`] from any error.
    pub fn other(message: impl Into<String>, source: impl Into<BoxError>) -> Self {
        DeployError::Other {
            message: message.into(),
            source: Some(source.into()),
        }
    }

    /// Advice that names hephy's CLI (`hephy apps create hello`, `hephy releases`), for hephy's
    /// own tools to show after the message; the message says what is wrong in the library's
    /// words, and an embedding program shows its own advice instead, or none.
    pub fn hint(&self) -> Option<String> {
        match self {
            DeployError::UnknownApp { app } => Some(format!("run `hephy apps create {app}`")),
            DeployError::NoRelease { .. } => Some("push it with `git push hephy main`".into()),
            DeployError::UnknownRelease { .. } => Some("list them with `hephy releases`".into()),
            DeployError::Config(e) => e.hint(),
            _ => None,
        }
    }
}

/// Runs releases of apps and keeps their numbered history.
///
/// Required: [`Deployer::deploy`] (make and run a release) and [`Deployer::releases`] (the
/// history, oldest first). Rollback and config changes have default bodies in terms of those
/// two: each makes a new release, so history only grows.
#[async_trait]
pub trait Deployer: Send + Sync {
    /// Makes the next release of `release.app` and runs it. On failure the current release keeps
    /// running and no release is recorded.
    async fn deploy(&self, release: NewRelease, events: &Events) -> Result<Release, DeployError>;

    /// The releases of `app`, oldest first; empty for an app without releases.
    async fn releases(&self, app: &AppName) -> Result<Vec<Release>, DeployError>;

    /// The newest release of `app`.
    async fn current(&self, app: &AppName) -> Result<Option<Release>, DeployError> {
        Ok(self.releases(app).await?.pop())
    }

    /// Makes a new release that runs `to`'s image, config and settings.
    async fn rollback(
        &self,
        app: &AppName,
        to: ReleaseVersion,
        events: &Events,
    ) -> Result<Release, DeployError> {
        let releases = self.releases(app).await?;
        let latest = releases
            .last()
            .ok_or_else(|| DeployError::NoRelease { app: app.clone() })?;
        let target = releases.iter().find(|r| r.version == to).ok_or_else(|| {
            DeployError::UnknownRelease {
                app: app.clone(),
                version: to,
                latest: latest.version,
            }
        })?;
        self.deploy(target.to_new_release(ReleaseCause::Rollback { to }), events)
            .await
    }

    /// Applies `change` to the current release's config vars as a new release.
    async fn set_config(
        &self,
        app: &AppName,
        change: &ConfigChange,
        events: &Events,
    ) -> Result<Release, DeployError> {
        let current = self
            .current(app)
            .await?
            .ok_or_else(|| DeployError::NoRelease { app: app.clone() })?;
        let config = change.apply(&current.config)?;
        let cause = ReleaseCause::Config {
            set: change.set.keys().cloned().collect(),
            unset: change.unset.clone(),
        };
        let new = current.to_new_release(cause).with_config(config);
        self.deploy(new, events).await
    }
}

#[async_trait]
impl<T: Deployer + ?Sized> Deployer for Arc<T> {
    async fn deploy(&self, release: NewRelease, events: &Events) -> Result<Release, DeployError> {
        (**self).deploy(release, events).await
    }
    async fn releases(&self, app: &AppName) -> Result<Vec<Release>, DeployError> {
        (**self).releases(app).await
    }
    async fn current(&self, app: &AppName) -> Result<Option<Release>, DeployError> {
        (**self).current(app).await
    }
    async fn rollback(
        &self,
        app: &AppName,
        to: ReleaseVersion,
        events: &Events,
    ) -> Result<Release, DeployError> {
        (**self).rollback(app, to, events).await
    }
    async fn set_config(
        &self,
        app: &AppName,
        change: &ConfigChange,
        events: &Events,
    ) -> Result<Release, DeployError> {
        (**self).set_config(app, change, events).await
    }
}
