//! The `cargo` backend: a Rust binary built with `cargo build --release` for each platform
//! whose Rust target is installed, put on the same default base as Go apps.
//!
//! | in the image | what |
//! | --- | --- |
//! | `/app/NAME` | the binary, the entrypoint |
//! | `PORT` | the `[deploy] port`; the app runs as user 65532 |
//!
//! Static where possible: the musl target (`x86_64-unknown-linux-musl`) when it is installed;
//! else the glibc target with `-C target-feature=+crt-static`, which links glibc statically
//! (glibc 2.34 and later resolve names without loading NSS modules, so DNS works from an empty
//! base). The result is checked: a binary that still needs a dynamic loader is refused, since
//! the default base has no libc to give it.
//!
//! The binary is found in the root package or in a workspace member (`members` globs are
//! expanded); with several, `[build.cargo]` chooses.
//!
//! `[build.cargo]` keys: `bin` (which binary, when there are several), `package` (the workspace
//! member), `features` (list), `no-default-features`, `libc` (`"auto"`, `"musl"` or
//! `"gnu"`), `base` (see [`BaseImage`]). `--locked` is passed when `Cargo.lock` exists.
//!
//! The toolchain is the server's: the sysroot its `rustc` prints (run in the repository, so a
//! `rust-toolchain.toml` naming an installed channel chooses it; rustup installs nothing a push
//! asks for, and a toolchain named by `path` is refused, as rustup would run that directory's
//! programs). `cargo build` runs in the [`BuildEnv`]'s sandbox with that sysroot read-only, a
//! copy of the repository it may write (cargo writes `Cargo.lock`; nothing above the copy is
//! visible, so cargo finds no workspace of the host's), and the app's own cache
//! (`CACHE_ROOT/cargo/APP`: `CARGO_HOME` with the registry, and the target directory, so
//! rebuilds are incremental). Build scripts and proc macros run there too, confined.

use std::path::{Path, PathBuf};

use hephy_core::{
    async_trait, Backend, BuildContext, BuildError, BuildTarget, BuiltImage, Confidence, Detection,
    Events, Platform,
};
use serde::Deserialize;

use crate::build_env::{built_file, BuildEnv};
use crate::exec::{self, find_program};
use crate::paths::{self, MANIFEST_LIMIT};
use hephy_oci::base::{BaseImage, APP_UID};
use hephy_oci::image::ImageBuilder;
use hephy_oci::layer::Entry;
use hephy_oci::layout::OciLayout;

/// The `[build.cargo]` table of `hephy.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
#[non_exhaustive]
pub struct CargoSettings {
    /// The binary to build, when the package has several.
    pub bin: Option<String>,
    /// The package to build, in a workspace.
    pub package: Option<String>,
    /// Features to enable.
    #[serde(default)]
    pub features: Vec<String>,
    /// Build without the default features.
    #[serde(default)]
    pub no_default_features: bool,
    /// `auto` (musl when installed, else static glibc), `musl` or `gnu`.
    pub libc: Option<String>,
    /// The base image.
    #[serde(default)]
    pub base: BaseImage,
}

/// The `cargo` backend.
///
/// ```
/// use hephy_backends::{cargo::CargoBackend, BuildEnv};
/// use hephy_core::Backend;
/// let env = BuildEnv::unconfined(std::env::temp_dir().join("hephy-cache"));
/// assert_eq!(CargoBackend::new(env).name(), "cargo");
/// ```
#[derive(Debug, Clone)]
pub struct CargoBackend {
    env: BuildEnv,
}

/// The Rust target triples for a platform: the musl one (static) and the glibc one.
pub fn rust_targets(platform: &Platform) -> Option<(&'static str, &'static str)> {
    if platform.os() != "linux" {
        return None;
    }
    Some(match (platform.architecture(), platform.variant()) {
        ("amd64", _) => ("x86_64-unknown-linux-musl", "x86_64-unknown-linux-gnu"),
        ("arm64", _) => ("aarch64-unknown-linux-musl", "aarch64-unknown-linux-gnu"),
        ("arm", Some("v6")) => (
            "arm-unknown-linux-musleabihf",
            "arm-unknown-linux-gnueabihf",
        ),
        ("arm", _) => (
            "armv7-unknown-linux-musleabihf",
            "armv7-unknown-linux-gnueabihf",
        ),
        ("386", _) => ("i686-unknown-linux-musl", "i686-unknown-linux-gnu"),
        ("riscv64", _) => (
            "riscv64gc-unknown-linux-musl",
            "riscv64gc-unknown-linux-gnu",
        ),
        ("ppc64le", _) => (
            "powerpc64le-unknown-linux-musl",
            "powerpc64le-unknown-linux-gnu",
        ),
        ("s390x", _) => ("s390x-unknown-linux-musl", "s390x-unknown-linux-gnu"),
        ("loong64", _) => (
            "loongarch64-unknown-linux-musl",
            "loongarch64-unknown-linux-gnu",
        ),
        _ => return None,
    })
}

