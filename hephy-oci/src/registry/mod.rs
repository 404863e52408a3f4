//! OCI registries: [`RegistryPublisher`] pushes built images, [`pull_to_layout`] pulls one
//! into an OCI layout (for base images and deployers).
//!
//! Built on oci-client (the renamed oci-distribution crate) for the distribution protocol and
//! its auth handshakes (basic, and bearer tokens from a token service). Its high-level
//! `Client::push` takes every layer as an in-memory `Vec<u8>`, which a 2 GB layer cannot afford,
//! so the publisher drives the lower-level calls itself: `blob_exists` (HEAD) to skip blobs the
//! registry has, `mount_blob` for cross-repository mounts, `push_blob_stream` in monolithic mode
//! (one `PUT` with a `Content-Length`, its body streamed from the file), and `push_manifest_raw`
//! so manifests are pushed byte for byte as built, keeping their digests. Pulls likewise stream
//! each blob from `pull_blob_stream` to disk.
//!
//! Plain HTTP is used only for registries listed as insecure ([`RegistryOptions::insecure`]).
//! Requests that fail with a 5xx answer or a dropped connection are retried with exponential
//! backoff.

mod auth;
mod pull;
mod push;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciErrorCode};

pub use auth::{AuthError, Credentials, DockerConfig, RegistryAuth};
pub use pull::{pull_to_layout, PullError, MAX_MANIFEST_BYTES};
pub use push::{PushStats, RegistryPublisher, RegistryPublisherBuilder};

/// How many blobs move at once by default.
pub const DEFAULT_CONCURRENCY: usize = 4;

/// How to talk to registries: credentials, plain-HTTP registries, retries and parallelism.
///
/// ```
/// use hephy_oci::registry::{RegistryAuth, RegistryOptions};
/// let options = RegistryOptions::new()
///     .auth(RegistryAuth::basic("ci", "secret"))
///     .insecure("localhost:5000")
///     .concurrency(8);
/// assert!(options.is_insecure("localhost:5000"));
/// assert!(!options.is_insecure("registry.example"));
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RegistryOptions {
    auth: RegistryAuth,
    insecure: Vec<String>,
    concurrency: usize,
    retries: u32,
    backoff: Duration,
    connect_timeout: Duration,
}

impl Default for RegistryOptions {
    fn default() -> Self {
        RegistryOptions {
            auth: RegistryAuth::default(),
            insecure: Vec::new(),
            concurrency: DEFAULT_CONCURRENCY,
            retries: 4,
            backoff: Duration::from_millis(250),
            connect_timeout: Duration::from_secs(10),
        }
    }
}

impl RegistryOptions {
    /// The defaults: Docker `config.json` credentials, HTTPS only, 4 blobs at once, 4 retries
    /// starting at 250 ms.
    pub fn new() -> Self {
        RegistryOptions::default()
    }

    /// The defaults plus the registries in `HEPHY_INSECURE_REGISTRIES` (comma-separated
    /// `host:port` list) as plain-HTTP registries.
    pub fn from_env() -> Self {
        let mut options = RegistryOptions::default();
        if let Ok(list) = std::env::var("HEPHY_INSECURE_REGISTRIES") {
            for host in list.split(',').map(str::trim).filter(|h| !h.is_empty()) {
                options = options.insecure(host);
            }
        }
        options
    }

    /// Sets the credentials.
    pub fn auth(mut self, auth: RegistryAuth) -> Self {
        self.auth = auth;
        self
    }

    /// Talks plain HTTP to `registry` (`host:port`), for local registries without TLS.
    pub fn insecure(mut self, registry: impl Into<String>) -> Self {
        let registry = registry.into();
        if !self.insecure.contains(&registry) {
            self.insecure.push(registry);
        }
        self
    }

