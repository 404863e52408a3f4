//! The `spin` backend: packages a [Spin](https://spinframework.dev) app (`spin.toml`) as an OCI
//! artifact, the way `spin registry push` does, so `spin up --from` (and SpinKube) can run what
//! hephy publishes.
//!
//! The Spin format (the default), as Spin's `spin-oci` crate writes it:
//! - one layer per component's Wasm, media type [`WASM_LAYER_MEDIA_TYPE`];
//! - one layer per static file a component mounts, [`DATA_MEDIA_TYPE`] (files of at most 128
//!   bytes are inlined into the locked app instead, as Spin does);
//! - last, the *locked app* JSON (the manifest resolved: triggers, components with their
//!   sources and files as digests), [`SPIN_APPLICATION_MEDIA_TYPE`];
//! - an ordinary OCI image config (`architecture: wasm`) whose label
//!   `com.fermyon.spin.lockedAppDigest` names the locked app layer.
//!
//! As an option (`[build.spin] format = "wasm"`), the CNCF Wasm OCI artifact format: config
//! [`WASM_CONFIG_MEDIA_TYPE`] and the single component as an `application/wasm` layer.
//!
//! With Spin installed, components that declare a `build` command are built with `spin build`
//! first; without it, the `.wasm` files the manifest names must be committed. `spin build` (and
//! the commands it runs) runs in the [`BuildEnv`]'s sandbox, on a copy of the repository it may
//! write, with the app's own home directory (`CACHE_ROOT/spin/APP`) and, when the server has
//! Rust, its toolchain read-only on `PATH`; the artifact is packaged from that copy.

use std::path::PathBuf;

use hephy_core::{
    async_trait, Backend, BuildContext, BuildError, BuildTarget, BuiltImage, Confidence, Detection,
    Events, Platform,
};
use oci_spec::image::{Descriptor, MediaType};
use serde::Deserialize;

use crate::build_env::BuildEnv;
use crate::exec::find_program;
use crate::paths::{self, MANIFEST_LIMIT};
use hephy_oci::layout::{to_oci_digest, OciLayout};

mod artifact;
mod files;
mod manifest;

use manifest::SpinApp;

/// Media type of the locked Spin application layer.
pub const SPIN_APPLICATION_MEDIA_TYPE: &str = "application/vnd.fermyon.spin.application.v1+config";
/// Media type of a static file layer.
pub const DATA_MEDIA_TYPE: &str = "application/vnd.wasm.content.layer.v1+data";
/// Media type of a component's Wasm layer in the Spin format.
pub const WASM_LAYER_MEDIA_TYPE: &str = "application/vnd.wasm.content.layer.v1+wasm";
/// Media type of the config of a CNCF Wasm OCI artifact.
pub const WASM_CONFIG_MEDIA_TYPE: &str = "application/vnd.wasm.config.v0+json";
/// Media type of the Wasm layer of a CNCF Wasm OCI artifact.
pub const WASM_MEDIA_TYPE: &str = "application/wasm";
/// The config label that names the locked app layer's digest.
pub const LOCKED_APP_DIGEST_LABEL: &str = "com.fermyon.spin.lockedAppDigest";
/// Content of at most this many bytes is inlined into the locked app (Spin's default).
pub const INLINE_MAX_SIZE: u64 = 128;

/// The `[build.spin]` table of `hephy.toml`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
#[non_exhaustive]
pub struct SpinSettings {
    /// The Spin manifest, relative to the repository (default `spin.toml`).
    pub manifest: Option<String>,
    /// `spin` (default) or `wasm` (the CNCF Wasm OCI artifact format, one component only).
    pub format: Option<String>,
    /// Whether to run `spin build`: default when Spin is installed and a component declares a
    /// build command.
    pub build: Option<bool>,
}

/// The artifact format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SpinFormat {
    /// What `spin registry push` writes.
    Spin,
    /// The CNCF Wasm OCI artifact format.
    Wasm,
}

/// The `spin` backend.
///
/// ```
/// use hephy_backends::{spin::SpinBackend, BuildEnv};
/// use hephy_core::Backend;
/// let env = BuildEnv::unconfined(std::env::temp_dir().join("hephy-cache"));
/// assert_eq!(SpinBackend::new(env).name(), "spin");
/// ```
#[derive(Debug, Clone)]
pub struct SpinBackend {
    env: BuildEnv,
    spin: Option<PathBuf>,
    no_spin: bool,
}

impl SpinBackend {
    /// The backend; it runs `spin build` in `env` when `spin` is on `PATH`.
    pub fn new(env: BuildEnv) -> Self {
        SpinBackend {
            env,
            spin: None,
            no_spin: false,
        }
    }

