//! Registry credentials: anonymous, basic, bearer token, or Docker's `config.json`.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine as _;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

/// How to authenticate to a registry.
///
/// Basic credentials also work with registries that use a token service (Docker Hub, Harbor,
/// GitLab): they are exchanged for a bearer token as the registry's `WWW-Authenticate` challenge
/// asks.
///
/// Passwords and tokens are [`SecretString`]s: `Debug` shows `[redacted]` in their place, and
/// their memory is zeroed when dropped.
///
/// ```
/// use hephy_oci::registry::RegistryAuth;
/// let auth = RegistryAuth::basic("ci", "s3cret");
/// assert_eq!(format!("{auth:?}"), r#"Basic { username: "ci", password: "[redacted]" }"#);
/// ```
#[derive(Clone, Default)]
#[non_exhaustive]
pub enum RegistryAuth {
    /// No credentials.
    Anonymous,
    /// A user name and password (or access token used as a password).
    Basic {
        /// The user name.
        username: String,
        /// The password or token.
        password: SecretString,
    },
    /// A bearer token sent as it is.
    Bearer(SecretString),
    /// The credentials `docker login` stored for the registry in Docker's `config.json`
    /// (`$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`), anonymous when there are
    /// none.
    #[default]
    DockerConfig,
}

impl fmt::Debug for RegistryAuth {
    // Never print secrets.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RegistryAuth::Anonymous => f.write_str("Anonymous"),
            RegistryAuth::Basic { username, .. } => f
                .debug_struct("Basic")
                .field("username", username)
                .field("password", &REDACTED)
                .finish(),
            RegistryAuth::Bearer(_) => f.write_str("Bearer([redacted])"),
            RegistryAuth::DockerConfig => f.write_str("DockerConfig"),
        }
    }
}

/// What `Debug` shows in place of a secret.
const REDACTED: &str = "[redacted]";

impl PartialEq for RegistryAuth {
    fn eq(&self, other: &Self) -> bool {
        use RegistryAuth::*;
        match (self, other) {
            (Anonymous, Anonymous) | (DockerConfig, DockerConfig) => true,
            (
                Basic {
                    username: u1,
                    password: p1,
                },
                Basic {
                    username: u2,
                    password: p2,
                },
            ) => u1 == u2 && p1.expose_secret() == p2.expose_secret(),
            (Bearer(a), Bearer(b)) => a.expose_secret() == b.expose_secret(),
            _ => false,
        }
    }
}

impl Eq for RegistryAuth {}

impl RegistryAuth {
    /// Basic credentials.
    pub fn basic(username: impl Into<String>, password: impl Into<SecretString>) -> Self {
        RegistryAuth::Basic {
            username: username.into(),
            password: password.into(),
        }
    }

    /// A bearer token.
    pub fn bearer(token: impl Into<SecretString>) -> Self {
        RegistryAuth::Bearer(token.into())
    }

    /// What to send to `registry`: Docker config credentials are looked up here.
    pub fn resolve(&self, registry: &str) -> Result<oci_client::secrets::RegistryAuth, AuthError> {
        use oci_client::secrets::RegistryAuth as Oci;
        Ok(match self {
            RegistryAuth::Anonymous => Oci::Anonymous,
            // oci-client holds credentials as plain strings; they go to it only for a request.
            RegistryAuth::Basic { username, password } => {
                Oci::Basic(username.clone(), password.expose_secret().to_owned())
            }
            RegistryAuth::Bearer(token) => Oci::Bearer(token.expose_secret().to_owned()),
            RegistryAuth::DockerConfig => match DockerConfig::load()? {
                Some(config) => match config.credentials(registry)? {
                    Some(Credentials { username, password }) => {
                        Oci::Basic(username, password.expose_secret().to_owned())
                    }
                    None => Oci::Anonymous,
                },
                None => Oci::Anonymous,
            },
        })
    }

    /// A short description for messages: `anonymous`, `user "ci"`, ...
    pub fn describe(&self) -> String {
        match self {
            RegistryAuth::Anonymous => "no credentials".to_owned(),
            RegistryAuth::Basic { username, .. } => format!("user {username:?}"),
            RegistryAuth::Bearer(_) => "a bearer token".to_owned(),
            RegistryAuth::DockerConfig => "credentials from docker config.json".to_owned(),
        }
    }
}