/// The binary targets of a manifest: `[[bin]]` names, else the package name for
/// `src/main.rs`, plus `src/bin/*.rs`.
pub fn binaries(manifest: &toml::Table, dir: &Path) -> Vec<String> {
    let package = manifest.get("package").and_then(|p| p.as_table());
    let pkg_name = package
        .and_then(|p| p.get("name"))
        .and_then(|n| n.as_str())
        .map(str::to_owned);
    let mut out: Vec<String> = manifest
        .get("bin")
        .and_then(|b| b.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|b| b.get("name").and_then(|n| n.as_str()).map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let autobins = package
        .and_then(|p| p.get("autobins"))
        .and_then(|a| a.as_bool())
        .unwrap_or(true);
    if package.is_some() && autobins {
        if dir.join("src/main.rs").is_file() {
            if let Some(n) = &pkg_name {
                if !out.contains(n) {
                    out.push(n.clone());
                }
            }
        }
        if let Ok(rd) = std::fs::read_dir(dir.join("src/bin")) {
            let mut extra: Vec<String> = rd
                .flatten()
                .filter_map(|e| {
                    let p = e.path();
                    if p.extension().is_some_and(|x| x == "rs") {
                        p.file_stem().map(|s| s.to_string_lossy().into_owned())
                    } else if p.join("main.rs").is_file() {
                        p.file_name().map(|s| s.to_string_lossy().into_owned())
                    } else {
                        None
                    }
                })
                .collect();
            extra.sort();
            for e in extra {
                if !out.contains(&e) {
                    out.push(e);
                }
            }
        }
    }
    out
}

fn bad(problem: impl Into<String>) -> BuildError {
    BuildError::InvalidContext {
        problem: problem.into(),
    }
}

fn settings(ctx: &BuildContext) -> Result<CargoSettings, BuildError> {
    ctx.config()
        .build
        .backend_settings::<CargoSettings>("cargo")
        .map_err(|e| bad(e.to_string()))
}

fn read_manifest(ctx: &BuildContext) -> Result<toml::Table, BuildError> {
    let bytes = paths::read(ctx.dir(), "Cargo.toml", MANIFEST_LIMIT)?.ok_or_else(|| {
        bad("there is no Cargo.toml at the repository root: add one, or choose another backend with backend = \"NAME\"")
    })?;
    let text = String::from_utf8_lossy(&bytes);
    toml::from_str(&text).map_err(|e| bad(format!("Cargo.toml: {}", e.message().trim_end())))
}

/// A binary target: its package (`None` for the root package) and name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BinTarget {
    /// The workspace member it belongs to, or `None` for the root package.
    pub package: Option<String>,
    /// The binary's name.
    pub bin: String,
}

impl std::fmt::Display for BinTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.package {
            Some(p) => write!(f, "{} (package {p})", self.bin),
            None => f.write_str(&self.bin),
        }
    }
}

