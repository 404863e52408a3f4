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
//! first; without it, the `.wasm` files the manifest names must be committed.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use hephy_core::{
    async_trait, Backend, BuildContext, BuildError, BuildTarget, BuiltImage, Confidence, Detection,
    Digest, Events, Platform,
};
use oci_spec::image::{Descriptor, MediaType};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::check::find_program;
use crate::dockerfile::safe_join;
use crate::exec;
use hephy_oci::layout::{to_oci_digest, OciLayout};

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
/// use hephy_backends::spin::SpinBackend;
/// use hephy_core::Backend;
/// assert_eq!(SpinBackend::new().name(), "spin");
/// ```
#[derive(Debug, Clone, Default)]
pub struct SpinBackend {
    spin: Option<PathBuf>,
    no_spin: bool,
}

impl SpinBackend {
    /// The backend; it runs `spin build` when `spin` is on `PATH`.
    pub fn new() -> Self {
        SpinBackend::default()
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
        let path = safe_join(ctx.dir(), &rel, "[build.spin] manifest")?;
        Ok((s, format, path, rel))
    }

    /// Loads the app of `ctx`: its manifest resolved against the repository.
    fn load(&self, ctx: &BuildContext, may_build: bool) -> Result<SpinApp, BuildError> {
        let (_, _, path, rel) = Self::settings(ctx)?;
        let text = std::fs::read_to_string(&path).map_err(|e| BuildError::InvalidContext {
            problem: format!("cannot read the Spin manifest {rel}: {e}"),
        })?;
        let root = path.parent().unwrap_or(ctx.dir()).to_path_buf();
        SpinApp::parse(&rel, &text, &root, may_build)
    }
}

// ---------------------------------------------------------------------------------------------
// spin.toml (manifest version 2)

#[derive(Deserialize)]
struct RawManifest {
    spin_manifest_version: Option<toml::Value>,
    spin_version: Option<toml::Value>,
    application: Option<RawApplication>,
    #[serde(default)]
    variables: BTreeMap<String, RawVariable>,
    #[serde(default)]
    trigger: BTreeMap<String, Vec<toml::Spanned<toml::Table>>>,
    #[serde(default)]
    component: BTreeMap<String, toml::Spanned<RawComponent>>,
}

#[derive(Deserialize, Default)]
struct RawApplication {
    name: String,
    #[serde(default)]
    version: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    authors: Vec<String>,
    #[serde(default)]
    trigger: BTreeMap<String, toml::Table>,
}

#[derive(Deserialize, Clone)]
#[serde(rename_all = "snake_case")]
struct RawVariable {
    #[serde(default)]
    required: bool,
    default: Option<String>,
    description: Option<String>,
    #[serde(default)]
    secret: bool,
}

#[derive(Deserialize, Clone)]
#[serde(untagged)]
enum RawSource {
    Local(String),
    Remote {
        url: String,
        digest: String,
    },
    Registry {
        package: String,
        version: String,
        #[serde(default)]
        registry: Option<String>,
    },
}

#[derive(Deserialize, Clone)]
#[serde(untagged)]
enum RawMount {
    Pattern(String),
    Placement { source: String, destination: String },
}

#[derive(Deserialize, Clone)]
struct RawComponent {
    source: RawSource,
    #[serde(default)]
    description: String,
    #[serde(default)]
    variables: BTreeMap<String, String>,
    #[serde(default)]
    environment: BTreeMap<String, String>,
    #[serde(default)]
    files: Vec<RawMount>,
    #[serde(default)]
    exclude_files: Vec<String>,
    #[serde(default)]
    allowed_http_hosts: Vec<String>,
    #[serde(default)]
    allowed_outbound_hosts: Vec<String>,
    #[serde(default)]
    key_value_stores: Vec<String>,
    #[serde(default)]
    sqlite_databases: Vec<String>,
    #[serde(default)]
    ai_models: Vec<String>,
    #[serde(default)]
    build: Option<toml::Table>,
    #[serde(default)]
    dependencies: Option<toml::Table>,
}