    /// Never runs Spin, even when installed: the `.wasm` files must be in the repository.
    pub fn without_spin(mut self) -> Self {
        self.no_spin = true;
        self
    }

    /// Runs this `spin` program.
    pub fn with_spin(mut self, program: impl Into<PathBuf>) -> Self {
        self.spin = Some(program.into());
        self
    }

    fn spin_program(&self) -> Option<PathBuf> {
        if self.no_spin {
            return None;
        }
        self.spin.clone().or_else(|| find_program("spin"))
    }

    fn settings(
        ctx: &BuildContext,
    ) -> Result<(SpinSettings, SpinFormat, PathBuf, String), BuildError> {
        let s: SpinSettings = ctx.config().build.backend_settings("spin").map_err(|e| {
            BuildError::InvalidContext {
                problem: e.to_string(),
            }
        })?;
        let format = match s.format.as_deref() {
            None | Some("spin") => SpinFormat::Spin,
            Some("wasm") => SpinFormat::Wasm,
            Some(other) => {
                return Err(BuildError::InvalidContext {
                    problem: format!(
                        "[build.spin] format {other:?} is not a format: use \"spin\" (what spin registry push writes) or \"wasm\" (the CNCF Wasm OCI artifact)"
                    ),
                })
            }
        };
        let rel = s.manifest.clone().unwrap_or_else(|| "spin.toml".into());
        let path = paths::resolve(ctx.dir(), "[build.spin] manifest", &rel)?;
        Ok((s, format, path, rel))
    }

    /// Runs `spin build -f MANIFEST` on a copy of the repository in `work`, which it returns.
    async fn spin_build(
        &self,
        ctx: &BuildContext,
        program: &std::path::Path,
        rel: &str,
        work: &std::path::Path,
        events: &Events,
    ) -> Result<PathBuf, BuildError> {
        self.env.work_dir(work)?;
        let home = self.env.app_cache("spin", ctx)?;
        let mut cmd = self.env.command("/bin/sh");
        let real = program
            .canonicalize()
            .unwrap_or_else(|_| program.to_path_buf());
        let spin = cmd.toolchain(&real, "/opt/spin/bin/spin");
        let mut path = String::from("/usr/local/bin:/usr/bin:/bin");
        // Spin components are mostly Rust: their `cargo build` needs the server's toolchain.
        if let Ok(root) = crate::cargo::sysroot(ctx).await {
            let rust = cmd.toolchain(&root, "/opt/rust");
            path = format!("{}:{path}", rust.join("bin").display());
        }
        let context = cmd.ro(ctx.dir(), "/context");
        let build = cmd.rw(work, "/build");
        let home_in = cmd.rw(&home, "/home/build");
        cmd.arg("-c")
            .arg(
                r#"src=$1 copy=$2; shift 2
cp -R --preserve=mode,timestamps -- "$src/." "$copy" && cd "$copy" && exec "$@""#,
            )
            .arg("sh")
            .arg(context)
            .arg(build.join("src"))
            .arg(spin)
            .arg("build")
            .arg("-f")
            .arg(rel)
            .env("PATH", path)
            .envs(ctx.config().build.env.clone())
            .env("HOME", home_in.display().to_string())
            .network(ctx.config().build.network);
        self.env
            .run(
                cmd,
                events,
                "spin build",
                "install Spin (https://spinframework.dev/install) or commit the .wasm files",
            )
            .await?;
        Ok(work.join("src"))
    }

    /// Loads the app of `ctx`: its manifest resolved against the repository.
    fn load(&self, ctx: &BuildContext, may_build: bool) -> Result<SpinApp, BuildError> {
        let (_, _, path, rel) = Self::settings(ctx)?;
        let text = paths::read_text(ctx.dir(), &path, &rel, MANIFEST_LIMIT)?.ok_or_else(|| {
            bad(format!(
                "there is no Spin manifest {rel} in the repository: add one, or set [build.spin] manifest = \"path/to/spin.toml\""
            ))
        })?;
        let root = path.parent().unwrap_or(ctx.dir()).to_path_buf();
        SpinApp::parse(&rel, &text, ctx.dir(), &root, may_build)
    }
}

fn bad(problem: impl Into<String>) -> BuildError {
    BuildError::InvalidContext {
        problem: problem.into(),
    }
}

#[async_trait]
impl Backend for SpinBackend {
    fn name(&self) -> &str {
        "spin"
    }

