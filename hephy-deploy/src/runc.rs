//! Running releases with `runc`: the OCI runtime spec of a release, and the `runc` commands
//! that start, inspect and stop containers.

pub mod seccomp;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use hephy_core::{ConfigVars, Resources};
use oci_spec::image::ImageConfiguration;
use oci_spec::runtime::{
    LinuxBuilder, LinuxCapabilitiesBuilder, LinuxCpuBuilder, LinuxDeviceCgroupBuilder,
    LinuxIdMappingBuilder, LinuxMemoryBuilder, LinuxNamespaceBuilder, LinuxNamespaceType,
    LinuxPidsBuilder, LinuxResourcesBuilder, MountBuilder, ProcessBuilder, RootBuilder, Spec,
    UserBuilder,
};
use serde::{Deserialize, Serialize};

use crate::unpack::secure_join;

/// The error returned by [`runtime_spec`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SpecError {
    /// The image says nothing to run.
    #[error("the image has neither an entrypoint nor a cmd: set one in the image config (ENTRYPOINT or CMD)")]
    NothingToRun,
    /// The image's user cannot be resolved in its root filesystem.
    #[error("the image's user {user:?} is not in the image's {file}: use a numeric uid[:gid] or add the user to {file}")]
    UnknownUser {
        /// The user as the image gives it.
        user: String,
        /// The file it was looked up in.
        file: &'static str,
    },
    /// The working directory is not absolute.
    #[error("the image's working dir {dir:?} is not an absolute path: set WORKDIR to a path starting with '/'")]
    WorkingDir {
        /// The directory.
        dir: String,
    },
    /// The image's user is outside the ids the container's user namespace maps.
    #[error("the image's user {uid}:{gid} is outside the container's {size} user ids: use a uid and gid below {size}")]
    UserOutsideRange {
        /// The uid.
        uid: u32,
        /// The gid.
        gid: u32,
        /// How many ids the user namespace maps.
        size: u32,
    },
    /// The spec could not be assembled.
    #[error("cannot assemble the runtime spec: {0}")]
    Build(String),
}

fn build_err(e: impl std::fmt::Display) -> SpecError {
    SpecError::Build(e.to_string())
}

/// What [`runtime_spec`] needs besides the image config.
///
/// Not `#[non_exhaustive]`: callers build it as a literal, and a new field is meant to break them.
#[derive(Debug, Clone)]
pub struct SpecInput<'a> {
    /// The unpacked root filesystem (used read-only).
    pub rootfs: &'a Path,
    /// The container's host name.
    pub hostname: &'a str,
    /// The config vars, which override the image's env.
    pub config: &'a ConfigVars,
    /// The port the release must listen on, given as `PORT`.
    pub port: u16,
    /// Further variables set after the config vars (hephy's own).
    pub extra_env: Vec<(String, String)>,
    /// The resource limits asked for.
    pub resources: &'a Resources,
    /// Which cgroup controllers the host lets us use.
    pub cgroups: CgroupSupport,
    /// The host ids that the container's users and groups `0..size` are, in a user namespace of
    /// its own; `None` keeps the host's user namespace, where the container's root is the host's.
    pub ids: Option<IdRange>,
    /// A directory with the files `hosts`, `hostname` and `resolv.conf`, bind-mounted read-only
    /// over the image's `/etc/hosts`, `/etc/hostname` and `/etc/resolv.conf`.
    pub etc: Option<&'a Path>,
}

/// The files [`SpecInput::etc`] names, in that directory.
pub const ETC_FILES: [&str; 3] = ["hosts", "hostname", "resolv.conf"];

/// The process and thread limit of a container whose release sets no `[deploy.resources] pids`.
pub const DEFAULT_PIDS_LIMIT: u32 = 1024;

/// A range of host user and group ids, the ones a user namespace maps its ids `0..size` to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct IdRange {
    /// The host id that is 0 (root) in the container.
    pub host_first: u32,
    /// How many ids there are.
    pub size: u32,
}

