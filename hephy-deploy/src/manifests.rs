//! Kubernetes manifests of a release: the objects the [Kubernetes](crate::kubernetes) and
//! [GitOps](crate::gitops) deployers apply or commit.
//!
//! [`render`] turns a [`Release`] into typed [k8s-openapi](k8s_openapi) objects:
//!
//! - a `Secret` `APP-env` holding the release's config vars, read by the container through
//!   `envFrom`;
//! - a `Deployment` `APP` running the digest-pinned image with `PORT`, readiness and liveness
//!   probes from `[deploy.health]` (an HTTP GET of `path`, or a TCP connect without one),
//!   `replicas`, limits from `[deploy.resources]`, and a locked-down security context (non-root
//!   uid 65532, read-only root file system with an `emptyDir` on `/tmp`, no privilege
//!   escalation, every capability dropped, the runtime's default seccomp profile);
//! - a `Service` `APP` (port 80 to the container's `http` port), or, for
//!   `strategy = "blue-green"` and `"canary"`, a [Flagger](https://flagger.app) `Canary` instead,
//!   because Flagger then owns the services (`APP`, `APP-primary`, `APP-canary`) and the
//!   traffic shift.
//!
//! Every object carries the labels `app.kubernetes.io/name: APP`,
//! `app.kubernetes.io/managed-by: hephy` and `hephy.io/release: vN`, plus any given in
//! [`ManifestOptions::label`]. [`ledger_config_map`] and [`ledger_secret`] render the ConfigMap
//! and the Secret that hold an app's release history in the cluster. [`to_yaml`] writes any of them as YAML; field order is the
//! API's (k8s-openapi's serializer) and maps are sorted, so the same release always gives the
//! same bytes.
//!
//! ```
//! use std::time::SystemTime;
//! use hephy_core::{DeployConfig, NewRelease, ReleaseCause, ReleaseVersion};
//! use hephy_deploy::manifests::{render, to_yaml, ManifestOptions};
//!
//! let image = "registry.example.com/hello@sha256:4f5c7d1c4d0e0b5f9a8e5f1c2b3a4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e".parse()?;
//! let release = NewRelease::new("hello".parse()?, image, DeployConfig::default(),
//!         ReleaseCause::Image { reference: "hello".into() })
//!     .into_release(ReleaseVersion::FIRST, SystemTime::UNIX_EPOCH, None);
//! let manifests = render(&release, &ManifestOptions::new("apps")?)?;
//! let yaml = to_yaml(&manifests.deployment)?;
//! assert!(yaml.contains("image: registry.example.com/hello@sha256:4f5c"));
//! assert!(yaml.contains("runAsNonRoot: true"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use hephy_core::{AppName, ConfigVars, Release, Strategy};
use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment,
};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, Container, ContainerPort, EmptyDirVolumeSource, EnvFromSource, EnvVar,
    HTTPGetAction, PodSecurityContext, PodSpec, PodTemplateSpec, Probe, ResourceRequirements,
    SeccompProfile, Secret, SecretEnvSource, SecurityContext, Service, ServicePort, ServiceSpec,
    TCPSocketAction, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::ByteString;
use kube::core::{ApiResource, DynamicObject, GroupVersionKind};
use serde::Serialize;

/// Label with the app's name; the Deployment's and the Service's selector.
pub const NAME_LABEL: &str = "app.kubernetes.io/name";
/// Label saying hephy manages the object.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// Label with the release (`v3`).
pub const RELEASE_LABEL: &str = "hephy.io/release";
/// The value of [`MANAGED_BY_LABEL`], and the server-side apply field manager.
pub const MANAGER: &str = "hephy";
/// The uid (and gid) containers run as: the non-root `app` user of hephy's base images.
pub const RUN_AS_USER: i64 = 65532;
/// The key of the ledger ConfigMap's data holding the releases as JSON.
pub const LEDGER_KEY: &str = "releases.json";
/// The key of the ledger Secret's data holding each release's config vars as JSON.
pub const LEDGER_CONFIG_KEY: &str = "config.json";
/// The registry name of hephy's local OCI layout store, which no cluster can pull from.
// Kept here instead of depending on hephy-backends for one string; it is part of the contract
// between the helpers (`hephy_oci::LOCAL_REGISTRY`).
const LOCAL_REGISTRY: &str = "hephy.local";