/// The binaries of the root package and of the workspace members (`members` globs such as
/// `"crates/*"` are expanded).
pub fn bin_targets(manifest: &toml::Table, dir: &Path) -> Vec<BinTarget> {
    let mut out: Vec<BinTarget> = binaries(manifest, dir)
        .into_iter()
        .map(|bin| BinTarget { package: None, bin })
        .collect();
    let members = manifest
        .get("workspace")
        .and_then(|w| w.get("members"))
        .and_then(|m| m.as_array())
        .cloned()
        .unwrap_or_default();
    // Members that lead outside the repository (`../other`, a link to `/`) are not read.
    let mut dirs = vec![];
    for m in members.iter().filter_map(|m| m.as_str()) {
        let key = "a [workspace] member of Cargo.toml";
        // A pattern is checked as written (and up to its first wildcard, after links),
        // then each directory it matches.
        let Ok(d) = paths::resolve(dir, key, m) else {
            continue;
        };
        if glob::Pattern::escape(m) == m {
            dirs.push(d);
        } else if let Ok(found) = glob::glob(&dir.join(m).to_string_lossy()) {
            dirs.extend(
                found
                    .flatten()
                    .filter_map(|p| paths::inside(dir, &p, key).ok()),
            );
        }
    }
    dirs.sort();
    let root = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    for d in dirs {
        if d == root || d == dir {
            continue;
        }
        let Ok(Some(bytes)) =
            paths::read_path(dir, &d.join("Cargo.toml"), "Cargo.toml", MANIFEST_LIMIT)
        else {
            continue;
        };
        let Ok(member) = toml::from_str::<toml::Table>(&String::from_utf8_lossy(&bytes)) else {
            continue;
        };
        let Some(name) = member
            .get("package")
            .and_then(|p| p.get("name"))
            .and_then(|n| n.as_str())
        else {
            continue;
        };
        for bin in binaries(&member, &d) {
            out.push(BinTarget {
                package: Some(name.to_owned()),
                bin,
            });
        }
    }
    out
}

