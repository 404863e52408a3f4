use hephy_core::{AppName, ConfigChange, ConfigVars, Digest, Platform, Reference, ReleaseVersion};

use crate::Result;

#[test]
fn platforms_parse_normalize_and_render() -> Result {
    let p: Platform = "linux/amd64".parse()?;
    assert_eq!(p, Platform::linux_amd64());
    assert_eq!("linux/x86_64".parse::<Platform>()?, p);
    let arm: Platform = "linux/arm64/v8".parse()?;
    assert_eq!(arm.to_string(), "linux/arm64/v8");
    assert_eq!(arm.slug(), "linux-arm64-v8");
    assert!(arm.matches(&Platform::linux_arm64()));
    assert!(!arm.matches(&Platform::linux_amd64()));
    assert_eq!(
        "linux/armhf".parse::<Platform>()?.to_string(),
        "linux/arm/v7"
    );
    Ok(())
}

#[test]
fn platform_errors_name_the_fix() {
    let errs: Vec<String> = ["amd64", "linux/", "plan9/amd64", "linux/z80", "a/b/c/d"]
        .iter()
        .map(|s| {
            s.parse::<Platform>()
                .map(|_| String::new())
                .unwrap_or_else(|e| e.to_string())
        })
        .collect();
    insta::assert_snapshot!(errs.join("\n"));
}

#[test]
fn references_parse_as_docker_does() -> Result {
    let cases = [
        ("alpine", "docker.io", "library/alpine", None),
        ("user/app:1.0", "docker.io", "user/app", Some("1.0")),
        ("localhost:5000/a/b:t", "localhost:5000", "a/b", Some("t")),
        ("localhost/app", "localhost", "app", None),
        ("registry.example.com/x", "registry.example.com", "x", None),
        (
            "127.0.0.1:5000/app:git-abc1234",
            "127.0.0.1:5000",
            "app",
            Some("git-abc1234"),
        ),
        ("[::1]:5000/app", "[::1]:5000", "app", None),
    ];
    for (input, registry, repo, tag) in cases {
        let r: Reference = input.parse()?;
        assert_eq!(r.registry(), registry, "registry of {input}");
        assert_eq!(r.repository(), repo, "repository of {input}");
        assert_eq!(r.tag(), tag, "tag of {input}");
        let again: Reference = r.to_string().parse()?;
        assert_eq!(again, r, "round trip of {input}");
    }
    let d = "sha256:".to_owned() + &"ab".repeat(32);
    let pinned: Reference = format!("localhost:5000/app:v1@{d}").parse()?;
    assert_eq!(pinned.digest().map(|d| d.to_string()), Some(d.clone()));
    assert!(pinned.is_pinned());
    assert_eq!(pinned.to_string(), format!("localhost:5000/app:v1@{d}"));
    assert_eq!(pinned.repository_only().to_string(), "localhost:5000/app");
    let r = Reference::new("hephy.local", "hello", Some("git-1234567"), None)?;
    assert_eq!(r.to_string(), "hephy.local/hello:git-1234567");
    Ok(())
}

#[test]
fn reference_errors_name_the_fix() {
    let errs: Vec<String> = [
        "",
        "UPPER/case",
        "localhost:99999/app",
        "app:-bad",
        "app@sha256:1234",
        "app@md5:abcd",
        "a//b",
    ]
    .iter()
    .map(|s| {
        s.parse::<Reference>()
            .map(|r| format!("ok {r}"))
            .unwrap_or_else(|e| e.to_string())
    })
    .collect();
    insta::assert_snapshot!(errs.join("\n"));
}

#[test]
fn digests_validate() -> Result {
    let d = Digest::sha256("0".repeat(64))?;
    assert_eq!(d.short(), "000000000000");
    assert!(Digest::sha256("0".repeat(63)).is_err());
    assert!(Digest::sha256("A".repeat(64)).is_err());
    assert!("sha512:".to_owned().parse::<Digest>().is_err());
    let s: Digest = serde_json::from_str(&format!("\"sha256:{}\"", "1".repeat(64)))?;
    assert_eq!(
        serde_json::to_string(&s)?,
        format!("\"sha256:{}\"", "1".repeat(64))
    );
    Ok(())
}

#[test]
fn app_names_are_dns_labels() {
    for ok in ["a", "hello", "my-app-2", &"a".repeat(63)] {
        assert!(ok.parse::<AppName>().is_ok(), "{ok} should be valid");
    }
    let errs: Vec<String> = [
        "",
        "../x",
        "Hello",
        &"a".repeat(64),
        "-x",
        "x-",
        "9lives",
        "a_b",
        "a.b",
    ]
    .iter()
    .map(|s| {
        s.parse::<AppName>()
            .map(|_| "ok".to_owned())
            .unwrap_or_else(|e| e.to_string())
    })
    .collect();
    insta::assert_snapshot!(errs.join("\n"));
}

#[test]
fn release_versions_and_config_changes() -> Result {
    assert_eq!("v12".parse::<ReleaseVersion>()?.number(), 12);
    assert!("v0".parse::<ReleaseVersion>().is_err());
    assert!("v+1".parse::<ReleaseVersion>().is_err());
    assert!("latest".parse::<ReleaseVersion>().is_err());
    // A ledger numbers its next release from its newest one.
    assert_eq!(ReleaseVersion::next_after(None), ReleaseVersion::FIRST);
    assert_eq!(
        ReleaseVersion::next_after(Some("v12".parse()?)).to_string(),
        "v13"
    );

    let mut vars = ConfigVars::default();
    vars.set("A", "1")?;
    let change = ConfigChange::parse_assignments(["B=x=y", "A=2"])?;
    let next = change.apply(&vars)?;
    assert_eq!(next.get("A"), Some("2"));
    assert_eq!(next.get("B"), Some("x=y"));
    let unset = ConfigChange::unset(["MISSING"]);
    let err = unset
        .apply(&next)
        .map(|_| ())
        .map_err(|e| (e.to_string(), e.hint()));
    assert_eq!(
        err,
        Err((
            "config var MISSING is not set, so it cannot be unset: check the name against the vars that are set".into(),
            Some("list the set vars with `hephy config list`".into())
        ))
    );
    assert!(ConfigChange::parse_assignments(["NOEQUALS"]).is_err());
    assert!(ConfigChange::parse_assignments(["PORT=1"]).is_err());
    Ok(())
}
