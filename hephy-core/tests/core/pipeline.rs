//! The pipeline, with fake implementations of the four traits (allowed in core's own tests).
//!
//! Async tests run on tokio's paused clock: time moves only when every task waits on a timer, and
//! then jumps to the next deadline. Timeouts and build durations are exact and cost no wall time.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use hephy_core::*;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::Result;

/// Writes a file per entry, like a git checkout would.
struct DirSource {
    files: BTreeMap<&'static str, &'static str>,
}

#[async_trait]
impl Source for DirSource {
    async fn materialize(
        &self,
        _app: &AppName,
        revision: &Revision,
        dest: &Path,
        events: &Events,
    ) -> std::result::Result<Revision, SourceError> {
        for (name, body) in &self.files {
            std::fs::write(dest.join(name), body).map_err(|source| SourceError::Io {
                path: dest.join(name),
                source,
            })?;
        }
        events.log(format!("wrote {} files", self.files.len()));
        Ok(revision.clone().with_author("Ada <ada@example.com>"))
    }
}

#[derive(Clone, Copy)]
enum Behaviour {
    /// Succeed after [`BUILD_TIME`] of (paused) time.
    Succeed,
    Fail,
    Hang,
}

/// How long a succeeding fake build takes.
const BUILD_TIME: Duration = Duration::from_millis(20);

/// A backend that detects a marker file and behaves per platform.
struct FakeBackend {
    name: &'static str,
    marker: &'static str,
    confidence: Confidence,
    per_platform: BTreeMap<String, Behaviour>,
    /// How many builds have started, so a test can wait for them instead of sleeping.
    started: Arc<watch::Sender<usize>>,
    dropped: Arc<AtomicUsize>,
}

impl FakeBackend {
    fn new(name: &'static str, marker: &'static str, confidence: Confidence) -> Self {
        FakeBackend {
            name,
            marker,
            confidence,
            per_platform: BTreeMap::new(),
            started: Arc::default(),
            dropped: Arc::default(),
        }
    }

    fn on(mut self, platform: &str, b: Behaviour) -> Self {
        self.per_platform.insert(platform.to_owned(), b);
        self
    }
}

struct DropCount(Arc<AtomicUsize>);

impl Drop for DropCount {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[async_trait]
impl Backend for FakeBackend {
    fn name(&self) -> &str {
        self.name
    }

    async fn detect(&self, ctx: &BuildContext) -> Detection {
        if ctx.dir().join(self.marker).exists() {
            Detection::yes(self.name, self.confidence, format!("found {}", self.marker))
        } else {
            Detection::no(self.name, format!("no {}", self.marker))
        }
    }

