//! The router: a TCP proxy on an app's stable address whose upstream switches atomically.
//!
//! Each accepted connection is tied to the upstream that was current when it arrived and counts
//! as active there until it closes, so after a [`Router::switch`] the old upstream can be
//! [drained](Upstream::drain): new connections go to the new release, existing ones finish.
//!
//! While an app has no upstream, or its upstream cannot be reached, a connection gets a short
//! `503 Service Unavailable` page naming the app, never an empty reply.
//!
//! [`control`] runs routers as a process of their own (`hephy-router`), controlled over a Unix
//! socket, so that apps keep serving while hephy-server stops, crashes or is replaced.

pub mod control;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// One release's address behind the router, with its count of open connections.
#[derive(Debug)]
pub struct Upstream {
    addr: SocketAddr,
    active: AtomicUsize,
    idle: Notify,
}

impl Upstream {
    /// An upstream at `addr`.
    pub fn new(addr: SocketAddr) -> Arc<Upstream> {
        Arc::new(Upstream {
            addr,
            active: AtomicUsize::new(0),
            idle: Notify::new(),
        })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// How many proxied connections to it are open.
    pub fn active(&self) -> usize {
        self.active.load(Ordering::SeqCst)
    }

    /// Waits until no connection to it is open, or `timeout` passes; `true` if it drained.
    pub async fn drain(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.active() == 0 {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.active() == 0;
            }
        }
    }
}

struct Active(Arc<Upstream>);

impl Drop for Active {
    fn drop(&mut self) {
        if self.0.active.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

#[derive(Default)]
struct Shared {
    upstream: RwLock<Option<Arc<Upstream>>>,
}

impl Shared {
    /// The current upstream, counted as active before the lock is released, so that a drain
    /// started after a switch always sees this connection.
    fn acquire(&self) -> Option<Active> {
        let guard = self.upstream.read().unwrap_or_else(|e| e.into_inner());
        let up = guard.as_ref()?.clone();
        up.active.fetch_add(1, Ordering::SeqCst);
        Some(Active(up))
    }
}

/// A listening router for one app. Dropping it stops accepting (open connections finish).
#[derive(Debug)]
pub struct Router {
    addr: SocketAddr,
    shared: Arc<SharedDebug>,
    accept: JoinHandle<()>,
}

/// Wrapper so `Router` can derive `Debug` without exposing the lock.
struct SharedDebug(Shared);

impl std::fmt::Debug for SharedDebug {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").finish_non_exhaustive()
    }
}

impl Router {
    /// Listens on `addr` (port 0 picks a free port) with no upstream yet: connections are
    /// closed until the first [`Router::switch`].
    pub async fn bind(addr: SocketAddr) -> std::io::Result<Router> {
        Self::bind_named(addr, "this app").await
    }

    /// [`Router::bind`] for the app `name`, which the `503` page names while it has no upstream.
    pub async fn bind_named(addr: SocketAddr, name: &str) -> std::io::Result<Router> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(SharedDebug(Shared::default()));
        let accept = tokio::spawn(accept_loop(
            listener,
            shared.clone(),
            unavailable_page(name),
        ));
        Ok(Router {
            addr,
            shared,
            accept,
        })
    }

    /// The address clients connect to.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The app's routes on a [`HostRouter`] go where this router sends its traffic.
    fn shared(&self) -> Arc<SharedDebug> {
        self.shared.clone()
    }

    /// The current upstream.
    pub fn upstream(&self) -> Option<Arc<Upstream>> {
        self.shared
            .0
            .upstream
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Sends new connections to `to` from now on and returns the previous upstream, which the
    /// caller drains before stopping it.
    pub fn switch(&self, to: Option<Arc<Upstream>>) -> Option<Arc<Upstream>> {
        let mut guard = self
            .shared
            .0
            .upstream
            .write()
            .unwrap_or_else(|e| e.into_inner());
        std::mem::replace(&mut *guard, to)
    }
}

impl Drop for Router {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// What a client gets while the app has no process to take its connection.
fn unavailable_page(name: &str) -> Arc<[u8]> {
    let body = format!(
        "{name} is not available right now: no healthy process answers; it is being started or restarted. Try again shortly.\n"
    );
    format!(
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nRetry-After: 1\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
    .into()
}

/// Copies both ways until the upstream is done. An upstream that closes without a byte (the
/// app's port forwarder accepted, but no process took the connection: the app died) gets the
/// client `page` instead of an empty reply.
async fn proxy(client: TcpStream, upstream: TcpStream, page: &[u8]) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut client_read, mut client_write) = client.into_split();
    let (mut up_read, mut up_write) = upstream.into_split();
    let to_upstream = async {
        let _ = tokio::io::copy(&mut client_read, &mut up_write).await;
        let _ = up_write.shutdown().await;
    };
    let to_client = async {
        let mut buf = vec![0u8; 16 * 1024];
        let mut answered = false;
        loop {
            match up_read.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    answered = true;
                    if client_write.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            }
        }
        if !answered {
            let _ = client_write.write_all(page).await;
        }
        let _ = client_write.shutdown().await;
    };
    tokio::pin!(to_upstream, to_client);
    tokio::select! {
        _ = &mut to_client => {}
        _ = &mut to_upstream => to_client.await,
    }
}

