//! Starting a hephy-server, running the CLI and git, and a small HTTP client.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::Result;

pub fn free_addr() -> Result<SocketAddr> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

/// A hephy-server process with its own data dir, killed on drop.
pub struct Server {
    child: Child,
    pub http: SocketAddr,
    pub ssh: SocketAddr,
    pub data: PathBuf,
    pub token: String,
    log: PathBuf,
    /// Whether dropping it removes its apps' containers and router (not when it was stopped
    /// with [`Server::stop_keeping_apps`], for a restart to adopt them).
    cleanup: bool,
}

impl Server {
    pub fn start(dir: &Path, extra: &[&str]) -> Result<Server> {
        Self::start_with_env(dir, extra, &[])
    }

    /// [`Server::start`] with extra environment variables for the server process.
    pub fn start_with_env(dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> Result<Server> {
        Self::start_program(env!("CARGO_BIN_EXE_hephy-server").as_ref(), dir, extra, env)
    }

    /// [`Server::start_with_env`] with another hephy-server binary (a copy, as an upgrade
    /// replaces it).
    pub fn start_program(
        program: &Path,
        dir: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Result<Server> {
        use std::os::unix::fs::PermissionsExt;

        // Apps run as unprivileged host users, who must pass through to the data directory.
        let mode = std::fs::metadata(dir)?.permissions().mode();
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode | 0o001))?;
        let data = dir.join("data");
        let (http, ssh) = (free_addr()?, free_addr()?);
        let log = dir.join("server.log");
        let child = Command::new(program)
            .args(["--data-dir".as_ref(), data.as_os_str()])
            .args(["--http", &http.to_string(), "--ssh", &ssh.to_string()])
            .args(extra)
            .env("HOME", dir)
            .env("GOPROXY", "off")
            .envs(env.iter().copied())
            .stdout(std::fs::File::create(&log)?)
            .stderr(std::fs::File::create(dir.join("server.err.log"))?)
            .spawn()?;
        let mut server = Server {
            child,
            http,
            ssh,
            data,
            token: String::new(),
            log,
            cleanup: true,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(t) = std::fs::read_to_string(server.data.join("admin-token")) {
                if !t.trim().is_empty() && TcpStream::connect(http).is_ok() {
                    server.token = t.trim().to_owned();
                    break;
                }
            }
            if let Some(status) = server.child.try_wait()? {
                return Err(
                    format!("hephy-server exited with {status}:\n{}", server.logs()).into(),
                );
            }
            if Instant::now() > deadline {
                return Err(format!("hephy-server did not start:\n{}", server.logs()).into());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(server)
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.http)
    }

    pub fn logs(&self) -> String {
        let err = self.log.with_file_name("server.err.log");
        format!(
            "{}{}",
            std::fs::read_to_string(&self.log).unwrap_or_default(),
            std::fs::read_to_string(err).unwrap_or_default()
        )
    }

    /// Stops the server with `signal` (`TERM`, `KILL`) and waits for its end, leaving its apps
    /// and router running for the next server on the same data directory.
    pub fn stop_keeping_apps(mut self, signal: &str) -> Result<()> {
        self.cleanup = false;
        run(Command::new("kill").args(["-s", signal, &self.child.id().to_string()]))?;
        self.child.wait()?;
        Ok(())
    }

    /// Stops the server as a crash would (SIGKILL).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if !self.cleanup {
            // Stopped already; its apps and router are the next server's.
            return;
        }
        // Apps outlive the server (the router is a process of its own): both are removed below.
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        self.kill();
        // Remove the containers this server's apps ran, and only those: other tests' servers run
        // at the same time, with containers on the same runc (deleting theirs made their apps
        // give empty replies).
        for id in container_pids(&self.data).into_keys() {
            let _ = Command::new("runc").args(["delete", "-f", &id]).status();
        }
        // The router process and the containers' pasta name the data directory.
        let _ = Command::new("pkill")
            .arg("-f")
            .arg(self.data.as_os_str())
            .status();
    }
}

/// The runc containers whose bundle lies under `dir`, with their process ids (0 once stopped).
pub fn container_pids(dir: &Path) -> std::collections::BTreeMap<String, u32> {
    #[derive(serde::Deserialize)]
    struct Listed {
        id: String,
        bundle: PathBuf,
        pid: u32,
    }
    Command::new("runc")
        .args(["list", "--format", "json"])
        .output()
        .ok()
        .and_then(|o| serde_json::from_slice::<Option<Vec<Listed>>>(&o.stdout).ok())
        .flatten()
        .unwrap_or_default()
        .into_iter()
        .filter(|c| c.bundle.starts_with(dir))
        .map(|c| (c.id, c.pid))
        .collect()
}

/// Runs a command, failing with its output when it fails.
pub fn run(cmd: &mut Command) -> Result<Output> {
    let out = cmd.output()?;
    if !out.status.success() {
        return Err(format!(
            "{cmd:?} failed with {}:\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    Ok(out)
}

/// The `hephy` CLI with its settings under `home`.
pub fn hephy(home: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_hephy"));
    c.env("HOME", home)
        .env("XDG_CONFIG_HOME", home.join(".config"))
        .env("NO_COLOR", "1")
        .env("GOPROXY", "off")
        .env_remove("HEPHY_URL")
        .env_remove("HEPHY_TOKEN")
        .env_remove("HEPHY_APP")
        .stdin(Stdio::null());
    c
}

pub fn git(dir: &Path) -> Command {
    let mut c = Command::new("git");
    c.current_dir(dir)
        .env("GIT_AUTHOR_NAME", "Ada")
        .env("GIT_AUTHOR_EMAIL", "ada@example.com")
        .env("GIT_COMMITTER_NAME", "Ada")
        .env("GIT_COMMITTER_EMAIL", "ada@example.com")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("HOME", dir)
        .stdin(Stdio::null());
    c
}

/// A plain HTTP/1.0 GET; the body on 200.
pub fn get(url: &str) -> std::result::Result<String, String> {
    let rest = url.strip_prefix("http://").ok_or("not http")?;
    let (host, path) = match rest.split_once('/') {
        Some((h, p)) => (h, format!("/{p}")),
        None => (rest, "/".to_owned()),
    };
    let mut s = TcpStream::connect(host).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n").map_err(|e| e.to_string())?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).map_err(|e| e.to_string())?;
    let (head, body) = buf
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no HTTP answer: {buf:?}"))?;
    if !head.starts_with("HTTP/1.0 200") && !head.starts_with("HTTP/1.1 200") {
        return Err(format!("answer: {head}"));
    }
    Ok(body.trim().to_owned())
}

/// Waits until `url` answers `want`.
pub fn wait_for(url: &str, want: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = String::new();
    while Instant::now() < deadline {
        match get(url) {
            Ok(b) if b == want => return Ok(()),
            Ok(b) => last = b,
            Err(e) => last = e,
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Err(format!("{url} never answered {want:?}; last: {last:?}").into())
}
