//! Integration tests of hephy-git with the real `git` client.

mod auth;
mod hostile;
mod http;
mod receive;
mod server;
mod source;
mod ssh;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hephy_backends::FilesBackend;
use hephy_core::{
    async_trait, AppName, Backend, BuildContext, BuildError, BuildTarget, BuiltImage, Confidence,
    Detection, Events, Pipeline,
};
use hephy_git::auth::Accounts;
use hephy_git::GitServer;
use hephy_oci::OciLayoutPublisher;
use tempfile::TempDir;

type Result<T = (), E = Box<dyn std::error::Error + Send + Sync>> = std::result::Result<T, E>;

/// A backend for the cases the real backends do not cover on purpose: it takes apps with a
/// `FAIL` file (prints the file and fails), a `SLOW` file (prints a line, then waits until
/// cancelled), a `PANIC` file (panics) or a `NOISY` file (prints as many lines of 1 KiB as the
/// file says, counting them in `logged`, then fails), and reports when its build future is
/// dropped before it ends.
#[derive(Default)]
struct Gate {
    started: AtomicBool,
    cancelled: Arc<AtomicBool>,
    logged: AtomicUsize,
}

const GATE_FILES: [&str; 4] = ["FAIL", "SLOW", "PANIC", "NOISY"];

struct SetOnDrop(Arc<AtomicBool>);
impl Drop for SetOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

#[async_trait]
impl Backend for Gate {
    fn name(&self) -> &str {
        "gate"
    }
    async fn detect(&self, ctx: &BuildContext) -> Detection {
        if GATE_FILES.iter().any(|f| ctx.dir().join(f).exists()) {
            Detection::yes("gate", Confidence::High, "found FAIL, SLOW, PANIC or NOISY")
        } else {
            Detection::no("gate", "no FAIL, SLOW, PANIC or NOISY file")
        }
    }
    async fn build(
        &self,
        ctx: &BuildContext,
        _target: &BuildTarget,
        events: &Events,
    ) -> Result<BuiltImage, BuildError> {
        if let Ok(text) = std::fs::read_to_string(ctx.dir().join("FAIL")) {
            for line in text.lines() {
                events.log(format!("gate: {line}"));
            }
            return Err(BuildError::Failed {
                message: "the FAIL file asks this build to fail".into(),
            });
        }
        if ctx.dir().join("PANIC").exists() {
            panic!("the PANIC file asks this backend to panic");
        }
        if let Ok(text) = std::fs::read_to_string(ctx.dir().join("NOISY")) {
            let lines: usize = text.trim().parse().unwrap_or(0);
            let padding = "x".repeat(1000);
            for i in 0..lines {
                // As a build tool's lines come: waiting when the pusher is behind.
                events.log_async(format!("noisy {i} {padding}")).await;
                self.logged.store(i + 1, Ordering::SeqCst);
            }
            return Err(BuildError::Failed {
                message: format!("the NOISY build printed its {lines} lines"),
            });
        }
        events.log("gate: waiting until cancelled");
        self.started.store(true, Ordering::SeqCst);
        let guard = SetOnDrop(self.cancelled.clone());
        tokio::time::sleep(Duration::from_secs(300)).await;
        std::mem::forget(guard);
        Err(BuildError::Failed {
            message: "the SLOW build was never cancelled".into(),
        })
    }
}

/// A running server on a free loopback port with its own data directory.
struct TestServer {
    dir: TempDir,
    server: GitServer,
    gate: Arc<Gate>,
    accounts: Accounts,
    token: String,
    addr: std::net::SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Options {
    max_push_bytes: u64,
    data_dir: Option<PathBuf>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            max_push_bytes: 1 << 30,
            data_dir: None,
        }
    }
}

impl TestServer {
    async fn start() -> Result<TestServer> {
        Self::start_with(Options::default()).await
    }

    async fn start_with(opts: Options) -> Result<TestServer> {
        let dir = tempfile::tempdir()?;
        let data = opts
            .data_dir
            .clone()
            .unwrap_or_else(|| dir.path().join("data"));
        std::fs::create_dir_all(&data)?;
        let accounts = Accounts::open(&data)?;
        if accounts.user("alice").is_none() {
            accounts.add_user("alice", false)?;
        }
        let token = accounts.create_token("alice")?;
        let gate = Arc::new(Gate::default());
        let images = dir.path().join("images");
        // As hephy-server: the pipeline gets the server's source, pushers get hephy's hints.
        let server = GitServer::builder(&data)
            .accounts(accounts.clone())
            .max_push_bytes(opts.max_push_bytes)
            .keepalive(Duration::from_millis(200))
            .cli_hints(true)
            .pipeline_with(|source| {
                Pipeline::builder()
                    .source(Arc::new(source))
                    .backend(gate.clone())
                    .backend(Arc::new(FilesBackend::new()))
                    .publisher(Arc::new(OciLayoutPublisher::new(images)))
            })
            .build()?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let serving = server.clone();
        let task = tokio::spawn(async move {
            let _ = serving.serve_http(listener).await;
        });
        Ok(TestServer {
            dir,
            server,
            gate,
            accounts,
            token,
            addr,
            task,
        })
    }

    fn app(&self, name: &str) -> Result<AppName> {
        let app: AppName = name.parse()?;
        if !self.server.repo_dir(&app).exists() {
            self.server.create_app(&app, "alice")?;
        }
        Ok(app)
    }

    /// The push URL of `app` with alice's credentials.
    fn url(&self, app: &str) -> String {
        format!("http://alice:{}@{}/{app}.git", self.token, self.addr)
    }

    fn images(&self) -> PathBuf {
        self.dir.path().join("images")
    }
}

