//! The build sandbox with real bubblewrap, pasta and cgroups: what a build can see, who it runs
//! as, what it can reach, and the limits that stop it.

use std::net::TcpListener;
use std::path::Path;
use std::time::Duration;

use hephy_backends::exec::ExecError;
use hephy_backends::sandbox::{
    BuildUser, Sandbox, SandboxCommand, SandboxPolicy, BUILD_UID, BUILD_USERNS_BASE,
};

use crate::support::{collect, joined};

type Result<T = (), E = Box<dyn std::error::Error>> = std::result::Result<T, E>;

fn sandbox(policy: SandboxPolicy, scratch: &Path) -> Result<Sandbox> {
    Ok(Sandbox::new(policy, scratch)?)
}

fn sh(script: &str) -> SandboxCommand {
    SandboxCommand::new("/bin/sh").arg("-c").arg(script)
}

#[tokio::test]
async fn a_build_runs_unprivileged_with_a_cleared_environment_and_sees_only_its_binds() -> Result {
    let tmp = tempfile::tempdir()?;
    let work = tmp.path().join("work");
    let secret = tmp.path().join("secret");
    std::fs::write(&secret, "token")?;
    let sb = sandbox(SandboxPolicy::default().with_network(false), tmp.path())?;
    sb.prepare_dir(&work)?;
    let (events, lines) = collect();
    let script = format!(
        "id -u; id -G; env | sort; cat {} 2>&1; ls /root /work 2>&1; touch /build/made; \
         touch /tmp/made && echo tmp-is-writable; \
         grep -c . /proc/[0-9]*/cmdline 2>/dev/null | wc -l; grep ^Cap /proc/self/status",
        secret.display()
    );
    sb.run(
        sh(&script).bind_rw(&work, "/build").env("GREETING", "hi"),
        &events,
        50,
    )
    .await?;
    let out = joined(&lines);
    let first: Vec<&str> = out.lines().map(str::trim).collect();
    assert_eq!(first[0], BUILD_UID.to_string(), "{out}");
    assert!(out.contains("GREETING=hi"), "{out}");
    assert!(out.contains("tmp-is-writable"), "{out}");
    assert!(out.contains("PATH=/usr/local/bin:/usr/bin:/bin"), "{out}");
    // Nothing of the test's (the server's) environment: no HOME of root, no CARGO_*, no RUST*.
    for leak in ["CARGO", "RUST", "HOME=/root", "PWD=/work"] {
        assert!(
            !out.contains(leak),
            "{leak} leaked into the sandbox:\n{out}"
        );
    }
    assert!(!out.contains("token"), "a host file was readable:\n{out}");
    assert!(out.contains("No such file or directory"), "{out}");
    assert!(out.contains("CapEff:\t0000000000000000"), "{out}");
    use std::os::unix::fs::MetadataExt;
    let made = std::fs::metadata(work.join("made"))?;
    assert_eq!(
        made.uid(),
        BUILD_UID,
        "files the build writes belong to the build uid"
    );
    Ok(())
}

#[tokio::test]
async fn with_network_the_outside_is_reachable_but_not_the_hosts_loopback() -> Result {
    let tmp = tempfile::tempdir()?;
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    let sb = sandbox(SandboxPolicy::default(), tmp.path())?;
    let (events, lines) = collect();
    let script = format!(
        "cat /proc/net/dev | grep -c : ; \
         if busybox nc -w 2 127.0.0.1 {port} </dev/null; then echo LOOPBACK-REACHED; else echo loopback-refused; fi"
    );
    sb.run(sh(&script), &events, 50).await?;
    let out = joined(&lines);
    assert!(out.contains("loopback-refused"), "{out}");
    assert!(!out.contains("LOOPBACK-REACHED"), "{out}");
    // lo and the interface pasta made.
    assert_eq!(out.lines().next().map(str::trim), Some("2"), "{out}");

    let (events, lines) = collect();
    let off = sandbox(SandboxPolicy::default().with_network(false), tmp.path())?;
    off.run(sh("cat /proc/net/dev | grep -c :"), &events, 50)
        .await?;
    assert_eq!(
        joined(&lines).trim(),
        "1",
        "network off leaves only a loopback"
    );
    drop(listener);
    Ok(())
}

#[tokio::test]
async fn the_process_limit_stops_a_fork_bomb() -> Result {
    let tmp = tempfile::tempdir()?;
    let sb = sandbox(SandboxPolicy::default().with_pids(Some(16)), tmp.path())?;
    let (events, lines) = collect();
    let err = sb
        .run(
            sh("i=0; while [ $i -lt 64 ]; do sleep 5 & i=$((i+1)); done; wait"),
            &events,
            50,
        )
        .await
        .err()
        .ok_or("64 processes under a limit of 16 must fail")?;
    assert!(matches!(err, ExecError::Failed { .. }), "{err}");
    assert!(joined(&lines).contains("fork"), "{}", joined(&lines));
    Ok(())
}

