//! The `dockerfile` backend: builds a `Dockerfile` (or `Containerfile`) with a daemonless
//! builder that is installed, buildah first, BuildKit's `buildctl` when buildah is not, and
//! hands the result on as an OCI image layout.
//!
//! Settings, in `hephy.toml`:
//!
//! ```toml
//! [build.dockerfile]
//! file = "docker/Dockerfile"      # default: Dockerfile, else Containerfile
//! context = "."                   # the build context, relative to the repository
//! target = "runtime"              # a stage to stop at
//! args = { VERSION = "1.2" }      # build args
//! builder = "auto"                # or "buildah", "buildctl"
//!
//! # Settings of the archived kaniko builder are accepted, so old configurations keep working;
//! # what has no equivalent is reported as a warning.
//! [build.dockerfile.kaniko]       # or [build.kaniko]
//! dockerfile = "Dockerfile"
//! build-args = ["VERSION=1.2"]
//! ```
//!
//! Base images: `FROM scratch`, earlier stages, images buildah pulls from a registry (with its
//! usual credentials, `REGISTRY_AUTH_FILE`), or an OCI layout in the repository as
//! `FROM oci:DIR:TAG` (relative to the repository root, and inside it after following
//! symlinks). Transports that read images already on the server (`containers-storage:`,
//! `docker-daemon:`) are refused: the builder's store holds other apps' images too.
//!
//! In a sandboxed [`BuildEnv`] (a server), buildah runs in the build sandbox as root of a user
//! namespace mapped to unprivileged host ids ([`BuildUser::NamespaceRoot`]): a copy of the
//! repository as its context, a `vfs` store per app under the cache directory, `chroot`
//! isolation for `RUN` steps inside the sandbox, the environment cleared to `[build] env`, the
//! network per `[build] network`, base images pulled without the server's credentials. The
//! image it writes is checked before hephy reads it. SECURITY.md gives the reasons.
//!
//! Unconfined (`hephy build` on one's own checkout), buildah runs on the host as before: a
//! storage root of its own under the hephy cache directory (never the system's), the `overlay`
//! driver when the kernel lets it mount one there and `vfs` otherwise, and `chroot` isolation
//! inside containers or without root (`BUILDAH_ISOLATION` overrides).
//!
//! [`BuildUser::NamespaceRoot`]: crate::sandbox::BuildUser::NamespaceRoot

use std::path::PathBuf;
use std::sync::Arc;

use hephy_core::{
    async_trait, Backend, BuildContext, BuildError, BuildTarget, BuiltImage, Confidence, Detection,
    Events, Platform,
};
use tokio::sync::OnceCell;

use crate::build_env::BuildEnv;
use crate::check::host_can_run;
use crate::paths::{self, MANIFEST_LIMIT};

mod bases;
mod drivers;
pub(crate) mod parse;
mod settings;

pub use drivers::Builder;
pub(crate) use settings::resolve as resolve_settings;
pub use settings::{
    DockerfileSettings, KanikoSettings, ResolvedSettings, StringOrStrings, StringsOrTable,
};

use drivers::{layout_manifest, BuildahSetup, BUILDAH_HEREDOC_VERSION};
use parse::{mount_type, Dockerfile, StagePlatform};

/// The files the backend looks for, in order, when `file` is not set.
pub const DOCKERFILE_NAMES: &[&str] = &["Dockerfile", "Containerfile"];

/// The `dockerfile` backend.
///
/// ```
/// use hephy_backends::{dockerfile::DockerfileBackend, BuildEnv};
/// use hephy_core::Backend;
/// let b = DockerfileBackend::new(BuildEnv::unconfined(std::env::temp_dir().join("hephy-cache")));
/// assert_eq!(b.name(), "dockerfile");
/// ```
#[derive(Debug, Clone)]
pub struct DockerfileBackend {
    name: String,
    env: BuildEnv,
    binfmt_dir: PathBuf,
    builder: Option<Builder>,
    setup: Arc<OnceCell<BuildahSetup>>,
}

/// The directory hephy keeps caches in when its embedder names none: `$HEPHY_CACHE_DIR`, else
/// `$XDG_CACHE_HOME/hephy`, else `$HOME/.cache/hephy`, else `hephy-cache` in the temp directory.
pub fn default_cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("HEPHY_CACHE_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(d).join("hephy");
    }
    if let Some(h) = std::env::var_os("HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(h).join(".cache").join("hephy");
    }
    std::env::temp_dir().join("hephy-cache")
}

impl DockerfileBackend {
    /// The backend, named `dockerfile`, keeping buildah's image storage under `env`'s cache
    /// root (`<root>/buildah`).
    pub fn new(env: BuildEnv) -> Self {
        DockerfileBackend {
            name: "dockerfile".into(),
            env,
            binfmt_dir: PathBuf::from("/proc/sys/fs/binfmt_misc"),
            builder: None,
            setup: Arc::new(OnceCell::new()),
        }
    }

