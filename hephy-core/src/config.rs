//! `hephy.toml`: how an app is built and deployed.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::time::Duration;

use serde::de::{DeserializeOwned, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

use crate::unknown::UnknownFields;
use crate::Platform;

/// The file name of an app's configuration at the root of its repository.
pub const CONFIG_FILE: &str = "hephy.toml";

/// The largest `hephy.toml` [`AppConfig::load`] reads (1 MB).
const CONFIG_LIMIT: u64 = 1 << 20;

/// The error returned by [`AppConfig::from_toml`] and [`BuildConfig::backend_settings`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}{}: {message}", location(*.line, *.column))]
pub struct ConfigError {
    file: String,
    line: Option<usize>,
    column: Option<usize>,
    message: String,
}

fn location(line: Option<usize>, column: Option<usize>) -> String {
    match (line, column) {
        (Some(l), Some(c)) => format!(":{l}:{c}"),
        (Some(l), None) => format!(":{l}"),
        _ => String::new(),
    }
}

impl ConfigError {
    /// An error about `file` with no position.
    pub fn new(file: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            file: file.into(),
            line: None,
            column: None,
            message: message.into(),
        }
    }

    fn at(file: &str, src: &str, offset: Option<usize>, message: String) -> Self {
        let (line, column) = match offset {
            Some(o) => {
                let before = &src[..o.min(src.len())];
                let line = before.matches('\n').count() + 1;
                let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
                (Some(line), Some(column))
            }
            None => (None, None),
        };
        ConfigError {
            file: file.to_owned(),
            line,
            column,
            message,
        }
    }

    /// The 1-based line of the problem, when known.
    pub fn line(&self) -> Option<usize> {
        self.line
    }

    /// The 1-based column of the problem, when known.
    pub fn column(&self) -> Option<usize> {
        self.column
    }

    /// What is wrong, without the position.
    pub fn message(&self) -> &str {
        &self.message
    }
}

/// Which backend builds the app.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum BackendChoice {
    /// Ask every registered backend to detect the app and take the most confident.
    #[default]
    Auto,
    /// The backend with this name.
    Named(String),
}

impl fmt::Display for BackendChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BackendChoice::Auto => f.write_str("auto"),
            BackendChoice::Named(n) => f.write_str(n),
        }
    }
}

/// What a multi-platform build does when some platforms fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum PlatformFailurePolicy {
    /// Publish nothing if any platform fails.
    #[default]
    Fail,
    /// Publish the platforms that built, with a warning naming those that failed.
    PublishSuccessful,
}

/// How traffic moves to a new release.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Strategy {
    /// Start the new release beside the old one, switch when healthy, then stop the old one.
    #[default]
    Rolling,
    /// Stop the old release before starting the new one (for apps that cannot run twice).
    Recreate,
    /// Keep the old release ready until the new one is promoted (Flagger on Kubernetes).
    BlueGreen,
    /// Shift traffic to the new release in steps (Flagger on Kubernetes).
    Canary,
}

/// The settings of one backend, from its `[build.NAME]` table, read by that backend.
#[derive(Debug, Clone, PartialEq)]
pub struct BackendSettings {
    table: toml::Table,
    file: String,
    line: Option<usize>,
    column: Option<usize>,
}

/// The `[build]` section of `hephy.toml`.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct BuildConfig {
    /// Which backend builds the app (`backend = "auto"` by default).
    pub backend: BackendChoice,
    /// The platforms to build for (default: the host's).
    pub platforms: Vec<Platform>,
    /// How long the build of one platform may take before it is stopped.
    pub timeout: Option<Duration>,
    /// What to do when some platforms fail.
    pub platform_failure: PlatformFailurePolicy,
    /// Environment variables set for the build tools (not for the running app).
    pub env: BTreeMap<String, String>,
    /// Whether the build tools may reach the network, for dependency downloads (default true).
    /// `network = false` turns it off for this app; it can only narrow what the server's admin
    /// allows, never widen it.
    pub network: bool,
    backends: BTreeMap<String, BackendSettings>,
}

impl Default for BuildConfig {
    fn default() -> Self {
        BuildConfig {
            backend: BackendChoice::Auto,
            platforms: vec![Platform::host()],
            timeout: None,
            platform_failure: PlatformFailurePolicy::Fail,
            env: BTreeMap::new(),
            network: true,
            backends: BTreeMap::new(),
        }
    }
}

