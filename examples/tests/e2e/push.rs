//! The whole product: a registry, hephy-server, the CLI, pushes over HTTP and SSH, a switch under
//! load, config, rollback, and `hephy build` giving the server's digest.

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use hephy_backends::testing::TestRegistry;

use crate::support::{get, git, hephy, run, wait_for, Server};
use crate::Result;

const APP: &str = "e2e-hello";

fn write_app(dir: &Path, version: &str) -> Result {
    std::fs::write(dir.join("go.mod"), "module example.com/e2e\n\ngo 1.19\n")?;
    std::fs::write(
        dir.join("main.go"),
        format!(
            r#"package main

import (
	"fmt"
	"net/http"
	"os"
)

const version = "{version}"

func main() {{
	greeting := os.Getenv("GREETING")
	if greeting == "" {{
		greeting = "hello"
	}}
	http.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {{ fmt.Fprintln(w, "ok") }})
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {{
		fmt.Fprintf(w, "%s from %s\n", greeting, version)
	}})
	http.ListenAndServe(":"+os.Getenv("PORT"), nil)
}}
"#
        ),
    )?;
    std::fs::write(
        dir.join("hephy.toml"),
        "[build]\nplatforms = [\"linux/amd64\", \"linux/arm64\"]\n\n[deploy.health]\npath = \"/healthz\"\n",
    )?;
    Ok(())
}

/// Replaces what changes between runs (ports, digests, commits, durations, temp paths).
fn normalize(transcript: &str, server: &Server, registry: &TestRegistry) -> String {
    let mut out = vec![];
    for line in transcript.lines() {
        let line = line.trim_end();
        // git's own progress counters and the keep-alive lines depend on timing.
        if line.contains("still building")
            || line.contains("still ")
            || line.starts_with("remote: Resolving deltas")
            || line.starts_with("Enumerating")
            || line.starts_with("Counting")
            || line.starts_with("Delta compression")
            || line.starts_with("Compressing")
            || line.starts_with("Writing objects")
            || line.starts_with("Total ")
            || line.is_empty()
        {
            continue;
        }
        out.push(line.to_owned());
    }
    let mut text = out.join("\n");
    text = text.replace(&server.http.to_string(), "[server]");
    text = text.replace(&registry.addr().to_string(), "[registry]");
    text = text.replace(&server.token, "[token]");
    regex_lite(&text)
}

/// Normalizes hex ids, durations and ports without a regex dependency.
fn regex_lite(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let mut words = vec![];
        for w in line.split(' ') {
            words.push(normalize_word(w));
        }
        let mut l = words.join(" ");
        // Per-platform build lines interleave; their order is not part of the contract.
        l = l.replace("\t", " ");
        out.push_str(&l);
        out.push('\n');
    }
    // Sort runs of per-platform lines so interleaving does not change the snapshot.
    let lines: Vec<&str> = out.lines().collect();
    let mut sorted: Vec<String> = vec![];
    let mut run: Vec<String> = vec![];
    for l in lines {
        if l.contains("[linux/") {
            run.push(l.to_owned());
        } else {
            run.sort();
            sorted.append(&mut run);
            sorted.push(l.to_owned());
        }
    }
    run.sort();
    sorted.append(&mut run);
    sorted.join("\n")
}

