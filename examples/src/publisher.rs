//! The registry publisher from command-line flags.

use std::sync::Arc;

use hephy_api::image_policy::ImagePolicy;
use hephy_core::Publisher;
use hephy_oci::registry::{RegistryAuth, RegistryOptions, RegistryPublisher};
use hephy_oci::LOCAL_REGISTRY;
use secrecy::SecretString;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// A registry publisher for `registry` (`host[:port][/prefix]`), with basic credentials when both
/// are given, else Docker's `config.json`, else anonymous.
pub fn registry(
    registry: &str,
    insecure: bool,
    user: Option<&str>,
    password: Option<&SecretString>,
) -> Result<Arc<dyn Publisher>> {
    let (host, prefix) = split(registry);
    Ok(Arc::new(
        RegistryPublisher::builder(host)
            .prefix(prefix)
            .options(options(registry, insecure, user, password)?)
            .build()?,
    ))
}

/// Which images `hephy deploy --image` may name on a server that publishes to `registry` (else
/// to its local image store): its apps' own, and those of the `allowed` registries.
pub fn image_policy(registry: Option<&str>, allowed: &[String]) -> ImagePolicy {
    let (host, prefix) = registry.map(split).unwrap_or((LOCAL_REGISTRY, ""));
    allowed.iter().fold(ImagePolicy::new(host, prefix), |p, r| {
        p.allow_registry(r.as_str())
    })
}

fn split(registry: &str) -> (&str, &str) {
    match registry.split_once('/') {
        Some((h, p)) => (h, p.trim_matches('/')),
        None => (registry, ""),
    }
}

/// Registry options for `registry` (`host[:port][/prefix]`), plain HTTP when `insecure`, with
/// basic credentials when both are given, else Docker's `config.json`.
pub fn options(
    registry: &str,
    insecure: bool,
    user: Option<&str>,
    password: Option<&SecretString>,
) -> Result<RegistryOptions> {
    let auth = match (user, password) {
        (Some(u), Some(p)) => RegistryAuth::basic(u, p.clone()),
        (None, None) => RegistryAuth::DockerConfig,
        _ => return Err("give both --registry-user and --registry-password, or neither".into()),
    };
    let o = RegistryOptions::from_env().auth(auth);
    Ok(if insecure {
        o.insecure(split(registry).0)
    } else {
        o
    })
}
