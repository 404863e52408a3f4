//! The data plane outlives the server: two apps under steady load while hephy-server is stopped
//! with SIGTERM, killed with SIGKILL, and replaced by another build of itself, each time started
//! again on the same data directory. No request fails and no container restarts.

use std::path::Path;
use std::time::Duration;

use crate::attacks::{push, write_repo, Load, BYSTANDER};
use crate::support::{container_pids, hephy, run, wait_for, Server};
use crate::Result;

/// Starts hephy-server again on `dir` and waits until it has adopted the running apps (its API
/// answers only once restore is done).
fn restart(program: &Path, dir: &Path, home: &Path) -> Result<Server> {
    let server = Server::start_program(program, dir, &[], &[])?;
    run(hephy(home).args(["login", &server.url(), "--token", &server.token]))?;
    Ok(server)
}

/// Pushes the "still here" app as `app` and waits until its URL answers; the URL.
fn deploy_still_here(server: &Server, home: &Path, tmp: &Path, app: &str) -> Result<String> {
    let dir = tmp.join(app);
    std::fs::create_dir_all(&dir)?;
    write_repo(
        &dir,
        &[
            ("go.mod", "module example.com/still\n\ngo 1.19\n".into()),
            ("main.go", BYSTANDER.into()),
        ],
    )?;
    let (ok, out) = push(server, home, &dir, app)?;
    assert!(ok, "{app} deploys:\n{out}");
    let open = run(hephy(home).args(["--app", app, "open"]))?;
    let url = String::from_utf8_lossy(&open.stdout).trim().to_owned();
    wait_for(&url, "still here")?;
    Ok(url)
}

#[test]
fn apps_keep_serving_while_the_server_stops_crashes_and_is_replaced() -> Result {
    let tmp = tempfile::tempdir()?;
    let home = tmp.path().join("home");
    std::fs::create_dir_all(&home)?;
    let server = Server::start(tmp.path(), &[])?;
    run(hephy(&home).args(["login", &server.url(), "--token", &server.token]))?;

    let mut loads = Vec::new();
    for app in ["e2e-plane-a", "e2e-plane-b"] {
        let url = deploy_still_here(&server, &home, tmp.path(), app)?;
        loads.push((app, Load::start(url)));
    }
    let containers = container_pids(&server.data);
    assert_eq!(containers.len(), 2, "{containers:?}");

    // Another build of the server: the same program at another path, as an upgrade puts it.
    let other = tmp.path().join("other-build");
    std::fs::create_dir_all(&other)?;
    let built = Path::new(env!("CARGO_BIN_EXE_hephy-server"));
    for name in ["hephy-server", "hephy-router"] {
        std::fs::copy(built.with_file_name(name), other.join(name))?;
    }

    std::thread::sleep(Duration::from_secs(1));
    server.stop_keeping_apps("TERM")?;
    std::thread::sleep(Duration::from_secs(2));
    let server = restart(built, tmp.path(), &home)?;
    std::thread::sleep(Duration::from_secs(1));
    server.stop_keeping_apps("KILL")?;
    std::thread::sleep(Duration::from_secs(2));
    let server = restart(built, tmp.path(), &home)?;
    std::thread::sleep(Duration::from_secs(1));
    server.stop_keeping_apps("TERM")?;
    let server = restart(&other.join("hephy-server"), tmp.path(), &home)?;
    std::thread::sleep(Duration::from_secs(2));

    for (app, load) in loads {
        let (ok, failed, errors) = load.finish()?;
        assert!(ok > 50, "{app}'s load ran ({ok} answers)");
        assert_eq!(failed, 0, "{app} failed requests: {errors:?}");
    }
    assert_eq!(
        container_pids(&server.data),
        containers,
        "no container was restarted\n{}",
        server.logs()
    );
    // The replacing server still deploys through the same router.
    let info = run(hephy(&home).args(["apps", "info", "--app", "e2e-plane-a"]))?;
    assert!(
        String::from_utf8_lossy(&info.stdout).contains("v1"),
        "{info:?}"
    );
    Ok(())
}

/// `kill -9` of an app's process (a crash): the router answers 503 until the supervisor has
/// started the release again, within 10 seconds, and `hephy apps info` shows the restart.
#[test]
fn a_crashed_app_comes_back_by_itself() -> Result {
    let tmp = tempfile::tempdir()?;
    let home = tmp.path().join("home");
    std::fs::create_dir_all(&home)?;
    let server = Server::start(tmp.path(), &[])?;
    run(hephy(&home).args(["login", &server.url(), "--token", &server.token]))?;
    let app = "e2e-crashes";
    let url = deploy_still_here(&server, &home, tmp.path(), app)?;

    let pids = container_pids(&server.data);
    let (_, pid) = pids.iter().next().ok_or("no container")?;
    run(std::process::Command::new("kill").args(["-9", &pid.to_string()]))?;
    let killed = std::time::Instant::now();
    let mut answers = Vec::new();
    loop {
        let got = crate::support::get(&url);
        let back = matches!(&got, Ok(b) if b == "still here");
        answers.push(got);
        if back {
            break;
        }
        assert!(
            killed.elapsed() < Duration::from_secs(10),
            "not back within 10 s: {answers:?}\n{}",
            server.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Until it was back, every answer was the router's 503 page, never an empty reply.
    for a in &answers[..answers.len() - 1] {
        assert!(
            matches!(a, Err(e) if e.contains("503")),
            "an answer while it was down: {a:?}"
        );
    }
    let info = run(hephy(&home).args(["apps", "info", "--app", app]))?;
    let info = String::from_utf8_lossy(&info.stdout);
    assert!(info.contains("process:    running (restarts: 1)"), "{info}");
    Ok(())
}
