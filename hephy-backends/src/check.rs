//! Choosing and validating a backend: which backend would build a repository and why
//! ([`explain`], what `hephy check` prints), and refusals of what cannot work, before any
//! build starts.
//!
//! Auto-detection asks every backend in a fixed order (see [`DETECTION_ORDER`]) and takes the
//! most confident answer; ties go to the earlier backend. A `Dockerfile` wins over everything,
//! because a repository that has one says exactly how it wants to be built.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use hephy_core::{
    async_trait, Backend, BackendChoice, BuildContext, BuildError, BuildTarget, BuiltImage,
    Confidence, Detection, Events, Platform,
};

/// The order in which `backend = "auto"` asks the backends; the first of equally sure answers
/// wins.
pub const DETECTION_ORDER: &[&str] = &["dockerfile", "spin", "go", "cargo", "files"];

/// What [`explain`] found: the backend that would build the repository, why, and every
/// backend's answer.
#[derive(Debug)]
#[non_exhaustive]
pub struct Explanation {
    /// What `hephy.toml` asks for (`auto` or a name).
    pub choice: BackendChoice,
    /// The backend that would build, if any.
    pub chosen: Option<String>,
    /// Why that backend (or why none).
    pub reason: String,
    /// Every backend's detection, in detection order.
    pub detections: Vec<Detection>,
    /// The platforms asked for.
    pub platforms: Vec<Platform>,
    /// Why the chosen backend refuses to build, if it does.
    pub refusal: Option<BuildError>,
    /// What the user should know that does not stop a build (kaniko settings without an
    /// equivalent, for instance).
    pub warnings: Vec<String>,
}

impl Explanation {
    /// Whether a build would start.
    pub fn ok(&self) -> bool {
        self.chosen.is_some() && self.refusal.is_none()
    }
}

impl fmt::Display for Explanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.chosen {
            Some(b) => writeln!(f, "backend: {b} ({})", self.reason)?,
            None => writeln!(f, "backend: none ({})", self.reason)?,
        }
        if !self.detections.is_empty() {
            writeln!(f, "detection (backend = \"auto\" asks in this order):")?;
            for d in &self.detections {
                let mark = if Some(&d.backend) == self.chosen.as_ref() {
                    "*"
                } else if d.detected() {
                    "+"
                } else {
                    "-"
                };
                writeln!(
                    f,
                    "  {mark} {:<10} {:<6} {}",
                    d.backend,
                    confidence_word(d.confidence),
                    d.reason
                )?;
            }
        }
        writeln!(
            f,
            "platforms: {}",
            self.platforms
                .iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )?;
        for w in &self.warnings {
            writeln!(f, "warning: {w}")?;
        }
        match (&self.chosen, &self.refusal) {
            (None, _) => write!(f, "result: nothing can build this repository"),
            (Some(_), None) => write!(f, "result: ok"),
            (Some(_), Some(e)) => write!(f, "result: refused: {e}"),
        }
    }
}

fn confidence_word(c: Confidence) -> &'static str {
    match c {
        Confidence::No => "no",
        Confidence::Low => "low",
        Confidence::Medium => "medium",
        Confidence::High => "high",
        _ => "?",
    }
}

