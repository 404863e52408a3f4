//! Choosing and validating: `explain` (what `hephy check` prints) on real repositories, and
//! the refusals it reports.

use std::path::Path;

use hephy_backends::check::{check_go_cgo, explain};
use hephy_backends::default_backends;
use hephy_core::{Backend, BuildContext};

use crate::support::{env, repo};

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn host_free(s: String) -> String {
    s.replace(&hephy_core::Platform::host().to_string(), "[HOST]")
}

async fn explained(dir: &Path) -> Result<String, Box<dyn std::error::Error>> {
    let ctx = BuildContext::open(dir)?;
    Ok(host_free(
        explain(&ctx, &default_backends(&env()?)).await.to_string(),
    ))
}

const GO_MAIN: &str = "package main\n\nimport \"fmt\"\n\nfunc main() { fmt.Println(\"hi\") }\n";

#[tokio::test]
async fn a_dockerfile_wins_over_go_mod() -> TestResult {
    let dir = repo(&[
        ("Dockerfile", "FROM scratch\nCOPY app /app\n"),
        ("go.mod", "module example.com/hello\n\ngo 1.19\n"),
        ("main.go", GO_MAIN),
    ])?;
    insta::assert_snapshot!(explained(dir.path()).await?);
    Ok(())
}

#[tokio::test]
async fn a_named_backend_is_used_and_unknown_names_are_explained() -> TestResult {
    let dir = repo(&[
        ("go.mod", "module example.com/hello\n"),
        ("main.go", GO_MAIN),
        ("hephy.toml", "[build]\nbackend = \"nodejs\"\n"),
    ])?;
    let ctx = BuildContext::open(dir.path())?;
    let e = explain(&ctx, &default_backends(&env()?)).await;
    assert!(!e.ok());
    insta::assert_snapshot!(host_free(e.to_string()));
    Ok(())
}

#[tokio::test]
async fn refuses_go_importing_c_with_cgo_off() -> TestResult {
    let dir = repo(&[
        ("go.mod", "module example.com/cgo\n\ngo 1.19\n"),
        ("main.go", GO_MAIN),
        (
            "native/native.go",
            "package native\n\n/*\n#include <stdio.h>\n*/\nimport \"C\"\n\nfunc Hello() { C.puts(C.CString(\"hi\")) }\n",
        ),
        // A cgo twin that only builds with cgo on, and a Windows file: neither counts.
        (
            "native/twin.go",
            "//go:build cgo && linux\n\npackage native\n\nimport (\n\t\"fmt\"\n\t\"C\"\n)\n\nvar _ = fmt.Sprint\n",
        ),
        ("native/win_windows.go", "package native\n\nimport \"C\"\n"),
        ("native/native_test.go", "package native\n\nimport \"C\"\n"),
    ])?;
    let ctx = BuildContext::open(dir.path())?;
    let err = check_go_cgo(&ctx)
        .err()
        .ok_or("import \"C\" should be refused")?;
    insta::assert_snapshot!(err.to_string());
    // `hephy check` reports it for the go backend.
    insta::assert_snapshot!("explain_cgo", explained(dir.path()).await?);

    // The pipeline refuses it too: the go backend of `default_backends` runs the check.
    let go = default_backends(&env()?)
        .into_iter()
        .find(|b| b.name() == "go")
        .ok_or("no go backend")?;
    let err = go
        .check(&ctx, &[hephy_core::Platform::host()])
        .await
        .err()
        .ok_or("the go backend's check should refuse import \"C\"")?;
    assert!(
        err.to_string()
            .starts_with("native/native.go imports \"C\""),
        "{err}"
    );

    // Without the cgo file, the module passes.
    std::fs::remove_file(dir.path().join("native/native.go"))?;
    check_go_cgo(&BuildContext::open(dir.path())?)?;
    Ok(())
}

