//! The [`Pipeline`]: Source → Backend (every platform at once) → Publisher → Deployer.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use tokio::time::Instant;

use crate::job::{Job, JobInput, Report};
use crate::{
    Backend, BackendChoice, BuildContext, BuildError, BuildTarget, BuiltImage, Confidence,
    ConfigError, DeployError, Deployer, Detection, EventKind, EventStream, Events, NewRelease,
    Outcome, Platform, PlatformFailurePolicy, PublishError, PublishRequest, Publisher,
    ReleaseCause, RuntimeError, Source, SourceError, Stage,
};

/// The error returned by [`PipelineBuilder::build`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PipelineBuildError {
    /// No publisher was given.
    #[error("a pipeline needs a publisher: add one with PipelineBuilder::publisher (an OCI layout directory works without a registry)")]
    NoPublisher,
    /// No backend was given.
    #[error("a pipeline needs at least one backend: add one with PipelineBuilder::backend")]
    NoBackend,
    /// Two backends have the same name.
    #[error("two backends are named {name:?}: backend names must be unique, as hephy.toml chooses by name")]
    DuplicateBackend {
        /// The name.
        name: String,
    },
    /// The pipeline is built on a tokio runtime that could not run it.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
}

/// One platform that failed to build.
#[derive(Debug)]
#[non_exhaustive]
pub struct PlatformFailure {
    /// The platform.
    pub platform: Platform,
    /// Why it failed.
    pub error: BuildError,
}