/// Explains which of `backends` would build `ctx` and why, and whether it refuses: the library
/// call behind `hephy check`. Backends are asked in the order given (use
/// [`default_backends`](crate::default_backends) for the documented order).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use hephy_backends::{default_backends, explain, BuildEnv};
/// use hephy_core::BuildContext;
///
/// let dir = std::env::temp_dir().join(format!("hephy-explain-doc-{}", std::process::id()));
/// std::fs::create_dir_all(&dir)?;
/// std::fs::write(dir.join("spin.toml"), r#"
/// spin_manifest_version = 2
/// [application]
/// name = "hello"
/// [[trigger.http]]
/// route = "/..."
/// component = "hello"
/// [component.hello]
/// source = "hello.wasm"
/// "#)?;
///
/// // Explaining runs no build tool, so no sandbox is needed.
/// let env = BuildEnv::unconfined(dir.join("cache"));
/// let e = explain(&BuildContext::open(&dir)?, &default_backends(&env)).await;
/// assert_eq!(e.chosen.as_deref(), Some("spin"));
/// // hello.wasm was never built: the refusal says what to do.
/// let refusal = e.refusal.as_ref().map(|r| r.to_string()).unwrap_or_default();
/// assert!(refusal.contains("source hello.wasm does not exist: run `spin build`"), "{refusal}");
/// println!("{e}");
/// # std::fs::remove_dir_all(&dir)?;
/// # Ok(()) }
/// ```
pub async fn explain(ctx: &BuildContext, backends: &[Arc<dyn Backend>]) -> Explanation {
    let choice = ctx.config().build.backend.clone();
    let platforms = ctx.config().build.platforms.clone();
    let mut detections = Vec::with_capacity(backends.len());
    for b in backends {
        detections.push(b.detect(ctx).await);
    }
    let (chosen, reason) = match &choice {
        BackendChoice::Named(name) => match backends.iter().position(|b| b.name() == name) {
            Some(i) => (Some(i), format!("backend = \"{name}\" in hephy.toml")),
            None => {
                let names: Vec<&str> = backends.iter().map(|b| b.name()).collect();
                return Explanation {
                    choice: choice.clone(),
                    chosen: None,
                    reason: format!(
                        "hephy.toml asks for backend \"{name}\", which does not exist: use one of {}",
                        names.join(", ")
                    ),
                    detections,
                    platforms,
                    refusal: None,
                    warnings: vec![],
                };
            }
        },
        _ => {
            let mut best: Option<usize> = None;
            for (i, d) in detections.iter().enumerate() {
                if d.detected() && best.is_none_or(|b| d.confidence > detections[b].confidence) {
                    best = Some(i);
                }
            }
            match best {
                Some(i) => (Some(i), format!("auto-detected: {}", detections[i].reason)),
                None => (
                    None,
                    "no backend recognises it: add the file your kind of app needs (Dockerfile, spin.toml, go.mod, Cargo.toml) or set backend = \"NAME\" in the [build] section of hephy.toml".into(),
                ),
            }
        }
    };
    let refusal = match chosen {
        Some(i) => validate(ctx, backends[i].as_ref(), &platforms).await.err(),
        None => None,
    };
    let chosen = chosen.map(|i| backends[i].name().to_owned());
    let warnings = match chosen.as_deref() {
        Some(name @ ("dockerfile" | "kaniko")) => {
            crate::dockerfile::resolve_settings(ctx, name == "kaniko")
                .map(|s| s.warnings)
                .unwrap_or_default()
        }
        _ => vec![],
    };
    Explanation {
        choice,
        chosen,
        reason,
        detections,
        platforms,
        refusal,
        warnings,
    }
}

/// Runs `backend`'s own [`Backend::check`] plus the validators hephy keeps for it (see
/// [`extra_checks`]).
pub async fn validate(
    ctx: &BuildContext,
    backend: &dyn Backend,
    platforms: &[Platform],
) -> Result<(), BuildError> {
    backend.check(ctx, platforms).await?;
    extra_checks(backend.name(), ctx)
}

/// The validators hephy runs for a backend beyond its own check: for `go`, [`check_go_cgo`].
pub fn extra_checks(backend: &str, ctx: &BuildContext) -> Result<(), BuildError> {
    if backend == "go" {
        check_go_cgo(ctx)?;
    }
    Ok(())
}

/// A backend whose [`Backend::check`] also runs [`extra_checks`], so the pipeline refuses what
/// they refuse before building. [`default_backends`](crate::default_backends) wraps the Go
/// backend in it.
///
/// ```
/// use hephy_backends::{check::Checked, BuildEnv, GoBackend};
/// use hephy_core::Backend;
/// let env = BuildEnv::unconfined(std::env::temp_dir().join("hephy-cache"));
/// assert_eq!(Checked::new(GoBackend::new(env)).name(), "go");
/// ```
#[derive(Debug, Clone)]
pub struct Checked<B>(B);

impl<B> Checked<B> {
    /// Wraps `backend`.
    pub fn new(backend: B) -> Self {
        Checked(backend)
    }

    /// The wrapped backend.
    pub fn inner(&self) -> &B {
        &self.0
    }
}

#[async_trait]
impl<B: Backend> Backend for Checked<B> {
    fn name(&self) -> &str {
        self.0.name()
    }

