//! [`BuildEnv`]: where the backends run the tools that build pushed code (`go`, `cargo`,
//! `spin`), and where they keep those tools' caches. Whoever builds the backends chooses, and
//! must: a [`Sandbox`] on a server, where a push is untrusted, or — said out loud with
//! [`BuildEnv::unconfined`] — the host, for building one's own checkout on one's own machine.
//!
//! A backend writes each tool run once, as a [`ToolCommand`], for both: every directory the
//! tool needs is mounted with [`ToolCommand::ro`] or [`ToolCommand::rw`], which return the path
//! the tool sees (the mount point inside the sandbox, the host path without one). The
//! environment starts empty in both cases, so a build sees the same variables on a server and
//! on a laptop, and never the server's own (its registry password, its tokens).
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use hephy_backends::build_env::BuildEnv;
//! let cache = std::env::temp_dir().join(format!("hephy-build-env-doc-{}", std::process::id()));
//! let env = BuildEnv::unconfined(&cache);
//! let mut cmd = env.command("/bin/sh");
//! // Unconfined, a mount is the host path itself.
//! let seen = cmd.rw(&cache, "/cache");
//! assert_eq!(seen, cache);
//! assert!(env.sandbox().is_none());
//! # Ok(()) }
//! ```

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

use hephy_core::{BuildContext, BuildError, Events};

use crate::exec::{self, ExecError, ExecOutput};
use crate::sandbox::{BuildUser, Sandbox, SandboxCommand};

/// The cache key of a context built outside a pipeline, which names no app. App names start
/// with a letter, so it is never an app's.
const NO_APP: &str = "_";

/// Where build tools run and where their caches live; see the [module docs](self). Cheap to
/// clone.
#[derive(Debug, Clone)]
pub struct BuildEnv {
    sandbox: Option<Sandbox>,
    cache_root: PathBuf,
}

impl BuildEnv {
    /// Build tools run in `sandbox`; their caches go under `cache_root`, one directory per tool
    /// and app, so no build sees another app's cache.
    pub fn sandboxed(sandbox: Sandbox, cache_root: impl Into<PathBuf>) -> Self {
        BuildEnv {
            sandbox: Some(sandbox),
            cache_root: cache_root.into(),
        }
    }

    /// Build tools run on the host, as the user hephy runs as, seeing everything that user
    /// sees. Only for building code you trust: your own checkout, on your own machine (`hephy
    /// build` without root). Never for a server that builds pushes.
    pub fn unconfined(cache_root: impl Into<PathBuf>) -> Self {
        BuildEnv {
            sandbox: None,
            cache_root: cache_root.into(),
        }
    }

    /// The sandbox build tools run in; `None` when unconfined.
    pub fn sandbox(&self) -> Option<&Sandbox> {
        self.sandbox.as_ref()
    }

    /// The directory the caches are under.
    pub fn cache_root(&self) -> &Path {
        &self.cache_root
    }

    /// The cache of `tool` for the app of `ctx`, `CACHE_ROOT/TOOL/APP` (`_` for a context
    /// that names no app), created and writable by the build user. It is handed to the build
    /// user only when it is not already theirs: a Go or cargo cache grows to gigabytes, and is
    /// not walked on every build.
    pub fn app_cache(&self, tool: &str, ctx: &BuildContext) -> Result<PathBuf, BuildError> {
        self.app_cache_as(tool, ctx, BuildUser::Unprivileged)
    }

    /// Like [`BuildEnv::app_cache`], for a tool run as `user` (see [`ToolCommand::user`]).
    pub fn app_cache_as(
        &self,
        tool: &str,
        ctx: &BuildContext,
        user: BuildUser,
    ) -> Result<PathBuf, BuildError> {
        let app = ctx.app().map(|a| a.as_str()).unwrap_or(NO_APP);
        let dir = self.cache_root.join(tool).join(app);
        std::fs::create_dir_all(&dir).map_err(|e| {
            BuildError::other(
                format!(
                    "cannot create the build cache {}: make the cache directory writable",
                    dir.display()
                ),
                e,
            )
        })?;
        if let Some(sandbox) = &self.sandbox {
            let owner = std::fs::metadata(&dir).map(|m| m.uid()).ok();
            if owner != Some(sandbox.policy().host_uid(user)) {
                sandbox
                    .prepare_dir_as(&dir, user)
                    .map_err(|e| BuildError::other("cannot prepare the build cache", e))?;
            }
        }
        Ok(dir)
    }

    /// `dir` as a new, empty directory the build user may write (what was there is removed).
    pub fn work_dir(&self, dir: &Path) -> Result<(), BuildError> {
        self.work_dir_as(dir, BuildUser::Unprivileged)
    }