    /// How many blobs are uploaded or downloaded at once (at least 1).
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.max(1);
        self
    }

    /// How often a request failing with a 5xx answer or a dropped connection is retried, and
    /// the first wait (doubled after each try).
    pub fn retries(mut self, retries: u32, first_backoff: Duration) -> Self {
        self.retries = retries;
        self.backoff = first_backoff;
        self
    }

    /// How long to wait for a TCP connection.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// The credentials.
    pub fn credentials(&self) -> &RegistryAuth {
        &self.auth
    }

    /// Whether `registry` is talked to over plain HTTP.
    pub fn is_insecure(&self, registry: &str) -> bool {
        self.insecure.iter().any(|r| r == registry)
    }
}

/// An oci-client [`Client`](oci_client::Client) set up from [`RegistryOptions`], with retries
/// and error messages that say what to do. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Connection {
    pub(crate) client: oci_client::Client,
    pub(crate) options: Arc<RegistryOptions>,
}

impl Connection {
    pub(crate) fn new(options: RegistryOptions) -> Self {
        let config = ClientConfig {
            protocol: if options.insecure.is_empty() {
                ClientProtocol::Https
            } else {
                ClientProtocol::HttpsExcept(options.insecure.clone())
            },
            // Monolithic: one PUT per blob with its body streamed from disk, rather than
            // several PATCH requests each holding a chunk in memory.
            use_monolithic_push: true,
            max_concurrent_upload: options.concurrency,
            max_concurrent_download: options.concurrency,
            connect_timeout: Some(options.connect_timeout),
            user_agent: concat!("hephy/", env!("CARGO_PKG_VERSION")),
            // We pick platforms from indexes ourselves.
            platform_resolver: None,
            ..ClientConfig::default()
        };
        Connection {
            client: oci_client::Client::new(config),
            options: Arc::new(options),
        }
    }

