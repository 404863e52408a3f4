//! [`GoBackend`]: Go apps built ko-style, without a daemon or a Dockerfile.
//!
//! The main package is compiled with `go build -trimpath -buildvcs=false` and `CGO_ENABLED=0`
//! for each platform's `GOOS`/`GOARCH` (and `GOARM`), then put on a base image (the default
//! static base unless `base` says otherwise):
//!
//! | in the image | what |
//! | --- | --- |
//! | `/app/NAME` | the binary, the entrypoint (NAME is the main package's directory name, or the module's last path element for `.`) |
//! | `/var/run/hephy/data/` | the `data` directory, when set (like ko's `kodata`); `HEPHY_DATA_PATH` points to it |
//! | `PORT` | the `[deploy] port`; the app runs as user 65532 |
//!
//! `[build.go]` keys: `main` (package to build, default `"."`), `ldflags`, `tags` (list),
//! `data` (directory, relative to the context), `toolchain` (the `go` to run: a name on the
//! server's `PATH` or an absolute path, never a file of the repository), `base` (see
//! [`BaseImage`]), `compression` (`"gzip"`, the default, or `"zstd"`, optionally `:LEVEL`).
//!
//! `go build` runs in the [`BuildEnv`]'s sandbox: the repository read-only, the output
//! directory and the app's own cache (`CACHE_ROOT/go/APP`: `GOCACHE` and the module cache)
//! writable, nothing else of the host. Its environment is `GOOS`, `GOARCH`, `GOARM`,
//! `CGO_ENABLED=0`, `GOCACHE`, `GOPATH` and `GOTOOLCHAIN=local`, the server's own Go settings
//! among [`ADMIN_SETTINGS`], and `[build] env`.

use std::path::{Path, PathBuf};

use hephy_core::{
    async_trait, Backend, BuildContext, BuildError, BuildTarget, BuiltImage, Confidence, Detection,
    Events, Platform,
};
use serde::Deserialize;

use crate::build_env::{admin_settings, built_file, BuildEnv};
use crate::exec::admin_program;
use crate::paths::{self, MANIFEST_LIMIT};
use hephy_oci::base::{BaseImage, APP_UID};
use hephy_oci::image::ImageBuilder;
use hephy_oci::layer::{Compression, Entry};
use hephy_oci::layout::OciLayout;
use hephy_oci::registry::RegistryOptions;

/// Where the `data` directory goes in the image.
pub const DATA_PATH: &str = "/var/run/hephy/data";

/// The `[build.go]` table of `hephy.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
#[non_exhaustive]
pub struct GoSettings {
    /// The main package, relative to the context (`"."` by default, `"./cmd/server"`).
    #[serde(default)]
    pub main: Option<String>,
    /// `-ldflags` for `go build`.
    #[serde(default)]
    pub ldflags: Option<String>,
    /// Build tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// A directory shipped beside the binary at [`DATA_PATH`].
    #[serde(default)]
    pub data: Option<PathBuf>,
    /// The `go` program to run: a name on the server's `PATH` (default `go`) or an absolute
    /// path outside the repository, never a program of the pushed repository.
    #[serde(default)]
    pub toolchain: Option<PathBuf>,
    /// The base image.
    #[serde(default)]
    pub base: BaseImage,
    /// Layer compression: `"gzip"` (default, level 1), `"gzip:LEVEL"`, `"zstd"`, `"zstd:LEVEL"`.
    #[serde(default)]
    pub compression: Compression,
}

/// The server's Go settings that reach builds, when set in hephy-server's environment
/// (`[build] env` overrides them).
pub const ADMIN_SETTINGS: &[&str] = &[
    "GOPROXY",
    "GOFLAGS",
    "GONOSUMDB",
    "GOSUMDB",
    "GOPRIVATE",
    "GONOPROXY",
    "GOINSECURE",
];

/// Builds Go apps (backend name `"go"`), detected by `go.mod`.
#[derive(Debug, Clone)]
pub struct GoBackend {
    env: BuildEnv,
    registry: Option<RegistryOptions>,
}

const INSTALL_HINT: &str =
    "install Go (apt-get install golang-go) or set [build.go] toolchain = \"/path/to/go\" in hephy.toml";

impl GoBackend {
    /// A Go backend running `go build` in `env`.
    pub fn new(env: BuildEnv) -> Self {
        GoBackend {
            env,
            registry: None,
        }
    }

    /// Pulls registry base images with `options` instead of [`RegistryOptions::from_env`].
    pub fn with_registry_options(mut self, options: RegistryOptions) -> Self {
        self.registry = Some(options);
        self
    }
}