impl BuildConfig {
    /// The settings of backend `name` from its `[build.NAME]` table, or `T::default()` without one.
    ///
    /// Backends declare `T` with `#[serde(deny_unknown_fields)]`, so a misspelt key is an error
    /// that names the table and the key.
    pub fn backend_settings<T: DeserializeOwned + Default>(
        &self,
        name: &str,
    ) -> Result<T, ConfigError> {
        let Some(s) = self.backends.get(name) else {
            return Ok(T::default());
        };
        T::deserialize(toml::Value::Table(s.table.clone())).map_err(|e| ConfigError {
            file: s.file.clone(),
            line: s.line,
            column: s.column,
            message: format!("in [build.{name}]: {}", e.message().trim_end()),
        })
    }

    /// The names of the `[build.NAME]` tables present.
    pub fn backend_tables(&self) -> impl Iterator<Item = &str> {
        self.backends.keys().map(String::as_str)
    }

    /// Sets the platforms to build for.
    pub fn with_platforms(mut self, platforms: Vec<Platform>) -> Self {
        self.platforms = platforms;
        self
    }

    /// Sets the backend choice.
    pub fn with_backend(mut self, backend: BackendChoice) -> Self {
        self.backend = backend;
        self
    }
}

/// The health check a new release must pass before it gets traffic.
///
/// Like [`DeployConfig`], it is strict in `hephy.toml` and keeps unknown fields when stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub struct HealthCheck {
    /// An HTTP path that must answer 2xx or 3xx; without one, a TCP connect to the port is enough.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// How long a new release has to become healthy.
    #[serde(default = "default_health_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// How long to wait between two probes.
    #[serde(default = "default_health_interval", with = "humantime_serde")]
    pub interval: Duration,
    #[serde(flatten)]
    unknown: UnknownFields,
}

fn default_health_timeout() -> Duration {
    Duration::from_secs(60)
}

fn default_health_interval() -> Duration {
    Duration::from_millis(500)
}

impl Default for HealthCheck {
    fn default() -> Self {
        HealthCheck {
            path: None,
            timeout: default_health_timeout(),
            interval: default_health_interval(),
            unknown: UnknownFields::default(),
        }
    }
}

/// Resource limits for each running instance of the app.
///
/// Like [`DeployConfig`], it is strict in `hephy.toml` and keeps unknown fields when stored.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub struct Resources {
    /// Memory limit in bytes (`memory = "512M"` in `hephy.toml`).
    #[serde(default, skip_serializing_if = "Option::is_none", with = "bytes_serde")]
    pub memory: Option<u64>,
    /// CPU limit in cores (`cpus = 0.5`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<f64>,
    /// How many processes and threads the app may run at once (`pids = 512`); without it a
    /// deployer applies its own default (the local deployer's is 1024). Kubernetes sets this per
    /// node, not per app, so the Kubernetes deployer ignores it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids: Option<u32>,
    #[serde(flatten)]
    unknown: UnknownFields,
}

/// Whether an app may open connections to other hosts (`[deploy] egress`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Egress {
    /// The app reaches other hosts (the internet, DNS); never the services of its own host.
    #[default]
    Allow,
    /// The app only answers the requests routed to it: no connection leaves its container.
    Deny,
}

impl Egress {
    /// Whether this is the default, [`Egress::Allow`].
    pub fn is_default(&self) -> bool {
        *self == Egress::Allow
    }
}

/// The `[deploy]` section of `hephy.toml`, kept with every release.
///
/// Read from `hephy.toml` by [`AppConfig::from_toml`], unknown keys are errors with their line and
/// column, so a typo never silently falls back to a default. Its serde form is the stored one (a
/// release in a ledger): there, fields this version does not know were written by a newer hephy,
/// so they are accepted, kept, and written back when the settings are stored again (a rollback
/// copies them into the new release).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub struct DeployConfig {
    /// The port the app listens on; it is also given to the app as `PORT`.
    #[serde(default = "default_port")]
    pub port: u16,
    /// How many instances run (deployers that run one instance ignore more).
    #[serde(default = "default_replicas")]
    pub replicas: u32,
    /// How traffic moves to a new release.
    #[serde(default)]
    pub strategy: Strategy,
    /// The health check of a new release.
    #[serde(default)]
    pub health: HealthCheck,
    /// Resource limits.
    #[serde(default)]
    pub resources: Resources,
    /// Whether the app may open connections to other hosts (the local deployer enforces it;
    /// the Kubernetes deployer does not yet).
    #[serde(default, skip_serializing_if = "Egress::is_default")]
    pub egress: Egress,
    #[serde(flatten)]
    unknown: UnknownFields,
}

