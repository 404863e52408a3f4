//! [`GitServer`]: the app repositories of a data directory and the pushes into them.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hephy_core::fs::{write_atomic, FileMode};
use hephy_core::{AppName, Pipeline, PipelineBuildError, PipelineBuilder, Report, RuntimeError};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::auth::{Accounts, AuthError, User};
use crate::lock::PushLocks;
use crate::receive::commands::Limits;
use crate::receive::{self, Mode, ReceiveError};
use crate::repo::Repos;
use crate::source::GitSource;

/// Gives the URL of an app after a successful push, for the push's summary (the deployer knows
/// where an app is served).
pub type UrlHook = Arc<dyn Fn(&AppName, &Report) -> Option<String> + Send + Sync>;

/// The default size limit of one push: 2 GiB.
pub const DEFAULT_MAX_PUSH_BYTES: u64 = 2 << 30;

/// The default interval of keepalive lines during silent stages.
pub const DEFAULT_KEEPALIVE: Duration = Duration::from_secs(10);

/// The default number of ref updates one push may carry: 1,000.
pub const DEFAULT_MAX_REF_UPDATES: usize = 1000;

/// The default length of one ref-update pkt-line, capabilities included: 4 KiB.
pub const DEFAULT_MAX_REF_UPDATE_BYTES: usize = 4096;

/// The default number of push options (`git push -o`) one push may carry: 100.
pub const DEFAULT_MAX_PUSH_OPTIONS: usize = 100;

/// The default size of all push options of one push together: 64 KiB.
pub const DEFAULT_MAX_PUSH_OPTIONS_BYTES: usize = 64 * 1024;

pub(crate) struct Inner {
    pub(crate) data_dir: PathBuf,
    pub(crate) repos: Repos,
    pub(crate) pipeline: Option<Arc<Pipeline>>,
    pub(crate) accounts: Option<Accounts>,
    pub(crate) deploy_branch: String,
    pub(crate) deploy_ref: String,
    pub(crate) max_push_bytes: u64,
    pub(crate) keepalive: Duration,
    pub(crate) build_timeout: Option<Duration>,
    pub(crate) limits: Limits,
    pub(crate) locks: PushLocks,
    pub(crate) url_hook: Option<UrlHook>,
    pub(crate) cli_hints: bool,
}

impl Inner {
    /// `message`, followed by `hint` when the server shows hephy's CLI advice.
    pub(crate) fn with_hint(&self, message: impl fmt::Display, hint: Option<String>) -> String {
        match hint {
            Some(hint) if self.cli_hints => format!("{message} ({hint})"),
            _ => message.to_string(),
        }
    }
}

/// The git push server: one bare repository per app under `<data_dir>/repos/<app>.git`, the
/// receive-pack protocol over any byte stream ([`GitServer::receive_pack`], used by SSH) and over
/// smart HTTP ([`GitServer::serve_http`], or [`GitServer::http_router`] to add routes).
///
/// Cheap to clone; clones share everything, including the push locks.
#[derive(Clone)]
pub struct GitServer {
    inner: Arc<Inner>,
}

impl fmt::Debug for GitServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GitServer")
            .field("data_dir", &self.inner.data_dir)
            .field("deploy_branch", &self.inner.deploy_branch)
            .field("pipeline", &self.inner.pipeline.is_some())
            .field("accounts", &self.inner.accounts.is_some())
            .finish_non_exhaustive()
    }
}