#[tokio::test]
async fn the_memory_limit_stops_a_hog() -> Result {
    let tmp = tempfile::tempdir()?;
    let sb = sandbox(
        SandboxPolicy::default().with_memory(Some(64 << 20)),
        tmp.path(),
    )?;
    let (events, _lines) = collect();
    // The shell holds 512 MB in one variable.
    let err = sb
        .run(
            sh("x=$(head -c 512000000 /dev/zero | tr '\\0' a); echo ${#x}"),
            &events,
            50,
        )
        .await
        .err()
        .ok_or("512 MB under a 64 MB limit must fail")?;
    assert!(matches!(err, ExecError::Failed { .. }), "{err}");
    Ok(())
}

#[tokio::test]
async fn dropping_the_run_kills_everything_the_build_started() -> Result {
    let tmp = tempfile::tempdir()?;
    let sb = sandbox(SandboxPolicy::default().with_network(false), tmp.path())?;
    let events = hephy_core::Events::discard();
    let run = sb.run(sh("sleep 4242 & sleep 4243; wait"), &events, 5);
    let _ = tokio::time::timeout(Duration::from_millis(1500), run).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let ps = std::process::Command::new("pgrep")
        .args(["-f", "sleep 424[23]"])
        .output()?;
    assert!(
        String::from_utf8_lossy(&ps.stdout).trim().is_empty(),
        "processes outlived their build: {}",
        String::from_utf8_lossy(&ps.stdout)
    );
    Ok(())
}

#[tokio::test]
async fn a_namespace_root_is_root_only_in_its_own_user_namespace() -> Result {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let tmp = tempfile::tempdir()?;
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755))?;
    let work = tmp.path().join("work");
    let secret = tmp.path().join("secret");
    std::fs::write(&secret, "token")?;
    let sb = sandbox(SandboxPolicy::default().with_network(false), tmp.path())?;
    sb.prepare_dir_as(&work, BuildUser::NamespaceRoot)?;
    let (events, lines) = collect();
    let script = format!(
        "echo \"uid=$(id -u)\"; echo \"map $(cat /proc/self/uid_map)\"; env | sort; \
         cat {} 2>&1; touch /build/made; touch /usr/x 2>&1; grep ^NoNewPrivs /proc/self/status",
        secret.display()
    );
    sb.run(
        sh(&script)
            .bind_rw(&work, "/build")
            .user(BuildUser::NamespaceRoot),
        &events,
        50,
    )
    .await?;
    let out = joined(&lines);
    assert!(out.contains("uid=0"), "{out}");
    let map = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("map "))
        .ok_or_else(|| format!("no uid map:\n{out}"))?;
    assert_eq!(
        map.split_whitespace().collect::<Vec<_>>(),
        ["0", &BUILD_USERNS_BASE.to_string(), "65536"],
        "{out}"
    );
    for leak in ["CARGO", "RUST", "HOME=/root", "token"] {
        assert!(!out.contains(leak), "{leak} reached the sandbox:\n{out}");
    }
    assert!(out.contains("Read-only file system"), "{out}");
    assert_eq!(
        std::fs::metadata(work.join("made"))?.uid(),
        BUILD_USERNS_BASE,
        "files the namespace's root writes belong to an unprivileged host uid"
    );
    Ok(())
}

/// A server killed during a build leaves its build's network namespace and pasta behind; the
/// next sandbox made (the next server start) removes them.
#[tokio::test]
async fn namespaces_left_by_a_dead_server_are_removed_at_start() -> Result {
    let tmp = tempfile::tempdir()?;
    // No process has this id (Linux's pid_max is at most 4194304).
    let name = "hephy-build-4000000000-1";
    let netns = format!("/run/netns/{name}");
    let ok = std::process::Command::new("ip")
        .args(["netns", "add", name])
        .status()?
        .success();
    assert!(ok, "ip netns add {name}");
    let pid_file = tmp.path().join("pasta.pid");
    let ok = std::process::Command::new("pasta")
        .args([
            "--runas", "0:0", "-4", "-q", "-t", "none", "-T", "none", "-U", "none",
        ])
        .arg("-P")
        .arg(&pid_file)
        .args(["--netns", &netns])
        .status()?
        .success();
    assert!(ok, "pasta attaches to {netns}");
    let pasta = std::fs::read_to_string(&pid_file)?.trim().to_owned();

    sandbox(SandboxPolicy::default(), tmp.path())?;
    assert!(!Path::new(&netns).exists(), "{netns} is still there");
    // Gone, or a zombie waiting for whoever reaps orphans here.
    let running = |pid: &str| {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| !s.contains(") Z "))
            .unwrap_or(false)
    };
    for _ in 0..50 {
        if !running(&pasta) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(format!("pasta {pasta} still runs").into())
}
