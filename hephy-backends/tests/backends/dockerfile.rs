//! The dockerfile backend: kaniko settings mapping, the refusals `check` gives before any build,
//! and a real build with buildah pushed to a real registry and inspected with skopeo.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use hephy_backends::dockerfile::{Builder, DockerfileBackend};
use hephy_core::{Backend, BuildTarget, Events, Platform, PublishRequest, Publisher};
use hephy_oci::image::ImageBuilder;
use hephy_oci::layout::OciLayout;
use hephy_oci::registry::{RegistryOptions, RegistryPublisher};
use hephy_testing::TestRegistry;

use crate::support::{collect, ctx, env, joined, refusal, repo};

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// An architecture that is not this machine's.
fn foreign() -> Platform {
    if Platform::host().architecture() == "arm64" {
        Platform::linux_amd64()
    } else {
        Platform::linux_arm64()
    }
}

/// Replaces this machine's platform in messages, so snapshots hold on any CI machine.
fn normalize(s: &str) -> String {
    s.replace(&foreign().to_string(), "[FOREIGN]")
        .replace(foreign().architecture(), "[FOREIGN_ARCH]")
        .replace(&Platform::host().to_string(), "[HOST]")
}

#[tokio::test]
async fn kaniko_settings_are_mapped_with_warnings() -> TestResult {
    let dir = repo(&[
        ("docker/Dockerfile", "FROM scratch\n"),
        (
            "hephy.toml",
            r#"
[build]
backend = "kaniko"

[build.kaniko]
dockerfile = "docker/Dockerfile"
context = "dir://."
build-arg = ["VERSION=1.2", "MODE=prod"]
target = "final"
destination = "registry.example/team/app:latest"
cache = true
cache-repo = "registry.example/cache"
snapshot-mode = "redo"
single-snapshot = true
reproducible = true
use-new-run = true
label = { team = "web" }
"#,
        ),
    ])?;
    let backend = DockerfileBackend::kaniko_alias(env()?);
    let s = backend.settings(&ctx(dir.path())?)?;
    assert_eq!(s.file.as_deref(), Some("docker/Dockerfile"));
    assert_eq!(s.context.as_deref(), Some("."));
    assert_eq!(s.target.as_deref(), Some("final"));
    assert_eq!(s.args.get("VERSION").map(String::as_str), Some("1.2"));
    assert_eq!(s.args.get("MODE").map(String::as_str), Some("prod"));
    assert_eq!(s.labels.get("team").map(String::as_str), Some("web"));
    assert!(s.squash, "single-snapshot should map to squashing");
    insta::assert_snapshot!(s.warnings.join("\n"));

    // A misspelt kaniko key is an error naming it, not silently ignored.
    let dir = repo(&[
        ("Dockerfile", "FROM scratch\n"),
        (
            "hephy.toml",
            "[build.dockerfile.kaniko]\nbuild-argz = [\"A=1\"]\n",
        ),
    ])?;
    let err = DockerfileBackend::new(env()?)
        .settings(&ctx(dir.path())?)
        .err()
        .ok_or("a misspelt kaniko key should be refused")?;
    insta::assert_snapshot!("kaniko_unknown_key", err.to_string());
    Ok(())
}

#[tokio::test]
async fn detects_dockerfile_and_containerfile() -> TestResult {
    let b = DockerfileBackend::new(env()?);
    let d = b
        .detect(&ctx(repo(&[("Containerfile", "FROM scratch\n")])?.path())?)
        .await;
    assert!(d.detected(), "{d}");
    assert_eq!(d.reason, "found Containerfile");
    let d = b
        .detect(&ctx(repo(&[("go.mod", "module x\n")])?.path())?)
        .await;
    assert!(!d.detected(), "{d}");
    let d = DockerfileBackend::kaniko_alias(env()?)
        .detect(&ctx(repo(&[("Dockerfile", "FROM scratch\n")])?.path())?)
        .await;
    assert!(
        !d.detected(),
        "the kaniko alias must not compete in auto detection: {d}"
    );
    Ok(())
}