    /// Like [`BuildEnv::work_dir`], for a tool run as `user` (see [`ToolCommand::user`]).
    pub fn work_dir_as(&self, dir: &Path, user: BuildUser) -> Result<(), BuildError> {
        let err = |e| BuildError::other(format!("cannot create {}", dir.display()), e);
        if dir.exists() {
            std::fs::remove_dir_all(dir).map_err(err)?;
        }
        std::fs::create_dir_all(dir).map_err(err)?;
        if let Some(sandbox) = &self.sandbox {
            sandbox
                .prepare_dir_as(dir, user)
                .map_err(|e| BuildError::other("cannot prepare the build directory", e))?;
        }
        Ok(())
    }

    /// Copies the tree at `src` to `dst` (which must not exist yet), for a tool run as `user`
    /// that must read every file of it and may write the copy (a build context). Symlinks are
    /// copied as links, never followed; files other than directories, regular files and
    /// symlinks are left out, as is `dst` itself when it is inside `src`. Copied in this
    /// process, as whoever hephy runs as: the build user may not be able to read the original.
    pub fn copy_tree_as(&self, src: &Path, dst: &Path, user: BuildUser) -> Result<(), BuildError> {
        use std::os::unix::fs::PermissionsExt as _;
        let owner = self.sandbox.as_ref().map(|s| s.policy().host_uid(user));
        let err = |path: &Path| {
            let path = path.to_owned();
            move |e| BuildError::other(format!("cannot copy {} for the build", path.display()), e)
        };
        let chown = |path: &Path| -> Result<(), BuildError> {
            if let Some(uid) = owner {
                std::os::unix::fs::lchown(path, Some(uid), Some(uid)).map_err(err(path))?;
            }
            Ok(())
        };
        let mode = |m: &std::fs::Metadata| std::fs::Permissions::from_mode(m.mode() & 0o7777);
        // Modification times are kept (builders hash them: buildah's `COPY file:HASH`), those
        // of directories once their entries are in.
        let mtime = |path: &Path, meta: &std::fs::Metadata| -> Result<(), BuildError> {
            if let Ok(t) = meta.modified() {
                std::fs::File::open(path)
                    .and_then(|f| f.set_modified(t))
                    .map_err(err(path))?;
            }
            Ok(())
        };
        std::fs::create_dir(dst).map_err(err(dst))?;
        // The copy itself, when it is inside `src` (an output directory in the checkout).
        let copy_id = std::fs::metadata(dst)
            .map(|m| (m.dev(), m.ino()))
            .map_err(err(dst))?;
        let top = std::fs::metadata(src).map_err(err(src))?;
        std::fs::set_permissions(dst, mode(&top)).map_err(err(dst))?;
        chown(dst)?;
        let mut dirs = vec![(dst.to_path_buf(), top)];
        // Iterative: the depth of a pushed tree must not decide the depth of our stack.
        let mut todo = vec![(src.to_path_buf(), dst.to_path_buf())];
        while let Some((from, to)) = todo.pop() {
            for entry in std::fs::read_dir(&from).map_err(err(&from))? {
                let entry = entry.map_err(err(&from))?;
                let path = entry.path();
                let target = to.join(entry.file_name());
                let meta = std::fs::symlink_metadata(&path).map_err(err(&path))?;
                let kind = meta.file_type();
                if kind.is_dir() {
                    if (meta.dev(), meta.ino()) == copy_id {
                        continue;
                    }
                    std::fs::create_dir(&target).map_err(err(&target))?;
                    std::fs::set_permissions(&target, mode(&meta)).map_err(err(&target))?;
                    todo.push((path, target.clone()));
                    dirs.push((target.clone(), meta));
                } else if kind.is_file() {
                    std::fs::copy(&path, &target).map_err(err(&path))?;
                    std::fs::set_permissions(&target, mode(&meta)).map_err(err(&target))?;
                    mtime(&target, &meta)?;
                } else if kind.is_symlink() {
                    let link = std::fs::read_link(&path).map_err(err(&path))?;
                    std::os::unix::fs::symlink(link, &target).map_err(err(&target))?;
                } else {
                    continue;
                }
                chown(&target)?;
            }
        }
        for (dir, meta) in dirs.iter().rev() {
            mtime(dir, meta)?;
        }
        Ok(())
    }

