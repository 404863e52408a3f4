//! Shared test fixtures: the Go hello app as OCI images, unique app names, container cleanup and
//! a tiny HTTP client.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use hephy_core::{AppName, DeployConfig, NewRelease, Reference, ReleaseCause};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub type Result<T = (), E = Box<dyn std::error::Error + Send + Sync>> = std::result::Result<T, E>;

/// The repository the fixture images are published under in the layout root.
pub const REPOSITORY: &str = "hello-fixture";

/// The hello app built once and assembled with umoci into `<root>/hephy.local/hello-fixture`.
pub struct Fixture {
    _dir: tempfile::TempDir,
    /// The layout root (holds `hephy.local/hello-fixture`).
    pub root: PathBuf,
    /// VERSION=one, running as the user `app` by name.
    pub one: Reference,
    /// VERSION=two.
    pub two: Reference,
    /// Exits at once with "failing on purpose" (FAIL set).
    pub bad: Reference,
    /// Answers /healthz with 500 (UNHEALTHY set).
    pub unhealthy: Reference,
    /// `one` plus a whiteout of /etc/junk and an opaque /opt.
    pub layered: Reference,
}

fn run(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{cmd:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn manifest_digest(layout: &Path, tag: &str) -> Result<String> {
    let index: serde_json::Value = serde_json::from_slice(&std::fs::read(layout.join("index.json"))?)?;
    let manifests = index["manifests"].as_array().ok_or("index.json has no manifests")?;
    manifests
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .and_then(|m| m["digest"].as_str())
        .map(str::to_owned)
        .ok_or_else(|| format!("tag {tag} not in {}", layout.display()).into())
}

fn build_fixture() -> Result<Fixture> {
    let dir = tempfile::tempdir()?;
    let root = dir.path().join("layouts");
    let layout = root.join("hephy.local").join(REPOSITORY);
    std::fs::create_dir_all(layout.parent().ok_or("no parent")?)?;
    let work = dir.path().join("work");
    std::fs::create_dir_all(work.join("etc"))?;
    std::fs::create_dir_all(work.join("opt-old"))?;
    std::fs::create_dir_all(work.join("opt-new"))?;

    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hello");
    let bin = work.join("hello");
    run(Command::new("go")
        .args(["build", "-trimpath", "-o"])
        .arg(&bin)
        .arg(".")
        .current_dir(&src)
        .env("CGO_ENABLED", "0")
        .env("GOPROXY", "off")
        .env("GOFLAGS", "-mod=mod")
        .env("GOCACHE", dir.path().join("gocache"))
        .env("HOME", dir.path()))?;
    std::fs::write(
        work.join("etc/passwd"),
        "root:x:0:0:root:/root:/sbin/nologin\napp:x:65532:65532:app:/home/app:/sbin/nologin\n",
    )?;
    std::fs::write(work.join("etc/group"), "root:x:0:\napp:x:65532:\n")?;
    std::fs::write(work.join("junk"), "to be whited out\n")?;
    std::fs::write(work.join("opt-old/old.txt"), "old\n")?;
    std::fs::write(work.join("opt-new/new.txt"), "new\n")?;

    let image = |tag: &str| format!("{}:{tag}", layout.display());
    run(Command::new("umoci").arg("init").arg("--layout").arg(&layout))?;
    run(Command::new("umoci").args(["new", "--image", &image("base")]))?;
    let insert = |tag: &str, src: &Path, dst: &str| {
        run(Command::new("umoci")
            .args(["insert", "--image", &image(tag)])
            .arg(src)
            .arg(dst))
    };
    insert("base", &work.join("etc"), "/etc")?;
    insert("base", &bin, "/hello")?;
    let config = |from: &str, tag: &str, env: &[&str]| {
        let mut cmd = Command::new("umoci");
        cmd.args(["config", "--image", &image(from), "--tag", tag])
            .args(["--config.entrypoint", "/hello", "--config.user", "app"])
            .args(["--config.env", "GREETING=world"]);
        for e in env {
            cmd.args(["--config.env", e]);
        }
        run(&mut cmd)
    };
    config("base", "one", &["VERSION=one"])?;
    config("base", "two", &["VERSION=two"])?;
    config("base", "bad", &["VERSION=bad", "FAIL=on-purpose"])?;
    config("base", "unhealthy", &["VERSION=unhealthy", "UNHEALTHY=1"])?;
    // Layers that exercise whiteouts: /etc/junk added then removed, /opt replaced opaquely.
    config("base", "layered", &["VERSION=layered"])?;
    insert("layered", &work.join("junk"), "/etc/junk")?;
    insert("layered", &work.join("opt-old"), "/opt")?;
    run(Command::new("umoci")
        .args(["insert", "--image", &image("layered"), "--whiteout", "/etc/junk"]))?;
    run(Command::new("umoci")
        .args(["insert", "--image", &image("layered"), "--opaque"])
        .arg(work.join("opt-new"))
        .arg("/opt"))?;

    let reference = |tag: &str| -> Result<Reference> {
        let digest = manifest_digest(&layout, tag)?;
        Ok(format!("hephy.local/{REPOSITORY}:{tag}@{digest}").parse()?)
    };
    Ok(Fixture {
        one: reference("one")?,
        two: reference("two")?,
        bad: reference("bad")?,
        unhealthy: reference("unhealthy")?,
        layered: reference("layered")?,
        root,
        _dir: dir,
    })
}

/// The fixture images, built on first use (by whichever test gets there first).
pub fn fixture() -> Result<&'static Fixture> {
    static FIXTURE: OnceLock<std::result::Result<Fixture, String>> = OnceLock::new();
    FIXTURE
        .get_or_init(|| build_fixture().map_err(|e| e.to_string()))
        .as_ref()
        .map_err(|e| format!("building the fixture failed: {e}").into())
}

/// An app name no other test (or earlier run) uses.
pub fn unique_app(prefix: &str) -> AppName {
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::SeqCst);
    format!("{prefix}-{}-{n}", std::process::id())
        .parse()
        .unwrap_or_else(|e| panic!("test app name: {e}"))
}

