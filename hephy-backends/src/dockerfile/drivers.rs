//! The builders that run a Dockerfile build: buildah (storage of its own under the hephy
//! cache, overlay or vfs, chroot or oci isolation) and BuildKit's `buildctl`; both write the
//! image as an OCI layout.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use hephy_core::{BuildContext, BuildError, BuildTarget, Digest, Events};
use serde::Deserialize;

use super::{DockerfileBackend, Plan, ResolvedSettings};
use crate::build_env::built_tree;
use crate::check::find_program;
use crate::exec::{self, ExecError};
use crate::paths;
use crate::sandbox::{BuildUser, BUILD_USERNS_SIZE};

/// The first buildah release that understands heredocs (`RUN <<EOF`).
pub(super) const BUILDAH_HEREDOC_VERSION: (u32, u32) = (1, 33);

/// Which builder program runs a build.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Builder {
    /// buildah, with its version (major, minor).
    Buildah {
        /// The program.
        program: PathBuf,
        /// `(major, minor)`, `(0, 0)` when unknown.
        version: (u32, u32),
    },
    /// BuildKit's `buildctl`, talking to a running `buildkitd`.
    Buildctl {
        /// The program.
        program: PathBuf,
    },
}

impl Builder {
    /// The builder's name, as in `builder = "NAME"`.
    pub fn name(&self) -> &'static str {
        match self {
            Builder::Buildah { .. } => "buildah",
            Builder::Buildctl { .. } => "buildctl",
        }
    }

    pub(super) fn supports_heredocs(&self) -> bool {
        match self {
            Builder::Buildah { version, .. } => *version >= BUILDAH_HEREDOC_VERSION,
            Builder::Buildctl { .. } => true,
        }
    }
}

/// How buildah stores images and isolates `RUN`, chosen once per backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct BuildahSetup {
    root: PathBuf,
    runroot: PathBuf,
    driver: String,
    isolation: String,
}

impl DockerfileBackend {
    /// The builder to use for `s`, or why none can be.
    pub async fn builder(&self, s: &ResolvedSettings) -> Result<Builder, BuildError> {
        let want = s.builder.as_deref().unwrap_or("auto");
        if let Some(b) = &self.builder {
            if want == "auto" || want == b.name() {
                return Ok(b.clone());
            }
        }
        let buildah = || async {
            let program = find_program("buildah")?;
            let version = buildah_version(&program).await;
            Some(Builder::Buildah { program, version })
        };
        let buildctl = || find_program("buildctl").map(|program| Builder::Buildctl { program });
        let found = match want {
            "auto" => match buildah().await {
                Some(b) => Some(b),
                None => buildctl(),
            },
            "buildah" => buildah().await,
            "buildctl" => buildctl(),
            other => {
                return Err(BuildError::InvalidContext {
                    problem: format!(
                        "[build.dockerfile] builder {other:?} is not a builder: use \"auto\", \"buildah\" or \"buildctl\""
                    ),
                })
            }
        };
        found.ok_or_else(|| BuildError::ToolMissing {
            tool: if want == "auto" { "buildah".into() } else { want.into() },
            hint: "install buildah (apt-get install buildah), or BuildKit's buildctl with a running buildkitd".into(),
        })
    }

    async fn buildah_setup(&self, program: &Path) -> Result<BuildahSetup, BuildError> {
        self.setup
            .get_or_try_init(|| async {
                let base = self.env.cache_root().join("buildah");
                let root = base.join("storage");
                let runroot = base.join("run");
                for d in [&root, &runroot] {
                    std::fs::create_dir_all(d).map_err(|e| BuildError::InvalidContext {
                        problem: format!(
                            "cannot create buildah's storage directory {}: {e}; make the hephy cache directory writable (HEPHY_CACHE_DIR)",
                            d.display()
                        ),
                    })?;
                }
                let driver = match std::env::var("STORAGE_DRIVER") {
                    Ok(d) if !d.is_empty() => d,
                    _ => choose_driver(program, &root, &runroot).await,
                };
                let isolation = match std::env::var("BUILDAH_ISOLATION") {
                    Ok(i) if !i.is_empty() => i,
                    _ => choose_isolation(),
                };
                Ok(BuildahSetup {
                    root,
                    runroot,
                    driver,
                    isolation,
                })
            })
            .await
            .cloned()
    }