    /// A run of `program`, a host path (see [`ToolCommand::toolchain`] for programs outside
    /// `/usr`).
    pub fn command(&self, program: impl Into<PathBuf>) -> ToolCommand {
        ToolCommand {
            sandboxed: self.sandbox.is_some(),
            program: program.into(),
            args: Vec::new(),
            cwd: None,
            env: BTreeMap::new(),
            binds: Vec::new(),
            network: true,
            user: BuildUser::Unprivileged,
        }
    }

    /// Runs `cmd` to its end, its output going to `events`. A failure is
    /// [`BuildError::Failed`] naming `step` (such as `go build`) with the last lines; a missing
    /// program [`BuildError::ToolMissing`] with `hint`. Dropping the future kills the run and
    /// everything it started.
    pub async fn run(
        &self,
        cmd: ToolCommand,
        events: &Events,
        step: &str,
        hint: &str,
    ) -> Result<ExecOutput, BuildError> {
        let out = self.exec(cmd, events, exec::TAIL_LINES).await;
        out.map_err(|e| match e {
            ExecError::Failed { tail, status, .. } => BuildError::Failed {
                message: format!("{step} failed ({status}):\n{}", tail.join("\n")),
            },
            other => other.into_build_error(hint),
        })
    }
}

impl BuildEnv {
    /// Runs `cmd` to its end like [`BuildEnv::run`], keeping the last `tail_lines` output lines,
    /// and returns how it went as it is, for a backend that words its own errors.
    pub async fn exec(
        &self,
        cmd: ToolCommand,
        events: &Events,
        tail_lines: usize,
    ) -> Result<ExecOutput, ExecError> {
        match &self.sandbox {
            Some(sandbox) => sandbox.run(cmd.sandboxed(), events, tail_lines).await,
            None => {
                if !cmd.network {
                    events.warn(
                        "[build] network = false is not enforced: this build runs without the sandbox",
                    );
                }
                exec::run(cmd.unconfined(), events, tail_lines).await
            }
        }
    }
}

/// One run of a build tool, written once for the sandbox and for the host; made by
/// [`BuildEnv::command`], run by [`BuildEnv::run`].
#[derive(Debug, Clone)]
pub struct ToolCommand {
    sandboxed: bool,
    program: PathBuf,
    args: Vec<OsString>,
    cwd: Option<PathBuf>,
    env: BTreeMap<String, String>,
    binds: Vec<(PathBuf, PathBuf, bool)>,
    network: bool,
    user: BuildUser,
}

impl ToolCommand {
    /// Shows the host directory `host` read-only at `inside`; returns the path the tool sees
    /// it at.
    pub fn ro(&mut self, host: &Path, inside: &str) -> PathBuf {
        self.mount(host, inside, false)
    }

    /// Shows the host directory `host` writable at `inside`; returns the path the tool sees it
    /// at. Prepare it with [`BuildEnv::app_cache`] or [`BuildEnv::work_dir`].
    pub fn rw(&mut self, host: &Path, inside: &str) -> PathBuf {
        self.mount(host, inside, true)
    }

    /// Shows a toolchain installed at `root` (a Go root, a Rust sysroot) read-only at
    /// `inside`, unless it is under `/usr`, which every sandbox sees as it is; returns the
    /// path the tool sees it at.
    pub fn toolchain(&mut self, root: &Path, inside: &str) -> PathBuf {
        if root.starts_with("/usr") {
            return root.to_path_buf();
        }
        self.ro(root, inside)
    }

    fn mount(&mut self, host: &Path, inside: &str, writable: bool) -> PathBuf {
        if !self.sandboxed {
            return host.to_path_buf();
        }
        self.binds
            .push((host.to_path_buf(), PathBuf::from(inside), writable));
        PathBuf::from(inside)
    }

    /// Sets the program, as the tool sees it (a path returned by [`ToolCommand::toolchain`]).
    pub fn program(&mut self, program: impl Into<PathBuf>) -> &mut Self {
        self.program = program.into();
        self
    }

    /// Adds an argument.
    pub fn arg(&mut self, arg: impl Into<OsString>) -> &mut Self {
        self.args.push(arg.into());
        self
    }