fn default_port() -> u16 {
    8080
}

fn default_replicas() -> u32 {
    1
}

impl Default for DeployConfig {
    fn default() -> Self {
        DeployConfig {
            port: default_port(),
            replicas: default_replicas(),
            strategy: Strategy::default(),
            health: HealthCheck::default(),
            resources: Resources::default(),
            egress: Egress::default(),
            unknown: UnknownFields::default(),
        }
    }
}

/// `[deploy]` as `hephy.toml` spells it, where an unknown key is an error (the stored form,
/// [`DeployConfig`], keeps unknown fields instead). The conversions below name every field, so a
/// field added to one form and not the other does not compile.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct TomlDeploy {
    #[serde(default = "default_port")]
    port: u16,
    #[serde(default = "default_replicas")]
    replicas: u32,
    #[serde(default)]
    strategy: Strategy,
    #[serde(default)]
    health: Option<TomlHealth>,
    #[serde(default)]
    resources: Option<TomlResources>,
    #[serde(default)]
    egress: Egress,
}

/// `[deploy.health]` in `hephy.toml`; see [`TomlDeploy`].
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct TomlHealth {
    #[serde(default)]
    path: Option<String>,
    #[serde(default = "default_health_timeout", with = "humantime_serde")]
    timeout: Duration,
    #[serde(default = "default_health_interval", with = "humantime_serde")]
    interval: Duration,
}

/// `[deploy.resources]` in `hephy.toml`; see [`TomlDeploy`].
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct TomlResources {
    #[serde(default, with = "bytes_serde")]
    memory: Option<u64>,
    #[serde(default)]
    cpus: Option<f64>,
    #[serde(default)]
    pids: Option<u32>,
}

impl TomlDeploy {
    fn into_stored(self) -> DeployConfig {
        let TomlDeploy {
            port,
            replicas,
            strategy,
            health,
            resources,
            egress,
        } = self;
        DeployConfig {
            port,
            replicas,
            strategy,
            health: health.map(TomlHealth::into_stored).unwrap_or_default(),
            resources: resources
                .map(TomlResources::into_stored)
                .unwrap_or_default(),
            egress,
            unknown: UnknownFields::default(),
        }
    }
}

impl TomlHealth {
    fn into_stored(self) -> HealthCheck {
        let TomlHealth {
            path,
            timeout,
            interval,
        } = self;
        HealthCheck {
            path,
            timeout,
            interval,
            unknown: UnknownFields::default(),
        }
    }
}

impl TomlResources {
    fn into_stored(self) -> Resources {
        let TomlResources { memory, cpus, pids } = self;
        Resources {
            memory,
            cpus,
            pids,
            unknown: UnknownFields::default(),
        }
    }
}

/// An app's configuration, from `hephy.toml` at the root of its repository.
///
/// Every key is optional; an absent file means all defaults. Unknown keys are errors that give
/// the line and column, so a typo never silently falls back to a default.
///
/// ```
/// use hephy_core::{AppConfig, BackendChoice, Platform};
/// let config = AppConfig::from_toml("hephy.toml", r#"
/// [build]
/// backend = "go"
/// platforms = ["linux/amd64", "linux/arm64"]
/// timeout = "10m"
///
/// [build.go]
/// main = "./cmd/server"
///
/// [deploy]
/// port = 5000
/// health = { path = "/healthz" }
/// "#)?;
/// assert_eq!(config.build.backend, BackendChoice::Named("go".into()));
/// assert_eq!(config.build.platforms, vec![Platform::linux_amd64(), Platform::linux_arm64()]);
/// assert_eq!(config.deploy.port, 5000);
///
/// let err = AppConfig::from_toml("hephy.toml", "[deploy]\nprot = 5000\n").unwrap_err();
/// assert!(err.to_string().starts_with("hephy.toml:2:1: unknown field `prot`"));
/// # Ok::<(), hephy_core::ConfigError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Default)]
#[non_exhaustive]
pub struct AppConfig {
    /// How the app is built.
    pub build: BuildConfig,
    /// How the app is deployed.
    pub deploy: DeployConfig,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    build: Option<toml::Spanned<RawBuild>>,
    #[serde(default)]
    deploy: Option<TomlDeploy>,
}