    pub(super) async fn build_buildah(
        &self,
        ctx: &BuildContext,
        plan: &Plan,
        program: &Path,
        target: &BuildTarget,
        events: &Events,
    ) -> Result<(), BuildError> {
        if self.env.sandbox().is_some() {
            return self
                .build_buildah_sandboxed(ctx, plan, program, target, events)
                .await;
        }
        let setup = self.buildah_setup(program).await?;
        events.log(format!(
            "buildah: storage {} ({} driver), {} isolation",
            setup.root.display(),
            setup.driver,
            setup.isolation
        ));
        let tag = build_tag(ctx, target);
        let global = |cmd: &mut tokio::process::Command| {
            cmd.arg("--root")
                .arg(&setup.root)
                .arg("--runroot")
                .arg(&setup.runroot)
                .arg("--storage-driver")
                .arg(&setup.driver);
        };
        let mut cmd = tokio::process::Command::new(program);
        global(&mut cmd);
        cmd.args(buildah_build_args(
            ctx,
            plan,
            target,
            &setup.isolation,
            (&plan.file, &plan.context),
            &tag,
        ));
        // `FROM oci:base:tag` (an OCI layout in the repository) resolves from the root.
        cmd.current_dir(ctx.dir());
        cmd.env("BUILDAH_ISOLATION", &setup.isolation);
        apply_env(&mut cmd, ctx);
        exec::run(cmd, events, exec::TAIL_LINES)
            .await
            .map_err(|e| run_failed("buildah build", e, "the Dockerfile build failed"))?;

        let mut push = tokio::process::Command::new(program);
        global(&mut push);
        push.arg("push")
            .arg("--format")
            .arg("oci")
            .arg(&tag)
            .arg(format!(
                "oci:{}:{}",
                target.out_dir.display(),
                target.platform.slug()
            ));
        exec::run(push, events, exec::TAIL_LINES)
            .await
            .map_err(|e| run_failed("buildah push", e, "writing the built image failed"))?;

        // The image now lives in the layout; drop the tag so the store does not collect one
        // image per build directory. Cached layers stay, for the next build.
        let mut rmi = tokio::process::Command::new(program);
        global(&mut rmi);
        rmi.arg("rmi").arg(&tag);
        if let Err(e) = exec::run(rmi, &Events::discard(), 5).await {
            events.warn(format!("could not untag {tag} in buildah's store: {e}"));
        }
        Ok(())
    }

