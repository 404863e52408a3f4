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
//! Compiled packages are cached in `$XDG_CACHE_HOME/hephy/go-build` (or
//! `~/.cache/hephy/go-build`) across builds; `GOPROXY`, `GOFLAGS` and the rest of the environment
//! pass through, and `[build] env` is added.

use std::path::{Path, PathBuf};

use hephy_core::{
    async_trait, Backend, BuildContext, BuildError, BuildTarget, BuiltImage, Confidence, Detection,
    Events, Platform,
};
use serde::Deserialize;

use crate::exec::{self, admin_program};
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

/// Builds Go apps (backend name `"go"`), detected by `go.mod`.
#[derive(Debug, Clone, Default)]
pub struct GoBackend {
    cache_dir: Option<PathBuf>,
    registry: Option<RegistryOptions>,
}

const INSTALL_HINT: &str =
    "install Go (apt-get install golang-go) or set [build.go] toolchain = \"/path/to/go\" in hephy.toml";

impl GoBackend {
    /// A Go backend with the default build cache.
    pub fn new() -> Self {
        GoBackend::default()
    }

    /// Uses `dir` as `GOCACHE` instead of the default.
    pub fn with_cache_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cache_dir = Some(dir.into());
        self
    }

    /// Pulls registry base images with `options` instead of [`RegistryOptions::from_env`].
    pub fn with_registry_options(mut self, options: RegistryOptions) -> Self {
        self.registry = Some(options);
        self
    }

    /// The `GOCACHE` used: the one set, else `$XDG_CACHE_HOME/hephy/go-build`, else
    /// `$HOME/.cache/hephy/go-build`, else one in the temp directory.
    pub fn cache_dir(&self) -> PathBuf {
        if let Some(d) = &self.cache_dir {
            return d.clone();
        }
        hephy_oci::base::cache_dir().join("go-build")
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
        tokio::fs::create_dir_all(&work)
            .await
            .map_err(|e| BuildError::other(format!("cannot create {}", work.display()), e))?;
        let bin = work.join(&name);
        let cache = self.cache_dir();
        tokio::fs::create_dir_all(&cache).await.map_err(|e| {
            BuildError::other(format!("cannot create GOCACHE {}", cache.display()), e)
        })?;

        let mut cmd = tokio::process::Command::new(&plan.go);
        cmd.current_dir(ctx.dir())
            .arg("build")
            .arg("-trimpath")
            .arg("-buildvcs=false")
            .arg("-o")
            .arg(&bin);
        if !s.tags.is_empty() {
            cmd.arg("-tags").arg(s.tags.join(","));
        }
        if let Some(l) = &s.ldflags {
            cmd.arg("-ldflags").arg(l);
        }
        cmd.arg(main);
        for (k, v) in &ctx.config().build.env {
            cmd.env(k, v);
        }
        cmd.env("CGO_ENABLED", "0")
            .env("GOOS", "linux")
            .env("GOARCH", &arch)
            .env("GOCACHE", &cache);
        match goarm {
            Some(v) => cmd.env("GOARM", v),
            None => cmd.env_remove("GOARM"),
        };
        if std::env::var_os("GOTOOLCHAIN").is_none()
            && !ctx.config().build.env.contains_key("GOTOOLCHAIN")
        {
            // Go 1.21+ would otherwise download the toolchain a go.mod asks for, mid-build.
            cmd.env("GOTOOLCHAIN", "local");
        }
        if std::env::var_os("HOME").is_none() && std::env::var_os("GOPATH").is_none() {
            // Go refuses to run without a GOPATH, which it derives from HOME.
            cmd.env("GOPATH", cache.with_file_name("gopath"));
        }
        events.log(format!(
            "go build -trimpath -o /app/{name} {main} (GOOS=linux GOARCH={arch})"
        ));
        exec::run_step(cmd, events, "go build", INSTALL_HINT).await?;

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
