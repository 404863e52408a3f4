//! The adversarial suite: every attack of SECURITY.md's threat model that a push can carry, sent
//! through the real hephy-server over HTTP. Each push is refused or contained; nothing secret
//! (the admin token, the server's environment) reaches the push log; the server keeps answering;
//! and a bystander app keeps serving with zero failed requests throughout.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::support::{get, git, hephy, run, wait_for, Server};
use crate::Result;

/// A value only the server's environment holds: it must never reach a build.
const CANARY: &str = "canary-7f3b9c1e-registry-password";

/// An app whose repository is `files` (path, content); a content starting with `-> ` is a
/// symlink to the rest.
struct Attack {
    name: &'static str,
    files: Vec<(&'static str, String)>,
    /// Each must appear in the push output (the refusal names the key and the fix); empty when
    /// the push may build, as long as it is contained.
    refusal: &'static [&'static str],
}

fn attacks(marker: &Path, data: &Path) -> Vec<Attack> {
    let token_path = data.join("admin-token");
    let evil = format!(
        "#!/bin/sh\ntouch {}\ncat {}\nenv\n",
        marker.display(),
        token_path.display()
    );
    let go_mod = || ("go.mod", "module example.com/a\n\ngo 1.19\n".to_owned());
    let main_go = || ("main.go", "package main\n\nfunc main() {}\n".to_owned());
    vec![
        Attack {
            name: "toolchain-from-the-repository",
            files: vec![
                go_mod(),
                main_go(),
                ("evil.sh", evil.clone()),
                (
                    "hephy.toml",
                    "[build]\nbackend = \"go\"\n\n[build.go]\ntoolchain = \"./evil.sh\"\n".into(),
                ),
            ],
            refusal: &["[build.go] toolchain"],
        },
        Attack {
            name: "files-dir-is-the-host-root",
            files: vec![(
                "hephy.toml",
                "[build]\nbackend = \"files\"\n\n[build.files]\ndir = \"/\"\n".into(),
            )],
            refusal: &["[build.files] dir"],
        },
        Attack {
            name: "hephy-toml-is-dev-zero",
            files: vec![go_mod(), main_go(), ("hephy.toml", "-> /dev/zero".into())],
            refusal: &["hephy.toml"],
        },
        Attack {
            name: "go-mod-is-dev-zero",
            files: vec![("go.mod", "-> /dev/zero".into()), main_go()],
            refusal: &["go.mod"],
        },
        Attack {
            name: "dockerfile-context-links-to-the-host-root",
            files: vec![
                ("Dockerfile", "FROM scratch\nCOPY . /\n".into()),
                ("ctx", "-> /".into()),
                (
                    "hephy.toml",
                    "[build.dockerfile]\ncontext = \"ctx\"\n".into(),
                ),
            ],
            refusal: &["[build.dockerfile] context"],
        },
        Attack {
            name: "go-build-constraint-bomb",
            files: vec![
                go_mod(),
                (
                    "main.go",
                    format!(
                        "//go:build {}linux\n\npackage main\n\nfunc main() {{}}\n",
                        "!".repeat(200_000)
                    ),
                ),
            ],
            refusal: &[],
        },
        Attack {
            name: "cargo-build-script-reads-the-host",
            files: vec![
                (
                    "Cargo.toml",
                    "[package]\nname = \"a\"\nversion = \"0.1.0\"\nedition = \"2021\"\n".into(),
                ),
                ("src/main.rs", "fn main() {}\n".into()),
                (
                    "build.rs",
                    format!(
                        r#"fn main() {{
    let _ = std::fs::write({marker:?}, "x");
    let token = std::fs::read_to_string({token:?}).unwrap_or_default();
    println!("cargo:warning=token={{token}}");
    for (k, v) in std::env::vars() {{
        println!("cargo:warning=env {{k}}={{v}}");
    }}
}}
"#,
                        marker = marker.display().to_string(),
                        token = token_path.display().to_string(),
                    ),
                ),
            ],
            refusal: &[],
        },
    ]
}

pub(crate) fn write_repo(dir: &Path, files: &[(&str, String)]) -> Result {
    for (path, content) in files {
        let p = dir.join(path);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent)?;
        }
        match content.strip_prefix("-> ") {
            Some(target) => std::os::unix::fs::symlink(target, &p)?,
            None => std::fs::write(&p, content)?,
        }
        if path.ends_with(".sh") {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755))?;
        }
    }
    Ok(())
}

/// Creates `app`, commits `dir` and pushes it; whether the push went through, and its output.
pub(crate) fn push(server: &Server, home: &Path, dir: &Path, app: &str) -> Result<(bool, String)> {
    run(hephy(home).args(["apps", "create", app]))?;
    run(git(dir).args(["init", "-q", "-b", "main"]))?;
    run(git(dir).args(["add", "-A"]))?;
    run(git(dir).args(["commit", "-qm", "attack"]))?;
    let remote = format!("http://admin:{}@{}/{app}.git", server.token, server.http);
    let out = git(dir).args(["push", &remote, "main"]).output()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok((out.status.success(), text))
}

