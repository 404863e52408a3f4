//! The build sandbox: every build tool a push makes hephy run (go, cargo, buildah, spin, and the
//! language tools to come) runs here, never on the host.
//!
//! A build sees only what [`SandboxCommand`] binds into it (the build context copy and its caches
//! writable; `/usr`, the CA certificates and a toolchain read-only), a private `/tmp`, `/proc`
//! and `/dev`. It runs as an unprivileged uid with no capabilities and `no_new_privs`, in its own
//! pid, IPC, UTS and cgroup namespaces, with the environment cleared to what the command names.
//! Memory, process-count and CPU limits are cgroup limits. With network on, the build gets its
//! own network namespace connected to the outside by `pasta`, which forwards nothing to the
//! host's loopback (so the server's API, the registry and every app's port stay out of reach);
//! with network off it has only a loopback of its own.
//!
//! Mechanism: bubblewrap (`bwrap`) started as root sets up the mount namespace (so it can bind
//! toolchains that live in root's home), then `setpriv` drops to the build uid before the tool
//! starts. A builder that must be root (buildah) runs instead as root of a user namespace of its
//! own ([`BuildUser::NamespaceRoot`]), entered inside bubblewrap, whose ids map to unprivileged
//! host ids. Why bubblewrap and not runc: builds need no image, start in milliseconds, and
//! bubblewrap is what Flatpak uses for exactly this (hostile code, a few read-only binds).
//! SECURITY.md gives the whole threat model.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use hephy_core::Events;
use tokio::process::Command;

use crate::exec::{self, ExecError, ExecOutput};

mod cgroup;
use cgroup::Cgroup;

/// The uid and gid builds run as by default: `nobody`, which owns nothing on the host.
pub const BUILD_UID: u32 = 65534;

/// The host uid (and gid) that is root in the user namespace of a build that runs as
/// [`BuildUser::NamespaceRoot`] by default: above what `useradd` hands out as subordinate ids
/// (`SUB_UID_MAX` is 600,100,000), below the ranges hephy-deploy gives apps (from
/// 1,000,000,000), so it owns nothing on the host.
pub const BUILD_USERNS_BASE: u32 = 900_000_000;

/// How many ids a build's user namespace maps: 0 to 65535, the ids images use.
pub const BUILD_USERNS_SIZE: u32 = 65_536;

/// Who a sandboxed program runs as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum BuildUser {
    /// The policy's unprivileged uid ([`SandboxPolicy::uid`]), with no capabilities and
    /// `no_new_privs`: compilers and package managers (go, cargo, spin).
    #[default]
    Unprivileged,
    /// Root of a user namespace of its own whose ids 0 to 65535 are the host ids from
    /// [`SandboxPolicy::userns_base`]: for builders that must be root to unpack images and run
    /// their programs as the images' users (buildah, whose `RUN` steps use chroot isolation
    /// inside). Its capabilities hold only in that namespace, over what is bound into the
    /// sandbox; on the host it is an unprivileged uid that owns nothing.
    NamespaceRoot,
}

/// The environment every sandboxed tool gets, besides what its [`SandboxCommand`] sets.
const BASE_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// What the server's admin allows every build: limits and network. Per-app settings may only
/// narrow these ([`SandboxCommand::network`]).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct SandboxPolicy {
    /// The host uid (and gid) builds run as (default [`BUILD_UID`]).
    pub uid: u32,
    /// Whether builds may reach other hosts, for dependency downloads (default true). Never the
    /// host's own loopback.
    pub network: bool,
    /// The memory limit of one build, in bytes (default 4 GiB).
    pub memory_bytes: Option<u64>,
    /// The process (and thread) limit of one build (default 1,024).
    pub pids: Option<u64>,
    /// How many CPUs one build may use (default: all).
    pub cpus: Option<f64>,
    /// The host uid (and gid) that is root in the user namespace of a build run as
    /// [`BuildUser::NamespaceRoot`]; the namespace maps [`BUILD_USERNS_SIZE`] ids from here
    /// (default [`BUILD_USERNS_BASE`]).
    pub userns_base: u32,
}

