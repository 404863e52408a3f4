//! `spin.toml` (manifest version 2) read and resolved against the repository: triggers with
//! the ids Spin gives them, components with their Wasm source and the files they mount.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use hephy_core::BuildError;
use serde::Deserialize;
use serde_json::{json, Value};

use super::bad;
use super::files::{resolve_files, Dirs};
use crate::paths;

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
pub(super) enum RawMount {
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
pub(super) struct SpinApp {
    pub(super) name: String,
    pub(super) version: String,
    pub(super) description: String,
    pub(super) authors: Vec<String>,
    /// Locked metadata of the app.
    pub(super) metadata: serde_json::Map<String, Value>,
    pub(super) variables: serde_json::Map<String, Value>,
    pub(super) triggers: Vec<Value>,
    pub(super) components: Vec<Component>,
}

#[derive(Debug, Clone)]
pub(super) struct Component {
    pub(super) id: String,
    pub(super) source: PathBuf,
    pub(super) source_rel: String,
    pub(super) metadata: serde_json::Map<String, Value>,
    pub(super) env: BTreeMap<String, String>,
    pub(super) config: BTreeMap<String, String>,
    /// `(path in the guest, relative; file on disk)`, sorted by guest path.
    pub(super) files: Vec<(String, PathBuf)>,
    pub(super) has_build: bool,
}

fn json_table(t: &toml::Table) -> Value {
    serde_json::to_value(t).unwrap_or(Value::Null)
}

impl SpinApp {
    /// Parses and resolves the manifest, `rel` in the repository at `repo`, whose paths are
    /// relative to its directory `root`. With `may_build`, a missing `.wasm` of a component
    /// with a build command is not an error yet (`spin build` will make it).
    pub(super) fn parse(
        rel: &str,
        text: &str,
        repo: &Path,
        root: &Path,
        may_build: bool,
    ) -> Result<SpinApp, BuildError> {
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
            let dirs = Dirs { repo, root };
            out.push(resolve_component(rel, dirs, &id, c, may_build)?);
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

    pub(super) fn any_build(&self) -> bool {
        self.components.iter().any(|c| c.has_build)
    }
}

fn resolve_component(
    rel: &str,
    dirs: Dirs<'_>,
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
    let source = paths::resolve_in(
        dirs.repo,
        dirs.root,
        &format!("component {id} source"),
        &source_rel,
    )?;
    let has_build = c.build.as_ref().is_some_and(|b| b.get("command").is_some());
    // A link to /dev/zero or a FIFO would never end; the real path must be a regular file.
    let exists = paths::regular_file(dirs.repo, &source, &source_rel)
        .map_err(|e| bad(format!("{rel}: component {id}: {e}")))?
        .is_some();
    if !(exists || may_build && has_build) {
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
    let files = resolve_files(rel, dirs, id, &c.files, &c.exclude_files)?;
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
