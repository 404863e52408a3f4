//! [`LocalDeployerBuilder`]: the settings of a [`LocalDeployer`].

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hephy_core::{DeployError, Platform};
use hephy_oci::RegistryOptions;

use super::{prepare_data_dir, Inner, LocalDeployer};
use crate::ledger::Ledger;
use crate::router::control::RouterClient;
use crate::runc::{CgroupSupport, Runc};
use crate::unpack::UnpackLimits;

/// Builds a [`LocalDeployer`]; from [`LocalDeployer::builder`].
#[derive(Debug, Clone)]
#[must_use]
pub struct LocalDeployerBuilder {
    pub(super) data_dir: PathBuf,
    pub(super) layout_root: Option<PathBuf>,
    pub(super) runc: PathBuf,
    pub(super) runc_root: Option<PathBuf>,
    pub(super) pasta: PathBuf,
    pub(super) bind: IpAddr,
    pub(super) drain_timeout: Duration,
    pub(super) stop_timeout: Duration,
    pub(super) platform: Platform,
    pub(super) registry: RegistryOptions,
    pub(super) host_routing: Option<SocketAddr>,
    pub(super) create_on_deploy: bool,
    pub(super) unpack_limits: UnpackLimits,
    pub(super) router_process: Option<RouterClient>,
}

impl LocalDeployerBuilder {
    pub(super) fn new(data_dir: PathBuf) -> Self {
        LocalDeployerBuilder {
            data_dir,
            layout_root: None,
            runc: PathBuf::from("runc"),
            runc_root: None,
            pasta: PathBuf::from("pasta"),
            bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            drain_timeout: Duration::from_secs(10),
            stop_timeout: Duration::from_secs(10),
            platform: Platform::host(),
            registry: RegistryOptions::from_env(),
            host_routing: None,
            create_on_deploy: false,
            unpack_limits: UnpackLimits::default(),
            router_process: None,
        }
    }

    /// Routes through a router process (`hephy-router`, see [`crate::router::control`]) instead
    /// of routers inside this process: the apps' addresses then stay served while this process
    /// stops, crashes or is replaced, and [`LocalDeployer::restore`] adopts what runs. The
    /// router must already answer on `router`'s socket when the deployer is used. Host routing
    /// ([`LocalDeployerBuilder::host_routing`]) stays in this process.
    pub fn router_process(mut self, router: RouterClient) -> Self {
        self.router_process = Some(router);
        self
    }

    /// Caps on what unpacking one image may read and write: a layer's decompressed size and
    /// entry count, the size of manifests and configs (default [`UnpackLimits::default`]: 8 GiB,
    /// 1,000,000 entries, 4 MiB). An image over a cap fails its deploy with an error naming it.
    pub fn unpack_limits(mut self, limits: UnpackLimits) -> Self {
        self.unpack_limits = limits;
        self
    }

    /// Creates an app on its first deploy instead of refusing it as unknown (off by default), as
    /// a server that takes pushes to apps made before this deployer knew them needs.
    pub fn create_apps_on_deploy(mut self, yes: bool) -> Self {
        self.create_on_deploy = yes;
        self
    }

    /// Also serves every app on one shared address, routed by the HTTP `Host` header:
    /// `APP.localhost` (see [`LocalDeployer::host_url`]). Off by default.
    pub fn host_routing(mut self, addr: SocketAddr) -> Self {
        self.host_routing = Some(addr);
        self
    }

    /// How images from registries are pulled: credentials, plain-HTTP registries, retries
    /// (default: [`RegistryOptions::from_env`], Docker `config.json` credentials).
    pub fn registry(mut self, options: RegistryOptions) -> Self {
        self.registry = options;
        self
    }

    /// Where `hephy.local/<app>` image references are found: the OCI layout at
    /// `<root>/hephy.local/<repository>` (default: `<data dir>/layouts`).
    pub fn layout_root(mut self, root: impl Into<PathBuf>) -> Self {
        self.layout_root = Some(root.into());
        self
    }

    /// The `runc` binary (default: `runc` from `PATH`).
    pub fn runc(mut self, binary: impl Into<PathBuf>) -> Self {
        self.runc = binary.into();
        self
    }

    /// The `pasta` binary that connects containers to the network (default: `pasta` from
    /// `PATH`, Debian's `passt` package).
    pub fn pasta(mut self, binary: impl Into<PathBuf>) -> Self {
        self.pasta = binary.into();
        self
    }

    /// runc's state directory (`runc --root`; default: runc's own, `/run/runc`).
    pub fn runc_root(mut self, root: impl Into<PathBuf>) -> Self {
        self.runc_root = Some(root.into());
        self
    }

    /// The address app routers listen on (default: 127.0.0.1).
    pub fn bind(mut self, ip: IpAddr) -> Self {
        self.bind = ip;
        self
    }

    /// How long an old release may keep serving open connections after a switch (default 10s).
    pub fn drain_timeout(mut self, timeout: Duration) -> Self {
        self.drain_timeout = timeout;
        self
    }

    /// How long a release has to exit after SIGTERM before it is killed (default 10s).
    pub fn stop_timeout(mut self, timeout: Duration) -> Self {
        self.stop_timeout = timeout;
        self
    }

    /// The platform whose manifest is chosen from multi-platform images (default: this host's).
    pub fn platform(mut self, platform: Platform) -> Self {
        self.platform = platform;
        self
    }

    /// Opens the deployer, creating the data directory if needed. Nothing runs yet: call
    /// [`LocalDeployer::restore`] to bring back the apps of an earlier run.
    pub fn build(self) -> Result<LocalDeployer, DeployError> {
        let ledger = Ledger::open(self.data_dir.join("apps"))?;
        let rootfs_cache = self.data_dir.join("rootfs");
        let containers_dir = self.data_dir.join("containers");
        prepare_data_dir(&self.data_dir, &rootfs_cache, &containers_dir)?;
        let mut runc = Runc::new(&self.runc);
        if let Some(root) = &self.runc_root {
            runc = runc.with_root(root);
        }
        let layout_root = self
            .layout_root
            .clone()
            .unwrap_or_else(|| self.data_dir.join("layouts"));
        Ok(LocalDeployer {
            inner: Arc::new(Inner {
                layout_root,
                rootfs_cache,
                containers_dir,
                ledger,
                runc,
                cgroups: CgroupSupport::detect(),
                id_lock: std::sync::Mutex::new(()),
                slots: tokio::sync::Mutex::new(HashMap::new()),
                host_router: tokio::sync::OnceCell::new(),
                opts: self,
            }),
        })
    }
}
