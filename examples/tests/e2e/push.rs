//! The whole product: a registry, hephy-server, the CLI, pushes over HTTP and SSH, a switch under
//! load, config, rollback, and `hephy build` giving the server's digest.

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use hephy_testing::TestRegistry;

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

/// Replaces what changes between runs (ports, digests, commits, durations, probe counts) and
/// sorts the sections where platforms and blob uploads run concurrently.
fn normalize(transcript: &str, server: &Server, registry: &TestRegistry) -> String {
    let text = transcript
        .replace(&server.http.to_string(), "[server]")
        .replace(&registry.addr().to_string(), "[registry]")
        .replace(&server.token, "[token]");
    let rules: [(&str, &str); 10] = [
        (r"sha256:[0-9a-f]{64}", "[digest]"),
        // Sizes depend on the Go toolchain that built the app.
        (r"\(\d+ bytes of binary\)", "([size] bytes of binary)"),
        (r"\b\d+(\.\d+)? (B|kB|MB|GB)\b", "[size]"),
        (r"git-[0-9a-f]{7}", "git-[commit]"),
        (r"\b[0-9a-f]{7,40}\b", "[hex]"),
        (r"127\.0\.0\.1:\d+", "127.0.0.1:[port]"),
        (r"port \d+", "port [port]"),
        (
            r"\b\d+(\.\d+)?(ms|s)\b|\b\d+ ms\b|\b\d+m\d+s\b",
            "[elapsed]",
        ),
        (r"\(\d+ probe\(s\)\)", "([n] probes)"),
        (r"\s+$", ""),
    ];
    let rules: Vec<(regex::Regex, &str)> = rules
        .iter()
        .filter_map(|(re, to)| regex::Regex::new(re).ok().map(|r| (r, *to)))
        .collect();
    let volatile = |l: &str| {
        l.contains("... still")
            || l.contains("health probe ")
            || l.contains("unpacked in ")
            || [
                "Enumerating",
                "Counting",
                "Delta compression",
                "Compressing",
                "Writing objects",
                "Total ",
            ]
            .iter()
            .any(|p| l.starts_with(p))
            || l.trim().is_empty()
    };
    let mut out: Vec<String> = vec![];
    let mut block: Option<Vec<String>> = None;
    for line in text.lines().filter(|l| !volatile(l)) {
        let mut l = line.to_owned();
        for (re, to) in &rules {
            l = re.replace_all(&l, *to).into_owned();
        }
        let ends_block = l.contains("-----> Publishing") || l.contains("-----> Publish done");
        if ends_block {
            if let Some(mut b) = block.take() {
                b.sort();
                out.append(&mut b);
            }
        }
        match &mut block {
            Some(b) => b.push(l.clone()),
            None => out.push(l.clone()),
        }
        if l.contains("-----> Detection done") || l.contains("-----> Publishing") {
            block = Some(vec![]);
        }
    }
    if let Some(mut b) = block {
        b.sort();
        out.append(&mut b);
    }
    out.join("\n")
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
    let created = String::from_utf8_lossy(&created.stdout)
        .replace(&server.http.to_string(), "[server]")
        .replace(&server.ssh.to_string(), "[ssh]");
    insta::assert_snapshot!("apps_create", created);
    let key = home.join("id_ed25519");
    run(Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "ada@e2e", "-f"])
        .arg(&key))?;
    let added = run(hephy(home)
        .args(["keys", "add"])
        .arg(key.with_extension("pub")))?;
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
    assert!(
        transcript.contains(&app_url),
        "the push ends with the URL {app_url}:\n{transcript}"
    );
    insta::assert_snapshot!("first_push", normalize(&transcript, server, registry));
    wait_for(&app_url, "hello from v1")?;

    // The registry holds one index with both platforms.
    let repository = format!("{}/{APP}", registry.addr());
    let tags = hephy_testing::skopeo_list_tags(&repository, None)?;
    assert_eq!(tags.len(), 1, "{tags:?}");
    let index = hephy_testing::skopeo_inspect_raw(&format!("{repository}:{}", tags[0]), None)?;
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
    let pushed = run(git(&repo).env("GIT_SSH_COMMAND", &ssh).args([
        "push",
        &format!("ssh://git@{}/{APP}.git", server.ssh),
        "main",
    ]))?;
    wait_for(&app_url, "hello from v2")?;
    stop.store(true, Ordering::SeqCst);
    let errors = load.join().map_err(|_| "load thread panicked")?;
    let ssh_transcript = String::from_utf8_lossy(&pushed.stderr);
    assert!(
        ssh_transcript.contains("[linux/arm64] "),
        "{ssh_transcript}"
    );
    assert!(ok.load(Ordering::SeqCst) > 20, "the load loop ran");
    assert_eq!(
        failed.load(Ordering::SeqCst),
        0,
        "requests failed across the switch: {errors:?}"
    );

    // Config makes a release the app sees.
    let set = run(hephy(home).args(["config:set", "GREETING=hi", "--app", APP]))?;
    assert!(
        String::from_utf8_lossy(&set.stdout).contains("v3"),
        "{:?}",
        set
    );
    wait_for(&app_url, "hi from v2")?;
    let listed = run(hephy(home).args(["config", "list", "--app", APP]))?;
    assert_eq!(
        String::from_utf8_lossy(&listed.stdout).trim(),
        "GREETING=hi"
    );

    // Rollback restores v1's image and config.
    run(hephy(home).args(["rollback", "v1", "--app", APP]))?;
    wait_for(&app_url, "hello from v1")?;
    let releases =
        String::from_utf8_lossy(&run(hephy(home).args(["releases", "--app", APP]))?.stdout)
            .into_owned();
    let causes: Vec<String> = releases
        .lines()
        .map(|l| {
            l.split("  ")
                .last()
                .unwrap_or_default()
                .split(" by ")
                .next()
                .unwrap_or_default()
                .to_owned()
        })
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
    let built = run(hephy(home).current_dir(&repo).args([
        "build",
        "--app",
        APP,
        "--registry",
        &registry.addr().to_string(),
        "--insecure-registry",
    ]))?;
    let built_ref = String::from_utf8_lossy(&built.stdout).trim().to_owned();
    let digest = |r: &str| r.split('@').nth(1).map(str::to_owned);
    assert_eq!(
        digest(&built_ref),
        digest(&v2_image),
        "hephy build gave {built_ref}, the server built {v2_image}"
    );

    // An image deploy names an image of an app the caller may push to; any other registry is
    // refused, naming the admin's flag.
    let deployed = run(hephy(home).args(["deploy", "--image", &built_ref, "--app", APP]))?;
    assert!(
        String::from_utf8_lossy(&deployed.stdout).contains("v5"),
        "{deployed:?}"
    );
    let foreign = format!("registry.example/private/db@sha256:{}", "1".repeat(64));
    let refused = hephy(home)
        .args(["deploy", "--image", &foreign, "--app", APP])
        .output()?;
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && err.contains("--allow-image-registry registry.example"),
        "{err}"
    );

    // The build log of the last push is kept.
    let log = run(hephy(home).args(["logs", "--build", "--app", APP]))?;
    assert!(String::from_utf8_lossy(&log.stdout).contains("[linux/amd64]"));
    Ok(())
}
