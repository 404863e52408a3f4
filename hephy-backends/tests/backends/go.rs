//! The Go backend with the real `go`, `umoci`, `runc` and `qemu-aarch64-static`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use hephy_backends::GoBackend;
use hephy_core::{
    AppConfig, Backend, BuildContext, BuildError, BuildTarget, Confidence, Events, Job, Pipeline,
    Platform, Revision,
};
use hephy_oci::layout::OciLayout;
use hephy_oci::OciLayoutPublisher;

use hephy_testing::{free_port, http_get, umoci_unpack};

use crate::support::{collect, env, joined, refusal};

type Result<T = (), E = Box<dyn std::error::Error + Send + Sync>> = std::result::Result<T, E>;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hello-go")
}

/// A Go backend in the tests' sandbox, whose build cache outlives the test run, so reruns are
/// fast.
fn backend() -> Result<GoBackend> {
    Ok(GoBackend::new(env()?))
}

fn context(dir: &Path, extra: &str) -> Result<BuildContext> {
    let config = AppConfig::from_toml(
        "hephy.toml",
        &format!(
            r#"
[build]
backend = "go"
platforms = ["linux/amd64", "linux/arm64"]
env = {{ GOPROXY = "off", GOFLAGS = "" }}
[build.go]
data = "static"
{extra}
"#
        ),
    )?;
    Ok(BuildContext::new(dir, config)
        .with_revision(Revision::new("0123456789abcdef0123456789abcdef01234567"))
        .with_source_date_epoch(UNIX_EPOCH + Duration::from_secs(1_700_000_000)))
}