#[tokio::test]
async fn refusals_show_in_explain() -> TestResult {
    // A Dockerfile the builder cannot handle.
    let dir = repo(&[(
        "Dockerfile",
        "FROM scratch\nRUN --mount=type=ssh cat /run/secrets/x\n",
    )])?;
    insta::assert_snapshot!("explain_ssh", explained(dir.path()).await?);

    // A platform the backend cannot build.
    let dir = repo(&[
        (
            "Cargo.toml",
            "[package]\nname = \"hello\"\nversion = \"0.1.0\"\n",
        ),
        ("src/main.rs", "fn main() {}\n"),
        ("hephy.toml", "[build]\nplatforms = [\"linux/s390x\"]\n"),
    ])?;
    insta::assert_snapshot!("explain_platform", explained(dir.path()).await?);

    // Nothing at all.
    let dir = repo(&[("README", "nothing to build\n")])?;
    let ctx = BuildContext::open(dir.path())?;
    let e = explain(&ctx, &default_backends(&env()?)).await;
    assert!(
        e.chosen.is_some(),
        "the files backend takes anything, as a fallback: {e}"
    );
    Ok(())
}

#[tokio::test]
async fn kaniko_configurations_are_explained_with_warnings() -> TestResult {
    let dir = repo(&[
        ("Dockerfile", "FROM scratch\nCOPY app /app\n"),
        (
            "hephy.toml",
            "[build]\nbackend = \"kaniko\"\n\n[build.kaniko]\ndestination = \"registry.example/app\"\nsnapshot-mode = \"time\"\n",
        ),
    ])?;
    insta::assert_snapshot!(explained(dir.path()).await?);
    Ok(())
}

/// Whether `check_go_cgo` counts a cgo file whose first line is `//go:build EXPR` (counted:
/// built for Linux with cgo off, or a constraint that cannot be evaluated).
fn cgo_file_counted(expr: &str) -> Result<bool, Box<dyn std::error::Error>> {
    let src = format!("//go:build {expr}\n\npackage native\n\nimport \"C\"\n");
    let dir = repo(&[
        ("go.mod", "module example.com/cgo\n\ngo 1.19\n"),
        ("main.go", GO_MAIN),
        ("native/native.go", &src),
    ])?;
    Ok(check_go_cgo(&BuildContext::open(dir.path())?).is_err())
}

/// A `//go:build` line with 200,000 `!` used to overflow the server's stack in a recursive
/// parser and abort the whole server. The evaluation keeps its stacks on the heap; lines longer
/// than its cap (16 KiB) are treated as malformed: the file counts, as it is not excluded.
#[test]
fn go_build_constraints_of_any_depth_or_length_are_safe() -> TestResult {
    let cases: Vec<(String, bool)> = vec![
        // Precedence and grouping, as Go reads them.
        ("linux && !cgo".into(), true),
        ("cgo || windows".into(), false),
        ("linux && cgo || amd64".into(), true),
        ("linux && (cgo || windows)".into(), false),
        ("!linux || !cgo && windows".into(), false),
        (
            "!(linux && cgo) && (windows || arm64 && go1.21)".into(),
            true,
        ),
        // Malformed: the file counts.
        ("linux &&".into(), true),
        ("(cgo".into(), true),
        ("cgo)".into(), true),
        ("cgo linux".into(), true),
        ("cgo & linux".into(), true),
        ("()".into(), true),
        // Deep, within the cap: evaluated.
        (format!("{}cgo", "!".repeat(10_000)), false),
        (format!("{}cgo", "!".repeat(9_999)), true),
        (
            format!("{}cgo{}", "(".repeat(5_000), ")".repeat(5_000)),
            false,
        ),
        (
            format!("{}linux{}", "!(".repeat(4_001), ")".repeat(4_001)),
            false,
        ),
        // Over the cap: not evaluated, the file counts.
        (format!("{}linux", "!".repeat(200_000)), true),
        (format!("{}cgo", "!".repeat(200_000)), true),
        (
            format!("{}cgo{}", "(".repeat(100_000), ")".repeat(100_000)),
            true,
        ),
        // Longer than the cap but inside what the scan reads of a file (256 KiB).
        (format!("{}cgo", "cgo || ".repeat(30_000)), true),
    ];
    for (expr, counted) in &cases {
        let shown: String = expr.chars().take(60).collect();
        assert_eq!(
            cgo_file_counted(expr)?,
            *counted,
            "//go:build {shown}... ({} bytes)",
            expr.len()
        );
    }
    Ok(())
}
