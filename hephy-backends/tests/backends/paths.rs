//! The path rules every backend shares (`hephy_backends::paths`), with real symlinks in temp
//! repositories: paths and links that leave the repository are refused with a message naming
//! the key and the fix, links that stay inside are followed, reads are bounded, and each
//! backend's `check` and `build` refuse what a push names outside the repository.

use std::os::unix::fs::symlink;
use std::path::Path;

use hephy_backends::paths::{self, PathError, MANIFEST_LIMIT};
use hephy_backends::{CargoBackend, DockerfileBackend, FilesBackend, GoBackend, SpinBackend};
use hephy_core::{Backend, BuildError, BuildTarget, Events, Platform};

use crate::support::{ctx, env, refusal, repo};

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// The error of `r`, or `expected` (why there should be one) as the test's error.
fn refused<T: std::fmt::Debug>(
    r: Result<T, PathError>,
    expected: &'static str,
) -> Result<PathError, String> {
    match r {
        Ok(v) => Err(format!("{expected}, and got {v:?}")),
        Err(e) => Ok(e),
    }
}

/// What `backend.build` refuses for `dir`, which must be refused before anything is built.
async fn build_refusal(
    backend: &dyn Backend,
    dir: &Path,
    expected: &'static str,
) -> Result<BuildError, Box<dyn std::error::Error>> {
    let out = tempfile::tempdir()?;
    let target = BuildTarget::new(Platform::linux_amd64(), out.path().join("out"));
    let result = backend.build(&ctx(dir)?, &target, &Events::discard()).await;
    Ok(result.err().ok_or(expected)?)
}

#[test]
fn absolute_paths_and_dot_dot_escapes_are_refused() -> TestResult {
    let dir = repo(&[("public/index.html", "hi\n")])?;
    let key = "[build.files] dir";
    let e = refused(paths::resolve(dir.path(), key, "/"), "/ was accepted")?;
    assert!(matches!(e, PathError::Outside { .. }), "{e:?}");
    insta::assert_snapshot!("absolute", e.to_string());
    let e = refused(
        paths::resolve(dir.path(), key, "public/../../x"),
        "../ was accepted",
    )?;
    insta::assert_snapshot!("dot_dot", e.to_string());
    // `..` that stays inside is only a longer way to name a directory of the repository.
    let inside = paths::resolve(dir.path(), key, "public/../public")?;
    assert_eq!(inside, dir.path().canonicalize()?.join("public"));
    Ok(())
}

#[test]
fn a_symlink_that_leaves_the_repository_is_refused() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("repo");
    std::fs::create_dir_all(tmp.path().join("elsewhere/secrets"))?;
    std::fs::create_dir_all(&dir)?;
    symlink("/", dir.join("root"))?;
    symlink("../elsewhere", dir.join("sibling"))?;
    let key = "[build.dockerfile] context";
    for (value, why) in [
        ("root", "a link to / was accepted"),
        ("root/etc", "a path through a link to / was accepted"),
        (
            "sibling/secrets",
            "a link to a sibling directory was accepted",
        ),
        (
            "sibling/not-there-yet",
            "a missing path behind an escaping link was accepted",
        ),
    ] {
        let e = refused(paths::resolve(&dir, key, value), why)?;
        assert!(
            matches!(e, PathError::SymlinkOutside { .. }),
            "{value}: {e:?}"
        );
    }
    let e = refused(
        paths::resolve(&dir, key, "root"),
        "a link to / was accepted",
    )?;
    insta::assert_snapshot!("symlink_outside", e.to_string());
    Ok(())
}