/// The root of the Go installation `go` belongs to (the directory above its `bin`), and the
/// program's path inside it.
fn go_root(go: &Path) -> (PathBuf, PathBuf) {
    let real = go.canonicalize().unwrap_or_else(|_| go.to_path_buf());
    let name = real
        .file_name()
        .map(PathBuf::from)
        .unwrap_or_else(|| "go".into());
    match real.parent() {
        Some(bin) if bin.file_name().is_some_and(|n| n == "bin") => match bin.parent() {
            Some(root) => (root.to_path_buf(), Path::new("bin").join(name)),
            None => (bin.to_path_buf(), name),
        },
        Some(dir) => (dir.to_path_buf(), name),
        None => (PathBuf::from("/"), name),
    }
}

fn settings(ctx: &BuildContext) -> Result<GoSettings, BuildError> {
    ctx.config()
        .build
        .backend_settings::<GoSettings>("go")
        .map_err(|e| BuildError::InvalidContext {
            problem: e.to_string(),
        })
}

/// The module path named in `go.mod`.
pub fn module_path(go_mod: &str) -> Option<String> {
    go_mod.lines().find_map(|l| {
        let l = l.trim();
        let rest = l.strip_prefix("module")?;
        if !rest.starts_with(char::is_whitespace) {
            return None;
        }
        let m = rest.trim().trim_matches('"');
        (!m.is_empty()).then(|| m.to_owned())
    })
}

fn goarch(platform: &Platform) -> Result<(String, Option<String>), BuildError> {
    let unsupported = |hint: &str| BuildError::UnsupportedPlatform {
        backend: "go".to_owned(),
        platform: platform.clone(),
        hint: hint.to_owned(),
    };
    if platform.os() != "linux" {
        return Err(unsupported("images are Linux images; build for linux/ARCH"));
    }
    let arch = platform.architecture();
    match arch {
        "amd64" | "arm64" | "386" | "ppc64le" | "s390x" | "riscv64" | "mips64le" | "loong64" => {
            Ok((arch.to_owned(), None))
        }
        "arm" => {
            let goarm = match platform.variant() {
                Some("v5") => "5",
                Some("v6") => "6",
                _ => "7",
            };
            Ok((arch.to_owned(), Some(goarm.to_owned())))
        }
        _ => Err(unsupported(
            "Go builds Linux images for amd64, arm64, arm, 386, ppc64le, s390x, riscv64, mips64le and loong64",
        )),
    }
}

fn binary_name(module: Option<&str>, main: &str) -> String {
    let from_main = Path::new(main)
        .components()
        .filter_map(|c| match c {
            std::path::Component::Normal(s) => s.to_str(),
            _ => None,
        })
        .next_back();
    let raw = from_main
        .or_else(|| module.and_then(|m| m.rsplit('/').next()))
        .unwrap_or("app");
    let clean: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '-'
            }
        })
        .collect();
    if clean.is_empty() || clean.starts_with('.') {
        "app".to_owned()
    } else {
        clean
    }
}

fn toolchain(s: &GoSettings, ctx: &BuildContext) -> Result<PathBuf, BuildError> {
    let value = match &s.toolchain {
        Some(p) => p.to_string_lossy().into_owned(),
        None => "go".to_owned(),
    };
    admin_program(
        "[build.go] toolchain",
        &value,
        "go",
        ctx.dir(),
        INSTALL_HINT,
    )
}

/// `go.mod`, read with the limit every file hephy parses has.
fn read_go_mod(ctx: &BuildContext) -> Result<Option<String>, paths::PathError> {
    Ok(paths::read(ctx.dir(), "go.mod", MANIFEST_LIMIT)?
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned()))
}

/// The package `go build` builds: `main` as an import path, or as a directory of the
/// repository (`./cmd/server`), which must be inside it.
fn main_package(ctx: &BuildContext, main: Option<&str>) -> Result<String, BuildError> {
    let main = main.unwrap_or(".");
    let is_dir = main.starts_with('.') || main.starts_with('/') || ctx.dir().join(main).is_dir();
    if !is_dir {
        return Ok(main.to_owned());
    }
    paths::resolve(ctx.dir(), "[build.go] main", main)?;
    Ok(if main.starts_with('.') {
        main.to_owned()
    } else {
        // `cmd/server` would be read as an import path; the user means the directory.
        format!("./{main}")
    })
}

/// What a build needs, checked before it starts: every path the settings name resolved
/// inside the repository, and the `go` the server's admin installed.
struct Plan {
    settings: GoSettings,
    go: PathBuf,
    module: Option<String>,
    main: String,
    data: Option<PathBuf>,
}

fn plan(ctx: &BuildContext, platforms: &[Platform]) -> Result<Plan, BuildError> {
    let mut settings = settings(ctx)?;
    for p in platforms {
        goarch(p)?;
    }
    let module = read_go_mod(ctx)?.as_deref().and_then(module_path);
    settings.base = paths::base_image(ctx.dir(), "[build.go] base", &settings.base)?;
    let main = main_package(ctx, settings.main.as_deref())?;
    let data = match &settings.data {
        None => None,
        Some(data) => {
            let dir = paths::resolve(ctx.dir(), "[build.go] data", &data.to_string_lossy())?;
            if !dir.is_dir() {
                return Err(BuildError::InvalidContext {
                    problem: format!(
                        "[build.go] data = {:?} is not a directory of the context: create it or remove the setting",
                        data.display()
                    ),
                });
            }
            Some(dir)
        }
    };
    let go = toolchain(&settings, ctx)?;
    Ok(Plan {
        settings,
        go,
        module,
        main,
        data,
    })
}

