//! How hephy-server wires deployers (local, Kubernetes, GitOps), the first admin, and the words
//! printed at start.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use hephy_core::fs::{write_atomic, FileMode};
use hephy_core::{Deployer, Events};
use hephy_deploy::local::LocalDeployer;
use hephy_deploy::router::control::{self, RouterClient};
use hephy_git::auth::Accounts;
use secrecy::{ExposeSecret, SecretString};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// Logs to stderr at the level `HEPHY_LOG` says (default `info`), as every hephy process does.
pub fn init_logging() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("HEPHY_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
}

/// The router process's state directory for the data directory `data`.
pub fn router_dir(data: &Path) -> PathBuf {
    data.join("deploy").join("router")
}

/// The router process of `data` (`hephy-router`, beside this program), started when none
/// answers. It is started in a process group of its own, so that neither a signal to the
/// server's group nor the server's end stops it.
pub async fn ensure_router(data: &Path) -> Result<RouterClient> {
    let dir = router_dir(data);
    let client = RouterClient::new(dir.join(control::SOCKET));
    if client.ping().await.is_ok() {
        return Ok(client);
    }
    hephy_core::fs::create_dir_all(&dir, hephy_core::fs::FileMode::Private)?;
    let exe = std::env::current_exe()?.with_file_name("hephy-router");
    let log_path = dir.join("router.log");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)?;
    let mut cmd = std::process::Command::new(&exe);
    cmd.arg("--data-dir")
        .arg(data)
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    #[cfg(unix)]
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let mut child = cmd.spawn().map_err(|e| {
        format!(
            "cannot start {} ({e}): build it beside hephy-server (`cargo build -p hephy-examples --bins`), or run with --router embedded",
            exe.display()
        )
    })?;
    for _ in 0..100 {
        if client.ping().await.is_ok() {
            // Reaped by nobody on purpose: it outlives this process.
            drop(child);
            return Ok(client);
        }
        if let Ok(Some(status)) = child.try_wait() {
            let said = std::fs::read_to_string(&log_path).unwrap_or_default();
            let tail: Vec<&str> = said.lines().rev().take(5).collect();
            return Err(format!(
                "hephy-router exited ({status}) before it answered: {}",
                tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
            )
            .into());
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    Err(format!(
        "hephy-router did not answer on {} within 10 s: see {}",
        client.socket().display(),
        log_path.display()
    )
    .into())
}

/// The local deployer over `<data>/deploy`, reading `hephy.local` images from `images` and others
/// from their registry with `registry`'s options, routing through `router` (else routers in this
/// process), with every app's current release brought back up (adopted where it still runs).
pub async fn local_deployer(
    data: &Path,
    images: &Path,
    registry: Option<hephy_oci::registry::RegistryOptions>,
    router: Option<RouterClient>,
    events: &Events,
) -> Result<Arc<LocalDeployer>> {
    // The apps' unprivileged host users must pass through the data directory (made 0700) to
    // their root filesystems: o+x lets them pass, never list or read (0711).
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(data)?.permissions().mode();
        if mode & 0o001 == 0 {
            std::fs::set_permissions(data, std::fs::Permissions::from_mode(mode | 0o001))?;
        }
    }
    // An app pushed before it was created through the API still gets its router port.
    let mut b = LocalDeployer::builder(data.join("deploy"))
        .layout_root(images)
        .create_apps_on_deploy(true);
    if let Some(r) = registry {
        b = b.registry(r);
    }
    if let Some(r) = router {
        b = b.router_process(r);
    }
    let d = b.build()?;
    let report = d.restore(events).await?;
    for (app, e) in &report.failed {
        eprintln!("hephy-server: could not bring {app} back up: {e}");
    }
    Ok(Arc::new(d))
}

/// The Kubernetes deployer for the cluster of the current kubeconfig (or in-cluster config).
pub async fn kubernetes_deployer(namespace: &str) -> Result<Arc<dyn Deployer>> {
    let client = hephy_deploy::kube::Client::try_default().await.map_err(|e| {
        format!("cannot configure a Kubernetes client ({e}): set KUBECONFIG, put a kubeconfig at ~/.kube/config, or run in a pod")
    })?;
    let d = hephy_deploy::kubernetes::KubernetesDeployer::builder(client)
        .namespace(namespace)
        .build()?;
    Ok(Arc::new(d))
}

/// The Flux GitOps deployer committing to `repo`.
pub fn gitops_deployer(data: &Path, repo: &str, namespace: &str) -> Result<Arc<dyn Deployer>> {
    let d = hephy_deploy::gitops::FluxDeployer::builder(repo, data.join("gitops"))
        .namespace(namespace)
        .build()?;
    Ok(Arc::new(d))
}

/// Creates the first user, `admin`, with a token saved in `<data>/admin-token` (readable only by
/// the server's user); returns the token when it was just made.
pub fn bootstrap_admin(accounts: &Accounts, data: &Path) -> Result<Option<SecretString>> {
    if !accounts.users().is_empty() {
        return Ok(None);
    }
    accounts.add_user("admin", true)?;
    let token = SecretString::from(accounts.create_token("admin")?);
    let path = data.join("admin-token");
    // 0600 from the first byte: a file chmod'ed after writing can be opened in between.
    write_atomic(
        &path,
        format!("{}\n", token.expose_secret()).as_bytes(),
        FileMode::Private,
    )?;
    Ok(Some(token))
}