    async fn build(
        &self,
        ctx: &BuildContext,
        target: &BuildTarget,
        events: &Events,
    ) -> std::result::Result<BuiltImage, BuildError> {
        let _guard = DropCount(self.dropped.clone());
        self.started.send_modify(|n| *n += 1);
        assert!(target.out_dir.is_dir(), "the pipeline makes the out dir");
        events.log(format!(
            "compiling {}",
            ctx.dir().display().to_string().len()
        ));
        let b = self
            .per_platform
            .get(&target.platform.to_string())
            .copied()
            .unwrap_or(Behaviour::Succeed);
        match b {
            Behaviour::Succeed => {
                tokio::time::sleep(BUILD_TIME).await;
                let hex = format!("{:0>64}", target.platform.slug().len());
                let digest = Digest::sha256(hex).map_err(|e| BuildError::other("digest", e))?;
                Ok(BuiltImage::new(
                    Some(target.platform.clone()),
                    &target.out_dir,
                    digest,
                ))
            }
            Behaviour::Fail => Err(BuildError::Failed {
                message: "main.go:3: undefined: fmt.Printn".into(),
            }),
            Behaviour::Hang => {
                std::future::pending::<()>().await;
                unreachable!()
            }
        }
    }
}

#[derive(Default)]
struct RecordingPublisher {
    requests: Mutex<Vec<PublishRequest>>,
}

#[async_trait]
impl Publisher for RecordingPublisher {
    async fn publish(
        &self,
        req: &PublishRequest,
        events: &Events,
    ) -> std::result::Result<Published, PublishError> {
        if let Ok(mut r) = self.requests.lock() {
            r.push(req.clone());
        }
        events.log(format!("pushing {} images", req.images.len()));
        let reference = Reference::new("localhost:5000", req.app.as_str(), Some(&req.tag), None)
            .map_err(|e| PublishError::other("reference", e))?;
        let platforms: Vec<Platform> = req
            .images
            .iter()
            .filter_map(|i| i.platform.clone())
            .collect();
        let digest =
            Digest::sha256("f".repeat(64)).map_err(|e| PublishError::other("digest", e))?;
        Ok(Published::new(
            reference,
            digest,
            platforms,
            req.images.len() > 1,
        ))
    }
}

/// An in-memory deployer; its health check fails for images whose tag contains "bad".
#[derive(Default)]
struct MemoryDeployer {
    releases: Mutex<BTreeMap<AppName, Vec<Release>>>,
}

#[async_trait]
impl Deployer for MemoryDeployer {
    async fn deploy(
        &self,
        new: NewRelease,
        events: &Events,
    ) -> std::result::Result<Release, DeployError> {
        let mut all = self.releases.lock().map_err(|_| DeployError::Other {
            message: "poisoned".into(),
            source: None,
        })?;
        let list = all.entry(new.app.clone()).or_default();
        let version = ReleaseVersion::next_after(list.last().map(|r| r.version));
        if new.image.tag().is_some_and(|t| t.contains("bad")) {
            return Err(DeployError::Unhealthy {
                app: new.app,
                version,
                reason: "GET /healthz answered 500".into(),
                log_tail: vec!["panic: no database".into()],
            });
        }
        events.log(format!("starting {version}"));
        let release = new.into_release(version, SystemTime::UNIX_EPOCH, list.last());
        list.push(release.clone());
        Ok(release)
    }

    async fn releases(&self, app: &AppName) -> std::result::Result<Vec<Release>, DeployError> {
        Ok(self
            .releases
            .lock()
            .map_err(|_| DeployError::Other {
                message: "poisoned".into(),
                source: None,
            })?
            .get(app)
            .cloned()
            .unwrap_or_default())
    }
}

fn collect() -> (Events, Arc<Mutex<Vec<Event>>>) {
    let got = Arc::new(Mutex::new(Vec::new()));
    let sink = got.clone();
    let events = Events::from_fn(move |e| {
        if let Ok(mut v) = sink.lock() {
            v.push(e);
        }
    });
    (events, got)
}

fn rendered(got: &Arc<Mutex<Vec<Event>>>) -> Vec<String> {
    got.lock()
        .map(|v| v.iter().map(normalize).collect())
        .unwrap_or_default()
}

/// The events as rendered, with their durations (exact on the paused clock).
fn rendered_raw(got: &Arc<Mutex<Vec<Event>>>) -> Vec<String> {
    got.lock()
        .map(|v| v.iter().map(Event::render).collect())
        .unwrap_or_default()
}

/// Replaces durations so snapshots are stable.
fn normalize(e: &Event) -> String {
    let line = e.render();
    match line.rsplit_once(" in ") {
        Some((head, _)) if line.starts_with("----->") && !head.contains('[') => {
            format!("{head} in [elapsed]")
        }
        _ => line,
    }
}

/// `fut`, or an error if it is still pending after an hour of paused time (which passes at once
/// when nothing else can run), so a broken timeout fails the test instead of hanging it.
async fn within_an_hour<T>(fut: impl Future<Output = T>) -> Result<T> {
    tokio::time::timeout(Duration::from_secs(3600), fut)
        .await
        .map_err(|_| "still pending after an hour: a timeout or wake-up did not fire".into())
}

fn config(src: &str) -> Result<AppConfig> {
    Ok(AppConfig::from_toml("hephy.toml", src)?)
}

const TWO: &str = "[build]\nplatforms = [\"linux/amd64\", \"linux/arm64\"]\n";

fn files() -> BTreeMap<&'static str, &'static str> {
    BTreeMap::from([
        ("go.mod", "module example.com/hello\n"),
        ("hephy.toml", TWO),
    ])
}

/// A temp dir holding a `go.mod`.
fn go_dir() -> Result<tempfile::TempDir> {
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("go.mod"), "module x\n")?;
    Ok(dir)
}

