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
//! `FROM oci:DIR:TAG` (relative to the repository root).
//!
//! buildah runs with a storage root of its own under the hephy cache directory (never the
//! system's), the `overlay` driver when the kernel lets it mount one there and `vfs` otherwise,
//! and `chroot` isolation inside containers or without root (`BUILDAH_ISOLATION` overrides).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::UNIX_EPOCH;

use hephy_core::{
    async_trait, Backend, BuildContext, BuildError, BuildTarget, BuiltImage, Confidence, Detection,
    Digest, Events, Platform,
};
use serde::Deserialize;
use tokio::sync::OnceCell;

use crate::check::{find_program, host_can_run};
use crate::exec::{self, ExecError};

/// The files the backend looks for, in order, when `file` is not set.
pub const DOCKERFILE_NAMES: &[&str] = &["Dockerfile", "Containerfile"];

/// The first buildah release that understands heredocs (`RUN <<EOF`).
const BUILDAH_HEREDOC_VERSION: (u32, u32) = (1, 33);

/// The `[build.dockerfile]` table of `hephy.toml`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
#[non_exhaustive]
pub struct DockerfileSettings {
    /// The Dockerfile, relative to the repository root.
    pub file: Option<String>,
    /// The build context directory, relative to the repository root (default: the root).
    pub context: Option<String>,
    /// The stage to build (default: the last).
    pub target: Option<String>,
    /// Build arguments (`ARG`), passed as `--build-arg NAME=VALUE`.
    #[serde(default)]
    pub args: BTreeMap<String, String>,
    /// Which builder runs the build: `auto` (buildah, else buildctl), `buildah` or `buildctl`.
    pub builder: Option<String>,
    /// The settings of the archived kaniko builder, mapped to these.
    pub kaniko: Option<KanikoSettings>,
}

/// Settings of the kaniko builder (its command-line flags without `--`), accepted so that old
/// configurations keep working. [`KanikoSettings::map`] turns them into [`DockerfileSettings`]
/// plus warnings for what has no equivalent.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
#[non_exhaustive]
pub struct KanikoSettings {
    /// `--dockerfile`: the Dockerfile path.
    pub dockerfile: Option<String>,
    /// `--context`: the build context (`dir://` prefixes are accepted).
    pub context: Option<String>,
    /// `--context-sub-path`: a sub-directory of the context.
    pub context_sub_path: Option<String>,
    /// `--build-arg`, as a list of `NAME=VALUE` or a table.
    #[serde(alias = "build-arg")]
    pub build_args: Option<StringsOrTable>,
    /// `--target`: the stage to build.
    pub target: Option<String>,
    /// `--label`, as a list of `NAME=VALUE` or a table.
    #[serde(alias = "labels")]
    pub label: Option<StringsOrTable>,
    /// `--destination`: ignored, hephy publishes the image itself.
    pub destination: Option<StringOrStrings>,
    /// `--cache`: layer caching; hephy always caches layers.
    pub cache: Option<bool>,
    /// `--cache-repo`: no equivalent (the cache is local).
    pub cache_repo: Option<String>,
    /// `--cache-dir`: no equivalent.
    pub cache_dir: Option<String>,
    /// `--cache-ttl`: no equivalent.
    pub cache_ttl: Option<String>,
    /// `--cache-copy-layers`: no equivalent.
    pub cache_copy_layers: Option<bool>,
    /// `--cache-run-layers`: no equivalent.
    pub cache_run_layers: Option<bool>,
    /// `--snapshot-mode`: no equivalent (the builder diffs layers itself).
    pub snapshot_mode: Option<String>,
    /// `--single-snapshot`: mapped to squashing the image into one layer.
    pub single_snapshot: Option<bool>,
    /// `--reproducible`: hephy builds are always reproducible (timestamps from the commit).
    pub reproducible: Option<bool>,
    /// `--use-new-run`: no equivalent.
    pub use_new_run: Option<bool>,
    /// `--custom-platform`: use `[build] platforms` instead.
    pub custom_platform: Option<String>,
    /// `--no-push`: ignored.
    pub no_push: Option<bool>,
    /// `--insecure`: a publisher setting in hephy.
    pub insecure: Option<bool>,
    /// `--insecure-pull`: no equivalent.
    pub insecure_pull: Option<bool>,
    /// `--skip-tls-verify`: a publisher setting in hephy.
    pub skip_tls_verify: Option<bool>,
    /// `--skip-tls-verify-pull`: no equivalent.
    pub skip_tls_verify_pull: Option<bool>,
    /// `--skip-unused-stages`: the builders skip unused stages already.
    pub skip_unused_stages: Option<bool>,
    /// `--cleanup`: ignored.
    pub cleanup: Option<bool>,
    /// `--compressed-caching`: no equivalent.
    pub compressed_caching: Option<bool>,
    /// `--ignore-path`: no equivalent.
    pub ignore_path: Option<StringOrStrings>,
    /// `--verbosity`: ignored; every builder line is streamed.
    pub verbosity: Option<String>,
    /// `--image-name-with-digest-file` and similar outputs: ignored.
    pub digest_file: Option<String>,
}

