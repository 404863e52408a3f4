//! Revisions and build contexts.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::{AppConfig, AppName, ConfigError};

/// A revision of an app's source: the commit a push brought.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Revision {
    /// The full commit id in hex.
    pub commit: String,
    /// The ref it was pushed to, such as `refs/heads/main`.
    pub ref_name: String,
    /// The author, as `Name <email>`.
    pub author: String,
    /// The commit message.
    pub message: String,
    /// The commit time.
    pub time: Option<SystemTime>,
}

impl Revision {
    /// A revision known only by its commit id; a [`Source`](crate::Source) fills in the rest.
    pub fn new(commit: impl Into<String>) -> Self {
        Revision {
            commit: commit.into(),
            ..Revision::default()
        }
    }

    /// Sets the ref name.
    pub fn with_ref_name(mut self, r: impl Into<String>) -> Self {
        self.ref_name = r.into();
        self
    }

    /// Sets the author.
    pub fn with_author(mut self, a: impl Into<String>) -> Self {
        self.author = a.into();
        self
    }

    /// Sets the message.
    pub fn with_message(mut self, m: impl Into<String>) -> Self {
        self.message = m.into();
        self
    }

    /// Sets the commit time.
    pub fn with_time(mut self, t: SystemTime) -> Self {
        self.time = Some(t);
        self
    }

    /// The first 7 hex digits of the commit id.
    pub fn short(&self) -> &str {
        &self.commit[..self.commit.len().min(7)]
    }
}

/// A directory holding an app's source, ready to build, with its `hephy.toml`.
///
/// ```
/// use hephy_core::BuildContext;
/// let dir = std::env::temp_dir();
/// let ctx = BuildContext::new(&dir, Default::default());
/// assert_eq!(ctx.dir(), dir.as_path());
/// ```
#[derive(Debug, Clone)]
pub struct BuildContext {
    dir: PathBuf,
    config: AppConfig,
    app: Option<AppName>,
    revision: Option<Revision>,
    source_date_epoch: Option<SystemTime>,
}

impl BuildContext {
    /// A context for `dir` with `config`.
    pub fn new(dir: impl Into<PathBuf>, config: AppConfig) -> Self {
        BuildContext {
            dir: dir.into(),
            config,
            app: None,
            revision: None,
            source_date_epoch: None,
        }
    }

    /// A context for `dir`, reading `hephy.toml` from it (all defaults without one).
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, ConfigError> {
        let dir = dir.into();
        let config = AppConfig::load(&dir)?;
        Ok(BuildContext::new(dir, config))
    }

    /// Sets the revision the context was made from.
    pub fn with_revision(mut self, revision: Revision) -> Self {
        self.revision = Some(revision);
        self
    }

    /// Sets the app the context is built for (the pipeline sets the job's app); backends key
    /// per-app state, such as build caches, by it.
    pub fn with_app(mut self, app: AppName) -> Self {
        self.app = Some(app);
        self
    }

    /// The app the context is built for, when known.
    pub fn app(&self) -> Option<&AppName> {
        self.app.as_ref()
    }

    /// Fixes the time written into images, overriding `SOURCE_DATE_EPOCH` and the commit time.
    pub fn with_source_date_epoch(mut self, t: SystemTime) -> Self {
        self.source_date_epoch = Some(t);
        self
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The app's configuration.
    pub fn config(&self) -> &AppConfig {
        &self.config
    }

    /// Mutable access to the configuration (for callers that override `hephy.toml`).
    pub fn config_mut(&mut self) -> &mut AppConfig {
        &mut self.config
    }

    /// The revision, when the context came from one.
    pub fn revision(&self) -> Option<&Revision> {
        self.revision.as_ref()
    }

    /// The time to write into images so that the same source always gives the same bytes:
    /// the one set with [`BuildContext::with_source_date_epoch`], else the `SOURCE_DATE_EPOCH`
    /// environment variable, else the commit time, else the Unix epoch.
    pub fn source_date_epoch(&self) -> SystemTime {
        if let Some(t) = self.source_date_epoch {
            return t;
        }
        if let Some(secs) = std::env::var("SOURCE_DATE_EPOCH")
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
        {
            return UNIX_EPOCH + Duration::from_secs(secs);
        }
        self.revision
            .as_ref()
            .and_then(|r| r.time)
            .unwrap_or(UNIX_EPOCH)
    }
}
