//! The server side of `git push` (receive-pack, protocol v0/v1), on gitoxide building blocks.
//!
//! One session: advertise refs, read the ref-update commands, receive and index the pack, check
//! that every new tip is complete, run the pipeline for the deploy branch like a pre-receive hook
//! (its events go to the pusher on side-band 2 as they happen), update the refs with
//! compare-and-swap, and report each ref's status.

pub(crate) mod commands;
pub(crate) mod pack;
pub(crate) mod pktline;
pub(crate) mod refs;

use std::any::Any;
use std::collections::HashSet;
use std::io;
use std::panic::AssertUnwindSafe;
use std::time::Duration;

use futures_util::FutureExt;
use hephy_core::{format_elapsed, AppName, Events, Job, PipelineError, Report, Revision, Stage};
use tokio::io::{AsyncBufRead, AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::time::Instant;

use crate::auth::User;
use crate::lock::{LockError, PushGuard};
use crate::server::Inner;
use commands::{Command, Request};
use pktline::Output;

/// The error returned by [`GitServer::receive_pack`](crate::GitServer::receive_pack).
///
/// Problems with single refs (a failed build, a stale old value) are not errors: they are
/// reported to the client as `ng` lines and the session ends normally.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReceiveError {
    /// The session runs outside a tokio runtime with time and IO; nothing was read or sent.
    #[error(transparent)]
    Runtime(#[from] hephy_core::RuntimeError),
    /// The app has no repository.
    #[error("app {app} does not exist: create it first")]
    UnknownApp {
        /// The app.
        app: AppName,
    },
    /// The user may not push to the app.
    #[error("{user} may not push to {app}: ask an admin to grant access to {app}")]
    Forbidden {
        /// The user.
        user: String,
        /// The app.
        app: AppName,
    },
    /// Another push to the app is running (or its lock file is unusable).
    #[error(transparent)]
    Locked(#[from] LockError),
    /// The client broke the protocol.
    #[error("protocol error: {message}")]
    Protocol {
        /// What was wrong.
        message: String,
    },
    /// The connection failed or the client went away; a running build was cancelled.
    #[error("the connection to the client failed: {0}")]
    Connection(#[from] io::Error),
    /// The repository could not be read.
    #[error("cannot read the repository of {app}: {message}; check the data directory")]
    Repository {
        /// The app.
        app: AppName,
        /// What failed.
        message: String,
    },
    /// What the client sent before the pack goes over one of the server's limits (ref
    /// updates, their length, push options); the pusher was told which.
    #[error("{message}")]
    Limit {
        /// Which limit, and what to do.
        message: String,
    },
    /// Serving the push panicked; the push was refused and the server keeps running.
    #[error("{message}")]
    Internal {
        /// What happened.
        message: String,
    },
}

impl ReceiveError {
    /// Advice that names hephy's CLI, for hephy's own tools to show after the message (see
    /// [`hephy_core::PipelineError::hint`]); a server built with
    /// [`cli_hints`](crate::GitServerBuilder::cli_hints) shows it to pushers.
    pub fn hint(&self) -> Option<String> {
        match self {
            ReceiveError::UnknownApp { app } => Some(format!("run `hephy apps create {app}`")),
            _ => None,
        }
    }

    pub(crate) fn protocol(message: impl Into<String>) -> Self {
        ReceiveError::Protocol {
            message: message.into(),
        }
    }
}

/// How the session is carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// One connection for advertisement, request and response (SSH, `git daemon`).
    FullDuplex {
        /// The client asked for protocol v1 (`GIT_PROTOCOL=version=1`).
        version1: bool,
    },
    /// Smart HTTP's POST: the advertisement was an earlier request.
    Stateless,
}

fn err_pkt(message: &str) -> Vec<u8> {
    let mut out = vec![];
    let text = format!("ERR {message}\n");
    let bytes = text.as_bytes();
    pktline::encode(&bytes[..bytes.len().min(pktline::MAX_DATA)], &mut out);
    out
}

/// Checks that the app exists and the user may push to it.
pub(crate) fn authorize(inner: &Inner, user: &User, app: &AppName) -> Result<(), ReceiveError> {
    if !inner.repos.exists(app) {
        return Err(ReceiveError::UnknownApp { app: app.clone() });
    }
    if let Some(accounts) = &inner.accounts {
        if !accounts.may_push(user, app) {
            return Err(ReceiveError::Forbidden {
                user: user.name.clone(),
                app: app.clone(),
            });
        }
    }
    Ok(())
}

/// The advertisement for smart HTTP: while another push to the app runs, an `ERR` line that the
/// client prints as `fatal: remote error: another push ...`, so it stops before sending a pack.
pub(crate) fn advertise_unless_busy(
    inner: &Inner,
    app: &AppName,
    version1: bool,
) -> Result<Vec<u8>, ReceiveError> {
    if let Some(holder) = inner.locks.holder(app) {
        let busy = LockError::Busy {
            app: app.clone(),
            holder,
        };
        return Ok(err_pkt(&busy.to_string()));
    }
    advertise(inner, app, version1)
}

/// The advertisement of `app` as pkt-lines.
fn advertise(inner: &Inner, app: &AppName, version1: bool) -> Result<Vec<u8>, ReceiveError> {
    let repo = inner
        .repos
        .open(app)
        .map_err(|e| ReceiveError::Repository {
            app: app.clone(),
            message: e.to_string(),
        })?;
    let refs = refs::list(&repo).map_err(|message| ReceiveError::Repository {
        app: app.clone(),
        message,
    })?;
    Ok(refs::advertisement(&refs, version1))
}

/// Runs one session.
pub(crate) async fn session<R, W>(
    inner: &Inner,
    user: &User,
    app: &AppName,
    input: R,
    output: W,
    mode: Mode,
) -> Result<(), ReceiveError>
where
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send,
{
    // Keepalives and build timeouts need tokio's timers: refuse here rather than panic later.
    hephy_core::check_runtime()?;
    let mut input = tokio::io::BufReader::with_capacity(64 * 1024, input);
    let mut out = Output::new(output);
    let mut guard = None;
    if let Mode::FullDuplex { version1 } = mode {
        if let Err(e) = authorize(inner, user, app) {
            out.raw(&err_pkt(&inner.with_hint(&e, e.hint()))).await?;
            return Err(e);
        }
        match inner.locks.try_lock(app, &user.name) {
            Ok(g) => guard = Some(g),
            Err(e) => {
                out.raw(&err_pkt(&e.to_string())).await?;
                return Err(e.into());
            }
        }
        let ad = advertise(inner, app, version1)?;
        out.raw(&ad).await?;
    } else {
        authorize(inner, user, app)?;
    }
    let req = commands::read_request(&mut input, &inner.limits).await?;
    out.set_band(req.caps.band_size(), req.caps.quiet);
    if let Some(reason) = req.over_limit.clone() {
        if mode == Mode::Stateless {
            drain(&mut input, inner.max_push_bytes).await;
        }
        refuse(&mut out, &req, &reason, "over the server's limits").await?;
        return Err(ReceiveError::Limit { message: reason });
    }
    if req.commands.is_empty() {
        return Ok(());
    }
    let guard: PushGuard = match guard {
        Some(g) => g,
        None => match inner.locks.try_lock(app, &user.name) {
            Ok(g) => g,
            Err(e) => {
                // Read what the client still sends, so it gets to read the answer.
                drain(&mut input, inner.max_push_bytes).await;
                let reason = e.to_string();
                out.message(&format!("error: {reason}\n")).await?;
                report(
                    &mut out,
                    &req,
                    Ok(()),
                    &vec![Err(reason); req.commands.len()],
                )
                .await?;
                return Err(e.into());
            }
        },
    };
    // A panic (in gix, a backend, our code) fails this push only: the lock is released and
    // the pusher is told, and the server goes on serving.
    let r = AssertUnwindSafe(process(inner, user, app, &mut input, &mut out, &req, mode))
        .catch_unwind()
        .await;
    drop(guard);
    match r {
        Ok(r) => r,
        Err(panic) => {
            let message = format!(
                "internal error while receiving the push: {}; the server keeps running",
                panic_message(&*panic)
            );
            tracing::error!(%app, user = %user.name, "{message}");
            if mode == Mode::Stateless {
                drain(&mut input, inner.max_push_bytes).await;
            }
            // Best effort: the panic may have come in the middle of a message.
            let _ = refuse(&mut out, &req, &message, "internal error").await;
            Err(ReceiveError::Internal { message })
        }
    }
}

/// Refuses the whole push: `reason` as an error line (an `ERR` pkt-line for a client without
/// side-band or report-status), then `ng REF NG` for each command.
async fn refuse<W: AsyncWrite + Unpin>(
    out: &mut Output<W>,
    req: &Request,
    reason: &str,
    ng: &str,
) -> io::Result<()> {
    if req.caps.band_size().is_none() && !req.caps.report_status {
        return out.raw(&err_pkt(reason)).await;
    }
    out.message(&format!("error: {reason}\n")).await?;
    // Without side-band, the unpack line is where the client sees the reason.
    let unpack = if req.caps.band_size().is_some() {
        ng.to_owned()
    } else {
        reason.to_owned()
    };
    let status = vec![Err(ng.to_owned()); req.commands.len()];
    report(out, req, Err(unpack), &status).await
}

/// The text of a panic's payload, on one line and not too long for a pkt-line.
fn panic_message(panic: &(dyn Any + Send)) -> String {
    let text = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned());
    let line = text.lines().next().unwrap_or_default();
    match line.char_indices().nth(500) {
        Some((i, _)) => format!("{}...", &line[..i]),
        None => line.to_owned(),
    }
}

/// Reads and drops up to `limit` bytes of what the client still sends.
async fn drain<R: AsyncRead + Unpin>(input: &mut R, limit: u64) {
    let mut sink = tokio::io::sink();
    let mut limited = input.take(limit);
    let _ = tokio::io::copy(&mut limited, &mut sink).await;
}

async fn process<R, W>(
    inner: &Inner,
    user: &User,
    app: &AppName,
    input: &mut R,
    out: &mut Output<W>,
    req: &Request,
    mode: Mode,
) -> Result<(), ReceiveError>
where
    R: AsyncBufRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send,
{
    let repo_dir = inner.repos.path(app);
    let repo_err = |message: String| ReceiveError::Repository {
        app: app.clone(),
        message,
    };

    // The pack, unless every command is a delete.
    let mut pack = None;
    if req.commands.iter().any(|c| !c.is_delete()) {
        let received = {
            let receive = pack::receive(input, &repo_dir, inner.max_push_bytes);
            tokio::pin!(receive);
            loop {
                tokio::select! {
                    r = &mut receive => break r,
                    () = tokio::time::sleep(inner.keepalive) => {
                        // Indexing a large pack is silent; an empty data packet (as git's own
                        // receive.keepalive) keeps proxies from dropping the connection.
                        out.keepalive().await?;
                    }
                }
            }
        };
        match received {
            Ok(p) => pack = p,
            Err(e) => {
                if mode == Mode::Stateless {
                    // An HTTP client sends its whole body before it reads the answer; over a
                    // full-duplex connection it reads side-band while it sends.
                    drain(input, inner.max_push_bytes.saturating_mul(4)).await;
                }
                let reason = e.to_string();
                out.message(&format!("error: {reason}\n")).await?;
                let ng = vec![Err("unpacker error".to_owned()); req.commands.len()];
                report(out, req, Err(reason), &ng).await?;
                return Ok(());
            }
        }
    }
    if let Some(p) = &pack {
        out.progress(&format!("Received {} objects\n", p.len()))
            .await?;
    }

    // Check every command before changing anything.
    let repo = crate::repo::open_isolated(&repo_dir).map_err(|e| repo_err(e.to_string()))?;
    let mut status: Vec<Result<(), String>> = Vec::with_capacity(req.commands.len());
    let mut seen = HashSet::new();
    for cmd in &req.commands {
        let current = repo
            .try_find_reference(cmd.name.as_str())
            .ok()
            .flatten()
            .and_then(|r| r.target().try_id().map(|id| id.to_owned()));
        let mut r = refs::check(&repo, cmd, current);
        if r.is_ok() && !cmd.is_delete() {
            r = refs::connected(&repo, pack.as_ref(), cmd.new, &mut seen);
        }
        status.push(r);
    }
    let atomic_failure = |status: &mut Vec<Result<(), String>>| {
        if req.caps.atomic && status.iter().any(|s| s.is_err()) {
            for s in status.iter_mut().filter(|s| s.is_ok()) {
                *s = Err("atomic push failed".into());
            }
        }
    };
    atomic_failure(&mut status);

    // Build the deploy branch before its ref moves, like a pre-receive hook.
    let mut built = None;
    let deploy = req
        .commands
        .iter()
        .position(|c| c.name == inner.deploy_ref && !c.is_delete());
    if let Some(i) = deploy {
        if status[i].is_ok() {
            if let Some(pipeline) = &inner.pipeline {
                match build(inner, pipeline, app, &req.commands[i], out).await? {
                    Ok(report) => built = Some(report),
                    Err(ng) => status[i] = Err(ng),
                }
                atomic_failure(&mut status);
            }
        }
    }

    // Update the refs: one transaction with atomic, else one per ref.
    let ok: Vec<usize> = (0..req.commands.len())
        .filter(|i| status[*i].is_ok())
        .collect();
    let mut updated = 0;
    if req.caps.atomic && !ok.is_empty() {
        let edits: Result<Vec<_>, _> = ok.iter().map(|i| refs::edit(&req.commands[*i])).collect();
        match edits.and_then(|e| refs::apply(&repo, e, &user.name)) {
            Ok(()) => updated = ok.len(),
            Err(reason) => {
                for i in &ok {
                    status[*i] = Err(reason.clone());
                }
            }
        }
    } else {
        for i in ok {
            match refs::edit(&req.commands[i]).and_then(|e| refs::apply(&repo, vec![e], &user.name))
            {
                Ok(()) => updated += 1,
                Err(reason) => status[i] = Err(reason),
            }
        }
    }
    if updated > 0 {
        if let Some(p) = pack.take() {
            p.accept();
        }
    }
    if let (Some(report), Some(i)) = (&built, deploy) {
        if status[i].is_ok() {
            out.message(&summary(inner, app, report)).await?;
        }
    }
    report(out, req, Ok(()), &status).await?;
    Ok(())
}

/// Sends report-status: `unpack ok` (or why not), then `ok REF` or `ng REF REASON` per command.
async fn report<W: AsyncWrite + Unpin>(
    out: &mut Output<W>,
    req: &Request,
    unpack: Result<(), String>,
    status: &[Result<(), String>],
) -> io::Result<()> {
    if !req.caps.report_status {
        return Ok(());
    }
    let mut pkts = vec![];
    let line = match &unpack {
        Ok(()) => "unpack ok\n".to_owned(),
        Err(e) => format!("unpack {}\n", one_line(e)),
    };
    pktline::encode(line.as_bytes(), &mut pkts);
    for (cmd, s) in req.commands.iter().zip(status) {
        let line = match s {
            Ok(()) => format!("ok {}\n", cmd.name),
            Err(reason) => format!("ng {} {}\n", cmd.name, one_line(reason)),
        };
        let bytes = line.as_bytes();
        pktline::encode(&bytes[..bytes.len().min(pktline::MAX_DATA)], &mut pkts);
    }
    pktline::flush(&mut pkts);
    out.data(&pkts).await
}

fn one_line(s: &str) -> String {
    s.lines().next().unwrap_or_default().to_owned()
}

fn stage_verb(stage: Stage) -> &'static str {
    match stage {
        Stage::Source => "preparing the source",
        Stage::Detect => "choosing a backend",
        Stage::Build => "building",
        Stage::Publish => "publishing",
        Stage::Deploy => "deploying",
        _ => "working",
    }
}

