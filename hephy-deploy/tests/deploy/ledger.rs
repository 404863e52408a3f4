//! The release ledger on disk.

use std::time::SystemTime;

use hephy_core::fs::{write_atomic, FileMode};
use hephy_core::{AppName, ConfigVars, DeployConfig, NewRelease, ReleaseCause, ReleaseVersion};
use hephy_deploy::ledger::{Ledger, LedgerError};

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

    write_atomic(
        &dir.path().join("crashy/releases/v2.json"),
        b"{not json",
        FileMode::Private,
    )?;
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

#[cfg(unix)]
#[test]
fn every_file_is_owner_only_from_the_start() -> Result {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &std::path::Path| -> Result<u32> {
        Ok(std::fs::metadata(p)?.permissions().mode() & 0o777)
    };
    let tmp = tempfile::tempdir()?;
    let root = tmp.path().join("apps");
    let ledger = Ledger::open(&root)?;
    let app: AppName = "private".parse()?;
    ledger.create_app(&app)?;
    record(&ledger, &app, "a secret greeting")?;
    ledger.write(&app, "router", &serde_json::json!({"port": 1234}))?;
    for dir in ["", "private", "private/releases"] {
        assert_eq!(mode(&root.join(dir))?, 0o700, "directory {dir:?}");
    }
    // Release files hold config vars.
    for file in [
        "private/app.json",
        "private/releases/v1.json",
        "private/router.json",
    ] {
        assert_eq!(mode(&root.join(file))?, 0o600, "{file}");
    }
    Ok(())
}

/// Committed ledgers: `fixtures/ledger-0.1` as hephy 0.1 writes it (made by
/// [`write_the_ledger_fixture`]; keep it when the format grows, since ledgers on disk still
/// hold it, and add one of the new format beside it), and `fixtures/ledger-from-a-newer-version`,
/// the same with fields and files this version does not know.
mod stored {
    use std::path::{Path, PathBuf};
    use std::time::{Duration, SystemTime};

    use hephy_core::{AppConfig, ConfigVars, Release, ReleaseCause, ReleaseVersion};
    use hephy_deploy::ledger::Ledger;
    use serde_json::Value;