/// The error returned by [`GitServerBuilder::build`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerBuildError {
    /// The data directory cannot be used.
    #[error("cannot use the data directory {}: {source}; create it or choose a writable one", path.display())]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The deploy branch is not a valid branch name.
    #[error("{branch:?} is not a valid deploy branch: use a branch name such as main")]
    DeployBranch {
        /// The name given.
        branch: String,
    },
    /// A setting is out of range.
    #[error("{0}")]
    Setting(String),
    /// The server is built on a tokio runtime that could not serve pushes.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// The pipeline given to [`GitServerBuilder::pipeline_with`] could not be built.
    #[error(transparent)]
    Pipeline(#[from] PipelineBuildError),
    /// The pipeline has no source, so no push could be built.
    #[error("the pipeline has no source, so no push to the deploy branch could be built: build it with GitServerBuilder::pipeline_with, which gives it a GitSource on the server's data directory")]
    NoSource,
    /// The pipeline's source reads another directory than the server's data directory.
    #[error("the pipeline's source reads {}, not this server's data directory {}, so pushes would build other repositories than the pushed ones: build the pipeline with GitServerBuilder::pipeline_with, which gives it a GitSource on the server's data directory", source_dir.display(), data_dir.display())]
    ForeignSource {
        /// What the source reads.
        source_dir: PathBuf,
        /// The server's data directory.
        data_dir: PathBuf,
    },
}

/// The error returned by [`GitServer::create_app`], [`GitServer::delete_app`] and
/// [`GitServer::apps`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AppError {
    /// The app already has a repository.
    #[error("app {app} already exists: choose another name or delete it first")]
    Exists {
        /// The app.
        app: AppName,
    },
    /// The app has no repository.
    #[error("app {app} does not exist: create it first")]
    Unknown {
        /// The app.
        app: AppName,
    },
    /// The repository could not be created.
    #[error("cannot create the repository of {app} at {}: {message}", path.display())]
    Init {
        /// The app.
        app: AppName,
        /// The repository directory.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// A file operation failed.
    #[error("cannot change {}: {source}; check the data directory's permissions", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The app is being pushed to.
    #[error(transparent)]
    Locked(#[from] crate::lock::LockError),
    /// Granting or revoking access failed.
    #[error(transparent)]
    Accounts(#[from] AuthError),
}

impl AppError {
    /// Advice that names hephy's CLI, for hephy's own tools to show after the message (see
    /// [`hephy_core::PipelineError::hint`]).
    pub fn hint(&self) -> Option<String> {
        match self {
            AppError::Unknown { app } => Some(format!("run `hephy apps create {app}`")),
            _ => None,
        }
    }
}

/// The shortest `max_ref_update_bytes` the builder accepts: two ids, a short ref name and the
/// capabilities git sends.
const MIN_REF_UPDATE_BYTES: usize = 512;

/// Builds a [`GitServer`]; see [`GitServer::builder`].
///
/// What a push sends before its pack is bounded ([`GitServerBuilder::max_ref_updates`],
/// [`GitServerBuilder::max_ref_update_bytes`], [`GitServerBuilder::max_push_options`],
/// [`GitServerBuilder::max_push_options_bytes`]) and so is the pack
/// ([`GitServerBuilder::max_push_bytes`]): a push over a limit is refused with a message that
/// names the limit, and the server goes on serving.
pub struct GitServerBuilder {
    data_dir: PathBuf,
    pipeline: Option<Arc<Pipeline>>,
    pipeline_builder: Option<PipelineBuilder>,
    cli_hints: bool,
    accounts: Option<Accounts>,
    deploy_branch: String,
    max_push_bytes: u64,
    keepalive: Duration,
    build_timeout: Option<Duration>,
    url_hook: Option<UrlHook>,
    max_ref_updates: usize,
    max_ref_update_bytes: usize,
    max_push_options: usize,
    max_push_options_bytes: usize,
}

impl fmt::Debug for GitServerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GitServerBuilder")
            .field("data_dir", &self.data_dir)
            .finish_non_exhaustive()
    }
}

impl GitServerBuilder {
    /// The pipeline run for pushes to the deploy branch. Without one, pushes only update refs
    /// (for benchmarks and mirrors).
    ///
    /// Its source must read this server's repositories: a [`GitSource`] on the same data
    /// directory, or a source of your own whose [`location`](hephy_core::Source::location) is
    /// `None`. [`build`](GitServerBuilder::build) refuses anything else. The simpler way is
    /// [`GitServerBuilder::pipeline_with`], which supplies the source.
    pub fn pipeline(mut self, pipeline: Arc<Pipeline>) -> Self {
        self.pipeline = Some(pipeline);
        self.pipeline_builder = None;
        self
    }

