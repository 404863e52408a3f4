//! [`GitServer::serve_http`] and [`GitServer::serve_ssh`]: a [`GitServer`] serving itself, so an
//! embedding program needs neither axum nor russh of its own.

use std::io;
use std::net::SocketAddr;
use std::path::Path;

use tokio::net::TcpListener;

use crate::ssh::{SshError, SshServer};
use crate::GitServer;

/// The error returned by [`GitServer::serve_http`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// The listener failed for good.
    #[error("the git HTTP server on {} stopped serving: {source}; check the listener's socket and restart", addr.map_or_else(|| "its listener".to_owned(), |a| a.to_string()))]
    Http {
        /// The address the listener was bound to, if it could still be read.
        addr: Option<SocketAddr>,
        /// Why.
        #[source]
        source: io::Error,
    },
}

impl GitServer {
    /// Serves `git push` over smart HTTP from `listener`:
    /// [`http_router`](GitServer::http_router) on axum's server, each connection in its own task.
    ///
    /// Without [accounts](crate::GitServerBuilder::accounts), anyone who reaches the listener
    /// may push to every app: bind such a server to a loopback address only.
    ///
    /// Runs until the listener fails; dropping (or aborting) the future stops accepting new
    /// connections while pushes already running finish. Needs a tokio runtime with IO and time
    /// enabled (`tokio::main` has both). To serve more routes on the same port, merge
    /// `http_router()` with your own and serve it with [`axum`](crate::axum).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let data = tempfile::tempdir()?;
    /// let server = hephy_git::GitServer::builder(data.path()).build()?;
    /// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    /// let http = tokio::spawn(async move { server.serve_http(listener).await });
    /// http.abort();
    /// # Ok(()) }
    /// ```
    pub async fn serve_http(&self, listener: TcpListener) -> Result<(), ServeError> {
        let addr = listener.local_addr().ok();
        axum::serve(listener, self.http_router())
            .await
            .map_err(|source| ServeError::Http { addr, source })
    }

    /// Serves `git push` over SSH from `listener`: public-key authentication against the
    /// server's [accounts](crate::GitServerBuilder::accounts) (which this needs), with the
    /// ed25519 host key at `host_key` (generated there on the first start, mode 0600).
    ///
    /// The same as [`SshServer::new`] followed by [`SshServer::run`]; use those to show the host
    /// key's fingerprint before serving. Runs until accepting fails; dropping the future stops
    /// accepting new connections. Needs a tokio runtime with IO and time enabled.
    pub async fn serve_ssh(
        &self,
        listener: TcpListener,
        host_key: impl AsRef<Path>,
    ) -> Result<(), SshError> {
        let accounts = self.accounts().cloned().ok_or(SshError::NoAccounts)?;
        SshServer::new(self.clone(), accounts, host_key)?
            .run(listener)
            .await
    }
}