pub(crate) const BYSTANDER: &str = r#"package main

import (
	"fmt"
	"net/http"
	"os"
)

func main() {
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, "still here") })
	http.ListenAndServe(":"+os.Getenv("PORT"), nil)
}
"#;

/// Requests the bystander's URL in a loop until stopped; counts answers and failures.
pub(crate) struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    failed: Arc<AtomicUsize>,
    thread: std::thread::JoinHandle<Vec<String>>,
}

impl Load {
    pub(crate) fn start(url: String) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (s, o, f) = (stop.clone(), ok.clone(), failed.clone());
        let thread = std::thread::spawn(move || {
            let mut errors = Vec::new();
            while !s.load(Ordering::SeqCst) {
                match get(&url) {
                    Ok(b) if b == "still here" => o.fetch_add(1, Ordering::SeqCst),
                    other => {
                        errors.push(format!("{other:?}"));
                        f.fetch_add(1, Ordering::SeqCst)
                    }
                };
                std::thread::sleep(Duration::from_millis(20));
            }
            errors
        });
        Load {
            stop,
            ok,
            failed,
            thread,
        }
    }

    pub(crate) fn finish(self) -> Result<(usize, usize, Vec<String>)> {
        self.stop.store(true, Ordering::SeqCst);
        let errors = self.thread.join().map_err(|_| "load thread panicked")?;
        Ok((
            self.ok.load(Ordering::SeqCst),
            self.failed.load(Ordering::SeqCst),
            errors,
        ))
    }
}

#[test]
fn attacks_through_the_real_server_are_refused_or_contained() -> Result {
    let tmp = tempfile::tempdir()?;
    let server = Server::start_with_env(
        tmp.path(),
        &["--deploy-branch", "main"],
        &[("HEPHY_REGISTRY_PASSWORD", CANARY)],
    )?;
    let home = tmp.path().join("home");
    std::fs::create_dir_all(&home)?;
    run(hephy(&home).args(["login", &server.url(), "--token", &server.token]))?;

    // The bystander: an app that must keep serving through every attack.
    let by = tmp.path().join("bystander");
    std::fs::create_dir_all(&by)?;
    write_repo(
        &by,
        &[
            ("go.mod", "module example.com/by\n\ngo 1.19\n".into()),
            ("main.go", BYSTANDER.into()),
        ],
    )?;
    let (ok, out) = push(&server, &home, &by, "e2e-bystander")?;
    assert!(ok, "the bystander deploys:\n{out}");
    let info = run(hephy(&home).args(["--app", "e2e-bystander", "open"]))?;
    let url = String::from_utf8_lossy(&info.stdout).trim().to_owned();
    wait_for(&url, "still here")?;
    let load = Load::start(url);

    let marker: PathBuf = tmp.path().join("attack-marker");
    let mut report = Vec::new();
    for (i, attack) in attacks(&marker, &server.data).into_iter().enumerate() {
        let dir = tmp.path().join(attack.name);
        std::fs::create_dir_all(&dir)?;
        write_repo(&dir, &attack.files)?;
        let app = format!("e2e-attack-{i}");
        let (pushed, out) = push(&server, &home, &dir, &app)?;
        let name = attack.name;
        if !attack.refusal.is_empty() {
            assert!(!pushed, "{name}: the push must be refused:\n{out}");
            // `hephy check` in the checkout refuses it with the same words, before any push.
            let checked = hephy(&home).current_dir(&dir).arg("check").output()?;
            let said = format!(
                "{}{}",
                String::from_utf8_lossy(&checked.stdout),
                String::from_utf8_lossy(&checked.stderr)
            );
            assert!(
                !checked.status.success(),
                "{name}: hephy check passed:\n{said}"
            );
            for needle in attack.refusal {
                assert!(
                    out.contains(needle),
                    "{name}: the refusal names {needle:?}:\n{out}"
                );
                assert!(
                    said.contains(needle),
                    "{name}: hephy check names {needle:?}:\n{said}"
                );
            }
        }
        assert!(
            !out.contains(&server.token),
            "{name}: the admin token leaked:\n{out}"
        );
        assert!(
            !out.contains(CANARY),
            "{name}: the server's environment leaked:\n{out}"
        );
        assert!(!marker.exists(), "{name}: pushed code wrote on the host");
        let whoami = run(hephy(&home).arg("whoami"));
        assert!(
            whoami.is_ok(),
            "{name}: the server stopped answering: {whoami:?}\n{}",
            server.logs()
        );
        report.push(format!(
            "{name}: {}",
            if pushed {
                "built, contained"
            } else {
                "refused"
            }
        ));
    }

    let (ok, failed, errors) = load.finish()?;
    assert!(ok > 20, "the bystander load ran ({ok} answers)");
    assert_eq!(failed, 0, "the bystander failed requests: {errors:?}");
    eprintln!("{}", report.join("\n"));
    Ok(())
}