/// A list of `NAME=VALUE` strings or a table, as kaniko settings were written both ways.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
#[non_exhaustive]
pub enum StringsOrTable {
    /// `["NAME=VALUE"]`.
    List(Vec<String>),
    /// `{ NAME = "VALUE" }`.
    Table(BTreeMap<String, String>),
}

/// One string or several.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
#[non_exhaustive]
pub enum StringOrStrings {
    /// One.
    One(String),
    /// Several.
    Many(Vec<String>),
}

impl StringsOrTable {
    fn pairs(&self, what: &str) -> Result<Vec<(String, String)>, String> {
        match self {
            StringsOrTable::Table(t) => Ok(t.iter().map(|(k, v)| (k.clone(), v.clone())).collect()),
            StringsOrTable::List(l) => l
                .iter()
                .map(|s| match s.split_once('=') {
                    Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
                    _ => Err(format!(
                        "kaniko {what} {s:?} is not NAME=VALUE: write it like \"VERSION=1.2\", or move it to [build.dockerfile] args = {{ NAME = \"VALUE\" }}"
                    )),
                })
                .collect(),
        }
    }
}

/// Settings after kaniko keys were mapped, with the warnings the mapping gave.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct ResolvedSettings {
    /// The Dockerfile, relative to the repository root.
    pub file: Option<String>,
    /// The context directory, relative to the repository root.
    pub context: Option<String>,
    /// The stage to build.
    pub target: Option<String>,
    /// Build args.
    pub args: BTreeMap<String, String>,
    /// Labels to add.
    pub labels: BTreeMap<String, String>,
    /// Squash the result into one layer.
    pub squash: bool,
    /// `auto`, `buildah` or `buildctl`.
    pub builder: Option<String>,
    /// What the user should know: kaniko settings that were ignored or mapped approximately.
    pub warnings: Vec<String>,
}

