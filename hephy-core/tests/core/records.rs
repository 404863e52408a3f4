//! Stored records: releases as ledgers keep them, read by this version whether an earlier or a
//! later one wrote them.
//!
//! `fixtures/release-0.1.json` is a release as hephy 0.1 writes it; keep it when the format grows
//! (ledgers still hold it) and add a fixture of the new format beside it.
//! `fixtures/release-from-a-newer-version.json` is the same release with fields this version does
//! not know at every level a stored release has settings: the release, `deploy`, `deploy.health`,
//! `deploy.resources` (and `cause`).

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use hephy_core::{AppConfig, ConfigVars, Release, ReleaseCause, ReleaseVersion};
use serde_json::Value;

use crate::Result;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/core/fixtures")
        .join(name)
}

fn read(name: &str) -> Result<String> {
    let path = fixture(name);
    std::fs::read_to_string(&path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()).into())
}

/// The release the fixtures hold, built by this version's code.
fn expected() -> Result<Release> {
    let config = AppConfig::from_toml(
        "hephy.toml",
        r#"
[deploy]
port = 5000
replicas = 2
strategy = "canary"
health = { path = "/healthz", timeout = "30s", interval = "2s" }
resources = { memory = "256M", cpus = 0.5 }
"#,
    )?;
    let mut vars = ConfigVars::default();
    vars.set("GREETING", "hello world")?;
    let image = format!(
        "registry.example.com:5000/team/hello:git-0123456@sha256:{}",
        "ab".repeat(32)
    );
    let cause = ReleaseCause::Push {
        commit: "0123456789abcdef0123456789abcdef01234567".into(),
        author: "Ada <ada@example.com>".into(),
    };
    // 2024-05-01T12:00:00.123Z
    let created = SystemTime::UNIX_EPOCH + Duration::from_millis(1_714_564_800_123);
    Ok(
        hephy_core::NewRelease::new("hello".parse()?, image.parse()?, config.deploy, cause)
            .with_config(vars)
            .into_release(ReleaseVersion::new(3).ok_or("v3")?, created, None),
    )
}

#[test]
fn a_release_of_0_1_reads_as_the_release_this_version_builds() -> Result {
    let text = read("release-0.1.json")?;
    let release: Release = serde_json::from_str(&text)?;
    assert_eq!(release, expected()?);
    assert_eq!(
        serde_json::to_value(&release)?,
        serde_json::from_str::<Value>(&text)?,
        "this version writes releases differently from 0.1: if that is meant, keep \
         release-0.1.json (old ledgers still hold it) and add a fixture of the new format"
    );
    Ok(())
}

#[test]
fn a_release_from_a_newer_version_is_read_and_its_unknown_fields_are_written_back() -> Result {
    let text = read("release-from-a-newer-version.json")?;
    let stored: Value = serde_json::from_str(&text)?;
    let release: Release = serde_json::from_str(&text)?;

    // What this version knows reads as usual.
    let known = expected()?;
    assert_eq!(
        (
            &release.app,
            release.version,
            &release.image,
            &release.config
        ),
        (&known.app, known.version, &known.image, &known.config)
    );
    assert_eq!(
        (
            release.deploy.port,
            release.deploy.replicas,
            release.deploy.strategy
        ),
        (
            known.deploy.port,
            known.deploy.replicas,
            known.deploy.strategy
        )
    );
    assert_eq!(release.deploy.health.path, known.deploy.health.path);
    assert_eq!(
        release.deploy.resources.memory,
        known.deploy.resources.memory
    );
    assert_eq!(
        (&release.cause, release.created),
        (&known.cause, known.created)
    );
    assert_ne!(
        release, known,
        "the unknown fields are part of the release, not dropped"
    );

    // Written back, every field is still there, except inside `cause`: its variants' fields are
    // public, so unknown ones are tolerated but cannot be kept.
    let mut written = serde_json::to_value(&release)?;
    let mut want = stored.clone();
    let dropped = want["cause"]
        .as_object_mut()
        .and_then(|c| c.remove("pull-request"));
    assert!(
        dropped.is_some(),
        "the fixture has an unknown field in cause"
    );
    assert_eq!(written, want);

    // A rollback copies the deploy settings into a new release, unknown fields included.
    let rollback = release
        .to_new_release(ReleaseCause::Rollback {
            to: release.version,
        })
        .into_release(release.version.next(), release.created, Some(&release));
    let rolled = serde_json::to_value(&rollback)?;
    assert_eq!(rolled["deploy"], stored["deploy"]);
    assert_eq!(
        rolled.get("signature"),
        None,
        "release-level fields describe that release only"
    );

    // And a text-level round trip keeps them too.
    let again: Release = serde_json::from_str(&serde_json::to_string_pretty(&release)?)?;
    assert_eq!(again, release);
    written["deploy"]["health"]["grace-period"] = "changed".into();
    assert_ne!(written, want, "the comparison above sees nested fields");
    Ok(())
}

#[test]
fn hephy_toml_still_refuses_what_a_stored_release_keeps() -> Result {
    let text = read("release-from-a-newer-version.json")?;
    let stored: Value = serde_json::from_str(&text)?;
    let key = stored["deploy"]["resources"]
        .as_object()
        .and_then(|r| r.keys().find(|k| !["memory", "cpus"].contains(&k.as_str())))
        .ok_or("the fixture has an unknown field in deploy.resources")?;
    let err = AppConfig::from_toml("hephy.toml", &format!("[deploy.resources]\n{key} = 1\n"))
        .map(|_| ())
        .map_err(|e| e.to_string());
    assert_eq!(
        err,
        Err(format!(
            "hephy.toml:2:1: unknown field `{key}`, expected one of `memory`, `cpus`, `pids`"
        ))
    );
    Ok(())
}