    /// Adds arguments.
    pub fn args<S: Into<OsString>>(&mut self, args: impl IntoIterator<Item = S>) -> &mut Self {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// The working directory, as the tool sees it.
    pub fn cwd(&mut self, dir: impl Into<PathBuf>) -> &mut Self {
        self.cwd = Some(dir.into());
        self
    }

    /// Sets an environment variable. The environment starts empty but for `PATH`, `HOME` and
    /// `LANG`.
    pub fn env(&mut self, key: impl Into<String>, value: impl Into<String>) -> &mut Self {
        self.env.insert(key.into(), value.into());
        self
    }

    /// Sets environment variables.
    pub fn envs<K: Into<String>, V: Into<String>>(
        &mut self,
        vars: impl IntoIterator<Item = (K, V)>,
    ) -> &mut Self {
        for (k, v) in vars {
            self.env.insert(k.into(), v.into());
        }
        self
    }

    /// Whether the run wants the network (default yes); in the sandbox it gets it only when
    /// the admin's policy allows it too.
    pub fn network(&mut self, on: bool) -> &mut Self {
        self.network = on;
        self
    }

    /// Who the tool runs as in the sandbox (default [`BuildUser::Unprivileged`]); unconfined,
    /// it runs as hephy's own user either way. Prepare its directories for the same user
    /// ([`BuildEnv::app_cache_as`], [`BuildEnv::work_dir_as`]).
    pub fn user(&mut self, user: BuildUser) -> &mut Self {
        self.user = user;
        self
    }

    fn sandboxed(self) -> SandboxCommand {
        let mut c = SandboxCommand::new(self.program)
            .args(self.args)
            .envs(self.env)
            .network(self.network)
            .user(self.user);
        if let Some(cwd) = self.cwd {
            c = c.cwd(cwd);
        }
        for (host, inside, writable) in self.binds {
            c = if writable {
                c.bind_rw(host, inside)
            } else {
                c.bind_ro(host, inside)
            };
        }
        c
    }

    fn unconfined(self) -> tokio::process::Command {
        let mut c = tokio::process::Command::new(&self.program);
        c.args(&self.args).env_clear();
        // Only absolute PATH entries: a relative one would be looked up in the checkout.
        if let Some(path) = std::env::var_os("PATH") {
            let dirs: Vec<PathBuf> = std::env::split_paths(&path)
                .filter(|d| d.is_absolute())
                .collect();
            if let Ok(joined) = std::env::join_paths(dirs) {
                c.env("PATH", joined);
            }
        }
        c.env(
            "HOME",
            std::env::var_os("HOME").unwrap_or_else(|| std::env::temp_dir().into_os_string()),
        );
        c.env("LANG", "C.UTF-8");
        c.envs(&self.env);
        if let Some(cwd) = &self.cwd {
            c.current_dir(cwd);
        }
        c
    }
}

/// The server's settings of a tool that pass into its builds: each of `keys` that is set in
/// hephy's own environment (the admin's `GOPROXY`, say). Nothing else of that environment
/// reaches a build.
pub fn admin_settings(keys: &[&str]) -> BTreeMap<String, String> {
    keys.iter()
        .filter_map(|k| std::env::var(k).ok().map(|v| ((*k).to_owned(), v)))
        .collect()
}

/// The real path of the file a build tool wrote at `path`, which must be a regular file inside
/// `dir` (the output directory the tool was given) after following symlinks. hephy reads it
/// as root; a build that left a symlink there (to the server's data directory, say) would
/// otherwise make hephy ship a host file in the image.
pub fn built_file(dir: &Path, path: &Path, step: &str) -> Result<PathBuf, BuildError> {
    let missing =
        |e: std::io::Error| BuildError::other(format!("{step} wrote no {}", path.display()), e);
    let real = path.canonicalize().map_err(missing)?;
    let real_dir = dir.canonicalize().map_err(missing)?;
    let meta = std::fs::symlink_metadata(&real).map_err(missing)?;
    if !real.starts_with(&real_dir) || !meta.is_file() {
        return Err(BuildError::Failed {
            message: format!(
                "{step} left {} as a link out of its output directory or as something other than a file, and hephy does not read it: build the binary itself",
                path.display()
            ),
        });
    }
    Ok(real)
}

/// Checks that everything a build tool wrote under `dir` (an image layout, say) is a directory
/// or a regular file. hephy reads it as root; a build that left a symlink there (to the
/// server's data directory, say) would otherwise make hephy ship a host file in the image.
pub fn built_tree(dir: &Path, step: &str) -> Result<(), BuildError> {
    let err = |path: &Path| {
        let path = path.to_owned();
        move |e| BuildError::other(format!("{step} left {} unreadable", path.display()), e)
    };
    // Iterative: the build decides the depth of what it wrote.
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).map_err(err(&d))? {
            let entry = entry.map_err(err(&d))?;
            let kind = entry.file_type().map_err(err(&entry.path()))?;
            if kind.is_dir() {
                todo.push(entry.path());
            } else if !kind.is_file() {
                return Err(BuildError::Failed {
                    message: format!(
                        "{step} left {} as a link or a special file in its output, and hephy does not read it: the output must hold only files and directories",
                        entry.path().display()
                    ),
                });
            }
        }
    }
    Ok(())
}