/// A Spin app read from its manifest, ready to package.
#[derive(Debug, Clone)]
struct SpinApp {
    name: String,
    version: String,
    description: String,
    authors: Vec<String>,
    /// Locked metadata of the app.
    metadata: serde_json::Map<String, Value>,
    variables: serde_json::Map<String, Value>,
    triggers: Vec<Value>,
    components: Vec<Component>,
}

#[derive(Debug, Clone)]
struct Component {
    id: String,
    source: PathBuf,
    source_rel: String,
    metadata: serde_json::Map<String, Value>,
    env: BTreeMap<String, String>,
    config: BTreeMap<String, String>,
    /// `(path in the guest, relative; file on disk)`, sorted by guest path.
    files: Vec<(String, PathBuf)>,
    has_build: bool,
}

fn bad(problem: impl Into<String>) -> BuildError {
    BuildError::InvalidContext {
        problem: problem.into(),
    }
}

fn json_table(t: &toml::Table) -> Value {
    serde_json::to_value(t).unwrap_or(Value::Null)
}

impl SpinApp {
    /// Parses and resolves the manifest. With `may_build`, a missing `.wasm` of a component
    /// with a build command is not an error yet (`spin build` will make it).
    fn parse(rel: &str, text: &str, root: &Path, may_build: bool) -> Result<SpinApp, BuildError> {
        let raw: RawManifest = toml::from_str(text).map_err(|e| {
            let line = e
                .span()
                .map(|s| {
                    format!(
                        ":{}",
                        text[..s.start.min(text.len())].matches('\n').count() + 1
                    )
                })
                .unwrap_or_default();
            bad(format!("{rel}{line}: {}", e.message().trim_end()))
        })?;
        let version = raw
            .spin_manifest_version
            .as_ref()
            .map(|v| v.to_string().trim_matches('"').to_owned());
        match version.as_deref() {
            Some("2") => {}
            Some(v) => {
                return Err(bad(format!(
                    "{rel}: spin_manifest_version {v} is not supported: hephy reads version 2 manifests; run `spin doctor` or see https://spinframework.dev/manifest-reference to upgrade"
                )))
            }
            None if raw.spin_version.is_some() => {
                return Err(bad(format!(
                    "{rel} is a version 1 manifest (spin_version = ...): hephy reads version 2 manifests; upgrade it with `spin doctor` or by hand (see https://spinframework.dev/manifest-reference)"
                )))
            }
            None => {
                return Err(bad(format!(
                    "{rel} has no spin_manifest_version: add spin_manifest_version = 2 at the top"
                )))
            }
        }
        let app = raw.application.ok_or_else(|| {
            bad(format!(
                "{rel} has no [application] table: add one with name = \"my-app\""
            ))
        })?;

        // Components, in the order they are written, plus inline components of triggers.
        let mut comps: Vec<(usize, String, RawComponent)> = raw
            .component
            .into_iter()
            .map(|(id, c)| (c.span().start, id, c.into_inner()))
            .collect();
        comps.sort_by_key(|c| c.0);
        let mut components: Vec<(String, RawComponent)> =
            comps.into_iter().map(|(_, id, c)| (id, c)).collect();

        // Triggers: ids as Spin normalizes them (`<component>-<type>-trigger`, else
        // `<type>-trigger<N>`), inline components moved out.
        let mut triggers_raw: Vec<(usize, String, toml::Table)> = vec![];
        for (ty, list) in raw.trigger {
            for t in list {
                triggers_raw.push((t.span().start, ty.clone(), t.into_inner()));
            }
        }
        triggers_raw.sort_by_key(|t| t.0);
        let mut ids: BTreeSet<String> = triggers_raw
            .iter()
            .filter_map(|(_, _, t)| t.get("id").and_then(|v| v.as_str()).map(str::to_owned))
            .collect();
        let mut counters: BTreeMap<String, usize> = BTreeMap::new();
        let mut triggers = vec![];
        let mut trigger_types = BTreeSet::new();
        for (_, ty, mut t) in triggers_raw {
            trigger_types.insert(ty.clone());
            let mut id = t
                .remove("id")
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            let component = t.remove("component");
            if id.is_empty() {
                if let Some(toml::Value::String(c)) = &component {
                    let candidate = format!("{c}-{ty}-trigger");
                    if !ids.contains(&candidate) {
                        id = candidate;
                    }
                }
                if id.is_empty() {
                    let n = counters.entry(ty.clone()).or_insert(1);
                    id = loop {
                        let candidate = format!("{ty}-trigger{n}");
                        *n += 1;
                        if !ids.contains(&candidate) {
                            break candidate;
                        }
                    };
                }
                ids.insert(id.clone());
            }
            let mut config = json_table(&t);
            let component_id = match component {
                Some(toml::Value::String(c)) => Some(c),
                Some(toml::Value::Table(inline)) => {
                    let mut cid = format!("{id}-component");
                    let mut n = 1;
                    while components.iter().any(|(c, _)| *c == cid) {
                        cid = format!("inline-component{n}");
                        n += 1;
                    }
                    let c: RawComponent =
                        toml::Value::Table(inline)
                            .try_into()
                            .map_err(|e: toml::de::Error| {
                                bad(format!(
                                    "{rel}: trigger {id}: inline component: {}",
                                    e.message()
                                ))
                            })?;
                    components.push((cid.clone(), c));
                    Some(cid)
                }
                Some(_) => {
                    return Err(bad(format!(
                        "{rel}: trigger {id}: component must be a component id or an inline table"
                    )))
                }
                None => None,
            };
            if let (Some(c), Value::Object(m)) = (&component_id, &mut config) {
                m.insert("component".into(), Value::String(c.clone()));
            }
            if let Some(c) = &component_id {
                if !components.iter().any(|(id, _)| id == c) {
                    return Err(bad(format!(
                        "{rel}: trigger {id} names component {c:?}, which is not defined: add a [component.{c}] table"
                    )));
                }
            }
            triggers.push(json!({
                "id": id,
                "trigger_type": ty,
                "trigger_config": config,
            }));
        }
        if components.is_empty() {
            return Err(bad(format!(
                "{rel} defines no components: add a [component.NAME] table with source = \"path/to/app.wasm\""
            )));
        }

        let mut metadata = serde_json::Map::new();
        if !app.name.is_empty() {
            metadata.insert("name".into(), app.name.clone().into());
        }
        if !app.version.is_empty() {
            metadata.insert("version".into(), app.version.clone().into());
        }
        if !app.description.is_empty() {
            metadata.insert("description".into(), app.description.clone().into());
        }
        if !app.authors.is_empty() {
            metadata.insert("authors".into(), json!(app.authors));
        }
        let globals: serde_json::Map<String, Value> = app
            .trigger
            .iter()
            .map(|(k, v)| (k.clone(), json_table(v)))
            .collect();
        metadata.insert("triggers".into(), Value::Object(globals.clone()));
        if trigger_types.len() == 1 {
            let ty = trigger_types.iter().next().cloned().unwrap_or_default();
            let mut single = match globals.get(&ty) {
                Some(Value::Object(m)) => m.clone(),
                _ => serde_json::Map::new(),
            };
            single.insert("type".into(), ty.into());
            metadata.insert("trigger".into(), Value::Object(single));
        }

        let mut variables = serde_json::Map::new();
        for (name, v) in &raw.variables {
            if v.required == v.default.is_some() {
                return Err(bad(format!(
                    "{rel}: variable {name} must be `required = true` or have a `default`, not both or neither"
                )));
            }
            let mut m = serde_json::Map::new();
            if let Some(d) = &v.description {
                m.insert("description".into(), d.clone().into());
            }
            if let Some(d) = &v.default {
                m.insert("default".into(), d.clone().into());
            }
            if v.secret {
                m.insert("secret".into(), true.into());
            }
            variables.insert(name.clone(), Value::Object(m));
        }

        let mut out = vec![];
        for (id, c) in components {
            out.push(resolve_component(rel, root, &id, c, may_build)?);
        }
        Ok(SpinApp {
            name: app.name,
            version: app.version,
            description: app.description,
            authors: app.authors,
            metadata,
            variables,
            triggers,
            components: out,
        })
    }

