//! Pushes with the real git client: what lands in the repository and what the pusher sees.

use std::time::Duration;

use crate::*;

/// Replaces what varies between runs (ids, digests, ports, timings) in a push transcript.
pub(crate) fn normalize(text: &str, server: &TestServer) -> String {
    let mut out = vec![];
    for line in text.lines() {
        if line.contains("... still ") {
            continue; // keepalive lines come when the machine is slow
        }
        let mut l = line
            .trim_end()
            .replace(&server.addr.to_string(), "HOST")
            .replace(&server.token, "TOKEN")
            .replace(&server.dir.path().display().to_string(), "TMP");
        // Words that are long hex ids or digests.
        l = l
            .split(' ')
            .map(normalize_word)
            .collect::<Vec<_>>()
            .join(" ");
        out.push(l);
    }
    out.join("\n")
}

fn normalize_word(w: &str) -> String {
    let mut w = w.to_owned();
    if let Some(i) = w.find("sha256:") {
        w = format!("{}sha256:DIGEST", &w[..i]);
    }
    if let Some(i) = w.find(":git-") {
        let rest = &w[i + 5..];
        let hex: String = rest.chars().take_while(|c| c.is_ascii_hexdigit()).collect();
        if hex.len() == 7 {
            w = format!("{}:git-SHORT{}", &w[..i], &rest[7..]);
        }
    }
    // "0.12s" timings
    if w.ends_with('s') && w[..w.len() - 1].parse::<f64>().is_ok() {
        return "ELAPSED".into();
    }
    let hexish = |s: &str| s.len() >= 7 && s.chars().all(|c| c.is_ascii_hexdigit());
    if hexish(&w) {
        return "ID".into();
    }
    if let Some((a, b)) = w.split_once("..") {
        let b = b.trim_start_matches('.');
        if hexish(a) && hexish(b) {
            return "ID..ID".into();
        }
    }
    w
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_fast_forward_force_branch_and_delete() -> Result {
    let (server, app, _work, repo) = server_with_app("hello").await?;
    let url = server.url("hello");

    // First push: built, published, reported.
    let c1 = commit_file(&repo, "index.html", b"<h1>hello</h1>\n", "first").await?;
    let push = git(&repo, &["push", &url, "main"]).await?;
    assert!(push.ok, "first push failed:\n{}", push.stderr);
    assert!(
        push.stderr
            .contains("remote: -----> Building for linux/amd64"),
        "no build log:\n{}",
        push.stderr
    );
    assert!(
        push.stderr
            .contains("remote: -----> hello built and published"),
        "no summary:\n{}",
        push.stderr
    );
    assert!(
        push.stderr.contains("image: hephy.local/hello:git-"),
        "no image:\n{}",
        push.stderr
    );
    assert!(
        push.stderr.contains(" * [new branch]      main -> main"),
        "{}",
        push.stderr
    );
    insta::assert_snapshot!("first_push", normalize(&push.stderr, &server));
    assert!(
        server
            .images()
            .join("hephy.local/hello/index.json")
            .is_file(),
        "nothing was published"
    );
    assert_server_repo(&server, &app, &[("refs/heads/main", &c1)]).await?;

    // Fast-forward, over protocol v1.
    let c2 = commit_file(&repo, "index.html", b"<h1>hello again</h1>\n", "second").await?;
    let push = git(&repo, &["-c", "protocol.version=1", "push", &url, "main"]).await?;
    assert!(push.ok, "fast-forward failed:\n{}", push.stderr);
    assert!(
        push.stderr
            .contains(&format!("{}..{}  main -> main", &c1[..7], &c2[..7])),
        "{}",
        push.stderr
    );
    assert_server_repo(&server, &app, &[("refs/heads/main", &c2)]).await?;

    // Force push of a rewritten commit.
    std::fs::write(repo.join("index.html"), b"<h1>rewritten</h1>\n")?;
    git_ok(
        &repo,
        &["commit", "-q", "-a", "--amend", "-m", "second, rewritten"],
    )
    .await?;
    let c3 = head(&repo).await?;
    let push = git(&repo, &["push", &url, "main"]).await?;
    assert!(
        !push.ok,
        "a non-fast-forward push without --force must be refused by the client"
    );
    let push = git(&repo, &["push", "--force", &url, "main"]).await?;
    assert!(push.ok, "force push failed:\n{}", push.stderr);
    assert!(push.stderr.contains("(forced update)"), "{}", push.stderr);
    assert_server_repo(&server, &app, &[("refs/heads/main", &c3)]).await?;

    // Another branch moves without a build.
    git_ok(&repo, &["checkout", "-q", "-b", "feature"]).await?;
    let c4 = commit_file(&repo, "feature.txt", b"wip\n", "feature").await?;
    let push = git(&repo, &["push", &url, "feature"]).await?;
    assert!(push.ok, "branch push failed:\n{}", push.stderr);
    assert!(
        !push.stderr.contains("Building"),
        "a branch other than main was built:\n{}",
        push.stderr
    );
    assert_server_repo(
        &server,
        &app,
        &[("refs/heads/feature", &c4), ("refs/heads/main", &c3)],
    )
    .await?;

    // Deleting branches, the deploy branch included, builds nothing.
    let push = git(&repo, &["push", &url, ":feature", ":main"]).await?;
    assert!(push.ok, "delete failed:\n{}", push.stderr);
    assert!(push.stderr.contains("[deleted]"), "{}", push.stderr);
    assert!(!push.stderr.contains("Building"), "{}", push.stderr);
    assert_server_repo(&server, &app, &[]).await?;

    // Pushing the same commits again sends objects the server already has.
    let push = git(&repo, &["push", &url, "main", "feature"]).await?;
    assert!(push.ok, "re-push failed:\n{}", push.stderr);
    assert_server_repo(
        &server,
        &app,
        &[("refs/heads/feature", &c4), ("refs/heads/main", &c3)],
    )
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thin_pack_is_completed_from_the_repository() -> Result {
    let (server, app, _work, repo) = server_with_app("thin").await?;
    let url = server.url("thin");
    let big: String = (0..20_000)
        .map(|i| format!("line {i} of a file that deltas well\n"))
        .collect();
    let c1 = commit_file(&repo, "data.txt", big.as_bytes(), "big file").await?;
    git_ok(&repo, &["push", &url, "main:refs/heads/base"]).await?;
    assert_server_repo(&server, &app, &[("refs/heads/base", &c1)]).await?;

    // A small change to the big file: git sends it as a delta against the blob the server has
    // (a thin pack), which the server must complete.
    let changed = big.replace("line 10000 of", "line ten thousand of");
    let c2 = commit_file(&repo, "data.txt", changed.as_bytes(), "small change").await?;
    let trace = tempfile::NamedTempFile::new()?;
    let mut cmd = git_command(&repo, &["push", &url, "main:refs/heads/base"]);
    cmd.env("GIT_TRACE", trace.path());
    let out = cmd.output().await?;
    assert!(
        out.status.success(),
        "push failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let traced = std::fs::read_to_string(trace.path())?;
    assert!(
        traced.contains("pack-objects") && traced.contains("--thin"),
        "git did not send a thin pack:\n{traced}"
    );
    assert_server_repo(&server, &app, &[("refs/heads/base", &c2)]).await?;
    // The blob of the new commit is readable on the server, so the delta base was resolved.
    let dir = server.server.repo_dir(&app);
    let shown = git_ok(&dir, &["show", &format!("{c2}:data.txt")]).await?;
    assert_eq!(shown, changed);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_push_and_size_limit() -> Result {
    let server = TestServer::start_with(Options {
        max_push_bytes: 150 << 20,
        data_dir: None,
    })
    .await?;
    let app = server.app("large")?;
    let work = tempfile::tempdir()?;
    let repo = client_repo(work.path()).await?;
    let url = server.url("large");
    // 100 MB of incompressible data in 4 files.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for f in 0..4 {
        std::fs::write(repo.join(format!("blob{f}.bin")), noise(&mut x, 25 << 20))?;
    }
    git_ok(&repo, &["add", "-A"]).await?;
    git_ok(&repo, &["commit", "-q", "-m", "100 MB"]).await?;
    let c1 = head(&repo).await?;
    let push = git(&repo, &["push", &url, "main:refs/heads/big"]).await?;
    assert!(push.ok, "100 MB push failed:\n{}", push.stderr);
    assert_server_repo(&server, &app, &[("refs/heads/big", &c1)]).await?;

    // The same push to a server that takes at most 1 MiB is refused, and nothing is kept.
    let small = TestServer::start_with(Options {
        max_push_bytes: 1 << 20,
        data_dir: None,
    })
    .await?;
    let app = small.app("large")?;
    let other = tempfile::tempdir()?;
    let repo = client_repo(other.path()).await?;
    let data = noise(&mut x, 2 << 20);
    commit_file(&repo, "two-megabytes.bin", &data, "2 MB").await?;
    let push = git(&repo, &["push", &small.url("large"), "main:refs/heads/big"]).await?;
    assert!(!push.ok, "a push over the limit succeeded");
    assert!(
        push.stderr
            .contains("larger than this server's limit of 1048576 bytes"),
        "the refusal does not say why:\n{}",
        push.stderr
    );
    assert_server_repo(&small, &app, &[]).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_build_rejects_the_push_and_keeps_the_ref() -> Result {
    let (server, app, _work, repo) = server_with_app("web").await?;
    let url = server.url("web");
    let c1 = commit_file(&repo, "index.html", b"ok\n", "good").await?;
    git_ok(&repo, &["push", &url, "main"]).await?;

    commit_file(
        &repo,
        "FAIL",
        b"compiler says: syntax error on line 3\n",
        "bad",
    )
    .await?;
    let push = git(&repo, &["push", &url, "main"]).await?;
    assert!(!push.ok, "a failed build was accepted");
    assert!(
        push.stderr
            .contains("! [remote rejected] main -> main (build failed)"),
        "the rejection is not shown:\n{}",
        push.stderr
    );
    assert!(
        push.stderr
            .contains("remote: [linux/amd64] gate: compiler says: syntax error on line 3"),
        "the build output is not shown:\n{}",
        push.stderr
    );
    assert!(
        push.stderr.contains(
            "remote:  !     build failed: linux/amd64: the FAIL file asks this build to fail"
        ),
        "{}",
        push.stderr
    );
    assert_server_repo(&server, &app, &[("refs/heads/main", &c1)]).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_push_is_refused_and_a_killed_client_cancels_its_build() -> Result {
    let (server, app, _work, repo) = server_with_app("busy").await?;
    let url = server.url("busy");
    commit_file(&repo, "SLOW", b"\n", "slow build").await?;

    // The first push waits in its build; git and its remote helper run in their own process
    // group, so the whole client can be killed like a closed terminal.
    let mut first = git_command(&repo, &["push", &url, "main"]);
    first
        .process_group(0)
        .stderr(Stdio::piped())
        .stdout(Stdio::null());
    let mut first = first.spawn()?;
    let stderr = first.stderr.take().ok_or("no stderr")?;
    let (lines_tx, mut lines) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        use tokio::io::AsyncBufReadExt;
        // git ends keepalive and log lines with \n; read them as they come.
        let mut reader = tokio::io::BufReader::new(stderr).lines();
        while let Ok(Some(line)) = reader.next_line().await {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    wait_for(
        &server.gate.started,
        tokio::time::Instant::now(),
        Duration::from_secs(60),
        "the first push never started building",
    )
    .await;

    // The build is silent now: keepalive lines (every 200 ms in these tests) reach the client.
    let mut seen = vec![];
    loop {
        let line = tokio::time::timeout(Duration::from_secs(30), lines.recv())
            .await?
            .ok_or_else(|| {
                format!(
                    "the push ended without a keepalive line:\n{}",
                    seen.join("\n")
                )
            })?;
        if line.contains("remote:        ... still building (") {
            break;
        }
        seen.push(line);
    }
    assert!(
        seen.iter()
            .any(|l| l.contains("[linux/amd64] gate: waiting until cancelled")),
        "the build's log did not arrive before the keepalive:\n{}",
        seen.join("\n")
    );

    // A second push to the same app is refused at once, saying who pushes.
    let other = tempfile::tempdir()?;
    let repo2 = client_repo(other.path()).await?;
    commit_file(&repo2, "index.html", b"other\n", "other").await?;
    let second = git(&repo2, &["push", &url, "main"]).await?;
    assert!(!second.ok, "a concurrent push was accepted");
    assert!(
        second
            .stderr
            .contains("another push to busy is running (started by alice at ")
            && second.stderr.contains("wait for it to finish"),
        "the refusal is not clear:\n{}",
        second.stderr
    );

    // Killing the first client cancels its build and frees the lock.
    kill_group(&mut first).await?;
    let killed_at = tokio::time::Instant::now();
    wait_for(
        &server.gate.cancelled,
        killed_at,
        Duration::from_secs(30),
        "the build went on after its client was killed",
    )
    .await;
    let pushed = push_until_ok(killed_at, || git_command(&repo2, &["push", &url, "main"])).await?;
    assert!(
        pushed,
        "the lock was not released after the client was killed"
    );
    let c2 = head(&repo2).await?;
    assert_server_repo(&server, &app, &[("refs/heads/main", &c2)]).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_of_a_dead_process_does_not_block() -> Result {
    let data = tempfile::tempdir()?;
    let server = TestServer::start_with(Options {
        data_dir: Some(data.path().to_owned()),
        ..Options::default()
    })
    .await?;
    let app = server.app("crash")?;
    let work = tempfile::tempdir()?;
    let repo = client_repo(work.path()).await?;
    let url = server.url("crash");
    let c1 = commit_file(&repo, "index.html", b"hi\n", "first").await?;
    let lock = server.server.data_dir().join("locks/crash.lock");
    std::fs::create_dir_all(lock.parent().ok_or("no parent")?)?;

    // Another process (the real flock tool) holds the lock: the push is refused.
    // One process opens and locks the file, then becomes `sleep`, so killing it frees the lock.
    let mut holder = tokio::process::Command::new("sh")
        .args(["-c", "exec 9>>\"$0\" && flock 9 && exec sleep 60"])
        .arg(&lock)
        .kill_on_drop(true)
        .spawn()?;
    let mut refused = None;
    for _ in 0..100 {
        let r = git(&repo, &["push", &url, "main"]).await?;
        if !r.ok && r.stderr.contains("another push to crash is running") {
            refused = Some(r);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        refused.is_some(),
        "a lock held by another process was ignored"
    );

    // That process dies (as a crashed server would), leaving its lock file behind with a dead
    // PID in it: the next push goes through.
    holder.kill().await?;
    std::fs::write(&lock, "ghost\n2020-01-01T00:00:00Z\npid 4194303\n")?;
    let push = git(&repo, &["push", &url, "main"]).await?;
    assert!(
        push.ok,
        "a dead process's lock blocked the push:\n{}",
        push.stderr
    );
    assert_server_repo(&server, &app, &[("refs/heads/main", &c1)]).await?;

    // A second server on the same data directory (after a restart) pushes as well.
    drop(server);
    let again = TestServer::start_with(Options {
        data_dir: Some(data.path().to_owned()),
        ..Options::default()
    })
    .await?;
    let c2 = commit_file(&repo, "index.html", b"hi again\n", "second").await?;
    let push = git(&repo, &["push", &again.url("crash"), "main"]).await?;
    assert!(push.ok, "push after restart failed:\n{}", push.stderr);
    assert_server_repo(&again, &app, &[("refs/heads/main", &c2)]).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn atomic_push_is_all_or_nothing() -> Result {
    let (server, app, _work, repo) = server_with_app("atomic").await?;
    let url = server.url("atomic");
    let c1 = commit_file(&repo, "a.txt", b"a\n", "a").await?;
    // A branch may only point to a commit: the tree makes one update fail, and --atomic makes
    // the other fail with it.
    let tree = format!("{c1}^{{tree}}");
    let push = git(
        &repo,
        &[
            "push",
            "--atomic",
            &url,
            "main:refs/heads/good",
            &format!("{tree}:refs/heads/bad"),
        ],
    )
    .await?;
    assert!(!push.ok, "an atomic push with a bad ref succeeded");
    assert!(
        push.stderr
            .contains("a branch must point to a commit, not a tree"),
        "{}",
        push.stderr
    );
    assert_server_repo(&server, &app, &[]).await?;

    // Without --atomic the good one lands.
    let push = git(
        &repo,
        &[
            "push",
            &url,
            "main:refs/heads/good",
            &format!("{tree}:refs/heads/bad"),
        ],
    )
    .await?;
    assert!(!push.ok);
    assert_server_repo(&server, &app, &[("refs/heads/good", &c1)]).await?;
    Ok(())
}