fn normalize_word(w: &str) -> String {
    let mut w = w.to_owned();
    // sha256:<64 hex> anywhere in the word.
    while let Some(i) = w.find("sha256:") {
        let hex: String = w[i + 7..].chars().take_while(|c| c.is_ascii_hexdigit()).collect();
        if hex.len() < 12 {
            break;
        }
        w.replace_range(i..i + 7 + hex.len(), "[digest]");
    }
    // Commit ids and short ids (7 to 40 hex digits with at least one digit and one letter).
    let trimmed: &str = w.trim_matches(|c: char| !c.is_ascii_alphanumeric());
    let is_hex_id = trimmed.len() >= 7
        && trimmed.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        && trimmed.chars().any(|c| c.is_ascii_digit())
        && trimmed.chars().any(|c| c.is_ascii_alphabetic());
    if is_hex_id {
        w = w.replace(trimmed, "[commit]");
    }
    if let Some(rest) = w.strip_prefix("git-") {
        if rest.len() == 7 || rest.starts_with("[commit]") {
            w = "git-[commit]".into();
        }
    }
    // Durations such as 1.23s, 12.3s, 2m05s, and byte counts.
    let d = w.trim_end_matches([',', ')', ';']);
    let is_duration = (d.ends_with('s') && d[..d.len() - 1].chars().all(|c| c.is_ascii_digit() || c == '.' || c == 'm') && d.len() > 1 && d.chars().next().is_some_and(|c| c.is_ascii_digit()))
        || (d.ends_with("ms") && d[..d.len() - 2].chars().all(|c| c.is_ascii_digit()) && d.len() > 2);
    if is_duration {
        w = w.replacen(d, "[elapsed]", 1);
    }
    // Local app ports.
    if let Some(i) = w.find("http://127.0.0.1:") {
        let start = i + "http://127.0.0.1:".len();
        let end = w[start..].find(|c: char| !c.is_ascii_digit()).map_or(w.len(), |e| start + e);
        w.replace_range(start..end, "[port]");
    }
    w
}

#[test]
fn push_to_deploy_end_to_end() -> Result {
    let tmp = tempfile::tempdir()?;
    let registry = TestRegistry::start()?;
    let reg = registry.addr().to_string();
    let server = Server::start(tmp.path(), &["--registry", &reg, "--insecure-registry"])?;
    let home = tmp.path().join("home");
    std::fs::create_dir_all(&home)?;
    let result = scenario(&server, &registry, &home, tmp.path());
    if result.is_err() {
        eprintln!("--- hephy-server log ---\n{}", server.logs());
    }
    result
}