    fn any_build(&self) -> bool {
        self.components.iter().any(|c| c.has_build)
    }
}

fn resolve_component(
    rel: &str,
    root: &Path,
    id: &str,
    c: RawComponent,
    may_build: bool,
) -> Result<Component, BuildError> {
    if c.dependencies.as_ref().is_some_and(|d| !d.is_empty()) {
        return Err(bad(format!(
            "{rel}: component {id} has dependencies, which hephy cannot compose: compose the component ahead (spin build with `wac`) and point source at the result, or publish with `spin registry push`"
        )));
    }
    let source_rel = match &c.source {
        RawSource::Local(p) => p.clone(),
        RawSource::Remote { url, digest } => {
            return Err(bad(format!(
                "{rel}: component {id} takes its Wasm from {url} ({digest}), and hephy builds without network access: download it into the repository and set source = \"path/to/it.wasm\""
            )))
        }
        RawSource::Registry { package, version, registry } => {
            return Err(bad(format!(
                "{rel}: component {id} takes its Wasm from the package {package}@{version}{}, and hephy builds without network access: download it into the repository and set source = \"path/to/it.wasm\"",
                registry.as_deref().map(|r| format!(" in {r}")).unwrap_or_default()
            )))
        }
    };
    let source = safe_join(root, &source_rel, &format!("component {id} source"))?;
    let has_build = c.build.as_ref().is_some_and(|b| b.get("command").is_some());
    if !(source.is_file() || may_build && has_build) {
        let how = match c
            .build
            .as_ref()
            .and_then(|b| b.get("command"))
            .and_then(|v| v.as_str())
        {
            Some(cmd) => format!(" (its build command: `{cmd}`)"),
            None => String::new(),
        };
        return Err(bad(format!(
            "{rel}: component {id}: source {source_rel} does not exist: run `spin build`{how} and commit {source_rel}, or install Spin where hephy builds so it runs `spin build` itself"
        )));
    }
    let mut allowed = c.allowed_outbound_hosts.clone();
    for h in &c.allowed_http_hosts {
        if h == "insecure:allow-all" {
            allowed.push("*://*:*".into());
        } else if h.contains("://") {
            allowed.push(h.clone());
        } else {
            allowed.push(format!("http://{h}"));
            allowed.push(format!("https://{h}"));
        }
    }
    let mut metadata = serde_json::Map::new();
    if !c.description.is_empty() {
        metadata.insert("description".into(), c.description.clone().into());
    }
    for (k, v) in [
        ("allowed_outbound_hosts", &allowed),
        ("key_value_stores", &c.key_value_stores),
        ("databases", &c.sqlite_databases),
        ("ai_models", &c.ai_models),
    ] {
        if !v.is_empty() {
            metadata.insert(k.into(), json!(v));
        }
    }
    if let Some(b) = &c.build {
        metadata.insert("build".into(), json_table(b));
    }
    let files = resolve_files(rel, root, id, &c.files, &c.exclude_files)?;
    Ok(Component {
        id: id.to_owned(),
        source,
        source_rel,
        metadata,
        env: c.environment,
        config: c.variables,
        files,
        has_build,
    })
}