/// The error returned by [`render`], [`ManifestOptions`] and [`to_yaml`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ManifestError {
    /// The namespace is not a DNS-1123 label.
    #[error("invalid namespace {namespace:?}: a namespace is 1 to 63 lowercase letters, digits and '-', starting and ending with a letter or digit (like apps)")]
    Namespace {
        /// The namespace given.
        namespace: String,
    },
    /// A label is invalid or would replace one hephy sets.
    #[error("invalid label {key:?}: {problem}")]
    Label {
        /// The label's key.
        key: String,
        /// What is wrong and how to fix it.
        problem: String,
    },
    /// The image is not pinned by digest.
    #[error("image {image} of {app} is not pinned by digest: deploy the reference the publisher returned, like REGISTRY/{app}@sha256:...")]
    Unpinned {
        /// The app.
        app: AppName,
        /// The image given.
        image: String,
    },
    /// The image lives in hephy's local layout store, which a cluster cannot pull from.
    #[error("image {image} of {app} is in hephy's local image store, which a cluster cannot pull from: publish to a registry the cluster can reach (hephy_oci::registry::RegistryPublisher) and deploy that reference")]
    LocalImage {
        /// The app.
        app: AppName,
        /// The image given.
        image: String,
    },
    /// A `[deploy.resources]` value cannot become a Kubernetes quantity.
    #[error("invalid [deploy.resources] {key} = {value} for {app}: {fix}")]
    Resources {
        /// The app.
        app: AppName,
        /// The key in `[deploy.resources]`.
        key: &'static str,
        /// The value given.
        value: String,
        /// How to fix it.
        fix: &'static str,
    },
    /// An object could not be written as YAML or JSON.
    #[error("cannot serialize {what}: {source}")]
    Serialize {
        /// What was written.
        what: String,
        /// Why it failed.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// Where and how [`render`] places an app's objects.
///
/// ```
/// use hephy_deploy::manifests::ManifestOptions;
/// let options = ManifestOptions::new("apps")?.label("team", "web")?;
/// assert_eq!(options.namespace(), "apps");
/// assert!(ManifestOptions::new("Apps").is_err());
/// assert!(options.label("hephy.io/release", "v1").is_err());
/// # Ok::<(), hephy_deploy::manifests::ManifestError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestOptions {
    namespace: String,
    labels: BTreeMap<String, String>,
    secret_optional: bool,
    service_port: u16,
}

impl ManifestOptions {
    /// Objects in `namespace`, with hephy's labels only.
    pub fn new(namespace: &str) -> Result<Self, ManifestError> {
        if !is_dns_label(namespace) {
            return Err(ManifestError::Namespace {
                namespace: namespace.to_owned(),
            });
        }
        Ok(ManifestOptions {
            namespace: namespace.to_owned(),
            labels: BTreeMap::new(),
            secret_optional: false,
            service_port: 80,
        })
    }

    /// Adds a label to every object (and to the pods).
    pub fn label(mut self, key: &str, value: &str) -> Result<Self, ManifestError> {
        let bad = |problem: &str| ManifestError::Label {
            key: key.to_owned(),
            problem: problem.to_owned(),
        };
        if [NAME_LABEL, MANAGED_BY_LABEL, RELEASE_LABEL].contains(&key) {
            return Err(bad("hephy sets this label itself: choose another key"));
        }
        let name = key.rsplit('/').next().unwrap_or(key);
        let prefix_ok = match key.rsplit_once('/') {
            Some((prefix, _)) => {
                !prefix.is_empty() && prefix.len() <= 253 && prefix.split('.').all(is_dns_label)
            }
            None => true,
        };
        if !prefix_ok || !is_label_value(name) || name.is_empty() {
            return Err(bad("a label key is [DNS-SUBDOMAIN/]NAME, NAME being 1 to 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit (like example.com/team)"));
        }
        if !is_label_value(value) {
            return Err(bad(&format!(
                "value {value:?} is not a label value: use at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit"
            )));
        }
        self.labels.insert(key.to_owned(), value.to_owned());
        Ok(self)
    }