    /// buildah in the build sandbox, as root of a user namespace of its own (see
    /// [`BuildUser::NamespaceRoot`]): a per-app `vfs` store, `RUN` steps with chroot isolation
    /// inside the sandbox, a copy of the repository as the context, and the image written into
    /// the sandbox's work directory, checked, then moved to `target.out_dir`.
    async fn build_buildah_sandboxed(
        &self,
        ctx: &BuildContext,
        plan: &Plan,
        program: &Path,
        target: &BuildTarget,
        events: &Events,
    ) -> Result<(), BuildError> {
        let user = BuildUser::NamespaceRoot;
        let store = self.env.app_cache_as("buildah-vfs", ctx, user)?;
        let work = target.out_dir.join(".hephy-dockerfile");
        self.env.work_dir_as(&work, user)?;
        let _cleanup = RemoveOnDrop(work.clone());
        self.env
            .copy_tree_as(ctx.dir(), &work.join("context"), user)?;
        for d in ["image", "tmp"] {
            self.env.work_dir_as(&work.join(d), user)?;
        }
        if let Some(sandbox) = self.env.sandbox() {
            let base = sandbox.policy().host_uid(user);
            events.log(format!(
                "buildah: storage {} (vfs driver), chroot isolation, in the build sandbox as root of a user namespace (host uids {base} to {})",
                store.display(),
                u64::from(base) + u64::from(BUILDAH_IDS_LAST),
            ));
        }
        let in_context = |p: &Path| Path::new("/work/context").join(paths::relative(ctx.dir(), p));
        let tag = build_tag(ctx, target);
        let command = |network: bool| {
            let mut cmd = self.env.command(program);
            let buildah = if program.starts_with("/usr") {
                program.to_path_buf()
            } else {
                cmd.ro(program, "/opt/buildah/buildah")
            };
            cmd.rw(&work, "/work");
            cmd.rw(&store, "/store");
            // buildah writes layers to /var/tmp whatever TMPDIR says.
            cmd.rw(&work.join("tmp"), "/var/tmp");
            // registries.conf and policy.json, which buildah needs to pull any base.
            if Path::new("/etc/containers").is_dir() {
                cmd.ro(Path::new("/etc/containers"), "/etc/containers");
            }
            cmd.user(user)
                .program(buildah)
                .cwd("/work/context")
                .args(["--root", "/store/storage", "--runroot", "/store/run"])
                .args(["--storage-driver", "vfs"])
                .env("TMPDIR", "/var/tmp")
                .env("BUILDAH_ISOLATION", "chroot")
                .network(network);
            cmd
        };

        let mut build = command(ctx.config().build.network);
        build.args(buildah_build_args(
            ctx,
            plan,
            target,
            "chroot",
            (&in_context(&plan.file), &in_context(&plan.context)),
            &tag,
        ));
        build.envs(ctx.config().build.env.clone());
        self.env
            .exec(build, events, exec::TAIL_LINES)
            .await
            .map_err(|e| run_failed("buildah build", e, "the Dockerfile build failed"))?;

        let slug = target.platform.slug();
        let mut push = command(false);
        push.arg("push")
            .arg("--format")
            .arg("oci")
            .arg(&tag)
            .arg(format!("oci:/work/image:{slug}"));
        self.env
            .exec(push, events, exec::TAIL_LINES)
            .await
            .map_err(|e| run_failed("buildah push", e, "writing the built image failed"))?;

        // The image now lives in the layout; drop the tag so the store does not collect one
        // image per build directory. Cached layers stay, for the next build of this app.
        let mut rmi = command(false);
        rmi.arg("rmi").arg(&tag);
        if let Err(e) = self.env.exec(rmi, &Events::discard(), 5).await {
            events.warn(format!("could not untag {tag} in buildah's store: {e}"));
        }

        // Written by the build's user: only files and directories are taken, then moved
        // into place.
        let image = work.join("image");
        built_tree(&image, "buildah push")?;
        for entry in std::fs::read_dir(&image)
            .map_err(|e| BuildError::other("buildah push wrote no image layout", e))?
        {
            let entry =
                entry.map_err(|e| BuildError::other("buildah push wrote no image layout", e))?;
            let to = target.out_dir.join(entry.file_name());
            std::fs::rename(entry.path(), &to).map_err(|e| {
                BuildError::other(
                    format!("cannot move the built image to {}", to.display()),
                    e,
                )
            })?;
        }
        Ok(())
    }