    async fn detect(&self, ctx: &BuildContext) -> Detection {
        let (rel, path) = match Self::settings(ctx) {
            Ok((_, _, path, rel)) => (rel, path),
            // Bad settings still detect a spin.toml, so that `check` reports them instead of
            // another backend silently building the app.
            Err(_) => ("spin.toml".to_owned(), ctx.dir().join("spin.toml")),
        };
        if !path.is_file() {
            return Detection::no("spin", format!("no {rel}"));
        }
        // Unreadable (too big, a link out of the repository): still detected, so that `check`
        // says why.
        let text = paths::read_text(ctx.dir(), &path, &rel, MANIFEST_LIMIT)
            .ok()
            .flatten()
            .unwrap_or_default();
        let name = toml::from_str::<toml::Table>(&text).ok().and_then(|t| {
            t.get("application")
                .and_then(|a| a.get("name"))
                .and_then(|n| n.as_str().map(str::to_owned))
        });
        let reason = match name {
            Some(n) => format!("found {rel} (Spin app {n})"),
            None => format!("found {rel}"),
        };
        Detection::yes("spin", Confidence::High, reason)
    }

    async fn check(&self, ctx: &BuildContext, platforms: &[Platform]) -> Result<(), BuildError> {
        // A Wasm app runs on every platform: one artifact, built once.
        if let [_, second, ..] = platforms {
            return Err(BuildError::UnsupportedPlatform {
                backend: "spin".into(),
                platform: second.clone(),
                hint: "a Spin app is one platform-independent artifact: list one platform in [build] platforms, or remove the key".into(),
            });
        }
        let (settings, format, _, _) = Self::settings(ctx)?;
        let can_build = settings.build != Some(false) && self.spin_program().is_some();
        let app = self.load(ctx, can_build)?;
        if format == SpinFormat::Wasm && app.components.len() != 1 {
            return Err(bad(format!(
                "[build.spin] format = \"wasm\" holds one component, and this app has {}: use format = \"spin\" (the default), which holds them all",
                app.components.len()
            )));
        }
        if settings.build == Some(true) && self.spin_program().is_none() {
            return Err(BuildError::ToolMissing {
                tool: "spin".into(),
                hint: "[build.spin] build = true needs Spin where hephy builds: install it (https://spinframework.dev/install), or commit the .wasm files and remove build = true".into(),
            });
        }
        Ok(())
    }

    async fn build(
        &self,
        ctx: &BuildContext,
        target: &BuildTarget,
        events: &Events,
    ) -> Result<BuiltImage, BuildError> {
        let (settings, format, _, rel) = Self::settings(ctx)?;
        let spin = if settings.build == Some(false) {
            None
        } else {
            self.spin_program()
        };
        let app = self.load(ctx, spin.is_some())?;
        let work = target.out_dir.join(".hephy-spin");
        let built;
        let ctx = match (&spin, app.any_build()) {
            (Some(program), true) => {
                events.log(format!("Running spin build -f {rel}"));
                let copy = self.spin_build(ctx, program, &rel, &work, events).await?;
                // Packaged from the copy `spin build` wrote: paths are checked against it.
                let mut copy = BuildContext::new(copy, ctx.config().clone())
                    .with_source_date_epoch(ctx.source_date_epoch());
                if let Some(r) = ctx.revision() {
                    copy = copy.with_revision(r.clone());
                }
                built = copy;
                &built
            }
            (None, true) => {
                events.log("Spin is not installed: packaging the .wasm files in the repository");
                ctx
            }
            _ => ctx,
        };
        let app = self.load(ctx, false)?;
        let layout = OciLayout::create(&target.out_dir)
            .map_err(|e| BuildError::other("cannot create the OCI layout", e.to_string()))?;
        let (digest, size) = match format {
            SpinFormat::Spin => app.write_spin(ctx, &layout)?,
            SpinFormat::Wasm => app.write_wasm(ctx, &layout)?,
        };
        let oci_digest = to_oci_digest(&digest)
            .map_err(|e| BuildError::other("invalid digest", e.to_string()))?;
        let desc = Descriptor::new(MediaType::ImageManifest, size, oci_digest);
        layout
            .add_manifest(&desc, Some("latest"))
            .map_err(|e| BuildError::other("cannot write index.json", e.to_string()))?;
        let _ = std::fs::remove_dir_all(&work);
        events.log(format!(
            "Packaged {} component(s) of {} as {} artifact {}",
            app.components.len(),
            if app.name.is_empty() {
                "the Spin app"
            } else {
                &app.name
            },
            match format {
                SpinFormat::Spin => "a Spin",
                SpinFormat::Wasm => "a Wasm OCI",
            },
            digest
        ));
        Ok(BuiltImage::new(None, &target.out_dir, digest))
    }
}