fn rel_string(p: &Path) -> String {
    p.components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join("/")
}

fn walk_files(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.flatten().collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let p = e.path();
        let ft = e.file_type()?;
        if ft.is_dir() {
            walk_files(&p, out)?;
        } else if p.is_file() {
            out.push(p);
        }
    }
    Ok(())
}

fn resolve_files(
    rel: &str,
    root: &Path,
    id: &str,
    mounts: &[RawMount],
    exclude: &[String],
) -> Result<Vec<(String, PathBuf)>, BuildError> {
    let excludes = exclude
        .iter()
        .map(|p| {
            glob::Pattern::new(p).map_err(|e| {
                bad(format!(
                    "{rel}: component {id}: exclude_files pattern {p:?} is invalid: {e}"
                ))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let excluded = |app_rel: &Path| excludes.iter().any(|p| p.matches_path(app_rel));
    let io = |what: &str, e: std::io::Error| {
        bad(format!("{rel}: component {id}: cannot read {what}: {e}"))
    };
    let mut files: BTreeMap<String, PathBuf> = BTreeMap::new();
    for m in mounts {
        match m {
            RawMount::Pattern(p) => {
                let path = safe_join(root, p, &format!("component {id} files pattern"))?;
                if path.is_dir() {
                    let mut found = vec![];
                    walk_files(&path, &mut found).map_err(|e| io(p, e))?;
                    for f in found {
                        let app_rel = f.strip_prefix(root).unwrap_or(&f).to_path_buf();
                        if !excluded(&app_rel) {
                            files.insert(rel_string(&app_rel), f);
                        }
                    }
                } else if path.is_file() {
                    files.insert(rel_string(Path::new(p.trim_start_matches("./"))), path);
                } else if glob::Pattern::escape(p) != *p {
                    let pattern = path.to_string_lossy().into_owned();
                    let paths = glob::glob(&pattern).map_err(|e| {
                        bad(format!(
                            "{rel}: component {id}: files pattern {p:?} is invalid: {e}"
                        ))
                    })?;
                    for f in paths.flatten() {
                        if !f.is_file() {
                            continue;
                        }
                        let Ok(app_rel) = f.strip_prefix(root).map(Path::to_path_buf) else {
                            continue;
                        };
                        if !excluded(&app_rel) {
                            files.insert(rel_string(&app_rel), f);
                        }
                    }
                } else {
                    return Err(bad(format!(
                        "{rel}: component {id}: files entry {p:?} does not exist and is not a glob pattern: fix the path, or remove it from files"
                    )));
                }
            }
            RawMount::Placement {
                source,
                destination,
            } => {
                let src = safe_join(root, source, &format!("component {id} files source"))?;
                let dest = destination.trim_start_matches('/');
                if src.is_dir() {
                    let mut found = vec![];
                    walk_files(&src, &mut found).map_err(|e| io(source, e))?;
                    for f in found {
                        let inner = f.strip_prefix(&src).unwrap_or(&f);
                        let guest = if dest.is_empty() {
                            rel_string(inner)
                        } else {
                            format!("{}/{}", dest.trim_end_matches('/'), rel_string(inner))
                        };
                        files.insert(guest, f);
                    }
                } else if src.is_file() {
                    if dest.is_empty() || dest.ends_with('/') {
                        return Err(bad(format!(
                            "{rel}: component {id}: \"{destination}\" is not a valid destination file name for the file {source}: name the file, like \"/static/{}\"",
                            src.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
                        )));
                    }
                    files.insert(dest.to_owned(), src);
                } else {
                    return Err(bad(format!(
                        "{rel}: component {id}: files source {source:?} does not exist: fix the path"
                    )));
                }
            }
        }
    }
    Ok(files.into_iter().collect())
}

// ---------------------------------------------------------------------------------------------
// Writing the artifact.

struct Layer {
    media_type: &'static str,
    digest: Digest,
    size: u64,
}

/// Writes `path` into the layout as a blob, streaming; returns its digest, size and, when
/// small, its bytes for inlining.
fn blob_from_file(
    layout: &OciLayout,
    path: &Path,
) -> Result<(Digest, u64, Option<Vec<u8>>), BuildError> {
    let err = |e: &dyn std::fmt::Display| {
        BuildError::other(format!("cannot store {}", path.display()), e.to_string())
    };
    let mut f = std::fs::File::open(path).map_err(|e| err(&e))?;
    let len = f.metadata().map_err(|e| err(&e))?.len();
    let mut w = layout.blob_writer().map_err(|e| err(&e))?;
    std::io::copy(&mut f, &mut w).map_err(|e| err(&e))?;
    w.flush().map_err(|e| err(&e))?;
    let (digest, size) = w.finish().map_err(|e| err(&e))?;
    let inline = if len <= INLINE_MAX_SIZE {
        Some(std::fs::read(path).map_err(|e| err(&e))?)
    } else {
        None
    };
    Ok((digest, size, inline))
}

fn content_ref(digest: &Digest, inline: Option<&[u8]>) -> serde_json::Map<String, Value> {
    let mut m = serde_json::Map::new();
    if let Some(b) = inline {
        m.insert(
            "inline".into(),
            base64::engine::general_purpose::STANDARD.encode(b).into(),
        );
    }
    m.insert("digest".into(), digest.to_string().into());
    m
}

fn check_wasm(path: &Path, rel: &str, id: &str) -> Result<bool, BuildError> {
    use std::io::Read as _;
    let mut head = [0u8; 8];
    let n = std::fs::File::open(path)
        .and_then(|mut f| f.read(&mut head))
        .map_err(|e| bad(format!("component {id}: cannot read {rel}: {e}")))?;
    if n < 8 || &head[..4] != b"\0asm" {
        return Err(bad(format!(
            "component {id}: {rel} is not a WebAssembly file (it does not start with \\0asm): point source at the .wasm your build makes"
        )));
    }
    // Version 1 is a core module; components have a different version and layer field.
    Ok(head[4..8] != [1, 0, 0, 0])
}

fn rfc3339(ctx: &BuildContext) -> String {
    humantime::format_rfc3339_seconds(ctx.source_date_epoch()).to_string()
}

/// Writes `value` as a compact JSON blob (keys sorted, as serde_json's map sorts them).
fn write_json_blob(layout: &OciLayout, value: &Value) -> Result<(Digest, u64), BuildError> {
    let bytes =
        serde_json::to_vec(value).map_err(|e| BuildError::other("cannot encode JSON", e))?;
    layout
        .write_blob(&bytes)
        .map_err(|e| BuildError::other("cannot write to the OCI layout", e.to_string()))
}

fn layer_json(l: &Layer) -> Value {
    json!({"mediaType": l.media_type, "digest": l.digest.to_string(), "size": l.size})
}

impl SpinApp {
    fn write_spin(
        &self,
        ctx: &BuildContext,
        layout: &OciLayout,
    ) -> Result<(Digest, u64), BuildError> {
        let mut layers: Vec<Layer> = vec![];
        let mut seen = BTreeSet::new();
        let mut push = |layers: &mut Vec<Layer>, l: Layer| {
            if seen.insert((l.digest.clone(), l.media_type)) {
                layers.push(l);
            }
        };
        let mut components = vec![];
        for c in &self.components {
            check_wasm(&c.source, &c.source_rel, &c.id)?;
            let (digest, size, inline) = blob_from_file(layout, &c.source)?;
            push(
                &mut layers,
                Layer {
                    media_type: WASM_LAYER_MEDIA_TYPE,
                    digest: digest.clone(),
                    size,
                },
            );
            let mut source = content_ref(&digest, inline.as_deref());
            source.insert("content_type".into(), "application/wasm".into());
            let mut files = vec![];
            for (guest, file) in &c.files {
                let (digest, size, inline) = blob_from_file(layout, file)?;
                let mut f = content_ref(&digest, inline.as_deref());
                f.insert("path".into(), guest.clone().into());
                files.push(Value::Object(f));
                // Spin does not push inlined files: some registries reject tiny blobs.
                if inline.is_none() {
                    push(
                        &mut layers,
                        Layer {
                            media_type: DATA_MEDIA_TYPE,
                            digest,
                            size,
                        },
                    );
                }
            }
            let mut comp = serde_json::Map::new();
            comp.insert("id".into(), c.id.clone().into());
            if !c.metadata.is_empty() {
                comp.insert("metadata".into(), Value::Object(c.metadata.clone()));
            }
            comp.insert("source".into(), Value::Object(source));
            if !c.env.is_empty() {
                comp.insert("env".into(), json!(c.env));
            }
            if !files.is_empty() {
                comp.insert("files".into(), Value::Array(files));
            }
            if !c.config.is_empty() {
                comp.insert("config".into(), json!(c.config));
            }
            components.push(Value::Object(comp));
        }
        let mut locked = serde_json::Map::new();
        locked.insert("spin_lock_version".into(), 0.into());
        if !self.metadata.is_empty() {
            locked.insert("metadata".into(), Value::Object(self.metadata.clone()));
        }
        if !self.variables.is_empty() {
            locked.insert("variables".into(), Value::Object(self.variables.clone()));
        }
        locked.insert("triggers".into(), Value::Array(self.triggers.clone()));
        locked.insert("components".into(), Value::Array(components));
        let (locked_digest, locked_size) = write_json_blob(layout, &Value::Object(locked))?;
        layers.push(Layer {
            media_type: SPIN_APPLICATION_MEDIA_TYPE,
            digest: locked_digest.clone(),
            size: locked_size,
        });
        let config = json!({
            "architecture": "wasm",
            // What Spin writes (oci-spec's `Os::Other("Wasip1")`), byte for byte.
            "os": "Wasip1",
            "config": {"Labels": {LOCKED_APP_DIGEST_LABEL: locked_digest.to_string()}},
            "rootfs": {"type": "layers", "diff_ids": []},
        });
        let (config_digest, config_size) = write_json_blob(layout, &config)?;
        let annotations = annotations(
            ctx,
            &[
                ("authors", self.authors.join(", ")),
                ("title", self.name.clone()),
                ("description", self.description.clone()),
                ("version", self.version.clone()),
            ],
        );
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": config_digest.to_string(),
                "size": config_size,
            },
            "layers": layers.iter().map(layer_json).collect::<Vec<_>>(),
            "annotations": annotations,
        });
        write_json_blob(layout, &manifest)
    }

    fn write_wasm(
        &self,
        ctx: &BuildContext,
        layout: &OciLayout,
    ) -> Result<(Digest, u64), BuildError> {
        let [c] = self.components.as_slice() else {
            return Err(bad(format!(
                "[build.spin] format = \"wasm\" holds one component, and this app has {}: use format = \"spin\" (the default), which holds them all",
                self.components.len()
            )));
        };
        let is_component = check_wasm(&c.source, &c.source_rel, &c.id)?;
        let (digest, size, _) = blob_from_file(layout, &c.source)?;
        let config = json!({
            "created": rfc3339(ctx),
            "architecture": "wasm",
            "os": if is_component { "wasip2" } else { "wasip1" },
            "layerDigests": [digest.to_string()],
        });
        let (config_digest, config_size) = write_json_blob(layout, &config)?;
        let annotations = annotations(
            ctx,
            &[
                ("title", self.name.clone()),
                ("version", self.version.clone()),
            ],
        );
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "artifactType": WASM_CONFIG_MEDIA_TYPE,
            "config": {
                "mediaType": WASM_CONFIG_MEDIA_TYPE,
                "digest": config_digest.to_string(),
                "size": config_size,
            },
            "layers": [{"mediaType": WASM_MEDIA_TYPE, "digest": digest.to_string(), "size": size}],
            "annotations": annotations,
        });
        write_json_blob(layout, &manifest)
    }
}

