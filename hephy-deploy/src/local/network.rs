//! A release's network. Its container has a network namespace of its own (runc makes it, with
//! only loopback), and pasta, from Debian's `passt` package, joins it to the host:
//!
//! - one port forward, from `127.0.0.1:HOST_PORT` on the host (where the router connects) to
//!   the app's port on the container's loopback;
//! - with egress allowed, a network interface whose traffic pasta sends out through ordinary
//!   host sockets, so the app reaches other hosts and DNS, but not the host's own services:
//!   `-T none -U none` forward no port of the host into the container, `--no-map-gw` keeps the
//!   gateway address from meaning the host, and the host's own address is the container's own
//!   there (pasta copies it);
//! - with egress denied, the interface stays down: nothing leaves the container.
//!
//! pasta is started between `runc create` and `runc start`. It cannot open the namespace files
//! of the container's init process, which runc makes undumpable, so the network namespace is
//! first bind-mounted onto a file of our own. pasta runs as a daemon, outliving hephy like the
//! container does, and does not exit when the container does: [`detach`] stops it.
//!
//! Every container has a directory (see [`ContainerDir`]) with the `/etc` files bind-mounted
//! into it, the namespace file, and pasta's pid file and log.

use std::io;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use hephy_core::Egress;

/// Where a container's DNS queries go when the host's resolver listens on the host's loopback,
/// which the container cannot reach: pasta answers for this address by forwarding to the host's
/// resolver. Link-local, so it never names a real host beyond the gateway.
pub(crate) const DNS_FORWARD: Ipv4Addr = Ipv4Addr::new(169, 254, 0, 53);

/// The error returned by [`attach`] and [`detach`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NetworkError {
    /// pasta or another tool could not be started.
    #[error("cannot run {tool}: {source}; {fix}")]
    Spawn {
        /// The tool.
        tool: String,
        /// What would help.
        fix: &'static str,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A tool ran and failed.
    #[error("`{command}` failed: {message}")]
    Failed {
        /// The command line.
        command: String,
        /// What it said.
        message: String,
    },
    /// A file of the container's directory could not be written or removed.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
}

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> NetworkError {
    let path = path.to_owned();
    move |source| NetworkError::Io {
        action,
        path,
        source,
    }
}

/// The directory of one container, `<data>/containers/<id>/`.
#[derive(Debug, Clone)]
pub(crate) struct ContainerDir(PathBuf);

impl ContainerDir {
    pub(crate) fn new(root: &Path, id: &str) -> ContainerDir {
        ContainerDir(root.join(id))
    }

    /// Where the `/etc` files are (the directory itself).
    pub(crate) fn etc(&self) -> &Path {
        &self.0
    }

    fn netns(&self) -> PathBuf {
        self.0.join("netns")
    }

    fn pid_file(&self) -> PathBuf {
        self.0.join("pasta.pid")
    }

    fn log(&self) -> PathBuf {
        self.0.join("pasta.log")
    }
}

/// Writes the container's `hosts`, `hostname` and `resolv.conf` (see [`crate::runc::ETC_FILES`])
/// into a fresh `dir` of mode 0700 (runc opens bind-mount sources as the host's root). Returns
/// the address pasta must forward DNS from, if the container needs one.
pub(crate) fn write_etc(
    dir: &ContainerDir,
    hostname: &str,
    egress: Egress,
) -> Result<Option<Ipv4Addr>, NetworkError> {
    use std::os::unix::fs::DirBuilderExt;

    let path = &dir.0;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(io_err("create", path))?;
    // The app's own name is loopback too: an app that listens on its host name's address is
    // then where the port forward connects.
    let hosts = format!(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.0.1\t{hostname}\n"
    );
    let host_resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let (resolv, forward) = resolv_conf(&host_resolv, egress);
    for (name, text) in [
        ("hosts", hosts),
        ("hostname", format!("{hostname}\n")),
        ("resolv.conf", resolv),
    ] {
        let file = path.join(name);
        std::fs::write(&file, text).map_err(io_err("write", &file))?;
    }
    Ok(forward)
}