    /// Marks the Secret reference `optional`, for setups where the Secret is provided elsewhere
    /// (SOPS, sealed-secrets) and may be absent for an app without config vars.
    pub fn secret_optional(mut self, optional: bool) -> Self {
        self.secret_optional = optional;
        self
    }

    /// The port the Service (or Flagger's services) listen on; 80 by default.
    pub fn service_port(mut self, port: u16) -> Self {
        self.service_port = port;
        self
    }

    /// The namespace.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The extra labels.
    pub fn labels(&self) -> &BTreeMap<String, String> {
        &self.labels
    }
}

fn is_dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

fn is_label_value(s: &str) -> bool {
    let b = s.as_bytes();
    if b.is_empty() {
        return true;
    }
    b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
}

/// The objects of one release, as [`render`] makes them.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Manifests {
    /// The Secret `APP-env` with the config vars.
    pub secret: Secret,
    /// The Deployment `APP`.
    pub deployment: Deployment,
    /// The Service `APP`; `None` with a Flagger strategy, where Flagger makes the services.
    pub service: Option<Service>,
    /// The Flagger `Canary` `APP`, for `strategy = "blue-green"` or `"canary"`.
    pub canary: Option<DynamicObject>,
}

impl Manifests {
    /// All objects as one multi-document YAML stream, in apply order (Secret, Deployment,
    /// Service or Canary).
    pub fn to_yaml(&self) -> Result<String, ManifestError> {
        let mut docs = vec![to_yaml(&self.secret)?, to_yaml(&self.deployment)?];
        if let Some(s) = &self.service {
            docs.push(to_yaml(s)?);
        }
        if let Some(c) = &self.canary {
            docs.push(to_yaml(c)?);
        }
        Ok(docs.join("---\n"))
    }
}

/// The name of the Secret holding `app`'s config vars.
pub fn secret_name(app: &AppName) -> String {
    format!("{app}-env")
}

/// The name of the ConfigMap holding `app`'s release ledger.
pub fn ledger_name(app: &AppName) -> String {
    format!("hephy-{app}-releases")
}

/// The image a release runs, as the container spec names it: `REGISTRY/REPOSITORY@DIGEST`.
///
/// The tag is left out on purpose: the digest decides what runs, and some runtimes reject or
/// mishandle `name:tag@digest`.
pub fn pinned_image(release: &Release) -> Result<String, ManifestError> {
    let image = &release.image;
    if image.registry() == LOCAL_REGISTRY {
        return Err(ManifestError::LocalImage {
            app: release.app.clone(),
            image: image.to_string(),
        });
    }
    let digest = image.digest().ok_or_else(|| ManifestError::Unpinned {
        app: release.app.clone(),
        image: image.to_string(),
    })?;
    Ok(format!(
        "{}/{}@{digest}",
        image.registry(),
        image.repository()
    ))
}

/// hephy's labels for `app` at `release`, plus the extra ones.
fn labels(
    app: &AppName,
    release: Option<&Release>,
    options: &ManifestOptions,
) -> BTreeMap<String, String> {
    let mut l = options.labels.clone();
    l.insert(NAME_LABEL.into(), app.to_string());
    l.insert(MANAGED_BY_LABEL.into(), MANAGER.into());
    if let Some(r) = release {
        l.insert(RELEASE_LABEL.into(), r.version.to_string());
    }
    l
}

fn meta(name: String, labels: &BTreeMap<String, String>, options: &ManifestOptions) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: Some(options.namespace.clone()),
        labels: Some(labels.clone()),
        ..ObjectMeta::default()
    }
}

/// Whole seconds for a probe or deadline field: at least 1, rounded up.
fn seconds(d: Duration) -> i32 {
    let s = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    i32::try_from(s.max(1)).unwrap_or(i32::MAX)
}

