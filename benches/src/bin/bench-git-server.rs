//! `bench-git-server`: hephy's git server without a pipeline (pushes only move refs), for
//! `benches/push-vs-git-daemon.sh`.
//!
//! ```text
//! bench-git-server DATA_DIR [--ssh-key PUBLIC_KEY_FILE] APP...
//! ```
//!
//! Creates the apps, an admin user `bench` with an API token (and the SSH key, if given), then
//! serves smart HTTP (and SSH with `--ssh-key`) on free loopback ports. It prints
//! `http=ADDR`, `token=TOKEN` and `ssh=ADDR` lines on stdout once it accepts connections, and
//! runs until killed.

use std::io::Write as _;
use std::path::PathBuf;

use hephy_git::auth::Accounts;
use hephy_git::ssh::SshServer;
use hephy_git::GitServer;

type Error = Box<dyn std::error::Error + Send + Sync>;

const USAGE: &str = "usage: bench-git-server DATA_DIR [--ssh-key PUBLIC_KEY_FILE] APP...";

#[tokio::main]
async fn main() -> Result<(), Error> {
    let mut args = std::env::args().skip(1);
    let data = PathBuf::from(args.next().ok_or(USAGE)?);
    let mut ssh_key = None;
    let mut apps = vec![];
    while let Some(arg) = args.next() {
        if arg == "--ssh-key" {
            ssh_key = Some(PathBuf::from(args.next().ok_or(USAGE)?));
        } else {
            apps.push(arg.parse().map_err(|e| format!("{USAGE}\n{e}"))?);
        }
    }

    let accounts = Accounts::open(&data)?;
    if accounts.user("bench").is_none() {
        accounts.add_user("bench", true)?;
    }
    let token = accounts.create_token("bench")?;
    let server = GitServer::builder(&data)
        .accounts(accounts.clone())
        .max_push_bytes(u64::MAX)
        .build()?;
    for app in &apps {
        server.create_app(app, "bench")?;
    }

    let http = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "http={}", http.local_addr()?)?;
    writeln!(out, "token={token}")?;
    let mut tasks = tokio::task::JoinSet::new();
    if let Some(key) = ssh_key {
        let line = std::fs::read_to_string(&key)
            .map_err(|e| format!("cannot read the SSH public key {}: {e}", key.display()))?;
        if accounts.keys("bench").is_empty() {
            accounts.add_key("bench", &line)?;
        }
        let ssh = SshServer::new(server.clone(), accounts, data.join("ssh_host_ed25519_key"))?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        writeln!(out, "ssh={}", listener.local_addr()?)?;
        tasks.spawn(async move { ssh.run(listener).await.map_err(Error::from) });
    }
    out.flush()?;
    drop(out);
    tasks.spawn(async move { server.serve_http(http).await.map_err(Error::from) });
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    Ok(())
}