/// Which cgroup controllers can limit containers on this host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CgroupSupport {
    /// Memory limits work.
    pub memory: bool,
    /// CPU quotas work.
    pub cpu: bool,
    /// Process-count limits work.
    pub pids: bool,
}

impl CgroupSupport {
    /// Looks at `/sys/fs/cgroup` (v2 `cgroup.controllers`, or v1 controller hierarchies).
    pub fn detect() -> CgroupSupport {
        let base = Path::new("/sys/fs/cgroup");
        if let Ok(controllers) = std::fs::read_to_string(base.join("cgroup.controllers")) {
            let has = |c: &str| controllers.split_whitespace().any(|x| x == c);
            return CgroupSupport {
                memory: has("memory"),
                cpu: has("cpu"),
                pids: has("pids"),
            };
        }
        CgroupSupport {
            memory: base.join("memory").is_dir(),
            cpu: base.join("cpu").is_dir() || base.join("cpu,cpuacct").is_dir(),
            pids: base.join("pids").is_dir(),
        }
    }
}

/// A generated runtime spec, with warnings about settings the host could not honour.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RuntimeSpec {
    /// The spec, to be saved as `config.json` in the bundle.
    pub spec: Spec,
    /// What was skipped and why.
    pub warnings: Vec<String>,
}