#[tokio::test]
async fn detects_go_mod_and_names_the_module() -> Result {
    let d = GoBackend::new(env()?)
        .detect(&context(&fixture(), "")?)
        .await;
    assert_eq!(d.confidence, Confidence::High);
    assert!(d.reason.contains("example.com/hello"), "{}", d.reason);
    let tmp = tempfile::tempdir()?;
    assert!(!GoBackend::new(env()?)
        .detect(&BuildContext::new(tmp.path(), AppConfig::default()))
        .await
        .detected());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_arch_image_runs_under_qemu_and_runc_and_is_reproducible() -> Result {
    let tmp = tempfile::tempdir()?;
    let pipeline = Pipeline::builder()
        .backend(Arc::new(backend()?))
        .publisher(Arc::new(OciLayoutPublisher::new(tmp.path().join("images"))))
        .build()?;
    let (events, lines) = collect();
    let job = Job::context(
        "hello".parse()?,
        context(&fixture(), "")?,
        tmp.path().join("work1"),
    );
    let report = pipeline.run(job, &events).await?;
    let published = report.published;
    assert!(published.is_index, "two platforms make an index");
    assert_eq!(published.platforms.len(), 2);
    assert_eq!(published.reference.registry(), "hephy.local");
    let log = joined(&lines);
    assert!(
        log.contains("[linux/arm64] go build -trimpath"),
        "per-platform build log:\n{log}"
    );

    // The same commit built again elsewhere gives the same digest.
    let pipeline2 = Pipeline::builder()
        .backend(Arc::new(backend()?))
        .publisher(Arc::new(OciLayoutPublisher::new(
            tmp.path().join("images2"),
        )))
        .build()?;
    let job = Job::context(
        "hello".parse()?,
        context(&fixture(), "")?,
        tmp.path().join("work2"),
    );
    let again = pipeline2.run(job, &Events::discard()).await?;
    assert_eq!(
        again.published.digest, published.digest,
        "two builds of one commit differ"
    );

    // Tag each platform's manifest in the published layout so umoci can unpack it.
    let layout = OciLayout::open(tmp.path().join("images/hephy.local/hello"))?;
    let index: oci_spec::image::ImageIndex = layout.read_json(&published.digest)?;
    assert_eq!(
        index
            .annotations()
            .as_ref()
            .and_then(|a| a.get("org.opencontainers.image.revision"))
            .map(String::as_str),
        Some("0123456789abcdef0123456789abcdef01234567")
    );
    for m in index.manifests() {
        let arch = m
            .platform()
            .as_ref()
            .ok_or("no platform in the index")?
            .architecture()
            .to_string();
        layout.add_manifest(m, Some(&arch))?;
        let manifest: oci_spec::image::ImageManifest =
            layout.read_json(&m.digest().to_string().parse()?)?;
        let ann = manifest.annotations().clone().unwrap_or_default();
        assert_eq!(
            ann.get("org.opencontainers.image.created")
                .map(String::as_str),
            Some("2023-11-14T22:13:20Z")
        );
    }

    // arm64: the binary runs under qemu and answers.
    let arm = tmp.path().join("arm64");
    umoci_unpack(layout.root(), "arm64", &arm)?;
    let binary = arm.join("rootfs/app/hello");
    let file = std::process::Command::new("file").arg(&binary).output();
    if let Ok(out) = file {
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("aarch64") || text.contains("ARM"), "{text}");
    }
    assert_eq!(
        std::fs::read_to_string(arm.join("rootfs/var/run/hephy/data/message.txt"))?,
        "data file\n"
    );
    assert!(arm
        .join("rootfs/etc/ssl/certs/ca-certificates.crt")
        .is_file());
    let port = free_port()?;
    let mut child = tokio::process::Command::new("qemu-aarch64-static")
        .arg(&binary)
        .env("PORT", port.to_string())
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let reply = http_get(port).await?;
    child.kill().await?;
    assert!(
        reply.starts_with("HTTP/1.0 200") && reply.ends_with("hello from hephy\n"),
        "{reply}"
    );

    // amd64: runs as a container under runc, in the host's network namespace.
    let amd = tmp.path().join("amd64");
    umoci_unpack(layout.root(), "amd64", &amd)?;
    let port = free_port()?;
    let config_path = amd.join("config.json");
    let mut config: serde_json::Value = serde_json::from_slice(&std::fs::read(&config_path)?)?;
    assert_eq!(config["process"]["args"], serde_json::json!(["/app/hello"]));
    assert_eq!(config["process"]["user"]["uid"], 65532);
    config["process"]["terminal"] = false.into();
    let env = config["process"]["env"].as_array_mut().ok_or("no env")?;
    env.retain(|e| !e.as_str().unwrap_or_default().starts_with("PORT="));
    env.push(format!("PORT={port}").into());
    if let Some(ns) = config["linux"]["namespaces"].as_array_mut() {
        ns.retain(|n| n["type"] != "network");
    }
    std::fs::write(&config_path, serde_json::to_vec_pretty(&config)?)?;
    let id = format!("hephy-test-{}", std::process::id());
    let mut runc = tokio::process::Command::new("runc")
        .arg("run")
        .arg("--bundle")
        .arg(&amd)
        .arg(&id)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let reply = http_get(port).await;
    let _ = std::process::Command::new("runc")
        .args(["kill", &id, "KILL"])
        .status();
    let _ = tokio::time::timeout(Duration::from_secs(10), runc.wait()).await;
    let _ = std::process::Command::new("runc")
        .args(["delete", "--force", &id])
        .status();
    let reply = reply?;
    assert!(
        reply.starts_with("HTTP/1.0 200") && reply.ends_with("hello from hephy\n"),
        "{reply}"
    );
    Ok(())
}

