use std::time::Duration;

use hephy_core::{AppConfig, BackendChoice, Egress, Platform, PlatformFailurePolicy, Strategy};
use serde::Deserialize;

use crate::Result;

#[test]
fn full_config_parses() -> Result {
    let src = r#"
[build]
backend = "go"
platforms = ["linux/amd64", "linux/arm64", "linux/amd64"]
timeout = "15m"
platform-failure = "publish-successful"
env = { GOFLAGS = "-mod=vendor" }

[build.go]
main = "./cmd/server"

[deploy]
port = 5000
replicas = 3
strategy = "canary"
resources = { memory = "256M", cpus = 0.5, pids = 200 }
egress = "deny"

[deploy.health]
path = "/healthz"
timeout = "30s"
interval = "250ms"
"#;
    let c = AppConfig::from_toml("hephy.toml", src)?;
    assert_eq!(c.build.backend, BackendChoice::Named("go".into()));
    assert_eq!(
        c.build.platforms,
        vec![Platform::linux_amd64(), Platform::linux_arm64()]
    );
    assert_eq!(c.build.timeout, Some(Duration::from_secs(900)));
    assert_eq!(
        c.build.platform_failure,
        PlatformFailurePolicy::PublishSuccessful
    );
    assert_eq!(
        c.build.env.get("GOFLAGS").map(String::as_str),
        Some("-mod=vendor")
    );
    assert_eq!(c.deploy.port, 5000);
    assert_eq!(c.deploy.replicas, 3);
    assert_eq!(c.deploy.strategy, Strategy::Canary);
    assert_eq!(c.deploy.resources.memory, Some(256 << 20));
    assert_eq!(c.deploy.resources.pids, Some(200));
    assert_eq!(c.deploy.egress, Egress::Deny);
    assert_eq!(c.deploy.health.path.as_deref(), Some("/healthz"));
    assert_eq!(c.deploy.health.interval, Duration::from_millis(250));

    #[derive(Deserialize, Default, Debug, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Go {
        main: Option<String>,
    }
    let go: Go = c.build.backend_settings("go")?;
    assert_eq!(go.main.as_deref(), Some("./cmd/server"));
    let none: Go = c.build.backend_settings("files")?;
    assert_eq!(none, Go::default());
    Ok(())
}

#[test]
fn empty_config_is_all_defaults() -> Result {
    let c = AppConfig::from_toml("hephy.toml", "")?;
    assert_eq!(c, AppConfig::default());
    assert_eq!(c.build.platforms, vec![Platform::host()]);
    assert_eq!(c.deploy.port, 8080);
    assert_eq!(c.deploy.egress, Egress::Allow);
    let dir = tempfile::tempdir()?;
    assert_eq!(AppConfig::load(dir.path())?, AppConfig::default());
    std::fs::write(dir.path().join("hephy.toml"), "[deploy]\nport = 9000\n")?;
    assert_eq!(AppConfig::load(dir.path())?.deploy.port, 9000);
    Ok(())
}

#[test]
fn config_errors_give_line_column_and_fix() {
    let cases = [
        "[deploy]\nprot = 5000\n",
        "[build]\nplatfroms = [\"linux/amd64\"]\n",
        "[build]\nplatforms = [\"linux/sparc\"]\n",
        "[build]\nplatforms = []\n",
        "[build]\ntimeout = \"ten minutes\"\n",
        "[build]\nplatform-failure = \"ignore\"\n",
        "[deploy]\nstrategy = \"yolo\"\n",
        "[deploy.health]\npath = \"healthz\"\n",
        "[deploy.health]\npaht = \"/healthz\"\n",
        "[deploy]\nresources = { mem = \"1G\" }\n",
        "[deploy.resources]\ncpu = 1\n",
        "[deploy]\nport = 70000\n",
        "[deploy]\nresources = { memory = \"lots\" }\n",
        "[deplyo]\nport = 1\n",
        "[build]\nnetwork = \"off\"\n",
        "this is not toml",
    ];
    let out: Vec<String> = cases
        .iter()
        .map(|src| match AppConfig::from_toml("hephy.toml", src) {
            Ok(_) => format!("{src:?} => ok"),
            Err(e) => format!("{src:?}\n  => {e}"),
        })
        .collect();
    insta::assert_snapshot!(out.join("\n"));
}

#[test]
fn backend_table_errors_name_the_table() -> Result {
    #[derive(Deserialize, Default, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Go {
        main: Option<String>,
    }
    let c = AppConfig::from_toml(
        "hephy.toml",
        "[build]\nbackend = \"go\"\n\n[build.go]\nmian = \"x\"\n",
    )?;
    let err = c
        .build
        .backend_settings::<Go>("go")
        .map(|_| ())
        .map_err(|e| e.to_string());
    insta::assert_snapshot!(err.err().unwrap_or_default());
    Ok(())
}

#[test]
fn build_network_is_on_unless_turned_off() -> Result {
    assert!(AppConfig::default().build.network);
    let c = AppConfig::from_toml("hephy.toml", "[build]\nnetwork = false\n")?;
    assert!(!c.build.network);
    Ok(())
}

/// hephy.toml comes from a push: a link out of the repository, a device or a huge file is
/// refused before it is read.
#[test]
fn load_refuses_a_hephy_toml_that_is_not_a_small_file_of_the_repository() -> Result {
    let refusal = |files: &dyn Fn(&std::path::Path) -> std::io::Result<()>| -> Result<String> {
        let dir = tempfile::tempdir()?;
        files(dir.path())?;
        Ok(match AppConfig::load(dir.path()) {
            Ok(_) => "loaded".to_owned(),
            Err(e) => e.to_string(),
        })
    };
    let out = [
        refusal(&|d| std::os::unix::fs::symlink("/dev/zero", d.join("hephy.toml")))?,
        refusal(&|d| std::os::unix::fs::symlink("/etc/hostname", d.join("hephy.toml")))?,
        refusal(&|d| std::fs::create_dir(d.join("hephy.toml")))?,
        refusal(&|d| std::fs::write(d.join("hephy.toml"), "#".repeat(3 << 20)))?,
        refusal(&|d| std::fs::write(d.join("hephy.toml"), b"\xff\xfe"))?,
        // A link to a file of the repository is fine.
        refusal(&|d| {
            std::fs::write(d.join("real.toml"), "[deploy]\nport = 9000\n")?;
            std::os::unix::fs::symlink("real.toml", d.join("hephy.toml"))
        })?,
    ];
    insta::assert_snapshot!(out.join("\n"));
    Ok(())
}
