//! Runs the example platform and pushes to it with the real git client over HTTP.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{ChildStdout, Command};

type Result<T = ()> = std::result::Result<T, Box<dyn std::error::Error>>;

/// The next line the platform prints, waiting at most a minute (a first build is slow on a busy
/// machine, but a hung one must fail the test).
async fn next_line(lines: &mut Lines<BufReader<ChildStdout>>) -> Result<String> {
    let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
        .await
        .map_err(|_| "the platform printed nothing for a minute")??;
    Ok(line.ok_or("the platform exited")?)
}

/// Runs `git ARGS` in `dir` without the user's configuration; returns whether it succeeded and
/// what it wrote to stderr (where a push shows the remote's log).
async fn git(dir: &Path, args: &[&str]) -> Result<(bool, String)> {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_AUTHOR_NAME", "Alice")
        .env("GIT_AUTHOR_EMAIL", "alice@example.com")
        .env("GIT_COMMITTER_NAME", "Alice")
        .env("GIT_COMMITTER_EMAIL", "alice@example.com")
        .stdin(Stdio::null())
        .output()
        .await?;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

/// [`git`] that must succeed.
async fn git_ok(dir: &Path, args: &[&str]) -> Result<String> {
    match git(dir, args).await? {
        (true, stderr) => Ok(stderr),
        (false, stderr) => Err(format!("git {args:?} failed:\n{stderr}").into()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_git_push_reaches_the_custom_deployer() -> Result {
    let tmp = tempfile::tempdir()?;
    let mut platform = Command::new(env!("CARGO_BIN_EXE_hephy-embed-example"))
        .arg(tmp.path().join("data"))
        .arg("127.0.0.1:0")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let mut lines = BufReader::new(platform.stdout.take().ok_or("no stdout")?).lines();
    let hint = next_line(&mut lines).await?;
    let url = hint
        .strip_prefix("git push ")
        .and_then(|rest| rest.strip_suffix(" main"))
        .ok_or_else(|| format!("expected the push command first, got {hint:?}"))?;

    let repo = tmp.path().join("repo");
    std::fs::create_dir(&repo)?;
    git_ok(&repo, &["init", "-q", "-b", "main"]).await?;

    // Without a start script the backend does not match: the push is refused, nothing released.
    std::fs::write(repo.join("README"), "no start script yet\n")?;
    git_ok(&repo, &["add", "README"]).await?;
    git_ok(&repo, &["commit", "-q", "-m", "readme"]).await?;
    let (pushed, stderr) = git(&repo, &["push", url, "main"]).await?;
    assert!(
        !pushed,
        "a push the backend cannot build was accepted:\n{stderr}"
    );
    // The refusal names this platform's backend only, and no hephy CLI.
    for reason in [
        "no start script: add an executable file named start",
        "add what one of the registered backends (ship) looks for",
    ] {
        assert!(stderr.contains(reason), "{reason:?} is not in:\n{stderr}");
    }
    assert!(
        !stderr.contains("`hephy "),
        "hephy's CLI advice leaked:\n{stderr}"
    );

    for (n, content) in ["#!/bin/sh\necho one\n", "#!/bin/sh\necho two\n"]
        .into_iter()
        .enumerate()
    {
        std::fs::write(repo.join("start"), content)?;
        git_ok(&repo, &["add", "start"]).await?;
        git_ok(&repo, &["commit", "-q", "-m", "start"]).await?;
        let push = git_ok(&repo, &["push", url, "main"]).await?;

        // The deployer printed the release (the refused push made none), and the pusher saw the
        // backend's and the deployer's log.
        let version = format!("v{}", n + 1);
        let released = next_line(&mut lines).await?;
        let expected = format!("released hello {version} ");
        assert!(
            released.starts_with(&expected) && released.contains("@sha256:"),
            "expected {expected:?} and a digest-pinned image, got {released:?}"
        );
        for log in [
            "shipping the files for",
            &format!("{version} is on the shelf"),
            &format!("-----> hello deployed as {version}"),
        ] {
            assert!(
                push.contains(log),
                "{log:?} is not in the push output:\n{push}"
            );
        }
    }
    platform.kill().await?;
    Ok(())
}
