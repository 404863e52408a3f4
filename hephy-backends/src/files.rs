//! [`FilesBackend`]: a directory of the context shipped as it is, on a base image: the backend
//! for prebuilt artifacts and static assets.
//!
//! `[build.files]` keys: `dir` (relative to the context, and inside it after following
//! symlinks; default the whole context less `.git` and `hephy.toml`), `dest` (where it goes in the image, default `/app`), `entrypoint` and `cmd`
//! (lists), `env` (table), `user` (default `65532`), `workdir` (default `dest`), `base` (see
//! [`BaseImage`]; `"scratch"` for no base at all), `compression` (`"gzip"`, the default, or
//! `"zstd"`, optionally with `:LEVEL`), and `split` (default true: large trees are
//! split into several layers so a change re-uploads little, see
//! [`plan_layers`](hephy_oci::layer::plan_layers)). `PORT` is set from `[deploy] port`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use hephy_core::{
    async_trait, AppConfig, Backend, BuildContext, BuildError, BuildTarget, BuiltImage, Confidence,
    Detection, Events, Platform, CONFIG_FILE,
};
use serde::Deserialize;

use crate::paths;
use hephy_oci::base::{BaseImage, APP_UID};
use hephy_oci::image::{ImageBuilder, WrittenImage};
use hephy_oci::layer::{Compression, SplitOptions};
use hephy_oci::layout::OciLayout;
use hephy_oci::registry::RegistryOptions;

/// The `[build.files]` table of `hephy.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
#[non_exhaustive]
pub struct FilesSettings {
    /// The directory to ship, relative to the context (default: all of it).
    pub dir: Option<PathBuf>,
    /// Where it goes in the image.
    pub dest: String,
    /// The entrypoint.
    pub entrypoint: Option<Vec<String>>,
    /// The command.
    pub cmd: Option<Vec<String>>,
    /// Environment variables of the app.
    pub env: BTreeMap<String, String>,
    /// The user the app runs as.
    pub user: String,
    /// The working directory (default: `dest`).
    pub workdir: Option<String>,
    /// The base image.
    pub base: BaseImage,
    /// Whether to split large trees into several layers.
    pub split: bool,
    /// Layer compression: `"gzip"` (default, level 1), `"gzip:LEVEL"`, `"zstd"`, `"zstd:LEVEL"`.
    pub compression: Compression,
}

impl Default for FilesSettings {
    fn default() -> Self {
        FilesSettings {
            dir: None,
            dest: "/app".to_owned(),
            entrypoint: None,
            cmd: None,
            env: BTreeMap::new(),
            user: APP_UID.to_string(),
            workdir: None,
            base: BaseImage::Default,
            split: true,
            compression: Compression::default(),
        }
    }
}

impl FilesSettings {
    /// Sets the base image.
    pub fn with_base(mut self, base: BaseImage) -> Self {
        self.base = base;
        self
    }

    /// Sets where the files go in the image.
    pub fn with_dest(mut self, dest: impl Into<String>) -> Self {
        self.dest = dest.into();
        self
    }

    /// Sets the entrypoint.
    pub fn with_entrypoint(mut self, args: Vec<String>) -> Self {
        self.entrypoint = Some(args);
        self
    }

    /// Sets the layer compression.
    pub fn with_compression(mut self, compression: Compression) -> Self {
        self.compression = compression;
        self
    }

    /// Sets whether large trees are split into several layers.
    pub fn with_split(mut self, split: bool) -> Self {
        self.split = split;
        self
    }
}

/// Ships a directory as an image (backend name `"files"`); detects any context with
/// [`Confidence::Low`], as the fallback.
#[derive(Debug, Clone, Default)]
pub struct FilesBackend {
    split: SplitOptions,
    registry: Option<RegistryOptions>,
}

impl FilesBackend {
    /// A files backend with the default layer split.
    pub fn new() -> Self {
        FilesBackend::default()
    }

    /// Splits large trees with `split` instead of the defaults.
    pub fn with_split(mut self, split: SplitOptions) -> Self {
        self.split = split;
        self
    }

    /// Pulls registry base images with `options` instead of [`RegistryOptions::from_env`].
    pub fn with_registry_options(mut self, options: RegistryOptions) -> Self {
        self.registry = Some(options);
        self
    }

    /// Builds the image of `ctx` with `settings` for `platform` into the OCI layout at
    /// `out_dir` (created if needed), named `latest` there: what [`Backend::build`] does, for
    /// callers that have a directory and no pipeline (benchmarks, tools).
    pub async fn build_image(
        &self,
        ctx: &BuildContext,
        settings: &FilesSettings,
        platform: &Platform,
        out_dir: &Path,
    ) -> Result<WrittenImage, BuildError> {
        let registry = self
            .registry
            .clone()
            .unwrap_or_else(RegistryOptions::from_env);
        build_files_image(ctx, settings, &self.split, &registry, platform, out_dir).await
    }
}

