//! The Flux GitOps deployer against a real bare repository, checked with the real `git`
//! client and rendered offline with `kubectl kustomize`.

use std::path::{Path, PathBuf};
use std::process::Command;

use hephy_core::{ConfigVars, Deployer, Events, ReleaseCause, ReleaseVersion};
use hephy_deploy::gitops::FluxDeployer;

use crate::manifests::{image, new_release, pinned, Result};
use crate::support::run;

fn git(repo: &Path, args: &[&str]) -> Result<String> {
    run(Command::new("git").arg("--git-dir").arg(repo).args(args))
}

fn bare_repo(dir: &Path) -> Result<PathBuf> {
    let repo = dir.join("gitops.git");
    run(Command::new("git")
        .args(["init", "--quiet", "--bare", "--initial-branch=main"])
        .arg(&repo))?;
    Ok(repo)
}

fn deployer(repo: &Path, work: &Path) -> Result<FluxDeployer> {
    Ok(FluxDeployer::builder(repo.to_string_lossy(), work)
        .namespace("apps")
        .flux_url("ssh://git@git.example.com/ops/gitops.git")
        .flux_secret("gitops-deploy-key")
        .build()?)
}

/// A release without config vars (the default GitOps mode keeps them out of git).
fn plain(app: &str, n: u8) -> Result<hephy_core::NewRelease> {
    Ok(new_release(app, n, "")?.with_config(ConfigVars::default()))
}

fn kustomize(dir: &Path) -> Result<String> {
    run(Command::new("kubectl").arg("kustomize").arg(dir))
}

/// A bare repository in a temp dir and a deployer pushing to it with its cache in `work`.
fn flux_setup() -> Result<(tempfile::TempDir, PathBuf, FluxDeployer)> {
    let tmp = tempfile::tempdir()?;
    let repo = bare_repo(tmp.path())?;
    let flux = deployer(&repo, &tmp.path().join("work"))?;
    Ok((tmp, repo, flux))
}

/// Clones `repo` into `checkout`.
fn clone(repo: &Path, checkout: &Path) -> Result {
    run(Command::new("git")
        .args(["clone", "--quiet"])
        .arg(repo)
        .arg(checkout))?;
    Ok(())
}

#[tokio::test]
async fn releases_are_commits_and_rollback_restores_the_digest() -> Result {
    let (tmp, repo, flux) = flux_setup()?;
    let events = Events::discard();

    let r1 = flux.deploy(plain("hello", 1)?, &events).await?;
    let r2 = flux.deploy(plain("hello", 2)?, &events).await?;
    assert_eq!((r1.version.number(), r2.version.number()), (1, 2));
    let r3 = flux
        .rollback(&r1.app, ReleaseVersion::FIRST, &events)
        .await?;
    assert_eq!(r3.version.number(), 3);
    assert_eq!(r3.image, image(1)?);

    let subjects = git(&repo, &["log", "--format=%s", "main"])?;
    assert_eq!(
        subjects.lines().collect::<Vec<_>>(),
        vec![
            format!("deploy hello v3: {}", pinned(1)),
            format!("deploy hello v2: {}", pinned(2)),
            format!("deploy hello v1: {}", pinned(1)),
        ]
    );
    let body = git(&repo, &["log", "-1", "--format=%b", "main"])?;
    assert_eq!(body.trim(), "rollback to v1");

    let deployment = git(&repo, &["show", "main:apps/hello/deployment.yaml"])?;
    assert!(
        deployment.contains(&format!("image: {}", pinned(1))),
        "HEAD runs v1's digest again:\n{deployment}"
    );
    let before = git(&repo, &["show", "main~1:apps/hello/deployment.yaml"])?;
    assert!(before.contains(&format!("image: {}", pinned(2))));

    let files = git(&repo, &["ls-tree", "-r", "--name-only", "main"])?;
    insta::assert_snapshot!("tree", files);
    assert!(
        !files.contains("secret.yaml"),
        "config vars stay out of git by default"
    );
    // flux-system is written once: only the first commit touches it.
    let flux_commits = git(&repo, &["log", "--format=%s", "main", "--", "flux-system"])?;
    assert_eq!(flux_commits.lines().count(), 1, "{flux_commits}");

    // The history is readable by another hephy instance with its own cache.
    let other = deployer(&repo, &tmp.path().join("other"))?;
    let history = other.releases(&r1.app).await?;
    assert_eq!(history.len(), 3);
    assert_eq!(
        history[2].cause,
        ReleaseCause::Rollback {
            to: ReleaseVersion::FIRST
        }
    );
    assert_eq!(history, flux.releases(&r1.app).await?);

    // kubectl renders the tree offline.
    let checkout = tmp.path().join("checkout");
    clone(&repo, &checkout)?;
    let apps = kustomize(&checkout.join("apps"))?;
    assert!(apps.contains("kind: Deployment") && apps.contains(&pinned(1)));
    insta::assert_snapshot!("kustomize_apps", apps);
    let flux_system = kustomize(&checkout.join("flux-system"))?;
    assert!(flux_system.contains("kind: GitRepository"));
    insta::assert_snapshot!("kustomize_flux_system", flux_system);
    Ok(())
}