/// A pipeline of `backend` and `publisher`.
fn pipeline_of(backend: FakeBackend, publisher: Arc<RecordingPublisher>) -> Result<Pipeline> {
    Ok(Pipeline::builder()
        .backend(Arc::new(backend))
        .publisher(publisher)
        .build()?)
}

/// A pipeline whose go backend fails for linux/arm64, its publisher, and a go app.
fn arm64_fails() -> Result<(Pipeline, Arc<RecordingPublisher>, tempfile::TempDir)> {
    let publisher = Arc::new(RecordingPublisher::default());
    let pipeline = pipeline_of(
        FakeBackend::new("go", "go.mod", Confidence::High).on("linux/arm64", Behaviour::Fail),
        publisher.clone(),
    )?;
    Ok((pipeline, publisher, go_dir()?))
}

#[tokio::test(start_paused = true)]
async fn a_push_runs_every_stage_and_builds_platforms_concurrently() -> Result {
    let dir = tempfile::tempdir()?;
    let go = FakeBackend::new("go", "go.mod", Confidence::High);
    let started = go.started.clone();
    let publisher = Arc::new(RecordingPublisher::default());
    let deployer = Arc::new(MemoryDeployer::default());
    let pipeline = Pipeline::builder()
        .source(Arc::new(DirSource { files: files() }))
        .backend(Arc::new(FakeBackend::new(
            "files",
            "hephy.toml",
            Confidence::Low,
        )))
        .backend(Arc::new(go))
        .publisher(publisher.clone())
        .deployer(deployer.clone())
        .build()?;
    let app: AppName = "hello".parse()?;
    let rev = Revision::new("1a2b3c4d5e6f").with_ref_name("refs/heads/main");
    let (events, got) = collect();
    let start = Instant::now();
    let report =
        within_an_hour(pipeline.run(Job::push(app.clone(), rev, dir.path()), &events)).await??;

    assert_eq!(report.backend, "go");
    assert_eq!(*started.borrow(), 2);
    assert_eq!(
        start.elapsed(),
        BUILD_TIME,
        "two builds of {BUILD_TIME:?} each run at the same time, so the run takes one build's time"
    );
    assert_eq!(report.published.platforms.len(), 2);
    assert!(report.published.is_index);
    // The push summary, as a push server prints it.
    assert_eq!(
        report.to_string(),
        format!(
            "-----> hello deployed as v1\n       image: localhost:5000/hello:git-1a2b3c4@sha256:{}\n",
            "f".repeat(64)
        )
    );
    let release = report.release.ok_or("no release")?;
    assert_eq!(release.version.to_string(), "v1");
    assert_eq!(
        release.cause.to_string(),
        "push of 1a2b3c4 by Ada <ada@example.com>"
    );
    assert!(release.image.is_pinned());
    let reqs = publisher
        .requests
        .lock()
        .map(|r| r.clone())
        .unwrap_or_default();
    assert_eq!(reqs[0].tag, "git-1a2b3c4");
    assert_eq!(
        reqs[0]
            .annotations
            .get("org.opencontainers.image.revision")
            .map(String::as_str),
        Some("1a2b3c4d5e6f")
    );

    // Per-platform streams interleave; sort the build lines per platform for a stable snapshot.
    let mut lines = rendered(&got);
    let first_build = lines
        .iter()
        .position(|l| l.starts_with("-----> Building for"))
        .ok_or("no build")?;
    let last_build = lines
        .iter()
        .rposition(|l| l.contains("for linux/"))
        .ok_or("no build")?;
    lines[first_build..=last_build].sort();
    let lines: Vec<String> = lines
        .into_iter()
        .map(|l| {
            if l.contains("for linux/") && l.contains(" in ") {
                l.split(" in ").next().unwrap_or_default().to_owned() + " in [elapsed]"
            } else if l.contains("] compiling") {
                l.split(" compiling").next().unwrap_or_default().to_owned() + " compiling [dir]"
            } else {
                l
            }
        })
        .collect();
    insta::assert_snapshot!(lines.join("\n"));
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn auto_detection_explains_and_fails_clearly() -> Result {
    let pipeline = Pipeline::builder()
        .backend(Arc::new(FakeBackend::new(
            "dockerfile",
            "Dockerfile",
            Confidence::High,
        )))
        .backend(Arc::new(FakeBackend::new("go", "go.mod", Confidence::High)))
        .publisher(Arc::new(RecordingPublisher::default()))
        .build()?;
    let dir = tempfile::tempdir()?;
    let ctx = BuildContext::new(dir.path(), AppConfig::default());
    let err = match pipeline.choose_backend(&ctx, &Events::discard()).await {
        Ok(_) => return Err("expected no backend".into()),
        Err(e) => e,
    };
    insta::assert_snapshot!(err.to_string());

    // Both detect: the first registered wins at equal confidence, and the other is named.
    std::fs::write(dir.path().join("Dockerfile"), "FROM scratch\n")?;
    std::fs::write(dir.path().join("go.mod"), "module x\n")?;
    let (events, got) = collect();
    let (b, detections) = pipeline.choose_backend(&ctx, &events).await?;
    assert_eq!(b.name(), "dockerfile");
    assert_eq!(detections.len(), 2);
    insta::assert_snapshot!(rendered(&got).join("\n"));

    // An explicit choice that is not registered.
    let ctx = BuildContext::new(dir.path(), config("[build]\nbackend = \"cobol\"\n")?);
    let err = pipeline
        .choose_backend(&ctx, &Events::discard())
        .await
        .map(|_| ())
        .map_err(|e| e.to_string());
    assert_eq!(
        err,
        Err("hephy.toml asks for backend \"cobol\", which this server does not have: use one of dockerfile, go, or \"auto\"".into())
    );
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn a_failed_platform_fails_the_run_by_default_and_publishes_nothing() -> Result {
    let (pipeline, publisher, dir) = arm64_fails()?;
    let ctx = BuildContext::new(dir.path(), config(TWO)?);
    let (events, got) = collect();
    let err = match pipeline
        .run(Job::context("hello".parse()?, ctx, dir.path()), &events)
        .await
    {
        Ok(_) => return Err("expected failure".into()),
        Err(e) => e,
    };
    assert_eq!(err.stage(), Stage::Build);
    assert_eq!(
        err.to_string(),
        "build failed: linux/arm64: main.go:3: undefined: fmt.Printn"
    );
    assert!(publisher
        .requests
        .lock()
        .map(|r| r.is_empty())
        .unwrap_or(false));
    let lines = rendered(&got);
    assert!(
        lines.contains(&"[linux/arm64] error: main.go:3: undefined: fmt.Printn".to_owned()),
        "{lines:#?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("-----> Build for linux/arm64 failed")),
        "{lines:#?}"
    );
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn publish_successful_publishes_what_built_with_a_warning() -> Result {
    let (pipeline, _, dir) = arm64_fails()?;
    let cfg = config(&format!("{TWO}platform-failure = \"publish-successful\"\n"))?;
    let ctx = BuildContext::new(dir.path(), cfg);
    let (events, got) = collect();
    let report = pipeline
        .run(Job::context("hello".parse()?, ctx, dir.path()), &events)
        .await?;
    assert_eq!(report.published.platforms, vec![Platform::linux_amd64()]);
    assert_eq!(report.skipped_platforms, vec![Platform::linux_arm64()]);
    assert!(!report.published.is_index);
    let warning = rendered(&got)
        .into_iter()
        .find(|l| l.starts_with(" !"))
        .ok_or("no warning")?;
    assert_eq!(
        warning,
        " !     linux/arm64 failed and is not published (platform-failure = \"publish-successful\"): main.go:3: undefined: fmt.Printn"
    );
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn dropping_the_run_cancels_every_build() -> Result {
    let backend = FakeBackend::new("go", "go.mod", Confidence::High)
        .on("linux/amd64", Behaviour::Hang)
        .on("linux/arm64", Behaviour::Hang);
    let mut started = backend.started.subscribe();
    let dropped = backend.dropped.clone();
    let pipeline = pipeline_of(backend, Arc::default())?;
    let dir = go_dir()?;
    let ctx = BuildContext::new(dir.path(), config(TWO)?);
    let (events, got) = collect();
    let job = Job::context("hello".parse()?, ctx, dir.path());
    let run = pipeline.run(job, &events);
    // Once both builds have started, drop the run as a disconnected push would.
    let both_started: Result = within_an_hour(async {
        tokio::select! {
            r = run => Err(format!("the run ended on its own: {:?}", r.map(|_| ())).into()),
            r = started.wait_for(|n| *n == 2) => r.map(drop).map_err(Into::into),
        }
    })
    .await?;
    both_started?;
    assert_eq!(dropped.load(Ordering::SeqCst), 2, "both builds are dropped");
    let cancelled = rendered(&got)
        .into_iter()
        .filter(|l| l.contains("cancelled"))
        .count();
    assert_eq!(cancelled, 2);
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn timeouts_stop_a_stage_and_the_whole_run() -> Result {
    let dir = go_dir()?;
    let hang = || {
        FakeBackend::new("go", "go.mod", Confidence::High)
            .on(&Platform::host().to_string(), Behaviour::Hang)
    };

    // Per-build limit from hephy.toml.
    let pipeline = pipeline_of(hang(), Arc::default())?;
    let ctx = BuildContext::new(dir.path(), config("[build]\ntimeout = \"100ms\"\n")?);
    let (events, got) = collect();
    let start = Instant::now();
    let err =
        within_an_hour(pipeline.run(Job::context("hello".parse()?, ctx, dir.path()), &events))
            .await?
            .map(|_| ())
            .map_err(|e| e.to_string());
    assert_eq!(
        start.elapsed(),
        Duration::from_millis(100),
        "the build limit"
    );
    let host = Platform::host();
    assert_eq!(
        err,
        Err(format!("build failed: {host}: the build for {host} timed out after 100ms: raise [build] timeout in hephy.toml"))
    );
    let timed_out = format!("-----> Build for {host} timed out in 0.10s");
    assert!(
        rendered_raw(&got).contains(&timed_out),
        "{:#?}",
        rendered_raw(&got)
    );

    // Whole-run limit.
    let pipeline = Pipeline::builder()
        .backend(Arc::new(hang()))
        .publisher(Arc::new(RecordingPublisher::default()))
        .timeout(Duration::from_millis(100))
        .build()?;
    let ctx = BuildContext::new(dir.path(), AppConfig::default());
    let (events, got) = collect();
    let start = Instant::now();
    let err = match within_an_hour(
        pipeline.run(Job::context("hello".parse()?, ctx, dir.path()), &events),
    )
    .await?
    {
        Ok(_) => return Err("expected a timeout".into()),
        Err(e) => e,
    };
    assert_eq!(start.elapsed(), Duration::from_millis(100), "the run limit");
    assert!(
        matches!(
            err,
            PipelineError::TimedOut {
                stage: Stage::Build,
                ..
            }
        ),
        "{err}"
    );
    assert!(
        rendered_raw(&got).contains(&timed_out),
        "{:#?}",
        rendered_raw(&got)
    );
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn deployer_defaults_roll_back_and_change_config_as_new_releases() -> Result {
    let d = MemoryDeployer::default();
    let app: AppName = "hello".parse()?;
    let ev = Events::discard();
    let img = |tag: &str| -> Result<Reference> {
        Ok(format!("localhost:5000/hello:{tag}@sha256:{}", "a".repeat(64)).parse()?)
    };
    // A release of image `tag`, pushed as commit `c`.
    let new = |tag: &str, c: &str| -> Result<NewRelease> {
        let cause = ReleaseCause::Push {
            commit: c.into(),
            author: String::new(),
        };
        Ok(NewRelease::new(
            app.clone(),
            img(tag)?,
            DeployConfig::default(),
            cause,
        ))
    };
    let v1 = d.deploy(new("one", "c1")?, &ev).await?;
    let v2 = d
        .set_config(
            &app,
            &ConfigChange::parse_assignments(["GREETING=hi"])?,
            &ev,
        )
        .await?;
    assert_eq!(v2.image, v1.image);
    assert_eq!(v2.config.get("GREETING"), Some("hi"));
    assert_eq!(v2.cause.to_string(), "config set GREETING");
    let v3 = d.deploy(new("two", "c2")?, &ev).await?;
    assert_eq!(
        v3.config.get("GREETING"),
        Some("hi"),
        "a push keeps the config"
    );
    let v4 = d.rollback(&app, v1.version, &ev).await?;
    assert_eq!(v4.version.to_string(), "v4");
    assert_eq!(v4.image, v1.image);
    assert!(v4.config.is_empty(), "rollback restores v1's config too");
    assert_eq!(v4.cause.to_string(), "rollback to v1");

    // The messages speak the library's words; hephy's CLI advice is in hint().
    let err = d
        .rollback(&app, ReleaseVersion::new(9).ok_or("v9")?, &ev)
        .await
        .map(|_| ())
        .map_err(|e| (e.to_string(), e.hint()));
    assert_eq!(
        err,
        Err((
            "app hello has no release v9: its releases are v1 to v4".into(),
            Some("list them with `hephy releases`".into())
        ))
    );
    let other: AppName = "other".parse()?;
    let err = d
        .rollback(&other, ReleaseVersion::FIRST, &ev)
        .await
        .map(|_| ())
        .map_err(|e| (e.to_string(), e.hint()));
    assert_eq!(
        err,
        Err((
            "app other has no release yet: deploy it once first".into(),
            Some("push it with `git push hephy main`".into())
        ))
    );

    // A failed deploy records nothing.
    let bad = d.deploy(new("bad", "c3")?, &ev).await;
    insta::assert_snapshot!(bad
        .map(|_| ())
        .map_err(|e| e.to_string())
        .err()
        .unwrap_or_default());
    assert_eq!(d.releases(&app).await?.len(), 4);

    // The ledger format is JSON, stable for deployers that store it.
    let mut json = serde_json::to_value(&v4)?;
    json["created"] = "[time]".into();
    insta::assert_snapshot!(serde_json::to_string_pretty(&json)?);
    Ok(())
}

#[test]
fn builder_refuses_incomplete_pipelines() {
    let b = Arc::new(FakeBackend::new("go", "go.mod", Confidence::High));
    let e = Pipeline::builder()
        .backend(b.clone())
        .build()
        .map(|_| ())
        .map_err(|e| e.to_string());
    assert!(e.is_err_and(|e| e.contains("needs a publisher")));
    let e = Pipeline::builder()
        .publisher(Arc::new(RecordingPublisher::default()))
        .build()
        .map(|_| ());
    assert_eq!(e, Err(PipelineBuildError::NoBackend));
    let e = Pipeline::builder()
        .backend(b.clone())
        .backend(b)
        .publisher(Arc::new(RecordingPublisher::default()))
        .build()
        .map(|_| ());
    assert_eq!(
        e,
        Err(PipelineBuildError::DuplicateBackend { name: "go".into() })
    );
}

#[tokio::test(start_paused = true)]
async fn a_push_without_a_source_is_refused() -> Result {
    let pipeline = pipeline_of(
        FakeBackend::new("go", "go.mod", Confidence::High),
        Arc::default(),
    )?;
    let dir = tempfile::tempdir()?;
    let r = pipeline
        .run(
            Job::push("x".parse()?, Revision::new("abc"), dir.path()),
            &Events::discard(),
        )
        .await;
    assert!(matches!(r, Err(PipelineError::NoSource)));
    Ok(())
}

/// A runtime without timers (IO on) and one without IO (timers on), as an embedder might build.
fn runtimes() -> Result<(tokio::runtime::Runtime, tokio::runtime::Runtime)> {
    let no_time = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    let no_io = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()?;
    Ok((no_time, no_io))
}

fn go_pipeline() -> PipelineBuilder {
    Pipeline::builder()
        .backend(Arc::new(FakeBackend::new("go", "go.mod", Confidence::High)))
        .publisher(Arc::new(RecordingPublisher::default()))
}

#[test]
fn a_runtime_without_time_or_io_is_an_error_not_a_panic() -> Result {
    let (no_time, no_io) = runtimes()?;
    let built = no_time.block_on(async { go_pipeline().build().map(|_| ()) });
    let Err(PipelineBuildError::Runtime(e)) = built else {
        return Err(format!("expected a runtime error, got {built:?}").into());
    };
    assert_eq!(e, RuntimeError::TimeDisabled);
    insta::assert_snapshot!("no_time", e.to_string());
    let built = no_io.block_on(async { go_pipeline().build().map(|_| ()) });
    let Err(PipelineBuildError::Runtime(e)) = built else {
        return Err(format!("expected a runtime error, got {built:?}").into());
    };
    assert_eq!(e, RuntimeError::IoDisabled);
    insta::assert_snapshot!("no_io", e.to_string());

    // Outside any runtime the builder accepts (the runtime may start later); the run checks.
    assert_eq!(check_runtime(), Err(RuntimeError::NoRuntime));
    insta::assert_snapshot!("no_runtime", RuntimeError::NoRuntime.to_string());
    let pipeline = go_pipeline().build()?;
    let dir = go_dir()?;
    let job = Job::context(
        "hello".parse()?,
        BuildContext::new(dir.path(), config("[build]\ntimeout = \"1m\"\n")?),
        dir.path(),
    );
    let run = no_time.block_on(pipeline.run(job, &Events::discard()));
    assert!(
        matches!(run, Err(PipelineError::Runtime(RuntimeError::TimeDisabled))),
        "expected the runtime error, got {run:?}"
    );
    Ok(())
}

#[tokio::test]
async fn a_full_runtime_passes_the_check() -> Result {
    check_runtime()?;
    go_pipeline().build()?;
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn no_backend_lists_the_registered_backends_and_hints_stay_apart() -> Result {
    let pipeline = Pipeline::builder()
        .backend(Arc::new(FakeBackend::new(
            "ship",
            "start",
            Confidence::High,
        )))
        .publisher(Arc::new(RecordingPublisher::default()))
        .build()?;
    let dir = tempfile::tempdir()?;
    let ctx = BuildContext::new(dir.path(), AppConfig::default());
    let err = match pipeline.choose_backend(&ctx, &Events::discard()).await {
        Ok(_) => return Err("expected no backend".into()),
        Err(e) => e,
    };
    insta::assert_snapshot!(err.to_string());
    assert_eq!(err.hint(), None);

    // A source error keeps hephy's CLI advice out of the message.
    let err = PipelineError::Source(SourceError::UnknownApp {
        app: "hello".parse()?,
    });
    assert_eq!(
        err.to_string(),
        "app hello has no repository: create the app before pushing to it"
    );
    assert_eq!(err.hint().as_deref(), Some("run `hephy apps create hello`"));
    let err = PipelineError::Deploy(DeployError::UnknownApp {
        app: "hello".parse()?,
    });
    assert_eq!(
        err.to_string(),
        "deploy failed: unknown app hello: create the app first"
    );
    assert_eq!(err.hint().as_deref(), Some("run `hephy apps create hello`"));
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn a_streaming_run_ends_its_stream_when_it_ends() -> Result {
    let pipeline = go_pipeline().build()?;
    let dir = go_dir()?;
    let job = Job::context(
        "hello".parse()?,
        BuildContext::new(dir.path(), AppConfig::default()),
        dir.path(),
    );
    let (mut stream, run) = pipeline.run_streaming(job, 4);
    let run = tokio::spawn(run);
    let mut lines = vec![];
    // Without the run's end closing the stream, this loop would never finish.
    while let Some(e) = within_an_hour(stream.recv()).await? {
        lines.push(normalize(&e));
    }
    let report = run.await??;
    assert_eq!(report.backend, "go");
    assert_eq!(
        report.to_string(),
        format!(
            "-----> hello built and published (this server does not deploy)\n       image: localhost:5000/hello:latest@sha256:{}\n",
            "f".repeat(64)
        )
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("       Published localhost:5000/hello:latest")),
        "{lines:#?}"
    );

    // A failed run ends the stream too.
    let empty = tempfile::tempdir()?;
    let job = Job::context(
        "hello".parse()?,
        BuildContext::new(empty.path(), AppConfig::default()),
        empty.path(),
    );
    let (mut stream, run) = pipeline.run_streaming(job, 4);
    let run = tokio::spawn(run);
    while within_an_hour(stream.recv()).await?.is_some() {}
    assert!(matches!(run.await?, Err(PipelineError::NoBackend { .. })));
    Ok(())
}
