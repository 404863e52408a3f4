//! [`KubernetesDeployer`]: releases run as Deployments in a Kubernetes cluster.
//!
//! A release is deployed by server-side apply (field manager `hephy`, forced, so hephy owns the
//! fields it sets and a `kubectl edit` of them is overwritten by the next release) of the
//! objects [`manifests::render`] makes: the Secret with the config vars, the Deployment and the
//! Service (or a Flagger `Canary` for `strategy = "blue-green"` and `"canary"`). The deployer
//! then reads, every poll interval, the Deployment's status (`observedGeneration`,
//! `updatedReplicas`, `availableReplicas`, the `Progressing` condition) and the new release's
//! pods until the rollout completes, reporting progress as events. A rollout fails when it does
//! not finish in time, when the Deployment's progress deadline passes, or at once when a pod of
//! the new release waits with `CrashLoopBackOff`, `ImagePullBackOff`, `ErrImagePull`,
//! `CreateContainerConfigError` or `InvalidImageName`; the error names the pod, the reason and
//! the last lines of its log, and the previous release's objects are applied again, so its
//! ReplicaSet takes over again. A failed release is not recorded.
//!
//! With a Flagger strategy the deployer applies the objects and returns: Flagger keeps the
//! previous release serving from `APP-primary`, analyses the new one and promotes or rolls it
//! back itself (`kubectl describe canary APP` follows it). Flagger's own services replace the
//! hephy Service.
//!
//! The release history lives in the cluster, in a ConfigMap per app (`hephy-APP-releases`,
//! the releases as hephy-core's JSON under `releases.json`), so every hephy instance pointed at
//! the cluster sees the same history. The values of the config vars are secrets and stay out of
//! the ConfigMap: they are kept per release in the Secret of the same name (`config.json`).
//! Both are written by server-side apply carrying the `resourceVersion` read before the
//! release, so two instances releasing the same app at once cannot both record the same
//! number: the later one fails with a conflict. Rollback is the trait's default: a new release
//! with vN's image, config and settings.
//!
//! # What has not been verified against a live cluster
//!
//! No cluster runs in hephy's test environment. The tests run the deployer against a loopback
//! HTTP server that records every request and answers as the API server documents it; they
//! check the method, path, query, content type and body of every call. Not verified: that a
//! real API server accepts the applied objects (admission, defaulting, field ownership after a
//! `kubectl` edit), the exact status transitions of a real rollout, the Flagger `Canary`
//! against a running Flagger, TLS and authentication with real kubeconfigs (kube-rs's
//! own code), and RBAC. See `KUBERNETES.md` in this crate.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use hephy_deploy::kubernetes::KubernetesDeployer;
//! // Kubeconfig (KUBECONFIG or ~/.kube/config) or the in-cluster service account.
//! let deployer = KubernetesDeployer::try_default().await?;
//! # Ok(()) }
//! ```

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use hephy_core::{
    async_trait, AppName, ConfigVars, DeployError, Deployer, Events, NewRelease, Release,
    ReleaseVersion, Strategy,
};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, Service};
use kube::api::{Api, DynamicObject, ListParams, LogParams, Patch, PatchParams};
use kube::{Client, Resource};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::manifests::{
    self, canary_resource, ledger_config_map, ledger_name, ledger_secret, ManifestError,
    ManifestOptions, Manifests, LEDGER_CONFIG_KEY, LEDGER_KEY, MANAGER, NAME_LABEL, RELEASE_LABEL,
};

/// Pod waiting reasons that mean the release will not come up without a change.
const FATAL_REASONS: &[&str] = &[
    "CrashLoopBackOff",
    "ImagePullBackOff",
    "ErrImagePull",
    "CreateContainerConfigError",
    "InvalidImageName",
];

/// How many log lines of a failing pod the error carries.
const LOG_TAIL: i64 = 20;

/// Deploys releases to a Kubernetes cluster (see the [module docs](self)).
#[derive(Clone)]
pub struct KubernetesDeployer {
    client: Client,
    options: ManifestOptions,
    poll_interval: Duration,
    rollout_timeout: Option<Duration>,
}

impl std::fmt::Debug for KubernetesDeployer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubernetesDeployer")
            .field("namespace", &self.options.namespace())
            .field("poll_interval", &self.poll_interval)
            .field("rollout_timeout", &self.rollout_timeout)
            .finish_non_exhaustive()
    }
}

