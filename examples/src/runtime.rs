//! How hephy-server wires deployers (local, Kubernetes, GitOps), the first admin, and the words
//! printed at start.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use hephy_core::{Deployer, Events};
use hephy_deploy::local::LocalDeployer;
use hephy_git::auth::Accounts;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// The local deployer over `<data>/deploy`, reading `hephy.local` images from `images` and others
/// from their registry with `registry`'s options, with every app's current release brought back up.
pub async fn local_deployer(
    data: &Path,
    images: &Path,
    registry: Option<hephy_oci::registry::RegistryOptions>,
    events: &Events,
) -> Result<Arc<LocalDeployer>> {
    // An app pushed before it was created through the API still gets its router port.
    let mut b = LocalDeployer::builder(data.join("deploy"))
        .layout_root(images)
        .create_apps_on_deploy(true);
    if let Some(r) = registry {
        b = b.registry(r);
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
pub fn bootstrap_admin(accounts: &Accounts, data: &Path) -> Result<Option<String>> {
    if !accounts.users().is_empty() {
        return Ok(None);
    }
    accounts.add_user("admin", true)?;
    let token = accounts.create_token("admin")?;
    let path = data.join("admin-token");
    std::fs::write(&path, format!("{token}\n"))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(Some(token))
}

/// What to do next, printed once the server listens.
pub fn print_next_steps(
    public_url: &str,
    ssh: Option<SocketAddr>,
    data: &Path,
    new_token: Option<&str>,
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