#[tokio::test]
async fn compile_error_fails_with_the_compiler_lines() -> Result {
    let tmp = tempfile::tempdir()?;
    let ctx_dir = tmp.path().join("src");
    std::fs::create_dir_all(ctx_dir.join("static"))?;
    std::fs::copy(fixture().join("go.mod"), ctx_dir.join("go.mod"))?;
    std::fs::write(ctx_dir.join("static/message.txt"), "x")?;
    std::fs::write(
        ctx_dir.join("main.go"),
        "package main\n\nfunc main() {\n\tundefinedThing()\n}\n",
    )?;
    let (events, lines) = collect();
    let target = BuildTarget::new(Platform::linux_amd64(), tmp.path().join("out"));
    let err = backend()?
        .build(
            &context(&ctx_dir, "")?,
            &target,
            &events.with_platform(Platform::linux_amd64()),
        )
        .await
        .err()
        .ok_or("a broken program built")?;
    let BuildError::Failed { message } = &err else {
        return Err(format!("expected BuildError::Failed, got {err:?}").into());
    };
    insta::assert_snapshot!("go_compile_error", message);
    assert!(
        message.contains("main.go:4:2: undefined: undefinedThing"),
        "{message}"
    );
    let log = joined(&lines);
    assert!(
        log.contains("[linux/amd64] ./main.go:4:2: undefined: undefinedThing"),
        "{log}"
    );
    Ok(())
}

#[tokio::test]
async fn missing_go_names_what_to_install() -> Result {
    let tmp = tempfile::tempdir()?;
    let ctx = context(&fixture(), "toolchain = \"/nonexistent/bin/go\"")?;
    let target = BuildTarget::new(Platform::linux_amd64(), tmp.path().join("out"));
    let err = backend()?
        .build(&ctx, &target, &Events::discard())
        .await
        .err()
        .ok_or("built without go")?;
    assert!(matches!(err, BuildError::ToolMissing { .. }), "{err:?}");
    let msg = err.to_string();
    insta::assert_snapshot!("go_missing_toolchain", msg);
    assert!(
        msg.contains("apt-get install golang-go") && msg.contains("[build.go] toolchain"),
        "{msg}"
    );
    // A name on PATH that does not exist gives the same hint, from the check before any build.
    let ctx = context(&fixture(), "toolchain = \"no-such-go-binary\"")?;
    let err = refusal(
        &backend()?,
        &ctx,
        &[Platform::linux_amd64()],
        "the check passed without go",
    )
    .await?;
    assert!(
        err.to_string().contains("apt-get install golang-go"),
        "{err}"
    );
    let err = backend()?
        .build(&ctx, &target, &Events::discard())
        .await
        .err()
        .ok_or("built without go")?;
    assert!(
        err.to_string().contains("apt-get install golang-go"),
        "{err}"
    );
    Ok(())
}

/// A push never chooses a program of its own to run on the server: a `[build.go] toolchain` in
/// the repository (relative, absolute, or a name found through a `PATH` the push sets) is
/// refused by `check` and by `build`, and the script never runs.
#[tokio::test]
async fn a_toolchain_in_the_repository_never_runs() -> Result {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir()?;
    let repo = tmp.path().join("repo");
    let marker = tmp.path().join("marker");
    std::fs::create_dir_all(repo.join("bin"))?;
    std::fs::write(repo.join("go.mod"), "module example.com/evil\n\ngo 1.21\n")?;
    std::fs::write(repo.join("main.go"), "package main\n\nfunc main() {}\n")?;
    let script = format!("#!/bin/sh\necho ran > '{}'\n", marker.display());
    for f in ["evil.sh", "bin/go"] {
        std::fs::write(repo.join(f), &script)?;
        std::fs::set_permissions(repo.join(f), std::fs::Permissions::from_mode(0o755))?;
    }
    let absolute = repo.join("evil.sh").display().to_string();
    let cases = [
        ("toolchain = \"./evil.sh\"".to_owned(), ""),
        ("toolchain = \"bin/go\"".to_owned(), ""),
        (format!("toolchain = {absolute:?}"), ""),
        (
            "toolchain = \"evil.sh\"".to_owned(),
            "env = { PATH = \".:bin\" }",
        ),
    ];
    let out = tmp.path().join("out");
    for (toolchain, env) in &cases {
        std::fs::write(
            repo.join("hephy.toml"),
            format!("[build]\n{env}\n[build.go]\n{toolchain}\n"),
        )?;
        let ctx = BuildContext::open(&repo)?;
        let err = refusal(
            &backend()?,
            &ctx,
            &[Platform::linux_amd64()],
            "a toolchain in the repository passed the check",
        )
        .await?;
        let target = BuildTarget::new(Platform::linux_amd64(), out.clone());
        let built = backend()?
            .build(&ctx, &target, &Events::discard())
            .await
            .err()
            .ok_or("a toolchain in the repository was built with")?;
        assert_eq!(built.to_string(), err.to_string(), "{toolchain}");
        if toolchain.contains("./evil.sh") {
            insta::assert_snapshot!("toolchain_in_the_repository", err.to_string());
        }
        let named = err
            .to_string()
            .starts_with("[build.go] toolchain must name a program");
        let missing = matches!(err, BuildError::ToolMissing { .. });
        assert!(named || missing, "{toolchain}: {err}");
        assert!(!marker.exists(), "{toolchain}: the repository's script ran");
    }
    Ok(())
}