#[derive(Default)]
struct RawBuild {
    backend: Option<String>,
    platforms: Option<Vec<Platform>>,
    timeout: Option<Duration>,
    platform_failure: Option<PlatformFailurePolicy>,
    env: BTreeMap<String, String>,
    network: Option<bool>,
    tables: BTreeMap<String, toml::Spanned<toml::Table>>,
}

const BUILD_KEYS: &[&str] = &[
    "backend",
    "platforms",
    "timeout",
    "platform-failure",
    "env",
    "network",
];

impl<'de> Deserialize<'de> for RawBuild {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawBuild;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("the [build] table")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawBuild, A::Error> {
                let mut b = RawBuild::default();
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        "backend" => b.backend = Some(map.next_value()?),
                        "platforms" => b.platforms = Some(map.next_value()?),
                        "timeout" => {
                            let s: String = map.next_value()?;
                            b.timeout = Some(humantime::parse_duration(&s).map_err(|e| {
                                serde::de::Error::custom(format!(
                                    "invalid timeout {s:?}: {e}; write a duration like \"90s\" or \"15m\""
                                ))
                            })?);
                        }
                        "platform-failure" => b.platform_failure = Some(map.next_value()?),
                        "env" => b.env = map.next_value()?,
                        "network" => b.network = Some(map.next_value()?),
                        _ => {
                            let v: toml::Spanned<toml::Value> = map.next_value()?;
                            let span = v.span();
                            match v.into_inner() {
                                toml::Value::Table(t) => {
                                    b.tables.insert(key, toml::Spanned::new(span, t));
                                }
                                _ => {
                                    return Err(serde::de::Error::custom(format!(
                                        "unknown field `{key}` in [build], expected one of {}, or a [build.BACKEND] table",
                                        BUILD_KEYS.iter().map(|k| format!("`{k}`")).collect::<Vec<_>>().join(", ")
                                    )))
                                }
                            }
                        }
                    }
                }
                Ok(b)
            }
        }
        d.deserialize_map(V)
    }
}

impl AppConfig {
    /// Parses `hephy.toml` text; `file` names it in errors.
    pub fn from_toml(file: &str, src: &str) -> Result<AppConfig, ConfigError> {
        let raw: RawConfig = toml::from_str(src).map_err(|e| {
            let message = e.message().trim_end().to_owned();
            let offset = e.span().map(|s| refine_offset(src, s.start, &message));
            ConfigError::at(file, src, offset, message)
        })?;
        let mut build = BuildConfig::default();
        if let Some(spanned) = raw.build {
            let span = spanned.span();
            let rb = spanned.into_inner();
            if let Some(b) = rb.backend {
                build.backend = match b.as_str() {
                    "auto" | "" => BackendChoice::Auto,
                    _ => BackendChoice::Named(b),
                };
            }
            if let Some(p) = rb.platforms {
                if p.is_empty() {
                    return Err(ConfigError::at(
                        file,
                        src,
                        Some(span.start),
                        "[build] platforms is empty: list at least one, like [\"linux/amd64\"], or remove the key to build for this host".into(),
                    ));
                }
                let mut dedup = Vec::new();
                for x in p {
                    if !dedup.contains(&x) {
                        dedup.push(x);
                    }
                }
                build.platforms = dedup;
            }
            build.timeout = rb.timeout;
            if let Some(f) = rb.platform_failure {
                build.platform_failure = f;
            }
            build.env = rb.env;
            if let Some(n) = rb.network {
                build.network = n;
            }
            for (name, t) in rb.tables {
                let tspan = t.span();
                let probe = ConfigError::at(file, src, Some(tspan.start), String::new());
                build.backends.insert(
                    name,
                    BackendSettings {
                        table: t.into_inner(),
                        file: file.to_owned(),
                        line: probe.line,
                        column: probe.column,
                    },
                );
            }
        }
        let deploy = raw.deploy.map(TomlDeploy::into_stored).unwrap_or_default();
        if let Some(p) = &deploy.health.path {
            if !p.starts_with('/') {
                return Err(ConfigError::new(
                    file,
                    format!("[deploy.health] path {p:?} must start with '/', like \"/healthz\""),
                ));
            }
        }
        if deploy.port == 0 {
            return Err(ConfigError::new(
                file,
                "[deploy] port 0 is not a port: use the port your app listens on, like 8080",
            ));
        }
        Ok(AppConfig { build, deploy })
    }