    /// The pipeline run for pushes to the deploy branch, from a builder that `pipeline` gets
    /// with the [`GitSource`] of this server's repositories; [`build`](GitServerBuilder::build)
    /// builds it and returns its errors.
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use hephy_core::*;
    /// # struct Echo;
    /// # #[async_trait]
    /// # impl Backend for Echo {
    /// #     fn name(&self) -> &str { "echo" }
    /// #     async fn detect(&self, _: &BuildContext) -> Detection { Detection::yes("echo", Confidence::Low, "any") }
    /// #     async fn build(&self, _: &BuildContext, _: &BuildTarget, _: &Events) -> Result<BuiltImage, BuildError> { unimplemented!() }
    /// # }
    /// use hephy_git::GitServer;
    /// use hephy_oci::OciLayoutPublisher;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let data = tempfile::tempdir()?;
    /// let images = data.path().join("images");
    /// let server = GitServer::builder(data.path())
    ///     .pipeline_with(|source| {
    ///         Pipeline::builder()
    ///             .source(Arc::new(source))
    ///             .backend(Arc::new(Echo))
    ///             .publisher(Arc::new(OciLayoutPublisher::new(images)))
    ///     })
    ///     .build()?;
    /// # let _ = server; Ok(()) }
    /// ```
    pub fn pipeline_with(mut self, pipeline: impl FnOnce(GitSource) -> PipelineBuilder) -> Self {
        self.pipeline_builder = Some(pipeline(GitSource::new(&self.data_dir)));
        self.pipeline = None;
        self
    }

    /// Shows pushers the advice of hephy's own CLI (`hephy apps create hello`, `hephy tokens
    /// create`) after the messages that have some (the errors' `hint()`), as hephy-server does.
    /// Off by default: the users of an embedding program have no hephy CLI.
    pub fn cli_hints(mut self, show: bool) -> Self {
        self.cli_hints = show;
        self
    }

    /// The accounts that decide who may push to which app. Without them every authenticated
    /// transport user may push to every app, and smart HTTP accepts anonymous pushes: use that
    /// only on a loopback address for tests and benchmarks.
    pub fn accounts(mut self, accounts: Accounts) -> Self {
        self.accounts = Some(accounts);
        self
    }

    /// The branch whose pushes are built and deployed (default `main`).
    pub fn deploy_branch(mut self, branch: impl Into<String>) -> Self {
        self.deploy_branch = branch.into();
        self
    }

    /// The largest pack one push may send (default 2 GiB).
    pub fn max_push_bytes(mut self, limit: u64) -> Self {
        self.max_push_bytes = limit;
        self
    }

    /// The most ref updates (branches and tags created, moved or deleted) one push may carry
    /// (default 1,000). A push with more is refused before its pack is read, and the pusher is
    /// told the number and the limit.
    pub fn max_ref_updates(mut self, limit: usize) -> Self {
        self.max_ref_updates = limit;
        self
    }

    /// The longest pkt-line of one ref update, the capabilities of the first included (default
    /// 4 KiB; a ref update is about 100 bytes plus the ref's name). Longer lines refuse the push.
    pub fn max_ref_update_bytes(mut self, limit: usize) -> Self {
        self.max_ref_update_bytes = limit;
        self
    }

    /// The most push options (`git push -o`) one push may carry (default 100; 0 refuses every
    /// push that sends one). More refuse the push.
    pub fn max_push_options(mut self, limit: usize) -> Self {
        self.max_push_options = limit;
        self
    }

    /// The most bytes the push options of one push may take together (default 64 KiB). More
    /// refuse the push.
    pub fn max_push_options_bytes(mut self, limit: usize) -> Self {
        self.max_push_options_bytes = limit;
        self
    }

    /// How long a build may stay silent before a keepalive line is sent (default 10 s).
    pub fn keepalive(mut self, interval: Duration) -> Self {
        self.keepalive = interval;
        self
    }