#[tokio::test]
async fn several_apps_plain_secrets_and_canary_render_with_kustomize() -> Result {
    let tmp = tempfile::tempdir()?;
    let repo = bare_repo(tmp.path())?;
    let flux = FluxDeployer::builder(repo.to_string_lossy(), tmp.path().join("work"))
        .namespace("apps")
        .plain_secrets(true)
        .build()?;
    let events = Events::discard();
    flux.deploy(new_release("hello", 1, "")?, &events).await?;
    flux.deploy(new_release("shop", 4, "strategy = \"canary\"")?, &events)
        .await?;
    // Switching hello to blue-green replaces its service.yaml with canary.yaml.
    flux.deploy(
        new_release("hello", 2, "strategy = \"blue-green\"")?,
        &events,
    )
    .await?;

    let files = git(&repo, &["ls-tree", "-r", "--name-only", "main"])?;
    insta::assert_snapshot!("tree_plain_secrets", files);
    assert!(!files.contains("apps/hello/service.yaml"), "{files}");

    let checkout = tmp.path().join("checkout");
    clone(&repo, &checkout)?;
    let apps = kustomize(&checkout.join("apps"))?;
    for needle in [
        "kind: Secret",
        "name: hello-env",
        "name: shop-env",
        "kind: Canary",
        "stepWeight: 10",
        "provider: kubernetes",
    ] {
        assert!(apps.contains(needle), "{needle} missing in:\n{apps}");
    }
    let gitrepo = std::fs::read_to_string(checkout.join("flux-system/gitrepository.yaml"))?;
    assert!(
        gitrepo.contains(&format!("url: {}", repo.display())),
        "without flux_url, Flux is pointed at the push location:\n{gitrepo}"
    );
    Ok(())
}

#[tokio::test]
async fn config_vars_are_refused_without_plain_secrets() -> Result {
    let (_tmp, repo, flux) = flux_setup()?;
    let err = flux
        .deploy(new_release("hello", 1, "")?, &Events::discard())
        .await
        .err()
        .ok_or("config vars must not go into git by default")?;
    insta::assert_snapshot!("config_vars_refused", err.to_string());
    assert!(
        git(&repo, &["rev-parse", "--verify", "--quiet", "main"]).is_err(),
        "nothing was committed"
    );
    Ok(())
}

#[tokio::test]
async fn a_commit_made_elsewhere_is_kept_and_built_upon() -> Result {
    let (tmp, repo, flux) = flux_setup()?;
    let events = Events::discard();
    flux.deploy(plain("hello", 1)?, &events).await?;

    // Someone adds a file by hand through a clone.
    let checkout = tmp.path().join("checkout");
    clone(&repo, &checkout)?;
    std::fs::write(checkout.join("README.md"), "GitOps repository\n")?;
    let in_checkout = |args: &[&str]| run(Command::new("git").arg("-C").arg(&checkout).args(args));
    in_checkout(&["add", "README.md"])?;
    in_checkout(&[
        "-c",
        "user.name=ops",
        "-c",
        "user.email=ops@example.com",
        "commit",
        "--quiet",
        "-m",
        "add readme",
    ])?;
    in_checkout(&["push", "--quiet", "origin", "main"])?;

    flux.deploy(plain("hello", 2)?, &events).await?;
    let subjects = git(&repo, &["log", "--format=%s", "main"])?;
    assert_eq!(subjects.lines().nth(1), Some("add readme"), "{subjects}");
    assert_eq!(
        git(&repo, &["show", "main:README.md"])?,
        "GitOps repository\n"
    );
    Ok(())
}

#[test]
fn invalid_settings_are_refused() -> Result {
    let tmp = tempfile::tempdir()?;
    let errors = [
        FluxDeployer::builder("", tmp.path()).build().err(),
        FluxDeployer::builder("repo.git", tmp.path())
            .branch("bad..branch")
            .build()
            .err(),
        FluxDeployer::builder("repo.git", tmp.path())
            .namespace("Apps")
            .build()
            .err(),
    ];
    let text: Vec<String> = errors
        .iter()
        .map(|e| e.as_ref().map(ToString::to_string).unwrap_or_default())
        .collect();
    assert!(text.iter().all(|t| !t.is_empty()), "{text:?}");
    insta::assert_snapshot!("invalid_settings", text.join("\n"));
    Ok(())
}

#[tokio::test]
async fn instances_racing_on_one_repository_both_get_their_release() -> Result {
    let tmp = tempfile::tempdir()?;
    let repo = bare_repo(tmp.path())?;
    let a = deployer(&repo, &tmp.path().join("a"))?;
    let b = deployer(&repo, &tmp.path().join("b"))?;
    let (events, mut stream) = Events::channel();
    a.deploy(plain("hello", 1)?, &events).await?;
    // Both read the same tip and push; the later push is rejected and made again on top.
    for round in 0..3u8 {
        let (ra, rb) = tokio::join!(
            a.deploy(plain("hello", 2 + round)?, &events),
            b.deploy(plain("hello", 5 + round)?, &events)
        );
        let (ra, rb) = (ra?, rb?);
        assert_ne!(
            ra.version, rb.version,
            "each push got its own release number"
        );
    }
    let history = a.releases(&"hello".parse()?).await?;
    let versions: Vec<u32> = history.iter().map(|r| r.version.number()).collect();
    assert_eq!(versions, (1..=7).collect::<Vec<_>>());
    let subjects = git(&repo, &["log", "--format=%s", "main"])?;
    assert_eq!(subjects.lines().count(), 7, "{subjects}");
    drop(events);
    let mut retries = 0;
    while let Some(e) = stream.recv().await {
        retries += usize::from(e.render().contains("moved while committing"));
    }
    // Started together, the two instances read the same tip in (practically) every round.
    assert!(
        retries >= 1,
        "expected at least one rejected push that was made again on top"
    );
    Ok(())
}