/// The OCI runtime spec of a release: the image's entrypoint and cmd, its user (a number or a
/// name from the image's `/etc/passwd`), env (image env, then config vars, then `PORT`) and
/// working dir; a read-only root with a writable tmpfs `/tmp`; no new privileges, no
/// capabilities and Docker's default seccomp profile ([`seccomp`]); a network namespace of its
/// own with only loopback (something like pasta must attach it to the world, see
/// `local::network`); a user namespace when [`SpecInput::ids`] says so; the `/etc` files of
/// [`SpecInput::etc`]; and memory, CPU and process-count limits where cgroups allow.
///
/// With a user namespace, the container's root cannot create the mount points in a root
/// filesystem owned by the host's root: call [`prepare_mount_points`] before starting it.
pub fn runtime_spec(
    image: &ImageConfiguration,
    input: &SpecInput<'_>,
) -> Result<RuntimeSpec, SpecError> {
    let mut warnings = vec![];
    let config = image.config().clone().unwrap_or_default();

    let mut args: Vec<String> = config.entrypoint().clone().unwrap_or_default();
    args.extend(config.cmd().clone().unwrap_or_default());
    if args.is_empty() {
        return Err(SpecError::NothingToRun);
    }

    let mut env: Vec<(String, String)> = vec![];
    let mut put = |k: &str, v: &str| {
        if let Some(slot) = env.iter_mut().find(|(name, _)| name == k) {
            slot.1 = v.to_owned();
        } else {
            env.push((k.to_owned(), v.to_owned()));
        }
    };
    put(
        "PATH",
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    );
    for kv in config.env().clone().unwrap_or_default() {
        let (k, v) = kv.split_once('=').unwrap_or((kv.as_str(), ""));
        put(k, v);
    }
    for (k, v) in input.config.iter() {
        put(k, v);
    }
    for (k, v) in &input.extra_env {
        put(k, v);
    }
    put("PORT", &input.port.to_string());
    let env: Vec<String> = env.into_iter().map(|(k, v)| format!("{k}={v}")).collect();

    let cwd = config.working_dir().clone().filter(|d| !d.is_empty());
    let cwd = cwd.unwrap_or_else(|| "/".to_owned());
    if !cwd.starts_with('/') {
        return Err(SpecError::WorkingDir { dir: cwd });
    }

    let (uid, gid) = resolve_user(input.rootfs, config.user().as_deref().unwrap_or(""))?;
    if let Some(ids) = input.ids {
        if uid >= ids.size || gid >= ids.size {
            return Err(SpecError::UserOutsideRange {
                uid,
                gid,
                size: ids.size,
            });
        }
    }
    let user = UserBuilder::default()
        .uid(uid)
        .gid(gid)
        .build()
        .map_err(build_err)?;

    let none = oci_spec::runtime::Capabilities::new();
    let no_caps = LinuxCapabilitiesBuilder::default()
        .bounding(none.clone())
        .effective(none.clone())
        .inheritable(none.clone())
        .permitted(none.clone())
        .ambient(none)
        .build()
        .map_err(build_err)?;
    let process = ProcessBuilder::default()
        .terminal(false)
        .user(user)
        .args(args)
        .env(env)
        .cwd(cwd)
        .no_new_privileges(true)
        .capabilities(no_caps)
        .build()
        .map_err(build_err)?;

    let root = RootBuilder::default()
        .path(input.rootfs)
        .readonly(true)
        .build()
        .map_err(build_err)?;

    let mut mounts = oci_spec::runtime::get_default_mounts();
    mounts.push(
        MountBuilder::default()
            .destination("/tmp")
            .typ("tmpfs")
            .source("tmpfs")
            .options(vec![
                "nosuid".into(),
                "nodev".into(),
                "mode=1777".into(),
                "size=256m".into(),
            ])
            .build()
            .map_err(build_err)?,
    );
    if let Some(etc) = input.etc {
        for name in ETC_FILES {
            mounts.push(
                MountBuilder::default()
                    .destination(format!("/etc/{name}"))
                    .typ("bind")
                    .source(etc.join(name))
                    .options(vec![
                        "rbind".into(),
                        "ro".into(),
                        "nosuid".into(),
                        "nodev".into(),
                        "noexec".into(),
                    ])
                    .build()
                    .map_err(build_err)?,
            );
        }
    }

    let mut resources =
        LinuxResourcesBuilder::default().devices(vec![LinuxDeviceCgroupBuilder::default()
            .allow(false)
            .access("rwm")
            .build()
            .map_err(build_err)?]);
    if let Some(limit) = input.resources.memory {
        if input.cgroups.memory {
            let limit = i64::try_from(limit).unwrap_or(i64::MAX);
            resources = resources.memory(
                LinuxMemoryBuilder::default()
                    .limit(limit)
                    .build()
                    .map_err(build_err)?,
            );
        } else {
            warnings.push(format!(
                "memory limit of {limit} bytes skipped: this host has no usable memory cgroup controller"
            ));
        }
    }
    if let Some(cpus) = input.resources.cpus {
        if input.cgroups.cpu && cpus > 0.0 {
            let period: u64 = 100_000;
            let quota = (cpus * period as f64).round() as i64;
            resources = resources.cpu(
                LinuxCpuBuilder::default()
                    .quota(quota.max(1000))
                    .period(period)
                    .build()
                    .map_err(build_err)?,
            );
        } else {
            warnings.push(format!(
                "cpu limit of {cpus} cores skipped: this host has no usable cpu cgroup controller"
            ));
        }
    }

    let pids = input.resources.pids.unwrap_or(DEFAULT_PIDS_LIMIT);
    if input.cgroups.pids {
        resources = resources.pids(
            LinuxPidsBuilder::default()
                .limit(i64::from(pids))
                .build()
                .map_err(build_err)?,
        );
    } else {
        warnings.push(format!(
            "process limit of {pids} skipped: this host has no usable pids cgroup controller"
        ));
    }

    // pid, network (runc creates it with loopback only), ipc, uts and mount.
    let mut namespaces = oci_spec::runtime::get_default_namespaces();
    let mut linux = LinuxBuilder::default();
    if let Some(ids) = input.ids {
        namespaces.push(
            LinuxNamespaceBuilder::default()
                .typ(LinuxNamespaceType::User)
                .build()
                .map_err(build_err)?,
        );
        let map = LinuxIdMappingBuilder::default()
            .container_id(0u32)
            .host_id(ids.host_first)
            .size(ids.size)
            .build()
            .map_err(build_err)?;
        linux = linux.uid_mappings(vec![map]).gid_mappings(vec![map]);
    }
    match seccomp::default_profile().map_err(build_err)? {
        Some(profile) => linux = linux.seccomp(profile),
        None => warnings.push(format!(
            "no seccomp profile for {}: the container may make any system call its other limits allow",
            std::env::consts::ARCH
        )),
    }
    let linux = linux
        .namespaces(namespaces)
        .resources(resources.build().map_err(build_err)?)
        .masked_paths(oci_spec::runtime::get_default_maskedpaths())
        .readonly_paths(oci_spec::runtime::get_default_readonly_paths())
        .build()
        .map_err(build_err)?;

    let mut spec = Spec::default();
    spec.set_process(Some(process));
    spec.set_root(Some(root));
    spec.set_hostname(Some(input.hostname.to_owned()));
    spec.set_mounts(Some(mounts));
    spec.set_linux(Some(linux));
    Ok(RuntimeSpec { spec, warnings })
}