/// Manifest annotations: `org.opencontainers.image.created` from `ctx`, then each of `fields`
/// (`org.opencontainers.image.` suffix, value) that is not empty.
fn annotations(ctx: &BuildContext, fields: &[(&str, String)]) -> serde_json::Map<String, Value> {
    let mut annotations = serde_json::Map::new();
    annotations.insert(
        "org.opencontainers.image.created".into(),
        rfc3339(ctx).into(),
    );
    for (key, value) in fields {
        if !value.is_empty() {
            annotations.insert(
                format!("org.opencontainers.image.{key}"),
                value.clone().into(),
            );
        }
    }
    annotations
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
        let text = std::fs::read_to_string(&path).unwrap_or_default();
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
        let (settings, format, manifest_path, rel) = Self::settings(ctx)?;
        let spin = if settings.build == Some(false) {
            None
        } else {
            self.spin_program()
        };
        let app = self.load(ctx, spin.is_some())?;
        if app.any_build() {
            match &spin {
                Some(program) => {
                    events.log(format!("Running spin build -f {rel}"));
                    let mut cmd = tokio::process::Command::new(program);
                    cmd.arg("build")
                        .arg("-f")
                        .arg(&manifest_path)
                        .current_dir(ctx.dir());
                    for (k, v) in &ctx.config().build.env {
                        cmd.env(k, v);
                    }
                    exec::run(cmd, events, exec::TAIL_LINES)
                        .await
                        .map_err(|e| e.into_build_error("install Spin (https://spinframework.dev/install) or commit the .wasm files"))?;
                }
                None => {
                    events.log("Spin is not installed: packaging the .wasm files in the repository")
                }
            }
        }
        // Read again: `spin build` made the .wasm files.
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
