//! The local deployer with real runc containers of the Go hello app.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hephy_core::{
    ConfigChange, DeployConfig, DeployError, Deployer, Events, ReleaseCause, ReleaseVersion,
};
use hephy_deploy::local::LocalDeployer;

use crate::support::*;

fn deployer(data: &Path) -> Result<LocalDeployer> {
    Ok(LocalDeployer::builder(data)
        .layout_root(&fixture()?.root)
        .drain_timeout(Duration::from_secs(5))
        .stop_timeout(Duration::from_secs(5))
        .build()?)
}

fn v(n: u32) -> ReleaseVersion {
    ReleaseVersion::new(n).unwrap_or(ReleaseVersion::FIRST)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_serves_through_the_router() -> Result {
    let f = fixture()?;
    let data = tempfile::tempdir()?;
    let app = unique_app("serve");
    let _guard = Containers(app.clone());
    let d = deployer(data.path())?;
    d.create_app(&app).await?;
    let addr = d.addr(&app)?;

    let mut deploy = DeployConfig::default();
    deploy.health.path = Some("/healthz".into());
    let (events, mut stream) = Events::channel();
    let r = d
        .deploy(release_with(&app, &f.one, deploy), &events)
        .await?;
    drop(events);
    assert_eq!(r.version, v(1));
    assert_eq!(body(addr, "/").await?, "hello world from one\n");
    // The image's user `app` is resolved from its /etc/passwd.
    assert_eq!(body(addr, "/whoami").await?, "uid=65532 gid=65532\n");
    // Read-only root, writable /tmp.
    assert_eq!(body(addr, "/write").await?, "root=false tmp=true\n");
    assert_eq!(d.url(&app)?, format!("http://{addr}"));
    assert_eq!(d.releases(&app).await?.len(), 1);
    assert_eq!(d.apps().await?, vec![app.clone()]);

    let mut lines = vec![];
    while let Some(e) = stream.recv().await {
        lines.push(e.render());
    }
    let all = lines.join("\n");
    assert!(
        all.contains("health check passed: GET /healthz answered 200"),
        "{all}"
    );
    assert!(all.contains("switched traffic to v1 in"), "{all}");

    let mut logs = d.logs(&app, false).await?;
    let first = logs.next_line().await.ok_or("the log is empty")?;
    assert!(first.starts_with("one listening on :"), "{first}");

    d.destroy_app(&app, &Events::discard()).await?;
    assert!(
        containers_of(&app)?.is_empty(),
        "destroy leaves no container"
    );
    assert!(d.apps().await?.is_empty());
    assert!(get(addr, "/").await.is_err(), "the router is gone");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_release_switches_without_failed_requests() -> Result {
    let f = fixture()?;
    let data = tempfile::tempdir()?;
    let app = unique_app("switch");
    let _guard = Containers(app.clone());
    let d = deployer(data.path())?;
    d.create_app(&app).await?;
    let addr = d.addr(&app)?;
    d.deploy(release(&app, &f.one), &Events::discard()).await?;
    let mut follow = d.logs(&app, true).await?;

    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let client = {
        let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
        tokio::spawn(async move {
            let mut seen = std::collections::BTreeSet::new();
            let mut errors = vec![];
            while !stop.load(Ordering::SeqCst) {
                match body(addr, "/").await {
                    Ok(b) => {
                        ok.fetch_add(1, Ordering::SeqCst);
                        seen.insert(b);
                    }
                    Err(e) => {
                        failed.fetch_add(1, Ordering::SeqCst);
                        errors.push(e.to_string());
                    }
                }
            }
            (seen, errors)
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let r = d.deploy(release(&app, &f.two), &Events::discard()).await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::SeqCst);
    let (seen, errors) = client.await?;

    assert_eq!(r.version, v(2));
    assert!(
        errors.is_empty(),
        "{} failed requests: {errors:?}",
        errors.len()
    );
    assert_eq!(failed.load(Ordering::SeqCst), 0);
    assert!(ok.load(Ordering::SeqCst) > 10, "the client loop ran");
    let expected: std::collections::BTreeSet<String> =
        ["hello world from one\n", "hello world from two\n"]
            .map(String::from)
            .into();
    assert_eq!(seen, expected);
    assert_eq!(body(addr, "/").await?, "hello world from two\n");
    assert_eq!(
        containers_of(&app)?,
        vec![format!("hephy-{app}-v2")],
        "the old release is stopped"
    );

    // The followed log moves on to the new release.
    let mut lines = vec![];
    while let Ok(Some(line)) =
        tokio::time::timeout(Duration::from_secs(5), follow.next_line()).await
    {
        let done = line.starts_with("two listening");
        lines.push(line);
        if done {
            break;
        }
    }
    assert!(
        lines.iter().any(|l| l.starts_with("one listening")),
        "{lines:?}"
    );
    assert!(
        lines.iter().any(|l| l.starts_with("two listening")),
        "{lines:?}"
    );
    // The old release was stopped with SIGTERM, which it logged.
    let mut all = d.logs(&app, false).await?;
    let mut lines = vec![];
    while let Some(line) = all.next_line().await {
        lines.push(line);
    }
    let in_order = lines.len() == 3
        && lines[0].starts_with("one listening on :")
        && lines[1] == "stopping on SIGTERM"
        && lines[2].starts_with("two listening on :");
    assert!(in_order, "{lines:?}");

    d.shutdown().await?;
    assert!(containers_of(&app)?.is_empty());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unhealthy_release_leaves_the_old_one_serving() -> Result {
    let f = fixture()?;
    let data = tempfile::tempdir()?;
    let app = unique_app("unhealthy");
    let _guard = Containers(app.clone());
    let d = deployer(data.path())?;
    d.create_app(&app).await?;
    let addr = d.addr(&app)?;
    d.deploy(release(&app, &f.one), &Events::discard()).await?;

    // A release that exits at once.
    let err = d
        .deploy(release(&app, &f.bad), &Events::discard())
        .await
        .err()
        .ok_or("the failing release deployed")?;
    let DeployError::Unhealthy {
        version, log_tail, ..
    } = &err
    else {
        return Err(format!("expected Unhealthy, got {err}").into());
    };
    assert_eq!(*version, v(2));
    assert!(
        log_tail
            .iter()
            .any(|l| l == "failing on purpose: on-purpose"),
        "{log_tail:?}"
    );
    let msg = err.to_string();
    assert!(msg.contains("the previous release keeps serving"), "{msg}");
    assert!(msg.contains("failing on purpose"), "{msg}");

    // A release whose HTTP health check answers 500 until the timeout.
    let mut deploy = DeployConfig::default();
    deploy.health.path = Some("/healthz".into());
    deploy.health.timeout = Duration::from_secs(2);
    let err = d
        .deploy(release_with(&app, &f.unhealthy, deploy), &Events::discard())
        .await
        .err()
        .ok_or("the unhealthy release deployed")?;
    assert!(
        err.to_string().contains("GET /healthz answered 500"),
        "{err}"
    );

    assert_eq!(body(addr, "/").await?, "hello world from one\n");
    assert_eq!(
        d.releases(&app).await?.len(),
        1,
        "no failed release is recorded"
    );
    assert_eq!(containers_of(&app)?, vec![format!("hephy-{app}-v1")]);
    d.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_and_rollback_make_releases() -> Result {
    let f = fixture()?;
    let data = tempfile::tempdir()?;
    let app = unique_app("config");
    let _guard = Containers(app.clone());
    let d = deployer(data.path())?;
    d.create_app(&app).await?;
    let addr = d.addr(&app)?;
    let ev = Events::discard();
    d.deploy(release(&app, &f.one), &ev).await?;

    let r = d
        .set_config(
            &app,
            &ConfigChange::parse_assignments(["GREETING=there"])?,
            &ev,
        )
        .await?;
    assert_eq!(r.version, v(2));
    assert!(matches!(r.cause, ReleaseCause::Config { .. }));
    assert_eq!(body(addr, "/").await?, "hello there from one\n");

    // A new image keeps the config.
    d.deploy(release(&app, &f.two), &ev).await?;
    assert_eq!(body(addr, "/").await?, "hello there from two\n");

    // Rollback to v1: its image and its (empty) config.
    let r = d.rollback(&app, v(1), &ev).await?;
    assert_eq!(r.version, v(4));
    assert_eq!(r.cause, ReleaseCause::Rollback { to: v(1) });
    assert_eq!(body(addr, "/").await?, "hello world from one\n");

    let r = d
        .set_config(&app, &ConfigChange::unset(["GREETING"]), &ev)
        .await;
    assert!(r.is_err(), "unsetting a var that is not set fails");
    let versions: Vec<String> = d
        .releases(&app)
        .await?
        .iter()
        .map(|r| r.version.to_string())
        .collect();
    assert_eq!(versions, ["v1", "v2", "v3", "v4"]);
    d.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_deployer_brings_the_apps_back() -> Result {
    let f = fixture()?;
    let data = tempfile::tempdir()?;
    let app = unique_app("restore");
    let _guard = Containers(app.clone());
    let addr;
    {
        let d = deployer(data.path())?;
        d.create_app(&app).await?;
        addr = d.addr(&app)?;
        d.deploy(release(&app, &f.one), &Events::discard()).await?;
        d.set_config(
            &app,
            &ConfigChange::parse_assignments(["GREETING=again"])?,
            &Events::discard(),
        )
        .await?;
        // Dropped without shutdown, as a crash would: the router goes, the container stays.
    }
    assert!(
        get(addr, "/").await.is_err(),
        "nothing listens while the deployer is down"
    );

    let d = deployer(data.path())?;
    let report = d.restore(&Events::discard()).await?;
    assert_eq!(report.reused, vec![app.clone()], "{report:?}");
    assert_eq!(body(addr, "/").await?, "hello again from one\n");
    drop(d);

    // The container died too (a reboot): the release is started again.
    let id = format!("hephy-{app}-v2");
    let out = std::process::Command::new("runc")
        .args(["delete", "-f", &id])
        .output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let d = deployer(data.path())?;
    let report = d.restore(&Events::discard()).await?;
    assert_eq!(report.restarted, vec![app.clone()], "{report:?}");
    assert_eq!(body(addr, "/").await?, "hello again from one\n");
    assert_eq!(
        d.releases(&app).await?.len(),
        2,
        "restoring makes no release"
    );
    d.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_clear_errors() -> Result {
    let f = fixture()?;
    let data = tempfile::tempdir()?;
    let d = deployer(data.path())?;
    let ev = Events::discard();
    let ghost = unique_app("ghost");

    let err = d
        .deploy(release(&ghost, &f.one), &ev)
        .await
        .err()
        .ok_or("deployed to an unknown app")?;
    assert!(matches!(err, DeployError::UnknownApp { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        format!("unknown app {ghost}: create the app first")
    );
    assert_eq!(err.hint(), Some(format!("run `hephy apps create {ghost}`")));
    let err = d
        .releases(&ghost)
        .await
        .err()
        .ok_or("releases of an unknown app")?;
    assert!(matches!(err, DeployError::UnknownApp { .. }), "{err}");
    assert!(d.url(&ghost).is_err());
    assert!(d.logs(&ghost, false).await.is_err());

    let app = unique_app("errors");
    let _guard = Containers(app.clone());
    d.create_app(&app).await?;
    let err = d
        .create_app(&app)
        .await
        .err()
        .ok_or("created an app twice")?;
    assert!(err.to_string().contains("already exists"), "{err}");

    let err = d
        .set_config(&app, &ConfigChange::parse_assignments(["A=1"])?, &ev)
        .await
        .err()
        .ok_or("configured an app without release")?;
    assert!(matches!(err, DeployError::NoRelease { .. }), "{err}");

    let mut bad_vars = hephy_core::ConfigVars::default();
    bad_vars.set("GOOD", "1")?;
    let raw: hephy_core::ConfigVars = serde_json::from_str(r#"{"1BAD": "x"}"#)?;
    let err = d
        .deploy(release(&app, &f.one).with_config(raw), &ev)
        .await
        .err()
        .ok_or("deployed a bad config var name")?;
    assert!(
        err.to_string().contains("invalid config var name \"1BAD\""),
        "{err}"
    );

    let unpinned = "hephy.local/hello-fixture:one".parse()?;
    let err = d
        .deploy(release(&app, &unpinned), &ev)
        .await
        .err()
        .ok_or("deployed an unpinned image")?;
    assert!(err.to_string().contains("not pinned to a digest"), "{err}");

    let missing = "hephy.local/nothing-here@sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824".parse()?;
    let err = d
        .deploy(release(&app, &missing), &ev)
        .await
        .err()
        .ok_or("deployed a missing image")?;
    assert!(
        format!("{err}: {:?}", std::error::Error::source(&err)).contains("no OCI image layout"),
        "{err:?}"
    );

    d.deploy(release(&app, &f.one).with_config(bad_vars), &ev)
        .await?;
    let err = d
        .rollback(&app, v(9), &ev)
        .await
        .err()
        .ok_or("rolled back to v9")?;
    assert!(err.to_string().contains("has no release v9"), "{err}");
    assert_eq!(d.releases(&app).await?.len(), 1);
    d.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn images_are_pulled_from_a_registry() -> Result {
    use hephy_oci::{RegistryAuth, RegistryOptions, RegistryPublisher};
    use hephy_testing::TestRegistry;

    fixture()?; // warms the Go build cache
    let registry = TestRegistry::start()?;
    let options = RegistryOptions::new()
        .auth(RegistryAuth::Anonymous)
        .insecure(registry.host());
    let publisher = RegistryPublisher::builder(registry.host())
        .prefix("apps")
        .options(options.clone())
        .build()?;
    let work = tempfile::tempdir()?;
    let image = publish_with(
        Arc::new(publisher),
        work.path(),
        "reg",
        "-X main.version=pulled",
    )
    .await?;
    assert_eq!(image.registry(), registry.host());

    let data = tempfile::tempdir()?;
    let app = unique_app("pulled");
    let _guard = Containers(app.clone());
    let d = LocalDeployer::builder(data.path())
        .registry(options)
        .stop_timeout(Duration::from_secs(5))
        .build()?;
    d.create_app(&app).await?;
    let (events, mut stream) = Events::channel();
    d.deploy(release(&app, &image), &events).await?;
    drop(events);
    assert_eq!(body(d.addr(&app)?, "/").await?, "hello world from pulled\n");
    let mut lines = vec![];
    while let Some(e) = stream.recv().await {
        lines.push(e.render());
    }
    assert!(lines.iter().any(|l| l.contains("pulling ")), "{lines:?}");
    d.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recreate_strategy_and_resource_limits() -> Result {
    let f = fixture()?;
    let data = tempfile::tempdir()?;
    let app = unique_app("recreate");
    let _guard = Containers(app.clone());
    let d = deployer(data.path())?;
    d.create_app(&app).await?;
    let addr = d.addr(&app)?;
    let mut deploy = DeployConfig::default();
    deploy.strategy = hephy_core::Strategy::Recreate;
    deploy.resources.memory = Some(128 << 20);
    deploy.resources.cpus = Some(0.5);
    let (events, mut stream) = Events::channel();
    d.deploy(release_with(&app, &f.one, deploy.clone()), &events)
        .await?;
    d.deploy(release_with(&app, &f.two, deploy), &events)
        .await?;
    drop(events);
    assert_eq!(body(addr, "/").await?, "hello world from two\n");
    assert_eq!(containers_of(&app)?, vec![format!("hephy-{app}-v2")]);
    let mut lines = vec![];
    while let Some(e) = stream.recv().await {
        lines.push(e.render());
    }
    assert!(
        lines
            .iter()
            .any(|l| l.contains("stopping v1 first (strategy recreate)")),
        "{lines:?}"
    );
    // The limits are in the spec, unless this host cannot apply them (then a warning says so).
    let spec: serde_json::Value = serde_json::from_slice(&std::fs::read(
        data.path()
            .join(format!("apps/{app}/bundles/v2/config.json")),
    )?)?;
    let cg = hephy_deploy::runc::CgroupSupport::detect();
    assert_eq!(
        spec["linux"]["resources"]["memory"]["limit"].as_u64(),
        cg.memory.then_some(128 << 20),
        "{lines:?}"
    );
    assert_eq!(
        spec["linux"]["resources"]["cpu"]["quota"].as_i64(),
        cg.cpu.then_some(50_000),
        "{lines:?}"
    );
    assert_eq!(
        spec["linux"]["resources"]["pids"]["limit"].as_i64(),
        cg.pids.then_some(1024),
        "{lines:?}"
    );
    d.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apps_share_one_port_by_host_name() -> Result {
    let f = fixture()?;
    let data = tempfile::tempdir()?;
    let (a, b) = (unique_app("host-a"), unique_app("host-b"));
    let _guards = (Containers(a.clone()), Containers(b.clone()));
    let d = LocalDeployer::builder(data.path())
        .layout_root(&f.root)
        .host_routing("127.0.0.1:0".parse()?)
        .build()?;
    let ev = Events::discard();
    for (app, image) in [(&a, &f.one), (&b, &f.two)] {
        d.create_app(app).await?;
        d.deploy(release(app, image), &ev).await?;
    }
    let url = d.host_url(&a).await?.ok_or("host routing is off")?;
    let port: u16 = url.rsplit(':').next().ok_or("no port")?.parse()?;
    assert_eq!(url, format!("http://{a}.localhost:{port}"));
    let shared = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let host_a = format!("{a}.localhost:{port}");
    let host_b = format!("{}.LOCALHOST", b);
    assert_eq!(
        get_host(shared, &host_a, "/").await?,
        (200, "hello world from one\n".into())
    );
    assert_eq!(
        get_host(shared, &host_b, "/").await?,
        (200, "hello world from two\n".into())
    );
    let (code, text) = get_host(shared, "nobody.localhost", "/").await?;
    assert_eq!(code, 404);
    assert!(text.contains("\"nobody.localhost\""), "{text}");
    d.destroy_app(&a, &ev).await?;
    assert_eq!(get_host(shared, &host_a, "/").await?.0, 404);
    d.shutdown().await?;
    Ok(())
}

/// The deployer of `a_killed_deployer_process_is_restored`, run in a child process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run as a child process by a_killed_deployer_process_is_restored"]
async fn child_deployer_process() -> Result {
    let var = |name: &str| std::env::var(name).map_err(|_| format!("{name} is not set"));
    let data = var("HEPHY_DEPLOY_CHILD_DATA")?;
    let app: hephy_core::AppName = var("HEPHY_DEPLOY_CHILD_APP")?.parse()?;
    let image: hephy_core::Reference = var("HEPHY_DEPLOY_CHILD_IMAGE")?.parse()?;
    let d = LocalDeployer::builder(&data)
        .layout_root(var("HEPHY_DEPLOY_CHILD_LAYOUTS")?)
        .build()?;
    d.create_app(&app).await?;
    d.deploy(release(&app, &image), &Events::discard()).await?;
    println!("ready {}", d.url(&app)?);
    tokio::time::sleep(Duration::from_secs(120)).await;
    Err("the parent test did not kill this process".into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_deployer_process_is_restored() -> Result {
    use tokio::io::AsyncBufReadExt;

    let f = fixture()?;
    let data = tempfile::tempdir()?;
    let app = unique_app("killed");
    let _guard = Containers(app.clone());
    let mut child = tokio::process::Command::new(std::env::current_exe()?)
        .args([
            "--exact",
            "local::child_deployer_process",
            "--ignored",
            "--nocapture",
        ])
        .env("HEPHY_DEPLOY_CHILD_DATA", data.path())
        .env("HEPHY_DEPLOY_CHILD_APP", app.as_str())
        .env("HEPHY_DEPLOY_CHILD_IMAGE", f.one.to_string())
        .env("HEPHY_DEPLOY_CHILD_LAYOUTS", &f.root)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let url = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await? {
            if let Some(url) = line.strip_prefix("ready ") {
                return Ok(url.to_owned());
            }
        }
        Err::<String, Box<dyn std::error::Error + Send + Sync>>(
            "the child exited before it was ready".into(),
        )
    })
    .await
    .map_err(|_| "the child deployer was not ready within 60s")??;
    // SIGKILL: no destructor, no shutdown, nothing flushed on the way out.
    child.kill().await?;
    let addr: std::net::SocketAddr = url.trim_start_matches("http://").parse()?;
    assert!(
        get(addr, "/").await.is_err(),
        "the router died with its process"
    );

    let d = deployer(data.path())?;
    let report = d.restore(&Events::discard()).await?;
    assert_eq!(report.reused, vec![app.clone()], "{report:?}");
    assert_eq!(d.url(&app)?, url);
    assert_eq!(body(addr, "/").await?, "hello world from one\n");
    assert_eq!(d.releases(&app).await?.len(), 1);
    d.shutdown().await?;
    Ok(())
}

/// The pid of container `id` on the host.
fn container_pid(id: &str) -> Result<u32> {
    let state: serde_json::Value =
        serde_json::from_str(&run(std::process::Command::new("runc").args(["state", id]))?)?;
    Ok(state["pid"].as_u64().ok_or("no pid in runc state")? as u32)
}

/// A line of `/proc/PID/status`, like `Uid:` → `"1000000000\t1000000000\t..."`.
fn status_line(pid: u32, key: &str) -> Result<String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    Ok(status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .ok_or(format!("no {key} in /proc/{pid}/status"))?
        .trim()
        .to_owned())
}

/// `GET /dial?addr=ADDR` of the fixture app: what a connection from inside its container does.
async fn dial_from_inside(app_addr: SocketAddr, target: SocketAddr) -> Result<String> {
    body(app_addr, &format!("/dial?addr={target}")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apps_are_confined() -> Result {
    let f = fixture()?;
    let data = tempfile::tempdir()?;
    let (app, other) = (unique_app("confined"), unique_app("neighbour"));
    let _guards = (Containers(app.clone()), Containers(other.clone()));
    let d = deployer(data.path())?;
    let ev = Events::discard();
    // A service on the host's loopback, as hephy's API, SSH and the registry are.
    let host_service = std::net::TcpListener::bind("127.0.0.1:0")?;
    let host_service = host_service.local_addr()?;

    let mut deploy = DeployConfig::default();
    deploy.health.path = Some("/healthz".into());
    for (a, image) in [(&app, &f.no_user), (&other, &f.one)] {
        d.create_app(a).await?;
        d.deploy(release_with(a, image, deploy.clone()), &ev)
            .await?;
    }
    let addr = d.addr(&app)?;
    let other_addr = d.addr(&other)?;
    // It serves through the router, from a port forward of its own network namespace.
    assert_eq!(body(addr, "/").await?, "hello world from one\n");

    // No loopback service of the host is reachable: not the test's, not the router of the app
    // itself, not the other app's.
    for target in [host_service, addr, other_addr] {
        let said = dial_from_inside(addr, target).await?;
        assert!(said.contains("connection refused"), "{target}: {said}");
    }
    // localhost and the app's own name resolve, from the /etc/hosts written for it.
    assert!(body(addr, "/lookup?host=localhost")
        .await?
        .contains("127.0.0.1"));
    let own = body(addr, &format!("/lookup?host={app}")).await?;
    assert!(own.contains("127.0.0.1"), "{own}");

    // Without USER the app is root in its container, but not on the host: there it is the first
    // id of a range that no other app has.
    assert_eq!(body(addr, "/whoami").await?, "uid=0 gid=0\n");
    assert_eq!(body(addr, "/write").await?, "root=false tmp=true\n");
    let pid = container_pid(&format!("hephy-{app}-v1"))?;
    let uids: Vec<u32> = status_line(pid, "Uid:")?
        .split_whitespace()
        .map(str::parse)
        .collect::<std::result::Result<_, _>>()?;
    assert_eq!(uids.len(), 4, "{uids:?}");
    assert!(uids.iter().all(|u| *u == uids[0]), "{uids:?}");
    let root_uid = uids[0];
    assert!(root_uid >= 1_000_000_000, "host uid {root_uid}");
    let other_pid = container_pid(&format!("hephy-{other}-v1"))?;
    let other_uid: u32 = status_line(other_pid, "Uid:")?
        .split_whitespace()
        .next()
        .ok_or("no uid")?
        .parse()?;
    // The other app runs as 65532 of its own range.
    let other_root = other_uid.checked_sub(65532).ok_or("uid below its range")?;
    assert!(
        other_root.abs_diff(root_uid) >= 65536,
        "ranges overlap: {root_uid} and {other_root}"
    );
    assert_eq!(status_line(pid, "Seccomp:")?, "2", "seccomp filter on");
    assert_eq!(status_line(pid, "NoNewPrivs:")?, "1");
    assert_eq!(status_line(pid, "CapEff:")?, "0000000000000000");

    // Stopping a container stops its pasta and unmounts its namespace.
    assert_eq!(pastas_of(&app).len(), 1, "one pasta per container");
    d.destroy_app(&app, &ev).await?;
    assert!(pastas_of(&app).is_empty(), "pasta outlived its container");
    assert!(netns_mounts(&app).is_empty(), "{:?}", netns_mounts(&app));
    assert!(!data
        .path()
        .join(format!("containers/hephy-{app}-v1"))
        .exists());
    d.shutdown().await?;
    assert!(pastas_of(&other).is_empty(), "shutdown leaves a pasta");
    Ok(())
}

/// An address of this host that is not loopback and not the host's own interface address
/// (which pasta gives the container too): a stand-in for another host, on `lo`, removed on drop.
struct OutsideAddr(std::net::Ipv4Addr);

impl OutsideAddr {
    fn add() -> Result<OutsideAddr> {
        let ip = std::net::Ipv4Addr::new(198, 51, 100, 10 + (std::process::id() % 200) as u8);
        run(std::process::Command::new("ip").args([
            "addr",
            "add",
            &format!("{ip}/32"),
            "dev",
            "lo",
        ]))?;
        Ok(OutsideAddr(ip))
    }
}

impl Drop for OutsideAddr {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["addr", "del", &format!("{}/32", self.0), "dev", "lo"])
            .output();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn egress_is_on_by_default_and_can_be_denied() -> Result {
    let f = fixture()?;
    let data = tempfile::tempdir()?;
    let app = unique_app("egress");
    let _guard = Containers(app.clone());
    let outside = OutsideAddr::add()?;
    let listener = std::net::TcpListener::bind("0.0.0.0:0")?;
    let target = SocketAddr::new(outside.0.into(), listener.local_addr()?.port());
    let d = deployer(data.path())?;
    d.create_app(&app).await?;
    let addr = d.addr(&app)?;

    let mut deploy = DeployConfig::default();
    deploy.health.path = Some("/healthz".into());
    d.deploy(
        release_with(&app, &f.one, deploy.clone()),
        &Events::discard(),
    )
    .await?;
    assert_eq!(dial_from_inside(addr, target).await?, "connected\n");

    deploy.egress = hephy_core::Egress::Deny;
    let (events, mut stream) = Events::channel();
    d.deploy(release_with(&app, &f.one, deploy), &events)
        .await?;
    drop(events);
    assert_eq!(body(addr, "/").await?, "hello world from one\n");
    let said = dial_from_inside(addr, target).await?;
    assert!(said.contains("network is unreachable"), "{said}");
    assert!(body(addr, "/lookup?host=localhost")
        .await?
        .contains("127.0.0.1"));
    let mut lines = vec![];
    while let Some(e) = stream.recv().await {
        lines.push(e.render());
    }
    assert!(lines.iter().any(|l| l.contains("no egress")), "{lines:?}");
    d.shutdown().await?;
    Ok(())
}