/// Builds a [`KubernetesDeployer`]; from [`KubernetesDeployer::builder`].
#[must_use]
pub struct KubernetesDeployerBuilder {
    client: Client,
    namespace: Option<String>,
    labels: Vec<(String, String)>,
    poll_interval: Duration,
    rollout_timeout: Option<Duration>,
}

impl std::fmt::Debug for KubernetesDeployerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubernetesDeployerBuilder")
            .field("namespace", &self.namespace)
            .field("labels", &self.labels)
            .finish_non_exhaustive()
    }
}

impl KubernetesDeployerBuilder {
    /// The namespace apps are deployed to; the client's default namespace (from the
    /// kubeconfig context or the service account) without one.
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = Some(namespace.into());
        self
    }

    /// A label added to every object hephy applies.
    pub fn label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.push((key.into(), value.into()));
        self
    }

    /// How often the rollout status is read; 2 seconds by default.
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval;
        self
    }

    /// How long a rollout may take. By default the release's `[deploy.health] timeout` for
    /// each replica plus two minutes for scheduling and image pulls.
    pub fn rollout_timeout(mut self, timeout: Duration) -> Self {
        self.rollout_timeout = Some(timeout);
        self
    }

    /// The deployer; an error names an invalid namespace or label.
    pub fn build(self) -> Result<KubernetesDeployer, ManifestError> {
        let ns = self
            .namespace
            .unwrap_or_else(|| self.client.default_namespace().to_owned());
        let mut options = ManifestOptions::new(&ns)?;
        for (k, v) in &self.labels {
            options = options.label(k, v)?;
        }
        Ok(KubernetesDeployer {
            client: self.client,
            options,
            poll_interval: self.poll_interval,
            rollout_timeout: self.rollout_timeout,
        })
    }
}

/// Why a rollout failed.
struct RolloutFailure {
    reason: String,
    /// The pod and container that crashed, whose previous run's log explains why. Pods that
    /// never started (image pull, config errors) have no log.
    crashed: Option<(String, String)>,
}

impl KubernetesDeployer {
    /// A builder for a deployer talking to the cluster through `client`.
    pub fn builder(client: Client) -> KubernetesDeployerBuilder {
        KubernetesDeployerBuilder {
            client,
            namespace: None,
            labels: Vec::new(),
            poll_interval: Duration::from_secs(2),
            rollout_timeout: None,
        }
    }

    /// A deployer using `client` and its default namespace.
    pub fn new(client: Client) -> Result<Self, ManifestError> {
        Self::builder(client).build()
    }

    /// A deployer for the cluster kube-rs finds: `KUBECONFIG` or `~/.kube/config` (current
    /// context), or, inside a pod, the service account.
    pub async fn try_default() -> Result<Self, DeployError> {
        let client = Client::try_default().await.map_err(|e| {
            DeployError::other(
                "cannot configure a Kubernetes client: set KUBECONFIG to a kubeconfig file, put one at ~/.kube/config, or run hephy in a pod with a service account",
                e,
            )
        })?;
        Self::new(client).map_err(|e| DeployError::other("invalid Kubernetes settings", e))
    }

    /// The namespace apps are deployed to.
    pub fn namespace(&self) -> &str {
        self.options.namespace()
    }

