//! The router as a process of its own: the data plane that keeps apps reachable while
//! hephy-server stops, crashes, restarts or is replaced by a newer build.
//!
//! [`serve`] runs every app's [`Router`] in the calling process (the `hephy-router` binary is a
//! thin `main` around it) and takes orders over a Unix socket in its state directory: bind an
//! app's address, switch its upstream, drain an old upstream, unbind. Only the directory's owner
//! may connect (the directory is 0700, the socket 0600). The routing table is written to
//! `table.json` atomically after every change, so a restarted router listens where it did and
//! sends traffic where it did.
//!
//! [`RouterClient`] is the other side, as the local deployer uses it.
//!
//! The protocol is one JSON object a line, one request and one answer a connection; it is
//! private to one hephy version pair (the server and the router it started), not a stable API.
//!
//! Restarting the router itself closes the apps' listeners for a moment: handing the listening
//! sockets to a new router process is not done yet.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Mutex;

use super::{Router, Upstream};

/// The socket's file name in the router's state directory.
pub const SOCKET: &str = "router.sock";
const TABLE: &str = "table.json";
const PID: &str = "router.pid";
/// The longest request line read: requests are small.
const MAX_LINE: u64 = 64 * 1024;

/// The error returned by [`serve`] and [`RouterClient`] calls.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ControlError {
    /// A file or socket of the router could not be used.
    #[error("router: cannot {what} {}: {source}", path.display())]
    Io {
        /// What was done.
        what: &'static str,
        /// Where.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Another router already serves this state directory.
    #[error("a router already runs for {} (pid {pid}): stop it first, or use it", dir.display())]
    AlreadyRunning {
        /// The state directory.
        dir: PathBuf,
        /// Its process.
        pid: u32,
    },
    /// The router refused an order.
    #[error("the router refused: {0}")]
    Refused(String),
    /// The router's answer was not understood.
    #[error("the router at {} answered something unexpected: {message}; are hephy-server and hephy-router the same version?", path.display())]
    Protocol {
        /// The socket.
        path: PathBuf,
        /// What was wrong.
        message: String,
    },
}