fn memory_quantity(bytes: u64) -> String {
    const KI: u64 = 1 << 10;
    const MI: u64 = 1 << 20;
    const GI: u64 = 1 << 30;
    match bytes {
        b if b >= GI && b % GI == 0 => format!("{}Gi", b / GI),
        b if b >= MI && b % MI == 0 => format!("{}Mi", b / MI),
        b if b >= KI && b % KI == 0 => format!("{}Ki", b / KI),
        b => b.to_string(),
    }
}

fn resources(release: &Release) -> Result<Option<ResourceRequirements>, ManifestError> {
    let r = &release.deploy.resources;
    let mut limits = BTreeMap::new();
    if let Some(m) = r.memory {
        if m == 0 {
            return Err(ManifestError::Resources {
                app: release.app.clone(),
                key: "memory",
                value: "0".into(),
                fix: "give a size above 0, like \"512M\", or remove the key",
            });
        }
        limits.insert("memory".to_owned(), Quantity(memory_quantity(m)));
    }
    if let Some(c) = r.cpus {
        let milli = (c * 1000.0).round();
        if !c.is_finite() || milli < 1.0 || milli > f64::from(u32::MAX) {
            return Err(ManifestError::Resources {
                app: release.app.clone(),
                key: "cpus",
                value: c.to_string(),
                fix: "give a number of cores of at least 0.001, like 0.5, or remove the key",
            });
        }
        // The conversion is exact: `milli` is a whole number within u32's range.
        let milli = milli as u64;
        let q = if milli.is_multiple_of(1000) {
            (milli / 1000).to_string()
        } else {
            format!("{milli}m")
        };
        limits.insert("cpu".to_owned(), Quantity(q));
    }
    if limits.is_empty() {
        return Ok(None);
    }
    // Requests default to the limits when only limits are given, which gives the pod the
    // Guaranteed QoS class for memory-limited apps; that is what `[deploy.resources]` means.
    Ok(Some(ResourceRequirements {
        limits: Some(limits),
        ..ResourceRequirements::default()
    }))
}

fn probe(release: &Release, liveness: bool) -> Probe {
    let health = &release.deploy.health;
    let port = IntOrString::String("http".into());
    let (http_get, tcp_socket) = match &health.path {
        Some(path) => (
            Some(HTTPGetAction {
                path: Some(path.clone()),
                port,
                ..HTTPGetAction::default()
            }),
            None,
        ),
        None => (None, Some(TCPSocketAction { port, host: None })),
    };
    if liveness {
        // Liveness restarts a container, so it starts only after the time the release has to
        // become healthy and tolerates a slow moment.
        Probe {
            http_get,
            tcp_socket,
            initial_delay_seconds: Some(seconds(health.timeout)),
            period_seconds: Some(10),
            failure_threshold: Some(3),
            ..Probe::default()
        }
    } else {
        Probe {
            http_get,
            tcp_socket,
            period_seconds: Some(seconds(health.interval)),
            failure_threshold: Some(3),
            ..Probe::default()
        }
    }
}

