//! GitSource: checking a pushed commit out with gix.

use std::os::unix::fs::PermissionsExt;

use hephy_core::{Events, Revision, Source};

use crate::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn materializes_files_modes_and_symlinks() -> Result {
    let (server, app, _work, repo) = server_with_app("src").await?;
    std::fs::create_dir_all(repo.join("bin/deep"))?;
    std::fs::write(repo.join("bin/run.sh"), "#!/bin/sh\necho hi\n")?;
    std::fs::set_permissions(
        repo.join("bin/run.sh"),
        std::fs::Permissions::from_mode(0o755),
    )?;
    std::fs::write(repo.join("bin/deep/data.txt"), "data\n")?;
    std::os::unix::fs::symlink("bin/run.sh", repo.join("start"))?;
    std::os::unix::fs::symlink("/etc/passwd", repo.join("outside"))?;
    let commit = commit_file(&repo, "README", b"readme\n", "Add the app\n\nWith a body.").await?;
    git_ok(
        &repo,
        &["push", &server.url("src"), "main:refs/heads/source"],
    )
    .await?;

    let dest = tempfile::tempdir()?;
    let (events, mut stream) = Events::channel();
    let rev = server
        .server
        .source()
        .materialize(
            &app,
            &Revision::new(&commit).with_ref_name("refs/heads/source"),
            dest.path(),
            &events,
        )
        .await?;
    drop(events);
    assert_eq!(rev.commit, commit);
    assert_eq!(rev.ref_name, "refs/heads/source");
    assert_eq!(rev.author, "Alice <alice@example.com>");
    assert_eq!(rev.message, "Add the app\n\nWith a body.");
    assert_eq!(
        rev.time,
        Some(std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_704_164_645))
    );
    let mut logs = vec![];
    while let Some(e) = stream.recv().await {
        logs.push(e.render());
    }
    assert!(
        logs.iter().any(|l| l.contains("Checked out 5 files")),
        "{logs:?}"
    );

    let d = dest.path();
    assert!(!d.join(".git").exists());
    assert_eq!(
        std::fs::read_to_string(d.join("bin/deep/data.txt"))?,
        "data\n"
    );
    let mode = std::fs::metadata(d.join("bin/run.sh"))?
        .permissions()
        .mode();
    assert!(mode & 0o111 != 0, "the executable bit was lost: {mode:o}");
    let mode = std::fs::metadata(d.join("README"))?.permissions().mode();
    assert!(
        mode & 0o111 == 0,
        "a plain file became executable: {mode:o}"
    );
    assert_eq!(
        std::fs::read_link(d.join("start"))?,
        std::path::Path::new("bin/run.sh")
    );
    assert_eq!(
        std::fs::read_link(d.join("outside"))?,
        std::path::Path::new("/etc/passwd")
    );

    // Unknown commits and apps are named as such.
    let other = tempfile::tempdir()?;
    let err = server
        .server
        .source()
        .materialize(
            &app,
            &Revision::new("1".repeat(40)),
            other.path(),
            &Events::discard(),
        )
        .await
        .err()
        .ok_or("an unknown commit was checked out")?;
    assert!(
        err.to_string().contains("is not in the repository of src"),
        "{err}"
    );
    let err = server
        .server
        .source()
        .materialize(
            &"ghost".parse()?,
            &Revision::new(&commit),
            other.path(),
            &Events::discard(),
        )
        .await
        .err()
        .ok_or("an unknown app was checked out")?;
    assert!(
        err.to_string().contains("app ghost has no repository"),
        "{err}"
    );
    Ok(())
}

/// Writes an object into a bare repository with the real git (`--literally`, so git does not
/// refuse the malformed trees these tests need).
async fn hash_object(repo: &std::path::Path, kind: &str, data: &[u8]) -> Result<String> {
    use tokio::io::AsyncWriteExt;
    let mut child = git_command(
        repo,
        &["hash-object", "-w", "--literally", "-t", kind, "--stdin"],
    )
    .stdin(std::process::Stdio::piped())
    .stdout(std::process::Stdio::piped())
    .spawn()?;
    let mut stdin = child.stdin.take().ok_or("no stdin")?;
    stdin.write_all(data).await?;
    drop(stdin);
    let out = child.wait_with_output().await?;
    assert!(out.status.success(), "git hash-object failed");
    Ok(String::from_utf8(out.stdout)?.trim().to_owned())
}