    /// The same backend under the name `kaniko`, so that `backend = "kaniko"` in old
    /// configurations keeps working (with a warning). It never detects apps itself.
    pub fn kaniko_alias(env: BuildEnv) -> Self {
        DockerfileBackend {
            name: "kaniko".into(),
            ..Self::new(env)
        }
    }

    /// Reads registered binfmt_misc handlers (which let the kernel run other architectures'
    /// programs through qemu) from `dir` instead of `/proc/sys/fs/binfmt_misc`.
    pub fn with_binfmt_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.binfmt_dir = dir.into();
        self
    }

    /// Uses `builder` instead of looking for one on `PATH`.
    pub fn with_builder(mut self, builder: Builder) -> Self {
        self.builder = Some(builder);
        self
    }

    /// The Dockerfile `ctx` would be built from (its real path, inside the repository).
    fn dockerfile_path(
        &self,
        ctx: &BuildContext,
        s: &ResolvedSettings,
    ) -> Result<PathBuf, BuildError> {
        match &s.file {
            Some(f) => {
                let p = paths::resolve(ctx.dir(), "[build.dockerfile] file", f)?;
                match paths::regular_file(ctx.dir(), &p, f)? {
                    Some(p) => Ok(p),
                    None => Err(BuildError::InvalidContext {
                        problem: format!(
                            "[build.dockerfile] file {f:?} does not exist in the repository: fix the path or remove the setting to use ./Dockerfile"
                        ),
                    }),
                }
            }
            None => {
                for n in DOCKERFILE_NAMES {
                    let p = ctx.dir().join(n);
                    if p.is_dir() {
                        continue;
                    }
                    if let Some(p) = paths::regular_file(ctx.dir(), &p, n)? {
                        return Ok(p);
                    }
                }
                Err(BuildError::InvalidContext {
                    problem: "no Dockerfile or Containerfile at the repository root: add one, or set [build.dockerfile] file = \"path/to/Dockerfile\"".into(),
                })
            }
        }
    }

    /// The build context directory (its real path, inside the repository).
    fn context_dir(&self, ctx: &BuildContext, s: &ResolvedSettings) -> Result<PathBuf, BuildError> {
        let key = "[build.dockerfile] context";
        match &s.context {
            None => Ok(paths::resolve(ctx.dir(), key, ".")?),
            Some(c) => {
                let p = paths::resolve(ctx.dir(), key, c)?;
                if !p.is_dir() {
                    return Err(BuildError::InvalidContext {
                        problem: format!(
                            "[build.dockerfile] context {c:?} is not a directory in the repository: fix the path or remove the setting to use the repository root"
                        ),
                    });
                }
                Ok(p)
            }
        }
    }

    /// Everything [`Backend::check`] verifies, returning the parsed Dockerfile and builder.
    async fn plan(&self, ctx: &BuildContext, platforms: &[Platform]) -> Result<Plan, BuildError> {
        let settings = self.settings(ctx)?;
        let file = self.dockerfile_path(ctx, &settings)?;
        let context = self.context_dir(ctx, &settings)?;
        let rel = paths::relative(ctx.dir(), &file).display().to_string();
        let text = paths::read_text(ctx.dir(), &file, &rel, MANIFEST_LIMIT)?.ok_or_else(|| {
            BuildError::InvalidContext {
                problem: format!("{rel} went missing while hephy read it: push again"),
            }
        })?;
        // The builder reads these itself: they too must be files of the repository.
        let file_name = file.file_name().map(|n| n.to_string_lossy().into_owned());
        let ignore_files = [
            Some(context.join(".dockerignore")),
            Some(context.join(".containerignore")),
            file_name.map(|n| file.with_file_name(format!("{n}.dockerignore"))),
        ];
        for ignore in ignore_files.into_iter().flatten() {
            let name = paths::relative(ctx.dir(), &ignore).display().to_string();
            paths::regular_file(ctx.dir(), &ignore, &name)?;
        }
        let df = Dockerfile::parse(&text).map_err(|e| BuildError::InvalidContext {
            problem: format!("{rel}:{e}"),
        })?;
        let builder = self.builder(&settings).await?;
        let needed = df.needed_stages(settings.target.as_deref()).map_err(|e| {
            BuildError::InvalidContext {
                problem: format!("{rel}: {e}"),
            }
        })?;
        bases::check(ctx, &rel, &df, &needed, &settings.args)?;
        for &i in &needed {
            let stage = &df.stages[i];
            for ins in &stage.instructions {
                if ins.keyword == "RUN" {
                    for m in ins.flag_values("mount") {
                        let kind = mount_type(m);
                        if kind == "ssh" {
                            return Err(BuildError::InvalidContext {
                                problem: format!(
                                    "{rel}:{}: `RUN --mount=type=ssh` needs an SSH agent, and hephy builds have none to forward: fetch the dependency over HTTPS (with a token in a build arg) or vendor it into the repository",
                                    ins.line
                                ),
                            });
                        }
                    }
                }
                if ins.heredoc && !builder.supports_heredocs() {
                    let version = match &builder {
                        Builder::Buildah { version, .. } => format!("{}.{}", version.0, version.1),
                        Builder::Buildctl { .. } => String::new(),
                    };
                    return Err(BuildError::InvalidContext {
                        problem: format!(
                            "{rel}:{}: {} uses a heredoc (`<<`), which buildah {version} cannot build (heredocs need buildah {}.{} or later): write the commands on the {} line joined with `&&`, or install a newer buildah or BuildKit's buildctl",
                            ins.line, ins.keyword, BUILDAH_HEREDOC_VERSION.0, BUILDAH_HEREDOC_VERSION.1, ins.keyword
                        ),
                    });
                }
            }
        }
        for platform in platforms {
            if platform.os() != "linux" {
                return Err(BuildError::UnsupportedPlatform {
                    backend: self.name.clone(),
                    platform: platform.clone(),
                    hint:
                        "Dockerfiles build Linux images: list linux platforms in [build] platforms"
                            .into(),
                });
            }
            for &i in &needed {
                let stage = &df.stages[i];
                let Some(run) = stage.instructions.iter().find(|i| i.keyword == "RUN") else {
                    continue;
                };
                let runs_on = match df.stage_platform(i) {
                    StagePlatform::Build => continue,
                    StagePlatform::Target => platform.clone(),
                    StagePlatform::Fixed(p) => p,
                };
                if !host_can_run(&runs_on, &self.binfmt_dir) {
                    let stage_name = stage
                        .name
                        .as_deref()
                        .map(|n| format!("stage {n:?}"))
                        .unwrap_or_else(|| format!("stage {}", i + 1));
                    return Err(BuildError::UnsupportedPlatform {
                        backend: self.name.clone(),
                        platform: platform.clone(),
                        hint: format!(
                            "{rel}:{}: RUN in {stage_name} runs {runs_on} programs, and this {} machine cannot run them (no qemu binfmt_misc handler for {} is registered): install qemu-user-static and register its handlers (binfmt-support), build that platform on a matching machine, or cross-compile in a stage `FROM --platform=$BUILDPLATFORM`",
                            run.line,
                            Platform::host(),
                            runs_on.architecture()
                        ),
                    });
                }
            }
        }
        Ok(Plan {
            settings,
            file,
            context,
            builder,
            dockerfile: df,
        })
    }
}