/// Answers `client` with `page` and closes, without waiting for its request (a client that
/// sent none yet reads the answer all the same).
async fn refuse(mut client: TcpStream, page: Arc<[u8]>) {
    use tokio::io::AsyncWriteExt;
    let _ = client.write_all(&page).await;
    let _ = client.shutdown().await;
    // Reading what the client sent before closing avoids a reset that could discard the page.
    let mut sink = [0u8; 1024];
    let _ = tokio::time::timeout(Duration::from_millis(200), async {
        use tokio::io::AsyncReadExt;
        while matches!(client.read(&mut sink).await, Ok(n) if n > 0) {}
    })
    .await;
}

async fn accept_loop(listener: TcpListener, shared: Arc<SharedDebug>, page: Arc<[u8]>) {
    loop {
        let (client, _) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Running out of file descriptors must not end the router; back off briefly.
                tracing::warn!("router accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let shared = shared.clone();
        let page = page.clone();
        tokio::spawn(async move {
            let _ = client.set_nodelay(true);
            let Some(active) = shared.0.acquire() else {
                return refuse(client, page).await;
            };
            let upstream = match TcpStream::connect(active.0.addr).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::debug!("router cannot reach {}: {e}", active.0.addr);
                    return refuse(client, page).await;
                }
            };
            let _ = upstream.set_nodelay(true);
            proxy(client, upstream, &page).await;
            drop(active);
        });
    }
}

type Routes = Arc<RwLock<std::collections::HashMap<String, Arc<SharedDebug>>>>;

/// One shared port for every app, routed by the HTTP `Host` header (`APP.localhost`).
///
/// The first request of a connection decides where the whole connection goes. A host without a
/// route gets `404 Not Found` naming it.
#[derive(Debug)]
pub struct HostRouter {
    addr: SocketAddr,
    routes: Routes,
    accept: JoinHandle<()>,
}

impl HostRouter {
    /// Listens on `addr` (port 0 picks a free port) with no routes yet.
    pub async fn bind(addr: SocketAddr) -> std::io::Result<HostRouter> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let routes: Routes = Arc::default();
        let accept = tokio::spawn(host_accept_loop(listener, routes.clone()));
        Ok(HostRouter {
            addr,
            routes,
            accept,
        })
    }

    /// The address clients connect to.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Sends requests for `host` (matched without port, case-insensitively) wherever `router`
    /// sends its traffic, following its switches.
    pub fn route(&self, host: &str, router: &Router) {
        let mut routes = self.routes.write().unwrap_or_else(|e| e.into_inner());
        routes.insert(host.to_ascii_lowercase(), router.shared());
    }

    /// Removes the route of `host`.
    pub fn unroute(&self, host: &str) {
        let mut routes = self.routes.write().unwrap_or_else(|e| e.into_inner());
        routes.remove(&host.to_ascii_lowercase());
    }
}

impl Drop for HostRouter {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// The `Host` header of a request head, lowercased and without its port.
fn host_of(head: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(head).ok()?;
    text.split("\r\n").skip(1).find_map(|line| {
        let (name, value) = line.split_once(':')?;
        if !name.trim().eq_ignore_ascii_case("host") {
            return None;
        }
        let value = value.trim();
        let host = match value.strip_prefix('[') {
            Some(v6) => v6.split(']').next().unwrap_or(v6),
            None => value.rsplit_once(':').map_or(value, |(h, _)| h),
        };
        Some(host.to_ascii_lowercase())
    })
}

async fn host_accept_loop(listener: TcpListener, routes: Routes) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    loop {
        let (mut client, _) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("host router accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let routes = routes.clone();
        tokio::spawn(async move {
            let _ = client.set_nodelay(true);
            // Read the request head (bounded in size and time) to find the Host header.
            let mut head = Vec::with_capacity(1024);
            let mut buf = [0u8; 4096];
            let read_head = async {
                while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 64 * 1024 {
                    let n = client.read(&mut buf).await?;
                    if n == 0 {
                        break;
                    }
                    head.extend_from_slice(&buf[..n]);
                }
                Ok::<_, std::io::Error>(())
            };
            if !matches!(
                tokio::time::timeout(Duration::from_secs(30), read_head).await,
                Ok(Ok(()))
            ) {
                return;
            }
            let host = host_of(&head).unwrap_or_default();
            let shared = routes
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .get(&host)
                .cloned();
            let active = shared.as_ref().and_then(|s| s.0.acquire());
            let Some(active) = active else {
                let body = format!("no app is deployed at host {host:?}\n");
                let reply = format!(
                    "HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = client.write_all(reply.as_bytes()).await;
                return;
            };
            let Ok(mut upstream) = TcpStream::connect(active.0.addr).await else {
                return;
            };
            let _ = upstream.set_nodelay(true);
            if upstream.write_all(&head).await.is_err() {
                return;
            }
            let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
            drop(active);
        });
    }
}