fn io_err<'a>(
    what: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> ControlError + 'a {
    move |source| ControlError::Io {
        what,
        path: path.to_owned(),
        source,
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum Request {
    Ping,
    Bind {
        app: String,
        listen: SocketAddr,
    },
    Switch {
        app: String,
        upstream: Option<SocketAddr>,
    },
    Drain {
        app: String,
        upstream: SocketAddr,
        timeout_ms: u64,
    },
    Unbind {
        app: String,
    },
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Answer {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    previous: Option<SocketAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    drained: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    active: Option<usize>,
}

/// One app's entry of the routing table.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Entry {
    listen: SocketAddr,
    upstream: Option<SocketAddr>,
    /// Fields written by a newer router are kept.
    #[serde(flatten)]
    unknown: BTreeMap<String, serde_json::Value>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Table {
    apps: BTreeMap<String, Entry>,
    #[serde(flatten)]
    unknown: BTreeMap<String, serde_json::Value>,
}

struct State {
    dir: PathBuf,
    table: Table,
    routers: HashMap<String, Router>,
    /// Upstreams switched away from, until drained.
    old: HashMap<(String, SocketAddr), Arc<Upstream>>,
}

impl State {
    fn save(&self) -> Result<(), ControlError> {
        let path = self.dir.join(TABLE);
        let bytes = serde_json::to_vec_pretty(&self.table).map_err(|e| ControlError::Protocol {
            path: path.clone(),
            message: e.to_string(),
        })?;
        hephy_core::fs::write_atomic(&path, &bytes, hephy_core::fs::FileMode::Private)
            .map_err(io_err("write", &path))
    }

    async fn bind(&mut self, app: &str, listen: SocketAddr) -> Result<(), String> {
        if let Some(r) = self.routers.get(app) {
            if r.local_addr() == listen || listen.port() == 0 {
                return Ok(());
            }
            return Err(format!(
                "{app} already listens on {}, not {listen}: unbind it first",
                r.local_addr()
            ));
        }
        let router = Router::bind_named(listen, app)
            .await
            .map_err(|e| format!("cannot listen on {listen} for {app}: {e}"))?;
        let entry = self.table.apps.entry(app.to_owned()).or_insert(Entry {
            listen,
            upstream: None,
            unknown: BTreeMap::new(),
        });
        entry.listen = router.local_addr();
        if let Some(up) = entry.upstream {
            router.switch(Some(Upstream::new(up)));
        }
        self.routers.insert(app.to_owned(), router);
        self.save().map_err(|e| e.to_string())
    }

    fn switch(&mut self, app: &str, to: Option<SocketAddr>) -> Result<Option<SocketAddr>, String> {
        let router = self
            .routers
            .get(app)
            .ok_or_else(|| format!("{app} has no address on this router: bind it first"))?;
        let current = router.upstream();
        // Switching to where traffic already goes changes nothing: a restarted server that
        // adopts a running release must not drain it.
        if current.as_ref().map(|u| u.addr()) == to {
            return Ok(None);
        }
        let previous = router.switch(to.map(Upstream::new));
        if let Some(entry) = self.table.apps.get_mut(app) {
            entry.upstream = to;
        }
        self.save().map_err(|e| e.to_string())?;
        Ok(previous.map(|p| {
            let addr = p.addr();
            self.old.insert((app.to_owned(), addr), p);
            addr
        }))
    }

    fn unbind(&mut self, app: &str) -> Result<(), String> {
        self.routers.remove(app);
        self.old.retain(|(a, _), _| a != app);
        self.table.apps.remove(app);
        self.save().map_err(|e| e.to_string())
    }
}

/// Runs the router for the state directory `dir` until the process ends: listens where the
/// saved table says, then serves orders on `dir/router.sock`.
///
/// Needs a tokio runtime with IO and time enabled.
pub async fn serve(dir: &Path) -> Result<(), ControlError> {
    hephy_core::fs::create_dir_all(dir, hephy_core::fs::FileMode::Private)
        .map_err(io_err("create", dir))?;
    let socket = dir.join(SOCKET);
    if let Ok(pid) = RouterClient::new(&socket).ping().await {
        return Err(ControlError::AlreadyRunning {
            dir: dir.to_owned(),
            pid,
        });
    }
    let table_path = dir.join(TABLE);
    let table: Table = match std::fs::read(&table_path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| ControlError::Protocol {
            path: table_path.clone(),
            message: format!(
                "the saved routing table is not readable ({e}): move it away to start empty"
            ),
        })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Table::default(),
        Err(e) => return Err(io_err("read", &table_path)(e)),
    };
    let mut state = State {
        dir: dir.to_owned(),
        table: Table {
            apps: BTreeMap::new(),
            unknown: table.unknown,
        },
        routers: HashMap::new(),
        old: HashMap::new(),
    };
    for (app, entry) in table.apps {
        state.table.apps.insert(app.clone(), entry.clone());
        if let Err(e) = state.bind(&app, entry.listen).await {
            tracing::warn!("router: {e}");
        }
    }
    let _ = std::fs::remove_file(&socket);
    let listener = UnixListener::bind(&socket).map_err(io_err("listen on", &socket))?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600))
            .map_err(io_err("restrict", &socket))?;
    }
    let pid_path = dir.join(PID);
    hephy_core::fs::write_atomic(
        &pid_path,
        format!("{}\n", std::process::id()).as_bytes(),
        hephy_core::fs::FileMode::Private,
    )
    .map_err(io_err("write", &pid_path))?;
    tracing::info!(socket = %socket.display(), apps = state.routers.len(), "router ready");
    let state = Arc::new(Mutex::new(state));
    loop {
        let (conn, _) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("router: accept on its socket failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let state = state.clone();
        tokio::spawn(async move {
            if let Err(e) = handle(conn, state).await {
                tracing::debug!("router: a control connection failed: {e}");
            }
        });
    }
}

async fn handle(conn: UnixStream, state: Arc<Mutex<State>>) -> std::io::Result<()> {
    use tokio::io::AsyncReadExt;
    let (read, mut write) = conn.into_split();
    let mut line = String::new();
    BufReader::new(read.take(MAX_LINE))
        .read_line(&mut line)
        .await?;
    let answer = match serde_json::from_str::<Request>(&line) {
        Err(e) => Answer {
            error: Some(format!("not a request: {e}")),
            ..Answer::default()
        },
        Ok(req) => answer(req, &state).await,
    };
    let mut out = serde_json::to_vec(&answer).map_err(std::io::Error::other)?;
    out.push(b'\n');
    write.write_all(&out).await?;
    write.shutdown().await
}