#[tokio::test]
async fn refuses_ssh_mounts() -> TestResult {
    let dir = repo(&[(
        "Dockerfile",
        "FROM scratch AS build\nCOPY . /src\nRUN --mount=type=ssh \\\n    git clone git@example.com:team/private.git\n",
    )])?;
    let err = refusal(
        &DockerfileBackend::new(env()?),
        &ctx(dir.path())?,
        &[Platform::host()],
        "RUN --mount=type=ssh should be refused",
    )
    .await?;
    insta::assert_snapshot!(err.to_string());
    Ok(())
}

#[tokio::test]
async fn refuses_heredocs_on_old_buildah() -> TestResult {
    let dir = repo(&[(
        "Dockerfile",
        "FROM scratch\nCOPY busybox /bin/busybox\nRUN <<EOF\n/bin/busybox echo hi > /x\nEOF\nENTRYPOINT [\"/bin/busybox\"]\n",
    )])?;
    let old = Builder::Buildah {
        program: PathBuf::from("buildah"),
        version: (1, 28),
    };
    let err = refusal(
        &DockerfileBackend::new(env()?).with_builder(old),
        &ctx(dir.path())?,
        &[Platform::host()],
        "a heredoc should be refused with buildah 1.28",
    )
    .await?;
    insta::assert_snapshot!(err.to_string());

    // The heredoc body is not read as instructions: a newer buildah accepts the file.
    let new = Builder::Buildah {
        program: PathBuf::from("buildah"),
        version: (1, 33),
    };
    DockerfileBackend::new(env()?)
        .with_builder(new)
        .check(&ctx(dir.path())?, &[Platform::host()])
        .await?;
    Ok(())
}

#[tokio::test]
async fn refuses_foreign_run_without_binfmt() -> TestResult {
    let dir = repo(&[(
        "Dockerfile",
        "FROM scratch AS app\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"true\"]\n",
    )])?;
    let no_binfmt = tempfile::tempdir()?;
    let backend = DockerfileBackend::new(env()?).with_binfmt_dir(no_binfmt.path());
    let c = ctx(dir.path())?;
    let err = refusal(
        &backend,
        &c,
        &[Platform::host(), foreign()],
        "RUN for a foreign platform without binfmt should be refused",
    )
    .await?;
    insta::assert_snapshot!(normalize(&err.to_string()));
    // The host platform alone is fine.
    backend.check(&c, &[Platform::host()]).await?;

    // With a qemu handler registered, the same platform is accepted.
    let with_binfmt = tempfile::tempdir()?;
    let q = match foreign().architecture() {
        "arm64" => "aarch64",
        _ => "x86_64",
    };
    std::fs::write(
        with_binfmt.path().join(format!("qemu-{q}")),
        format!(
            "enabled\ninterpreter /usr/bin/qemu-{q}-static\nflags: F\noffset 0\nmagic 7f454c46\n"
        ),
    )?;
    DockerfileBackend::new(env()?)
        .with_binfmt_dir(with_binfmt.path())
        .check(&c, &[foreign()])
        .await?;

    // A cross-compiling stage (`--platform=$BUILDPLATFORM`) runs natively: accepted, while a
    // FROM scratch final stage has no RUN.
    let cross = repo(&[(
        "Dockerfile",
        "FROM --platform=$BUILDPLATFORM scratch AS build\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"true\"]\n\nFROM scratch\nCOPY --from=build /bin/busybox /bin/busybox\n",
    )])?;
    backend.check(&ctx(cross.path())?, &[foreign()]).await?;

    // A stage the target does not need is not built, so its RUN does not count; a needed one
    // (through COPY --from, across continuation lines and comments) does.
    let unused = repo(&[(
        "Dockerfile",
        "FROM scratch AS tools\nRUN [\"/bin/busybox\", \"true\"]\n\nFROM scratch AS app\nCOPY busybox /bin/busybox\n",
    )])?;
    backend.check(&ctx(unused.path())?, &[foreign()]).await?;
    let used = repo(&[(
        "Dockerfile",
        "FROM scratch AS tools\nRUN [\"/bin/busybox\", \"true\"]\n\nFROM scratch AS app\nCOPY \\\n# the tools stage\n    --from=tools /bin/busybox /bin/busybox\n",
    )])?;
    let err = refusal(
        &backend,
        &ctx(used.path())?,
        &[foreign()],
        "a stage copied from is built, and its RUN counts",
    )
    .await?;
    assert!(
        err.to_string()
            .contains("Dockerfile:2: RUN in stage \"tools\""),
        "{err}"
    );
    Ok(())
}

