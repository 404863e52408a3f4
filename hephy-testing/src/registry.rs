//! Real servers and tools for tests: a Debian `docker-registry` on loopback and `skopeo`.
//!
//! Enabled by the cargo feature `testing`. Other crates use it as a dev-dependency:
//!
//! ```toml
//! [dev-dependencies]
//! hephy-backends = { workspace = true, features = ["testing"] }
//! ```
//!
//! ```no_run
//! use hephy_testing::{skopeo_inspect_raw, TestRegistry};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let registry = TestRegistry::start()?;
//! let reference = registry.reference("apps/hello", "v1")?;
//! // ... push something to `reference` ...
//! let manifest = skopeo_inspect_raw(&reference.to_string(), registry.credentials())?;
//! # Ok(()) }
//! ```

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hephy_core::{Reference, ReferenceError};

/// Where Debian installs the registry (package `docker-registry`).
pub const DOCKER_REGISTRY: &str = "/usr/bin/docker-registry";

/// How long [`TestRegistry::start`] waits for `/v2/` to answer.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// The error returned by [`TestRegistry`] and the skopeo helpers.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TestingError {
    /// A program is missing.
    #[error("{program} not found: install the Debian package {package} (scripts/install-deps.sh lists it)")]
    Missing {
        /// The program.
        program: String,
        /// The Debian package that has it.
        package: String,
    },
    /// A file or process operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
    /// The registry did not come up.
    #[error("docker-registry did not answer on {addr} within {timeout:?}; its log:\n{log}")]
    NotReady {
        /// The address it was started on.
        addr: SocketAddr,
        /// How long we waited.
        timeout: Duration,
        /// The registry's own output.
        log: String,
    },
    /// A tool exited with an error.
    #[error("`{command}` failed ({status}):\n{stderr}")]
    Failed {
        /// The command line.
        command: String,
        /// Its exit status.
        status: String,
        /// What it printed on stderr.
        stderr: String,
    },
    /// A tool printed something that is not the JSON it should print.
    #[error("`{command}` printed invalid JSON: {source}")]
    Json {
        /// The command line.
        command: String,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
    /// Hashing the password for htpasswd failed.
    #[error("cannot hash the test password with bcrypt: {0}")]
    Bcrypt(#[from] bcrypt::BcryptError),
    /// A reference could not be formed.
    #[error(transparent)]
    Reference(#[from] ReferenceError),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> TestingError {
    let what = what.into();
    move |source| TestingError::Io { what, source }
}

/// A Debian `docker-registry` (distribution 2.x) serving plain HTTP on a free `127.0.0.1` port,
/// with filesystem storage in a temporary directory, optionally behind htpasswd basic auth.
///
/// The process is killed and the storage removed when the value is dropped.
#[derive(Debug)]
pub struct TestRegistry {
    child: Child,
    addr: SocketAddr,
    credentials: Option<(String, String)>,
    // Declared last so the directory outlives the process using it.
    dir: tempfile::TempDir,
}

/// Options for [`TestRegistry`]; start with [`TestRegistry::builder`].
#[derive(Debug, Default, Clone)]
#[non_exhaustive]
pub struct TestRegistryBuilder {
    credentials: Option<(String, String)>,
    token: Option<TokenAuth>,
}

/// Token authentication for a [`TestRegistry`]: clients get bearer tokens (JWTs) from a token
/// service at `realm`, signed with a key whose certificate is in `root_cert_bundle`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TokenAuth {
    /// The token service's URL.
    pub realm: String,
    /// The `service` (token audience).
    pub service: String,
    /// The `iss` of the tokens.
    pub issuer: String,
    /// PEM certificates that sign tokens.
    pub root_cert_bundle: PathBuf,
}

impl TokenAuth {
    /// Token auth with these settings.
    pub fn new(
        realm: impl Into<String>,
        service: impl Into<String>,
        issuer: impl Into<String>,
        root_cert_bundle: impl Into<PathBuf>,
    ) -> Self {
        TokenAuth {
            realm: realm.into(),
            service: service.into(),
            issuer: issuer.into(),
            root_cert_bundle: root_cert_bundle.into(),
        }
    }
}

impl TestRegistryBuilder {
    /// Requires HTTP basic auth with this user and password (a bcrypt htpasswd file).
    pub fn basic_auth(mut self, user: impl Into<String>, password: impl Into<String>) -> Self {
        self.credentials = Some((user.into(), password.into()));
        self
    }

    /// Requires bearer tokens from a token service (instead of basic auth).
    pub fn token_auth(mut self, token: TokenAuth) -> Self {
        self.token = Some(token);
        self
    }

    /// Starts the registry and waits until `/v2/` answers.
    pub fn start(self) -> Result<TestRegistry, TestingError> {
        if !Path::new(DOCKER_REGISTRY).exists() {
            return Err(TestingError::Missing {
                program: DOCKER_REGISTRY.into(),
                package: "docker-registry".into(),
            });
        }
        let dir = tempfile::Builder::new()
            .prefix("hephy-registry-")
            .tempdir()
            .map_err(io("cannot create a temp dir for the test registry"))?;
        let htpasswd = match &self.credentials {
            Some((user, password)) => {
                // The registry checks the hash on every request: the lowest cost keeps tests fast.
                let hash = bcrypt::hash(password, bcrypt::DEFAULT_COST.min(4))?;
                let path = dir.path().join("htpasswd");
                fs::write(&path, format!("{user}:{hash}\n"))
                    .map_err(io(format!("cannot write {}", path.display())))?;
                Some(path)
            }
            None => None,
        };
        // The port is free when we look; another process could take it before the registry
        // binds it, so a registry that exits at once is retried on a new port.
        let mut attempt = 0;
        loop {
            attempt += 1;
            let addr = free_port()?;
            let config = dir.path().join("config.yml");
            fs::write(
                &config,
                config_yaml(dir.path(), addr, htpasswd.as_deref(), self.token.as_ref()),
            )
            .map_err(io(format!("cannot write {}", config.display())))?;
            let log_path = dir.path().join("registry.log");
            let log = fs::File::create(&log_path)
                .map_err(io(format!("cannot create {}", log_path.display())))?;
            let log2 = log
                .try_clone()
                .map_err(io("cannot duplicate the registry log handle"))?;
            let mut child = Command::new(DOCKER_REGISTRY)
                .arg("serve")
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(log)
                .stderr(log2)
                .spawn()
                .map_err(io(format!("cannot start {DOCKER_REGISTRY}")))?;
            match wait_ready(&mut child, addr, &log_path) {
                Ok(()) => {
                    return Ok(TestRegistry {
                        child,
                        addr,
                        credentials: self.credentials,
                        dir,
                    })
                }
                Err(e) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    if attempt >= 3 {
                        return Err(e);
                    }
                }
            }
        }
    }
}

