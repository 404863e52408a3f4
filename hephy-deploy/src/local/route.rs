//! An app's stable address, served by a router in this process or by the router process.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hephy_core::{AppName, DeployError};

use super::other;
use crate::router::control::RouterClient;
use crate::router::{HostRouter, Router, Upstream};

/// Where an app's traffic is switched.
pub(super) enum AppRoute {
    /// A [`Router`] in this process: it stops when the process does.
    Here(Router),
    /// The router process: it keeps serving when this process stops.
    Process { client: RouterClient, app: AppName },
}

/// An upstream switched away from, to drain before its release stops.
pub(super) enum Replaced {
    Here(Arc<Upstream>),
    Process {
        client: RouterClient,
        app: AppName,
        addr: SocketAddr,
    },
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::new(Ipv4Addr::LOCALHOST.into(), port)
}

fn router_err(e: crate::router::control::ControlError) -> DeployError {
    other(
        format!("{e}; is hephy-router running? hephy-server starts it"),
        e,
    )
}

impl AppRoute {
    /// Listens on `addr` for `app`, here or in the router process (where an app already bound
    /// keeps its listener and its upstream).
    pub(super) async fn bind(
        app: &AppName,
        addr: SocketAddr,
        process: Option<&RouterClient>,
    ) -> Result<AppRoute, DeployError> {
        match process {
            Some(client) => {
                client
                    .bind(app.as_str(), addr)
                    .await
                    .map_err(router_err)?;
                Ok(AppRoute::Process {
                    client: client.clone(),
                    app: app.clone(),
                })
            }
            None => Router::bind_named(addr, app.as_str())
                .await
                .map(AppRoute::Here)
                .map_err(|e| {
                    other(
                        format!("cannot listen on {addr} for app {app}: another process holds the port; stop it, or destroy and create the app again to get a new port"),
                        e,
                    )
                }),
        }
    }

    /// Sends new connections to the loopback `port` (`None`: the 503 page) and returns what it
    /// replaced.
    pub(super) async fn switch(&self, port: Option<u16>) -> Result<Option<Replaced>, DeployError> {
        match self {
            AppRoute::Here(r) => Ok(r
                .switch(port.map(|p| Upstream::new(loopback(p))))
                .map(Replaced::Here)),
            AppRoute::Process { client, app } => Ok(client
                .switch(app.as_str(), port.map(loopback))
                .await
                .map_err(router_err)?
                .map(|addr| Replaced::Process {
                    client: client.clone(),
                    app: app.clone(),
                    addr,
                })),
        }
    }

    /// Stops listening (a router in this process stops when dropped).
    pub(super) async fn unbind(&self) -> Result<(), DeployError> {
        match self {
            AppRoute::Here(r) => {
                r.switch(None);
                Ok(())
            }
            AppRoute::Process { client, app } => {
                client.unbind(app.as_str()).await.map_err(router_err)
            }
        }
    }

    /// Routes `host` on the shared Host-routed port to this app, when it is routed here.
    pub(super) fn route_host(&self, host_router: &HostRouter, host: &str) {
        if let AppRoute::Here(r) = self {
            host_router.route(host, r);
        }
    }
}

impl Replaced {
    /// Waits until its connections closed or `timeout` passed: whether it drained, and how many
    /// were left.
    pub(super) async fn drain(&self, timeout: Duration) -> (bool, usize) {
        match self {
            Replaced::Here(up) => (up.drain(timeout).await, up.active()),
            Replaced::Process { client, app, addr } => client
                .drain(app.as_str(), *addr, timeout)
                .await
                .unwrap_or_else(|e| {
                    tracing::warn!("cannot drain {addr} of {app}: {e}");
                    (false, 0)
                }),
        }
    }
}