    pub(super) async fn build_buildctl(
        &self,
        ctx: &BuildContext,
        plan: &Plan,
        program: &Path,
        target: &BuildTarget,
        events: &Events,
    ) -> Result<(), BuildError> {
        let file_dir = plan.file.parent().unwrap_or(ctx.dir());
        let file_name = plan
            .file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "Dockerfile".into());
        let mut cmd = tokio::process::Command::new(program);
        cmd.arg("build")
            .arg("--progress")
            .arg("plain")
            .arg("--frontend")
            .arg("dockerfile.v0")
            .arg("--local")
            .arg(format!("context={}", plan.context.display()))
            .arg("--local")
            .arg(format!("dockerfile={}", file_dir.display()))
            .arg("--opt")
            .arg(format!("filename={file_name}"))
            .arg("--opt")
            .arg(format!("platform={}", target.platform));
        if let Some(t) = &plan.settings.target {
            cmd.arg("--opt").arg(format!("target={t}"));
        }
        for (k, v) in &plan.settings.args {
            cmd.arg("--opt").arg(format!("build-arg:{k}={v}"));
        }
        for (k, v) in &plan.settings.labels {
            cmd.arg("--opt").arg(format!("label:{k}={v}"));
        }
        if plan.settings.squash {
            events.warn("squashing (kaniko single-snapshot) is not supported by buildctl; the image keeps its layers");
        }
        let epoch = source_epoch(ctx);
        cmd.arg("--opt")
            .arg(format!("build-arg:SOURCE_DATE_EPOCH={epoch}"));
        cmd.arg("--output").arg(format!(
            "type=oci,dest={},tar=false,name={}",
            target.out_dir.display(),
            target.platform.slug()
        ));
        apply_env(&mut cmd, ctx);
        exec::run(cmd, events, exec::TAIL_LINES)
            .await
            .map_err(|e| {
                run_failed(
                    "buildctl build",
                    e,
                    "the Dockerfile build failed; is buildkitd running (BUILDKIT_HOST)?",
                )
            })?;
        Ok(())
    }
}

/// The last id of a build's user namespace, counted from its first.
const BUILDAH_IDS_LAST: u32 = BUILD_USERNS_SIZE - 1;

/// Removes a build's work directory (the context copy, buildah's temp files) when the build
/// ends, however it ends.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn apply_env(cmd: &mut tokio::process::Command, ctx: &BuildContext) {
    for (k, v) in &ctx.config().build.env {
        cmd.env(k, v);
    }
}

fn run_failed(what: &str, e: ExecError, hint: &str) -> BuildError {
    match e {
        ExecError::Failed { status, tail, .. } => BuildError::Failed {
            message: format!(
                "{what} failed ({status}): {hint}; its last lines:\n{}",
                tail.join("\n")
            ),
        },
        other => other
            .into_build_error("install buildah (apt-get install buildah), or BuildKit's buildctl"),
    }
}

fn short_hash(s: &str) -> String {
    use sha2::{Digest as _, Sha256};
    let h = Sha256::digest(s.as_bytes());
    hex::encode(&h[..6])
}

async fn buildah_version(program: &Path) -> (u32, u32) {
    let mut cmd = tokio::process::Command::new(program);
    cmd.arg("--version");
    match exec::query(cmd).await {
        Ok(out) => parse_buildah_version(&out).unwrap_or((0, 0)),
        Err(_) => (0, 0),
    }
}

/// Parses `buildah version 1.28.2 (image-spec ...)` into `(1, 28)`.
pub(crate) fn parse_buildah_version(s: &str) -> Option<(u32, u32)> {
    let v = s.split_whitespace().nth(2)?;
    let mut it = v.split('.');
    let major = it.next()?.parse().ok()?;
    let minor = it
        .next()?
        .trim_end_matches(|c: char| !c.is_ascii_digit())
        .parse()
        .ok()?;
    Some((major, minor))
}

/// overlay when the kernel mounts one in our storage (buildah checks that when it opens the
/// store), else vfs, which works everywhere but copies every layer.
async fn choose_driver(program: &Path, root: &Path, runroot: &Path) -> String {
    // A store keeps its driver; reuse what is there.
    for d in ["overlay", "vfs"] {
        if root.join(format!("{d}-images")).is_dir() {
            return d.into();
        }
    }
    let mut probe = tokio::process::Command::new(program);
    probe
        .arg("--root")
        .arg(root)
        .arg("--runroot")
        .arg(runroot)
        .arg("--storage-driver")
        .arg("overlay")
        .arg("images");
    let ok = exec::query(probe).await.is_ok();
    if ok {
        "overlay".into()
    } else {
        // A failed overlay probe may leave an empty overlay directory behind.
        let _ = std::fs::remove_dir_all(root.join("overlay"));
        "vfs".into()
    }
}