#[async_trait]
impl Backend for GoBackend {
    fn name(&self) -> &str {
        "go"
    }

    async fn detect(&self, ctx: &BuildContext) -> Detection {
        match read_go_mod(ctx) {
            Ok(Some(text)) => match module_path(&text) {
                Some(m) => {
                    Detection::yes("go", Confidence::High, format!("found go.mod (module {m})"))
                }
                None => Detection::yes(
                    "go",
                    Confidence::Medium,
                    "found go.mod without a module line",
                ),
            },
            Ok(None) => Detection::no("go", "no go.mod at the root of the context"),
            // Still detected, so that `check` says what is wrong with it instead of another
            // backend building the repository.
            Err(e) => Detection::yes("go", Confidence::High, format!("found go.mod, but {e}")),
        }
    }

    async fn check(&self, ctx: &BuildContext, platforms: &[Platform]) -> Result<(), BuildError> {
        plan(ctx, platforms).map(|_| ())
    }

    async fn build(
        &self,
        ctx: &BuildContext,
        target: &BuildTarget,
        events: &Events,
    ) -> Result<BuiltImage, BuildError> {
        let plan = plan(ctx, std::slice::from_ref(&target.platform))?;
        let (arch, goarm) = goarch(&target.platform)?;
        let s = &plan.settings;
        let main = &plan.main;
        let name = binary_name(plan.module.as_deref(), main);
        let work = target.out_dir.join(".hephy-go");
        self.env.work_dir(&work)?;
        let cache = self.env.app_cache("go", ctx)?;

        let mut cmd = self.env.command(&plan.go);
        let (root, program) = go_root(&plan.go);
        let go = cmd.toolchain(&root, "/opt/go").join(program);
        let src = cmd.ro(ctx.dir(), "/src");
        let out = cmd.rw(&work, "/out");
        let cache_in = cmd.rw(&cache, "/cache");
        cmd.program(go)
            .cwd(src)
            .arg("build")
            .arg("-trimpath")
            .arg("-buildvcs=false")
            .arg("-o")
            .arg(out.join(&name));
        if !s.tags.is_empty() {
            cmd.arg("-tags").arg(s.tags.join(","));
        }
        if let Some(l) = &s.ldflags {
            cmd.arg("-ldflags").arg(l);
        }
        cmd.arg(main);
        // Go 1.21+ would otherwise download the toolchain a go.mod asks for, mid-build.
        cmd.env("GOTOOLCHAIN", "local")
            .envs(admin_settings(ADMIN_SETTINGS))
            .envs(ctx.config().build.env.clone())
            .env("CGO_ENABLED", "0")
            .env("GOOS", "linux")
            .env("GOARCH", &arch)
            .env("GOCACHE", cache_in.join("go-build").display().to_string())
            .env("GOPATH", cache_in.join("gopath").display().to_string())
            .network(ctx.config().build.network);
        if let Some(v) = goarm {
            cmd.env("GOARM", v);
        }
        events.log(format!(
            "go build -trimpath -o /app/{name} {main} (GOOS=linux GOARCH={arch})"
        ));
        self.env.run(cmd, events, "go build", INSTALL_HINT).await?;
        let bin = built_file(&work, &work.join(&name), "go build")?;

        let layout = OciLayout::create(&target.out_dir)
            .map_err(|e| BuildError::other("cannot create the image layout", e))?;
        let base = s.base.resolve(&target.platform, &layout, ctx.dir()).await?;
        let size = tokio::fs::metadata(&bin)
            .await
            .map_err(|e| BuildError::other(format!("go build wrote no {}", bin.display()), e))?
            .len();
        let port = ctx.config().deploy.port;
        let mut image = ImageBuilder::for_context(ctx, target.platform.clone())
            .base(base)
            .compression(s.compression)
            .entries(vec![Entry::file(format!("app/{name}"), &bin, size, true)])
            .entrypoint([format!("/app/{name}")])
            .env("PORT", port.to_string())
            .user(APP_UID.to_string())
            .expose(port);
        if let Some(dir) = &plan.data {
            image = image
                .dir(dir, DATA_PATH.trim_start_matches('/'))
                .env("HEPHY_DATA_PATH", DATA_PATH);
        }
        let written = image.write(&layout, Some("latest")).await?;
        let _ = tokio::fs::remove_dir_all(&work).await;
        events.log(format!(
            "image {} ({} bytes of binary)",
            written.digest, size
        ));
        Ok(BuiltImage::new(
            Some(target.platform.clone()),
            &target.out_dir,
            written.digest,
        ))
    }
}