/// The error returned by [`Pipeline::run`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PipelineError {
    /// The run is polled outside a tokio runtime with time and IO.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// The job needs a source, and the pipeline has none.
    #[error("this pipeline has no source, so it cannot build a pushed revision: add one with PipelineBuilder::source, or run the job on a build context")]
    NoSource,
    /// The source could not be materialized.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// `hephy.toml` is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// No backend recognised the app.
    #[error("no backend can build this app:\n{}\nadd what one of the registered backends ({}) looks for, or set backend = \"NAME\" in the [build] section of hephy.toml", list_detections(.detections), list_backends(.detections))]
    NoBackend {
        /// Every backend's answer, in registration order.
        detections: Vec<Detection>,
    },
    /// `hephy.toml` names a backend that is not registered.
    #[error("hephy.toml asks for backend {name:?}, which this server does not have: use one of {}, or \"auto\"", .available.join(", "))]
    UnknownBackend {
        /// The name asked for.
        name: String,
        /// The names registered.
        available: Vec<String>,
    },
    /// The backend refused the context before building.
    #[error("the {backend} backend cannot build this app: {error}")]
    Check {
        /// The backend.
        backend: String,
        /// Why.
        #[source]
        error: Box<BuildError>,
    },
    /// One or more platforms failed to build.
    #[error("build failed: {}", list_failures(.failures))]
    Build {
        /// The failed platforms.
        failures: Vec<PlatformFailure>,
    },
    /// Publishing failed; nothing was deployed.
    #[error("publish failed: {0}")]
    Publish(#[source] PublishError),
    /// Deploying failed; the previous release keeps serving.
    #[error("deploy failed: {0}")]
    Deploy(#[source] DeployError),
    /// A stage, or the whole run, took too long.
    #[error("the {stage} stage timed out after {}: raise the limit ([build] timeout in hephy.toml for builds) or make it faster", humantime::format_duration(*.after))]
    TimedOut {
        /// The stage that was running.
        stage: Stage,
        /// The limit.
        after: Duration,
    },
    /// The work directory could not be prepared.
    #[error("cannot prepare the work directory {}: {source}", path.display())]
    WorkDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

impl PipelineError {
    /// The stage the run failed in.
    pub fn stage(&self) -> Stage {
        match self {
            PipelineError::Runtime(_)
            | PipelineError::NoSource
            | PipelineError::Source(_)
            | PipelineError::WorkDir { .. } => Stage::Source,
            PipelineError::Config(_)
            | PipelineError::NoBackend { .. }
            | PipelineError::UnknownBackend { .. }
            | PipelineError::Check { .. } => Stage::Detect,
            PipelineError::Build { .. } => Stage::Build,
            PipelineError::Publish(_) => Stage::Publish,
            PipelineError::Deploy(_) => Stage::Deploy,
            PipelineError::TimedOut { stage, .. } => *stage,
        }
    }
}

impl PipelineError {
    /// Advice that names hephy's CLI (`run \`hephy apps create hello\``), for hephy's own tools
    /// to show after the message (they print `MESSAGE (HINT)`); the message itself says what is
    /// wrong and what to do in the library's words. An embedding program shows its own advice
    /// instead, or none.
    pub fn hint(&self) -> Option<String> {
        match self {
            PipelineError::Source(e) => e.hint(),
            PipelineError::Deploy(e) => e.hint(),
            _ => None,
        }
    }
}

fn list_backends(d: &[Detection]) -> String {
    d.iter()
        .map(|d| d.backend.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn list_detections(d: &[Detection]) -> String {
    d.iter()
        .map(|d| format!("  {}: {}", d.backend, d.reason))
        .collect::<Vec<_>>()
        .join("\n")
}

fn list_failures(f: &[PlatformFailure]) -> String {
    f.iter()
        .map(|f| format!("{}: {}", f.platform, f.error))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Composes a [`Source`], [`Backend`]s, a [`Publisher`] and a [`Deployer`] into the run of one push,
/// emitting [`Events`](crate::Events) as it goes.
///
/// Every platform builds at once, each with its own event stream. Dropping the future returned
/// by [`Pipeline::run`] cancels the run: builds stop and each open stage reports `cancelled`.
///
/// ```
/// use std::sync::Arc;
/// use hephy_core::*;
///
/// struct Hello;
/// #[async_trait]
/// impl Backend for Hello {
///     fn name(&self) -> &str { "hello" }
///     async fn detect(&self, _: &BuildContext) -> Detection {
///         Detection::yes("hello", Confidence::Low, "builds anything")
///     }
///     async fn build(&self, _: &BuildContext, t: &BuildTarget, events: &Events) -> Result<BuiltImage, BuildError> {
///         events.log("hello, build");
///         let digest = Digest::sha256("a".repeat(64)).map_err(|e| BuildError::other("digest", e))?;
///         Ok(BuiltImage::new(Some(t.platform.clone()), &t.out_dir, digest))
///     }
/// }
///
/// struct Shelf;
/// #[async_trait]
/// impl Publisher for Shelf {
///     async fn publish(&self, req: &PublishRequest, _: &Events) -> Result<Published, PublishError> {
///         let reference: Reference = format!("localhost/{}:{}", req.app, req.tag).parse()
///             .map_err(|e| PublishError::other("reference", e))?;
///         let image = &req.images[0];
///         Ok(Published::new(reference, image.manifest.clone(), vec![], false))
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let pipeline = Pipeline::builder()
///     .backend(Arc::new(Hello))
///     .publisher(Arc::new(Shelf))
///     .build()?;
/// let dir = std::env::temp_dir().join("hephy-doc-pipeline");
/// let job = Job::context("hello".parse()?, BuildContext::new(&dir, AppConfig::default()), &dir);
/// let (events, mut stream) = Events::channel();
/// let report = pipeline.run(job, &events).await?;
/// assert_eq!(report.backend, "hello");
/// drop(events);
/// let mut lines = vec![];
/// while let Some(e) = stream.recv().await { lines.push(e.render()); }
/// assert!(lines.iter().any(|l| l.ends_with("] hello, build")));
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Pipeline {
    source: Option<Arc<dyn Source>>,
    backends: Vec<Arc<dyn Backend>>,
    publisher: Arc<dyn Publisher>,
    deployer: Option<Arc<dyn Deployer>>,
    timeout: Option<Duration>,
    stage_timeouts: BTreeMap<Stage, Duration>,
}

impl fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pipeline")
            .field("backends", &self.backend_names())
            .field("source", &self.source.is_some())
            .field("deployer", &self.deployer.is_some())
            .field("timeout", &self.timeout)
            .field("stage_timeouts", &self.stage_timeouts)
            .finish_non_exhaustive()
    }
}

/// Builds a [`Pipeline`]; see [`Pipeline::builder`].
#[derive(Default)]
pub struct PipelineBuilder {
    source: Option<Arc<dyn Source>>,
    backends: Vec<Arc<dyn Backend>>,
    publisher: Option<Arc<dyn Publisher>>,
    deployer: Option<Arc<dyn Deployer>>,
    timeout: Option<Duration>,
    stage_timeouts: BTreeMap<Stage, Duration>,
}

impl fmt::Debug for PipelineBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PipelineBuilder").finish_non_exhaustive()
    }
}

impl PipelineBuilder {
    /// Sets the source of pushed revisions.
    pub fn source(mut self, source: Arc<dyn Source>) -> Self {
        self.source = Some(source);
        self
    }

    /// Registers a backend; `auto` detection asks them in registration order and ties go to the
    /// first.
    pub fn backend(mut self, backend: Arc<dyn Backend>) -> Self {
        self.backends.push(backend);
        self
    }

    /// Sets the publisher.
    pub fn publisher(mut self, publisher: Arc<dyn Publisher>) -> Self {
        self.publisher = Some(publisher);
        self
    }

    /// Sets the deployer; without one, runs stop after publishing.
    pub fn deployer(mut self, deployer: Arc<dyn Deployer>) -> Self {
        self.deployer = Some(deployer);
        self
    }

    /// Limits a whole run.
    pub fn timeout(mut self, limit: Duration) -> Self {
        self.timeout = Some(limit);
        self
    }

    /// Limits one stage (for [`Stage::Build`], each platform's build; `[build] timeout` in
    /// `hephy.toml` overrides it).
    pub fn stage_timeout(mut self, stage: Stage, limit: Duration) -> Self {
        self.stage_timeouts.insert(stage, limit);
        self
    }

    /// The pipeline, or an error naming what is missing.
    ///
    /// Called inside a tokio runtime, it also checks that the runtime has time and IO enabled
    /// ([`check_runtime`](crate::check_runtime)), which every run needs; outside any runtime the
    /// run checks when it starts.
    pub fn build(self) -> Result<Pipeline, PipelineBuildError> {
        let publisher = self.publisher.ok_or(PipelineBuildError::NoPublisher)?;
        if self.backends.is_empty() {
            return Err(PipelineBuildError::NoBackend);
        }
        let mut names: Vec<&str> = vec![];
        for b in &self.backends {
            if names.contains(&b.name()) {
                return Err(PipelineBuildError::DuplicateBackend {
                    name: b.name().to_owned(),
                });
            }
            names.push(b.name());
        }
        runtime_usable()?;
        Ok(Pipeline {
            source: self.source,
            backends: self.backends,
            publisher,
            deployer: self.deployer,
            timeout: self.timeout,
            stage_timeouts: self.stage_timeouts,
        })
    }
}

/// [`check_runtime`](crate::check_runtime), except that no runtime at all is fine: a builder may
/// run before the runtime starts, and the async entry points check again.
pub(crate) fn runtime_usable() -> Result<(), RuntimeError> {
    match crate::check_runtime() {
        Err(RuntimeError::NoRuntime) => Ok(()),
        r => r,
    }
}

/// Emits `Finished` for a stage however its future ends, including when it is dropped.
struct StageGuard<'a> {
    events: Events,
    start: Instant,
    outcome: Option<Outcome>,
    timed_out: &'a AtomicBool,
}

