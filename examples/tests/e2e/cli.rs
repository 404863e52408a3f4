//! The CLI without a server: aliases, CI workflows, and errors that say what to do.

use hephy_examples::ci::CiSystem;
use hephy_examples::cli::{app_from_remote, split_colon_alias};

use crate::support::{hephy, run};
use crate::Result;

#[test]
fn deis_and_heroku_aliases_split() {
    let args = |v: &[&str]| v.iter().map(std::ffi::OsString::from).collect::<Vec<_>>();
    assert_eq!(
        split_colon_alias(args(&["hephy", "apps:create", "x"])),
        args(&["hephy", "apps", "create", "x"])
    );
    assert_eq!(
        split_colon_alias(args(&["hephy", "--app", "x", "config:set", "A=b:c"])),
        args(&["hephy", "--app", "x", "config", "set", "A=b:c"])
    );
    assert_eq!(
        split_colon_alias(args(&["hephy", "releases"])),
        args(&["hephy", "releases"])
    );
}

#[test]
fn apps_from_remotes() {
    for (url, app) in [
        ("http://127.0.0.1:7080/hello.git", Some("hello")),
        ("ssh://git@host:2222/hello.git", Some("hello")),
        ("git@host:hello.git", Some("hello")),
        ("http://host/Bad_Name.git", None),
    ] {
        assert_eq!(
            app_from_remote(url).map(|a| a.to_string()).as_deref(),
            app,
            "{url}"
        );
    }
}

#[test]
fn ci_workflows() {
    insta::assert_snapshot!("github", CiSystem::GitHub.workflow("hello", "main", true));
    insta::assert_snapshot!("gitlab", CiSystem::GitLab.workflow("hello", "main", false));
}

#[test]
fn errors_say_what_to_do() -> Result {
    let home = tempfile::tempdir()?;
    let out = hephy(home.path()).args(["apps", "list"]).output()?;
    assert!(!out.status.success());
    insta::assert_snapshot!("not_logged_in", String::from_utf8_lossy(&out.stderr));
    let out = hephy(home.path())
        .args(["login", "http://127.0.0.1:9", "--token", "x"])
        .output()?;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot reach hephy at http://127.0.0.1:9"),
        "{err}"
    );
    let out = hephy(home.path())
        .args(["rollback", "latest", "--app", "x"])
        .output()?;
    assert!(String::from_utf8_lossy(&out.stderr).contains("write it as vN"));
    // `hephy ci` writes the workflow into the checkout.
    run(hephy(home.path())
        .current_dir(home.path())
        .args(["ci", "github", "--app", "hello"]))?;
    assert!(home.path().join(".github/workflows/hephy.yml").is_file());
    let again = hephy(home.path())
        .current_dir(home.path())
        .args(["ci", "github", "--app", "hello"])
        .output()?;
    assert!(String::from_utf8_lossy(&again.stderr).contains("pass --force"));
    Ok(())
}