    async fn detect(&self, ctx: &BuildContext) -> Detection {
        self.0.detect(ctx).await
    }

    async fn check(&self, ctx: &BuildContext, platforms: &[Platform]) -> Result<(), BuildError> {
        self.0.check(ctx, platforms).await?;
        extra_checks(self.0.name(), ctx)
    }

    async fn build(
        &self,
        ctx: &BuildContext,
        target: &BuildTarget,
        events: &Events,
    ) -> Result<BuiltImage, BuildError> {
        self.0.build(ctx, target, events).await
    }
}

// ---------------------------------------------------------------------------------------------
// Go: a module that imports "C" cannot be built with CGO off.

/// Refuses a Go module whose packages `import "C"`: the go backend builds with cgo off
/// (`CGO_ENABLED=0`), for static binaries on an empty base. Files excluded by a `//go:build` constraint for Linux without cgo are
/// not counted, nor tests, `testdata`, hidden directories and nested modules.
pub fn check_go_cgo(ctx: &BuildContext) -> Result<(), BuildError> {
    let root = ctx.dir();
    if !root.join("go.mod").is_file() {
        return Ok(());
    }
    let mut found = vec![];
    scan_go(root, &mut found);
    if found.is_empty() {
        return Ok(());
    }
    found.sort();
    let shown: Vec<String> = found.iter().take(5).cloned().collect();
    let more = if found.len() > 5 {
        format!(" and {} more", found.len() - 5)
    } else {
        String::new()
    };
    Err(BuildError::InvalidContext {
        problem: format!(
            "{}{more} {} \"C\", but hephy builds Go with cgo off (CGO_ENABLED=0) for a static binary on an empty base: remove the cgo code (or give it a `//go:build cgo` twin without it), or build with a Dockerfile whose base has a C toolchain and libc",
            shown.join(", "),
            if found.len() == 1 { "imports" } else { "import" }
        ),
    })
}

/// How much of each `.go` file the cgo check reads: build constraints and imports come first.
const GO_HEAD_LIMIT: u64 = 256 * 1024;

/// Walks the module at `root` (iteratively: the repository decides how deep it is), without
/// following symlinks, for Go files that import "C".
fn scan_go(root: &Path, found: &mut Vec<String>) {
    let mut todo = vec![root.to_path_buf()];
    while let Some(dir) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let path = e.path();
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_dir() {
                if name.starts_with('.') || name.starts_with('_') || name == "testdata" {
                    continue;
                }
                if path.join("go.mod").is_file() {
                    continue;
                }
                todo.push(path);
            } else if ft.is_file() && name.ends_with(".go") && !name.ends_with("_test.go") {
                if !go_file_name_matches_linux(&name) {
                    continue;
                }
                let Some(head) = crate::paths::read_head(&path, GO_HEAD_LIMIT) else {
                    continue;
                };
                let src = String::from_utf8_lossy(&head);
                if !go_build_constraint_ok(&src) {
                    continue;
                }
                if go_imports_c(&src) {
                    let rel = path.strip_prefix(root).unwrap_or(&path);
                    found.push(rel.display().to_string());
                }
            }
        }
    }
}

const GOOS: &[&str] = &[
    "aix",
    "android",
    "darwin",
    "dragonfly",
    "freebsd",
    "hurd",
    "illumos",
    "ios",
    "js",
    "linux",
    "nacl",
    "netbsd",
    "openbsd",
    "plan9",
    "solaris",
    "wasip1",
    "windows",
    "zos",
];
const GOARCH: &[&str] = &[
    "386", "amd64", "arm", "arm64", "loong64", "mips", "mips64", "mips64le", "mipsle", "ppc64",
    "ppc64le", "riscv64", "s390x", "wasm",
];

/// `x_windows.go` and `x_darwin_arm64.go` are only for those systems.
pub(crate) fn go_file_name_matches_linux(name: &str) -> bool {
    let stem = name.trim_end_matches(".go");
    let parts: Vec<&str> = stem.split('_').collect();
    if parts.len() < 2 {
        return true;
    }
    let last = parts[parts.len() - 1];
    let prev = if parts.len() >= 3 {
        Some(parts[parts.len() - 2])
    } else {
        None
    };
    if GOARCH.contains(&last) {
        if let Some(p) = prev {
            if GOOS.contains(&p) {
                return p == "linux";
            }
        }
        return true; // an arch suffix: some Linux arch builds it
    }
    if GOOS.contains(&last) {
        return last == "linux";
    }
    true
}