async fn answer(req: Request, state: &Mutex<State>) -> Answer {
    let fail = |error: String| Answer {
        error: Some(error),
        ..Answer::default()
    };
    match req {
        Request::Ping => Answer {
            pid: Some(std::process::id()),
            ..Answer::default()
        },
        Request::Bind { app, listen } => match state.lock().await.bind(&app, listen).await {
            Ok(()) => Answer::default(),
            Err(e) => fail(e),
        },
        Request::Switch { app, upstream } => match state.lock().await.switch(&app, upstream) {
            Ok(previous) => Answer {
                previous,
                ..Answer::default()
            },
            Err(e) => fail(e),
        },
        Request::Drain {
            app,
            upstream,
            timeout_ms,
        } => {
            // Not under the lock: a drain may take its whole timeout.
            let old = state
                .lock()
                .await
                .old
                .get(&(app.clone(), upstream))
                .cloned();
            let Some(old) = old else {
                return Answer {
                    drained: Some(true),
                    active: Some(0),
                    ..Answer::default()
                };
            };
            let drained = old.drain(Duration::from_millis(timeout_ms)).await;
            let active = old.active();
            state.lock().await.old.remove(&(app, upstream));
            Answer {
                drained: Some(drained),
                active: Some(active),
                ..Answer::default()
            }
        }
        Request::Unbind { app } => match state.lock().await.unbind(&app) {
            Ok(()) => Answer::default(),
            Err(e) => fail(e),
        },
    }
}

/// Gives orders to a router process over its socket.
#[derive(Debug, Clone)]
pub struct RouterClient {
    socket: PathBuf,
}

impl RouterClient {
    /// A client of the router listening on `socket` (`STATE_DIR/router.sock`).
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        RouterClient {
            socket: socket.into(),
        }
    }

    /// The socket it talks to.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    async fn call(&self, req: &Request) -> Result<Answer, ControlError> {
        use tokio::io::AsyncReadExt;
        let conn = UnixStream::connect(&self.socket)
            .await
            .map_err(io_err("connect to", &self.socket))?;
        let (read, mut write) = conn.into_split();
        let mut line = serde_json::to_vec(req).map_err(|e| self.protocol(e.to_string()))?;
        line.push(b'\n');
        write
            .write_all(&line)
            .await
            .map_err(io_err("write to", &self.socket))?;
        let mut reply = String::new();
        BufReader::new(read.take(MAX_LINE))
            .read_line(&mut reply)
            .await
            .map_err(io_err("read from", &self.socket))?;
        let answer: Answer =
            serde_json::from_str(&reply).map_err(|e| self.protocol(format!("{e} in {reply:?}")))?;
        match answer.error {
            Some(e) => Err(ControlError::Refused(e)),
            None => Ok(answer),
        }
    }

    fn protocol(&self, message: String) -> ControlError {
        ControlError::Protocol {
            path: self.socket.clone(),
            message,
        }
    }

    /// The router's process id, if it answers.
    pub async fn ping(&self) -> Result<u32, ControlError> {
        self.call(&Request::Ping)
            .await?
            .pid
            .ok_or_else(|| self.protocol("no pid in the answer to ping".into()))
    }

    /// Makes the router listen on `listen` for `app` (nothing changes if it already does).
    pub async fn bind(&self, app: &str, listen: SocketAddr) -> Result<(), ControlError> {
        self.call(&Request::Bind {
            app: app.to_owned(),
            listen,
        })
        .await
        .map(drop)
    }

    /// Sends `app`'s new connections to `upstream` (`None`: the 503 page) and returns the
    /// upstream it replaced, which [`RouterClient::drain`] waits for; `None` also when traffic
    /// already went to `upstream`.
    pub async fn switch(
        &self,
        app: &str,
        upstream: Option<SocketAddr>,
    ) -> Result<Option<SocketAddr>, ControlError> {
        Ok(self
            .call(&Request::Switch {
                app: app.to_owned(),
                upstream,
            })
            .await?
            .previous)
    }

    /// Waits until no connection to the replaced `upstream` is open, or `timeout` passes:
    /// whether it drained, and how many connections were still open.
    pub async fn drain(
        &self,
        app: &str,
        upstream: SocketAddr,
        timeout: Duration,
    ) -> Result<(bool, usize), ControlError> {
        let a = self
            .call(&Request::Drain {
                app: app.to_owned(),
                upstream,
                timeout_ms: timeout.as_millis().try_into().unwrap_or(u64::MAX),
            })
            .await?;
        Ok((a.drained.unwrap_or(false), a.active.unwrap_or(0)))
    }

    /// Stops listening for `app` and forgets it.
    pub async fn unbind(&self, app: &str) -> Result<(), ControlError> {
        self.call(&Request::Unbind {
            app: app.to_owned(),
        })
        .await
        .map(drop)
    }
}