#[tokio::test]
async fn refuses_unknown_target_stage_and_paths_outside() -> TestResult {
    let dir = repo(&[
        (
            "Dockerfile",
            "FROM scratch AS build\nFROM scratch AS runtime\n",
        ),
        ("hephy.toml", "[build.dockerfile]\ntarget = \"prod\"\n"),
    ])?;
    let err = refusal(
        &DockerfileBackend::new(env()?),
        &ctx(dir.path())?,
        &[Platform::host()],
        "an unknown target should be refused",
    )
    .await?;
    insta::assert_snapshot!("unknown_target", err.to_string());

    let dir = repo(&[
        ("Dockerfile", "FROM scratch\n"),
        ("hephy.toml", "[build.dockerfile]\ncontext = \"../..\"\n"),
    ])?;
    let err = refusal(
        &DockerfileBackend::new(env()?),
        &ctx(dir.path())?,
        &[Platform::host()],
        "a context outside the repository should be refused",
    )
    .await?;
    insta::assert_snapshot!("context_outside", err.to_string());
    Ok(())
}

/// A Dockerfile of a long chain of stages (`FROM N-1` in each) made `check` find each stage's
/// platform by recursing through all stages before it, comparing each with all before it: 20,000
/// stages (140 KB) kept the parser busy for more than a minute, and the recursion is as deep as
/// the chain. Found while writing the `dockerfile` fuzz target (its inputs are too short to reach
/// it): stages are capped at 256 and the chain is followed in a loop.
#[tokio::test]
async fn refuses_dockerfiles_with_too_many_stages() -> TestResult {
    let mut text = String::from("FROM scratch\n");
    let mut n = 1;
    while text.len() < 1024 * 1024 - 16 {
        text.push_str(&format!("FROM {}\n", n - 1));
        n += 1;
    }
    let dir = repo(&[("Dockerfile", &text)])?;
    let started = std::time::Instant::now();
    let err = refusal(
        &DockerfileBackend::new(env()?),
        &ctx(dir.path())?,
        &[Platform::host()],
        "a Dockerfile with 100,000 stages should be refused",
    )
    .await?;
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "refusing took {:?}",
        started.elapsed()
    );
    insta::assert_snapshot!(err.to_string());
    Ok(())
}

/// Debian's busybox-static: a static binary to build test images from, as nothing can be
/// pulled from Docker Hub here.
fn busybox() -> Result<PathBuf, Box<dyn std::error::Error>> {
    for p in ["/bin/busybox", "/usr/bin/busybox"] {
        if Path::new(p).is_file() {
            return Ok(PathBuf::from(p));
        }
    }
    Err(
        "busybox not found: apt-get install busybox-static (scripts/install-deps.sh installs it)"
            .into(),
    )
}