    /// Limits the pipeline run of one push (default: only the pipeline's own limits).
    pub fn build_timeout(mut self, limit: Duration) -> Self {
        self.build_timeout = Some(limit);
        self
    }

    /// Gives the URL shown at the end of a successful push.
    pub fn url_hook(
        mut self,
        hook: impl Fn(&AppName, &Report) -> Option<String> + Send + Sync + 'static,
    ) -> Self {
        self.url_hook = Some(Arc::new(hook));
        self
    }

    /// The server, with its data directory created.
    ///
    /// Refuses a pipeline whose source reads another directory than the data directory, and,
    /// called inside a tokio runtime, a runtime without time or IO
    /// ([`hephy_core::check_runtime`]): serving pushes needs both. Outside any runtime (to
    /// manage apps, or before the runtime starts) it builds, and each push session checks.
    pub fn build(self) -> Result<GitServer, ServerBuildError> {
        match hephy_core::check_runtime() {
            Ok(()) | Err(RuntimeError::NoRuntime) => {}
            Err(e) => return Err(e.into()),
        }
        let branch = self.deploy_branch;
        let deploy_ref = format!("refs/heads/{branch}");
        if branch.is_empty()
            || branch.starts_with("refs/")
            || gix::refs::FullName::try_from(deploy_ref.as_str()).is_err()
        {
            return Err(ServerBuildError::DeployBranch { branch });
        }
        if self.max_push_bytes == 0 {
            return Err(ServerBuildError::Setting(
                "max_push_bytes is 0, so no push could succeed: set a positive limit".into(),
            ));
        }
        if self.max_ref_updates == 0 {
            return Err(ServerBuildError::Setting(
                "max_ref_updates is 0, so no push could succeed: set a positive limit such as 1000"
                    .into(),
            ));
        }
        if self.max_ref_update_bytes < MIN_REF_UPDATE_BYTES {
            return Err(ServerBuildError::Setting(format!(
                "max_ref_update_bytes is {}, too short for a ref update with git's capabilities: set at least {MIN_REF_UPDATE_BYTES}",
                self.max_ref_update_bytes
            )));
        }
        if self.keepalive.is_zero() {
            return Err(ServerBuildError::Setting(
                "the keepalive interval is 0: use a positive interval such as 10s".into(),
            ));
        }
        let repos = Repos::new(&self.data_dir);
        std::fs::create_dir_all(repos.root()).map_err(|source| ServerBuildError::DataDir {
            path: repos.root().to_owned(),
            source,
        })?;
        let pipeline = match self.pipeline_builder {
            Some(builder) => Some(Arc::new(builder.build()?)),
            None => self.pipeline,
        };
        if let Some(pipeline) = &pipeline {
            let source = pipeline.source().ok_or(ServerBuildError::NoSource)?;
            if let Some(dir) = source.location() {
                if resolved(dir) != resolved(&self.data_dir) {
                    return Err(ServerBuildError::ForeignSource {
                        source_dir: dir.to_owned(),
                        data_dir: self.data_dir,
                    });
                }
            }
        }
        Ok(GitServer {
            inner: Arc::new(Inner {
                locks: PushLocks::new(&self.data_dir),
                data_dir: self.data_dir,
                repos,
                pipeline,
                accounts: self.accounts,
                deploy_branch: branch,
                deploy_ref,
                max_push_bytes: self.max_push_bytes,
                keepalive: self.keepalive,
                build_timeout: self.build_timeout,
                limits: Limits {
                    ref_updates: self.max_ref_updates,
                    ref_update_bytes: self.max_ref_update_bytes,
                    push_options: self.max_push_options,
                    push_options_bytes: self.max_push_options_bytes,
                    count_bytes: self.max_push_bytes,
                },
                url_hook: self.url_hook,
                cli_hints: self.cli_hints,
            }),
        })
    }
}