/// The objects of `release` (see the [module docs](self)).
pub fn render(release: &Release, options: &ManifestOptions) -> Result<Manifests, ManifestError> {
    let app = &release.app;
    let image = pinned_image(release)?;
    let labels = labels(app, Some(release), options);
    let selector: BTreeMap<String, String> = [(NAME_LABEL.to_owned(), app.to_string())].into();
    let deploy = &release.deploy;

    let secret = Secret {
        metadata: meta(secret_name(app), &labels, options),
        type_: Some("Opaque".into()),
        data: Some(
            release
                .config
                .iter()
                .map(|(k, v)| (k.to_owned(), ByteString(v.as_bytes().to_vec())))
                .collect(),
        ),
        ..Secret::default()
    };

    let container = Container {
        name: app.to_string(),
        image: Some(image),
        image_pull_policy: Some("IfNotPresent".into()),
        ports: Some(vec![ContainerPort {
            name: Some("http".into()),
            container_port: i32::from(deploy.port),
            protocol: Some("TCP".into()),
            ..ContainerPort::default()
        }]),
        env: Some(vec![EnvVar {
            name: "PORT".into(),
            value: Some(deploy.port.to_string()),
            ..EnvVar::default()
        }]),
        env_from: Some(vec![EnvFromSource {
            secret_ref: Some(SecretEnvSource {
                name: secret_name(app),
                optional: options.secret_optional.then_some(true),
            }),
            ..EnvFromSource::default()
        }]),
        readiness_probe: Some(probe(release, false)),
        liveness_probe: Some(probe(release, true)),
        resources: resources(release)?,
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            run_as_user: Some(RUN_AS_USER),
            run_as_group: Some(RUN_AS_USER),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                add: None,
            }),
            ..SecurityContext::default()
        }),
        volume_mounts: Some(vec![VolumeMount {
            name: "tmp".into(),
            mount_path: "/tmp".into(),
            ..VolumeMount::default()
        }]),
        ..Container::default()
    };

    let strategy = match deploy.strategy {
        Strategy::Recreate => DeploymentStrategy {
            type_: Some("Recreate".into()),
            rolling_update: None,
        },
        // Start one new pod before stopping an old one, so capacity never drops; Flagger
        // strategies roll the canary the same way before analysis.
        _ => DeploymentStrategy {
            type_: Some("RollingUpdate".into()),
            rolling_update: Some(RollingUpdateDeployment {
                max_surge: Some(IntOrString::Int(1)),
                max_unavailable: Some(IntOrString::Int(0)),
            }),
        },
    };

    let deployment = Deployment {
        metadata: meta(app.to_string(), &labels, options),
        spec: DeploymentSpec {
            replicas: Some(i32::try_from(deploy.replicas).unwrap_or(i32::MAX)),
            revision_history_limit: Some(10),
            // A rollout step may take the health timeout plus a minute to pull the image.
            progress_deadline_seconds: Some(seconds(deploy.health.timeout).saturating_add(60)),
            selector: LabelSelector {
                match_labels: Some(selector.clone()),
                ..LabelSelector::default()
            },
            strategy: Some(strategy),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels.clone()),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    automount_service_account_token: Some(false),
                    containers: vec![container],
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        run_as_user: Some(RUN_AS_USER),
                        run_as_group: Some(RUN_AS_USER),
                        fs_group: Some(RUN_AS_USER),
                        seccomp_profile: Some(SeccompProfile {
                            type_: "RuntimeDefault".into(),
                            localhost_profile: None,
                        }),
                        ..PodSecurityContext::default()
                    }),
                    volumes: Some(vec![Volume {
                        name: "tmp".into(),
                        empty_dir: Some(EmptyDirVolumeSource::default()),
                        ..Volume::default()
                    }]),
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        },
        status: None,
    };

    let flagger = matches!(deploy.strategy, Strategy::BlueGreen | Strategy::Canary);
    let service = (!flagger).then(|| Service {
        metadata: meta(app.to_string(), &labels, options),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            selector: Some(selector),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port: i32::from(options.service_port),
                target_port: Some(IntOrString::String("http".into())),
                protocol: Some("TCP".into()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        status: None,
    });
    let canary = if flagger {
        Some(canary(release, &labels, options)?)
    } else {
        None
    };

    Ok(Manifests {
        secret,
        deployment,
        service,
        canary,
    })
}

/// The Flagger API resource of `Canary` objects (`flagger.app/v1beta1`, plural `canaries`).
pub fn canary_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("flagger.app", "v1beta1", "Canary"),
        "canaries",
    )
}

