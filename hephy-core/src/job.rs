//! A [`Job`] (one run of the pipeline) and its [`Report`].

use std::fmt;
use std::path::{Path, PathBuf};

use crate::{AppName, BuildContext, Platform, Published, Release, Revision};

/// What a job runs on.
#[derive(Debug, Clone)]
pub(crate) enum JobInput {
    Revision(Revision),
    Context(Box<BuildContext>),
}

/// One run of the pipeline: which app, from what, and how far.
///
/// ```
/// use hephy_core::{Job, Revision};
/// let job = Job::push("hello".parse()?, Revision::new("1a2b3c4d"), "/tmp/hephy-job").publish_only();
/// assert_eq!(job.app().as_str(), "hello");
/// # Ok::<(), hephy_core::AppNameError>(())
/// ```
#[derive(Debug, Clone)]
pub struct Job {
    pub(crate) app: AppName,
    pub(crate) input: JobInput,
    pub(crate) work_dir: PathBuf,
    pub(crate) deploy: bool,
    pub(crate) tag: Option<String>,
}

impl Job {
    /// A job for a pushed revision, which the pipeline's [`Source`](crate::Source) materializes under `work_dir`.
    pub fn push(app: AppName, revision: Revision, work_dir: impl Into<PathBuf>) -> Self {
        Job {
            app,
            input: JobInput::Revision(revision),
            work_dir: work_dir.into(),
            deploy: true,
            tag: None,
        }
    }

    /// A job for a build context already on disk (a CI checkout).
    pub fn context(app: AppName, ctx: BuildContext, work_dir: impl Into<PathBuf>) -> Self {
        Job {
            app,
            input: JobInput::Context(Box::new(ctx)),
            work_dir: work_dir.into(),
            deploy: true,
            tag: None,
        }
    }

    /// Stops after publishing, even when the pipeline has a deployer.
    pub fn publish_only(mut self) -> Self {
        self.deploy = false;
        self
    }

    /// Publishes under `tag` instead of `git-<short commit>` (or `latest` without a revision).
    pub fn with_tag(mut self, tag: impl Into<String>) -> Self {
        self.tag = Some(tag.into());
        self
    }

    /// The app.
    pub fn app(&self) -> &AppName {
        &self.app
    }

    /// The work directory.
    pub fn work_dir(&self) -> &Path {
        &self.work_dir
    }
}

/// What a successful run did.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Report {
    /// The app.
    pub app: AppName,
    /// The backend that built the app.
    pub backend: String,
    /// The revision built, if the job had one.
    pub revision: Option<Revision>,
    /// What was published.
    pub published: Published,
    /// The release made, if the job deployed.
    pub release: Option<Release>,
    /// Platforms that failed but were skipped under `platform-failure = "publish-successful"`.
    pub skipped_platforms: Vec<Platform>,
}

/// The push summary: what was deployed (or published), and the image.
///
/// ```text
/// -----> hello deployed as v3
///        image: localhost:5000/hello:git-1a2b3c4
/// ```
impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.release {
            Some(release) => writeln!(f, "-----> {} deployed as {}", self.app, release.version)?,
            None => writeln!(
                f,
                "-----> {} built and published (this server does not deploy)",
                self.app
            )?,
        }
        writeln!(f, "       image: {}", self.published.reference)
    }
}