impl Default for SandboxPolicy {
    fn default() -> Self {
        SandboxPolicy {
            uid: BUILD_UID,
            network: true,
            memory_bytes: Some(4 << 30),
            pids: Some(1024),
            cpus: None,
            userns_base: BUILD_USERNS_BASE,
        }
    }
}

impl SandboxPolicy {
    /// Sets whether builds may reach other hosts.
    pub fn with_network(mut self, on: bool) -> Self {
        self.network = on;
        self
    }

    /// Sets the memory limit of one build, in bytes (`None`: no limit).
    pub fn with_memory(mut self, bytes: Option<u64>) -> Self {
        self.memory_bytes = bytes;
        self
    }

    /// Sets the process limit of one build (`None`: no limit).
    pub fn with_pids(mut self, pids: Option<u64>) -> Self {
        self.pids = pids;
        self
    }

    /// Sets how many CPUs one build may use (`None`: all).
    pub fn with_cpus(mut self, cpus: Option<f64>) -> Self {
        self.cpus = cpus;
        self
    }

    /// Sets the host uid and gid builds run as.
    pub fn with_uid(mut self, uid: u32) -> Self {
        self.uid = uid;
        self
    }

    /// Sets the first host id of the user namespace of builds run as
    /// [`BuildUser::NamespaceRoot`].
    pub fn with_userns_base(mut self, base: u32) -> Self {
        self.userns_base = base;
        self
    }

    /// The host uid (and gid) that `user` is: [`SandboxPolicy::uid`], or
    /// [`SandboxPolicy::userns_base`] for the root of a build's user namespace.
    pub fn host_uid(&self, user: BuildUser) -> u32 {
        match user {
            BuildUser::Unprivileged => self.uid,
            BuildUser::NamespaceRoot => self.userns_base,
        }
    }
}

/// The error returned by [`Sandbox::new`] and [`Sandbox::prepare_dir`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SandboxError {
    /// A program the sandbox needs is not installed.
    #[error("{program} not found on the server: install {package} (hephy runs every build tool in a bubblewrap sandbox)")]
    Missing {
        /// The program.
        program: &'static str,
        /// The Debian package that has it.
        package: &'static str,
    },
    /// The sandbox needs root to set up namespaces, cgroups and networking.
    #[error("the build sandbox needs hephy-server to run as root (it drops every build to uid {uid}): start it as root")]
    NotRoot {
        /// The build uid.
        uid: u32,
    },
    /// A trial run in the sandbox failed.
    #[error("a trial build in the sandbox failed ({problem}): check that bubblewrap, setpriv and pasta work on this kernel")]
    Trial {
        /// What failed.
        problem: String,
    },
    /// Preparing a directory for the build uid failed.
    #[error("cannot hand {path} to the build user: {source}")]
    Prepare {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// One mount of a host path into the sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Bind {
    host: PathBuf,
    inside: PathBuf,
    writable: bool,
}

/// One tool run: the program (a path inside the sandbox), its arguments, working directory,
/// environment and the host directories it may see.
#[derive(Debug, Clone)]
#[must_use]
pub struct SandboxCommand {
    program: PathBuf,
    args: Vec<OsString>,
    cwd: PathBuf,
    env: BTreeMap<String, String>,
    binds: Vec<Bind>,
    network: bool,
    user: BuildUser,
}

impl SandboxCommand {
    /// Runs `program`, a path as the sandbox sees it (`/usr/bin/go`, or under a toolchain bound
    /// with [`SandboxCommand::bind_ro`]).
    pub fn new(program: impl Into<PathBuf>) -> Self {
        SandboxCommand {
            program: program.into(),
            args: Vec::new(),
            cwd: PathBuf::from("/tmp"),
            env: BTreeMap::new(),
            binds: Vec::new(),
            network: true,
            user: BuildUser::Unprivileged,
        }
    }