    pub(crate) fn scheme(&self, registry: &str) -> &'static str {
        if self.options.is_insecure(registry) {
            "http"
        } else {
            "https"
        }
    }

    /// What to say when nothing answers at `registry`; `insecure_hint` (after a `; `) says how
    /// to reach a registry that serves plain HTTP, and is left out when it is already reached so.
    pub(crate) fn unreachable_message(&self, registry: &str, insecure_hint: &str) -> String {
        let scheme = self.scheme(registry);
        let plain = if scheme == "https" { insecure_hint } else { "" };
        format!(
            "nothing answers at {scheme}://{registry}/v2/: check that the registry is running \
             and that the host and port are right{plain}"
        )
    }

    /// Runs `op` until it succeeds, fails for good, or the retries are used up.
    pub(crate) async fn retry<T, F, Fut>(&self, op: F) -> Result<T, OciDistributionError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, OciDistributionError>>,
    {
        self.retry_with(op, is_transient).await
    }

    /// [`Connection::retry`] for any error type, with `transient` saying which errors to retry.
    pub(crate) async fn retry_with<T, E, F, Fut>(
        &self,
        mut op: F,
        transient: impl Fn(&E) -> bool,
    ) -> Result<T, E>
    where
        E: std::fmt::Display,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let mut wait = self.options.backoff;
        let mut attempt = 0;
        loop {
            match op().await {
                Ok(v) => return Ok(v),
                Err(e) if attempt < self.options.retries && transient(&e) => {
                    attempt += 1;
                    tracing::debug!(error = %e, attempt, "registry request failed; retrying");
                    tokio::time::sleep(wait).await;
                    wait = wait.saturating_mul(2);
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// The HTTP status an error carries, if any.
pub(crate) fn status_of(e: &OciDistributionError) -> Option<u16> {
    match e {
        OciDistributionError::RequestError(e) => e.status().map(|s| s.as_u16()),
        OciDistributionError::ServerError { code, .. } => Some(*code),
        OciDistributionError::UnauthorizedError { .. } => Some(401),
        OciDistributionError::RegistryError { envelope, .. } => {
            envelope.errors.iter().find_map(|e| match e.code {
                OciErrorCode::Unauthorized => Some(401),
                OciErrorCode::Denied => Some(403),
                OciErrorCode::BlobUnknown
                | OciErrorCode::ManifestUnknown
                | OciErrorCode::NameUnknown => Some(404),
                _ => None,
            })
        }
        _ => None,
    }
}

/// Whether the registry refused the credentials.
pub(crate) fn is_unauthorized(e: &OciDistributionError) -> bool {
    matches!(e, OciDistributionError::AuthenticationFailure(_))
        || matches!(status_of(e), Some(401 | 403))
}

/// How the registry refused, for messages: `401 Unauthorized`, `the token service refused them`.
pub(crate) fn refusal(e: &OciDistributionError) -> String {
    match (e, status_of(e)) {
        (OciDistributionError::AuthenticationFailure(reason), _) => {
            let reason = reason.trim();
            if reason.is_empty() {
                "its token service refused them".to_owned()
            } else {
                format!("its token service refused them ({reason})")
            }
        }
        (_, Some(403)) => "it answered 403 Forbidden".to_owned(),
        _ => "it answered 401 Unauthorized".to_owned(),
    }
}

/// Whether nothing answered at all (refused, DNS, TLS handshake, timeout on connect).
pub(crate) fn is_unreachable(e: &OciDistributionError) -> bool {
    match e {
        OciDistributionError::RequestError(e) => {
            e.is_connect() || (e.is_timeout() && e.status().is_none())
        }
        _ => false,
    }
}

/// Whether trying again may help: a 5xx answer, a 429, or a connection that dropped.
pub(crate) fn is_transient(e: &OciDistributionError) -> bool {
    if let Some(code) = status_of(e) {
        return code >= 500 || code == 429;
    }
    match e {
        OciDistributionError::RequestError(e) => {
            e.is_connect() || e.is_timeout() || e.is_request() || e.is_body()
        }
        OciDistributionError::IoError(e) => matches!(
            e.kind(),
            std::io::ErrorKind::ConnectionReset
                | std::io::ErrorKind::ConnectionAborted
                | std::io::ErrorKind::BrokenPipe
                | std::io::ErrorKind::UnexpectedEof
        ),
        _ => false,
    }
}

/// The whole error chain on one line, for messages.
pub(crate) fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}

/// `12.3 MB`, `512 B`: decimal units, as registries and docker show sizes.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit < UNITS.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// `sha256:abcdef012345…`: a digest shortened for log lines.
pub(crate) fn short(d: &hephy_core::Digest) -> String {
    format!("{}:{}…", d.algorithm(), d.short())
}

/// The oci-client reference for a hephy one.
pub(crate) fn oci_reference(r: &hephy_core::Reference) -> oci_client::Reference {
    match (r.tag(), r.digest()) {
        (Some(tag), Some(d)) => oci_client::Reference::with_tag_and_digest(
            r.registry().to_owned(),
            r.repository().to_owned(),
            tag.to_owned(),
            d.to_string(),
        ),
        (None, Some(d)) => oci_client::Reference::with_digest(
            r.registry().to_owned(),
            r.repository().to_owned(),
            d.to_string(),
        ),
        (tag, None) => oci_client::Reference::with_tag(
            r.registry().to_owned(),
            r.repository().to_owned(),
            tag.unwrap_or("latest").to_owned(),
        ),
    }
}

/// Manifest and index media types we accept when pulling.
pub(crate) const MANIFEST_MEDIA_TYPES: &[&str] = &[
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
];

/// Whether a manifest media type is an index (OCI index or Docker manifest list).
pub(crate) fn is_index_media_type(media_type: &str) -> bool {
    media_type == "application/vnd.oci.image.index.v1+json"
        || media_type == "application/vnd.docker.distribution.manifest.list.v2+json"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_like_docker() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(12_345_678), "12.3 MB");
        assert_eq!(human_bytes(1_500), "1.5 kB");
    }
}
