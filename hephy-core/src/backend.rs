//! The [`Backend`] trait: builds one image for one platform.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;

use crate::{BoxError, BuildContext, Digest, Events, Platform};

/// How sure a backend is that it can build a context.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum Confidence {
    /// It cannot build it.
    No,
    /// It could, as a fallback (a plain files image).
    Low,
    /// It found a sign of its kind of app.
    Medium,
    /// It found its manifest (`go.mod`, `Dockerfile`, `spin.toml`).
    High,
}

/// A backend's answer to [`Backend::detect`]: whether, how surely and why.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Detection {
    /// The backend's name.
    pub backend: String,
    /// How sure it is.
    pub confidence: Confidence,
    /// Why, for humans: `found go.mod (module example.com/hello)`.
    pub reason: String,
}

impl Detection {
    /// The backend can build the context.
    pub fn yes(
        backend: impl Into<String>,
        confidence: Confidence,
        reason: impl Into<String>,
    ) -> Self {
        Detection {
            backend: backend.into(),
            confidence,
            reason: reason.into(),
        }
    }

    /// The backend cannot build the context.
    pub fn no(backend: impl Into<String>, reason: impl Into<String>) -> Self {
        Detection::yes(backend, Confidence::No, reason)
    }

    /// Whether the backend can build the context.
    pub fn detected(&self) -> bool {
        self.confidence > Confidence::No
    }
}

impl fmt::Display for Detection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.backend, self.reason)
    }
}

/// Where and for what one build writes its image.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct BuildTarget {
    /// The platform to build for.
    pub platform: Platform,
    /// An empty directory to write the image into as an OCI image layout.
    pub out_dir: PathBuf,
}

impl BuildTarget {
    /// A target.
    pub fn new(platform: Platform, out_dir: impl Into<PathBuf>) -> Self {
        BuildTarget {
            platform,
            out_dir: out_dir.into(),
        }
    }
}

/// A built image (or artifact), stored as an OCI image layout on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct BuiltImage {
    /// The platform, or `None` for a platform-independent artifact (a Wasm app).
    pub platform: Option<Platform>,
    /// The OCI image layout directory.
    pub layout: PathBuf,
    /// The digest of the image manifest in the layout.
    pub manifest: Digest,
}

impl BuiltImage {
    /// A built image.
    pub fn new(platform: Option<Platform>, layout: impl Into<PathBuf>, manifest: Digest) -> Self {
        BuiltImage {
            platform,
            layout: layout.into(),
            manifest,
        }
    }
}

/// The error returned by [`Backend::build`] and [`Backend::check`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// A tool the backend runs is not installed.
    #[error("{tool} not found: {hint}")]
    ToolMissing {
        /// The tool.
        tool: String,
        /// How to install or configure it.
        hint: String,
    },
    /// The backend cannot build for the platform.
    #[error("the {backend} backend cannot build for {platform}: {hint}")]
    UnsupportedPlatform {
        /// The backend.
        backend: String,
        /// The platform.
        platform: Platform,
        /// What to do instead.
        hint: String,
    },
    /// The context holds something that cannot be built (a symlink out of the context, a bad
    /// setting).
    #[error("{problem}")]
    InvalidContext {
        /// What is wrong and how to fix it.
        problem: String,
    },
    /// The build ran and failed; its output is in the log.
    #[error("{message}")]
    Failed {
        /// What failed, with the last lines that tell why.
        message: String,
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

impl BuildError {
    /// A [`BuildError::Other`] from any error.
    pub fn other(message: impl Into<String>, source: impl Into<BoxError>) -> Self {
        BuildError::Other {
            message: message.into(),
            source: Some(source.into()),
        }
    }
}

/// Builds an app into an image for one platform.
///
/// Required: [`Backend::name`] and [`Backend::build`]. A backend that can recognise its kind of
/// app also implements [`Backend::detect`], so that `backend = "auto"` finds it.
///
/// The pipeline calls `build` once per platform, all platforms at once, each with its own
/// [`Events`] handle; dropping the future must stop the build (spawn child processes with
/// `kill_on_drop`).
#[async_trait]
pub trait Backend: Send + Sync {
    /// The name used in `hephy.toml` (`backend = "go"`) and its `[build.NAME]` table.
    fn name(&self) -> &str;

    /// Whether and why this backend can build `ctx`.
    async fn detect(&self, ctx: &BuildContext) -> Detection {
        let _ = ctx;
        Detection::no(
            self.name(),
            "does not detect apps; choose it with backend = \"NAME\" in hephy.toml",
        )
    }

    /// Checks, without building, that `ctx` can be built for `platforms`, refusing clearly what
    /// cannot work.
    async fn check(&self, ctx: &BuildContext, platforms: &[Platform]) -> Result<(), BuildError> {
        let _ = (ctx, platforms);
        Ok(())
    }

    /// Builds `ctx` for `target.platform` into an OCI layout at `target.out_dir`.
    async fn build(
        &self,
        ctx: &BuildContext,
        target: &BuildTarget,
        events: &Events,
    ) -> Result<BuiltImage, BuildError>;
}

#[async_trait]
impl<T: Backend + ?Sized> Backend for Arc<T> {
    fn name(&self) -> &str {
        (**self).name()
    }
    async fn detect(&self, ctx: &BuildContext) -> Detection {
        (**self).detect(ctx).await
    }
    async fn check(&self, ctx: &BuildContext, platforms: &[Platform]) -> Result<(), BuildError> {
        (**self).check(ctx, platforms).await
    }
    async fn build(
        &self,
        ctx: &BuildContext,
        target: &BuildTarget,
        events: &Events,
    ) -> Result<BuiltImage, BuildError> {
        (**self).build(ctx, target, events).await
    }
}

#[async_trait]
impl<T: Backend + ?Sized> Backend for Box<T> {
    fn name(&self) -> &str {
        (**self).name()
    }
    async fn detect(&self, ctx: &BuildContext) -> Detection {
        (**self).detect(ctx).await
    }
    async fn check(&self, ctx: &BuildContext, platforms: &[Platform]) -> Result<(), BuildError> {
        (**self).check(ctx, platforms).await
    }
    async fn build(
        &self,
        ctx: &BuildContext,
        target: &BuildTarget,
        events: &Events,
    ) -> Result<BuiltImage, BuildError> {
        (**self).build(ctx, target, events).await
    }
}