    /// Who the program runs as (default [`BuildUser::Unprivileged`]). Hand its writable
    /// directories to the same user with [`Sandbox::prepare_dir_as`].
    pub fn user(mut self, user: BuildUser) -> Self {
        self.user = user;
        self
    }

    /// Adds an argument.
    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Adds arguments.
    pub fn args<S: Into<OsString>>(mut self, args: impl IntoIterator<Item = S>) -> Self {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// The working directory, inside the sandbox.
    pub fn cwd(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cwd = dir.into();
        self
    }

    /// Sets one environment variable (the environment starts empty but for `PATH`, `HOME` and
    /// `LANG`).
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.insert(key.into(), value.into());
        self
    }

    /// Sets environment variables.
    pub fn envs<K: Into<String>, V: Into<String>>(
        mut self,
        vars: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        for (k, v) in vars {
            self.env.insert(k.into(), v.into());
        }
        self
    }

    /// Shows the host path `host` read-only at `inside`.
    pub fn bind_ro(mut self, host: impl Into<PathBuf>, inside: impl Into<PathBuf>) -> Self {
        self.binds.push(Bind {
            host: host.into(),
            inside: inside.into(),
            writable: false,
        });
        self
    }

    /// Shows the host directory `host` writable at `inside`; hand it to the build uid first
    /// with [`Sandbox::prepare_dir`].
    pub fn bind_rw(mut self, host: impl Into<PathBuf>, inside: impl Into<PathBuf>) -> Self {
        self.binds.push(Bind {
            host: host.into(),
            inside: inside.into(),
            writable: true,
        });
        self
    }

    /// Whether this run wants the network (default yes); it gets it only if the policy allows.
    pub fn network(mut self, on: bool) -> Self {
        self.network = on;
        self
    }

    /// The program's file name, for messages.
    fn name(&self) -> String {
        self.program
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| self.program.display().to_string())
    }
}

/// Runs build tools confined; see the [module docs](self). Cheap to clone.
#[derive(Debug, Clone)]
pub struct Sandbox {
    policy: SandboxPolicy,
    bwrap: PathBuf,
    setpriv: PathBuf,
    nsenter: PathBuf,
    unshare: PathBuf,
    pasta: PathBuf,
    ip: PathBuf,
    scratch: PathBuf,
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

impl Sandbox {
    /// A sandbox applying `policy`; its per-build files (passwd, resolv.conf) go under
    /// `scratch`. Fails when a program it needs is missing or the server is not root.
    pub fn new(policy: SandboxPolicy, scratch: impl Into<PathBuf>) -> Result<Self, SandboxError> {
        let find = |program: &'static str, package: &'static str| {
            crate::exec::find_program(program).ok_or(SandboxError::Missing { program, package })
        };
        let sandbox = Sandbox {
            bwrap: find("bwrap", "bubblewrap")?,
            setpriv: find("setpriv", "util-linux")?,
            nsenter: find("nsenter", "util-linux")?,
            unshare: find("unshare", "util-linux")?,
            pasta: find("pasta", "passt")?,
            ip: find("ip", "iproute2")?,
            scratch: scratch.into(),
            policy,
        };
        if !is_root() {
            return Err(SandboxError::NotRoot {
                uid: sandbox.policy.uid,
            });
        }
        sweep_orphans(&sandbox.ip);
        Ok(sandbox)
    }

    /// Runs `true` in the sandbox, with the network when the policy allows it: whether builds
    /// can run at all, found out before the first push needs it.
    pub async fn trial(&self) -> Result<(), SandboxError> {
        self.run(SandboxCommand::new("/bin/true"), &Events::discard(), 5)
            .await
            .map(|_| ())
            .map_err(|e| SandboxError::Trial {
                problem: e.to_string().trim().to_owned(),
            })
    }