fn raw_id(hex: &str) -> Result<Vec<u8>> {
    (0..hex.len())
        .step_by(2)
        .map(|i| Ok(u8::from_str_radix(&hex[i..i + 2], 16)?))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tree_cannot_write_through_a_symlink_or_escape() -> Result {
    let server = TestServer::start().await?;
    let app = server.app("evil")?;
    let repo = server.server.repo_dir(&app);
    let outside = tempfile::tempdir()?;
    let target = outside.path().display().to_string();
    let link = hash_object(&repo, "blob", target.as_bytes()).await?;
    let payload = hash_object(&repo, "blob", b"owned\n").await?;
    let mut inner = b"100644 f\0".to_vec();
    inner.extend(raw_id(&payload)?);
    let inner = hash_object(&repo, "tree", &inner).await?;

    // `a` twice: a symlink out of the context, then a directory whose file would land there.
    let mut evil = b"120000 a\0".to_vec();
    evil.extend(raw_id(&link)?);
    evil.extend(b"40000 a\0");
    evil.extend(raw_id(&inner)?);
    // And an entry named `..`.
    let mut dots = b"40000 ..\0".to_vec();
    dots.extend(raw_id(&inner)?);

    for tree in [evil, dots] {
        let tree = hash_object(&repo, "tree", &tree).await?;
        let commit = hash_object(
            &repo,
            "commit",
            format!("tree {tree}\nauthor A <a@b> 0 +0000\ncommitter A <a@b> 0 +0000\n\nevil\n")
                .as_bytes(),
        )
        .await?;
        let dest = tempfile::tempdir()?;
        let r = server
            .server
            .source()
            .materialize(
                &app,
                &Revision::new(&commit),
                dest.path(),
                &Events::discard(),
            )
            .await;
        assert!(r.is_err(), "a malicious tree was checked out");
        assert!(
            std::fs::read_dir(outside.path())?.next().is_none(),
            "a file was written outside the build context"
        );
        assert!(!dest.path().parent().ok_or("no parent")?.join("f").exists());
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resolve_turns_head_branches_refs_and_commit_ids_into_revisions() -> Result {
    let (server, app, _work, repo) = server_with_app("names").await?;
    let first = commit_file(&repo, "a", b"a\n", "first").await?;
    git_ok(
        &repo,
        &["push", &server.url("names"), "main:refs/heads/feature"],
    )
    .await?;
    let second = commit_file(&repo, "b", b"b\n", "second").await?;
    git_ok(&repo, &["push", &server.url("names"), "main"]).await?;
    git_ok(&repo, &["tag", "v1", &first]).await?;
    git_ok(&repo, &["push", &server.url("names"), "v1"]).await?;
    let source = server.server.source();

    let head = source.resolve(&app, "HEAD")?;
    assert_eq!(
        (head.commit.as_str(), head.ref_name.as_str()),
        (second.as_str(), "refs/heads/main")
    );
    assert_eq!(source.resolve(&app, "main")?, head);
    let feature = source.resolve(&app, "refs/heads/feature")?;
    assert_eq!(
        (feature.commit.as_str(), feature.ref_name.as_str()),
        (first.as_str(), "refs/heads/feature")
    );
    assert_eq!(source.resolve(&app, "feature")?, feature);
    // A tag peels to its commit.
    assert_eq!(source.resolve(&app, "v1")?.commit, first);
    // Commit ids, full and short, name no ref.
    assert_eq!(source.resolve(&app, &first)?, Revision::new(&first));
    assert_eq!(source.resolve(&app, &first[..7])?, Revision::new(&first));

    let err = source
        .resolve(&app, "nope")
        .err()
        .ok_or("an unknown name resolved")?;
    insta::assert_snapshot!(err.to_string());
    assert!(source.resolve(&app, "-x").is_err());
    assert!(
        source.resolve(&app, "abc").is_err(),
        "3 hex digits are too few"
    );
    let err = source
        .resolve(&"ghost".parse()?, "main")
        .err()
        .ok_or("an unknown app resolved")?;
    assert_eq!(
        err.to_string(),
        "app ghost has no repository: create the app before pushing to it"
    );

    // The revision builds: materialize takes it as a push would.
    let dest = tempfile::tempdir()?;
    let rev = source
        .materialize(&app, &feature, dest.path(), &Events::discard())
        .await?;
    assert_eq!(rev.message, "first");
    assert!(dest.path().join("a").is_file() && !dest.path().join("b").exists());
    Ok(())
}