/// `path` with symlinks resolved when it exists, so two spellings of one directory compare
/// equal.
fn resolved(path: &Path) -> PathBuf {
    std::fs::canonicalize(path)
        .or_else(|_| std::path::absolute(path))
        .unwrap_or_else(|_| path.to_owned())
}

impl GitServer {
    /// A builder for a server keeping its repositories under `data_dir`.
    pub fn builder(data_dir: impl Into<PathBuf>) -> GitServerBuilder {
        GitServerBuilder {
            data_dir: data_dir.into(),
            pipeline: None,
            pipeline_builder: None,
            cli_hints: false,
            accounts: None,
            deploy_branch: "main".to_owned(),
            max_push_bytes: DEFAULT_MAX_PUSH_BYTES,
            keepalive: DEFAULT_KEEPALIVE,
            build_timeout: None,
            url_hook: None,
            max_ref_updates: DEFAULT_MAX_REF_UPDATES,
            max_ref_update_bytes: DEFAULT_MAX_REF_UPDATE_BYTES,
            max_push_options: DEFAULT_MAX_PUSH_OPTIONS,
            max_push_options_bytes: DEFAULT_MAX_PUSH_OPTIONS_BYTES,
        }
    }

    pub(crate) fn inner(&self) -> &Inner {
        &self.inner
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.inner.data_dir
    }

    /// The deploy branch's name, such as `main`.
    pub fn deploy_branch(&self) -> &str {
        &self.inner.deploy_branch
    }

    /// The accounts, if the server has them.
    pub fn accounts(&self) -> Option<&Accounts> {
        self.inner.accounts.as_ref()
    }

    /// The bare repository directory of `app` (whether or not it exists).
    pub fn repo_dir(&self, app: &AppName) -> PathBuf {
        self.inner.repos.path(app)
    }

    /// A [`Source`](hephy_core::Source) reading this server's repositories, to
    /// [resolve](GitSource::resolve) names to revisions; a pipeline gets its own from
    /// [`GitServerBuilder::pipeline_with`].
    pub fn source(&self) -> GitSource {
        GitSource::new(&self.inner.data_dir)
    }

    /// Creates the bare repository of `app` (HEAD on the deploy branch) and, with accounts,
    /// grants `owner` push access.
    pub fn create_app(&self, app: &AppName, owner: &str) -> Result<PathBuf, AppError> {
        let path = self.inner.repos.path(app);
        if path.exists() {
            return Err(AppError::Exists { app: app.clone() });
        }
        let init_err = |message: String| AppError::Init {
            app: app.clone(),
            path: path.clone(),
            message,
        };
        gix::init_bare(&path).map_err(|e| init_err(e.to_string()))?;
        let head = path.join("HEAD");
        let head_ref = format!("ref: {}\n", self.inner.deploy_ref);
        write_atomic(&head, head_ref.as_bytes(), FileMode::Public).map_err(|source| {
            AppError::Io {
                path: head.clone(),
                source,
            }
        })?;
        if let Some(accounts) = &self.inner.accounts {
            accounts.grant(app, owner)?;
        }
        Ok(path)
    }

    /// Deletes the repository of `app` and, with accounts, every grant on it. Refused while a
    /// push to the app runs.
    pub fn delete_app(&self, app: &AppName) -> Result<(), AppError> {
        if !self.inner.repos.exists(app) {
            return Err(AppError::Unknown { app: app.clone() });
        }
        let _guard = self.inner.locks.try_lock(app, "hephy apps destroy")?;
        let path = self.inner.repos.path(app);
        std::fs::remove_dir_all(&path).map_err(|source| AppError::Io {
            path: path.clone(),
            source,
        })?;
        if let Some(accounts) = &self.inner.accounts {
            accounts.revoke_app(app)?;
        }
        Ok(())
    }

    /// The apps that have a repository, sorted.
    pub fn apps(&self) -> Result<Vec<AppName>, AppError> {
        self.inner.repos.list().map_err(|source| AppError::Io {
            path: self.inner.repos.root().to_owned(),
            source,
        })
    }