fn scenario(server: &Server, registry: &TestRegistry, home: &Path, tmp: &Path) -> Result {
    // Log in, create the app, add a key.
    run(hephy(home).args(["login", &server.url(), "--token", &server.token]))?;
    let created = run(hephy(home).args(["apps:create", APP]))?;
    let created = String::from_utf8_lossy(&created.stdout).replace(&server.http.to_string(), "[server]").replace(&server.ssh.to_string(), "[ssh]");
    insta::assert_snapshot!("apps_create", created);
    let key = home.join("id_ed25519");
    run(Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-C", "ada@e2e", "-f"]).arg(&key))?;
    let added = run(hephy(home).args(["keys", "add"]).arg(key.with_extension("pub")))?;
    assert!(String::from_utf8_lossy(&added.stdout).contains("SHA256:"));

    // First push, over HTTP.
    let repo = tmp.join("repo");
    std::fs::create_dir_all(&repo)?;
    write_app(&repo, "v1")?;
    run(git(&repo).args(["init", "-q", "-b", "main"]))?;
    run(git(&repo).args(["add", "-A"]))?;
    run(git(&repo).args(["commit", "-qm", "v1"]))?;
    let remote = format!("http://admin:{}@{}/{APP}.git", server.token, server.http);
    let pushed = run(git(&repo).args(["push", &remote, "main"]))?;
    let transcript = String::from_utf8_lossy(&pushed.stderr).into_owned();
    assert!(transcript.contains("[linux/amd64] "), "{transcript}");
    assert!(transcript.contains("[linux/arm64] "), "{transcript}");
    assert!(transcript.contains("v1"), "{transcript}");
    let app_url = String::from_utf8_lossy(&run(hephy(home).args(["open", "--app", APP]))?.stdout)
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned();
    assert!(transcript.contains(&app_url), "the push ends with the URL {app_url}:\n{transcript}");
    insta::assert_snapshot!("first_push", normalize(&transcript, server, registry));
    wait_for(&app_url, "hello from v1")?;

    // The registry holds one index with both platforms.
    let repository = format!("{}/{APP}", registry.addr());
    let tags = hephy_backends::testing::skopeo_list_tags(&repository, None)?;
    assert_eq!(tags.len(), 1, "{tags:?}");
    let index = hephy_backends::testing::skopeo_inspect_raw(&format!("{repository}:{}", tags[0]), None)?;
    let mut archs: Vec<String> = index["manifests"]
        .as_array()
        .ok_or("not an index")?
        .iter()
        .filter_map(|m| m["platform"]["architecture"].as_str().map(str::to_owned))
        .collect();
    archs.sort();
    assert_eq!(archs, ["amd64", "arm64"]);

    // Second push, over SSH, while a client keeps requesting: no request may fail.
    write_app(&repo, "v2")?;
    run(git(&repo).args(["commit", "-qam", "v2"]))?;
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let load = {
        let (stop, ok, failed, url) = (stop.clone(), ok.clone(), failed.clone(), app_url.clone());
        std::thread::spawn(move || {
            let mut errors = vec![];
            while !stop.load(Ordering::SeqCst) {
                match get(&url) {
                    Ok(_) => ok.fetch_add(1, Ordering::SeqCst),
                    Err(e) => {
                        errors.push(e);
                        failed.fetch_add(1, Ordering::SeqCst)
                    }
                };
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            errors
        })
    };
    let ssh = format!(
        "ssh -i {} -p {} -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o IdentitiesOnly=yes -o LogLevel=ERROR",
        key.display(),
        server.ssh.port()
    );
    let pushed = run(git(&repo)
        .env("GIT_SSH_COMMAND", &ssh)
        .args(["push", &format!("ssh://git@{}/{APP}.git", server.ssh), "main"]))?;
    wait_for(&app_url, "hello from v2")?;
    stop.store(true, Ordering::SeqCst);
    let errors = load.join().map_err(|_| "load thread panicked")?;
    let ssh_transcript = String::from_utf8_lossy(&pushed.stderr);
    assert!(ssh_transcript.contains("[linux/arm64] "), "{ssh_transcript}");
    assert!(ok.load(Ordering::SeqCst) > 20, "the load loop ran");
    assert_eq!(failed.load(Ordering::SeqCst), 0, "requests failed across the switch: {errors:?}");

    // Config makes a release the app sees.
    let set = run(hephy(home).args(["config:set", "GREETING=hi", "--app", APP]))?;
    assert!(String::from_utf8_lossy(&set.stdout).contains("v3"), "{:?}", set);
    wait_for(&app_url, "hi from v2")?;
    let listed = run(hephy(home).args(["config", "list", "--app", APP]))?;
    assert_eq!(String::from_utf8_lossy(&listed.stdout).trim(), "GREETING=hi");

    // Rollback restores v1's image and config.
    run(hephy(home).args(["rollback", "v1", "--app", APP]))?;
    wait_for(&app_url, "hello from v1")?;
    let releases = String::from_utf8_lossy(&run(hephy(home).args(["releases", "--app", APP]))?.stdout).into_owned();
    let causes: Vec<String> = releases
        .lines()
        .map(|l| l.split("  ").last().unwrap_or_default().split(" by ").next().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(causes.len(), 4, "{releases}");
    assert!(causes[0].starts_with("rollback to v1"), "{releases}");
    assert!(causes[1].starts_with("config set GREETING"), "{releases}");

    // `hephy build` in the checkout publishes the digest the server built for v2.
    let v2_image = releases
        .lines()
        .find(|l| l.starts_with("v2 "))
        .and_then(|l| l.split_whitespace().find(|w| w.contains("@sha256:")))
        .ok_or("no v2 image")?
        .to_owned();
    let built = run(hephy(home)
        .current_dir(&repo)
        .args(["build", "--app", APP, "--registry", &registry.addr().to_string(), "--insecure-registry"]))?;
    let built_ref = String::from_utf8_lossy(&built.stdout).trim().to_owned();
    let digest = |r: &str| r.split('@').nth(1).map(str::to_owned);
    assert_eq!(digest(&built_ref), digest(&v2_image), "hephy build gave {built_ref}, the server built {v2_image}");

    // The build log of the last push is kept.
    let log = run(hephy(home).args(["logs", "--build", "--app", APP]))?;
    assert!(String::from_utf8_lossy(&log.stdout).contains("[linux/amd64]"));
    Ok(())
}
