//! The Kubernetes deployer up to the wire: a loopback server stands in for the API server,
//! records every request and answers as the API server documents it for those calls.
//!
//! What it answers: server-side apply (PATCH with `application/apply-patch+yaml`) stores the
//! object and echoes it with `uid`, `resourceVersion` and, for Deployments, a `generation`
//! that grows with each change of the spec; a ledger apply whose `resourceVersion` differs from
//! the stored one gets 409 Conflict, as the API server's optimistic concurrency does; GET of a
//! Deployment returns the stored object with a status that completes the rollout over two
//! reads, or, for an image the test marks as broken, stays at zero available with a pod
//! waiting in `CrashLoopBackOff`; GET of pods lists that pod; GET of its log returns text.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use hephy_core::{DeployError, Deployer, Events, Release, ReleaseCause, ReleaseVersion};
use hephy_deploy::kubernetes::KubernetesDeployer;
use serde_json::{json, Value};

use crate::manifests::{image, new_release, pinned, Result};

/// One request as the server saw it.
#[derive(Debug, Clone)]
struct Recorded {
    method: String,
    path: String,
    query: String,
    content_type: String,
    body: Option<Value>,
}

#[derive(Default)]
struct State {
    requests: Vec<Recorded>,
    objects: BTreeMap<String, Value>,
    resource_version: u64,
    deployment_reads: u32,
    broken_images: BTreeSet<String>,
    /// Images whose pull fails.
    unpullable_images: BTreeSet<String>,
    /// Pods never come up and never fail (for the timeout test).
    pending: bool,
    /// A crash-looping pod of an earlier attempt is still terminating.
    terminating: bool,
}

impl Recorded {
    /// Whether this request applies a Deployment.
    fn applies_deployment(&self) -> bool {
        self.method == "PATCH" && self.path.contains("/deployments/")
    }
}

type Shared = Arc<Mutex<State>>;

fn status(code: StatusCode, reason: &str, message: &str) -> Response {
    let body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": message, "reason": reason, "code": code.as_u16(),
    });
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn ok_json(v: &Value) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        v.to_string(),
    )
        .into_response()
}

