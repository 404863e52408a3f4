//! Shared test fixtures: the Go hello app as OCI images, unique app names, container cleanup and
//! a tiny HTTP client.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use hephy_backends::{BuildEnv, GoBackend};
use hephy_core::{
    AppConfig, AppName, BuildContext, DeployConfig, Events, Job, NewRelease, Pipeline, Reference,
    ReleaseCause,
};
use hephy_oci::OciLayoutPublisher;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub type Result<T = (), E = Box<dyn std::error::Error + Send + Sync>> = std::result::Result<T, E>;

/// The repository the fixture images are published under in the layout root.
pub const REPOSITORY: &str = "hello-fixture";

/// The hello app built by hephy-backends' Go backend and published with its OCI layout
/// publisher into `<root>/hephy.local/hello-fixture`, once per test run.
pub struct Fixture {
    /// The layout root (holds `hephy.local/hello-fixture`).
    pub root: PathBuf,
    /// Answers "hello ... from one".
    pub one: Reference,
    /// Answers "hello ... from two".
    pub two: Reference,
    /// Exits at once with "failing on purpose: on-purpose".
    pub bad: Reference,
    /// Answers /healthz with 500.
    pub unhealthy: Reference,
    /// `one` without a `USER` in its config, so it runs as the container's root; in the layout
    /// `hephy.local/hello-root`.
    pub no_user: Reference,
}

/// Runs `cmd` and returns its stdout; fails with its output when it fails.
pub fn run(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
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

/// Builds the app with `ldflags` and publishes it as `hephy.local/hello-fixture:TAG`. The Go
/// build cache is hephy's shared one, so only the first build on a machine compiles the
/// standard library.
async fn publish(root: &Path, work: &Path, tag: &str, ldflags: &str) -> Result<Reference> {
    publish_with(Arc::new(OciLayoutPublisher::new(root)), work, tag, ldflags).await
}

/// Builds the app with `ldflags` and publishes it with `publisher` as `hello-fixture:TAG`.
pub async fn publish_with(
    publisher: Arc<dyn hephy_core::Publisher>,
    work: &Path,
    tag: &str,
    ldflags: &str,
) -> Result<Reference> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hello");
    let config = AppConfig::from_toml(
        "hephy.toml",
        &format!("[build]\nbackend = \"go\"\n[build.go]\nldflags = \"{ldflags}\"\n"),
    )?;
    let pipeline = Pipeline::builder()
        // The fixture is this repository's own code: no sandbox needed to build it.
        .backend(Arc::new(GoBackend::new(BuildEnv::unconfined(
            Path::new(env!("CARGO_TARGET_TMPDIR")).join("build-cache"),
        ))))
        .publisher(publisher)
        .build()?;
    let job = Job::context(
        REPOSITORY.parse()?,
        BuildContext::new(&src, config),
        work.join(tag),
    )
    .with_tag(tag);
    let report = pipeline.run(job, &Events::discard()).await?;
    Ok(report.published.reference)
}

/// Writes `image` with its config's user removed into the layout `<root>/hephy.local/hello-root`.
async fn without_user(root: &Path, image: &Reference) -> Result<Reference> {
    use hephy_oci::layout::OciLayout;

    let source = root.join("hephy.local").join(REPOSITORY);
    let digest = image.digest().ok_or("the fixture image has no digest")?;
    let resolved = hephy_deploy::unpack::resolve(
        &source,
        digest,
        &hephy_core::Platform::host(),
        &hephy_deploy::unpack::UnpackLimits::default(),
    )?;
    let target = OciLayout::create(root.join("hephy.local/hello-root"))?;
    let mut base = hephy_oci::base::from_manifest(
        &OciLayout::open(&source)?,
        resolved.manifest_digest,
        &target,
        "hello-fixture".into(),
    )?;
    let mut run = base.config.config().clone().unwrap_or_default();
    run.set_user(None);
    base.config.set_config(Some(run));
    let written = hephy_oci::image::ImageBuilder::new(hephy_core::Platform::host())
        .base(base)
        .write(&target, Some("root"))
        .await?;
    Ok(format!("hephy.local/hello-root:root@{}", written.digest).parse()?)
}

