//! The `[build.dockerfile]` settings, and the settings of the archived kaniko builder mapped
//! onto them with a warning for each that has no equivalent.

use std::collections::BTreeMap;

use hephy_core::{BuildContext, BuildError};
use serde::Deserialize;

use super::DockerfileBackend;

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

impl DockerfileBackend {
    /// The settings for `ctx`: `[build.dockerfile]` with kaniko's settings (from
    /// `[build.dockerfile.kaniko]` or `[build.kaniko]`) mapped onto them.
    pub fn settings(&self, ctx: &BuildContext) -> Result<ResolvedSettings, BuildError> {
        resolve(ctx, self.name == "kaniko")
    }
}

/// [`DockerfileBackend::settings`] of the backend named `dockerfile`, or `kaniko` (its alias)
/// when `kaniko_alias`.
pub(crate) fn resolve(
    ctx: &BuildContext,
    kaniko_alias: bool,
) -> Result<ResolvedSettings, BuildError> {
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
    if kaniko_alias {
        r.warnings.push(
            "backend = \"kaniko\" is built by the dockerfile backend (kaniko is archived): write backend = \"dockerfile\"".into(),
        );
    }
    Ok(r)
}