fn container_image(d: &Value) -> String {
    d["spec"]["template"]["spec"]["containers"][0]["image"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

async fn api(
    axum::extract::State(shared): axum::extract::State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut s = match shared.lock() {
        Ok(s) => s,
        Err(p) => p.into_inner(),
    };
    let path = uri.path().to_owned();
    let body_json = serde_json::from_slice::<Value>(&body).ok();
    s.requests.push(Recorded {
        method: method.to_string(),
        path: path.clone(),
        query: uri.query().unwrap_or_default().to_owned(),
        content_type: headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned(),
        body: body_json.clone(),
    });

    if method == Method::PATCH {
        let Some(mut obj) = body_json else {
            return status(StatusCode::BAD_REQUEST, "BadRequest", "body is not JSON");
        };
        let stored = s.objects.get(&path).cloned();
        if let Some(rv) = obj["metadata"]["resourceVersion"].as_str() {
            let current = stored
                .as_ref()
                .and_then(|o| o["metadata"]["resourceVersion"].as_str())
                .unwrap_or_default();
            if rv != current {
                return status(
                    StatusCode::CONFLICT,
                    "Conflict",
                    "the object has been modified; please apply your changes to the latest version and try again",
                );
            }
        }
        s.resource_version += 1;
        obj["metadata"]["resourceVersion"] = s.resource_version.to_string().into();
        obj["metadata"]["uid"] = format!("uid-{}", path.len()).into();
        if path.contains("/deployments/") {
            let old_gen = stored
                .as_ref()
                .and_then(|o| o["metadata"]["generation"].as_i64())
                .unwrap_or(0);
            let changed = stored.as_ref().map(|o| &o["spec"]) != Some(&obj["spec"]);
            obj["metadata"]["generation"] = (old_gen + i64::from(changed)).into();
            s.deployment_reads = 0;
        }
        s.objects.insert(path, obj.clone());
        return ok_json(&obj);
    }

    if method == Method::GET && path.ends_with("/log") {
        return (
            StatusCode::OK,
            "starting hello\npanic: DATABASE_URL points nowhere\n",
        )
            .into_response();
    }

    if method == Method::GET && path.ends_with("/pods") {
        let deployment = s
            .objects
            .iter()
            .find(|(k, _)| k.contains("/deployments/"))
            .map(|(_, v)| v.clone());
        let mut items = Vec::new();
        if let Some(d) = deployment {
            let unpullable = s.unpullable_images.contains(&container_image(&d));
            let broken = unpullable || s.broken_images.contains(&container_image(&d));
            let waiting = if unpullable {
                json!({"reason": "ImagePullBackOff", "message": "Back-off pulling image"})
            } else if broken {
                json!({"reason": "CrashLoopBackOff", "message": "back-off 10s restarting failed container=hello pod=hello-7d9f-abcde"})
            } else {
                json!({"reason": "ContainerCreating"})
            };
            if broken || s.pending {
                items.push(json!({
                    "apiVersion": "v1", "kind": "Pod",
                    "metadata": {"name": "hello-7d9f-abcde", "namespace": "apps"},
                    "status": {
                        "phase": "Running",
                        "containerStatuses": [{
                            "name": "hello", "image": container_image(&d), "imageID": "",
                            "ready": false, "restartCount": 3,
                            "state": {"waiting": waiting},
                        }],
                    },
                }));
            }
        }
        if s.terminating {
            items.push(json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "hello-old-fghij", "namespace": "apps", "deletionTimestamp": "2026-01-01T00:00:00Z"},
                "status": {"containerStatuses": [{
                    "name": "hello", "image": "", "imageID": "", "ready": false, "restartCount": 5,
                    "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                }]},
            }));
        }
        return ok_json(&json!({
            "apiVersion": "v1", "kind": "PodList", "metadata": {"resourceVersion": "1"}, "items": items,
        }));
    }

    if method == Method::GET {
        let Some(mut obj) = s.objects.get(&path).cloned() else {
            return status(StatusCode::NOT_FOUND, "NotFound", "not found");
        };
        if path.contains("/deployments/") {
            s.deployment_reads += 1;
            let want = obj["spec"]["replicas"].as_i64().unwrap_or(1);
            let generation = obj["metadata"]["generation"].clone();
            let image = container_image(&obj);
            let healthy = !s.broken_images.contains(&image)
                && !s.unpullable_images.contains(&image)
                && !s.pending;
            // The first read shows the rollout half way, the next ones complete.
            let (updated, available) = if !healthy {
                (1, 0)
            } else if s.deployment_reads == 1 {
                (1, 1)
            } else {
                (want, want)
            };
            obj["status"] = json!({
                "observedGeneration": generation,
                "replicas": want.max(updated),
                "updatedReplicas": updated,
                "readyReplicas": available,
                "availableReplicas": available,
            });
        }
        return ok_json(&obj);
    }
    status(
        StatusCode::METHOD_NOT_ALLOWED,
        "MethodNotAllowed",
        "not supported",
    )
}

struct FakeApi {
    state: Shared,
    client: kube::Client,
}

async fn start() -> Result<FakeApi> {
    let state: Shared = Arc::default();
    let app = axum::Router::new().fallback(api).with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    // The server task ends with the test's runtime.
    tokio::spawn(async move { axum::serve(listener, app).await });
    let mut config = kube::Config::new(format!("http://{addr}").parse()?);
    config.default_namespace = "apps".into();
    let client = kube::Client::try_from(config)?;
    Ok(FakeApi { state, client })
}

impl FakeApi {
    fn requests(&self) -> Vec<Recorded> {
        match self.state.lock() {
            Ok(s) => s.requests.clone(),
            Err(p) => p.into_inner().requests.clone(),
        }
    }

    fn clear(&self) {
        if let Ok(mut s) = self.state.lock() {
            s.requests.clear();
        }
    }

    fn set(&self, f: impl FnOnce(&mut State)) {
        if let Ok(mut s) = self.state.lock() {
            f(&mut s);
        }
    }

    fn deployer(&self) -> Result<KubernetesDeployer> {
        Ok(KubernetesDeployer::builder(self.client.clone())
            .poll_interval(Duration::from_millis(20))
            .rollout_timeout(Duration::from_secs(10))
            .build()?)
    }
}

/// The request log with volatile parts (release times) normalized, for snapshots.
fn transcript(requests: &[Recorded]) -> String {
    let mut out = String::new();
    for r in requests {
        let q = if r.query.is_empty() {
            String::new()
        } else {
            format!("?{}", r.query)
        };
        out.push_str(&format!("{} {}{q}\n", r.method, r.path));
        if !r.content_type.is_empty() {
            out.push_str(&format!("content-type: {}\n", r.content_type));
        }
        if let Some(b) = &r.body {
            let mut b = b.clone();
            if let Some(json) = b["data"]["releases.json"].as_str() {
                let mut releases: Value = serde_json::from_str(json).unwrap_or(Value::Null);
                for rel in releases.as_array_mut().into_iter().flatten() {
                    rel["created"] = "[created]".into();
                }
                b["data"]["releases.json"] = releases;
            }
            out.push_str(&serde_json::to_string_pretty(&b).unwrap_or_default());
            out.push('\n');
        }
        out.push('\n');
    }
    out
}

/// `METHOD path` of each request.
fn calls(requests: &[Recorded]) -> Vec<String> {
    requests
        .iter()
        .map(|r| format!("{} {}", r.method, r.path))
        .collect()
}

/// A fake API server, a deployer on it, and release 1 of hello deployed.
async fn start_with_v1() -> Result<(FakeApi, KubernetesDeployer, Release)> {
    let api = start().await?;
    let deployer = api.deployer()?;
    let r1 = deployer
        .deploy(new_release("hello", 1, "")?, &Events::discard())
        .await?;
    Ok((api, deployer, r1))
}

/// Deploys release `n` of hello, which must fail; `expected` says why.
async fn deploy_fails(
    deployer: &KubernetesDeployer,
    n: u8,
    events: &Events,
    expected: &'static str,
) -> Result<DeployError> {
    Ok(deployer
        .deploy(new_release("hello", n, "")?, events)
        .await
        .err()
        .ok_or(expected)?)
}

fn check_apply(r: &Recorded, api_version: &str, kind: &str, name: &str) {
    assert_eq!(r.method, "PATCH", "server-side apply is a PATCH: {r:?}");
    let mut query: Vec<&str> = r.query.split('&').filter(|p| !p.is_empty()).collect();
    query.sort_unstable();
    assert_eq!(
        query,
        ["fieldManager=hephy", "force=true"],
        "apply with field manager hephy, forced: {r:?}"
    );
    assert_eq!(r.content_type, "application/apply-patch+yaml", "{r:?}");
    let b = r.body.as_ref().expect("apply has a body");
    assert_eq!(b["apiVersion"], api_version, "{r:?}");
    assert_eq!(b["kind"], kind, "{r:?}");
    assert_eq!(b["metadata"]["name"], name, "{r:?}");
    assert_eq!(b["metadata"]["namespace"], "apps", "{r:?}");
}

#[tokio::test]
async fn deploy_applies_objects_waits_for_rollout_and_records_the_release() -> Result {
    let api = start().await?;
    let deployer = api.deployer()?;
    let (events, mut stream) = Events::channel();
    let r1 = deployer
        .deploy(new_release("hello", 1, "")?, &events)
        .await?;
    assert_eq!(r1.version, ReleaseVersion::FIRST);
    drop(events);

    let reqs = api.requests();
    let calls = calls(&reqs);
    let ns = "/api/v1/namespaces/apps";
    assert_eq!(
        calls,
        vec![
            format!("GET {ns}/configmaps/hephy-hello-releases"),
            format!("GET {ns}/secrets/hephy-hello-releases"),
            format!("PATCH {ns}/secrets/hello-env"),
            "PATCH /apis/apps/v1/namespaces/apps/deployments/hello".into(),
            format!("PATCH {ns}/services/hello"),
            "GET /apis/apps/v1/namespaces/apps/deployments/hello".into(),
            format!("GET {ns}/pods"),
            "GET /apis/apps/v1/namespaces/apps/deployments/hello".into(),
            format!("PATCH {ns}/secrets/hephy-hello-releases"),
            format!("PATCH {ns}/configmaps/hephy-hello-releases"),
        ]
    );
    check_apply(&reqs[2], "v1", "Secret", "hello-env");
    check_apply(&reqs[3], "apps/v1", "Deployment", "hello");
    check_apply(&reqs[4], "v1", "Service", "hello");
    check_apply(&reqs[8], "v1", "Secret", "hephy-hello-releases");
    check_apply(&reqs[9], "v1", "ConfigMap", "hephy-hello-releases");
    let ledger = reqs[9].body.as_ref().ok_or("no body")?.to_string();
    assert!(
        ledger.contains("v1") && !ledger.contains("hello world"),
        "config var values stay out of the ledger ConfigMap: {ledger}"
    );
    let d = reqs[3].body.as_ref().ok_or("no body")?;
    assert_eq!(
        container_image(d),
        pinned(1),
        "the Deployment runs the image by digest"
    );
    assert_eq!(
        reqs[6].query,
        "&labelSelector=app.kubernetes.io%2Fname%3Dhello%2Chephy.io%2Frelease%3Dv1"
    );
    insta::assert_snapshot!("apply_v1_requests", transcript(&reqs));

    let mut lines = Vec::new();
    while let Some(e) = stream.try_recv() {
        lines.push(e.render());
    }
    let text = lines.join("\n");
    assert!(
        text.contains("rollout of v1: 1 of 2 updated, 1 available")
            && text.contains("rollout of v1: 2 of 2 updated, 2 available"),
        "progress events expected:\n{text}"
    );

    // Another hephy instance on the same cluster sees the same history.
    let other = api.deployer()?;
    assert_eq!(other.releases(&r1.app).await?, vec![r1]);
    Ok(())
}

#[tokio::test]
async fn crash_looping_release_reports_the_pod_and_reapplies_the_previous_one() -> Result {
    let (api, deployer, r1) = start_with_v1().await?;
    let events = Events::discard();

    let broken = pinned(2);
    api.set(|s| {
        s.broken_images.insert(broken.clone());
    });
    api.clear();
    let err = deploy_fails(&deployer, 2, &events, "a crash-looping release must fail").await?;
    let DeployError::Unhealthy {
        version,
        reason,
        log_tail,
        ..
    } = &err
    else {
        return Err(format!("expected Unhealthy, got {err:?}").into());
    };
    assert_eq!(version.number(), 2);
    assert!(reason.contains("CrashLoopBackOff"), "{reason}");
    assert_eq!(
        log_tail.last().map(String::as_str),
        Some("panic: DATABASE_URL points nowhere")
    );
    insta::assert_snapshot!("crash_loop_error", err.to_string());

    let reqs = api.requests();
    let log = reqs
        .iter()
        .find(|r| r.path.ends_with("/log"))
        .ok_or("the failing pod's log is read")?;
    assert_eq!(
        log.path,
        "/api/v1/namespaces/apps/pods/hello-7d9f-abcde/log"
    );
    assert_eq!(log.query, "&container=hello&previous=true&tailLines=20");
    let deployment_applies: Vec<String> = reqs
        .iter()
        .filter(|r| r.applies_deployment())
        .filter_map(|r| r.body.as_ref().map(container_image))
        .collect();
    assert_eq!(
        deployment_applies,
        vec![broken.clone(), pinned(1)],
        "the broken release is applied, then v1 again"
    );
    assert!(
        !reqs
            .iter()
            .any(|r| r.method == "PATCH" && r.path.contains("hephy-hello-releases")),
        "a failed release is not recorded"
    );
    assert_eq!(deployer.releases(&r1.app).await?, vec![r1.clone()]);

    // The next good release is v2 again: the failed one did not take the number. A pod of the
    // failed attempt that is still terminating does not fail it.
    api.set(|s| {
        s.broken_images.clear();
        s.terminating = true;
    });
    let r2 = deployer
        .deploy(new_release("hello", 3, "")?, &events)
        .await?;
    assert_eq!(r2.version.number(), 2);
    Ok(())
}

#[tokio::test]
async fn stuck_rollout_times_out_with_the_waiting_reason() -> Result {
    let api = start().await?;
    api.set(|s| s.pending = true);
    let deployer = KubernetesDeployer::builder(api.client.clone())
        .namespace("apps")
        .poll_interval(Duration::from_millis(20))
        .rollout_timeout(Duration::from_millis(200))
        .build()?;
    let err = deploy_fails(
        &deployer,
        1,
        &Events::discard(),
        "a stuck rollout must fail",
    )
    .await?;
    let text = err.to_string();
    assert!(
        text.contains("did not finish in 200ms")
            && text.contains("pod hello-7d9f-abcde container hello: ContainerCreating"),
        "{text}"
    );
    assert!(deployer.releases(&"hello".parse()?).await?.is_empty());
    Ok(())
}

#[tokio::test]
async fn rollback_reapplies_an_earlier_image_as_a_new_release() -> Result {
    let (api, deployer, r1) = start_with_v1().await?;
    let events = Events::discard();
    deployer
        .deploy(new_release("hello", 2, "")?, &events)
        .await?;
    api.clear();
    let r3 = deployer
        .rollback(&r1.app, ReleaseVersion::FIRST, &events)
        .await?;
    assert_eq!(r3.version.number(), 3);
    assert_eq!(r3.image, image(1)?);
    assert!(!r1.config.is_empty());
    assert_eq!(
        r3.config, r1.config,
        "v1's config vars come back from the ledger Secret"
    );
    assert_eq!(
        r3.cause,
        ReleaseCause::Rollback {
            to: ReleaseVersion::FIRST
        }
    );
    let reqs = api.requests();
    let d = reqs
        .iter()
        .find(|r| r.applies_deployment())
        .and_then(|r| r.body.as_ref())
        .ok_or("the rollback applies the Deployment")?;
    assert!(container_image(d).ends_with(&"01".repeat(32)));
    assert_eq!(d["metadata"]["labels"]["hephy.io/release"], "v3");
    let versions: Vec<u32> = deployer
        .releases(&r1.app)
        .await?
        .iter()
        .map(|r| r.version.number())
        .collect();
    assert_eq!(versions, vec![1, 2, 3]);
    Ok(())
}

#[tokio::test]
async fn a_concurrent_ledger_write_is_a_conflict_not_a_lost_release() -> Result {
    let (api, deployer, _) = start_with_v1().await?;
    let events = Events::discard();
    // Another instance writes the ledger between this one's read and write: bump the stored
    // resourceVersion as soon as the Deployment is applied.
    let state = api.state.clone();
    let bumper = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(5)).await;
            let Ok(mut s) = state.lock() else { return };
            if s.requests.iter().filter(|r| r.applies_deployment()).count() >= 2 {
                if let Some(cm) = s
                    .objects
                    .get_mut("/api/v1/namespaces/apps/configmaps/hephy-hello-releases")
                {
                    cm["metadata"]["resourceVersion"] = "999".into();
                }
                return;
            }
        }
    });
    let err = deploy_fails(
        &deployer,
        2,
        &events,
        "a conflicting ledger write must fail",
    )
    .await?;
    bumper.await?;
    assert!(
        err.to_string()
            .contains("another hephy instance recorded a release of hello"),
        "{err}"
    );
    Ok(())
}

