//! Setup the test modules share: repositories written from a list of files, event logs kept in
//! memory, and the refusal a backend's `check` gives.

use std::path::Path;
use std::sync::{Arc, Mutex};

use hephy_backends::sandbox::{Sandbox, SandboxError, SandboxPolicy};
use hephy_backends::BuildEnv;
use hephy_core::{Backend, BuildContext, BuildError, Events, Platform};

/// A repository in a temp dir with `files` (path, content).
pub fn repo(files: &[(&str, &str)]) -> Result<tempfile::TempDir, Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    for (path, content) in files {
        let p = dir.path().join(path);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(p, content)?;
    }
    Ok(dir)
}

/// The tests' build environment: the real sandbox (the tests run as root, as hephy-server
/// does), with caches that outlive the test run, so reruns are fast.
pub fn env() -> Result<BuildEnv, SandboxError> {
    let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("hephy-build-env");
    let sandbox = Sandbox::new(SandboxPolicy::default(), root.join("scratch"))?;
    Ok(BuildEnv::sandboxed(sandbox, root.join("cache")))
}

/// The build context of `dir`.
pub fn ctx(dir: &Path) -> Result<BuildContext, Box<dyn std::error::Error>> {
    Ok(BuildContext::open(dir)?)
}

/// Events that keep their rendered lines, and those lines.
pub fn collect() -> (Events, Arc<Mutex<Vec<String>>>) {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let l = lines.clone();
    let events = Events::from_fn(move |e| {
        if let Ok(mut v) = l.lock() {
            v.push(e.render());
        }
    });
    (events, lines)
}

/// The lines [`collect`] kept, one text.
pub fn joined(lines: &Arc<Mutex<Vec<String>>>) -> String {
    lines.lock().map(|l| l.join("\n")).unwrap_or_default()
}

/// The error `backend.check` gives for `platforms`; `expected` says why there should be one,
/// and is the error when `check` passes.
pub async fn refusal(
    backend: &(impl Backend + ?Sized),
    ctx: &BuildContext,
    platforms: &[Platform],
    expected: &'static str,
) -> Result<BuildError, &'static str> {
    backend.check(ctx, platforms).await.err().ok_or(expected)
}