/// A base image made here, as nothing can be pulled from Docker Hub: busybox with `sh` and
/// `cat` links, written as an OCI layout into `dir` by hephy's own image builder.
async fn busybox_base(dir: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let tree = tempfile::tempdir()?;
    std::fs::create_dir_all(tree.path().join("bin"))?;
    std::fs::copy(busybox()?, tree.path().join("bin/busybox"))?;
    for applet in ["sh", "cat", "echo"] {
        std::os::unix::fs::symlink("busybox", tree.path().join("bin").join(applet))?;
    }
    let layout = OciLayout::create(dir)?;
    ImageBuilder::new(Platform::host())
        .dir(tree.path(), "")
        .env("PATH", "/bin")
        .write(&layout, Some("latest"))
        .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn builds_with_buildah_and_pushes_to_a_registry() -> TestResult {
    let dir = repo(&[
        (
            "Dockerfile",
            "# A RUN step in the shell form, on a base from an OCI layout in the repository.\nFROM oci:base:latest\nARG GREETING=hi\nRUN echo \"$GREETING\" > /greeting\nENTRYPOINT [\"/bin/cat\", \"/greeting\"]\n",
        ),
        ("hephy.toml", "[build.dockerfile]\nargs = { GREETING = \"built by buildah\" }\n"),
    ])?;
    busybox_base(&dir.path().join("base")).await?;
    let out = tempfile::tempdir()?;
    let backend = DockerfileBackend::new(env()?);
    let c = ctx(dir.path())?;
    let (events, lines) = collect();
    let image = backend
        .build(&c, &BuildTarget::new(Platform::host(), out.path()), &events)
        .await?;
    assert_eq!(image.platform, Some(Platform::host()));
    let log = joined(&lines);
    assert!(
        log.contains("STEP"),
        "buildah's steps should be streamed to events:\n{log}"
    );

    // Publish to a real registry with the registry publisher and read it back with skopeo.
    let registry = TestRegistry::start()?;
    let publisher = RegistryPublisher::builder(registry.host())
        .prefix("team")
        .options(RegistryOptions::new().insecure(registry.host()))
        .build()?;
    let published = publisher
        .publish(
            &PublishRequest::new("dockerfile-app".parse()?, "v1", vec![image.clone()]),
            &Events::discard(),
        )
        .await?;
    assert_eq!(published.digest, image.manifest);
    let dest = format!("{}/team/dockerfile-app:v1", registry.host());
    let inspect = Command::new("skopeo")
        .args(["inspect", "--tls-verify=false", "--config"])
        .arg(format!("docker://{dest}"))
        .output()?;
    assert!(
        inspect.status.success(),
        "{}",
        String::from_utf8_lossy(&inspect.stderr)
    );
    let config: serde_json::Value = serde_json::from_slice(&inspect.stdout)?;
    assert_eq!(config["architecture"], Platform::host().architecture());
    assert_eq!(
        config["config"]["Entrypoint"],
        serde_json::json!(["/bin/cat", "/greeting"])
    );
    assert_eq!(
        config["rootfs"]["diff_ids"].as_array().map(Vec::len),
        Some(2),
        "the base's layer and RUN's: {config}"
    );
    let raw = Command::new("skopeo")
        .args(["inspect", "--tls-verify=false", "--raw"])
        .arg(format!("docker://{dest}"))
        .output()?;
    let manifest: serde_json::Value = serde_json::from_slice(&raw.stdout)?;
    assert_eq!(
        manifest["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );

    // The RUN step really ran: its file is in the last layer.
    let unpacked = tempfile::tempdir()?;
    let bundle = unpacked.path().join("bundle");
    let ok = Command::new("umoci")
        .args(["unpack", "--rootless", "--image"])
        .arg(format!(
            "{}:{}",
            out.path().display(),
            Platform::host().slug()
        ))
        .arg(&bundle)
        .status()?
        .success();
    assert!(ok, "umoci unpack failed");
    assert_eq!(
        std::fs::read_to_string(bundle.join("rootfs/greeting"))?,
        "built by buildah\n"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn builds_a_foreign_platform_without_run_steps() -> TestResult {
    // COPY needs no emulation, so any machine builds this for another architecture.
    let dir = repo(&[
        (
            "Dockerfile",
            "FROM scratch\nCOPY hello.txt /hello.txt\nCMD [\"/hello\"]\n",
        ),
        ("hello.txt", "hello\n"),
    ])?;
    let out = tempfile::tempdir()?;
    let backend = DockerfileBackend::new(env()?).with_binfmt_dir(out.path());
    let c = ctx(dir.path())?;
    backend.check(&c, &[foreign()]).await?;
    let image = backend
        .build(
            &c,
            &BuildTarget::new(foreign(), out.path().join("image")),
            &Events::discard(),
        )
        .await?;
    assert_eq!(image.platform, Some(foreign()));
    let layout = hephy_oci::layout::OciLayout::open(&image.layout)?;
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.blob_path(&image.manifest))?)?;
    let config_digest: hephy_core::Digest = manifest["config"]["digest"]
        .as_str()
        .ok_or("no config digest")?
        .parse()?;
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.blob_path(&config_digest))?)?;
    assert_eq!(config["architecture"], foreign().architecture());
    assert_eq!(config["os"], "linux");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_run_step_reports_its_last_lines() -> TestResult {
    let dir = repo(&[(
        "Dockerfile",
        "FROM oci:base:latest\nRUN echo about to fail && exit 3\n",
    )])?;
    busybox_base(&dir.path().join("base")).await?;
    let out = tempfile::tempdir()?;
    let err = DockerfileBackend::new(env()?)
        .build(
            &ctx(dir.path())?,
            &BuildTarget::new(Platform::host(), out.path()),
            &Events::discard(),
        )
        .await
        .err()
        .ok_or("a RUN that exits 3 should fail the build")?;
    let message = err.to_string();
    assert!(
        message.starts_with(
            "buildah build failed (exit status: 3): the Dockerfile build failed; its last lines:"
        ),
        "{message}"
    );
    assert!(
        message.contains("about to fail"),
        "the RUN's output should be in the error: {message}"
    );
    Ok(())
}

/// The real uids of the host's processes whose command line contains `needle`, polled until
/// `done` is set.
async fn watch_uids(needle: String, done: Arc<AtomicBool>) -> Vec<u32> {
    let mut uids = Vec::new();
    while !done.load(Ordering::Relaxed) {
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let dir = entry.path();
            let cmdline = std::fs::read(dir.join("cmdline")).unwrap_or_default();
            if !String::from_utf8_lossy(&cmdline).contains(&needle) {
                continue;
            }
            let status = std::fs::read_to_string(dir.join("status")).unwrap_or_default();
            let uid: Option<u32> = status
                .lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|u| u.split_whitespace().next())
                .and_then(|u| u.parse().ok());
            uids.extend(uid);
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    uids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_steps_are_contained_in_the_build_sandbox() -> TestResult {
    use hephy_backends::sandbox::BUILD_USERNS_BASE;
    use std::os::unix::fs::PermissionsExt as _;

    // Host files a RUN step must not reach, readable by anyone: only the sandbox keeps them
    // out, not their permissions.
    let tmp = tempfile::tempdir()?;
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755))?;
    let secret = tmp.path().join("secret");
    std::fs::write(&secret, "host-secret")?;
    let data = tmp.path().join("data");
    std::fs::create_dir(&data)?;
    std::fs::write(data.join("admin-token"), "admin-token-value")?;
    let markers = tmp.path().join("markers");
    std::fs::create_dir(&markers)?;
    std::fs::set_permissions(&markers, std::fs::Permissions::from_mode(0o777))?;

    let repo = tmp.path().join("repo");
    std::fs::create_dir(&repo)?;
    let made = format!("made-by-run-{}", std::process::id());
    // A RUN step is root in its image; escaping chroot isolation is easy for root (every
    // process's /proc/PID/root), so each root it can find is tried.
    let run = format!(
        r#"echo "uid""map $(cat /proc/self/uid_map)"; \
    echo "interfaces=$(busybox grep -c : /proc/net/dev)"; \
    for r in / /proc/[0-9]*/root; do \
      echo "root $r: $(busybox ls $r/ 2>&1 | busybox tr '\n' ' ')"; \
      cat $r{secret} 2>&1; cat $r{data}/admin-token 2>&1; \
      busybox touch $r{markers}/marker 2>&1; \
    done; \
    cat /proc/[0-9]*/environ | busybox tr '\0' '\n' | busybox sed 's/^/environ:/'; \
    env | busybox sed 's/^/env:/'; \
    busybox sh -c 'busybox sleep 2' {made}"#,
        secret = secret.display(),
        data = data.display(),
        markers = markers.display(),
    );
    std::fs::write(
        repo.join("Dockerfile"),
        format!("FROM oci:base:latest\nRUN {run}\n"),
    )?;
    std::fs::write(repo.join("hephy.toml"), "[build]\nnetwork = false\n")?;
    busybox_base(&repo.join("base")).await?;

    let out = tempfile::tempdir()?;
    let c = ctx(&repo)?.with_app("contained".parse()?);
    let (events, lines) = collect();
    let done = Arc::new(AtomicBool::new(false));
    let watch = tokio::spawn(watch_uids(made.clone(), done.clone()));
    let built = DockerfileBackend::new(env()?)
        .build(&c, &BuildTarget::new(Platform::host(), out.path()), &events)
        .await;
    done.store(true, Ordering::Relaxed);
    let uids = watch.await?;
    built?;
    let log = joined(&lines);

    // Root in the RUN step is a high host uid: its user namespace maps 0 to one.
    let map = log
        .lines()
        .find_map(|l| l.trim().strip_prefix("uidmap "))
        .ok_or_else(|| format!("the RUN step printed no uid map:\n{log}"))?;
    let map: Vec<&str> = map.split_whitespace().collect();
    assert_eq!(
        map,
        ["0", &BUILD_USERNS_BASE.to_string(), "65536"],
        "the RUN step's uid map:\n{log}"
    );
    assert!(log.contains("interfaces=1"), "network = false:\n{log}");
    // Seen from the host: the RUN step's processes run as that uid.
    assert!(
        !uids.is_empty(),
        "the RUN step's sleep was never seen on the host:\n{log}"
    );
    assert!(
        uids.iter().all(|&u| u == BUILD_USERNS_BASE),
        "host uids of the RUN step: {uids:?}"
    );
    // It did look around, through the roots and environments of the processes it sees.
    assert!(
        log.lines().any(|l| l.trim().starts_with("root /proc/")),
        "{log}"
    );
    assert!(log.contains("environ:PATH=/bin"), "{log}");
    for leak in [
        "host-secret",
        "admin-token-value",
        "CARGO",
        "RUST",
        "HOME=/root",
    ] {
        assert!(!log.contains(leak), "{leak} reached the RUN step:\n{log}");
    }
    assert!(
        std::fs::read_dir(&markers)?.next().is_none(),
        "the RUN step wrote on the host"
    );
    // The output is the image layout alone: the context copy and temp files are gone.
    let mut left: Vec<String> = std::fs::read_dir(out.path())?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<Result<_, _>>()?;
    left.sort();
    assert_eq!(left, ["blobs", "index.json", "oci-layout"]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sandboxed_builds_are_reproducible_and_keep_the_hosts_layers() -> TestResult {
    // The same Dockerfile, with COPY and RUN, built twice in the sandbox and once on the host
    // (`BuildEnv::unconfined`, as `hephy build` does for one's own checkout).
    let dir = repo(&[
        (
            "Dockerfile",
            "FROM oci:base:latest\nCOPY hello.txt /hello.txt\nRUN echo ran > /ran && cat /hello.txt\n",
        ),
        ("hello.txt", "hello\n"),
    ])?;
    busybox_base(&dir.path().join("base")).await?;
    let c = ctx(dir.path())?;
    let mut built = Vec::new();
    for sandboxed in [true, true, false] {
        let out = tempfile::tempdir()?;
        let env = if sandboxed {
            env()?
        } else {
            hephy_backends::BuildEnv::unconfined(
                Path::new(env!("CARGO_TARGET_TMPDIR")).join("hephy-unconfined-cache"),
            )
        };
        let image = DockerfileBackend::new(env)
            .build(
                &c,
                &BuildTarget::new(Platform::host(), out.path()),
                &Events::discard(),
            )
            .await?;
        let layout = OciLayout::open(&image.layout)?;
        let manifest: serde_json::Value =
            serde_json::from_slice(&std::fs::read(layout.blob_path(&image.manifest))?)?;
        built.push((image.manifest.to_string(), manifest["layers"].clone()));
    }
    assert_eq!(built[0], built[1], "two sandboxed builds of one commit");
    // Layer for layer the same bytes as buildah on the host. (The configs differ in the
    // history's `COPY file:HASH` and what follows from it: buildah hashes the copied files as
    // it sees them, and the two see the context differently.)
    assert_eq!(built[0].1, built[2].1, "sandboxed and unconfined layers");
    Ok(())
}

#[test]
fn a_link_in_a_built_layout_is_refused() -> TestResult {
    // What a RUN step that left chroot isolation could do to the layout buildah writes: hephy
    // reads it as root, so a link to a host file would ship that file.
    let out = tempfile::tempdir()?;
    std::fs::create_dir_all(out.path().join("blobs/sha256"))?;
    std::fs::write(out.path().join("index.json"), "{}")?;
    hephy_backends::build_env::built_tree(out.path(), "buildah push")?;
    std::os::unix::fs::symlink("/etc/shadow", out.path().join("blobs/sha256/abc"))?;
    let err = hephy_backends::build_env::built_tree(out.path(), "buildah push")
        .err()
        .ok_or("a link in the layout should be refused")?;
    assert!(
        err.to_string().contains("left") && err.to_string().contains("blobs/sha256/abc"),
        "{err}"
    );
    Ok(())
}