/// What a git command did.
struct Run {
    ok: bool,
    stdout: String,
    stderr: String,
}

fn git_command(dir: &Path, args: &[&str]) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new("git");
    cmd.args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_AUTHOR_NAME", "Alice")
        .env("GIT_AUTHOR_EMAIL", "alice@example.com")
        .env("GIT_COMMITTER_NAME", "Alice")
        .env("GIT_COMMITTER_EMAIL", "alice@example.com")
        .env("GIT_AUTHOR_DATE", "2024-01-02T03:04:05Z")
        .env("GIT_COMMITTER_DATE", "2024-01-02T03:04:05Z")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    cmd
}

impl From<std::process::Output> for Run {
    fn from(out: std::process::Output) -> Self {
        Run {
            ok: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

async fn run(mut cmd: tokio::process::Command) -> Result<Run> {
    Ok(cmd.output().await?.into())
}

async fn git(dir: &Path, args: &[&str]) -> Result<Run> {
    run(git_command(dir, args)).await
}

/// Runs git and fails the test with its output when it fails.
async fn git_ok(dir: &Path, args: &[&str]) -> Result<String> {
    let r = git(dir, args).await?;
    if !r.ok {
        return Err(format!("git {} failed:\n{}\n{}", args.join(" "), r.stdout, r.stderr).into());
    }
    Ok(r.stdout)
}

/// The commit `HEAD` of `repo` points to.
async fn head(repo: &Path) -> Result<String> {
    Ok(git_ok(repo, &["rev-parse", "HEAD"])
        .await?
        .trim()
        .to_owned())
}

/// A started server with the app `name`, and an empty client repository on branch main in the
/// temporary directory returned with it.
async fn server_with_app(name: &str) -> Result<(TestServer, AppName, TempDir, PathBuf)> {
    let server = TestServer::start().await?;
    let app = server.app(name)?;
    let work = tempfile::tempdir()?;
    let repo = client_repo(work.path()).await?;
    Ok((server, app, work, repo))
}

/// `len` bytes of incompressible data from the xorshift state `x` (so no extra dependency).
fn noise(x: &mut u64, len: usize) -> Vec<u8> {
    let mut data = vec![0u8; len];
    for chunk in data.chunks_mut(8) {
        *x ^= *x << 13;
        *x ^= *x >> 7;
        *x ^= *x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    data
}

/// Waits until `flag` is set; fails with `what` once `within` has passed since `since`.
async fn wait_for(flag: &AtomicBool, since: tokio::time::Instant, within: Duration, what: &str) {
    while !flag.load(Ordering::SeqCst) {
        assert!(since.elapsed() < within, "{what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Kills the process group of `child` (git and its helpers) like a closed terminal, and reaps it.
async fn kill_group(child: &mut tokio::process::Child) -> Result {
    let pgid = child.id().ok_or("the push has no pid")?;
    let killed = std::process::Command::new("kill")
        .args(["-KILL", "--", &format!("-{pgid}")])
        .status()?;
    assert!(killed.success(), "kill failed");
    let _ = child.wait().await?;
    Ok(())
}

/// Runs the push that `push` makes until it succeeds, for up to 30 s after `since` (a lock may
/// take a moment to be freed); whether it did.
async fn push_until_ok(
    since: tokio::time::Instant,
    mut push: impl FnMut() -> tokio::process::Command,
) -> Result<bool> {
    while since.elapsed() < Duration::from_secs(30) {
        if run(push()).await?.ok {
            return Ok(true);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(false)
}

/// A client repository on branch main.
async fn client_repo(dir: &Path) -> Result<PathBuf> {
    let repo = dir.join("client");
    std::fs::create_dir_all(&repo)?;
    git_ok(&repo, &["init", "-q", "-b", "main"]).await?;
    Ok(repo)
}

async fn commit_file(repo: &Path, name: &str, content: &[u8], message: &str) -> Result<String> {
    let path = repo.join(name);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&path, content)?;
    git_ok(repo, &["add", "-A"]).await?;
    git_ok(repo, &["commit", "-q", "-m", message]).await?;
    head(repo).await
}

/// `refs -> commit` of a repository, from the real `git ls-remote` on its path.
async fn ls_remote(repo: &Path) -> Result<Vec<(String, String)>> {
    let out = git_ok(repo, &["ls-remote", "--refs", "."]).await?;
    Ok(out
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .map(|(id, name)| (name.to_owned(), id.to_owned()))
        .collect())
}

/// Checks the server repository with `git fsck --strict` and that its branches are `expected`.
async fn assert_server_repo(
    server: &TestServer,
    app: &AppName,
    expected: &[(&str, &str)],
) -> Result {
    let dir = server.server.repo_dir(app);
    let fsck = git(&dir, &["fsck", "--strict", "--no-dangling"]).await?;
    assert!(
        fsck.ok && !fsck.stderr.contains("error") && !fsck.stdout.contains("missing"),
        "git fsck --strict on the server repository failed:\n{}\n{}",
        fsck.stdout,
        fsck.stderr
    );
    let refs = ls_remote(&dir).await?;
    let expected: Vec<(String, String)> = expected
        .iter()
        .map(|(n, id)| (n.to_string(), id.to_string()))
        .collect();
    assert_eq!(
        refs, expected,
        "the server's refs differ from what was pushed"
    );
    // No pack is left half-done or protected.
    for entry in std::fs::read_dir(dir.join("objects/pack"))? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        assert!(
            !name.ends_with(".keep") && !name.starts_with("tmp"),
            "leftover {name} in objects/pack"
        );
    }
    Ok(())
}