/// Evaluates a file's `//go:build` line for Linux, any architecture, with cgo off.
pub(crate) fn go_build_constraint_ok(src: &str) -> bool {
    for line in src.lines() {
        let l = line.trim();
        if l.is_empty() || (l.starts_with("//") && !l.starts_with("//go:build")) {
            continue;
        }
        if let Some(expr) = l.strip_prefix("//go:build") {
            return eval_constraint(expr).unwrap_or(true);
        }
        // The constraint must come before the package clause.
        break;
    }
    true
}

/// The longest `//go:build` expression evaluated. Real ones are a line of a few hundred bytes;
/// a longer one is treated like a malformed one.
const MAX_CONSTRAINT_BYTES: usize = 16 * 1024;

/// A token of a `//go:build` expression, its tags already evaluated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tok {
    Not,
    And,
    Or,
    Open,
    Close,
    Tag(bool),
}

/// Evaluates a `//go:build` expression for Linux with cgo off; `None` when it is malformed or
/// longer than [`MAX_CONSTRAINT_BYTES`], which the caller takes as "not excluded" (the file is
/// scanned): Go itself refuses such a file, so the build fails there with Go's own message.
///
/// An operator-precedence parse with explicit stacks: a pushed file decides how deep `!` and
/// parentheses nest, so recursion would let it overflow the server's stack.
pub(crate) fn eval_constraint(expr: &str) -> Option<bool> {
    if expr.len() > MAX_CONSTRAINT_BYTES {
        return None;
    }
    let tokens = constraint_tokens(expr)?;
    let mut values: Vec<bool> = vec![];
    let mut ops: Vec<Tok> = vec![];
    let mut want_operand = true;
    for tok in tokens {
        match (want_operand, tok) {
            (true, Tok::Not | Tok::Open) => ops.push(tok),
            (true, Tok::Tag(v)) => {
                values.push(v);
                apply_nots(&mut ops, &mut values)?;
                want_operand = false;
            }
            (false, Tok::And | Tok::Or) => {
                // `&&` binds tighter than `||`; both group from the left.
                while let Some(&top) = ops.last() {
                    if top == Tok::And || (top == Tok::Or && tok == Tok::Or) {
                        ops.pop();
                        apply_binary(top, &mut values)?;
                    } else {
                        break;
                    }
                }
                ops.push(tok);
                want_operand = true;
            }
            (false, Tok::Close) => {
                loop {
                    match ops.pop()? {
                        Tok::Open => break,
                        op => apply_binary(op, &mut values)?,
                    }
                }
                apply_nots(&mut ops, &mut values)?;
            }
            _ => return None,
        }
    }
    if want_operand {
        return None;
    }
    while let Some(op) = ops.pop() {
        if op == Tok::Open {
            return None;
        }
        apply_binary(op, &mut values)?;
    }
    match values[..] {
        [v] => Some(v),
        _ => None,
    }
}

/// Applies the `!`s waiting for the operand that just ended on top of `values`.
fn apply_nots(ops: &mut Vec<Tok>, values: &mut [bool]) -> Option<()> {
    while ops.last() == Some(&Tok::Not) {
        ops.pop();
        let v = values.last_mut()?;
        *v = !*v;
    }
    Some(())
}

fn apply_binary(op: Tok, values: &mut Vec<bool>) -> Option<()> {
    let r = values.pop()?;
    let l = values.pop()?;
    values.push(match op {
        Tok::And => l && r,
        Tok::Or => l || r,
        _ => return None,
    });
    Some(())
}