/// Creates in `rootfs` what the mounts of `spec` need there: directories for file systems,
/// empty files for bind-mounted files, and `/tmp` with mode 1777.
///
/// runc makes missing mount points itself, but not in a user namespace: the root filesystem
/// belongs to the host's root, whom the container's root is not. And runc gives a tmpfs the mode
/// of the directory it covers, so an image's `/tmp` of mode 0755 would make the tmpfs unwritable
/// for every user but the container's root.
pub fn prepare_mount_points(spec: &Spec, rootfs: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;

    let mounts = spec.mounts().as_deref().unwrap_or_default();
    let is_bind = |m: &oci_spec::runtime::Mount| m.typ().as_deref() == Some("bind");
    // Mount points inside another file system (/dev/pts in the /dev tmpfs) are runc's to make.
    let filesystems: Vec<&Path> = mounts
        .iter()
        .filter(|m| !is_bind(m))
        .map(|m| m.destination().as_path())
        .collect();
    for m in mounts {
        let dest = m.destination();
        if filesystems
            .iter()
            .any(|fs| *fs != dest && dest.starts_with(fs))
        {
            continue;
        }
        let path = secure_join(rootfs, dest.strip_prefix("/").unwrap_or(dest))?;
        let file = is_bind(m) && m.source().as_ref().is_some_and(|s| s.is_file());
        if !file {
            std::fs::create_dir_all(&path)?;
        } else if std::fs::symlink_metadata(&path).is_err() {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)?;
        }
        if dest == Path::new("/tmp") && m.typ().as_deref() == Some("tmpfs") {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o1777))?;
        }
    }
    Ok(())
}

/// Resolves an image's `User` (`""`, `uid`, `uid:gid`, `name`, `name:group`) to numbers, reading
/// names from the root filesystem's `/etc/passwd` and `/etc/group`.
pub fn resolve_user(rootfs: &Path, user: &str) -> Result<(u32, u32), SpecError> {
    if user.is_empty() {
        return Ok((0, 0));
    }
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let passwd = read_db(rootfs, "etc/passwd");
    let entry = passwd.iter().find(|f| {
        f.first().map(String::as_str) == Some(u)
            || (u.parse::<u32>().is_ok() && f.get(2).map(String::as_str) == Some(u))
    });
    let uid = match u.parse::<u32>() {
        Ok(n) => n,
        Err(_) => entry
            .and_then(|f| f.get(2))
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| SpecError::UnknownUser {
                user: user.to_owned(),
                file: "/etc/passwd",
            })?,
    };
    let gid = match g {
        Some(g) => match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => read_db(rootfs, "etc/group")
                .iter()
                .find(|f| f.first().map(String::as_str) == Some(g))
                .and_then(|f| f.get(2))
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| SpecError::UnknownUser {
                    user: user.to_owned(),
                    file: "/etc/group",
                })?,
        },
        // Like Docker: the user's primary group, or 0 when the user has no passwd entry.
        None => entry
            .and_then(|f| f.get(3))
            .and_then(|s| s.parse().ok())
            .unwrap_or(0),
    };
    Ok((uid, gid))
}