impl Drop for StageGuard<'_> {
    fn drop(&mut self) {
        let outcome = self
            .outcome
            .unwrap_or(if self.timed_out.load(Ordering::SeqCst) {
                Outcome::TimedOut
            } else {
                Outcome::Cancelled
            });
        self.events.emit(EventKind::Finished {
            elapsed: self.start.elapsed(),
            outcome,
        });
    }
}

enum StageResult<T, E> {
    Done(Result<T, E>),
    TimedOut(Duration),
}

async fn in_stage<T, E, F>(
    events: &Events,
    limit: Option<Duration>,
    timed_out: &AtomicBool,
    fut: F,
) -> StageResult<T, E>
where
    F: Future<Output = Result<T, E>>,
{
    events.emit(EventKind::Started);
    let mut guard = StageGuard {
        events: events.clone(),
        start: Instant::now(),
        outcome: None,
        timed_out,
    };
    let r = match limit {
        Some(t) => match tokio::time::timeout(t, fut).await {
            Ok(r) => StageResult::Done(r),
            Err(_) => StageResult::TimedOut(t),
        },
        None => StageResult::Done(fut.await),
    };
    guard.outcome = Some(match &r {
        StageResult::Done(Ok(_)) => Outcome::Succeeded,
        StageResult::Done(Err(_)) => Outcome::Failed,
        StageResult::TimedOut(_) => Outcome::TimedOut,
    });
    r
}