/// The container's `resolv.conf` from the host's, and the address pasta must forward DNS from.
///
/// The host's IPv4 resolvers elsewhere are reachable through pasta as they are (over UDP and
/// TCP). A resolver on the host's loopback is not, so the container asks [`DNS_FORWARD`], which
/// pasta maps to the host's first resolver.
pub(crate) fn resolv_conf(host: &str, egress: Egress) -> (String, Option<Ipv4Addr>) {
    if egress == Egress::Deny {
        return (
            "# [deploy] egress = \"deny\": this container reaches no resolver\n".into(),
            None,
        );
    }
    let mut servers = vec![];
    let mut loopback = false;
    let mut rest = String::new();
    for line in host.lines() {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("nameserver") => match words.next().and_then(|a| a.parse::<Ipv4Addr>().ok()) {
                Some(ip) if ip.is_loopback() || ip.is_unspecified() => loopback = true,
                Some(ip) => servers.push(ip),
                // pasta runs IPv4 only (`-4`).
                None => {}
            },
            Some("search" | "domain" | "options") => {
                rest.push_str(line.trim());
                rest.push('\n');
            }
            _ => {}
        }
    }
    let mut forward = None;
    if servers.is_empty() && loopback {
        servers.push(DNS_FORWARD);
        forward = Some(DNS_FORWARD);
    }
    let mut out = String::new();
    for ip in servers.iter().take(3) {
        out.push_str(&format!("nameserver {ip}\n"));
    }
    out.push_str(&rest);
    (out, forward)
}

/// How [`attach`] connects a container.
#[derive(Debug, Clone)]
pub(crate) struct Attach<'a> {
    /// The pasta binary.
    pub pasta: &'a Path,
    /// The pid of the container's init process (from `runc state`, before `runc start`).
    pub pid: i64,
    /// The host port on 127.0.0.1 that forwards to the app.
    pub host_port: u16,
    /// The port the app listens on in its container.
    pub app_port: u16,
    /// Whether the container reaches other hosts.
    pub egress: Egress,
    /// The address pasta answers DNS for, from [`write_etc`].
    pub dns_forward: Option<Ipv4Addr>,
}

/// Joins the network namespace of a created container to the host with pasta (see the module
/// docs). On failure, what was set up is undone.
pub(crate) async fn attach(dir: &ContainerDir, how: &Attach<'_>) -> Result<(), NetworkError> {
    let netns = dir.netns();
    std::fs::write(&netns, b"").map_err(io_err("create", &netns))?;
    let source = format!("/proc/{}/ns/net", how.pid);
    run(
        "mount",
        &["--bind".as_ref(), source.as_ref(), netns.as_os_str()],
        "install mount (util-linux)",
    )
    .await?;
    if let Err(e) = start_pasta(dir, how).await {
        let _ = detach(dir).await;
        return Err(e);
    }
    Ok(())
}

async fn start_pasta(dir: &ContainerDir, how: &Attach<'_>) -> Result<(), NetworkError> {
    let log_path = dir.log();
    let log = std::fs::File::create(&log_path).map_err(io_err("create", &log_path))?;
    let forward = format!("127.0.0.1/{}:{}", how.host_port, how.app_port);
    let mut cmd = tokio::process::Command::new(how.pasta);
    // As root, pasta would switch to `nobody`, who may not join the namespace.
    cmd.args(["--runas", "0:0", "-4", "--no-map-gw", "-q"])
        .args(["-t", &forward, "-u", "none", "-T", "none", "-U", "none"]);
    if how.egress != Egress::Deny {
        cmd.arg("--config-net");
        if let Some(addr) = how.dns_forward {
            cmd.args(["--dns-forward", &addr.to_string()]);
        }
    }
    cmd.arg("-P")
        .arg(dir.pid_file())
        .arg("--netns")
        .arg(dir.netns())
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        // A file, not a pipe: the daemon keeps what it inherited open long after we are gone.
        .stderr(log)
        .kill_on_drop(true);
    let status = cmd.status().await.map_err(|source| NetworkError::Spawn {
        tool: how.pasta.display().to_string(),
        fix: "install passt (`apt-get install passt`) or point the deployer at pasta",
        source,
    })?;
    if !status.success() {
        let said = std::fs::read_to_string(&log_path).unwrap_or_default();
        return Err(NetworkError::Failed {
            command: format!("pasta -t {forward} --netns {}", dir.netns().display()),
            message: format!("{status}: {}", said.trim()),
        });
    }
    match pasta_pid(dir) {
        Some(_) => Ok(()),
        None => Err(NetworkError::Failed {
            command: format!("pasta -t {forward}"),
            message: format!(
                "it exited with success but is not running ({} says nothing alive)",
                dir.pid_file().display()
            ),
        }),
    }
}

