//! Pushes over SSH with the real OpenSSH client and git.

use std::path::Path;
use std::time::Duration;

use hephy_git::ssh::SshServer;

use crate::auth::{keygen, ssh_keygen_fingerprint};
use crate::*;

/// An SSH front end for a [`TestServer`] on a free loopback port.
pub(crate) struct Ssh {
    server: SshServer,
    pub(crate) port: u16,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Ssh {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub(crate) async fn start_ssh(server: &TestServer, host_key: &Path) -> Result<Ssh> {
    let ssh = SshServer::new(server.server.clone(), server.accounts.clone(), host_key)?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let runner = ssh.clone();
    let task = tokio::spawn(async move {
        let _ = runner.run(listener).await;
    });
    Ok(Ssh {
        server: ssh,
        port,
        task,
    })
}

/// The OpenSSH client options of these tests: only `key`, no user config, no agent, and the
/// host key either ignored or checked against `known_hosts`.
fn ssh_options(key: &Path, port: u16, known_hosts: Option<&Path>) -> Vec<String> {
    let mut args: Vec<String> = vec![
        "-F".into(),
        "/dev/null".into(),
        "-i".into(),
        key.display().to_string(),
        "-p".into(),
        port.to_string(),
        "-o".into(),
        "IdentitiesOnly=yes".into(),
        "-o".into(),
        "IdentityAgent=none".into(),
        "-o".into(),
        "BatchMode=yes".into(),
        "-o".into(),
        "LogLevel=ERROR".into(),
    ];
    match known_hosts {
        Some(file) => args.extend([
            "-o".into(),
            "StrictHostKeyChecking=yes".into(),
            "-o".into(),
            format!("UserKnownHostsFile={}", file.display()),
        ]),
        None => args.extend([
            "-o".into(),
            "StrictHostKeyChecking=no".into(),
            "-o".into(),
            "UserKnownHostsFile=/dev/null".into(),
        ]),
    }
    args
}

/// `git ARGS` with git's SSH transport using `key`.
pub(crate) fn git_ssh(
    repo: &Path,
    args: &[&str],
    key: &Path,
    port: u16,
    known_hosts: Option<&Path>,
) -> tokio::process::Command {
    let mut cmd = git_command(repo, args);
    cmd.env(
        "GIT_SSH_COMMAND",
        format!("ssh {}", ssh_options(key, port, known_hosts).join(" ")),
    );
    cmd
}

/// `ssh git@127.0.0.1 COMMAND` (a shell when `command` is empty); returns the exit code too.
async fn ssh(key: &Path, port: u16, command: &[&str]) -> Result<(Option<i32>, Run)> {
    let mut cmd = tokio::process::Command::new("ssh");
    cmd.args(ssh_options(key, port, None))
        .arg("-T")
        .arg("git@127.0.0.1")
        .args(command)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output()).await??;
    Ok((out.status.code(), out.into()))
}

pub(crate) fn url(port: u16, path: &str) -> String {
    format!("ssh://git@127.0.0.1:{port}/{path}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_over_ssh_builds_and_the_host_key_survives_a_restart() -> Result {
    let (server, app, work, repo) = server_with_app("hello").await?;
    let (key, public) = keygen(work.path(), "alice", "ed25519").await?;
    server.accounts.add_key("alice", &public)?;
    let host_key = server.dir.path().join("ssh_host_ed25519_key");
    let first = start_ssh(&server, &host_key).await?;

    // The first push builds the app; the build log comes over side-band through SSH.
    let c1 = commit_file(&repo, "index.html", b"<h1>hello</h1>\n", "first").await?;
    let push = run(git_ssh(
        &repo,
        &["push", &url(first.port, "hello.git"), "main"],
        &key,
        first.port,
        None,
    ))
    .await?;
    assert!(push.ok, "the first push over SSH failed:\n{}", push.stderr);
    assert!(
        push.stderr
            .contains("remote: -----> hello built and published"),
        "no build log:\n{}",
        push.stderr
    );
    assert!(
        push.stderr.contains(" * [new branch]      main -> main"),
        "{}",
        push.stderr
    );
    assert_server_repo(&server, &app, &[("refs/heads/main", &c1)]).await?;

    // What the client sees of the host key is what the server reports, as ssh-keygen prints it.
    let known_hosts = work.path().join("known_hosts");
    let scan = tokio::process::Command::new("ssh-keyscan")
        .args(["-t", "ed25519", "-p", &first.port.to_string(), "127.0.0.1"])
        .stdin(Stdio::null())
        .output()
        .await?;
    let scanned = String::from_utf8_lossy(&scan.stdout).into_owned();
    let line = scanned
        .lines()
        .find(|l| l.contains("ssh-ed25519"))
        .ok_or_else(|| {
            format!(
                "ssh-keyscan found no key: {}",
                String::from_utf8_lossy(&scan.stderr)
            )
        })?;
    let key_part = line
        .split_once(' ')
        .map(|(_, k)| k.to_owned())
        .ok_or("odd known_hosts line")?;
    std::fs::write(&known_hosts, format!("{line}\n"))?;
    assert_eq!(
        ssh_keygen_fingerprint(&known_hosts).await?,
        first.server.host_key_fingerprint()
    );

    // After a restart on another port the same key is served: strict host key checking
    // against the first run's key passes. The path may also lack the ".git" and the "/".
    drop(first);
    let second = start_ssh(&server, &host_key).await?;
    std::fs::write(
        &known_hosts,
        format!("[127.0.0.1]:{} {key_part}\n", second.port),
    )?;
    let c2 = commit_file(&repo, "index.html", b"<h1>hello again</h1>\n", "second").await?;
    let push = run(git_ssh(
        &repo,
        &[
            "push",
            &format!("ssh://git@127.0.0.1:{}/hello", second.port),
            "main",
        ],
        &key,
        second.port,
        Some(&known_hosts),
    ))
    .await?;
    assert!(
        push.ok,
        "the push after a restart failed (host key changed?):\n{}",
        push.stderr
    );
    assert_server_repo(&server, &app, &[("refs/heads/main", &c2)]).await?;

    // Many channel windows' worth of incompressible data (a branch that is not built) arrive
    // whole: input is read as the client sends it, with russh's flow control in between.
    git_ok(&repo, &["checkout", "-q", "-b", "assets"]).await?;
    let noise = noise(&mut 0x9E37_79B9_7F4A_7C15, 24 << 20);
    let c3 = commit_file(&repo, "noise.bin", &noise, "24 MB of noise").await?;
    let push = run(git_ssh(
        &repo,
        &["push", &url(second.port, "hello.git"), "assets"],
        &key,
        second.port,
        Some(&known_hosts),
    ))
    .await?;
    assert!(push.ok, "the 24 MB push over SSH failed:\n{}", push.stderr);
    assert_server_repo(
        &server,
        &app,
        &[("refs/heads/assets", &c3), ("refs/heads/main", &c2)],
    )
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn git_server_serves_ssh_itself_when_it_has_accounts() -> Result {
    let (server, app, work, repo) = server_with_app("hello").await?;
    let (key, public) = keygen(work.path(), "alice", "ed25519").await?;
    server.accounts.add_key("alice", &public)?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let git = server.server.clone();
    let host_key = work.path().join("host_key");
    let ssh = tokio::spawn(async move { git.serve_ssh(listener, host_key).await });

    let c1 = commit_file(&repo, "index.html", b"<h1>hello</h1>\n", "first").await?;
    let push = run(git_ssh(
        &repo,
        &["push", &url(port, "hello.git"), "main"],
        &key,
        port,
        None,
    ))
    .await?;
    ssh.abort();
    assert!(push.ok, "the push to serve_ssh failed:\n{}", push.stderr);
    assert_server_repo(&server, &app, &[("refs/heads/main", &c1)]).await?;

    // Without accounts no key could be authenticated: refused before listening.
    let anonymous = hephy_git::GitServer::builder(work.path().join("anonymous")).build()?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let refused = anonymous
        .serve_ssh(listener, work.path().join("other_host_key"))
        .await
        .err()
        .ok_or("serve_ssh served without accounts")?;
    insta::assert_snapshot!(refused, @"SSH needs accounts to authenticate keys: build the GitServer with .accounts(Accounts::open(data_dir)?), or serve HTTP only");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssh_refuses_unknown_keys_other_commands_and_other_peoples_apps() -> Result {
    let (server, _app, work, repo) = server_with_app("hello").await?;
    let (alice_key, alice_public) = keygen(work.path(), "alice", "ed25519").await?;
    server.accounts.add_key("alice", &alice_public)?;
    let (bob_key, bob_public) = keygen(work.path(), "bob", "ecdsa").await?;
    server.accounts.add_user("bob", false)?;
    server.accounts.add_key("bob", &bob_public)?;
    let (stranger_key, _) = keygen(work.path(), "stranger", "ed25519").await?;
    let ssh_server = start_ssh(&server, &work.path().join("host_key")).await?;
    let port = ssh_server.port;
    commit_file(&repo, "index.html", b"hi\n", "first").await?;
    let hello = url(port, "hello.git");

    // An unregistered key gets no further than authentication.
    let push = run(git_ssh(
        &repo,
        &["push", &hello, "main"],
        &stranger_key,
        port,
        None,
    ))
    .await?;
    assert!(!push.ok, "a push with an unknown key was accepted");
    assert!(
        push.stderr.contains("Permission denied (publickey)"),
        "{}",
        push.stderr
    );

    // Passwords and keyboard-interactive are not even offered.
    let mut password = tokio::process::Command::new("ssh");
    password
        .args(ssh_options(&alice_key, port, None))
        .args([
            "-o",
            "PubkeyAuthentication=no",
            "-o",
            "PreferredAuthentications=password,keyboard-interactive",
        ])
        .args(["-T", "git@127.0.0.1", "git-receive-pack 'hello.git'"])
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let refused = run(password).await?;
    assert!(
        !refused.ok && refused.stderr.contains("Permission denied (publickey)"),
        "{}",
        refused.stderr
    );

    // A known user without a grant is told which app and which user.
    let push = run(git_ssh(
        &repo,
        &["push", &hello, "main"],
        &bob_key,
        port,
        None,
    ))
    .await?;
    assert!(!push.ok, "bob pushed to alice's app");
    assert!(
        push.stderr.contains("bob may not push to hello"),
        "{}",
        push.stderr
    );
    let push = run(git_ssh(
        &repo,
        &["push", &url(port, "nope.git"), "main"],
        &alice_key,
        port,
        None,
    ))
    .await?;
    assert!(
        !push.ok && push.stderr.contains("app nope does not exist"),
        "{}",
        push.stderr
    );

    // Every command but git-receive-pack is refused with a reason and exit status 1.
    for (command, expected) in [
        (
            vec!["git-upload-pack 'hello.git'"],
            "does not serve fetches or clones",
        ),
        (vec![], "does not provide shell access"),
        (vec!["rm", "-rf", "/"], "is not served"),
        (
            vec!["git-receive-pack '../hello.git'"],
            "not a repository path",
        ),
        (
            vec!["git-receive-pack 'hello.git'; id"],
            "not a repository path",
        ),
    ] {
        let (code, out) = ssh(&alice_key, port, &command).await?;
        assert_eq!(code, Some(1), "{command:?}: {}", out.stderr);
        assert!(
            out.stderr.contains(expected),
            "{command:?}: expected {expected:?} in {}",
            out.stderr
        );
        assert!(out.stdout.is_empty(), "{command:?} printed {}", out.stdout);
    }
    // A terminal is refused (OpenSSH gives up when a forced one is not granted).
    let mut tty = tokio::process::Command::new("ssh");
    tty.args(ssh_options(&alice_key, port, None))
        .args(["-tt", "git@127.0.0.1"])
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(60), tty.output()).await??;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("PTY allocation request failed"), "{stderr}");
    let clone = run(git_ssh(
        work.path(),
        &["clone", &hello, "copy"],
        &alice_key,
        port,
        None,
    ))
    .await?;
    assert!(
        !clone.ok && clone.stderr.contains("does not serve fetches"),
        "{}",
        clone.stderr
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_ssh_client_cancels_its_build_and_frees_the_lock() -> Result {
    let (server, app, work, repo) = server_with_app("busy").await?;
    let (key, public) = keygen(work.path(), "alice", "ed25519").await?;
    server.accounts.add_key("alice", &public)?;
    let ssh_server = start_ssh(&server, &work.path().join("host_key")).await?;
    let port = ssh_server.port;
    commit_file(&repo, "SLOW", b"\n", "slow build").await?;
    let busy = url(port, "busy.git");

    // git and its ssh run in their own process group, killed together like a closed terminal.
    let mut first = git_ssh(&repo, &["push", &busy, "main"], &key, port, None);
    first
        .process_group(0)
        .stderr(Stdio::null())
        .stdout(Stdio::null());
    let mut first = first.spawn()?;
    wait_for(
        &server.gate.started,
        tokio::time::Instant::now(),
        Duration::from_secs(60),
        "the push never started building",
    )
    .await;
    kill_group(&mut first).await?;

    let killed_at = tokio::time::Instant::now();
    wait_for(
        &server.gate.cancelled,
        killed_at,
        Duration::from_secs(30),
        "the build went on after its SSH client was killed",
    )
    .await;
    git_ok(&repo, &["rm", "-q", "SLOW"]).await?;
    let c2 = commit_file(&repo, "index.html", b"fast\n", "fast build").await?;
    let pushed = push_until_ok(killed_at, || {
        git_ssh(&repo, &["push", &busy, "main"], &key, port, None)
    })
    .await?;
    assert!(
        pushed,
        "the lock was not released after the SSH client was killed"
    );
    assert_server_repo(&server, &app, &[("refs/heads/main", &c2)]).await?;
    Ok(())
}