/// Whether the run timed out as a whole, and in which stage it was then.
struct RunState {
    timed_out: AtomicBool,
    stage: std::sync::Mutex<Stage>,
}

impl RunState {
    fn enter(&self, stage: Stage) {
        if let Ok(mut s) = self.stage.lock() {
            *s = stage;
        }
    }
}

impl Pipeline {
    /// A builder.
    pub fn builder() -> PipelineBuilder {
        PipelineBuilder::default()
    }

    /// The names of the registered backends, in registration order.
    pub fn backend_names(&self) -> Vec<&str> {
        self.backends.iter().map(|b| b.name()).collect()
    }

    /// The source of pushed revisions, if the pipeline has one.
    pub fn source(&self) -> Option<&Arc<dyn Source>> {
        self.source.as_ref()
    }

    /// The deployer, if the pipeline has one.
    pub fn deployer(&self) -> Option<&Arc<dyn Deployer>> {
        self.deployer.as_ref()
    }

    /// Chooses the backend for `ctx` as the run would: the one `hephy.toml` names, or with
    /// `auto` the most confident detection (ties go to the first registered). Every answer is
    /// logged, so the choice is explained.
    pub async fn choose_backend(
        &self,
        ctx: &BuildContext,
        events: &Events,
    ) -> Result<(Arc<dyn Backend>, Vec<Detection>), PipelineError> {
        match &ctx.config().build.backend {
            BackendChoice::Named(name) => {
                let backend = self
                    .backends
                    .iter()
                    .find(|b| b.name() == name)
                    .ok_or_else(|| PipelineError::UnknownBackend {
                        name: name.clone(),
                        available: self.backend_names().iter().map(|s| s.to_string()).collect(),
                    })?;
                events.log(format!("Using the {name} backend, as hephy.toml asks"));
                Ok((backend.clone(), vec![]))
            }
            BackendChoice::Auto => {
                let detections = join_all(self.backends.iter().map(|b| b.detect(ctx))).await;
                let mut best: Option<usize> = None;
                for (i, d) in detections.iter().enumerate() {
                    if d.detected() && best.is_none_or(|b| d.confidence > detections[b].confidence)
                    {
                        best = Some(i);
                    }
                }
                let Some(best) = best else {
                    return Err(PipelineError::NoBackend { detections });
                };
                let chosen = &detections[best];
                events.log(format!(
                    "Detected a {} app: {}",
                    chosen.backend, chosen.reason
                ));
                for (i, d) in detections.iter().enumerate() {
                    if i != best && d.detected() {
                        let why = if d.confidence < chosen.confidence {
                            "less sure"
                        } else {
                            "registered later"
                        };
                        events.log(format!(
                            "  also possible: {} ({}; {})",
                            d.backend, d.reason, why
                        ));
                    }
                }
                if chosen.confidence == Confidence::Low {
                    events.warn(format!(
                        "only the {} backend matched, as a fallback: set backend in hephy.toml if that is not what you want",
                        chosen.backend
                    ));
                }
                Ok((self.backends[best].clone(), detections))
            }
        }
    }