/// What to do next, printed once the server listens.
pub fn print_next_steps(
    public_url: &str,
    ssh: Option<SocketAddr>,
    data: &Path,
    new_token: Option<&SecretString>,
) {
    let token_file = data.join("admin-token");
    println!("hephy-server is listening");
    println!("  git + API over HTTP: {public_url}");
    if let Some(s) = ssh {
        println!("  git over SSH:        ssh://git@{s}");
    }
    if new_token.is_some() {
        println!(
            "  created user admin; its token is in {}",
            token_file.display()
        );
    }
    println!();
    println!("Next:");
    println!(
        "  hephy login {public_url} --token \"$(cat {})\"",
        token_file.display()
    );
    println!("  hephy apps create myapp");
    println!("  git remote add hephy {public_url}/myapp.git");
    println!("  git push hephy main");
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}

/// The build environment of hephy-server: every build tool in the sandbox `policy` describes,
/// with per-build scratch files and the apps' build caches under `data`. Fails, saying how to
/// fix it, when the sandbox cannot run a trial build. `unconfined` (the
/// `--unsafe-no-build-sandbox` flag) runs build tools on the host as root instead, with a loud
/// warning.
pub async fn build_env(
    data: &Path,
    policy: hephy_backends::sandbox::SandboxPolicy,
    unconfined: bool,
) -> Result<hephy_backends::BuildEnv> {
    use hephy_backends::sandbox::Sandbox;
    use hephy_backends::BuildEnv;
    let cache = data.join("build-cache");
    if unconfined {
        eprintln!(
            "hephy-server: WARNING: --unsafe-no-build-sandbox: build tools run as root on this server, unconfined. Whoever can push can read every secret here (the admin token, registry passwords, other apps) and take over the machine. Use it only where every pusher is trusted with root."
        );
        return Ok(BuildEnv::unconfined(cache));
    }
    let fix = "fix that, or start hephy-server with --unsafe-no-build-sandbox if everyone who can push may run code as root on this machine";
    let sandbox = Sandbox::new(policy, data.join("build-scratch"))
        .map_err(|e| format!("cannot set up the build sandbox: {e}; {fix}"))?;
    sandbox
        .trial()
        .await
        .map_err(|e| format!("cannot set up the build sandbox: {e}; {fix}"))?;
    let p = sandbox.policy();
    let limit = |v: Option<u64>, unit: &str| match v {
        Some(v) => format!("{v}{unit}"),
        None => "unlimited".to_owned(),
    };
    eprintln!(
        "hephy-server: builds run sandboxed as uid {}: network {}, memory {}, processes {}, cpus {}",
        p.uid,
        if p.network { "on" } else { "off" },
        limit(p.memory_bytes.map(|b| b >> 20), " MiB"),
        limit(p.pids, ""),
        p.cpus
            .map(|c| c.to_string())
            .unwrap_or_else(|| "all".to_owned()),
    );
    Ok(BuildEnv::sandboxed(sandbox, cache))
}

/// Parses a size like `4G`, `512M` or `1073741824` (bytes); `0` is no limit. For the
/// `--build-memory` flag.
pub fn parse_size(s: &str) -> std::result::Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let mult: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "ki" | "kib" => 1 << 10,
        "m" | "mb" | "mi" | "mib" => 1 << 20,
        "g" | "gb" | "gi" | "gib" => 1 << 30,
        "t" | "tb" | "ti" | "tib" => 1 << 40,
        _ => {
            return Err(format!(
                "invalid size {s:?}: write bytes with an optional K, M, G or T suffix, like 4G"
            ))
        }
    };
    num.trim()
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| {
            format!("invalid size {s:?}: write bytes with an optional K, M, G or T suffix, like 4G")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_admin_token_file_is_owner_only_and_the_token_never_debug_printed(
    ) -> std::result::Result<(), Box<dyn std::error::Error>> {
        let tmp = tempfile::tempdir()?;
        let data = tmp.path().join("data");
        let accounts = Accounts::open(&data)?;
        let token = bootstrap_admin(&accounts, &data)?.ok_or("no admin token made")?;
        let file = data.join("admin-token");
        assert_eq!(
            std::fs::read_to_string(&file)?,
            format!("{}\n", token.expose_secret())
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| -> std::io::Result<u32> {
                Ok(std::fs::metadata(p)?.permissions().mode() & 0o777)
            };
            assert_eq!(mode(&file)?, 0o600, "admin-token");
            assert_eq!(mode(&data.join("accounts.json"))?, 0o600, "accounts.json");
            assert_eq!(
                mode(&data)?,
                0o700,
                "the data directory Accounts::open made"
            );
        }
        let shown = format!("{token:?}");
        assert!(!shown.contains(token.expose_secret()), "{shown}");
        assert!(
            bootstrap_admin(&accounts, &data)?.is_none(),
            "made only for the first start"
        );
        Ok(())
    }
}
