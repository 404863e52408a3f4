//! The Kubernetes manifests of a release: snapshots of every object, and a round trip through
//! k8s-openapi's types.

use std::time::{Duration, SystemTime};

use hephy_core::{
    AppConfig, AppName, ConfigVars, NewRelease, Reference, Release, ReleaseCause, ReleaseVersion,
};
use hephy_deploy::manifests::{
    self, ledger_config_map, ledger_secret, render, to_yaml, ManifestOptions,
};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use kube::api::DynamicObject;
use serde::Deserialize;

pub type Result<T = (), E = Box<dyn std::error::Error + Send + Sync>> = std::result::Result<T, E>;

/// A digest-pinned image in a registry, distinct per `n`.
pub fn image(n: u8) -> Result<Reference> {
    let hex: String = format!("{n:02x}").repeat(32);
    Ok(format!("registry.example.com:5000/team/hello:v{n}@sha256:{hex}").parse()?)
}

/// [`image`] `n` as deployed: by digest, without the tag.
pub fn pinned(n: u8) -> String {
    format!(
        "registry.example.com:5000/team/hello@sha256:{}",
        format!("{n:02x}").repeat(32)
    )
}

/// `hephy.toml` of the fixture app, with `extra` appended to `[deploy]`.
pub fn deploy_config(extra: &str) -> Result<hephy_core::DeployConfig> {
    let toml = format!(
        "[deploy]\nport = 5000\nreplicas = 2\n{extra}\n[deploy.health]\npath = \"/healthz\"\ntimeout = \"30s\"\ninterval = \"2s\"\n[deploy.resources]\nmemory = \"256M\"\ncpus = 0.5\n"
    );
    Ok(AppConfig::from_toml("hephy.toml", &toml)?.deploy)
}

/// A new release of `app` running `image(n)` with two config vars.
pub fn new_release(app: &str, n: u8, extra: &str) -> Result<NewRelease> {
    let mut vars = ConfigVars::default();
    vars.set("GREETING", "hello world")?;
    vars.set("DATABASE_URL", "postgres://db:5432/hello")?;
    let cause = ReleaseCause::Push {
        commit: format!("{n:02x}").repeat(20),
        author: "dev".into(),
    };
    Ok(NewRelease::new(app.parse()?, image(n)?, deploy_config(extra)?, cause).with_config(vars))
}

/// `new_release` as release `version`, made at a fixed time.
pub fn release(app: &str, n: u8, version: u32, extra: &str) -> Result<Release> {
    let v = ReleaseVersion::new(version).ok_or("release 0")?;
    Ok(new_release(app, n, extra)?.into_release(
        v,
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_764_000_000),
        None,
    ))
}

fn options() -> Result<ManifestOptions> {
    Ok(ManifestOptions::new("apps")?.label("example.com/team", "web")?)
}

#[test]
fn rolling_release_renders_secret_deployment_and_service() -> Result {
    let r = release("hello", 1, 3, "")?;
    let m = render(&r, &options()?)?;
    assert!(
        m.canary.is_none(),
        "a rolling release needs no Flagger Canary"
    );
    insta::assert_snapshot!("rolling", m.to_yaml()?);

    let deployment = to_yaml(&m.deployment)?;
    assert!(
        deployment.contains(&format!(
            "image: registry.example.com:5000/team/hello@sha256:{}",
            "01".repeat(32)
        )),
        "the image is pinned by digest without its tag:\n{deployment}"
    );
    Ok(())
}

#[test]
fn manifests_deserialize_into_k8s_openapi_types() -> Result {
    let r = release("hello", 1, 3, "")?;
    let m = render(&r, &options()?)?;
    let stream = m.to_yaml()?;
    let docs: Vec<serde_norway::Value> = serde_norway::Deserializer::from_str(&stream)
        .map(serde_norway::Value::deserialize)
        .collect::<std::result::Result<_, _>>()?;
    assert_eq!(docs.len(), 3, "secret, deployment and service:\n{stream}");

    let secret: Secret = serde_norway::from_value(docs[0].clone())?;
    assert_eq!(secret, m.secret);
    let data = secret.data.ok_or("the secret has no data")?;
    assert_eq!(
        data.get("GREETING").map(|b| b.0.as_slice()),
        Some(&b"hello world"[..])
    );
    let deployment: Deployment = serde_norway::from_value(docs[1].clone())?;
    assert_eq!(deployment, m.deployment);
    let pod = deployment.spec.template.spec.ok_or("no pod spec")?;
    let c = &pod.containers[0];
    let sc = c.security_context.as_ref().ok_or("no security context")?;
    assert_eq!(sc.run_as_non_root, Some(true));
    assert_eq!(sc.run_as_user, Some(65532));
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(
        sc.capabilities.as_ref().and_then(|c| c.drop.clone()),
        Some(vec!["ALL".to_owned()])
    );
    let probe = c.readiness_probe.as_ref().ok_or("no readiness probe")?;
    assert_eq!(
        probe.http_get.as_ref().and_then(|h| h.path.as_deref()),
        Some("/healthz")
    );
    assert_eq!(deployment.spec.replicas, Some(2));
    let service: Service = serde_norway::from_value(docs[2].clone())?;
    assert_eq!(Some(service), m.service);

    let cm = ledger_config_map(&r.app, std::slice::from_ref(&r), &options()?)?;
    let back: ConfigMap = serde_norway::from_str(&to_yaml(&cm)?)?;
    let json = back
        .data
        .as_ref()
        .and_then(|d| d.get(manifests::LEDGER_KEY))
        .ok_or("no releases.json in the ledger")?;
    let releases: Vec<Release> = serde_json::from_str(json)?;
    let mut without_vars = r.clone();
    without_vars.config = ConfigVars::default();
    assert_eq!(
        releases,
        vec![without_vars],
        "the ConfigMap has the releases without config var values"
    );
    let secret = ledger_secret(&r.app, std::slice::from_ref(&r), &options()?)?;
    let back: Secret = serde_norway::from_str(&to_yaml(&secret)?)?;
    let json = back
        .data
        .as_ref()
        .and_then(|d| d.get(manifests::LEDGER_CONFIG_KEY))
        .ok_or("no config.json in the ledger secret")?;
    let vars: std::collections::BTreeMap<String, ConfigVars> = serde_json::from_slice(&json.0)?;
    assert_eq!(vars.get("v3"), Some(&r.config));
    Ok(())
}

