//! Running build tools: every output line goes to [`Events`] as it comes, the last lines are
//! kept for the error, and dropping the future kills the child. Programs are found here too,
//! once: [`find_program`] on the server's `PATH`, and [`admin_program`] for a program a
//! `hephy.toml` names, which must be one the server's admin installed, never a file of the
//! pushed repository.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use hephy_core::{BuildError, Events};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::Command;

/// How many output lines [`run`] keeps for the error message by default.
pub const TAIL_LINES: usize = 40;

/// The error returned by [`run`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExecError {
    /// The program is not installed (or not executable).
    #[error("{program} not found: {source}")]
    NotFound {
        /// The program.
        program: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The program ran and failed.
    #[error("{program} failed ({status}):\n{}", tail.join("\n"))]
    Failed {
        /// The program.
        program: String,
        /// How it ended.
        status: String,
        /// Its last output lines.
        tail: Vec<String>,
    },
    /// Starting or watching the program failed.
    #[error("cannot run {program}: {source}")]
    Io {
        /// The program.
        program: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

impl ExecError {
    /// A [`BuildError`]: [`BuildError::ToolMissing`] with `hint` for a missing program,
    /// [`BuildError::Failed`] carrying the last lines for a failure.
    pub fn into_build_error(self, hint: &str) -> BuildError {
        match self {
            ExecError::NotFound { program, .. } => BuildError::ToolMissing {
                tool: program,
                hint: hint.to_owned(),
            },
            e @ ExecError::Failed { .. } => BuildError::Failed {
                message: e.to_string(),
            },
            ExecError::Io { program, source } => {
                BuildError::other(format!("cannot run {program}"), source)
            }
        }
    }
}

/// The full path of `program` on the server's `PATH`, if it is there and executable. Only
/// absolute directories of `PATH` count: a relative one (`.`, or an empty entry) would be looked
/// up in whatever directory a build runs in, which is a pushed repository.
pub fn find_program(program: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    if program.is_empty() || program.contains('/') {
        return None;
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .filter(|d| d.is_absolute())
        .map(|d| d.join(program))
        .find(|p| {
            std::fs::metadata(p)
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
}

/// The program a `hephy.toml` setting `key` (such as `[build.go] toolchain`) names as
/// `value`, resolved to its full path: a name on the server's `PATH` ([`find_program`]), or an
/// absolute path. Refused when it is a relative path or resolves inside `context` (the pushed
/// repository): a push must not choose a program of its own to run on the server. `usual` is
/// the program's usual name (`go`), for messages.
///
/// A program that does not exist is [`BuildError::ToolMissing`] with `hint`.
///
/// ```
/// use hephy_backends::exec::admin_program;
/// let repo = std::env::temp_dir().join("some-pushed-repository");
/// let key = "[build.go] toolchain";
/// let sh = admin_program(key, "sh", "go", &repo, "install it").map_err(|e| e.to_string());
/// assert!(sh.is_ok_and(|p| p.is_absolute()));
/// let e = admin_program(key, "./evil.sh", "go", &repo, "").err().map(|e| e.to_string());
/// assert_eq!(
///     e.as_deref(),
///     Some("[build.go] toolchain must name a program the server's admin installed: use a name on the server's PATH, like \"go\", or an absolute path outside the repository"),
/// );
/// ```
pub fn admin_program(
    key: &str,
    value: &str,
    usual: &str,
    context: &Path,
    hint: &str,
) -> Result<PathBuf, BuildError> {
    let refuse = || not_admin_installed(key, usual);
    let given = Path::new(value);
    let program = if given.is_absolute() {
        if !given.is_file() {
            return Err(BuildError::ToolMissing {
                tool: format!("{usual} ({value})"),
                hint: format!("{key} points to {value}, which does not exist; {hint}"),
            });
        }
        given.to_path_buf()
    } else if value.contains('/') || value == "." || value == ".." {
        return Err(refuse());
    } else {
        find_program(value).ok_or_else(|| BuildError::ToolMissing {
            tool: value.to_owned(),
            hint: hint.to_owned(),
        })?
    };
    // An absolute path, or a link on PATH, may still lead into the repository.
    let real = program.canonicalize().unwrap_or_else(|_| program.clone());
    let in_context = program.starts_with(context)
        || context
            .canonicalize()
            .is_ok_and(|c| real.starts_with(&c) || program.starts_with(&c));
    if in_context {
        return Err(refuse());
    }
    Ok(program)
}

fn not_admin_installed(key: &str, usual: &str) -> BuildError {
    BuildError::InvalidContext {
        problem: format!(
            "{key} must name a program the server's admin installed: use a name on the server's PATH, like \"{usual}\", or an absolute path outside the repository"
        ),
    }
}

/// Runs a program the server's admin installed to ask it something (`rustc --print sysroot`,
/// `buildah --version`), not to build: stdin closed, killed if the future is dropped, and its
/// stdout returned. A failure carries the last lines of stderr.
pub async fn query(mut cmd: Command) -> Result<String, ExecError> {
    let program = cmd.as_std().get_program().to_string_lossy().into_owned();
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let out = cmd
        .output()
        .await
        .map_err(|source| spawn_error(&program, source))?;
    if out.status.success() {
        return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    Err(ExecError::Failed {
        program,
        status: out.status.to_string(),
        tail: lines[lines.len().saturating_sub(TAIL_LINES)..]
            .iter()
            .map(|l| (*l).to_owned())
            .collect(),
    })
}

/// What a successful [`run`] printed, its last lines.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ExecOutput {
    /// The last lines of stdout and stderr, interleaved as they came.
    pub tail: Vec<String>,
}

/// Runs `cmd` to its end with stdin closed, sending each line of stdout and stderr to `events`
/// and keeping the last `tail_lines` for the error. The child is killed if the future is dropped.
pub async fn run(
    mut cmd: Command,
    events: &Events,
    tail_lines: usize,
) -> Result<ExecOutput, ExecError> {
    let program = cmd.as_std().get_program().to_string_lossy().into_owned();
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd
        .spawn()
        .map_err(|source| spawn_error(&program, source))?;
    let tail = Arc::new(Mutex::new(VecDeque::with_capacity(tail_lines)));
    let out = child.stdout.take();
    let err = child.stderr.take();
    let pump_out = pump(out, events.clone(), tail.clone(), tail_lines);
    let pump_err = pump(err, events.clone(), tail.clone(), tail_lines);
    let (status, _, _) = tokio::join!(child.wait(), pump_out, pump_err);
    let status = status.map_err(|source| ExecError::Io {
        program: program.clone(),
        source,
    })?;
    let tail: Vec<String> = tail
        .lock()
        .map(|t| t.iter().cloned().collect())
        .unwrap_or_default();
    if status.success() {
        Ok(ExecOutput { tail })
    } else {
        Err(ExecError::Failed {
            program,
            status: status.to_string(),
            tail,
        })
    }
}

/// The longest line [`run`] passes on: a tool that prints more without a newline has its output
/// split into lines of this size, so no output can make one line exhaust memory.
pub const MAX_LINE_BYTES: usize = 64 * 1024;

fn spawn_error(program: &str, source: std::io::Error) -> ExecError {
    let program = program.to_owned();
    if matches!(
        source.kind(),
        std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied
    ) {
        ExecError::NotFound { program, source }
    } else {
        ExecError::Io { program, source }
    }
}

async fn pump<R: AsyncRead + Unpin>(
    r: Option<R>,
    events: Events,
    tail: Arc<Mutex<VecDeque<String>>>,
    keep: usize,
) {
    let Some(r) = r else { return };
    let mut reader = BufReader::new(r);
    // Reading stops only at the end of the output: a pump that stopped early would close the
    // pipe and kill the tool with SIGPIPE.
    while let Some(line) = next_line(&mut reader).await {
        // Waits while the pusher is behind, which in turn makes the tool wait on a full pipe.
        events.log_async(&line).await;
        if keep > 0 {
            if let Ok(mut t) = tail.lock() {
                if t.len() == keep {
                    t.pop_front();
                }
                t.push_back(line);
            }
        }
    }
}

/// The next line of `r` without its `\n`, bytes that are not UTF-8 replaced, at most
/// [`MAX_LINE_BYTES`] long; `None` at the end of the output or when reading fails.
async fn next_line<R: AsyncBufRead + Unpin>(r: &mut R) -> Option<String> {
    let mut line = Vec::new();
    loop {
        let chunk = match r.fill_buf().await {
            Ok(c) => c,
            Err(_) if !line.is_empty() => break,
            Err(_) => return None,
        };
        if chunk.is_empty() {
            if line.is_empty() {
                return None;
            }
            break;
        }
        let room = MAX_LINE_BYTES - line.len();
        match chunk.iter().take(room).position(|b| *b == b'\n') {
            Some(i) => {
                line.extend_from_slice(&chunk[..i]);
                r.consume(i + 1);
                break;
            }
            None => {
                let n = chunk.len().min(room);
                line.extend_from_slice(&chunk[..n]);
                r.consume(n);
                if line.len() == MAX_LINE_BYTES {
                    // A newline right after a full line ends it, rather than an empty one.
                    if let Ok(next) = r.fill_buf().await {
                        if next.first() == Some(&b'\n') {
                            r.consume(1);
                        }
                    }
                    break;
                }
            }
        }
    }
    Some(String::from_utf8_lossy(&line).into_owned())
}