    use crate::support::Result;

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/deploy/fixtures")
            .join(name)
    }

    /// A copy of a fixture ledger, so that tests never change the committed files.
    fn copy_of(name: &str, to: &Path) -> Result<Ledger> {
        copy_dir(&fixture(name), to)?;
        Ok(Ledger::open(to)?)
    }

    fn copy_dir(from: &Path, to: &Path) -> Result {
        std::fs::create_dir_all(to)?;
        for entry in std::fs::read_dir(from)? {
            let entry = entry?;
            let dest = to.join(entry.file_name());
            if entry.file_type()?.is_dir() {
                copy_dir(&entry.path(), &dest)?;
            } else {
                std::fs::copy(entry.path(), dest)?;
            }
        }
        Ok(())
    }

    fn json(path: &Path) -> Result<Value> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        Ok(serde_json::from_str(&text)?)
    }

    /// The releases the fixtures hold, built by this version's code: v1 pushed, v2 with a
    /// config var set.
    fn releases() -> Result<Vec<Release>> {
        let config = AppConfig::from_toml(
            "hephy.toml",
            "[deploy]\nport = 5000\nhealth = { path = \"/healthz\" }\n\
             resources = { memory = \"256M\", cpus = 0.5 }\n",
        )?;
        let image = format!(
            "registry.example.com:5000/team/hello:git-0123456@sha256:{}",
            "ab".repeat(32)
        );
        let push = ReleaseCause::Push {
            commit: "0123456789abcdef0123456789abcdef01234567".into(),
            author: "Ada <ada@example.com>".into(),
        };
        // 2024-05-01T12:00:00.123Z
        let created = SystemTime::UNIX_EPOCH + Duration::from_millis(1_714_564_800_123);
        let v1 = hephy_core::NewRelease::new("hello".parse()?, image.parse()?, config.deploy, push)
            .into_release(ReleaseVersion::FIRST, created, None);
        let mut vars = ConfigVars::default();
        vars.set("GREETING", "hello world")?;
        let v2 = v1
            .to_new_release(ReleaseCause::Config {
                set: vec!["GREETING".into()],
                unset: vec![],
            })
            .with_config(vars)
            .into_release(
                v1.version.next(),
                created + Duration::from_secs(60),
                Some(&v1),
            );
        Ok(vec![v1, v2])
    }

    /// Writes `fixtures/ledger-0.1` with this version's code. Run it only when a new format is
    /// meant to be committed: `cargo test -p hephy-deploy --test deploy write_the_ledger_fixture
    /// -- --ignored`, then move the result to a new fixture name and keep the old one.
    #[test]
    #[ignore = "writes the committed fixture"]
    fn write_the_ledger_fixture() -> Result {
        let root = fixture("ledger-0.1");
        let ledger = Ledger::open(&root)?;
        let app: hephy_core::AppName = "hello".parse()?;
        ledger.create_app(&app)?;
        for r in releases()? {
            ledger.record(&r)?;
        }
        // The local deployer's state documents, in the shapes it writes them.
        ledger.write(&app, "router", &serde_json::json!({"port": 40000}))?;
        ledger.write(
            &app,
            "live",
            &serde_json::json!({"version": "v2", "container": "hephy-hello-v2", "port": 40001}),
        )?;
        ledger.write(
            &app,
            "ids",
            &hephy_deploy::runc::IdRange {
                host_first: 1_000_000_000,
                size: 65536,
            },
        )?;
        Ok(())
    }

    #[test]
    fn a_ledger_of_0_1_reads_back_and_this_version_writes_the_same_files() -> Result {
        let tmp = tempfile::tempdir()?;
        let ledger = copy_of("ledger-0.1", &tmp.path().join("old"))?;
        let app: hephy_core::AppName = "hello".parse()?;
        assert_eq!(ledger.apps()?, vec![app.clone()]);
        let expected = releases()?;
        assert_eq!(ledger.releases(&app)?, expected);
        assert_eq!(ledger.next_version(&app)?.to_string(), "v3");
        let live: Option<Value> = ledger.read(&app, "live")?;
        assert_eq!(live.ok_or("no live document")?["version"], "v2");

        // Recorded by this version, the files are the same JSON.
        let fresh = Ledger::open(tmp.path().join("new"))?;
        fresh.create_app(&app)?;
        for r in &expected {
            fresh.record(r)?;
            let name = format!("hello/releases/{}.json", r.version);
            assert_eq!(
                json(&fresh.root().join(&name))?,
                json(&fixture("ledger-0.1").join(&name))?,
                "this version writes {name} differently from 0.1: if that is meant, keep \
                 ledger-0.1 (ledgers on disk still hold it) and add a fixture of the new format"
            );
        }
        let app_json = json(&fixture("ledger-0.1/hello/app.json"))?;
        let fresh_app = json(&fresh.root().join("hello/app.json"))?;
        assert_eq!(
            (app_json["name"].clone(), app_json["created"].is_u64()),
            (fresh_app["name"].clone(), fresh_app["created"].is_u64())
        );
        Ok(())
    }

    #[test]
    fn a_ledger_from_a_newer_version_is_read_and_unknown_fields_are_kept() -> Result {
        let tmp = tempfile::tempdir()?;
        let name = "ledger-from-a-newer-version";
        let ledger = copy_of(name, &tmp.path().join("newer"))?;
        let app: hephy_core::AppName = "hello".parse()?;
        assert_eq!(ledger.apps()?, vec![app.clone()]);
        let read = ledger.releases(&app)?;
        let known = releases()?;
        assert_eq!(read.len(), 3, "v3 is a release made by the newer version");
        for (r, k) in read.iter().zip(&known) {
            assert_eq!(
                (&r.version, &r.image, &r.config, r.deploy.port, &r.cause),
                (&k.version, &k.image, &k.config, k.deploy.port, &k.cause)
            );
        }
        assert_eq!(ledger.next_version(&app)?.to_string(), "v4");
        let router: Option<Value> = ledger.read(&app, "router")?;
        assert_eq!(router.ok_or("no router document")?["port"], 40000);

        // Each release recorded again (a copy of the ledger, a restore) keeps every field.
        let copy = Ledger::open(tmp.path().join("copy"))?;
        copy.create_app(&app)?;
        for r in &read {
            copy.record(r)?;
            let file = format!("hello/releases/{}.json", r.version);
            assert_eq!(
                json(&copy.root().join(&file))?,
                json(&fixture(name).join(&file))?,
                "{file} lost or changed a field on the round trip"
            );
        }
        Ok(())
    }
}