impl KanikoSettings {
    /// Maps kaniko's settings onto `base` (explicit `[build.dockerfile]` settings win), with a
    /// warning for each setting that has no equivalent.
    pub fn map(&self, base: &mut ResolvedSettings) -> Result<(), String> {
        let w = &mut base.warnings;
        let no_equivalent = |w: &mut Vec<String>, key: &str, why: &str| {
            w.push(format!(
                "kaniko setting `{key}` has no equivalent and is ignored: {why}"
            ));
        };
        if let Some(d) = &self.dockerfile {
            if base.file.is_none() {
                base.file = Some(d.clone());
            }
        }
        if let Some(c) = &self.context {
            let c = c.strip_prefix("dir://").unwrap_or(c);
            if c.contains("://") {
                return Err(format!(
                    "kaniko context {c:?} is remote: hephy builds the pushed repository; remove `context` or set it to a directory in the repository"
                ));
            }
            if base.context.is_none() {
                base.context = Some(c.to_owned());
            }
        }
        if let Some(sub) = &self.context_sub_path {
            let joined = match &base.context {
                Some(c) => format!("{}/{sub}", c.trim_end_matches('/')),
                None => sub.clone(),
            };
            base.context = Some(joined);
        }
        if let Some(a) = &self.build_args {
            for (k, v) in a.pairs("build-args")? {
                base.args.entry(k).or_insert(v);
            }
        }
        if let Some(l) = &self.label {
            for (k, v) in l.pairs("label")? {
                base.labels.entry(k).or_insert(v);
            }
        }
        if let Some(t) = &self.target {
            if base.target.is_none() {
                base.target = Some(t.clone());
            }
        }
        if self.destination.is_some() {
            w.push("kaniko setting `destination` is ignored: hephy publishes the image itself, to the registry its publisher is configured with".into());
        }
        if self.cache == Some(false) {
            w.push("kaniko setting `cache = false` is ignored: layers are always cached in hephy's build cache, which never changes what is built".into());
        }
        for (key, set) in [
            ("cache-repo", self.cache_repo.is_some()),
            ("cache-dir", self.cache_dir.is_some()),
            ("cache-ttl", self.cache_ttl.is_some()),
            ("cache-copy-layers", self.cache_copy_layers.is_some()),
            ("cache-run-layers", self.cache_run_layers.is_some()),
            ("compressed-caching", self.compressed_caching.is_some()),
        ] {
            if set {
                no_equivalent(w, key, "the layer cache is local to the builder");
            }
        }
        if self.snapshot_mode.is_some() {
            no_equivalent(
                w,
                "snapshot-mode",
                "the builder computes layer diffs itself",
            );
        }
        if self.use_new_run.is_some() {
            no_equivalent(w, "use-new-run", "RUN is always run the builder's way");
        }
        if self.single_snapshot == Some(true) {
            base.squash = true;
            w.push(
                "kaniko setting `single-snapshot` is mapped to squashing the image into one layer"
                    .into(),
            );
        }
        if self.custom_platform.is_some() {
            w.push("kaniko setting `custom-platform` is ignored: list the platforms in [build] platforms = [\"linux/amd64\"]".into());
        }
        for (key, set) in [
            ("insecure", self.insecure.is_some()),
            ("skip-tls-verify", self.skip_tls_verify.is_some()),
        ] {
            if set {
                w.push(format!("kaniko setting `{key}` is ignored: pushing is the publisher's job; configure the registry's TLS there"));
            }
        }
        for (key, set) in [
            ("insecure-pull", self.insecure_pull.is_some()),
            ("skip-tls-verify-pull", self.skip_tls_verify_pull.is_some()),
            ("ignore-path", self.ignore_path.is_some()),
        ] {
            if set {
                no_equivalent(w, key, "the builder has no such option");
            }
        }
        // `reproducible`, `no-push`, `cleanup`, `verbosity`, `skip-unused-stages` and
        // `digest-file` are what hephy does anyway (or irrelevant to it): accepted silently.
        Ok(())
    }
}

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

    fn supports_heredocs(&self) -> bool {
        match self {
            Builder::Buildah { version, .. } => *version >= BUILDAH_HEREDOC_VERSION,
            Builder::Buildctl { .. } => true,
        }
    }
}

/// How buildah stores images and isolates `RUN`, chosen once per backend.
#[derive(Debug, Clone, PartialEq, Eq)]
struct BuildahSetup {
    root: PathBuf,
    runroot: PathBuf,
    driver: String,
    isolation: String,
}