/// Removes every container of an app when dropped, even when the test failed.
pub struct Containers(pub AppName);

impl Drop for Containers {
    fn drop(&mut self) {
        let Ok(out) = Command::new("runc").args(["list", "-q"]).output() else {
            return;
        };
        let prefix = format!("hephy-{}-v", self.0);
        for id in String::from_utf8_lossy(&out.stdout).lines() {
            if id
                .strip_prefix(&prefix)
                .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
            {
                let _ = Command::new("runc").args(["delete", "-f", id]).output();
            }
        }
    }
}

/// The ids of the app's containers that runc knows.
pub fn containers_of(app: &AppName) -> Result<Vec<String>> {
    let out = run(Command::new("runc").args(["list", "-q"]))?;
    let prefix = format!("hephy-{app}-v");
    Ok(out
        .lines()
        .filter(|id| id.starts_with(&prefix))
        .map(str::to_owned)
        .collect())
}

/// A release of `image` with default deploy settings.
pub fn release(app: &AppName, image: &Reference) -> NewRelease {
    release_with(app, image, DeployConfig::default())
}

/// A release of `image` with `deploy` settings.
pub fn release_with(app: &AppName, image: &Reference, deploy: DeployConfig) -> NewRelease {
    NewRelease::new(
        app.clone(),
        image.clone(),
        deploy,
        ReleaseCause::Image {
            reference: image.to_string(),
        },
    )
}

/// `GET path` over a fresh connection: the status code and body.
pub async fn get(addr: SocketAddr, path: &str) -> Result<(u16, String)> {
    let fut = async {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        s.write_all(format!("GET {path} HTTP/1.0\r\nHost: test\r\n\r\n").as_bytes())
            .await?;
        let mut buf = vec![];
        s.read_to_end(&mut buf).await?;
        let text = String::from_utf8_lossy(&buf).into_owned();
        let (head, body) = text
            .split_once("\r\n\r\n")
            .ok_or_else(|| format!("no HTTP response: {text:?}"))?;
        let code = head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| format!("no status in {head:?}"))?;
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>((code, body.to_owned()))
    };
    tokio::time::timeout(Duration::from_secs(10), fut)
        .await
        .map_err(|_| "GET timed out")?
}

/// The body of `GET path`, which must answer 200.
pub async fn body(addr: SocketAddr, path: &str) -> Result<String> {
    let (code, body) = get(addr, path).await?;
    if code != 200 {
        return Err(format!("GET {path} answered {code}: {body}").into());
    }
    Ok(body)
}