fn read_db(rootfs: &Path, rel: &str) -> Vec<Vec<String>> {
    let Ok(path) = secure_join(rootfs, Path::new(rel)) else {
        return vec![];
    };
    // The image decides how large its /etc/passwd is: read no more than any real one needs.
    let mut text = String::new();
    if let Ok(file) = std::fs::File::open(path) {
        let _ = std::io::Read::read_to_string(&mut std::io::Read::take(file, 4 << 20), &mut text);
    }
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .map(|l| l.split(':').map(str::to_owned).collect())
        .collect()
}

/// The error returned by [`Runc`] methods.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RuncError {
    /// The runc binary is not there.
    #[error("cannot run {}: {source}; install runc (`apt-get install runc`) or point the deployer at it", binary.display())]
    Spawn {
        /// The binary.
        binary: PathBuf,
        /// Why it could not start.
        #[source]
        source: std::io::Error,
    },
    /// runc ran and failed.
    #[error("`runc {command}` failed: {message}")]
    Failed {
        /// The subcommand and its arguments.
        command: String,
        /// What runc said.
        message: String,
    },
    /// Opening the log file failed.
    #[error("cannot open the log file {}: {source}", path.display())]
    Log {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// A container as `runc state` and `runc list` describe it.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[non_exhaustive]
pub struct ContainerState {
    /// The container id.
    pub id: String,
    /// The pid of its init process (0 once stopped).
    #[serde(default)]
    pub pid: i64,
    /// `created`, `running`, `paused` or `stopped`.
    pub status: String,
    /// The bundle directory.
    #[serde(default)]
    pub bundle: PathBuf,
}

impl ContainerState {
    /// Whether the container's process runs.
    pub fn is_running(&self) -> bool {
        self.status == "running"
    }
}

/// The `runc` binary, with an optional state root (`runc --root`).
#[derive(Debug, Clone)]
pub struct Runc {
    binary: PathBuf,
    root: Option<PathBuf>,
}

impl Default for Runc {
    fn default() -> Self {
        Runc::new("runc")
    }
}

impl Runc {
    /// `binary` (a path, or a name looked up on `PATH`) with runc's default state root.
    pub fn new(binary: impl Into<PathBuf>) -> Runc {
        Runc {
            binary: binary.into(),
            root: None,
        }
    }

    /// Keeps container state in `root` instead of runc's default (`/run/runc`).
    pub fn with_root(mut self, root: impl Into<PathBuf>) -> Runc {
        self.root = Some(root.into());
        self
    }

    fn command(&self) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(&self.binary);
        if let Some(root) = &self.root {
            cmd.arg("--root").arg(root);
        }
        cmd.stdin(Stdio::null()).kill_on_drop(true);
        cmd
    }

    async fn output(&self, args: &[&str]) -> Result<std::process::Output, RuncError> {
        self.command()
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .await
            .map_err(|source| RuncError::Spawn {
                binary: self.binary.clone(),
                source,
            })
    }

    fn failed(args: &[&str], out: &std::process::Output) -> RuncError {
        let mut message = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        if message.is_empty() {
            message = format!("exit status {}", out.status);
        }
        RuncError::Failed {
            command: args.join(" "),
            message,
        }
    }

    /// Starts container `id` from `bundle` in the background (`runc run --detach`); its stdout
    /// and stderr (and runc's own messages) are appended to `log`.
    pub async fn run_detached(&self, id: &str, bundle: &Path, log: &Path) -> Result<(), RuncError> {
        self.detached(&["run", "--detach"], id, bundle, log).await
    }

    async fn detached(
        &self,
        command: &[&str],
        id: &str,
        bundle: &Path,
        log: &Path,
    ) -> Result<(), RuncError> {
        let open = || {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(log)
                .map_err(|source| RuncError::Log {
                    path: log.to_owned(),
                    source,
                })
        };
        // A file, not a pipe: the container keeps writing after this process is gone.
        let (stdout, stderr) = (open()?, open()?);
        let status = self
            .command()
            .args(command)
            .arg("--bundle")
            .arg(bundle)
            .arg(id)
            .stdout(stdout)
            .stderr(stderr)
            .status()
            .await
            .map_err(|source| RuncError::Spawn {
                binary: self.binary.clone(),
                source,
            })?;
        if status.success() {
            Ok(())
        } else {
            let tail = crate::local::logs::tail(log, 5).join("\n");
            Err(RuncError::Failed {
                command: format!("{} {id}", command.join(" ")),
                message: format!("{status}; its log says:\n{tail}"),
            })
        }
    }

    /// Creates container `id` from `bundle` (`runc create`) without starting its process: its
    /// namespaces exist, so its network can be set up before [`Runc::start`]. The container's
    /// stdout and stderr (and runc's own messages) are appended to `log`.
    pub async fn create(&self, id: &str, bundle: &Path, log: &Path) -> Result<(), RuncError> {
        self.detached(&["create"], id, bundle, log).await
    }

    /// Starts the process of a container made by [`Runc::create`].
    pub async fn start(&self, id: &str) -> Result<(), RuncError> {
        let args = ["start", id];
        let out = self.output(&args).await?;
        if out.status.success() {
            Ok(())
        } else {
            Err(Self::failed(&args, &out))
        }
    }

    /// The state of container `id`; `None` if there is no such container.
    pub async fn state(&self, id: &str) -> Result<Option<ContainerState>, RuncError> {
        let args = ["state", id];
        let out = self.output(&args).await?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            if err.contains("does not exist") || err.contains("not found") {
                return Ok(None);
            }
            return Err(Self::failed(&args, &out));
        }
        serde_json::from_slice(&out.stdout)
            .map(Some)
            .map_err(|e| RuncError::Failed {
                command: args.join(" "),
                message: format!("unreadable output: {e}"),
            })
    }

    /// All containers under the state root.
    pub async fn list(&self) -> Result<Vec<ContainerState>, RuncError> {
        let args = ["list", "--format", "json"];
        let out = self.output(&args).await?;
        if !out.status.success() {
            return Err(Self::failed(&args, &out));
        }
        let text = String::from_utf8_lossy(&out.stdout);
        if text.trim().is_empty() || text.trim() == "null" {
            return Ok(vec![]);
        }
        serde_json::from_str(&text).map_err(|e| RuncError::Failed {
            command: args.join(" "),
            message: format!("unreadable output: {e}"),
        })
    }

    /// Sends `signal` (such as `TERM` or `KILL`) to the container's init process.
    pub async fn kill(&self, id: &str, signal: &str) -> Result<(), RuncError> {
        let args = ["kill", id, signal];
        let out = self.output(&args).await?;
        if out.status.success() {
            Ok(())
        } else {
            Err(Self::failed(&args, &out))
        }
    }

    /// Removes the container; with `force`, kills it first. A missing container is no error.
    pub async fn delete(&self, id: &str, force: bool) -> Result<(), RuncError> {
        let args: Vec<&str> = if force {
            vec!["delete", "--force", id]
        } else {
            vec!["delete", id]
        };
        let out = self.output(&args).await?;
        let err = String::from_utf8_lossy(&out.stderr);
        if out.status.success() || err.contains("does not exist") || err.contains("not found") {
            Ok(())
        } else {
            Err(Self::failed(&args, &out))
        }
    }

    /// Stops the container: `SIGTERM`, up to `grace` to exit, then `SIGKILL`; then removes it.
    pub async fn stop(&self, id: &str, grace: Duration) -> Result<(), RuncError> {
        match self.state(id).await? {
            None => return Ok(()),
            Some(s) if s.is_running() => {
                let _ = self.kill(id, "TERM").await;
                let deadline = Instant::now() + grace;
                while Instant::now() < deadline {
                    match self.state(id).await? {
                        Some(s) if s.is_running() => {
                            tokio::time::sleep(Duration::from_millis(50)).await
                        }
                        _ => break,
                    }
                }
            }
            Some(_) => {}
        }
        self.delete(id, true).await
    }
}