    fn api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.client.clone(), self.options.namespace())
    }

    async fn apply<K>(&self, api: &Api<K>, name: &str, object: &K) -> Result<K, DeployError>
    where
        K: Resource + Clone + DeserializeOwned + Serialize + std::fmt::Debug,
        K::DynamicType: Default,
    {
        let params = PatchParams::apply(MANAGER).force();
        api.patch(name, &params, &Patch::Apply(object))
            .await
            .map_err(|e| {
                api_error(
                    &format!(
                        "apply {} {name} in namespace {}",
                        K::kind(&K::DynamicType::default()),
                        self.namespace()
                    ),
                    e,
                )
            })
    }

    /// Applies every object of `manifests`; returns the Deployment's generation.
    async fn apply_all(&self, m: &Manifests, events: &Events) -> Result<i64, DeployError> {
        let name = m.deployment.metadata.name.clone().unwrap_or_default();
        // The Secret first: pods of the new template read it when they start.
        let secret = m.secret.metadata.name.clone().unwrap_or_default();
        self.apply(&self.api::<Secret>(), &secret, &m.secret)
            .await?;
        let applied = self
            .apply(&self.api::<Deployment>(), &name, &m.deployment)
            .await?;
        if let Some(service) = &m.service {
            self.apply(&self.api::<Service>(), &name, service).await?;
        }
        if let Some(canary) = &m.canary {
            let api: Api<DynamicObject> =
                Api::namespaced_with(self.client.clone(), self.namespace(), &canary_resource());
            let params = PatchParams::apply(MANAGER).force();
            api.patch(&name, &params, &Patch::Apply(canary))
                .await
                .map_err(|e| match &e {
                    kube::Error::Api(s) if s.code == 404 => DeployError::other(
                        format!("cannot apply the Flagger Canary {name}: the cluster has no canaries.flagger.app resource; install Flagger or use strategy = \"rolling\" in [deploy]"),
                        e,
                    ),
                    _ => api_error(&format!("apply Canary {name} in namespace {}", self.namespace()), e),
                })?;
        }
        events.log(format!(
            "applied {} to namespace {}",
            applied_names(m),
            self.namespace()
        ));
        Ok(applied.metadata.generation.unwrap_or(0))
    }

    /// Waits until the Deployment of `release` has rolled out, or says why it did not.
    async fn wait_rollout(
        &self,
        release: &Release,
        generation: i64,
        events: &Events,
    ) -> Result<Result<(), RolloutFailure>, DeployError> {
        let deployments = self.api::<Deployment>();
        let pods = self.api::<Pod>();
        let name = release.app.as_str();
        let want = i32::try_from(release.deploy.replicas).unwrap_or(i32::MAX);
        let timeout = self.rollout_timeout.unwrap_or_else(|| {
            release.deploy.health.timeout * release.deploy.replicas.max(1)
                + Duration::from_secs(120)
        });
        let selector = format!(
            "{NAME_LABEL}={},{RELEASE_LABEL}={}",
            release.app, release.version
        );
        let started = Instant::now();
        let mut last = String::new();
        loop {
            let d = deployments
                .get(name)
                .await
                .map_err(|e| api_error(&format!("read Deployment {name}"), e))?;
            let status = d.status.unwrap_or_default();
            let observed = status.observed_generation.unwrap_or(0) >= generation;
            let updated = status.updated_replicas.unwrap_or(0);
            let available = status.available_replicas.unwrap_or(0);
            let total = status.replicas.unwrap_or(0);
            let progress = format!(
                "rollout of {}: {updated} of {want} updated, {available} available",
                release.version
            );
            if progress != last {
                events.log(&progress);
                last = progress;
            }
            if observed && updated >= want && available >= want && total <= updated {
                return Ok(Ok(()));
            }
            if observed {
                let stalled = status.conditions.iter().flatten().find(|c| {
                    c.type_.as_deref() == Some("Progressing")
                        && c.status.as_deref() == Some("False")
                        && c.reason.as_deref() == Some("ProgressDeadlineExceeded")
                });
                if let Some(c) = stalled {
                    return Ok(Err(RolloutFailure {
                        reason: format!(
                            "the Deployment's progress deadline passed: {}",
                            c.message.as_deref().unwrap_or("no message")
                        ),
                        crashed: None,
                    }));
                }
            }
            let list = pods
                .list(&ListParams::default().labels(&selector))
                .await
                .map_err(|e| api_error(&format!("list the pods of {name}"), e))?;
            let mut waiting = None;
            // Terminating pods are left out: they may be the crash-looping pods of an earlier
            // failed attempt at the same release number, scaled away when it was undone.
            let live = list
                .items
                .iter()
                .filter(|p| p.metadata.deletion_timestamp.is_none());
            for pod in live {
                let pod_name = pod.metadata.name.clone().unwrap_or_default();
                let statuses = pod.status.iter().flat_map(|s| {
                    s.init_container_statuses
                        .iter()
                        .flatten()
                        .chain(s.container_statuses.iter().flatten())
                });
                for cs in statuses {
                    let Some(w) = cs.state.as_ref().and_then(|s| s.waiting.as_ref()) else {
                        continue;
                    };
                    let reason = w.reason.clone().unwrap_or_default();
                    let text = match &w.message {
                        Some(m) if !m.is_empty() => {
                            format!("pod {pod_name} container {}: {reason}: {m}", cs.name)
                        }
                        _ => format!("pod {pod_name} container {}: {reason}", cs.name),
                    };
                    if FATAL_REASONS.contains(&reason.as_str()) {
                        let crashed = (reason == "CrashLoopBackOff")
                            .then(|| (pod_name.clone(), cs.name.clone()));
                        return Ok(Err(RolloutFailure {
                            reason: text,
                            crashed,
                        }));
                    }
                    waiting.get_or_insert(text);
                }
                if waiting.is_none() {
                    let unschedulable = pod
                        .status
                        .iter()
                        .flat_map(|s| s.conditions.iter().flatten())
                        .find(|c| c.type_ == "PodScheduled" && c.status == "False");
                    if let Some(c) = unschedulable {
                        waiting = Some(format!(
                            "pod {pod_name} is not scheduled: {}",
                            c.message.as_deref().unwrap_or("no message")
                        ));
                    }
                }
            }
            if started.elapsed() >= timeout {
                let mut reason = format!(
                    "the rollout did not finish in {}: {updated} of {want} pods updated, {available} available",
                    humantime::format_duration(timeout)
                );
                if let Some(w) = waiting {
                    reason.push_str("; ");
                    reason.push_str(&w);
                }
                return Ok(Err(RolloutFailure {
                    reason,
                    crashed: None,
                }));
            }
            tokio::time::sleep(self.poll_interval).await;
        }
    }

    /// The last lines the crashed container's previous run wrote.
    async fn log_tail(&self, pod: &str, container: &str) -> Vec<String> {
        let params = LogParams {
            container: Some(container.to_owned()),
            previous: true,
            tail_lines: Some(LOG_TAIL),
            ..LogParams::default()
        };
        match self.api::<Pod>().logs(pod, &params).await {
            Ok(text) => text.lines().map(str::to_owned).collect(),
            // The log is a courtesy in an error that is already on its way.
            Err(_) => Vec::new(),
        }
    }

    /// The releases of `app` and the resourceVersions of the ledger's ConfigMap and Secret.
    async fn read_ledger(&self, app: &AppName) -> Result<Ledger, DeployError> {
        let name = ledger_name(app);
        let cm = self
            .api::<ConfigMap>()
            .get_opt(&name)
            .await
            .map_err(|e| api_error(&format!("read the release ledger ConfigMap {name}"), e))?;
        let secret = self
            .api::<Secret>()
            .get_opt(&name)
            .await
            .map_err(|e| api_error(&format!("read the release ledger Secret {name}"), e))?;
        let invalid = |what: &str, key: &str, e: serde_json::Error| {
            DeployError::other(
                format!(
                    "the release ledger {what} {name} in namespace {} is not valid hephy JSON under {key}: restore it from a backup or delete it to start a new history",
                    self.namespace()
                ),
                e,
            )
        };
        let mut releases: Vec<Release> =
            match cm.as_ref().and_then(|c| c.data.as_ref()?.get(LEDGER_KEY)) {
                Some(json) => {
                    serde_json::from_str(json).map_err(|e| invalid("ConfigMap", LEDGER_KEY, e))?
                }
                None => Vec::new(),
            };
        let vars: BTreeMap<String, ConfigVars> = match secret
            .as_ref()
            .and_then(|s| s.data.as_ref()?.get(LEDGER_CONFIG_KEY))
        {
            Some(json) => serde_json::from_slice(&json.0)
                .map_err(|e| invalid("Secret", LEDGER_CONFIG_KEY, e))?,
            None => BTreeMap::new(),
        };
        for r in &mut releases {
            if let Some(v) = vars.get(&r.version.to_string()) {
                r.config = v.clone();
            }
        }
        Ok(Ledger {
            releases,
            config_map_version: cm.and_then(|c| c.metadata.resource_version),
            secret_version: secret.and_then(|s| s.metadata.resource_version),
        })
    }

    async fn write_ledger(&self, app: &AppName, ledger: Ledger) -> Result<(), DeployError> {
        let render = |e| DeployError::other("cannot render the release ledger", e);
        let mut secret = ledger_secret(app, &ledger.releases, &self.options).map_err(render)?;
        let mut cm = ledger_config_map(app, &ledger.releases, &self.options).map_err(render)?;
        // Apply with the resourceVersions read before the release: the API server rejects a
        // write with 409 Conflict if another instance recorded a release in between. The
        // Secret goes first, so a release in the ConfigMap always has its config vars.
        secret.metadata.resource_version = ledger.secret_version;
        cm.metadata.resource_version = ledger.config_map_version;
        let name = ledger_name(app);
        let params = PatchParams::apply(MANAGER).force();
        let conflict = |what: &str, e: kube::Error| {
            match &e {
            kube::Error::Api(s) if s.code == 409 => DeployError::other(
                format!("another hephy instance recorded a release of {app} at the same time: look at the app's releases and deploy again"),
                e,
            ),
            _ => api_error(&format!("write the release ledger {what} {name}"), e),
        }
        };
        self.api::<Secret>()
            .patch(&name, &params, &Patch::Apply(&secret))
            .await
            .map_err(|e| conflict("Secret", e))?;
        self.api::<ConfigMap>()
            .patch(&name, &params, &Patch::Apply(&cm))
            .await
            .map_err(|e| conflict("ConfigMap", e))?;
        Ok(())
    }
}

