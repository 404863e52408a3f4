//! The router: a TCP proxy on an app's stable address whose upstream switches atomically.
//!
//! Each accepted connection is tied to the upstream that was current when it arrived and counts
//! as active there until it closes, so after a [`Router::switch`] the old upstream can be
//! [drained](Upstream::drain): new connections go to the new release, existing ones finish.

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
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(SharedDebug(Shared::default()));
        let accept = tokio::spawn(accept_loop(listener, shared.clone()));
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

async fn accept_loop(listener: TcpListener, shared: Arc<SharedDebug>) {
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
        tokio::spawn(async move {
            let _ = client.set_nodelay(true);
            let Some(active) = shared.0.acquire() else {
                return;
            };
            let upstream = match TcpStream::connect(active.0.addr).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::debug!("router cannot reach {}: {e}", active.0.addr);
                    return;
                }
            };
            let _ = upstream.set_nodelay(true);
            let (mut client, mut upstream) = (client, upstream);
            let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
            drop(active);
        });
    }
}