fn build_fixture() -> Result<Fixture> {
    // Kept under cargo's per-target temp dir and rebuilt by each test run.
    let base = Path::new(env!("CARGO_TARGET_TMPDIR")).join("deploy-fixture");
    let _ = std::fs::remove_dir_all(&base);
    let root = base.join("layouts");
    let work = base.join("work");
    std::fs::create_dir_all(&work)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let one = publish(&root, &work, "one", "-X main.version=one").await?;
        Ok(Fixture {
            no_user: without_user(&root, &one).await?,
            one,
            two: publish(&root, &work, "two", "-X main.version=two").await?,
            bad: publish(
                &root,
                &work,
                "bad",
                "-X main.version=bad -X main.fail=on-purpose",
            )
            .await?,
            unhealthy: publish(
                &root,
                &work,
                "unhealthy",
                "-X main.version=sick -X main.unhealthy=yes",
            )
            .await?,
            root: root.clone(),
        })
    })
}

/// The fixture images, built on first use (by whichever test gets there first).
pub fn fixture() -> Result<&'static Fixture> {
    static FIXTURE: OnceLock<std::result::Result<Fixture, String>> = OnceLock::new();
    FIXTURE
        .get_or_init(|| {
            // On a thread of its own, so that async tests can call this too.
            std::thread::spawn(|| build_fixture().map_err(|e| e.to_string()))
                .join()
                .unwrap_or_else(|_| Err("the fixture build panicked".into()))
        })
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

/// Removes every container of an app when dropped, even when the test failed, with its pasta
/// and its network namespace mount.
pub struct Containers(pub AppName);

impl Drop for Containers {
    fn drop(&mut self) {
        let prefix = format!("hephy-{}-v", self.0);
        let ours = |id: &str| {
            id.strip_prefix(&prefix)
                .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
        };
        if let Ok(out) = Command::new("runc").args(["list", "-q"]).output() {
            for id in String::from_utf8_lossy(&out.stdout).lines() {
                if ours(id) {
                    let _ = Command::new("runc").args(["delete", "-f", id]).output();
                }
            }
        }
        for netns in netns_mounts(&self.0) {
            if let Some(pid) = pasta_of(&netns) {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .output();
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = Command::new("umount").arg(&netns).output();
        }
    }
}

/// The mounted network namespace files of the app's containers (`.../containers/ID/netns`).
pub fn netns_mounts(app: &AppName) -> Vec<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let needle = format!("/containers/hephy-{app}-v");
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|p| p.contains(&needle) && p.ends_with("/netns"))
        .map(PathBuf::from)
        .collect()
}

/// The pid of the pasta process attached to the namespace file `netns`, if one runs.
pub fn pasta_of(netns: &Path) -> Option<u32> {
    let pid: u32 = std::fs::read_to_string(netns.with_file_name("pasta.pid"))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let netns = netns.to_string_lossy();
    String::from_utf8_lossy(&cmdline)
        .split('\0')
        .any(|a| a == netns)
        .then_some(pid)
}

/// The pasta processes running for the app's containers (found by their command line).
pub fn pastas_of(app: &AppName) -> Vec<u32> {
    let needle = format!("/containers/hephy-{app}-v");
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline);
            cmdline.starts_with("pasta") && cmdline.contains(&needle)
        })
        .collect()
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
    get_host(addr, "test", path).await
}

/// `GET path` with a `Host` header over a fresh connection: the status code and body.
pub async fn get_host(addr: SocketAddr, host: &str, path: &str) -> Result<(u16, String)> {
    let fut = async {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n").as_bytes())
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