fn wait_ready(child: &mut Child, addr: SocketAddr, log_path: &Path) -> Result<(), TestingError> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(TestingError::Failed {
                command: format!("{DOCKER_REGISTRY} serve"),
                status: status.to_string(),
                stderr: fs::read_to_string(log_path).unwrap_or_default(),
            });
        }
        if probe_v2(addr) {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(TestingError::NotReady {
                addr,
                timeout: START_TIMEOUT,
                log: fs::read_to_string(log_path).unwrap_or_default(),
            });
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

fn free_port() -> Result<SocketAddr, TestingError> {
    let listener =
        TcpListener::bind("127.0.0.1:0").map_err(io("cannot bind a free port on 127.0.0.1"))?;
    listener
        .local_addr()
        .map_err(io("cannot read the address of a loopback listener"))
}

fn config_yaml(
    dir: &Path,
    addr: SocketAddr,
    htpasswd: Option<&Path>,
    token: Option<&TokenAuth>,
) -> String {
    let storage = dir.join("storage");
    let mut yaml = format!(
        "version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: {storage}
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: {addr}
  secret: hephy-test-registry-secret
",
        storage = storage.display(),
    );
    if let Some(t) = token {
        yaml.push_str(&format!(
            "auth:\n  token:\n    realm: {}\n    service: {}\n    issuer: {}\n    rootcertbundle: {}\n",
            t.realm,
            t.service,
            t.issuer,
            t.root_cert_bundle.display()
        ));
    } else if let Some(path) = htpasswd {
        yaml.push_str(&format!(
            "auth:\n  htpasswd:\n    realm: hephy-test\n    path: {}\n",
            path.display()
        ));
    }
    yaml
}

impl TestRegistry {
    /// Starts an anonymous registry.
    pub fn start() -> Result<TestRegistry, TestingError> {
        TestRegistry::builder().start()
    }

    /// Starts a registry that requires `user` and `password` (HTTP basic auth).
    pub fn start_with_auth(user: &str, password: &str) -> Result<TestRegistry, TestingError> {
        TestRegistry::builder().basic_auth(user, password).start()
    }

    /// Options for a registry.
    pub fn builder() -> TestRegistryBuilder {
        TestRegistryBuilder::default()
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The registry host as references name it: `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// A reference to `repository:tag` on this registry.
    pub fn reference(&self, repository: &str, tag: &str) -> Result<Reference, TestingError> {
        Ok(Reference::new(&self.host(), repository, Some(tag), None)?)
    }

    /// The user and password it requires, if it requires any.
    pub fn credentials(&self) -> Option<(&str, &str)> {
        self.credentials
            .as_ref()
            .map(|(u, p)| (u.as_str(), p.as_str()))
    }

    /// The directory the registry stores blobs and manifests in.
    pub fn storage_dir(&self) -> PathBuf {
        self.dir.path().join("storage")
    }

    /// What the registry printed so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// The names of the repositories that hold at least one tag or manifest, sorted.
    ///
    /// Read from the storage directory, so it sees what was written even when auth is on.
    pub fn repositories(&self) -> Vec<String> {
        let root = self.storage_dir().join("docker/registry/v2/repositories");
        let mut out = Vec::new();
        collect_repositories(&root, &root, &mut out);
        out.sort();
        out
    }

    /// Stops the registry now (dropping it does the same).
    pub fn stop(mut self) {
        self.kill();
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Whether `GET /v2/` answers 200 (anonymous) or 401 (auth required): the registry is serving.
fn probe_v2(addr: SocketAddr) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let request = format!("GET /v2/ HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    if stream.read_exact(&mut head).is_err() {
        return false;
    }
    head.starts_with(b"HTTP/1.0 200")
        || head.starts_with(b"HTTP/1.1 200")
        || head.starts_with(b"HTTP/1.0 401")
        || head.starts_with(b"HTTP/1.1 401")
}

fn collect_repositories(root: &Path, dir: &Path, out: &mut Vec<String>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if entry.file_name() == "_manifests" {
            if let Ok(rel) = dir.strip_prefix(root) {
                out.push(rel.to_string_lossy().into_owned());
            }
        } else if !entry.file_name().to_string_lossy().starts_with('_') && path.is_dir() {
            collect_repositories(root, &path, out);
        }
    }
}

fn skopeo(args: &[&str], credentials: Option<(&str, &str)>) -> Result<Vec<u8>, TestingError> {
    let mut command = Command::new("skopeo");
    command.args(args);
    let creds;
    if let Some((user, password)) = credentials {
        creds = format!("{user}:{password}");
        command.arg("--creds").arg(&creds);
    }
    // An empty auth file keeps the host's logins out of the tests.
    command.env("REGISTRY_AUTH_FILE", empty_auth_file()?);
    let line = format!("skopeo {}", args.join(" "));
    let output = command.output().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            TestingError::Missing {
                program: "skopeo".into(),
                package: "skopeo".into(),
            }
        } else {
            TestingError::Io {
                what: format!("cannot run {line}"),
                source: e,
            }
        }
    })?;
    if !output.status.success() {
        return Err(TestingError::Failed {
            command: line,
            status: output.status.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        });
    }
    Ok(output.stdout)
}

fn empty_auth_file() -> Result<PathBuf, TestingError> {
    static FILE: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    if let Some(path) = FILE.get() {
        return Ok(path.clone());
    }
    let path = std::env::temp_dir().join(format!("hephy-skopeo-auth-{}.json", std::process::id()));
    // Written atomically, so a concurrent reader never sees half a file.
    hephy_core::fs::write_atomic(
        &path,
        b"{\"auths\":{}}\n",
        hephy_core::fs::FileMode::Private,
    )
    .map_err(io(format!("cannot write {}", path.display())))?;
    Ok(FILE.get_or_init(|| path).clone())
}

fn docker_transport(reference: &str) -> String {
    format!("docker://{}", reference.trim_start_matches("docker://"))
}

fn parse_json(command: &str, bytes: &[u8]) -> Result<serde_json::Value, TestingError> {
    serde_json::from_slice(bytes).map_err(|source| TestingError::Json {
        command: command.to_owned(),
        source,
    })
}

/// `skopeo inspect --raw --tls-verify=false docker://REFERENCE`: the manifest or index exactly as
/// the registry serves it, parsed as JSON.
pub fn skopeo_inspect_raw(
    reference: &str,
    credentials: Option<(&str, &str)>,
) -> Result<serde_json::Value, TestingError> {
    let bytes = skopeo_inspect_raw_bytes(reference, credentials)?;
    parse_json("skopeo inspect --raw", &bytes)
}

/// `skopeo inspect --raw`, the exact bytes (their sha256 is the manifest digest).
pub fn skopeo_inspect_raw_bytes(
    reference: &str,
    credentials: Option<(&str, &str)>,
) -> Result<Vec<u8>, TestingError> {
    let target = docker_transport(reference);
    skopeo(
        &["inspect", "--raw", "--tls-verify=false", &target],
        credentials,
    )
}

/// `skopeo inspect --tls-verify=false docker://REFERENCE`: skopeo's summary (digest,
/// architecture, layers, env, ...) of the image for the host platform, as JSON.
pub fn skopeo_inspect(
    reference: &str,
    credentials: Option<(&str, &str)>,
) -> Result<serde_json::Value, TestingError> {
    let target = docker_transport(reference);
    let bytes = skopeo(&["inspect", "--tls-verify=false", &target], credentials)?;
    parse_json("skopeo inspect", &bytes)
}

/// `skopeo inspect --config`: the image configuration for the host platform, or for
/// `--override-arch ARCH` when `arch` is given.
pub fn skopeo_inspect_config(
    reference: &str,
    arch: Option<&str>,
    credentials: Option<(&str, &str)>,
) -> Result<serde_json::Value, TestingError> {
    let target = docker_transport(reference);
    let mut args = vec!["inspect", "--config", "--tls-verify=false"];
    if let Some(arch) = arch {
        args.extend(["--override-os", "linux", "--override-arch", arch]);
    }
    args.push(&target);
    let bytes = skopeo(&args, credentials)?;
    parse_json("skopeo inspect --config", &bytes)
}

/// `skopeo list-tags`: the tags of a repository (`REGISTRY/REPOSITORY`), sorted. A repository the
/// registry does not know has no tags.
pub fn skopeo_list_tags(
    repository: &str,
    credentials: Option<(&str, &str)>,
) -> Result<Vec<String>, TestingError> {
    let target = docker_transport(repository);
    let bytes = match skopeo(&["list-tags", "--tls-verify=false", &target], credentials) {
        Ok(bytes) => bytes,
        Err(TestingError::Failed { stderr, .. })
            if stderr.contains("NAME_UNKNOWN")
                || stderr.contains("name unknown")
                || stderr.contains("404 (Not Found)") =>
        {
            return Ok(Vec::new())
        }
        Err(e) => return Err(e),
    };
    let value = parse_json("skopeo list-tags", &bytes)?;
    let mut tags: Vec<String> = value["Tags"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|t| t.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    tags.sort();
    Ok(tags)
}

/// `skopeo copy` from a registry reference to an OCI layout directory (`oci:DIR:TAG`), for
/// comparing what a registry serves with what was built.
pub fn skopeo_copy_to_layout(
    reference: &str,
    layout: &Path,
    tag: &str,
    credentials: Option<(&str, &str)>,
) -> Result<(), TestingError> {
    let source = docker_transport(reference);
    let dest = format!("oci:{}:{tag}", layout.display());
    let mut args = vec!["copy", "--src-tls-verify=false", "--quiet"];
    let creds;
    if let Some((user, password)) = credentials {
        creds = format!("{user}:{password}");
        args.extend(["--src-creds", &creds]);
    }
    args.extend([source.as_str(), dest.as_str()]);
    skopeo(&args, None).map(|_| ())
}