    /// Runs `job`: materialize, choose a backend, build every platform at once, publish, and
    /// deploy when the job and pipeline allow.
    ///
    /// Needs a tokio runtime with time and IO enabled (`#[tokio::main]` has both); on any other
    /// runtime or executor it returns [`PipelineError::Runtime`] before doing anything.
    pub async fn run(&self, job: Job, events: &Events) -> Result<Report, PipelineError> {
        crate::check_runtime()?;
        let state = RunState {
            timed_out: AtomicBool::new(false),
            stage: std::sync::Mutex::new(Stage::Source),
        };
        let inner = std::pin::pin!(self.run_inner(job, events, &state));
        match self.timeout {
            None => inner.await,
            Some(limit) => {
                let sleep = std::pin::pin!(tokio::time::sleep(limit));
                match futures_util::future::select(inner, sleep).await {
                    futures_util::future::Either::Left((r, _)) => r,
                    futures_util::future::Either::Right(((), _inner)) => {
                        // Set before `inner` is dropped, so open stages report "timed out".
                        state.timed_out.store(true, Ordering::SeqCst);
                        let stage = state.stage.lock().map(|s| *s).unwrap_or(Stage::Source);
                        Err(PipelineError::TimedOut {
                            stage,
                            after: limit,
                        })
                    }
                }
            }
        }
    }

    /// Runs `job` with its events in a channel that ends when the run ends: the returned stream
    /// yields every event and then `None` once the returned future has finished (or been
    /// dropped), so a reader needs no other signal.
    ///
    /// The stream is [`Events::bounded`] by `capacity`: a backend's output that outruns the
    /// reader waits for it. So read the stream while the run is polled, by spawning the run
    /// (below) or joining both. The future is `'static` (it holds a clone of the pipeline, which
    /// is cheap) and needs what [`Pipeline::run`] needs.
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use hephy_core::*;
    /// # struct Hello;
    /// # #[async_trait]
    /// # impl Backend for Hello {
    /// #     fn name(&self) -> &str { "hello" }
    /// #     async fn detect(&self, _: &BuildContext) -> Detection { Detection::yes("hello", Confidence::Low, "any") }
    /// #     async fn build(&self, _: &BuildContext, t: &BuildTarget, ev: &Events) -> Result<BuiltImage, BuildError> {
    /// #         ev.log("hello, build");
    /// #         let d = Digest::sha256("a".repeat(64)).map_err(|e| BuildError::other("digest", e))?;
    /// #         Ok(BuiltImage::new(Some(t.platform.clone()), &t.out_dir, d))
    /// #     }
    /// # }
    /// # struct Shelf;
    /// # #[async_trait]
    /// # impl Publisher for Shelf {
    /// #     async fn publish(&self, req: &PublishRequest, _: &Events) -> Result<Published, PublishError> {
    /// #         let r: Reference = format!("localhost/{}:{}", req.app, req.tag).parse().map_err(|e| PublishError::other("reference", e))?;
    /// #         Ok(Published::new(r, req.images[0].manifest.clone(), vec![], false))
    /// #     }
    /// # }
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let pipeline = Pipeline::builder().backend(Arc::new(Hello)).publisher(Arc::new(Shelf)).build()?;
    /// # let dir = std::env::temp_dir().join("hephy-doc-streaming");
    /// let job = Job::context("hello".parse()?, BuildContext::new(&dir, AppConfig::default()), &dir);
    /// let (mut stream, run) = pipeline.run_streaming(job, 256);
    /// let run = tokio::spawn(run);
    /// while let Some(event) = stream.recv().await {
    ///     println!("{}", event.render());
    /// }
    /// let report = run.await??;
    /// print!("{report}");
    /// # Ok(()) }
    /// ```
    pub fn run_streaming(
        &self,
        job: Job,
        capacity: usize,
    ) -> (
        EventStream,
        impl Future<Output = Result<Report, PipelineError>> + Send + 'static,
    ) {
        let (events, stream) = Events::bounded(capacity);
        let pipeline = self.clone();
        let run = async move {
            // `events` lives in this future, so the stream ends when it does.
            let events = events;
            pipeline.run(job, &events).await
        };
        (stream, run)
    }