struct Plan {
    settings: ResolvedSettings,
    file: PathBuf,
    context: PathBuf,
    builder: Builder,
    dockerfile: Dockerfile,
}

#[async_trait]
impl Backend for DockerfileBackend {
    fn name(&self) -> &str {
        &self.name
    }

    async fn detect(&self, ctx: &BuildContext) -> Detection {
        if self.name != "dockerfile" {
            return Detection::no(
                &self.name,
                "an alias of the dockerfile backend; it does not detect apps",
            );
        }
        // Bad settings still detect a Dockerfile, so that `check` reports them instead of
        // another backend silently building the app.
        let settings = self.settings(ctx).unwrap_or_default();
        if let Some(f) = &settings.file {
            return match paths::resolve(ctx.dir(), "[build.dockerfile] file", f) {
                Ok(p) if p.is_file() => Detection::yes(
                    &self.name,
                    Confidence::High,
                    format!("found {f} (set in [build.dockerfile] file)"),
                ),
                _ => Detection::no(
                    &self.name,
                    format!("[build.dockerfile] file {f:?} does not exist"),
                ),
            };
        }
        for n in DOCKERFILE_NAMES {
            if ctx.dir().join(n).is_file() {
                return Detection::yes(&self.name, Confidence::High, format!("found {n}"));
            }
        }
        Detection::no(&self.name, "no Dockerfile or Containerfile")
    }

    async fn check(&self, ctx: &BuildContext, platforms: &[Platform]) -> Result<(), BuildError> {
        self.plan(ctx, platforms).await.map(|_| ())
    }

    async fn build(
        &self,
        ctx: &BuildContext,
        target: &BuildTarget,
        events: &Events,
    ) -> Result<BuiltImage, BuildError> {
        let plan = self
            .plan(ctx, std::slice::from_ref(&target.platform))
            .await?;
        for w in &plan.settings.warnings {
            events.warn(w.clone());
        }
        if plan.dockerfile.syntax.is_some() && matches!(plan.builder, Builder::Buildah { .. }) {
            events.warn("the `# syntax=` directive is ignored by buildah, which has its own Dockerfile parser");
        }
        tokio::fs::create_dir_all(&target.out_dir)
            .await
            .map_err(|e| {
                BuildError::other(format!("cannot create {}", target.out_dir.display()), e)
            })?;
        events.log(format!(
            "Building {} with {}",
            paths::relative(ctx.dir(), &plan.file).display(),
            plan.builder.name()
        ));
        match &plan.builder {
            Builder::Buildah { program, .. } => {
                self.build_buildah(ctx, &plan, program, target, events)
                    .await?
            }
            Builder::Buildctl { program } => {
                self.build_buildctl(ctx, &plan, program, target, events)
                    .await?
            }
        }
        let manifest = layout_manifest(&target.out_dir, &target.platform.slug())?;
        Ok(BuiltImage::new(
            Some(target.platform.clone()),
            &target.out_dir,
            manifest,
        ))
    }
}