/// The error returned when registry credentials cannot be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// The Docker config file cannot be read.
    #[error("cannot read docker config {}: {source}; fix its permissions or point DOCKER_CONFIG at another directory", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The Docker config file is not valid.
    #[error("invalid docker config {}: {message}; run `docker login REGISTRY` again or fix the file", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A credential helper failed.
    #[error("docker credential helper `{helper}` failed for {registry}: {message}; run `docker login {registry}` or remove the helper from config.json")]
    Helper {
        /// The helper program.
        helper: String,
        /// The registry.
        registry: String,
        /// What happened.
        message: String,
    },
}

/// A user name and password for a registry; `Debug` shows `[redacted]` for the password.
#[derive(Clone)]
#[non_exhaustive]
pub struct Credentials {
    /// The user name.
    pub username: String,
    /// The password or token.
    pub password: SecretString,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &REDACTED)
            .finish()
    }
}

impl PartialEq for Credentials {
    fn eq(&self, other: &Self) -> bool {
        self.username == other.username
            && self.password.expose_secret() == other.password.expose_secret()
    }
}

impl Eq for Credentials {}

/// Docker's `config.json`: the `auths` that `docker login` writes, and credential helpers.
#[derive(Debug, Clone, Default)]
pub struct DockerConfig {
    path: PathBuf,
    file: ConfigFile,
}

#[derive(Debug, Clone, Default, Deserialize)]
struct ConfigFile {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
    #[serde(default, rename = "credsStore")]
    creds_store: Option<String>,
    #[serde(default, rename = "credHelpers")]
    cred_helpers: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<SecretString>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<SecretString>,
}

#[derive(Deserialize)]
struct HelperReply {
    #[serde(rename = "Username")]
    username: String,
    #[serde(rename = "Secret")]
    secret: SecretString,
}

impl DockerConfig {
    /// Where Docker keeps it: `$DOCKER_CONFIG/config.json`, else `$HOME/.docker/config.json`.
    pub fn default_path() -> Option<PathBuf> {
        if let Some(dir) = std::env::var_os("DOCKER_CONFIG").filter(|d| !d.is_empty()) {
            return Some(PathBuf::from(dir).join("config.json"));
        }
        std::env::var_os("HOME")
            .filter(|d| !d.is_empty())
            .map(|home| PathBuf::from(home).join(".docker").join("config.json"))
    }

    /// Reads the file at [`DockerConfig::default_path`]; `None` when there is none.
    pub fn load() -> Result<Option<DockerConfig>, AuthError> {
        match DockerConfig::default_path() {
            Some(path) if path.is_file() => DockerConfig::from_path(&path).map(Some),
            _ => Ok(None),
        }
    }