/// The pid of the container's pasta, if it runs (checked against its command line, so a pid
/// reused by another process is never taken for it).
fn pasta_pid(dir: &ContainerDir) -> Option<u32> {
    let pid: u32 = std::fs::read_to_string(dir.pid_file())
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let netns = dir.netns();
    let ours = cmdline
        .split(|b| *b == 0)
        .any(|arg| arg == netns.as_os_str().as_encoded_bytes());
    ours.then_some(pid)
}

/// Whether the container's pasta runs.
pub(crate) fn is_attached(dir: &ContainerDir) -> bool {
    pasta_pid(dir).is_some()
}

/// Whether `dir` is left from a container (it exists).
pub(crate) fn exists(dir: &ContainerDir) -> bool {
    dir.0.exists()
}

/// Stops the container's pasta, unmounts its network namespace and removes its directory.
/// Nothing there is no error.
pub(crate) async fn detach(dir: &ContainerDir) -> Result<(), NetworkError> {
    if let Some(pid) = pasta_pid(dir) {
        stop(pid).await?;
    }
    let netns = dir.netns();
    if is_mounted(&netns) {
        run(
            "umount",
            &[netns.as_os_str()],
            "install umount (util-linux)",
        )
        .await?;
    }
    match std::fs::remove_dir_all(&dir.0) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err("remove", &dir.0)(e)),
    }
}

/// SIGTERM, a second to exit, then SIGKILL.
async fn stop(pid: u32) -> Result<(), NetworkError> {
    let alive = || Path::new(&format!("/proc/{pid}")).exists();
    let pid_arg = pid.to_string();
    run(
        "kill",
        &["-TERM".as_ref(), pid_arg.as_ref()],
        "install procps",
    )
    .await?;
    let deadline = Instant::now() + Duration::from_secs(1);
    while alive() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    if alive() {
        let _ = run(
            "kill",
            &["-KILL".as_ref(), pid_arg.as_ref()],
            "install procps",
        )
        .await;
        let deadline = Instant::now() + Duration::from_secs(1);
        while alive() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    Ok(())
}

/// Whether `path` is a mount point in this process's mount namespace.
fn is_mounted(path: &Path) -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let want = path.to_string_lossy();
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|mount_point| unescape(mount_point) == want)
}

/// mountinfo writes space, tab, newline and backslash as `\NNN` octal.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b.get(i + 1..i + 4).and_then(|d| {
            let d = std::str::from_utf8(d).ok()?;
            u8::from_str_radix(d, 8).ok()
        });
        match (b[i], octal) {
            (b'\\', Some(c)) => {
                out.push(c);
                i += 4;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn run(tool: &str, args: &[&std::ffi::OsStr], fix: &'static str) -> Result<(), NetworkError> {
    let out = tokio::process::Command::new(tool)
        .args(args)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|source| NetworkError::Spawn {
            tool: tool.to_owned(),
            fix,
            source,
        })?;
    if out.status.success() {
        Ok(())
    } else {
        let args: Vec<String> = args.iter().map(|a| a.to_string_lossy().into()).collect();
        Err(NetworkError::Failed {
            command: format!("{tool} {}", args.join(" ")),
            message: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_keeps_reachable_resolvers_and_forwards_loopback_ones() {
        let host = "# generated\nnameserver 10.0.0.2\nnameserver 127.0.0.53\nnameserver ::1\nsearch example.org\noptions edns0\n";
        let (text, forward) = resolv_conf(host, Egress::Allow);
        assert_eq!(
            text,
            "nameserver 10.0.0.2\nsearch example.org\noptions edns0\n"
        );
        assert_eq!(forward, None);

        let (text, forward) = resolv_conf("nameserver 127.0.0.53\n", Egress::Allow);
        assert_eq!(text, "nameserver 169.254.0.53\n");
        assert_eq!(forward, Some(DNS_FORWARD));

        let (text, forward) = resolv_conf(host, Egress::Deny);
        assert!(!text.contains("nameserver"), "{text}");
        assert_eq!(forward, None);
    }

    #[test]
    fn mountinfo_escapes_are_undone() {
        assert_eq!(unescape(r"/data/my\040apps/x"), "/data/my apps/x");
        assert_eq!(unescape(r"/plain"), "/plain");
        assert_eq!(unescape(r"/a\\b"), r"/a\\b");
    }
}