    async fn run_inner(
        &self,
        job: Job,
        events: &Events,
        state: &RunState,
    ) -> Result<Report, PipelineError> {
        let Job {
            app,
            input,
            work_dir,
            deploy,
            tag,
        } = job;
        let timed_out = &state.timed_out;

        // Source.
        let ctx = match input {
            JobInput::Context(ctx) => *ctx,
            JobInput::Revision(revision) => {
                let source = self.source.as_ref().ok_or(PipelineError::NoSource)?;
                let dir = work_dir.join("source");
                create_dir(&dir)?;
                let ev = events.with_stage(Stage::Source);
                state.enter(Stage::Source);
                let limit = self.stage_timeouts.get(&Stage::Source).copied();
                let revision = match in_stage(&ev, limit, timed_out, async {
                    ev.log(format!(
                        "Checking out {} ({})",
                        revision.short(),
                        revision.ref_name
                    ));
                    source.materialize(&app, &revision, &dir, &ev).await
                })
                .await
                {
                    StageResult::Done(r) => r?,
                    StageResult::TimedOut(after) => {
                        return Err(PipelineError::TimedOut {
                            stage: Stage::Source,
                            after,
                        })
                    }
                };
                BuildContext::open(&dir)?.with_revision(revision)
            }
        }
        .with_app(app.clone());

        // Detect.
        state.enter(Stage::Detect);
        let ev = events.with_stage(Stage::Detect);
        let platforms = ctx.config().build.platforms.clone();
        let backend = match in_stage(&ev, None, timed_out, async {
            let (backend, _) = self.choose_backend(&ctx, &ev).await?;
            backend
                .check(&ctx, &platforms)
                .await
                .map_err(|error| PipelineError::Check {
                    backend: backend.name().to_owned(),
                    error: Box::new(error),
                })?;
            ev.log(format!(
                "Platforms: {}",
                platforms
                    .iter()
                    .map(|p| p.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
            Ok::<_, PipelineError>(backend)
        })
        .await
        {
            StageResult::Done(r) => r?,
            StageResult::TimedOut(after) => {
                return Err(PipelineError::TimedOut {
                    stage: Stage::Detect,
                    after,
                })
            }
        };

        // Build, every platform at once.
        state.enter(Stage::Build);
        let limit = ctx
            .config()
            .build
            .timeout
            .or_else(|| self.stage_timeouts.get(&Stage::Build).copied());
        let mut builds = vec![];
        for p in &platforms {
            let out_dir = work_dir.join("images").join(p.slug());
            if out_dir.exists() {
                std::fs::remove_dir_all(&out_dir).map_err(|source| PipelineError::WorkDir {
                    path: out_dir.clone(),
                    source,
                })?;
            }
            create_dir(&out_dir)?;
            let ev = events.with_stage(Stage::Build).with_platform(p.clone());
            let target = BuildTarget::new(p.clone(), out_dir);
            let backend = backend.clone();
            let ctx = &ctx;
            builds.push(async move {
                let r = in_stage(&ev, limit, timed_out, async {
                    let r = backend.build(ctx, &target, &ev).await;
                    if let Err(e) = &r {
                        ev.log(format!("error: {e}"));
                    }
                    r
                })
                .await;
                let r = match r {
                    StageResult::Done(r) => r,
                    StageResult::TimedOut(after) => Err(BuildError::Failed {
                        message: format!(
                            "the build for {} timed out after {}: raise [build] timeout in hephy.toml",
                            target.platform,
                            humantime::format_duration(after)
                        ),
                    }),
                };
                (target.platform, r)
            });
        }
        let results = join_all(builds).await;
        let mut images: Vec<BuiltImage> = vec![];
        let mut failures: Vec<PlatformFailure> = vec![];
        for (platform, r) in results {
            match r {
                Ok(img) => images.push(img),
                Err(error) => failures.push(PlatformFailure { platform, error }),
            }
        }
        let mut skipped = vec![];
        if !failures.is_empty() {
            let policy = ctx.config().build.platform_failure;
            if images.is_empty() || policy == PlatformFailurePolicy::Fail {
                return Err(PipelineError::Build { failures });
            }
            let ev = events.with_stage(Stage::Build);
            for f in &failures {
                ev.warn(format!(
                    "{} failed and is not published (platform-failure = \"publish-successful\"): {}",
                    f.platform, f.error
                ));
                skipped.push(f.platform.clone());
            }
        }

        // Publish.
        state.enter(Stage::Publish);
        let revision = ctx.revision().cloned();
        let tag = tag.unwrap_or_else(|| match &revision {
            Some(r) => format!("git-{}", r.short()),
            None => "latest".to_owned(),
        });
        let mut request = PublishRequest::new(app.clone(), tag, images);
        if let Some(r) = &revision {
            request = request.with_annotation("org.opencontainers.image.revision", &r.commit);
        }
        let ev = events.with_stage(Stage::Publish);
        let limit = self.stage_timeouts.get(&Stage::Publish).copied();
        let published =
            match in_stage(&ev, limit, timed_out, self.publisher.publish(&request, &ev)).await {
                StageResult::Done(r) => r.map_err(PipelineError::Publish)?,
                StageResult::TimedOut(after) => {
                    return Err(PipelineError::TimedOut {
                        stage: Stage::Publish,
                        after,
                    })
                }
            };
        ev.log(format!("Published {}", published.reference));

        // Deploy.
        let mut release = None;
        if let (true, Some(deployer)) = (deploy, &self.deployer) {
            state.enter(Stage::Deploy);
            let cause = match &revision {
                Some(r) => ReleaseCause::Push {
                    commit: r.commit.clone(),
                    author: r.author.clone(),
                },
                None => ReleaseCause::Image {
                    reference: published.reference.to_string(),
                },
            };
            let new = NewRelease::new(
                app.clone(),
                published.reference.clone(),
                ctx.config().deploy.clone(),
                cause,
            );
            let ev = events.with_stage(Stage::Deploy);
            let limit = self.stage_timeouts.get(&Stage::Deploy).copied();
            release = Some(
                match in_stage(&ev, limit, timed_out, deployer.deploy(new, &ev)).await {
                    StageResult::Done(r) => r.map_err(PipelineError::Deploy)?,
                    StageResult::TimedOut(after) => {
                        return Err(PipelineError::TimedOut {
                            stage: Stage::Deploy,
                            after,
                        })
                    }
                },
            );
        }

        Ok(Report {
            app,
            backend: backend.name().to_owned(),
            revision,
            published,
            release,
            skipped_platforms: skipped,
        })
    }
}

fn create_dir(dir: &Path) -> Result<(), PipelineError> {
    std::fs::create_dir_all(dir).map_err(|source| PipelineError::WorkDir {
        path: dir.to_owned(),
        source,
    })
}