/// The `dockerfile` backend.
///
/// ```
/// use hephy_backends::dockerfile::DockerfileBackend;
/// use hephy_core::Backend;
/// let b = DockerfileBackend::new().with_cache_dir(std::env::temp_dir().join("hephy-cache"));
/// assert_eq!(b.name(), "dockerfile");
/// ```
#[derive(Debug, Clone)]
pub struct DockerfileBackend {
    name: String,
    cache_dir: PathBuf,
    binfmt_dir: PathBuf,
    builder: Option<Builder>,
    setup: Arc<OnceCell<BuildahSetup>>,
}

impl Default for DockerfileBackend {
    fn default() -> Self {
        Self::new()
    }
}

/// The directory hephy keeps caches in: `$HEPHY_CACHE_DIR`, else `$XDG_CACHE_HOME/hephy`, else
/// `$HOME/.cache/hephy`, else `hephy-cache` in the temp directory.
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
    /// The backend, named `dockerfile`, with its cache under [`default_cache_dir`].
    pub fn new() -> Self {
        DockerfileBackend {
            name: "dockerfile".into(),
            cache_dir: default_cache_dir(),
            binfmt_dir: PathBuf::from("/proc/sys/fs/binfmt_misc"),
            builder: None,
            setup: Arc::new(OnceCell::new()),
        }
    }

    /// The same backend under the name `kaniko`, so that `backend = "kaniko"` in old
    /// configurations keeps working (with a warning). It never detects apps itself.
    pub fn kaniko_alias() -> Self {
        DockerfileBackend {
            name: "kaniko".into(),
            ..Self::new()
        }
    }

    /// Keeps buildah's image storage under `dir` (`<dir>/buildah`).
    pub fn with_cache_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cache_dir = dir.into();
        self.setup = Arc::new(OnceCell::new());
        self
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

    /// The settings for `ctx`: `[build.dockerfile]` with kaniko's settings (from
    /// `[build.dockerfile.kaniko]` or `[build.kaniko]`) mapped onto them.
    pub fn settings(&self, ctx: &BuildContext) -> Result<ResolvedSettings, BuildError> {
        let build = &ctx.config().build;
        let bad = |e: hephy_core::ConfigError| BuildError::InvalidContext {
            problem: e.to_string(),
        };
        let s: DockerfileSettings = build.backend_settings("dockerfile").map_err(bad)?;
        let mut r = ResolvedSettings {
            file: s.file,
            context: s.context,
            target: s.target,
            args: s.args,
            builder: s.builder,
            ..ResolvedSettings::default()
        };
        let mut kaniko = s.kaniko;
        if build.backend_tables().any(|t| t == "kaniko") {
            let k: KanikoSettings = build.backend_settings("kaniko").map_err(bad)?;
            if kaniko.is_some() {
                return Err(BuildError::InvalidContext {
                    problem: "both [build.kaniko] and [build.dockerfile.kaniko] are set: keep one"
                        .into(),
                });
            }
            kaniko = Some(k);
        }
        if let Some(k) = kaniko {
            k.map(&mut r)
                .map_err(|problem| BuildError::InvalidContext { problem })?;
        }
        if self.name == "kaniko" {
            r.warnings.push(
                "backend = \"kaniko\" is built by the dockerfile backend (kaniko is archived): write backend = \"dockerfile\"".into(),
            );
        }
        Ok(r)
    }

    /// The Dockerfile `ctx` would be built from, relative to the repository, if there is one.
    fn dockerfile_path(
        &self,
        ctx: &BuildContext,
        s: &ResolvedSettings,
    ) -> Result<PathBuf, BuildError> {
        match &s.file {
            Some(f) => {
                let p = safe_join(ctx.dir(), f, "[build.dockerfile] file")?;
                if !p.is_file() {
                    return Err(BuildError::InvalidContext {
                        problem: format!(
                            "[build.dockerfile] file {f:?} does not exist in the repository: fix the path or remove the setting to use ./Dockerfile"
                        ),
                    });
                }
                Ok(p)
            }
            None => DOCKERFILE_NAMES
                .iter()
                .map(|n| ctx.dir().join(n))
                .find(|p| p.is_file())
                .ok_or_else(|| BuildError::InvalidContext {
                    problem: "no Dockerfile or Containerfile at the repository root: add one, or set [build.dockerfile] file = \"path/to/Dockerfile\"".into(),
                }),
        }
    }

    fn context_dir(&self, ctx: &BuildContext, s: &ResolvedSettings) -> Result<PathBuf, BuildError> {
        match &s.context {
            None => Ok(ctx.dir().to_path_buf()),
            Some(c) => {
                let p = safe_join(ctx.dir(), c, "[build.dockerfile] context")?;
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

    /// Everything [`Backend::check`] verifies, returning the parsed Dockerfile and builder.
    async fn plan(&self, ctx: &BuildContext, platforms: &[Platform]) -> Result<Plan, BuildError> {
        let settings = self.settings(ctx)?;
        // Absolute, as buildah runs in the repository root.
        let file = self.dockerfile_path(ctx, &settings)?;
        let file = std::path::absolute(&file).unwrap_or(file);
        let context = self.context_dir(ctx, &settings)?;
        let context = std::path::absolute(&context).unwrap_or(context);
        let rel = file
            .strip_prefix(ctx.dir())
            .unwrap_or(&file)
            .display()
            .to_string();
        let text =
            tokio::fs::read_to_string(&file)
                .await
                .map_err(|e| BuildError::InvalidContext {
                    problem: format!("cannot read {rel}: {e}"),
                })?;
        let df = Dockerfile::parse(&text).map_err(|e| BuildError::InvalidContext {
            problem: format!("{rel}:{e}"),
        })?;
        let builder = self.builder(&settings).await?;
        let needed = df.needed_stages(settings.target.as_deref()).map_err(|e| {
            BuildError::InvalidContext {
                problem: format!("{rel}: {e}"),
            }
        })?;
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

    async fn buildah_setup(&self, program: &Path) -> Result<BuildahSetup, BuildError> {
        self.setup
            .get_or_try_init(|| async {
                let base = self.cache_dir.join("buildah");
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

    async fn build_buildah(
        &self,
        ctx: &BuildContext,
        plan: &Plan,
        program: &Path,
        target: &BuildTarget,
        events: &Events,
    ) -> Result<(), BuildError> {
        let setup = self.buildah_setup(program).await?;
        events.log(format!(
            "buildah: storage {} ({} driver), {} isolation",
            setup.root.display(),
            setup.driver,
            setup.isolation
        ));
        let tag = format!(
            "localhost/hephy-build/{}:{}",
            short_hash(&ctx.dir().display().to_string()),
            target.platform.slug()
        );
        let global = |cmd: &mut tokio::process::Command| {
            cmd.arg("--root")
                .arg(&setup.root)
                .arg("--runroot")
                .arg(&setup.runroot)
                .arg("--storage-driver")
                .arg(&setup.driver);
        };
        let epoch = ctx
            .source_date_epoch()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let mut cmd = tokio::process::Command::new(program);
        global(&mut cmd);
        cmd.arg("build")
            .arg("--format")
            .arg("oci")
            .arg("--platform")
            .arg(target.platform.to_string())
            .arg("--layers")
            .arg("--isolation")
            .arg(&setup.isolation)
            .arg("--timestamp")
            .arg(epoch.to_string())
            .arg("-f")
            .arg(&plan.file)
            .arg("-t")
            .arg(&tag);
        if let Some(t) = &plan.settings.target {
            cmd.arg("--target").arg(t);
        }
        for (k, v) in &plan.settings.args {
            cmd.arg("--build-arg").arg(format!("{k}={v}"));
        }
        for (k, v) in &plan.settings.labels {
            cmd.arg("--label").arg(format!("{k}={v}"));
        }
        if plan.settings.squash {
            cmd.arg("--squash");
        }
        cmd.arg(&plan.context);
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

    async fn build_buildctl(
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
        let epoch = ctx
            .source_date_epoch()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
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

struct Plan {
    settings: ResolvedSettings,
    file: PathBuf,
    context: PathBuf,
    builder: Builder,
    dockerfile: Dockerfile,
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

/// Joins a relative path from `hephy.toml` to `root`, refusing absolute paths and `..` that
/// would leave the repository.
pub(crate) fn safe_join(root: &Path, rel: &str, what: &str) -> Result<PathBuf, BuildError> {
    let p = Path::new(rel);
    let mut depth: i32 = 0;
    for c in p.components() {
        match c {
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            Component::ParentDir => {
                depth -= 1;
                if depth < 0 {
                    break;
                }
            }
            Component::RootDir | Component::Prefix(_) => depth = -1,
        }
        if depth < 0 {
            break;
        }
    }
    if depth < 0 {
        return Err(BuildError::InvalidContext {
            problem: format!(
                "{what} {rel:?} points outside the repository: give a path relative to the repository root, without leading / or ../"
            ),
        });
    }
    Ok(root.join(p))
}

async fn buildah_version(program: &Path) -> (u32, u32) {
    let out = tokio::process::Command::new(program)
        .arg("--version")
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await;
    match out {
        Ok(o) => parse_buildah_version(&String::from_utf8_lossy(&o.stdout)).unwrap_or((0, 0)),
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
    let ok = tokio::process::Command::new(program)
        .arg("--root")
        .arg(root)
        .arg("--runroot")
        .arg(runroot)
        .arg("--storage-driver")
        .arg("overlay")
        .arg("images")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .status()
        .await
        .map(|s| s.success())
        .unwrap_or(false);
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

fn mount_type(spec: &str) -> &str {
    spec.split(',')
        .find_map(|kv| kv.trim().strip_prefix("type="))
        .unwrap_or("bind")
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
            return match safe_join(ctx.dir(), f, "file") {
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
            plan.file
                .strip_prefix(ctx.dir())
                .unwrap_or(&plan.file)
                .display(),
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

/// The digest of the manifest tagged `tag` (or the only one) in the layout's `index.json`.
fn layout_manifest(dir: &Path, tag: &str) -> Result<Digest, BuildError> {
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

// ---------------------------------------------------------------------------------------------
// Dockerfile parsing, just enough to check what a builder can do before running it.

/// A parsed Dockerfile: its stages and their instructions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Dockerfile {
    /// The `# syntax=` directive, if any.
    pub syntax: Option<String>,
    /// The stages, in order.
    pub stages: Vec<DfStage>,
}

/// One `FROM` stage.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct DfStage {
    /// `AS name`.
    pub name: Option<String>,
    /// The image or stage it starts from.
    pub base: String,
    /// `--platform=` of the `FROM`.
    pub platform: Option<String>,
    /// Its instructions after `FROM`.
    pub instructions: Vec<Instruction>,
}

/// One instruction.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Instruction {
    /// 1-based line it starts on.
    pub line: usize,
    /// Upper-case keyword.
    pub keyword: String,
    /// `--name=value` flags before the arguments.
    pub flags: Vec<(String, String)>,
    /// The rest of the line.
    pub args: String,
    /// Whether it uses a heredoc.
    pub heredoc: bool,
}

impl Instruction {
    fn flag_values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.flags
            .iter()
            .filter(move |(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

pub(crate) enum StagePlatform {
    /// `--platform=$BUILDPLATFORM`: runs natively.
    Build,
    /// The platform being built.
    Target,
    /// A fixed platform.
    Fixed(Platform),
}

impl Dockerfile {
    /// Parses Dockerfile text; errors start with the line number.
    pub fn parse(text: &str) -> Result<Dockerfile, String> {
        let lines: Vec<&str> = text.lines().collect();
        let mut df = Dockerfile::default();
        let mut escape = '\\';
        let mut i = 0;
        // Parser directives: only at the very top, before any other line.
        while i < lines.len() {
            let l = lines[i].trim();
            let Some(d) = l.strip_prefix('#') else { break };
            let Some((k, v)) = d.split_once('=') else {
                break;
            };
            let k = k.trim().to_ascii_lowercase();
            match k.as_str() {
                "escape" => escape = v.trim().chars().next().unwrap_or('\\'),
                "syntax" => df.syntax = Some(v.trim().to_owned()),
                "check" => {}
                _ => break,
            }
            i += 1;
        }
        while i < lines.len() {
            let start = i + 1;
            let first = lines[i].trim_start();
            i += 1;
            if first.is_empty() || first.starts_with('#') {
                continue;
            }
            // Join continuation lines; comment lines inside a continuation are dropped.
            let mut logical = String::new();
            let mut cur = first.to_owned();
            loop {
                let trimmed = cur.trim_end();
                if let Some(body) = trimmed.strip_suffix(escape) {
                    logical.push_str(body);
                    logical.push(' ');
                    // Next non-comment line continues.
                    loop {
                        if i >= lines.len() {
                            cur = String::new();
                            break;
                        }
                        let next = lines[i];
                        i += 1;
                        if next.trim_start().starts_with('#') {
                            continue;
                        }
                        cur = next.to_owned();
                        break;
                    }
                    if i >= lines.len() && cur.is_empty() {
                        break;
                    }
                } else {
                    logical.push_str(trimmed);
                    break;
                }
            }
            let (kw, rest) = match logical.split_once(char::is_whitespace) {
                Some((k, r)) => (k, r.trim()),
                None => (logical.as_str(), ""),
            };
            let keyword = kw.to_ascii_uppercase();
            let mut args = rest;
            let mut flags = vec![];
            if matches!(keyword.as_str(), "FROM" | "RUN" | "COPY" | "ADD") {
                while let Some(f) = args.strip_prefix("--") {
                    let end = f.find(char::is_whitespace).unwrap_or(f.len());
                    let (flag, after) = f.split_at(end);
                    let (k, v) = flag.split_once('=').unwrap_or((flag, ""));
                    flags.push((k.to_ascii_lowercase(), v.to_owned()));
                    args = after.trim_start();
                }
            }
            // Heredocs: `<<EOF`, `<<-EOF`, `<<"EOF"`; their bodies are not instructions.
            let mut heredoc = false;
            if matches!(keyword.as_str(), "RUN" | "COPY" | "ADD") {
                for word in heredoc_words(args) {
                    heredoc = true;
                    let (strip_tabs, word) = match word.strip_prefix('-') {
                        Some(w) => (true, w),
                        None => (false, word.as_str()),
                    };
                    let word = word.trim_matches(|c| c == '"' || c == '\'');
                    loop {
                        if i >= lines.len() {
                            return Err(format!(
                                "{start}: heredoc <<{word} is never closed: end it with a line holding only {word}"
                            ));
                        }
                        let l = lines[i];
                        i += 1;
                        let l = if strip_tabs {
                            l.trim_start_matches('\t')
                        } else {
                            l
                        };
                        if l.trim_end() == word {
                            break;
                        }
                    }
                }
            }
            let ins = Instruction {
                line: start,
                keyword: keyword.clone(),
                flags,
                args: args.to_owned(),
                heredoc,
            };
            if keyword == "FROM" {
                let mut words = ins.args.split_whitespace();
                let base = words
                    .next()
                    .ok_or_else(|| {
                        format!("{start}: FROM needs an image: write FROM image[:tag] [AS name]")
                    })?
                    .to_owned();
                let name = match (words.next(), words.next()) {
                    (Some(a), Some(n)) if a.eq_ignore_ascii_case("as") => {
                        Some(n.to_ascii_lowercase())
                    }
                    (None, _) => None,
                    _ => {
                        return Err(format!(
                            "{start}: cannot read {:?}: write FROM image[:tag] [AS name]",
                            logical.trim()
                        ))
                    }
                };
                let platform = ins.flag_values("platform").next().map(str::to_owned);
                df.stages.push(DfStage {
                    name,
                    base,
                    platform,
                    instructions: vec![],
                });
            } else {
                match df.stages.last_mut() {
                    Some(s) => s.instructions.push(ins),
                    None if keyword == "ARG" => {}
                    None => {
                        return Err(format!(
                            "{start}: {keyword} comes before the first FROM: start the Dockerfile with FROM (only ARG may come before it)"
                        ))
                    }
                }
            }
        }
        if df.stages.is_empty() {
            return Err(
                "1: the Dockerfile has no FROM: start it with FROM image[:tag], or FROM scratch"
                    .into(),
            );
        }
        Ok(df)
    }

    fn stage_index(&self, name_or_index: &str, before: usize) -> Option<usize> {
        let n = name_or_index.to_ascii_lowercase();
        if let Some(i) = self.stages[..before]
            .iter()
            .position(|s| s.name.as_deref() == Some(n.as_str()))
        {
            return Some(i);
        }
        n.parse::<usize>().ok().filter(|i| *i < before)
    }

    /// The stages a build of `target` (default: the last stage) needs, in order.
    pub fn needed_stages(&self, target: Option<&str>) -> Result<Vec<usize>, String> {
        let last = match target {
            None => self.stages.len() - 1,
            Some(t) => self.stage_index(t, self.stages.len()).ok_or_else(|| {
                let names: Vec<String> = self
                    .stages
                    .iter()
                    .filter_map(|s| s.name.as_ref().map(|n| format!("{n:?}")))
                    .collect();
                format!(
                    "[build.dockerfile] target {t:?} is not a stage of the Dockerfile: use one of {}",
                    if names.is_empty() { "its stage numbers (it names no stages)".to_owned() } else { names.join(", ") }
                )
            })?,
        };
        let mut needed = BTreeSet::new();
        let mut todo = vec![last];
        while let Some(i) = todo.pop() {
            if !needed.insert(i) {
                continue;
            }
            let s = &self.stages[i];
            if let Some(b) = self.stage_index(&s.base, i) {
                todo.push(b);
            }
            for ins in &s.instructions {
                let from = ins.flag_values("from").map(str::to_owned).chain(
                    ins.flag_values("mount").filter_map(|m| {
                        m.split(',')
                            .find_map(|kv| kv.trim().strip_prefix("from="))
                            .map(str::to_owned)
                    }),
                );
                for f in from.collect::<Vec<_>>() {
                    if let Some(b) = self.stage_index(&f, i) {
                        todo.push(b);
                    }
                }
            }
        }
        Ok(needed.into_iter().collect())
    }

    /// Where stage `i`'s `RUN`s execute.
    pub fn stage_platform(&self, i: usize) -> StagePlatform {
        let s = &self.stages[i];
        match s.platform.as_deref() {
            Some(p) => {
                let p = p.trim_matches('"');
                if p.contains("BUILDPLATFORM") {
                    StagePlatform::Build
                } else if p.contains("TARGETPLATFORM") || p.contains('$') {
                    StagePlatform::Target
                } else {
                    match p.parse() {
                        Ok(p) => StagePlatform::Fixed(p),
                        Err(_) => StagePlatform::Target,
                    }
                }
            }
            None => match self.stage_index(&s.base, i) {
                Some(b) => self.stage_platform(b),
                None => StagePlatform::Target,
            },
        }
    }
}

fn heredoc_words(args: &str) -> Vec<String> {
    let mut out = vec![];
    let mut rest = args;
    while let Some(pos) = rest.find("<<") {
        let after = &rest[pos + 2..];
        let word: String = after
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '"' | '\''))
            .collect();
        let bare = word
            .trim_start_matches('-')
            .trim_matches(|c| c == '"' || c == '\'');
        // `<<` followed by a word that starts with a letter or `_` (not `<<<` or `<< 5`).
        if !bare.is_empty()
            && bare
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        {
            out.push(word.clone());
        }
        rest = &after[word.len()..];
    }
    out
}
