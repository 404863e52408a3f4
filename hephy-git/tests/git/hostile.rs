//! Hostile pushes through the real server and the real git client: each is refused or contained
//! with a message that says why, and the server goes on serving the next push.

use std::time::Duration;

use tokio::io::AsyncReadExt;

use crate::receive::normalize;
use crate::*;

/// Pushes `main` of a fresh client repository to `app` and fails unless it works.
async fn bystander_push(server: &TestServer, app: &str) -> Result {
    server.app(app)?;
    let work = tempfile::tempdir()?;
    let repo = client_repo(work.path()).await?;
    commit_file(&repo, "index.html", b"<h1>still here</h1>\n", "bystander").await?;
    let push = git(&repo, &["push", &server.url(app), "main"]).await?;
    assert!(
        push.ok && push.stderr.contains("built and published"),
        "the server stopped serving pushes:\n{}",
        push.stderr
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_ref_updates_are_refused_before_the_pack() -> Result {
    let (server, app, _work, repo) = server_with_app("many").await?;
    let c1 = commit_file(&repo, "index.html", b"x\n", "x").await?;
    // 1,001 branches, one more than the default limit.
    let mut stdin = String::new();
    for i in 0..1000 {
        stdin.push_str(&format!("create refs/heads/b{i:04} {c1}\n"));
    }
    let mut update = git_command(&repo, &["update-ref", "--stdin"]);
    update.stdin(Stdio::piped());
    let mut child = update.spawn()?;
    if let Some(mut input) = child.stdin.take() {
        tokio::io::AsyncWriteExt::write_all(&mut input, stdin.as_bytes()).await?;
    }
    assert!(child.wait().await?.success(), "git update-ref failed");

    let push = git(
        &repo,
        &["push", &server.url("many"), "refs/heads/*:refs/heads/*"],
    )
    .await?;
    assert!(!push.ok, "a push of 1,001 refs was accepted");
    assert!(
        push.stderr.contains(
            "remote: error: the push has 1,001 ref updates; the limit is 1,000: push fewer refs at once"
        ),
        "the pusher was not told the limit:\n{}",
        push.stderr
    );
    assert_server_repo(&server, &app, &[]).await?;

    // The server is still there, for this app and the others.
    git_ok(&repo, &["push", &server.url("many"), "main"]).await?;
    assert_server_repo(&server, &app, &[("refs/heads/main", &c1)]).await?;
    bystander_push(&server, "bystander").await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_or_too_large_push_options_are_refused() -> Result {
    let (server, app, _work, repo) = server_with_app("options").await?;
    let url = server.url("options");
    commit_file(&repo, "index.html", b"x\n", "x").await?;

    let mut args = vec!["push".to_owned()];
    for i in 0..101 {
        args.extend(["-o".to_owned(), format!("option-{i}")]);
    }
    args.extend([url.clone(), "main".to_owned()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let push = git(&repo, &args).await?;
    assert!(!push.ok, "a push with 101 push options was accepted");
    insta::assert_snapshot!("too_many_push_options", normalize(&push.stderr, &server));
    assert_server_repo(&server, &app, &[]).await?;

    let big = "o".repeat(40_000);
    let push = git(&repo, &["push", "-o", &big, "-o", &big, &url, "main"]).await?;
    assert!(!push.ok, "80,000 bytes of push options were accepted");
    assert!(
        push.stderr.contains(
            "remote: error: the push options take 80,000 bytes; the limit is 65,536: send shorter `git push -o` options"
        ),
        "the pusher was not told the limit:\n{}",
        push.stderr
    );
    assert_server_repo(&server, &app, &[]).await?;

    // Within the limits, options are fine.
    let push = git(&repo, &["push", "-o", "ci.skip", &url, "main"]).await?;
    assert!(push.ok, "a push with one option failed:\n{}", push.stderr);
    bystander_push(&server, "bystander").await?;
    Ok(())
}

/// A panic in a backend used to end the task serving the push without a word to the pusher.
/// Now it fails that push with a message, the app's push lock is free again, and other pushes
/// go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_backend_fails_the_push_not_the_server() -> Result {
    let (server, app, _work, repo) = server_with_app("boom").await?;
    let url = server.url("boom");
    commit_file(&repo, "PANIC", b"\n", "panic").await?;
    let push = git(&repo, &["push", &url, "main"]).await?;
    assert!(!push.ok, "the push of a panicking build was accepted");
    assert!(
        push.stderr.contains(
            "remote:  !     internal error while building: the PANIC file asks this backend to panic; the server keeps running"
        ),
        "the pusher was not told:\n{}",
        push.stderr
    );
    assert!(
        push.stderr
            .contains("! [remote rejected] main -> main (internal error)"),
        "{}",
        push.stderr
    );
    assert_server_repo(&server, &app, &[]).await?;

    // Another app is served, and this app's lock was released.
    bystander_push(&server, "bystander").await?;
    git_ok(&repo, &["rm", "-q", "PANIC"]).await?;
    let c2 = commit_file(&repo, "index.html", b"fixed\n", "fixed").await?;
    git_ok(&repo, &["push", &url, "main"]).await?;
    assert_server_repo(&server, &app, &[("refs/heads/main", &c2)]).await?;
    Ok(())
}

/// A pusher that reads slowly (here: git whose stderr nobody reads) holds the build back
/// instead of making the server queue its lines; once it reads, every line arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_pusher_holds_the_build_back_and_gets_every_line() -> Result {
    const LINES: usize = 100_000; // of 1 KiB: 100 MB
    let (server, _app, _work, repo) = server_with_app("noisy").await?;
    commit_file(&repo, "NOISY", LINES.to_string().as_bytes(), "noisy").await?;
    let mut cmd = git_command(&repo, &["push", &server.url("noisy"), "main"]);
    cmd.stdout(Stdio::null()).stderr(Stdio::piped());
    let mut child = cmd.spawn()?;

    // Nobody reads git's stderr: git, then the connection, then the build stop.
    let since = tokio::time::Instant::now();
    let mut last = usize::MAX;
    let stalled_at = loop {
        tokio::time::sleep(Duration::from_millis(1000)).await;
        let now = server.gate.logged.load(Ordering::SeqCst);
        if now == last && now > 0 {
            break now;
        }
        assert!(
            since.elapsed() < Duration::from_secs(60),
            "the build never waited for the pusher ({now} lines printed)"
        );
        last = now;
    };
    assert!(
        stalled_at < LINES / 2,
        "the build printed {stalled_at} of {LINES} lines to a pusher that reads nothing"
    );
    eprintln!("the build waited after {stalled_at} lines of 1 KiB");

    let mut stderr = String::new();
    if let Some(mut err) = child.stderr.take() {
        err.read_to_string(&mut stderr).await?;
    }
    let status = child.wait().await?;
    assert!(!status.success(), "the NOISY build should fail at its end");
    let got = stderr
        .lines()
        .filter(|l| l.starts_with("remote: [linux/") && l.contains(" noisy "))
        .count();
    assert_eq!(got, LINES, "build lines were lost on the way to the pusher");
    assert!(
        stderr.contains(&format!("the NOISY build printed its {LINES} lines")),
        "{}",
        &stderr[stderr.len().saturating_sub(2000)..]
    );
    bystander_push(&server, "bystander").await?;
    Ok(())
}

/// Over SSH the client reads the answer while it still sends: the refusals reach it there too,
/// and the SSH server goes on serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_ssh_limits_and_panics_fail_the_push_not_the_server() -> Result {
    use crate::auth::keygen;
    use crate::ssh::{git_ssh, start_ssh, url};

    let (server, app, work, repo) = server_with_app("boom").await?;
    let (key, public) = keygen(work.path(), "alice", "ed25519").await?;
    server.accounts.add_key("alice", &public)?;
    let ssh = start_ssh(&server, &work.path().join("host_key")).await?;
    let port = ssh.port;
    let boom = url(port, "boom.git");

    commit_file(&repo, "index.html", b"x\n", "x").await?;
    let mut args = vec!["push".to_owned()];
    for i in 0..101 {
        args.extend(["-o".to_owned(), format!("option-{i}")]);
    }
    args.extend([boom.clone(), "main".to_owned()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let push = run(git_ssh(&repo, &args, &key, port, None)).await?;
    assert!(!push.ok, "a push with 101 push options was accepted");
    assert!(
        push.stderr
            .contains("remote: error: the push has 101 push options; the limit is 100"),
        "the pusher was not told the limit:\n{}",
        push.stderr
    );

    commit_file(&repo, "PANIC", b"\n", "panic").await?;
    let push = run(git_ssh(&repo, &["push", &boom, "main"], &key, port, None)).await?;
    assert!(!push.ok, "the push of a panicking build was accepted");
    assert!(
        push.stderr.contains(
            "remote:  !     internal error while building: the PANIC file asks this backend to panic; the server keeps running"
        ),
        "the pusher was not told:\n{}",
        push.stderr
    );
    assert_server_repo(&server, &app, &[]).await?;

    git_ok(&repo, &["rm", "-q", "PANIC"]).await?;
    let c3 = commit_file(&repo, "index.html", b"fixed\n", "fixed").await?;
    let push = run(git_ssh(&repo, &["push", &boom, "main"], &key, port, None)).await?;
    assert!(push.ok, "the SSH server stopped serving:\n{}", push.stderr);
    assert_server_repo(&server, &app, &[("refs/heads/main", &c3)]).await?;
    Ok(())
}

#[test]
fn limits_no_push_could_meet_are_refused_by_the_builder() -> Result {
    let dir = tempfile::tempdir()?;
    let e = GitServer::builder(dir.path())
        .max_ref_updates(0)
        .build()
        .err()
        .ok_or("max_ref_updates(0) was accepted")?;
    assert!(e.to_string().contains("max_ref_updates is 0"), "{e}");
    let e = GitServer::builder(dir.path())
        .max_ref_update_bytes(100)
        .build()
        .err()
        .ok_or("max_ref_update_bytes(100) was accepted")?;
    assert!(
        e.to_string()
            .contains("max_ref_update_bytes is 100, too short"),
        "{e}"
    );
    // No push options at all is a choice, not a mistake.
    GitServer::builder(dir.path()).max_push_options(0).build()?;
    Ok(())
}