#[test]
fn tcp_probe_and_recreate_without_health_path() -> Result {
    let toml = "[deploy]\nstrategy = \"recreate\"\nhealth = { timeout = \"90s\" }\n";
    let deploy = AppConfig::from_toml("hephy.toml", toml)?.deploy;
    let app: AppName = "worker".parse()?;
    let r = NewRelease::new(
        app,
        image(7)?,
        deploy,
        ReleaseCause::Image {
            reference: "worker".into(),
        },
    )
    .into_release(ReleaseVersion::FIRST, SystemTime::UNIX_EPOCH, None);
    let m = render(&r, &ManifestOptions::new("default")?)?;
    let yaml = to_yaml(&m.deployment)?;
    assert!(yaml.contains("tcpSocket:"), "TCP probe expected:\n{yaml}");
    assert!(
        !yaml.contains("resources:"),
        "no limits were asked:\n{yaml}"
    );
    insta::assert_snapshot!("recreate_tcp_deployment", yaml);
    Ok(())
}

#[test]
fn flagger_strategies_render_a_canary_instead_of_a_service() -> Result {
    for (strategy, name) in [("blue-green", "blue_green"), ("canary", "canary")] {
        let r = release("hello", 2, 4, &format!("strategy = \"{strategy}\""))?;
        let m = render(&r, &options()?)?;
        assert!(
            m.service.is_none(),
            "Flagger owns the services for {strategy}"
        );
        let canary = m.canary.as_ref().ok_or("no canary")?;
        let yaml = to_yaml(canary)?;
        let back: DynamicObject = serde_norway::from_str(&yaml)?;
        let types = back.types.ok_or("no apiVersion/kind")?;
        assert_eq!(
            (types.api_version.as_str(), types.kind.as_str()),
            ("flagger.app/v1beta1", "Canary")
        );
        assert_eq!(back.data["spec"]["targetRef"]["name"], "hello");
        insta::assert_snapshot!(format!("{name}_canary"), yaml);
    }
    Ok(())
}

#[test]
fn ledger_config_map_snapshot() -> Result {
    let one = release("hello", 1, 1, "")?;
    let mut two = release("hello", 2, 2, "")?;
    two.cause = ReleaseCause::Rollback {
        to: ReleaseVersion::FIRST,
    };
    let app = one.app.clone();
    let releases = [one, two];
    let cm = ledger_config_map(&app, &releases, &options()?)?;
    let secret = ledger_secret(&app, &releases, &options()?)?;
    insta::assert_snapshot!(
        "ledger",
        format!("{}---\n{}", to_yaml(&cm)?, to_yaml(&secret)?)
    );
    Ok(())
}

#[test]
fn bad_input_is_refused_with_the_fix() -> Result {
    let mut messages = Vec::new();
    let mut r = release("hello", 1, 1, "")?;
    r.image = "registry.example.com/team/hello:v1".parse()?;
    messages.push(
        render(&r, &options()?)
            .map(drop)
            .err()
            .ok_or("unpinned")?
            .to_string(),
    );
    r.image = format!("hephy.local/hello:v1@sha256:{}", "ab".repeat(32)).parse()?;
    messages.push(
        render(&r, &options()?)
            .map(drop)
            .err()
            .ok_or("local")?
            .to_string(),
    );
    let mut r = release("hello", 1, 1, "")?;
    r.deploy.resources.cpus = Some(0.0);
    messages.push(
        render(&r, &options()?)
            .map(drop)
            .err()
            .ok_or("cpus")?
            .to_string(),
    );
    messages.push(
        ManifestOptions::new("Apps")
            .err()
            .ok_or("namespace")?
            .to_string(),
    );
    messages.push(
        ManifestOptions::new("apps")?
            .label("hephy.io/release", "v9")
            .err()
            .ok_or("reserved label")?
            .to_string(),
    );
    messages.push(
        ManifestOptions::new("apps")?
            .label("team", "has space")
            .err()
            .ok_or("label value")?
            .to_string(),
    );
    insta::assert_snapshot!("refusals", messages.join("\n"));
    Ok(())
}