    /// The policy this sandbox applies.
    pub fn policy(&self) -> &SandboxPolicy {
        &self.policy
    }

    /// Hands `dir` (created if missing) and everything in it to the build uid, so a writable
    /// bind of it works. Symlinks are changed themselves, never followed.
    pub fn prepare_dir(&self, dir: &Path) -> Result<(), SandboxError> {
        self.prepare_dir_as(dir, BuildUser::Unprivileged)
    }

    /// Hands `dir` (created if missing) and everything in it to `user`, so a writable bind of
    /// it works for a [`SandboxCommand`] run as `user`. Symlinks are changed themselves, never
    /// followed.
    pub fn prepare_dir_as(&self, dir: &Path, user: BuildUser) -> Result<(), SandboxError> {
        let err = |path: &Path| {
            let path = path.to_owned();
            move |source| SandboxError::Prepare { path, source }
        };
        std::fs::create_dir_all(dir).map_err(err(dir))?;
        let uid = Some(self.policy.host_uid(user));
        // Iterative: the depth of a pushed tree must not decide the depth of our stack.
        let mut todo = vec![dir.to_owned()];
        while let Some(d) = todo.pop() {
            std::os::unix::fs::lchown(&d, uid, uid).map_err(err(&d))?;
            for entry in std::fs::read_dir(&d).map_err(err(&d))? {
                let entry = entry.map_err(err(&d))?;
                let path = entry.path();
                if entry.file_type().map_err(err(&path))?.is_dir() {
                    todo.push(path);
                } else {
                    std::os::unix::fs::lchown(&path, uid, uid).map_err(err(&path))?;
                }
            }
        }
        Ok(())
    }