#[test]
fn a_symlink_chain_that_stays_inside_is_followed() -> TestResult {
    let dir = repo(&[
        ("real/site/index.html", "hi\n"),
        ("mods/go.mod", "module example.com/m\n"),
    ])?;
    symlink("real/site", dir.path().join("b"))?;
    symlink("b", dir.path().join("a"))?;
    symlink("mods/go.mod", dir.path().join("link.mod"))?;
    symlink("link.mod", dir.path().join("go.mod"))?;
    let real = dir.path().canonicalize()?;
    assert_eq!(
        paths::resolve(dir.path(), "[build.files] dir", "a")?,
        real.join("real/site")
    );
    let text = paths::read(dir.path(), "go.mod", MANIFEST_LIMIT)?;
    assert_eq!(text.as_deref(), Some(&b"module example.com/m\n"[..]));
    assert_eq!(paths::read(dir.path(), "Cargo.toml", MANIFEST_LIMIT)?, None);
    Ok(())
}

#[test]
fn a_file_read_must_be_a_regular_file_inside_and_small() -> TestResult {
    let dir = repo(&[("big/go.mod", "")])?;
    symlink("/dev/zero", dir.path().join("go.mod"))?;
    let e = refused(
        paths::read(dir.path(), "go.mod", MANIFEST_LIMIT),
        "go.mod -> /dev/zero was read",
    )?;
    insta::assert_snapshot!("read_dev_zero", e.to_string());
    std::fs::remove_file(dir.path().join("go.mod"))?;
    symlink("/etc/passwd", dir.path().join("go.mod"))?;
    let e = refused(
        paths::read(dir.path(), "go.mod", MANIFEST_LIMIT),
        "go.mod -> /etc/passwd was read",
    )?;
    assert!(matches!(e, PathError::FileOutside { .. }), "{e:?}");

    // Inside, but not a file: a directory, and a FIFO, whose open would block forever.
    std::fs::create_dir_all(dir.path().join("a-dir"))?;
    symlink("a-dir", dir.path().join("Cargo.toml"))?;
    let e = refused(
        paths::read(dir.path(), "Cargo.toml", MANIFEST_LIMIT),
        "a directory was read as a file",
    )?;
    insta::assert_snapshot!("read_not_a_file", e.to_string());
    let status = std::process::Command::new("mkfifo")
        .arg(dir.path().join("spin.toml"))
        .status()?;
    assert!(status.success(), "mkfifo failed");
    let e = refused(
        paths::read(dir.path(), "spin.toml", MANIFEST_LIMIT),
        "a FIFO was read",
    )?;
    assert!(matches!(e, PathError::NotAFile { .. }), "{e:?}");

    std::fs::write(dir.path().join("big/go.mod"), vec![b'x'; 3 * 1024 * 1024])?;
    let e = refused(
        paths::read(dir.path(), "big/go.mod", MANIFEST_LIMIT),
        "a 3 MB go.mod was read",
    )?;
    insta::assert_snapshot!("read_too_large", e.to_string());
    Ok(())
}

#[tokio::test]
async fn files_refuses_dir_outside_the_repository() -> TestResult {
    let dir = repo(&[
        ("index.html", "hi\n"),
        ("hephy.toml", "[build.files]\ndir = \"/\"\n"),
    ])?;
    let err = refusal(
        &FilesBackend::new(),
        &ctx(dir.path())?,
        &[Platform::linux_amd64()],
        "dir = \"/\" passed the check",
    )
    .await?;
    insta::assert_snapshot!("files_dir_root", err.to_string());
    let built = build_refusal(&FilesBackend::new(), dir.path(), "dir = \"/\" was built").await?;
    assert_eq!(built.to_string(), err.to_string());

    // The same through a committed link, and a base layout outside.
    let dir = repo(&[("hephy.toml", "[build.files]\ndir = \"site\"\n")])?;
    symlink("/", dir.path().join("site"))?;
    let err = build_refusal(&FilesBackend::new(), dir.path(), "site -> / was built").await?;
    assert!(
        err.to_string().starts_with(
            "[build.files] dir \"site\" leads outside the repository through a symlink"
        ),
        "{err}"
    );
    let dir = repo(&[("hephy.toml", "[build.files]\nbase = \"oci:../base:1\"\n")])?;
    let err = refusal(
        &FilesBackend::new(),
        &ctx(dir.path())?,
        &[Platform::linux_amd64()],
        "a base layout outside passed the check",
    )
    .await?;
    insta::assert_snapshot!("files_base_outside", err.to_string());
    Ok(())
}