    /// Reads `hephy.toml` from the directory `root`; all defaults if there is none.
    ///
    /// The file comes from a push, so it is read with a bound (1 MB) and must be a
    /// regular file inside `root` after following symlinks: a committed `hephy.toml ->
    /// /dev/zero` (or `-> /etc/...`) is refused, not read.
    pub fn load(root: &Path) -> Result<AppConfig, ConfigError> {
        use std::io::Read as _;
        let path = root.join(CONFIG_FILE);
        let cannot = |e: std::io::Error| {
            ConfigError::new(CONFIG_FILE, format!("cannot read {}: {e}", path.display()))
        };
        let meta = match std::fs::symlink_metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(AppConfig::default()),
            Err(e) => return Err(cannot(e)),
        };
        if meta.file_type().is_symlink() {
            let inside = match (path.canonicalize(), root.canonicalize()) {
                (Ok(real), Ok(root)) => real.starts_with(&root),
                _ => false,
            };
            if !inside {
                return Err(ConfigError::new(
                    CONFIG_FILE,
                    "a symlink that leads outside the repository (or nowhere): commit the file itself instead of a link",
                ));
            }
        }
        let meta = std::fs::metadata(&path).map_err(cannot)?;
        if !meta.is_file() {
            return Err(ConfigError::new(
                CONFIG_FILE,
                "not a regular file: commit a text file named hephy.toml",
            ));
        }
        let mut bytes = Vec::new();
        std::fs::File::open(&path)
            .map_err(cannot)?
            .take(CONFIG_LIMIT + 1)
            .read_to_end(&mut bytes)
            .map_err(cannot)?;
        if bytes.len() as u64 > CONFIG_LIMIT {
            return Err(ConfigError::new(
                CONFIG_FILE,
                format!(
                    "{} bytes; the limit is 1 MB: keep it to settings (a hephy.toml is a few lines)",
                    meta.len().max(bytes.len() as u64)
                ),
            ));
        }
        let src = String::from_utf8(bytes)
            .map_err(|_| ConfigError::new(CONFIG_FILE, "not UTF-8 text: save it as UTF-8"))?;
        AppConfig::from_toml(CONFIG_FILE, &src)
    }
}

/// Errors raised inside the `[build]` table carry the table's position; point at the key instead.
fn refine_offset(src: &str, offset: usize, message: &str) -> usize {
    if !src[offset.min(src.len())..].starts_with('[') {
        return offset;
    }
    let key = if let Some(rest) = message.strip_prefix("unknown field `") {
        rest.split('`').next()
    } else if message.starts_with("invalid timeout") {
        Some("timeout")
    } else {
        None
    };
    let Some(key) = key else { return offset };
    let mut pos = offset;
    for line in src[offset..].split_inclusive('\n') {
        let t = line.trim_start();
        if t.strip_prefix(key)
            .is_some_and(|r| r.trim_start().starts_with('='))
        {
            return pos + (line.len() - t.len());
        }
        pos += line.len();
    }
    offset
}

pub(crate) mod humantime_serde {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_duration(*d))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s).map_err(|e| {
            serde::de::Error::custom(format!(
                "invalid duration {s:?}: {e}; write a duration like \"500ms\", \"30s\" or \"2m\""
            ))
        })
    }
}

mod bytes_serde {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<u64>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(b) => s.serialize_u64(*b),
            None => s.serialize_none(),
        }
    }

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        N(u64),
        S(String),
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        match Option::<Raw>::deserialize(d)? {
            None => Ok(None),
            Some(Raw::N(n)) => Ok(Some(n)),
            Some(Raw::S(s)) => parse(&s).map(Some).ok_or_else(|| {
                serde::de::Error::custom(format!(
                    "invalid size {s:?}: write a number of bytes with an optional K, M or G suffix, like \"512M\""
                ))
            }),
        }
    }

    fn parse(s: &str) -> Option<u64> {
        let s = s.trim();
        let (num, mult) = match s.char_indices().find(|(_, c)| c.is_ascii_alphabetic()) {
            Some((i, _)) => {
                let unit = s[i..].to_ascii_lowercase();
                let m = match unit.as_str() {
                    "b" => 1,
                    "k" | "kb" | "ki" | "kib" => 1 << 10,
                    "m" | "mb" | "mi" | "mib" => 1 << 20,
                    "g" | "gb" | "gi" | "gib" => 1 << 30,
                    _ => return None,
                };
                (&s[..i], m)
            }
            None => (s, 1),
        };
        num.trim().parse::<u64>().ok()?.checked_mul(mult)
    }
}