async fn build_files_image(
    ctx: &BuildContext,
    settings: &FilesSettings,
    split: &SplitOptions,
    registry: &RegistryOptions,
    platform: &Platform,
    out_dir: &Path,
) -> Result<WrittenImage, BuildError> {
    let source_dir = match &settings.dir {
        Some(d) => ctx.dir().join(d),
        None => ctx.dir().to_owned(),
    };
    if !source_dir.is_dir() {
        return Err(BuildError::InvalidContext {
            problem: format!(
                "[build.files] dir {} is not a directory of the context: create it or fix the setting",
                source_dir.display()
            ),
        });
    }
    let whole = settings.dir.is_none();
    let skip = move |p: &str| whole && (p == ".git" || p == CONFIG_FILE);
    let layout = OciLayout::create(out_dir)
        .map_err(|e| BuildError::other("cannot create the image layout", e))?;
    let port = ctx.config().deploy.port;
    let dest = settings.dest.trim_matches('/').to_owned();
    let base = settings
        .base
        .resolve_with(platform, &layout, ctx.dir(), registry)
        .await?;
    let mut image = ImageBuilder::for_context(ctx, platform.clone())
        .base(base)
        .compression(settings.compression)
        .dir_filtered(
            source_dir,
            dest.clone(),
            skip,
            settings.split.then_some(*split),
        )
        .env("PORT", port.to_string())
        .user(settings.user.clone())
        .workdir(
            settings
                .workdir
                .clone()
                .unwrap_or_else(|| format!("/{dest}")),
        )
        .expose(port);
    for (k, v) in &settings.env {
        image = image.env(k.clone(), v.clone());
    }
    if let Some(ep) = &settings.entrypoint {
        image = image.entrypoint(ep.clone());
    }
    if let Some(cmd) = &settings.cmd {
        image = image.cmd(cmd.clone());
    }
    Ok(image.write(&layout, Some("latest")).await?)
}

/// Builds the directory `dir` as a files image with default settings but `settings`, for
/// `platform`, into the OCI layout at `out_dir`; the shortest way from a directory to an image.
pub async fn build_dir_image(
    dir: &Path,
    settings: &FilesSettings,
    platform: &Platform,
    out_dir: &Path,
) -> Result<WrittenImage, BuildError> {
    let ctx = BuildContext::new(dir, AppConfig::default());
    FilesBackend::new()
        .build_image(&ctx, settings, platform, out_dir)
        .await
}

#[async_trait]
impl Backend for FilesBackend {
    fn name(&self) -> &str {
        "files"
    }

    async fn detect(&self, _ctx: &BuildContext) -> Detection {
        Detection::yes(
            "files",
            Confidence::Low,
            "any directory can be shipped as files",
        )
    }

    async fn check(&self, ctx: &BuildContext, _platforms: &[Platform]) -> Result<(), BuildError> {
        settings(ctx).map(|_| ())
    }

    async fn build(
        &self,
        ctx: &BuildContext,
        target: &BuildTarget,
        events: &Events,
    ) -> Result<BuiltImage, BuildError> {
        let s = settings(ctx)?;
        let written = self
            .build_image(ctx, &s, &target.platform, &target.out_dir)
            .await?;
        let bytes: u64 = written.new_layers.iter().map(|l| l.size).sum();
        events.log(format!(
            "image {} ({} new layers, {bytes} bytes compressed)",
            written.digest,
            written.new_layers.len()
        ));
        Ok(BuiltImage::new(
            Some(target.platform.clone()),
            &target.out_dir,
            written.digest,
        ))
    }
}

/// `[build.files]` of `ctx`, with the paths it names (`dir`, `base = "oci:DIR"`) resolved
/// inside the repository.
fn settings(ctx: &BuildContext) -> Result<FilesSettings, BuildError> {
    let mut s = ctx
        .config()
        .build
        .backend_settings::<FilesSettings>("files")
        .map_err(|e| BuildError::InvalidContext {
            problem: e.to_string(),
        })?;
    if let Some(dir) = &s.dir {
        s.dir = Some(paths::resolve(
            ctx.dir(),
            "[build.files] dir",
            &dir.to_string_lossy(),
        )?);
    }
    s.base = paths::base_image(ctx.dir(), "[build.files] base", &s.base)?;
    Ok(s)
}