    /// Serves one full-duplex receive-pack session (protocol v0/v1) for `user` pushing to
    /// `app`: advertises the refs, reads the commands and the pack, builds the deploy branch,
    /// updates refs and reports their status. For SSH's `git-receive-pack 'APP.git'`.
    ///
    /// The app must exist and, with accounts, the user must be allowed to push to it; otherwise
    /// the client gets an `ERR` line and this returns the error. When writing to `output` fails
    /// (the client went away), a running build is cancelled.
    ///
    /// Needs a tokio runtime with time and IO enabled (`#[tokio::main]` has both); on any other
    /// it returns [`ReceiveError::Runtime`] before reading or sending anything.
    pub async fn receive_pack<R, W>(
        &self,
        user: &User,
        app: &AppName,
        input: R,
        output: W,
    ) -> Result<(), ReceiveError>
    where
        R: AsyncRead + Unpin + Send,
        W: AsyncWrite + Unpin + Send,
    {
        self.receive_pack_with_protocol(user, app, None, input, output)
            .await
    }

    /// [`GitServer::receive_pack`] for a client that said which protocol it speaks, as the
    /// value of `GIT_PROTOCOL` (SSH's environment) or the `Git-Protocol` header: `version=1`
    /// starts the advertisement with `version 1`; anything else (`version=2` included, which
    /// git does not use for pushes) gets protocol v0.
    ///
    /// Needs a tokio runtime with time and IO enabled (`#[tokio::main]` has both); on any other
    /// it returns [`ReceiveError::Runtime`] before reading or sending anything.
    pub async fn receive_pack_with_protocol<R, W>(
        &self,
        user: &User,
        app: &AppName,
        git_protocol: Option<&str>,
        input: R,
        output: W,
    ) -> Result<(), ReceiveError>
    where
        R: AsyncRead + Unpin + Send,
        W: AsyncWrite + Unpin + Send,
    {
        let version1 = git_protocol.is_some_and(|p| p.split(':').any(|kv| kv == "version=1"));
        let mode = Mode::FullDuplex { version1 };
        receive::session(&self.inner, user, app, input, output, mode).await
    }

    /// Serves the request half of a stateless (smart HTTP) receive-pack session: `input` holds
    /// the commands and the pack, `output` gets the report.
    ///
    /// Needs a tokio runtime with time and IO enabled (`#[tokio::main]` has both); on any other
    /// it returns [`ReceiveError::Runtime`] before reading or sending anything.
    pub async fn receive_pack_stateless<R, W>(
        &self,
        user: &User,
        app: &AppName,
        input: R,
        output: W,
    ) -> Result<(), ReceiveError>
    where
        R: AsyncRead + Unpin + Send,
        W: AsyncWrite + Unpin + Send,
    {
        receive::session(&self.inner, user, app, input, output, Mode::Stateless).await
    }

    /// The ref advertisement of `app` as pkt-lines (after the `# service=` header of smart
    /// HTTP), starting with `version 1` when `version1`; while another push to the app runs, an
    /// `ERR` line saying so.
    pub fn advertisement(
        &self,
        user: &User,
        app: &AppName,
        version1: bool,
    ) -> Result<Vec<u8>, ReceiveError> {
        receive::authorize(&self.inner, user, app)?;
        receive::advertise_unless_busy(&self.inner, app, version1)
    }

    /// Where the last build of `app` wrote its log, line by line as the pusher saw it.
    pub fn build_log_path(&self, app: &AppName) -> PathBuf {
        crate::receive::build_log_path(&self.inner.data_dir, app)
    }

    /// The smart HTTP router: `GET /APP.git/info/refs?service=git-receive-pack` and
    /// `POST /APP.git/git-receive-pack`, with token auth over HTTP basic when the server has
    /// accounts. For merging with your own routes; its axum is re-exported as [`crate::axum`].
    /// To serve git alone, [`GitServer::serve_http`] needs no axum of your own.
    pub fn http_router(&self) -> axum::Router {
        crate::http::router(self.clone())
    }
}
