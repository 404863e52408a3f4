//! The cargo backend: the `hello-rust` fixture built with the real cargo, unpacked with umoci
//! and run under runc on the host network, answering HTTP; and its platform refusal.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hephy_backends::cargo::{elf_is_dynamic, CargoBackend};
use hephy_core::{AppConfig, Backend, BuildContext, BuildTarget, Events, Platform};

use crate::support::{collect, env, joined, refusal};

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hello-rust")
}

/// The fixture copied to a temp dir (builds must not write into the source tree).
fn fixture_copy() -> Result<tempfile::TempDir, Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    std::fs::create_dir_all(dir.path().join("src"))?;
    for f in ["Cargo.toml", "Cargo.lock", "src/main.rs"] {
        std::fs::copy(fixture().join(f), dir.path().join(f))?;
    }
    Ok(dir)
}

fn free_port() -> Result<u16, std::io::Error> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A container run with runc, deleted on drop.
struct Container {
    root: PathBuf,
    id: String,
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = Command::new("runc")
            .arg("--root")
            .arg(&self.root)
            .args(["delete", "--force", &self.id])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

fn get(port: u16, deadline: Duration) -> Result<String, Box<dyn std::error::Error>> {
    let start = Instant::now();
    loop {
        match TcpStream::connect(("127.0.0.1", port)) {
            Ok(mut s) => {
                s.set_read_timeout(Some(Duration::from_secs(5)))?;
                s.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")?;
                let mut body = String::new();
                s.read_to_string(&mut body)?;
                return Ok(body);
            }
            Err(e) if start.elapsed() > deadline => {
                return Err(format!("the app never listened on {port}: {e}").into())
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn builds_hello_rust_and_runs_it_under_runc() -> TestResult {
    let app = fixture_copy()?;
    let ctx = BuildContext::open(app.path())?;
    let backend = CargoBackend::new(env()?);
    let d = backend.detect(&ctx).await;
    assert_eq!(d.reason, "found Cargo.toml with the binary hello-rust");
    let out = tempfile::tempdir()?;
    let image = backend
        .build(
            &ctx,
            &BuildTarget::new(Platform::host(), out.path().join("image")),
            &Events::discard(),
        )
        .await?;
    assert_eq!(image.platform, Some(Platform::host()));

    let work = out.path();
    let bundle = work.join("bundle");
    let status = Command::new("umoci")
        .args(["unpack", "--image"])
        .arg(format!("{}:latest", image.layout.display()))
        .arg(&bundle)
        .stdout(Stdio::null())
        .status()?;
    assert!(status.success(), "umoci unpack failed");
    let binary = std::fs::read(bundle.join("rootfs/app/hello-rust"))?;
    assert_eq!(
        elf_is_dynamic(&binary),
        Some(false),
        "the binary should be static"
    );
    assert!(
        bundle.join("rootfs/etc/passwd").is_file(),
        "the default base should be there"
    );

    // Host network, PORT set, no terminal.
    let port = free_port()?;
    let config_path = bundle.join("config.json");
    let mut config: serde_json::Value = serde_json::from_slice(&std::fs::read(&config_path)?)?;
    config["process"]["terminal"] = false.into();
    if let Some(env) = config["process"]["env"].as_array_mut() {
        env.retain(|e| !e.as_str().is_some_and(|s| s.starts_with("PORT=")));
        env.push(format!("PORT={port}").into());
    }
    if let Some(ns) = config["linux"]["namespaces"].as_array_mut() {
        ns.retain(|n| n["type"] != "network");
    }
    std::fs::write(&config_path, serde_json::to_vec_pretty(&config)?)?;
    let container = Container {
        root: work.join("runc"),
        id: format!("hephy-cargo-test-{}", std::process::id()),
    };
    let status = Command::new("runc")
        .arg("--root")
        .arg(&container.root)
        .args(["run", "--detach", "--bundle"])
        .arg(&bundle)
        .arg(&container.id)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()?;
    assert!(status.success(), "runc run failed");
    let response = get(port, Duration::from_secs(15))?;
    assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");
    assert!(
        response.ends_with("hello from rust, uid 65532\n"),
        "the app should answer as the non-root user of the default base: {response}"
    );
    drop(container);
    Ok(())
}

#[tokio::test]
async fn refuses_a_platform_without_its_rust_target() -> TestResult {
    let app = fixture_copy()?;
    let mut ctx = BuildContext::open(app.path())?;
    // s390x targets are not installed on build machines; the check must say how to add them.
    let s390x: Platform = "linux/s390x".parse()?;
    *ctx.config_mut() = AppConfig::default();
    let err = refusal(
        &CargoBackend::new(env()?),
        &ctx,
        &[Platform::host(), s390x],
        "a platform without its Rust target should be refused",
    )
    .await?;
    insta::assert_snapshot!(err.to_string());

    let err = refusal(
        &CargoBackend::new(env()?),
        &ctx,
        &["windows/amd64".parse()?],
        "a non-Linux platform should be refused",
    )
    .await?;
    insta::assert_snapshot!("not_linux", err.to_string());
    Ok(())
}

#[tokio::test]
async fn needs_a_binary_target() -> TestResult {
    let dir = tempfile::tempdir()?;
    std::fs::create_dir_all(dir.path().join("src"))?;
    std::fs::write(
        dir.path().join("Cargo.toml"),
        "[package]\nname = \"lib-only\"\nversion = \"0.1.0\"\n",
    )?;
    std::fs::write(dir.path().join("src/lib.rs"), "")?;
    let ctx = BuildContext::open(dir.path())?;
    let d = CargoBackend::new(env()?).detect(&ctx).await;
    assert!(!d.detected(), "a library crate is not an app: {d}");
    std::fs::create_dir_all(dir.path().join("src/bin"))?;
    std::fs::write(dir.path().join("src/bin/a.rs"), "fn main(){}")?;
    std::fs::write(dir.path().join("src/bin/b.rs"), "fn main(){}")?;
    let err = refusal(
        &CargoBackend::new(env()?),
        &ctx,
        &[Platform::host()],
        "two binaries without [build.cargo] bin should be refused",
    )
    .await?;
    insta::assert_snapshot!(err.to_string());
    Ok(())
}

#[tokio::test]
async fn finds_the_binary_of_a_workspace_member() -> TestResult {
    let dir = tempfile::tempdir()?;
    let p = dir.path();
    std::fs::write(
        p.join("Cargo.toml"),
        "[workspace]\nmembers = [\"crates/*\"]\nresolver = \"2\"\n",
    )?;
    for (name, file) in [("core", "lib.rs"), ("server", "main.rs")] {
        let d = p.join("crates").join(name);
        std::fs::create_dir_all(d.join("src"))?;
        std::fs::write(
            d.join("Cargo.toml"),
            format!("[package]\nname = \"app-{name}\"\nversion = \"0.1.0\"\nedition = \"2021\"\n"),
        )?;
        std::fs::write(d.join("src").join(file), "fn main() {}\n")?;
    }
    let ctx = BuildContext::open(p)?;
    let d = CargoBackend::new(env()?).detect(&ctx).await;
    assert_eq!(
        d.reason,
        "found Cargo.toml with the binary app-server (package app-server)"
    );
    CargoBackend::new(env()?)
        .check(&ctx, &[Platform::host()])
        .await?;

    // A second binary makes the choice explicit.
    let tools = p.join("crates/tools");
    std::fs::create_dir_all(tools.join("src"))?;
    std::fs::write(
        tools.join("Cargo.toml"),
        "[package]\nname = \"app-tools\"\nversion = \"0.1.0\"\nedition = \"2021\"\n",
    )?;
    std::fs::write(tools.join("src/main.rs"), "fn main() {}\n")?;
    let ctx = BuildContext::open(p)?;
    let err = refusal(
        &CargoBackend::new(env()?),
        &ctx,
        &[Platform::host()],
        "two binaries in a workspace should need a choice",
    )
    .await?;
    insta::assert_snapshot!(err.to_string());
    std::fs::write(
        p.join("hephy.toml"),
        "[build.cargo]\npackage = \"app-server\"\n",
    )?;
    CargoBackend::new(env()?)
        .check(&BuildContext::open(p)?, &[Platform::host()])
        .await?;
    Ok(())
}

/// A build script is pushed code: it runs in the sandbox, as the build user, seeing a copy of
/// the repository and nothing of the host (issue 12: it read the admin token). And nothing
/// above the copy is visible, so a `Cargo.toml` above the checkout (hephy's own workspace, on
/// the demo server) no longer makes cargo refuse the app.
#[tokio::test]
async fn a_build_script_runs_confined_and_sees_no_workspace_above() -> TestResult {
    let tmp = tempfile::tempdir()?;
    std::fs::write(
        tmp.path().join("Cargo.toml"),
        "[workspace]\nmembers = [\"other\"]\n",
    )?;
    let secret = tmp.path().join("secret");
    std::fs::write(&secret, "host-secret")?;
    let marker = tmp.path().join("marker");
    let repo = tmp.path().join("checkout");
    std::fs::create_dir_all(repo.join("src"))?;
    std::fs::write(
        repo.join("Cargo.toml"),
        "[package]\nname = \"spy\"\nversion = \"0.1.0\"\nedition = \"2021\"\n",
    )?;
    std::fs::write(repo.join("src/main.rs"), "fn main() {}\n")?;
    std::fs::write(
        repo.join("build.rs"),
        format!(
            r#"fn main() {{
    let uid = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let uid = uid.lines().find(|l| l.starts_with("Uid:")).unwrap_or_default().to_owned();
    println!("cargo:warning={{uid}}");
    println!("cargo:warning=secret={{:?}}", std::fs::read_to_string({secret:?}).ok());
    println!("cargo:warning=marker={{:?}}", std::fs::write({marker:?}, "x").is_ok());
    for (k, v) in std::env::vars() {{
        println!("cargo:warning=env {{k}}={{v}}");
    }}
}}
"#,
            secret = secret.display().to_string(),
            marker = marker.display().to_string(),
        ),
    )?;
    let ctx = BuildContext::open(&repo)?.with_app("spy".parse()?);
    let (events, lines) = collect();
    let out = tmp.path().join("out");
    CargoBackend::new(env()?)
        .build(&ctx, &BuildTarget::new(Platform::host(), &out), &events)
        .await?;
    let log = joined(&lines);
    assert!(log.contains("Uid:\t65534"), "{log}");
    assert!(log.contains("secret=None"), "{log}");
    assert!(!log.contains("host-secret"), "{log}");
    assert!(!marker.exists(), "the build script wrote on the host");
    assert!(!log.contains("CARGO_MANIFEST_DIR=/work"), "{log}");
    assert!(
        !repo.join("Cargo.lock").exists(),
        "cargo wrote into the checkout instead of its copy"
    );
    Ok(())
}