fn canary(
    release: &Release,
    labels: &BTreeMap<String, String>,
    options: &ManifestOptions,
) -> Result<DynamicObject, ManifestError> {
    let deploy = &release.deploy;
    let mut analysis = serde_json::json!({
        "interval": "30s",
        "threshold": 5,
    });
    let mut spec = serde_json::json!({
        "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": release.app.as_str()},
        "progressDeadlineSeconds": seconds(deploy.health.timeout).saturating_add(60),
        "service": {
            "port": options.service_port,
            "targetPort": deploy.port,
            "portName": "http",
        },
    });
    // Without metrics Flagger promotes on pod readiness alone; metric checks need a Prometheus
    // the cluster has, so they are left to the cluster's Flagger setup (MetricTemplates).
    match deploy.strategy {
        Strategy::BlueGreen => {
            // The `kubernetes` provider switches the ClusterIP service from primary to canary
            // at once after `iterations` successful checks: blue-green without a mesh.
            spec["provider"] = "kubernetes".into();
            analysis["iterations"] = 10.into();
        }
        _ => {
            analysis["maxWeight"] = 50.into();
            analysis["stepWeight"] = 10.into();
        }
    }
    spec["analysis"] = analysis;
    let mut obj = DynamicObject::new(release.app.as_str(), &canary_resource())
        .within(&options.namespace)
        .data(serde_json::json!({ "spec": spec }));
    obj.metadata.labels = Some(labels.clone());
    Ok(obj)
}

/// The ConfigMap `hephy-APP-releases` holding `releases` (oldest first) as JSON under
/// [`LEDGER_KEY`], without the values of their config vars: those are secrets, kept in the
/// Secret of the same name ([`ledger_secret`]), so a reader of ConfigMaps does not see them.
///
/// A ConfigMap holds at most 1 MiB; at about 1 KiB a release that is some hundreds of releases.
pub fn ledger_config_map(
    app: &AppName,
    releases: &[Release],
    options: &ManifestOptions,
) -> Result<ConfigMap, ManifestError> {
    let stripped: Vec<Release> = releases
        .iter()
        .map(|r| {
            let mut r = r.clone();
            r.config = ConfigVars::default();
            r
        })
        .collect();
    let json = serde_json::to_string_pretty(&stripped).map_err(|e| ManifestError::Serialize {
        what: format!("the releases of {app}"),
        source: Box::new(e),
    })?;
    Ok(ConfigMap {
        metadata: meta(ledger_name(app), &labels(app, None, options), options),
        data: Some([(LEDGER_KEY.to_owned(), json)].into()),
        ..ConfigMap::default()
    })
}

/// The Secret `hephy-APP-releases` holding the config vars of each of `releases` as a JSON
/// object from release (`"v3"`) to vars under [`LEDGER_CONFIG_KEY`], the other half of
/// [`ledger_config_map`].
pub fn ledger_secret(
    app: &AppName,
    releases: &[Release],
    options: &ManifestOptions,
) -> Result<Secret, ManifestError> {
    let vars: BTreeMap<String, &ConfigVars> = releases
        .iter()
        .map(|r| (r.version.to_string(), &r.config))
        .collect();
    let json = serde_json::to_vec_pretty(&vars).map_err(|e| ManifestError::Serialize {
        what: format!("the config vars of {app}'s releases"),
        source: Box::new(e),
    })?;
    Ok(Secret {
        metadata: meta(ledger_name(app), &labels(app, None, options), options),
        type_: Some("Opaque".into()),
        data: Some([(LEDGER_CONFIG_KEY.to_owned(), ByteString(json))].into()),
        ..Secret::default()
    })
}

/// The current time at the millisecond precision the release ledger's JSON keeps, so a release
/// returned by a deployer equals the one read back from its history.
pub fn release_time() -> std::time::SystemTime {
    let now = std::time::SystemTime::now();
    let since = now
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    std::time::UNIX_EPOCH
        + Duration::from_millis(u64::try_from(since.as_millis()).unwrap_or(u64::MAX))
}

/// Writes `object` as one YAML document.
pub fn to_yaml<T: Serialize>(object: &T) -> Result<String, ManifestError> {
    serde_norway::to_string(object).map_err(|e| ManifestError::Serialize {
        what: std::any::type_name::<T>()
            .rsplit("::")
            .next()
            .unwrap_or("object")
            .to_owned(),
        source: Box::new(e),
    })
}