#[tokio::test]
async fn flagger_strategy_applies_a_canary_and_leaves_promotion_to_flagger() -> Result {
    let api = start().await?;
    let deployer = api.deployer()?;
    deployer
        .deploy(
            new_release("hello", 1, "strategy = \"blue-green\"")?,
            &Events::discard(),
        )
        .await?;
    let reqs = api.requests();
    let calls = calls(&reqs);
    assert_eq!(
        calls,
        vec![
            "GET /api/v1/namespaces/apps/configmaps/hephy-hello-releases",
            "GET /api/v1/namespaces/apps/secrets/hephy-hello-releases",
            "PATCH /api/v1/namespaces/apps/secrets/hello-env",
            "PATCH /apis/apps/v1/namespaces/apps/deployments/hello",
            "PATCH /apis/flagger.app/v1beta1/namespaces/apps/canaries/hello",
            "PATCH /api/v1/namespaces/apps/secrets/hephy-hello-releases",
            "PATCH /api/v1/namespaces/apps/configmaps/hephy-hello-releases",
        ]
    );
    check_apply(&reqs[4], "flagger.app/v1beta1", "Canary", "hello");
    Ok(())
}

#[tokio::test]
async fn unpullable_image_fails_at_once_without_reading_a_log() -> Result {
    let (api, deployer, _) = start_with_v1().await?;
    let events = Events::discard();
    api.set(|s| {
        s.unpullable_images.insert(pinned(2));
    });
    api.clear();
    let err = deploy_fails(&deployer, 2, &events, "an unpullable image must fail").await?;
    let text = err.to_string();
    assert!(
        text.contains(
            "pod hello-7d9f-abcde container hello: ImagePullBackOff: Back-off pulling image"
        ),
        "{text}"
    );
    let reqs = api.requests();
    assert!(
        !reqs.iter().any(|r| r.path.ends_with("/log")),
        "a container that never started has no log to read"
    );
    assert_eq!(
        reqs.iter().filter(|r| r.applies_deployment()).count(),
        2,
        "the failed release, then v1 again"
    );
    Ok(())
}