/// Pushed code that runs during `go build` (here through `-toolexec`, which `[build] env` can
/// set) runs in the sandbox: as the build user, with a cleared environment, the repository
/// read-only, no view of the host's files or of other apps' caches, and no network when the
/// app turns it off.
#[tokio::test]
async fn go_build_runs_confined() -> Result {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir()?;
    let repo = tmp.path().join("repo");
    let secret = tmp.path().join("secret");
    std::fs::write(&secret, "host-secret")?;
    std::fs::create_dir_all(&repo)?;
    std::fs::write(repo.join("go.mod"), "module example.com/spy\n\ngo 1.19\n")?;
    std::fs::write(repo.join("main.go"), "package main\n\nfunc main() {}\n")?;
    let spy = format!(
        "#!/bin/sh\n{{ echo \"uid=$(id -u)\"; echo \"interfaces=$(grep -c : /proc/net/dev)\"; \
         ls /cache | sed 's/^/cache:/'; ls / | tr '\\n' ' '; echo; env | sed 's/^/env:/'; \
         cat {} 2>&1; touch /src/written 2>&1; }} >&2\nexec \"$@\"\n",
        secret.display()
    );
    std::fs::write(repo.join("spy.sh"), spy)?;
    std::fs::set_permissions(repo.join("spy.sh"), std::fs::Permissions::from_mode(0o755))?;
    std::fs::write(
        repo.join("hephy.toml"),
        "[build]\nnetwork = false\nenv = { GOFLAGS = \"-toolexec=/src/spy.sh\", GOPROXY = \"off\" }\n",
    )?;
    let ctx = BuildContext::open(&repo)?.with_app("spy".parse()?);
    let (events, lines) = collect();
    let target = BuildTarget::new(Platform::linux_amd64(), tmp.path().join("out"));
    backend()?.build(&ctx, &target, &events).await?;
    let log = joined(&lines);
    assert!(log.contains("uid=65534"), "{log}");
    assert!(log.contains("interfaces=1"), "network = false: {log}");
    // Its own cache only: GOCACHE and GOPATH, not the cache root with other apps in it.
    assert!(log.contains("cache:go-build"), "{log}");
    assert!(!log.contains("cache:spy"), "{log}");
    for hidden in [" work ", " root ", "host-secret", "CARGO_MANIFEST_DIR"] {
        assert!(
            !log.contains(hidden),
            "{hidden:?} reached the build:\n{log}"
        );
    }
    assert!(log.contains("env:GOOS=linux"), "{log}");
    assert!(log.contains("Read-only file system"), "{log}");
    assert!(
        !repo.join("written").exists(),
        "the build wrote into the repository"
    );
    Ok(())
}