#[tokio::test]
async fn dockerfile_refuses_a_context_that_links_to_root() -> TestResult {
    let dir = repo(&[
        ("Dockerfile", "FROM scratch\n"),
        ("hephy.toml", "[build.dockerfile]\ncontext = \"ctx\"\n"),
    ])?;
    symlink("/", dir.path().join("ctx"))?;
    let err = refusal(
        &DockerfileBackend::new(env()?),
        &ctx(dir.path())?,
        &[Platform::host()],
        "context -> / passed the check",
    )
    .await?;
    insta::assert_snapshot!("dockerfile_context_symlink", err.to_string());

    // A Dockerfile that is a link out of the repository is not read either.
    let dir = repo(&[("hephy.toml", "")])?;
    symlink("/etc/passwd", dir.path().join("Dockerfile"))?;
    let err = refusal(
        &DockerfileBackend::new(env()?),
        &ctx(dir.path())?,
        &[Platform::host()],
        "Dockerfile -> /etc/passwd passed the check",
    )
    .await?;
    insta::assert_snapshot!("dockerfile_file_symlink", err.to_string());

    // Nor an ignore file the builder would read.
    let dir = repo(&[("Dockerfile", "FROM scratch\n")])?;
    symlink("/etc/shadow", dir.path().join(".dockerignore"))?;
    let err = refusal(
        &DockerfileBackend::new(env()?),
        &ctx(dir.path())?,
        &[Platform::host()],
        ".dockerignore -> /etc/shadow passed the check",
    )
    .await?;
    assert!(
        err.to_string()
            .starts_with(".dockerignore is a symlink that leads outside the repository"),
        "{err}"
    );
    Ok(())
}