/// `chroot` inside containers and without root, where buildah's default (an OCI runtime with
/// its own namespaces and mounts) usually fails; `oci` otherwise.
fn choose_isolation() -> String {
    let in_container = Path::new("/.dockerenv").exists()
        || Path::new("/run/.containerenv").exists()
        || std::env::var_os("container").is_some();
    let root = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false);
    let runtime = find_program("runc").is_some() || find_program("crun").is_some();
    if in_container || !root || !runtime {
        "chroot".into()
    } else {
        "oci".into()
    }
}

/// The digest of the manifest tagged `tag` (or the only one) in the layout's `index.json`.
pub(super) fn layout_manifest(dir: &Path, tag: &str) -> Result<Digest, BuildError> {
    #[derive(Deserialize)]
    struct Index {
        manifests: Vec<Desc>,
    }
    #[derive(Deserialize)]
    struct Desc {
        digest: String,
        #[serde(default)]
        annotations: BTreeMap<String, String>,
    }
    let path = dir.join("index.json");
    let text = std::fs::read(&path).map_err(|e| {
        BuildError::other(
            format!("the builder wrote no OCI layout at {}", dir.display()),
            e,
        )
    })?;
    let index: Index = serde_json::from_slice(&text)
        .map_err(|e| BuildError::other(format!("{} is not an OCI index", path.display()), e))?;
    let pick = index
        .manifests
        .iter()
        .find(|m| {
            m.annotations
                .get("org.opencontainers.image.ref.name")
                .map(String::as_str)
                == Some(tag)
        })
        .or_else(|| index.manifests.last())
        .ok_or_else(|| BuildError::Failed {
            message: format!("the builder wrote an empty OCI layout at {}", dir.display()),
        })?;
    pick.digest
        .parse()
        .map_err(|e| BuildError::other(format!("bad digest in {}", path.display()), e))
}

/// The commit time builds stamp into images, in seconds since the epoch.
fn source_epoch(ctx: &BuildContext) -> u64 {
    ctx.source_date_epoch()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The tag a build of `ctx` for `target` gets in buildah's store, until it is pushed out.
fn build_tag(ctx: &BuildContext, target: &BuildTarget) -> String {
    format!(
        "localhost/hephy-build/{}:{}",
        short_hash(&ctx.dir().display().to_string()),
        target.platform.slug()
    )
}

/// `buildah build` and its arguments for `plan` on `target`, wherever buildah runs: the
/// Dockerfile and the context as buildah sees them (`file`, `context`).
fn buildah_build_args(
    ctx: &BuildContext,
    plan: &Plan,
    target: &BuildTarget,
    isolation: &str,
    (file, context): (&Path, &Path),
    tag: &str,
) -> Vec<std::ffi::OsString> {
    let mut a: Vec<std::ffi::OsString> = [
        "build",
        "--format",
        "oci",
        "--platform",
        &target.platform.to_string(),
        "--layers",
        "--isolation",
        isolation,
        "--timestamp",
        &source_epoch(ctx).to_string(),
    ]
    .into_iter()
    .map(Into::into)
    .collect();
    a.extend(["-f".into(), file.into(), "-t".into(), tag.into()]);
    if let Some(t) = &plan.settings.target {
        a.extend(["--target".into(), t.into()]);
    }
    for (k, v) in &plan.settings.args {
        a.extend(["--build-arg".into(), format!("{k}={v}").into()]);
    }
    for (k, v) in &plan.settings.labels {
        a.extend(["--label".into(), format!("{k}={v}").into()]);
    }
    if plan.settings.squash {
        a.push("--squash".into());
    }
    a.push(context.into());
    a
}