    /// Reads a `config.json`.
    pub fn from_path(path: &Path) -> Result<DockerConfig, AuthError> {
        let text = std::fs::read_to_string(path).map_err(|source| AuthError::Read {
            path: path.to_owned(),
            source,
        })?;
        let file: ConfigFile = serde_json::from_str(&text).map_err(|e| AuthError::Invalid {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        Ok(DockerConfig {
            path: path.to_owned(),
            file,
        })
    }

    /// The credentials stored for `registry` (`host[:port]`), if any: from `auths` (the base64
    /// `auth` field or `username`/`password`), else from `credHelpers` or `credsStore` by
    /// running `docker-credential-HELPER get`.
    pub fn credentials(&self, registry: &str) -> Result<Option<Credentials>, AuthError> {
        let keys = registry_keys(registry);
        for (key, entry) in &self.file.auths {
            if !keys.contains(&normalize_key(key)) {
                continue;
            }
            if let Some(auth) = entry
                .auth
                .as_ref()
                .map(|a| a.expose_secret())
                .filter(|a| !a.is_empty())
            {
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(auth.trim())
                    .map_err(|e| self.invalid(format!("auths.{key}.auth is not base64: {e}")))?;
                let text = String::from_utf8(decoded)
                    .map_err(|_| self.invalid(format!("auths.{key}.auth is not UTF-8")))?;
                let Some((username, password)) = text.split_once(':') else {
                    return Err(self.invalid(format!("auths.{key}.auth must encode USER:PASSWORD")));
                };
                return Ok(Some(Credentials {
                    username: username.to_owned(),
                    password: password.into(),
                }));
            }
            if let (Some(u), Some(p)) = (&entry.username, &entry.password) {
                return Ok(Some(Credentials {
                    username: u.clone(),
                    password: p.clone(),
                }));
            }
        }
        let helper = self
            .file
            .cred_helpers
            .iter()
            .find(|(k, _)| keys.contains(&normalize_key(k)))
            .map(|(_, v)| v.clone())
            .or_else(|| self.file.creds_store.clone());
        match helper {
            Some(helper) => run_helper(&helper, registry),
            None => Ok(None),
        }
    }

    fn invalid(&self, message: String) -> AuthError {
        AuthError::Invalid {
            path: self.path.clone(),
            message,
        }
    }
}

/// The keys `config.json` may use for `registry`.
fn registry_keys(registry: &str) -> Vec<String> {
    let mut keys = vec![registry.to_owned()];
    if matches!(
        registry,
        "docker.io" | "index.docker.io" | "registry-1.docker.io"
    ) {
        keys.extend(["docker.io", "index.docker.io", "registry-1.docker.io"].map(String::from));
    }
    keys
}

/// `https://index.docker.io/v1/` -> `index.docker.io`.
fn normalize_key(key: &str) -> String {
    let key = key
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    key.split('/').next().unwrap_or(key).to_owned()
}

fn run_helper(helper: &str, registry: &str) -> Result<Option<Credentials>, AuthError> {
    let program = format!("docker-credential-{helper}");
    let fail = |message: String| AuthError::Helper {
        helper: program.clone(),
        registry: registry.to_owned(),
        message,
    };
    let mut child = match Command::new(&program)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        // A helper named in config.json but not installed: behave like docker without it.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(fail(e.to_string())),
    };
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(registry.as_bytes())
            .map_err(|e| fail(e.to_string()))?;
    }
    let out = child.wait_with_output().map_err(|e| fail(e.to_string()))?;
    if !out.status.success() {
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        // The helper protocol's answer for "no credentials for this server".
        if text.contains("credentials not found") {
            return Ok(None);
        }
        return Err(fail(text.trim().to_owned()));
    }
    let reply: HelperReply =
        serde_json::from_slice(&out.stdout).map_err(|e| fail(format!("unexpected output: {e}")))?;
    Ok(Some(Credentials {
        username: reply.username,
        password: reply.secret,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_base64_auth_and_plain_fields() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile_dir()?;
        let path = dir.join("config.json");
        std::fs::write(
            &path,
            r#"{"auths": {
                "https://index.docker.io/v1/": {"auth": "aHViOnNlY3JldA=="},
                "registry.example:5000": {"username": "ci", "password": "pw"}
            }}"#,
        )?;
        let config = DockerConfig::from_path(&path)?;
        let hub = config.credentials("docker.io")?;
        assert_eq!(
            hub.map(|c| (c.username, c.password.expose_secret().to_owned())),
            Some(("hub".into(), "secret".into()))
        );
        let other = config.credentials("registry.example:5000")?;
        assert_eq!(other.map(|c| c.username), Some("ci".into()));
        assert!(config.credentials("elsewhere.example")?.is_none());
        std::fs::remove_dir_all(dir)?;
        Ok(())
    }

    #[test]
    fn debug_never_shows_a_password_or_token() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile_dir()?.join("debug");
        std::fs::create_dir_all(&dir)?;
        let path = dir.join("config.json");
        // "aHViOnMzY3JldC1hdXRo" is base64 of "hub:s3cret-auth".
        std::fs::write(
            &path,
            r#"{"auths": {
                "docker.io": {"auth": "aHViOnMzY3JldC1hdXRo"},
                "registry.example": {"username": "ci", "password": "s3cret-plain"}
            }}"#,
        )?;
        let config = DockerConfig::from_path(&path)?;
        let creds = config.credentials("docker.io")?.ok_or("no credentials")?;
        let options =
            crate::registry::RegistryOptions::new().auth(RegistryAuth::basic("ci", "s3cret-basic"));
        let shown = [
            format!("{:?}", RegistryAuth::basic("ci", "s3cret-basic")),
            format!("{:?}", RegistryAuth::bearer("s3cret-bearer")),
            format!("{creds:?}"),
            format!("{config:?}"),
            format!("{options:?}"),
        ];
        for text in &shown {
            assert!(!text.contains("s3cret"), "a secret in {text}");
            assert!(
                !text.contains("aHViOnMzY3JldC1hdXRo"),
                "an encoded secret in {text}"
            );
        }
        assert_eq!(
            shown[0],
            r#"Basic { username: "ci", password: "[redacted]" }"#
        );
        assert_eq!(shown[1], "Bearer([redacted])");
        assert!(shown[4].contains("[redacted]"), "{}", shown[4]);
        assert_eq!(creds.password.expose_secret(), "s3cret-auth");
        std::fs::remove_dir_all(dir)?;
        Ok(())
    }

    fn tempfile_dir() -> std::io::Result<PathBuf> {
        let dir = std::env::temp_dir().join(format!("hephy-auth-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        Ok(dir)
    }
}