#[tokio::test]
async fn go_refuses_go_mod_linking_to_dev_zero() -> TestResult {
    let dir = repo(&[("main.go", "package main\n\nfunc main() {}\n")])?;
    symlink("/dev/zero", dir.path().join("go.mod"))?;
    // It is still detected, so that check explains the refusal instead of another backend
    // shipping the repository.
    assert!(GoBackend::new(env()?)
        .detect(&ctx(dir.path())?)
        .await
        .detected());
    let err = refusal(
        &GoBackend::new(env()?),
        &ctx(dir.path())?,
        &[Platform::linux_amd64()],
        "go.mod -> /dev/zero passed the check",
    )
    .await?;
    insta::assert_snapshot!("go_mod_dev_zero", err.to_string());
    let built = build_refusal(
        &GoBackend::new(env()?),
        dir.path(),
        "go.mod -> /dev/zero was built",
    )
    .await?;
    assert_eq!(built.to_string(), err.to_string());

    for (setting, why) in [
        ("data = \"data\"", "data -> / passed the check"),
        ("main = \"/usr/lib\"", "an absolute main passed the check"),
        ("main = \"./cmd\"", "main -> / passed the check"),
        (
            "base = \"oci:/var/lib\"",
            "an absolute base layout passed the check",
        ),
    ] {
        let dir = repo(&[
            ("go.mod", "module example.com/m\n"),
            ("main.go", "package main\n\nfunc main() {}\n"),
            ("hephy.toml", &format!("[build.go]\n{setting}\n")),
        ])?;
        symlink("/", dir.path().join("data"))?;
        symlink("/", dir.path().join("cmd"))?;
        let err = refusal(
            &GoBackend::new(env()?),
            &ctx(dir.path())?,
            &[Platform::linux_amd64()],
            why,
        )
        .await?;
        assert!(
            err.to_string().contains("outside the repository"),
            "{setting}: {err}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn cargo_and_spin_read_their_manifests_only_from_inside() -> TestResult {
    let dir = repo(&[("src/main.rs", "fn main() {}\n")])?;
    symlink("/etc/passwd", dir.path().join("Cargo.toml"))?;
    let err = refusal(
        &CargoBackend::new(env()?),
        &ctx(dir.path())?,
        &[Platform::linux_amd64()],
        "Cargo.toml -> /etc/passwd passed the check",
    )
    .await?;
    insta::assert_snapshot!("cargo_toml_symlink", err.to_string());

    let dir = repo(&[("hephy.toml", "[build.spin]\nmanifest = \"app/spin.toml\"\n")])?;
    symlink("/etc", dir.path().join("app"))?;
    let err = refusal(
        &SpinBackend::new(env()?).without_spin(),
        &ctx(dir.path())?,
        &[Platform::linux_amd64()],
        "a manifest behind a link to /etc passed the check",
    )
    .await?;
    insta::assert_snapshot!("spin_manifest_symlink", err.to_string());

    // A component whose Wasm is /dev/zero, and one that mounts a link to /etc/passwd.
    let manifest = "spin_manifest_version = 2\n[application]\nname = \"a\"\n[[trigger.http]]\nroute = \"/...\"\ncomponent = \"c\"\n[component.c]\nsource = \"app.wasm\"\nfiles = [\"static/**/*\"]\n";
    let dir = repo(&[("spin.toml", manifest), ("static/ok.txt", "ok\n")])?;
    symlink("/dev/zero", dir.path().join("app.wasm"))?;
    let err = refusal(
        &SpinBackend::new(env()?).without_spin(),
        &ctx(dir.path())?,
        &[Platform::linux_amd64()],
        "source -> /dev/zero passed the check",
    )
    .await?;
    insta::assert_snapshot!("spin_source_dev_zero", err.to_string());
    std::fs::remove_file(dir.path().join("app.wasm"))?;
    std::fs::write(dir.path().join("app.wasm"), b"\0asm\x01\0\0\0")?;
    symlink("/etc/passwd", dir.path().join("static/passwd"))?;
    let err = refusal(
        &SpinBackend::new(env()?).without_spin(),
        &ctx(dir.path())?,
        &[Platform::linux_amd64()],
        "a mounted link to /etc/passwd passed the check",
    )
    .await?;
    insta::assert_snapshot!("spin_file_symlink", err.to_string());
    Ok(())
}

#[tokio::test]
async fn dockerfile_bases_must_be_in_the_repository() -> TestResult {
    for (dockerfile, expected) in [
        (
            "FROM containers-storage:localhost/hephy-build/another-app:linux-amd64\n",
            "reads an image already on the build server",
        ),
        (
            "FROM oci:../../elsewhere:latest\n",
            "points outside the repository",
        ),
        (
            "ARG BASE=oci:/var/lib/containers\nFROM ${BASE}\n",
            "points outside the repository",
        ),
        (
            "FROM oci:base:latest\n",
            "leads outside the repository through a symlink",
        ),
    ] {
        let dir = repo(&[("Dockerfile", dockerfile)])?;
        symlink("/var", dir.path().join("base"))?;
        let err = refusal(
            &DockerfileBackend::new(env()?),
            &ctx(dir.path())?,
            &[Platform::host()],
            "a base outside the repository passed the check",
        )
        .await?;
        assert!(err.to_string().contains(expected), "{dockerfile}: {err}");
        if dockerfile.starts_with("FROM containers-storage") {
            insta::assert_snapshot!("dockerfile_containers_storage", err.to_string());
        }
    }
    Ok(())
}

#[tokio::test]
async fn cargo_refuses_a_rust_toolchain_named_by_path() -> TestResult {
    let dir = repo(&[
        (
            "Cargo.toml",
            "[package]\nname = \"a\"\nversion = \"0.1.0\"\nedition = \"2021\"\n",
        ),
        ("src/main.rs", "fn main() {}\n"),
        (
            "rust-toolchain.toml",
            "[toolchain]\npath = \"./evil-toolchain\"\n",
        ),
    ])?;
    let err = refusal(
        &CargoBackend::new(env()?),
        &ctx(dir.path())?,
        &[Platform::linux_amd64()],
        "a toolchain in the repository passed the check",
    )
    .await?;
    insta::assert_snapshot!("cargo_toolchain_path", err.to_string());
    Ok(())
}