pub(crate) fn constraint_tokens(expr: &str) -> Option<Vec<Tok>> {
    let mut tokens = vec![];
    let mut chars = expr.char_indices().peekable();
    while let Some(&(start, c)) = chars.peek() {
        match c {
            ' ' | '\t' => {
                chars.next();
            }
            '(' | ')' | '!' => {
                tokens.push(match c {
                    '(' => Tok::Open,
                    ')' => Tok::Close,
                    _ => Tok::Not,
                });
                chars.next();
            }
            '&' | '|' => {
                chars.next();
                if chars.next().map(|(_, d)| d) != Some(c) {
                    return None;
                }
                tokens.push(if c == '&' { Tok::And } else { Tok::Or });
            }
            _ => {
                let mut end = start;
                while let Some(&(i, c)) = chars.peek() {
                    if c.is_alphanumeric() || c == '_' || c == '.' {
                        end = i + c.len_utf8();
                        chars.next();
                    } else {
                        break;
                    }
                }
                if end == start {
                    return None;
                }
                tokens.push(Tok::Tag(constraint_tag(&expr[start..end])));
            }
        }
    }
    Some(tokens)
}

/// Whether a build tag holds for Linux, any architecture, with cgo off.
fn constraint_tag(tag: &str) -> bool {
    match tag {
        "linux" | "unix" | "gc" => true,
        "cgo" => false,
        // Any architecture may be asked for; a file for one of them counts.
        a if GOARCH.contains(&a) => true,
        g if g.starts_with("go1.") => true,
        _ => false,
    }
}

pub(crate) fn go_imports_c(src: &str) -> bool {
    let mut in_block = false;
    let mut in_comment = false;
    for line in src.lines() {
        let mut l = line.trim();
        if in_comment {
            match l.find("*/") {
                Some(p) => {
                    in_comment = false;
                    l = l[p + 2..].trim();
                }
                None => continue,
            }
        }
        if let Some(p) = l.find("/*") {
            if !l[p..].contains("*/") {
                in_comment = true;
            }
            l = l[..p].trim();
        }
        if let Some(p) = l.find("//") {
            l = l[..p].trim();
        }
        if in_block {
            if l.starts_with(')') {
                in_block = false;
            } else if l == "\"C\"" || l.ends_with(" \"C\"") {
                return true;
            }
            continue;
        }
        if let Some(rest) = l.strip_prefix("import") {
            let rest = rest.trim();
            if rest == "\"C\"" {
                return true;
            }
            if let Some(inner) = rest.strip_prefix('(') {
                let inner = inner.trim();
                if inner.starts_with("\"C\"") {
                    return true;
                }
                if !inner.contains(')') {
                    in_block = true;
                }
            }
        } else if l.starts_with("func ") || l.starts_with("type ") || l.starts_with("var ") {
            // Imports come before declarations.
            return false;
        }
    }
    false
}

// ---------------------------------------------------------------------------------------------
// Helpers the backends share: knowing what the machine can run (and finding programs, which
// lives in `exec`).

pub use crate::exec::find_program;

/// The name qemu and binfmt_misc give an architecture.
fn qemu_arch(arch: &str) -> &str {
    match arch {
        "amd64" => "x86_64",
        "arm64" => "aarch64",
        "386" => "i386",
        "mips64le" => "mips64el",
        "loong64" => "loongarch64",
        other => other,
    }
}

/// Whether this machine can run Linux programs for `platform`: natively, or through a qemu
/// handler registered with binfmt_misc in `binfmt_dir` (normally `/proc/sys/fs/binfmt_misc`).
pub fn host_can_run(platform: &Platform, binfmt_dir: &Path) -> bool {
    let host = Platform::host();
    if platform.architecture() == host.architecture() {
        return true;
    }
    if host.architecture() == "amd64" && platform.architecture() == "386" {
        return true;
    }
    if let Ok(status) = std::fs::read_to_string(binfmt_dir.join("status")) {
        if status.trim() == "disabled" {
            return false;
        }
    }
    let q = qemu_arch(platform.architecture());
    let Ok(entries) = std::fs::read_dir(binfmt_dir) else {
        return false;
    };
    entries.flatten().any(|e| {
        let name = e.file_name().to_string_lossy().into_owned();
        if name == "status" || name == "register" {
            return false;
        }
        let Ok(text) = std::fs::read_to_string(e.path()) else {
            return false;
        };
        let enabled = text.lines().next().map(str::trim) == Some("enabled");
        let interp = text
            .lines()
            .find_map(|l| l.strip_prefix("interpreter "))
            .unwrap_or("");
        let file = Path::new(interp.trim())
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        let for_arch = name == format!("qemu-{q}")
            || file == format!("qemu-{q}")
            || file == format!("qemu-{q}-static");
        enabled && for_arch
    })
}