/// Where the last build of `app` wrote its log (`hephy logs --build`).
pub(crate) fn build_log_path(data_dir: &std::path::Path, app: &AppName) -> std::path::PathBuf {
    data_dir.join("logs").join(format!("{app}.build.log"))
}

/// The last build's log on disk. Best effort: a full disk must not fail the push.
struct BuildLog(Option<std::fs::File>);

impl BuildLog {
    fn create(data_dir: &std::path::Path, app: &AppName) -> Self {
        let path = build_log_path(data_dir, app);
        let file = path
            .parent()
            .map(std::fs::create_dir_all)
            .transpose()
            .ok()
            .and_then(|_| std::fs::File::create(&path).ok());
        BuildLog(file)
    }

    fn line(&mut self, line: &str) {
        use std::io::Write;
        if let Some(f) = &mut self.0 {
            if writeln!(f, "{line}").is_err() {
                self.0 = None;
            }
        }
    }
}

/// Runs the pipeline for `cmd`, streaming its events; `Ok(Err(reason))` is a failed build, an
/// `Err` a lost client (the pipeline was dropped, which cancels it).
async fn build<W: AsyncWrite + Unpin + Send>(
    inner: &Inner,
    pipeline: &hephy_core::Pipeline,
    app: &AppName,
    cmd: &Command,
    out: &mut Output<W>,
) -> Result<Result<Report, String>, ReceiveError> {
    let work_root = inner.data_dir.join("work");
    let work = std::fs::create_dir_all(&work_root)
        .and_then(|()| {
            tempfile::Builder::new()
                .prefix(&format!("{app}-"))
                .tempdir_in(&work_root)
        })
        .map_err(|e| ReceiveError::Repository {
            app: app.clone(),
            message: format!(
                "cannot create a work directory in {}: {e}",
                work_root.display()
            ),
        })?;
    let revision = Revision::new(cmd.new.to_string()).with_ref_name(cmd.name.clone());
    let job = Job::push(app.clone(), revision, work.path());
    // Bounded: when the pusher reads slowly, build tools wait for it (their lines are never
    // dropped) instead of their output piling up in the server's memory.
    let (events, mut stream) = Events::bounded(EVENT_QUEUE);
    let started = Instant::now();
    let mut build_log = BuildLog::create(&inner.data_dir, app);
    let result = {
        let run = pipeline.run(job, &events);
        let limit = inner.build_timeout;
        let run = async move {
            match limit {
                Some(limit) => match tokio::time::timeout(limit, run).await {
                    Ok(r) => r.map_err(|e| failure(inner, e)),
                    Err(_) => Err(("build failed", format!(
                        "the push timed out after {}: make the build faster or raise the server's build timeout",
                        humantime::format_duration(limit)
                    ))),
                },
                None => run.await.map_err(|e| failure(inner, e)),
            }
        };
        // A panicking backend fails this push, not the server.
        let run = AssertUnwindSafe(run).catch_unwind().map(|r| {
            r.unwrap_or_else(|panic| {
                let message = format!(
                    "internal error while building: {}; the server keeps running",
                    panic_message(&*panic)
                );
                tracing::error!(%app, "{message}");
                Err(("internal error", message))
            })
        });
        tokio::pin!(run);
        let keepalive = inner.keepalive.max(Duration::from_millis(10));
        let mut last_output = Instant::now();
        let mut stage = Stage::Source;
        loop {
            tokio::select! {
                biased;
                Some(event) = stream.recv() => {
                    stage = event.stage;
                    build_log.line(&event.render());
                    out.message(&format!("{}\n", event.render())).await?;
                    last_output = Instant::now();
                }
                r = &mut run => break r,
                () = tokio::time::sleep_until(last_output + keepalive) => {
                    // Proxies drop connections that stay silent; this line also tells the
                    // pusher the server is still at it.
                    let line = format!(
                        "       ... still {} ({})\n",
                        stage_verb(stage),
                        format_elapsed(started.elapsed())
                    );
                    out.message(&line).await?;
                    last_output = Instant::now();
                }
            }
        }
    };
    drop(events);
    while let Some(event) = stream.recv().await {
        build_log.line(&event.render());
        out.message(&format!("{}\n", event.render())).await?;
    }
    drop(work);
    match result {
        Ok(report) => Ok(Ok(report)),
        Err((reason, message)) => {
            let mut text = String::new();
            for line in message.lines() {
                text.push_str(&format!(" !     {line}\n"));
            }
            out.message(&text).await?;
            Ok(Err(reason.to_owned()))
        }
    }
}

/// How many events of a build may wait for a slow pusher before the build waits too.
const EVENT_QUEUE: usize = 256;

/// A failed pipeline run as the reason of its `ng` line and the message shown.
fn failure(inner: &Inner, e: PipelineError) -> (&'static str, String) {
    let reason = match e.stage() {
        Stage::Publish => "publish failed",
        Stage::Deploy => "deploy failed",
        _ => "build failed",
    };
    (reason, inner.with_hint(&e, e.hint()))
}

/// The last lines of a successful push: the report's summary, and the app's URL.
fn summary(inner: &Inner, app: &AppName, report: &Report) -> String {
    let mut s = report.to_string();
    if let Some(hook) = &inner.url_hook {
        if let Some(url) = hook(app, report) {
            s.push_str(&format!("       url:   {url}\n"));
        }
    }
    s
}