    /// Runs `cmd` in the sandbox to its end, like [`exec::run`]: every output line goes to
    /// `events`, the last `tail_lines` are kept for the error, dropping the future kills the
    /// build and everything it started.
    pub async fn run(
        &self,
        cmd: SandboxCommand,
        events: &Events,
        tail_lines: usize,
    ) -> Result<ExecOutput, ExecError> {
        let id = format!(
            "hephy-build-{}-{}",
            std::process::id(),
            NEXT_ID.fetch_add(1, Ordering::Relaxed)
        );
        let io = |source| ExecError::Io {
            program: cmd.name(),
            source,
        };
        let dir = self.scratch.join(&id);
        let _dir = Cleanup::Dir(dir.clone());
        std::fs::create_dir_all(&dir).map_err(io)?;
        let passwd = dir.join("passwd");
        let uid = self.policy.uid;
        std::fs::write(
            &passwd,
            format!("root:x:0:0:root:/root:/bin/sh\nbuild:x:{uid}:{uid}:build:/tmp:/bin/sh\n"),
        )
        .map_err(io)?;
        let group = dir.join("group");
        std::fs::write(&group, format!("root:x:0:\nbuild:x:{uid}:\n")).map_err(io)?;

        let cgroup = Cgroup::create(&id, &self.policy);
        if let Some(problem) = &cgroup.problem {
            events.warn(format!(
                "build limits are not enforced ({problem}): memory, process and CPU limits need writable cgroups"
            ));
        }
        let network = self.policy.network && cmd.network;
        let _net = if network {
            Some(self.network(&id, &dir).await.map_err(io)?)
        } else {
            None
        };
        let userns = match cmd.user {
            BuildUser::NamespaceRoot => Some(
                UserNamespace::create(&self.unshare, self.policy.userns_base)
                    .await
                    .map_err(io)?,
            ),
            BuildUser::Unprivileged => None,
        };

        let mut c = Command::new("/bin/sh");
        c.env_clear();
        // The wrapper puts itself in the build's cgroups, then becomes the sandbox: everything
        // the build starts is counted and can be killed as one. A build run as the root of a
        // user namespace gets that namespace as fd 3, opened here on the host: bubblewrap
        // passes it on, and the sandbox's own /proc does not show the holder process.
        c.arg("-c")
            .arg(
                r#"for f in $HEPHY_CGROUP_PROCS; do echo $$ > "$f" || exit 125; done
if [ -n "$HEPHY_USERNS" ]; then exec 3<"$HEPHY_USERNS" || exit 125; fi
exec "$@""#,
            )
            .arg("sh")
            .env("HEPHY_CGROUP_PROCS", cgroup.procs_files().join(" "));
        if let Some(ns) = &userns {
            c.env("HEPHY_USERNS", ns.path());
        }
        if network {
            c.arg(&self.nsenter).arg(format!("--net=/run/netns/{id}"));
        }
        c.arg(&self.bwrap);
        c.args(self.bwrap_args(&cmd, network, &dir, &passwd, &group));
        c.arg("--");
        match cmd.user {
            BuildUser::Unprivileged => {
                c.arg(&self.setpriv).args([
                    format!("--reuid={uid}"),
                    format!("--regid={uid}"),
                    "--clear-groups".into(),
                    "--inh-caps=-all".into(),
                    "--bounding-set=-all".into(),
                    "--no-new-privs".into(),
                    "--".into(),
                ]);
            }
            BuildUser::NamespaceRoot => {
                // Into the user namespace as its root (a high host uid), then a mount namespace
                // of its own, owned by that user namespace: the builder may mount there (chroot
                // isolation does), while every bind above stays locked as bubblewrap made it.
                c.arg(&self.nsenter)
                    .args(["--user=/proc/self/fd/3", "--setuid=0", "--setgid=0", "--"])
                    .arg(&self.unshare)
                    .args(["--mount", "--propagation", "private", "--"])
                    .args(["/bin/sh", "-c", r#"exec "$@" 3<&-"#, "sh"]);
            }
        }
        c.arg(&cmd.program).args(&cmd.args);
        let out = exec::run(c, events, tail_lines).await;
        cgroup.kill();
        drop(userns);
        match out {
            Err(ExecError::Failed { status, tail, .. }) => Err(ExecError::Failed {
                program: cmd.name(),
                status,
                tail,
            }),
            Err(ExecError::NotFound { source, .. }) => Err(ExecError::NotFound {
                program: cmd.name(),
                source,
            }),
            other => other,
        }
    }

    fn bwrap_args(
        &self,
        cmd: &SandboxCommand,
        network: bool,
        dir: &Path,
        passwd: &Path,
        group: &Path,
    ) -> Vec<OsString> {
        let mut a: Vec<OsString> = Vec::new();
        let mut push = |items: &[&dyn AsRef<std::ffi::OsStr>]| {
            a.extend(items.iter().map(|i| i.as_ref().to_owned()));
        };
        push(&[
            &"--unshare-pid",
            &"--unshare-ipc",
            &"--unshare-uts",
            &"--unshare-cgroup",
            &"--die-with-parent",
            &"--new-session",
            &"--hostname",
            &"build",
        ]);
        if !network {
            push(&[&"--unshare-net"]);
        }
        // Directories bwrap creates itself are 0700 (it runs as root); the build uid must
        // traverse them.
        for d in ["/etc", "/opt", "/var", "/run"] {
            push(&[&"--perms", &"0755", &"--dir", &d]);
        }
        push(&[
            &"--ro-bind",
            &"/usr",
            &"/usr",
            &"--symlink",
            &"usr/lib",
            &"/lib",
            &"--symlink",
            &"usr/lib64",
            &"/lib64",
            &"--symlink",
            &"usr/bin",
            &"/bin",
            &"--symlink",
            &"usr/sbin",
            &"/sbin",
        ]);
        for etc in ["/etc/ssl", "/etc/ca-certificates", "/etc/alternatives"] {
            if Path::new(etc).exists() {
                push(&[&"--ro-bind", &etc, &etc]);
            }
        }
        push(&[
            &"--ro-bind",
            &passwd,
            &"/etc/passwd",
            &"--ro-bind",
            &group,
            &"/etc/group",
        ]);
        if network {
            push(&[&"--ro-bind", &dir.join("resolv.conf"), &"/etc/resolv.conf"]);
        }
        // bwrap makes tmpfs root's 0755; the build user writes there (Go's work dir, HOME).
        push(&[
            &"--perms", &"1777", &"--tmpfs", &"/tmp", &"--proc", &"/proc", &"--dev", &"/dev",
        ]);
        if cmd.user == BuildUser::NamespaceRoot {
            // buildah's chroot isolation binds /dev and /sys into each RUN step and remounts
            // them read-only unless they already are: a remount of bubblewrap's mounts from
            // inside the user namespace is refused (their flags are locked). /sys is an empty
            // tmpfs: nothing of the host's devices or cgroups.
            push(&[
                &"--remount-ro",
                &"/dev",
                &"--perms",
                &"0755",
                &"--tmpfs",
                &"/sys",
                &"--remount-ro",
                &"/sys",
            ]);
        }
        for b in &cmd.binds {
            for parent in parents_of(&b.inside) {
                push(&[&"--perms", &"0755", &"--dir", &parent]);
            }
            let kind = if b.writable { "--bind" } else { "--ro-bind" };
            push(&[&kind, &b.host, &b.inside]);
        }
        push(&[&"--chdir", &cmd.cwd, &"--clearenv"]);
        let mut env: BTreeMap<&str, &str> = BTreeMap::new();
        env.insert("PATH", BASE_PATH);
        env.insert("HOME", "/tmp");
        env.insert("LANG", "C.UTF-8");
        for (k, v) in &cmd.env {
            env.insert(k, v);
        }
        for (k, v) in env {
            push(&[&"--setenv", &k, &v]);
        }
        a
    }

    /// A network namespace for build `id`, connected to the outside by pasta with nothing
    /// forwarded to the host: no port forwards either way, and no mapping of the gateway to
    /// the host's loopback.
    async fn network(&self, id: &str, dir: &Path) -> std::io::Result<Cleanup> {
        let resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        let resolv: String = resolv
            .lines()
            .filter(|l| l.starts_with("nameserver") || l.starts_with("search"))
            .filter(|l| !l.contains("127.") && !l.contains("::1"))
            .map(|l| format!("{l}\n"))
            .collect();
        std::fs::write(dir.join("resolv.conf"), resolv)?;
        let status = Command::new(&self.ip)
            .args(["netns", "add", id])
            .env_clear()
            .status()
            .await?;
        if !status.success() {
            return Err(std::io::Error::other(format!(
                "ip netns add {id} failed ({status})"
            )));
        }
        let guard = Cleanup::Netns {
            ip: self.ip.clone(),
            id: id.to_owned(),
            pasta_pid: dir.join("pasta.pid"),
        };
        let out = Command::new(&self.pasta)
            .args(["--runas", "0:0", "--config-net", "-4", "--no-map-gw", "-q"])
            .args(["-t", "none", "-T", "none", "-U", "none"])
            .arg("-P")
            .arg(dir.join("pasta.pid"))
            .arg("--netns")
            .arg(format!("/run/netns/{id}"))
            .env_clear()
            .output()
            .await?;
        if !out.status.success() {
            return Err(std::io::Error::other(format!(
                "pasta could not connect the build's network ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(guard)
    }
}

/// Removes the build network namespaces (and their pasta) left by a process that ended without
/// cleaning up (a server killed during a build): they are named `hephy-build-PID-N`, and PID no
/// longer runs.
fn sweep_orphans(ip: &Path) {
    let Ok(entries) = std::fs::read_dir("/run/netns") else {
        return;
    };
    for name in entries
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
    {
        let Some(pid) = name
            .strip_prefix("hephy-build-")
            .and_then(|rest| rest.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let netns = format!("/run/netns/{name}");
        for pasta in processes_naming(&netns) {
            let _ = std::process::Command::new("kill")
                .arg(pasta.to_string())
                .env_clear()
                .status();
        }
        let _ = std::process::Command::new(ip)
            .args(["netns", "delete", &name])
            .env_clear()
            .status();
    }
}

/// The processes whose command line has the argument `arg`.
fn processes_naming(arg: &str) -> Vec<u32> {
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return vec![];
    };
    procs
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| c.split(|b| *b == 0).any(|a| a == arg.as_bytes()))
                .unwrap_or(false)
        })
        .collect()
}

/// `/a/b/c` → `/a`, `/a/b` (the directories bwrap must create before binding `/a/b/c`).
fn parents_of(path: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = path
        .ancestors()
        .skip(1)
        .filter(|p| p.parent().is_some())
        .map(Path::to_owned)
        .collect();
    out.reverse();
    out
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false)
}

/// A user namespace whose ids `0..BUILD_USERNS_SIZE` are host ids from `base`, held open by a
/// process of the host's that waits on its stdin (killed when this is dropped). util-linux's
/// `unshare --map-users` would need `newuidmap` and a subordinate range for root in
/// `/etc/subuid`; root writes any mapping itself.
struct UserNamespace {
    holder: tokio::process::Child,
    pid: u32,
}

impl UserNamespace {
    async fn create(unshare: &Path, base: u32) -> std::io::Result<UserNamespace> {
        use tokio::io::AsyncBufReadExt as _;
        let mut holder = Command::new(unshare)
            .args([
                "--user",
                "--",
                "/bin/sh",
                "-c",
                "echo ready && exec cat >/dev/null",
            ])
            .env_clear()
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        let pid = holder
            .id()
            .ok_or_else(|| std::io::Error::other("the user namespace holder ended at once"))?;
        let stdout = holder
            .stdout
            .take()
            .ok_or_else(|| std::io::Error::other("the user namespace holder has no stdout"))?;
        let mut line = String::new();
        let mut reader = tokio::io::BufReader::new(stdout);
        let read = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            reader.read_line(&mut line),
        )
        .await;
        if !matches!(read, Ok(Ok(n)) if n > 0) {
            return Err(std::io::Error::other(
                "unshare --user could not make a user namespace for the build: enable user namespaces (sysctl user.max_user_namespaces above 0)",
            ));
        }
        let map = format!("0 {base} {BUILD_USERNS_SIZE}\n");
        for file in ["uid_map", "gid_map"] {
            std::fs::write(format!("/proc/{pid}/{file}"), &map).map_err(|e| {
                std::io::Error::other(format!("cannot write the build's {file}: {e}"))
            })?;
        }
        Ok(UserNamespace { holder, pid })
    }

    /// The namespace, as a path on the host.
    fn path(&self) -> String {
        format!("/proc/{}/ns/user", self.pid)
    }
}

impl Drop for UserNamespace {
    fn drop(&mut self) {
        let _ = self.holder.start_kill();
    }
}

/// What is undone when a build ends, however it ends.
enum Cleanup {
    Dir(PathBuf),
    Netns {
        ip: PathBuf,
        id: String,
        pasta_pid: PathBuf,
    },
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        match self {
            Cleanup::Dir(d) => {
                let _ = std::fs::remove_dir_all(d);
            }
            Cleanup::Netns { ip, id, pasta_pid } => {
                // pasta does not quit when the namespace's last process does.
                if let Ok(pid) = std::fs::read_to_string(&*pasta_pid) {
                    let _ = std::process::Command::new("kill")
                        .arg(pid.trim())
                        .env_clear()
                        .status();
                }
                let _ = std::process::Command::new(&*ip)
                    .args(["netns", "delete", id])
                    .env_clear()
                    .status();
            }
        }
    }
}
