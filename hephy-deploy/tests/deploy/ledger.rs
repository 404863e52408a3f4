//! The release ledger on disk.

use std::time::SystemTime;

use hephy_core::{AppName, ConfigVars, DeployConfig, NewRelease, ReleaseCause, ReleaseVersion};
use hephy_deploy::ledger::{write_atomic, Ledger, LedgerError};

use crate::support::Result;

fn image() -> Result<hephy_core::Reference> {
    Ok("hephy.local/hello:v1@sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824".parse()?)
}

fn record(ledger: &Ledger, app: &AppName, greeting: &str) -> Result<ReleaseVersion> {
    let mut vars = ConfigVars::default();
    vars.set("GREETING", greeting)?;
    let cause = ReleaseCause::Push {
        commit: "0123456789abcdef".into(),
        author: "ada".into(),
    };
    let release = NewRelease::new(app.clone(), image()?, DeployConfig::default(), cause)
        .with_config(vars)
        .into_release(ledger.next_version(app)?, SystemTime::now(), None);
    ledger.record(&release)?;
    Ok(release.version)
}

#[test]
fn releases_are_numbered_and_survive_reopening() -> Result {
    let dir = tempfile::tempdir()?;
    let app: AppName = "hello".parse()?;
    {
        let ledger = Ledger::open(dir.path())?;
        ledger.create_app(&app)?;
        assert_eq!(record(&ledger, &app, "one")?.to_string(), "v1");
        assert_eq!(record(&ledger, &app, "two")?.to_string(), "v2");
    }
    let ledger = Ledger::open(dir.path())?;
    let releases = ledger.releases(&app)?;
    let got: Vec<(String, Option<&str>)> = releases
        .iter()
        .map(|r| (r.version.to_string(), r.config.get("GREETING")))
        .collect();
    assert_eq!(
        got,
        [
            ("v1".to_string(), Some("one")),
            ("v2".to_string(), Some("two"))
        ]
    );
    // The files are hephy-core's Release JSON.
    let text = std::fs::read_to_string(dir.path().join("hello/releases/v2.json"))?;
    let parsed: hephy_core::Release = serde_json::from_str(&text)?;
    assert_eq!(parsed, releases[1]);

    let err = ledger
        .record(&releases[0])
        .err()
        .ok_or("recorded v1 twice")?;
    assert!(matches!(err, LedgerError::ReleaseExists { .. }), "{err}");
    Ok(())
}

#[test]
fn ledger_errors_speak_the_library_and_keep_the_cli_advice_apart() -> Result {
    let dir = tempfile::tempdir()?;
    let ledger = Ledger::open(dir.path())?;
    let app: AppName = "hello".parse()?;
    let err = ledger.releases(&app).err().ok_or("read an unknown app")?;
    assert_eq!(
        (err.to_string(), err.hint()),
        (
            "unknown app hello: create the app first".to_owned(),
            Some("run `hephy apps create hello`".to_owned())
        )
    );
    ledger.create_app(&app)?;
    let err = ledger.create_app(&app).err().ok_or("created hello twice")?;
    assert_eq!(
        (err.to_string(), err.hint()),
        (
            "app hello already exists: choose another name, or destroy it first".to_owned(),
            Some("run `hephy apps destroy hello`".to_owned())
        )
    );
    // The next number comes from hephy-core's ReleaseVersion::next_after.
    assert_eq!(ledger.next_version(&app)?, ReleaseVersion::FIRST);
    record(&ledger, &app, "one")?;
    assert_eq!(
        ledger.next_version(&app)?,
        ReleaseVersion::next_after(Some(ReleaseVersion::FIRST))
    );
    Ok(())
}

#[test]
fn leftovers_of_a_crash_are_ignored_and_corruption_is_named() -> Result {
    let dir = tempfile::tempdir()?;
    let ledger = Ledger::open(dir.path())?;
    let app: AppName = "crashy".parse()?;
    ledger.create_app(&app)?;
    record(&ledger, &app, "one")?;
    // A temporary file from a write that never got renamed.
    std::fs::write(
        dir.path().join("crashy/releases/.v2.json.tmp-1-0"),
        "{\"half",
    )?;
    // A directory of an app whose creation never finished.
    std::fs::create_dir_all(dir.path().join("halfway/releases"))?;
    assert_eq!(ledger.apps()?, vec![app.clone()]);
    assert_eq!(ledger.next_version(&app)?.to_string(), "v2");

    write_atomic(&dir.path().join("crashy/releases/v2.json"), b"{not json")?;
    let err = ledger
        .releases(&app)
        .err()
        .ok_or("read a corrupt release")?;
    let msg = err.to_string();
    assert!(msg.contains("v2.json is corrupt"), "{msg}");
    assert!(
        msg.contains("restore it from a backup or remove it"),
        "{msg}"
    );
    Ok(())
}

#[test]
fn apps_are_created_once_and_removed_whole() -> Result {
    let dir = tempfile::tempdir()?;
    let ledger = Ledger::open(dir.path())?;
    let app: AppName = "twice".parse()?;
    ledger.create_app(&app)?;
    let err = ledger.create_app(&app).err().ok_or("created twice")?;
    assert!(err.to_string().contains("already exists"), "{err}");
    ledger.write(&app, "router", &serde_json::json!({"port": 1234}))?;
    ledger.remove_app(&app)?;
    assert!(ledger.apps()?.is_empty());
    assert!(!dir.path().join("twice").exists());
    let err = ledger
        .releases(&app)
        .err()
        .ok_or("releases of a removed app")?;
    assert!(err.to_string().contains("unknown app twice"), "{err}");
    Ok(())
}