/// An app's history as read from the cluster.
struct Ledger {
    releases: Vec<Release>,
    config_map_version: Option<String>,
    secret_version: Option<String>,
}

fn applied_names(m: &Manifests) -> String {
    let name = m.deployment.metadata.name.as_deref().unwrap_or_default();
    let mut parts = vec![
        format!(
            "Secret {}",
            m.secret.metadata.name.as_deref().unwrap_or_default()
        ),
        format!("Deployment {name}"),
    ];
    if m.service.is_some() {
        parts.push(format!("Service {name}"));
    }
    if m.canary.is_some() {
        parts.push(format!("Canary {name}"));
    }
    parts.join(", ")
}

/// A [`DeployError`] for a failed API call, with the fix for the usual causes.
fn api_error(what: &str, e: kube::Error) -> DeployError {
    let hint = match &e {
        kube::Error::Api(s) if s.code == 401 => {
            ": the cluster rejected hephy's credentials; check the kubeconfig user or the service account token"
        }
        kube::Error::Api(s) if s.code == 403 => {
            ": forbidden; give hephy's account get, list and patch on deployments, services, secrets, configmaps and pods (and pods/log) in this namespace"
        }
        kube::Error::Api(s) if s.code == 404 => {
            ": not found; does the namespace exist? create it with `kubectl create namespace`"
        }
        kube::Error::Api(s) if s.code == 422 => {
            ": the API server rejected the object; this is a bug in hephy's manifests, please report it with the message"
        }
        kube::Error::Api(_) => "",
        _ => ": is the cluster reachable? check the server address in the kubeconfig",
    };
    DeployError::other(format!("cannot {what}{hint}"), e)
}

