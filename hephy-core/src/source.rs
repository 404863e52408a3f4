//! The [`Source`] trait: where a build context comes from.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;

use crate::{AppName, BoxError, Events, Revision};

/// The error returned by [`Source::materialize`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SourceError {
    /// The app has no repository.
    #[error("app {app} has no repository: create the app before pushing to it")]
    UnknownApp {
        /// The app.
        app: AppName,
    },
    /// The commit is not in the repository.
    #[error("commit {commit} is not in the repository of {app}: push it first")]
    UnknownCommit {
        /// The app.
        app: AppName,
        /// The commit asked for.
        commit: String,
    },
    /// A name given to resolve (a branch, `HEAD`, a commit id) names no commit.
    #[error("{name:?} names no commit in the repository of {app}: use HEAD, a branch such as main, a full ref name or a commit id of at least 4 hex digits")]
    UnknownRevision {
        /// The app.
        app: AppName,
        /// The name given.
        name: String,
    },
    /// The source holds something that cannot be built safely.
    #[error("{problem}")]
    Invalid {
        /// What is wrong and how to fix it.
        problem: String,
    },
    /// Writing the build context failed.
    #[error("cannot write the build context to {}: {source}", path.display())]
    Io {
        /// Where.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
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

impl SourceError {
    /// Advice that names hephy's CLI, for hephy's own tools to show after the message (see
    /// [`PipelineError::hint`](crate::PipelineError::hint)).
    pub fn hint(&self) -> Option<String> {
        match self {
            SourceError::UnknownApp { app } => Some(format!("run `hephy apps create {app}`")),
            _ => None,
        }
    }
}

/// Materializes a revision of an app's source into a directory, ready to build.
///
/// The git implementation lives in `hephy-git`; the CLI's `hephy build` uses no source and
/// builds the current checkout directly.
#[async_trait]
pub trait Source: Send + Sync {
    /// Writes the files of `revision` of `app` into the empty directory `dest` and returns the
    /// revision with everything the source knows of it (ref, author, message, time).
    async fn materialize(
        &self,
        app: &AppName,
        revision: &Revision,
        dest: &Path,
        events: &Events,
    ) -> Result<Revision, SourceError>;

    /// The directory this source reads from, if it reads one: the data directory of a source of
    /// per-app repositories. A push server checks it against its own, so a pipeline never
    /// builds from another server's repositories. `None` (the default) when not applicable.
    fn location(&self) -> Option<&Path> {
        None
    }
}

#[async_trait]
impl<T: Source + ?Sized> Source for Arc<T> {
    async fn materialize(
        &self,
        app: &AppName,
        revision: &Revision,
        dest: &Path,
        events: &Events,
    ) -> Result<Revision, SourceError> {
        (**self).materialize(app, revision, dest, events).await
    }

    fn location(&self) -> Option<&Path> {
        (**self).location()
    }
}

#[async_trait]
impl<T: Source + ?Sized> Source for Box<T> {
    async fn materialize(
        &self,
        app: &AppName,
        revision: &Revision,
        dest: &Path,
        events: &Events,
    ) -> Result<Revision, SourceError> {
        (**self).materialize(app, revision, dest, events).await
    }

    fn location(&self) -> Option<&Path> {
        (**self).location()
    }
}