/// Which binary to build: as `[build.cargo] package` and `bin` say, else the only one, else
/// the root package's `default-run`.
fn choose_bin(
    manifest: &toml::Table,
    dir: &Path,
    s: &CargoSettings,
) -> Result<BinTarget, BuildError> {
    let all = bin_targets(manifest, dir);
    let root_package = manifest
        .get("package")
        .and_then(|p| p.get("name"))
        .and_then(|n| n.as_str());
    let mut candidates: Vec<&BinTarget> = all
        .iter()
        .filter(|t| match &s.package {
            Some(p) => t.package.as_deref().or(root_package) == Some(p.as_str()),
            None => true,
        })
        .filter(|t| s.bin.as_ref().is_none_or(|b| *b == t.bin))
        .collect();
    let list = |ts: &[BinTarget]| {
        ts.iter()
            .map(|t| t.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    if candidates.len() > 1 && s.bin.is_none() {
        // The root package's default-run settles it.
        if let Some(d) = manifest
            .get("package")
            .and_then(|p| p.get("default-run"))
            .and_then(|d| d.as_str())
        {
            candidates.retain(|t| t.package.is_none() && t.bin == d);
        }
    }
    match candidates.as_slice() {
        [one] => Ok((*one).clone()),
        [] if all.is_empty() => Err(bad(
            "Cargo.toml has no binary target (no [[bin]], no src/main.rs, no workspace member with one): add one, or set [build.cargo] package and bin",
        )),
        [] => Err(bad(format!(
            "no binary matches [build.cargo]{}{}: the binaries are {}",
            s.package.as_ref().map(|p| format!(" package = {p:?}")).unwrap_or_default(),
            s.bin.as_ref().map(|b| format!(" bin = {b:?}")).unwrap_or_default(),
            list(&all)
        ))),
        _ => Err(bad(format!(
            "there are several binaries ({}): choose one with [build.cargo] bin = \"NAME\" (and package = \"NAME\" in a workspace)",
            list(&all)
        ))),
    }
}

/// The rustc sysroot, whose `lib/rustlib/<triple>` directories are the installed targets:
/// asked of the server's `rustc` (`RUSTC`, else the one on `PATH`) in the repository, so that
/// rustup honours a `rust-toolchain.toml` channel, without letting it install one.
pub(crate) async fn sysroot(ctx: &BuildContext) -> Result<PathBuf, BuildError> {
    let rustc = std::env::var_os("RUSTC")
        .map(PathBuf::from)
        .or_else(|| find_program("rustc"))
        .ok_or_else(|| BuildError::ToolMissing {
            tool: "rustc".into(),
            hint: INSTALL_HINT.into(),
        })?;
    let mut cmd = tokio::process::Command::new(&rustc);
    cmd.arg("--print")
        .arg("sysroot")
        .current_dir(ctx.dir())
        // A push must not make rustup download toolchains or components on the server.
        .env("RUSTUP_AUTO_INSTALL", "0");
    let out = exec::query(cmd).await.map_err(|e| match e {
        exec::ExecError::Failed { tail, .. } => BuildError::Failed {
            message: format!(
                "rustc --print sysroot failed: {}; if rust-toolchain.toml names a channel, install it where hephy builds (rustup toolchain install CHANNEL) or remove the file",
                tail.join("\n")
            ),
        },
        other => other.into_build_error(INSTALL_HINT),
    })?;
    Ok(PathBuf::from(out.trim()))
}

const INSTALL_HINT: &str = "install Rust (https://rustup.rs) where hephy builds";

fn installed(sysroot: &Path, triple: &str) -> bool {
    sysroot
        .join("lib")
        .join("rustlib")
        .join(triple)
        .join("lib")
        .is_dir()
}

/// What a platform builds with.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Choice {
    triple: &'static str,
    /// Link glibc statically (`+crt-static`).
    crt_static: bool,
}

fn choose_target(platform: &Platform, sysroot: &Path, libc: &str) -> Result<Choice, BuildError> {
    let unsupported = |hint: String| BuildError::UnsupportedPlatform {
        backend: "cargo".into(),
        platform: platform.clone(),
        hint,
    };
    let (musl, gnu) = rust_targets(platform).ok_or_else(|| {
        unsupported("Rust apps are built for Linux on amd64, arm64, arm, 386, riscv64, ppc64le, s390x or loong64: list those in [build] platforms".into())
    })?;
    let has_musl = installed(sysroot, musl);
    let has_gnu = installed(sysroot, gnu);
    match libc {
        "musl" if has_musl => Ok(Choice { triple: musl, crt_static: false }),
        "gnu" if has_gnu => Ok(Choice { triple: gnu, crt_static: true }),
        "auto" if has_musl => Ok(Choice { triple: musl, crt_static: false }),
        "auto" if has_gnu => Ok(Choice { triple: gnu, crt_static: true }),
        "musl" => Err(unsupported(format!(
            "the Rust target {musl} is not installed: run `rustup target add {musl}` where hephy builds"
        ))),
        "gnu" => Err(unsupported(format!(
            "the Rust target {gnu} is not installed: run `rustup target add {gnu}` where hephy builds"
        ))),
        _ => Err(unsupported(format!(
            "no Rust target for it is installed: run `rustup target add {musl}` (static, preferred) or `rustup target add {gnu}` where hephy builds"
        ))),
    }
}

/// Whether an ELF file asks for a dynamic loader (has a `PT_INTERP` program header).
pub fn elf_is_dynamic(bytes: &[u8]) -> Option<bool> {
    if bytes.len() < 0x34 || &bytes[..4] != b"\x7fELF" {
        return None;
    }
    let le = bytes[5] == 1;
    let u16_at = |o: usize| -> Option<u64> {
        let b: [u8; 2] = bytes.get(o..o + 2)?.try_into().ok()?;
        Some(if le {
            u16::from_le_bytes(b)
        } else {
            u16::from_be_bytes(b)
        } as u64)
    };
    let u32_at = |o: usize| -> Option<u64> {
        let b: [u8; 4] = bytes.get(o..o + 4)?.try_into().ok()?;
        Some(if le {
            u32::from_le_bytes(b)
        } else {
            u32::from_be_bytes(b)
        } as u64)
    };
    let u64_at = |o: usize| -> Option<u64> {
        let b: [u8; 8] = bytes.get(o..o + 8)?.try_into().ok()?;
        Some(if le {
            u64::from_le_bytes(b)
        } else {
            u64::from_be_bytes(b)
        })
    };
    let (phoff, phentsize, phnum) = match bytes[4] {
        2 => (u64_at(0x20)?, u16_at(0x36)?, u16_at(0x38)?),
        1 => (u32_at(0x1c)?, u16_at(0x2a)?, u16_at(0x2c)?),
        _ => return None,
    };
    for i in 0..phnum {
        let off = usize::try_from(phoff + i * phentsize).ok()?;
        if u32_at(off)? == 3 {
            return Some(true);
        }
    }
    Some(false)
}

impl CargoBackend {
    /// The backend, running `cargo build` in `env`.
    pub fn new(env: BuildEnv) -> Self {
        CargoBackend { env }
    }

    async fn plan(&self, ctx: &BuildContext, platforms: &[Platform]) -> Result<Plan, BuildError> {
        let mut settings = settings(ctx)?;
        settings.base = paths::base_image(ctx.dir(), "[build.cargo] base", &settings.base)?;
        let manifest = read_manifest(ctx)?;
        let bin = choose_bin(&manifest, ctx.dir(), &settings)?;
        let libc = settings.libc.clone().unwrap_or_else(|| "auto".into());
        if !matches!(libc.as_str(), "auto" | "musl" | "gnu") {
            return Err(bad(format!(
                "[build.cargo] libc {libc:?} is not a choice: use \"auto\", \"musl\" or \"gnu\""
            )));
        }
        let locked =
            paths::regular_file(ctx.dir(), &ctx.dir().join("Cargo.lock"), "Cargo.lock")?.is_some();
        check_toolchain_file(ctx)?;
        let root = sysroot(ctx).await?;
        if !root.join("bin/cargo").is_file() {
            return Err(BuildError::ToolMissing {
                tool: "cargo".into(),
                hint: format!(
                    "the Rust toolchain at {} has no bin/cargo: {INSTALL_HINT}",
                    root.display()
                ),
            });
        }
        let mut choices = vec![];
        for p in platforms {
            choices.push(choose_target(p, &root, &libc)?);
        }
        Ok(Plan {
            settings,
            bin,
            choices,
            sysroot: root,
            locked,
        })
    }
}

/// What a build needs, checked before it starts.
struct Plan {
    settings: CargoSettings,
    bin: BinTarget,
    choices: Vec<Choice>,
    /// The Rust toolchain (its `bin/cargo` and `bin/rustc` build).
    sysroot: PathBuf,
    /// Whether there is a `Cargo.lock` (a regular file inside the repository).
    locked: bool,
}

/// Refuses a rustup toolchain file that names a toolchain by path: rustup's `cargo` and
/// `rustc` would run the programs of that directory, which a push chooses.
fn check_toolchain_file(ctx: &BuildContext) -> Result<(), BuildError> {
    for name in ["rust-toolchain.toml", "rust-toolchain"] {
        let Some(bytes) = paths::read(ctx.dir(), name, MANIFEST_LIMIT)? else {
            continue;
        };
        let text = String::from_utf8_lossy(&bytes);
        let by_path = match toml::from_str::<toml::Table>(&text) {
            Ok(t) => t.get("toolchain").and_then(|t| t.get("path")).is_some(),
            // The old format: one line naming the toolchain.
            Err(_) => text.trim().contains('/'),
        };
        if by_path {
            return Err(bad(format!(
                "{name} names a toolchain by path, and hephy builds with the toolchains the server's admin installed: name a channel such as channel = \"stable\", or remove the path"
            )));
        }
    }
    Ok(())
}

#[async_trait]
impl Backend for CargoBackend {
    fn name(&self) -> &str {
        "cargo"
    }

    async fn detect(&self, ctx: &BuildContext) -> Detection {
        if !ctx.dir().join("Cargo.toml").is_file() {
            return Detection::no("cargo", "no Cargo.toml");
        }
        let manifest = match read_manifest(ctx) {
            Ok(m) => m,
            Err(e) => return Detection::no("cargo", format!("found Cargo.toml, but {e}")),
        };
        let bins: Vec<String> = bin_targets(&manifest, ctx.dir())
            .iter()
            .map(|t| t.to_string())
            .collect();
        match bins.as_slice() {
            [] => Detection::no("cargo", "found Cargo.toml without a binary target"),
            [one] => Detection::yes(
                "cargo",
                Confidence::High,
                format!("found Cargo.toml with the binary {one}"),
            ),
            many => Detection::yes(
                "cargo",
                Confidence::High,
                format!("found Cargo.toml with the binaries {}", many.join(", ")),
            ),
        }
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
        let s = &plan.settings;
        let Some(choice) = plan.choices.first().cloned() else {
            return Err(bad("no platform to build"));
        };
        let bin = plan.bin.bin.clone();
        let package = plan.bin.package.clone().or_else(|| s.package.clone());
        let work = target.out_dir.join(".hephy-cargo");
        self.env.work_dir(&work)?;
        let cache = self.env.app_cache("cargo", ctx)?;

        let mut cmd = self.env.command("/bin/sh");
        let rust = cmd.toolchain(&plan.sysroot, "/opt/rust");
        let context = cmd.ro(ctx.dir(), "/context");
        let build = cmd.rw(&work, "/build");
        let cache_in = cmd.rw(&cache, "/cache");
        let target_dir = cache_in.join("target");
        // cargo builds a copy it may write, made by the build user; the binary is copied out
        // of the app's cache, which another build of the app may be using, into this build's
        // own directory.
        cmd.arg("-c")
            .arg(
                r#"src=$1 copy=$2 built=$3 out=$4; shift 4
cp -R --preserve=mode,timestamps -- "$src/." "$copy" && cd "$copy" && "$@" && cp -- "$built" "$out""#,
            )
            .arg("sh")
            .arg(&context)
            .arg(build.join("src"))
            .arg(target_dir.join(choice.triple).join("release").join(&bin))
            .arg(build.join(&bin))
            .arg(rust.join("bin/cargo"))
            .arg("build")
            .arg("--release")
            .arg("--target")
            .arg(choice.triple)
            .arg("--target-dir")
            .arg(&target_dir)
            .arg("--bin")
            .arg(&bin);
        if plan.locked {
            cmd.arg("--locked");
        }
        if let Some(p) = &package {
            cmd.arg("--package").arg(p);
        }
        if !s.features.is_empty() {
            cmd.arg("--features").arg(s.features.join(","));
        }
        if s.no_default_features {
            cmd.arg("--no-default-features");
        }
        cmd.env(
            "PATH",
            format!(
                "{}:/usr/local/bin:/usr/bin:/bin",
                rust.join("bin").display()
            ),
        )
        .envs(ctx.config().build.env.clone())
        .env("CARGO_HOME", cache_in.join("home").display().to_string())
        .env("RUSTC", rust.join("bin/rustc").display().to_string())
        .network(ctx.config().build.network);
        if choice.crt_static {
            events.warn(format!(
                "building {} with glibc linked statically (+crt-static); `rustup target add {}` for a musl build, which is the better static binary",
                choice.triple,
                rust_targets(&target.platform).map(|t| t.0).unwrap_or("the musl target")
            ));
            let mut flags = ctx
                .config()
                .build
                .env
                .get("RUSTFLAGS")
                .cloned()
                .unwrap_or_default();
            if !flags.is_empty() {
                flags.push(' ');
            }
            flags.push_str("-C target-feature=+crt-static");
            cmd.env("RUSTFLAGS", flags);
        }
        events.log(format!(
            "cargo build --release --target {} --bin {bin}",
            choice.triple
        ));
        self.env
            .run(cmd, events, "cargo build", INSTALL_HINT)
            .await?;
        let _ = std::fs::remove_dir_all(work.join("src"));
        let path = built_file(&work, &work.join(&bin), "cargo build")?;
        let bytes = tokio::fs::read(&path).await.map_err(|e| {
            BuildError::other(format!("cargo build wrote no {}", path.display()), e)
        })?;
        if elf_is_dynamic(&bytes) == Some(true) {
            return Err(BuildError::Failed {
                message: format!(
                    "{bin} for {} is dynamically linked, and the default base has no libc for it: install the musl target (`rustup target add {}`), or set [build.cargo] base to an image that has the libraries",
                    choice.triple,
                    rust_targets(&target.platform).map(|t| t.0).unwrap_or("the musl target")
                ),
            });
        }
        let size = bytes.len() as u64;
        drop(bytes);

        let layout = OciLayout::create(&target.out_dir)
            .map_err(|e| BuildError::other("cannot create the image layout", e))?;
        let base = s.base.resolve(&target.platform, &layout, ctx.dir()).await?;
        let port = ctx.config().deploy.port;
        let written = ImageBuilder::for_context(ctx, target.platform.clone())
            .base(base)
            .entries(vec![Entry::file(format!("app/{bin}"), &path, size, true)])
            .entrypoint([format!("/app/{bin}")])
            .env("PORT", port.to_string())
            .user(APP_UID.to_string())
            .expose(port)
            .write(&layout, Some("latest"))
            .await?;
        let _ = tokio::fs::remove_dir_all(&work).await;
        events.log(format!("image {} ({size} bytes of binary)", written.digest));
        Ok(BuiltImage::new(
            Some(target.platform.clone()),
            &target.out_dir,
            written.digest,
        ))
    }
}