#[async_trait]
impl Deployer for KubernetesDeployer {
    async fn deploy(&self, new: NewRelease, events: &Events) -> Result<Release, DeployError> {
        let app = new.app.clone();
        let mut ledger = self.read_ledger(&app).await?;
        let previous = ledger.releases.last().cloned();
        let version = ReleaseVersion::next_after(previous.as_ref().map(|p| p.version));
        let release = new.into_release(version, manifests::release_time(), previous.as_ref());
        let manifests = manifests::render(&release, &self.options)
            .map_err(|e| DeployError::other(format!("cannot deploy {version} of {app}"), e))?;
        events.log(format!(
            "deploying {version} of {app} ({}) to namespace {}",
            manifests::pinned_image(&release)
                .map_err(|e| DeployError::other("cannot deploy", e))?,
            self.namespace()
        ));
        let generation = self.apply_all(&manifests, events).await?;

        if matches!(
            release.deploy.strategy,
            Strategy::BlueGreen | Strategy::Canary
        ) {
            events.log(format!(
                "Flagger now analyses {version} and promotes or rolls it back; follow it with `kubectl -n {} describe canary {app}`",
                self.namespace()
            ));
        } else if let Err(failure) = self.wait_rollout(&release, generation, events).await? {
            let log_tail = match &failure.crashed {
                Some((pod, container)) => self.log_tail(pod, container).await,
                None => Vec::new(),
            };
            match &previous {
                Some(p) => {
                    events.warn(format!(
                        "{version} failed: {}; applying {} again",
                        failure.reason, p.version
                    ));
                    let old = manifests::render(p, &self.options).map_err(|e| {
                        DeployError::other(format!("cannot render {} of {app} again", p.version), e)
                    })?;
                    self.apply_all(&old, events).await?;
                }
                None => events.warn(format!(
                    "{version} failed and {app} has no earlier release: the Deployment {app} stays for inspection (`kubectl -n {} describe deployment {app}`)",
                    self.namespace()
                )),
            }
            return Err(DeployError::Unhealthy {
                app,
                version,
                reason: failure.reason,
                log_tail,
            });
        }

        ledger.releases.push(release.clone());
        self.write_ledger(&app, ledger).await?;
        events.log(format!("{version} of {app} is released"));
        Ok(release)
    }

    async fn releases(&self, app: &AppName) -> Result<Vec<Release>, DeployError> {
        Ok(self.read_ledger(app).await?.releases)
    }
}
