//! The local deployer: releases run as `runc` containers on this host, behind a router that
//! gives every app a stable address.
//!
//! On disk, under the data directory:
//!
//! ```text
//! apps/<app>/...               the ledger: releases and state (see crate::ledger), mode 0700
//! apps/<app>/bundles/vN/       the runtime bundle (config.json) of release N
//! apps/<app>/logs/vN.log       what release N wrote to stdout and stderr
//! containers/<container id>/   its /etc files, network namespace and pasta (mode 0700)
//! rootfs/<manifest hex>/rootfs unpacked images, shared by releases of the same image
//! ```
//!
//! Containers are confined: each has its own network namespace (joined to the host by pasta,
//! see `network.rs`), a user namespace mapping its root to a host uid range of its app's own
//! (see `ids.rs`), Docker's default seccomp profile, no capabilities, a read-only root, and
//! memory, CPU and process-count limits (see [`crate::runc::runtime_spec`]). Since the
//! containers' users are unprivileged on the host, they must be able to pass through the data
//! directory to their root filesystems: the data directory and `rootfs/` are made `o+x`.

mod builder;
mod container;
mod health;
mod ids;
mod image;
pub mod logs;
mod network;
mod route;
mod runtime;
mod supervise;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use hephy_core::{
    async_trait, format_elapsed, AppName, ConfigVarError, ConfigVars, DeployError, Deployer,
    Events, NewRelease, Release, ReleaseVersion, Stage, Strategy,
};
use serde::{Deserialize, Serialize};

pub use self::builder::LocalDeployerBuilder;
pub use self::logs::LogStream;
use self::route::AppRoute;
use crate::ledger::{Ledger, LedgerError};
use crate::router::HostRouter;
use crate::runc::{CgroupSupport, Runc};

/// The registry name of images kept in local OCI layouts, as `hephy-backends` publishes them.
pub use hephy_oci::LOCAL_REGISTRY;

/// How many log lines an [`DeployError::Unhealthy`] carries.
const LOG_TAIL: usize = 20;

/// What runs now for an app, kept as the `live` state document.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
struct Live {
    version: ReleaseVersion,
    container: String,
    port: u16,
}

/// The app's stable address, kept as the `router` state document.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct RouterState {
    port: u16,
}

struct Slot {
    router: AppRoute,
    /// Held for the whole of a deploy, so the releases of one app start one at a time.
    live: tokio::sync::Mutex<Option<Live>>,
}

struct Inner {
    opts: LocalDeployerBuilder,
    layout_root: PathBuf,
    rootfs_cache: PathBuf,
    containers_dir: PathBuf,
    ledger: Ledger,
    runc: Runc,
    cgroups: CgroupSupport,
    /// Held while an app's host id range is allocated.
    id_lock: std::sync::Mutex<()>,
    slots: tokio::sync::Mutex<HashMap<AppName, Arc<Slot>>>,
    host_router: tokio::sync::OnceCell<HostRouter>,
}

/// What [`LocalDeployer::restore`] did.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct RestoreReport {
    /// Apps whose running container from an earlier run was taken over as it was.
    pub reused: Vec<AppName>,
    /// Apps whose current release was started again.
    pub restarted: Vec<AppName>,
    /// Apps without a release: only their router listens.
    pub idle: Vec<AppName>,
    /// Apps that could not be brought back, with why.
    pub failed: Vec<(AppName, DeployError)>,
}

/// Runs every app's releases as `runc` containers on this host.
///
/// Each app gets a stable address ([`LocalDeployer::url`]) served by a TCP router. A deploy
/// unpacks the image, starts the new release beside the old one on a free port (given as
/// `PORT`), waits until it is healthy, switches the router to it, drains the old release and
/// stops it. A release that does not become healthy is stopped and not recorded, and the old
/// one keeps serving.
///
/// Dropping the deployer stops the routers but leaves the containers running, as a crash
/// would; [`LocalDeployer::restore`] in the next run takes them over. [`LocalDeployer::shutdown`]
/// stops everything.
///
/// ```no_run
/// # async fn demo(image: hephy_core::Reference) -> Result<(), Box<dyn std::error::Error>> {
/// use hephy_core::{Deployer, DeployConfig, Events, NewRelease, ReleaseCause};
/// use hephy_deploy::local::LocalDeployer;
///
/// let deployer = LocalDeployer::builder("/var/lib/hephy").layout_root("/var/lib/hephy/images").build()?;
/// deployer.restore(&Events::discard()).await?;
/// let app = "hello".parse()?;
/// deployer.create_app(&app).await?;
/// let cause = ReleaseCause::Image { reference: image.to_string() };
/// let release = deployer
///     .deploy(NewRelease::new(app.clone(), image, DeployConfig::default(), cause), &Events::discard())
///     .await?;
/// println!("{} of {app} serves {}", release.version, deployer.url(&app)?);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct LocalDeployer {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for LocalDeployer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalDeployer")
            .field("data_dir", &self.inner.opts.data_dir)
            .field("layout_root", &self.inner.layout_root)
            .finish_non_exhaustive()
    }
}

fn other(message: impl Into<String>, source: impl Into<hephy_core::BoxError>) -> DeployError {
    DeployError::other(message, source)
}

fn plain(message: impl Into<String>) -> DeployError {
    DeployError::Other {
        message: message.into(),
        source: None,
    }
}

/// The host name an app answers to on the shared port.
fn host_name(app: &AppName) -> String {
    format!("{app}.localhost")
}

/// Container ids are `hephy-<app>-v<N>`.
fn container_id(app: &AppName, version: ReleaseVersion) -> String {
    format!("hephy-{app}-{version}")
}

/// Whether `id` is a container of `app` (and not of an app whose name merely starts alike).
fn is_container_of(id: &str, app: &AppName) -> bool {
    id.strip_prefix(&format!("hephy-{app}-v"))
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

fn free_port(ip: IpAddr) -> Result<u16, DeployError> {
    let l = std::net::TcpListener::bind(SocketAddr::new(ip, 0))
        .map_err(|e| other(format!("cannot find a free port on {ip}"), e))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| other(format!("cannot find a free port on {ip}"), e))
}

/// Makes the data directory's parts mode 0700, except for the path to the root filesystems,
/// which the containers' unprivileged users must pass through (`o+x`).
fn prepare_data_dir(data: &Path, rootfs: &Path, containers: &Path) -> Result<(), DeployError> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};

    let fail = |dir: &Path, e: std::io::Error| {
        other(
            format!(
                "cannot set up {}: {e}; check the data directory's owner and permissions",
                dir.display()
            ),
            e,
        )
    };
    for dir in [rootfs, containers] {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| fail(dir, e))?;
    }
    for dir in [data, rootfs] {
        let mode = std::fs::metadata(dir)
            .map_err(|e| fail(dir, e))?
            .permissions()
            .mode();
        if mode & 0o001 == 0 {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode | 0o001))
                .map_err(|e| fail(dir, e))?;
        }
    }
    // Release files hold config vars, which are often secrets; o+x on the data directory
    // must not open them to others.
    let apps = data.join("apps");
    std::fs::set_permissions(&apps, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| fail(&apps, e))
}

fn validate(release: &NewRelease) -> Result<(), DeployError> {
    if let Some(config) = &release.config {
        for (k, v) in config.iter() {
            ConfigVars::validate_name(k)?;
            if v.contains('\0') {
                return Err(ConfigVarError::Value { name: k.to_owned() }.into());
            }
        }
    }
    if let Some(p) = &release.deploy.health.path {
        if !p.starts_with('/') {
            return Err(plain(format!(
                "[deploy.health] path {p:?} must start with '/', like \"/healthz\""
            )));
        }
    }
    if release.image.digest().is_none() {
        return Err(plain(format!(
            "image {} is not pinned to a digest: deploy the reference a publisher returned, which ends in @sha256:...",
            release.image
        )));
    }
    Ok(())
}

impl LocalDeployer {
    /// A builder for a deployer keeping its state in `data_dir`.
    pub fn builder(data_dir: impl Into<PathBuf>) -> LocalDeployerBuilder {
        LocalDeployerBuilder::new(data_dir.into())
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.inner.opts.data_dir
    }

    /// The release ledger.
    pub fn ledger(&self) -> &Ledger {
        &self.inner.ledger
    }

    /// Creates `app` and starts its router on a newly chosen port that stays its address.
    pub async fn create_app(&self, app: &AppName) -> Result<(), DeployError> {
        let port = free_port(self.inner.opts.bind)?;
        self.inner.ledger.create_app(app).map_err(|e| match e {
            LedgerError::AppExists { .. } => plain(e.to_string()),
            e => e.into(),
        })?;
        self.inner
            .ledger
            .write(app, "router", &RouterState { port })?;
        self.slot(app).await?;
        Ok(())
    }

    /// The created apps, in name order.
    pub async fn apps(&self) -> Result<Vec<AppName>, DeployError> {
        Ok(self.inner.ledger.apps()?)
    }

    /// The app's stable address, like `http://127.0.0.1:40123`.
    pub fn url(&self, app: &AppName) -> Result<String, DeployError> {
        let addr = self.addr(app)?;
        let ip = if addr.ip().is_unspecified() {
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        } else {
            addr.ip()
        };
        Ok(format!("http://{}", SocketAddr::new(ip, addr.port())))
    }

    /// The app's address on the shared Host-routed port, like `http://hello.localhost:8000`,
    /// when [`LocalDeployerBuilder::host_routing`] is on.
    pub async fn host_url(&self, app: &AppName) -> Result<Option<String>, DeployError> {
        if !self.inner.ledger.has_app(app) {
            return Err(DeployError::UnknownApp { app: app.clone() });
        }
        Ok(self
            .host_router()
            .await?
            .map(|h| format!("http://{}:{}", host_name(app), h.local_addr().port())))
    }

    /// The shared Host-routed router, started on first use; `None` when host routing is off.
    async fn host_router(&self) -> Result<Option<&HostRouter>, DeployError> {
        let Some(addr) = self.inner.opts.host_routing else {
            return Ok(None);
        };
        self.inner
            .host_router
            .get_or_try_init(|| async {
                HostRouter::bind(addr).await.map_err(|e| {
                    other(
                        format!(
                            "cannot listen on {addr} for host routing: {e}; choose another address"
                        ),
                        e,
                    )
                })
            })
            .await
            .map(Some)
    }

    /// The socket address the app's router listens on.
    pub fn addr(&self, app: &AppName) -> Result<SocketAddr, DeployError> {
        let state: RouterState = self.inner.ledger.read(app, "router")?.ok_or_else(|| {
            plain(format!(
                "app {app} has no router port recorded: destroy and create it again"
            ))
        })?;
        Ok(SocketAddr::new(self.inner.opts.bind, state.port))
    }

    /// Stops the app's releases and router and removes it with its history and logs.
    pub async fn destroy_app(&self, app: &AppName, events: &Events) -> Result<(), DeployError> {
        if !self.inner.ledger.has_app(app) {
            return Err(DeployError::UnknownApp { app: app.clone() });
        }
        let events = events.with_stage(Stage::Deploy);
        let slot = match self.inner.slots.lock().await.remove(app) {
            Some(s) => Some(s),
            // Not routed by this process yet (a router process may still serve it).
            None => self.slot(app).await.ok(),
        };
        self.inner.slots.lock().await.remove(app);
        if let Some(host_router) = self.inner.host_router.get() {
            host_router.unroute(&host_name(app));
        }
        if let Some(slot) = slot {
            let mut live = slot.live.lock().await;
            slot.router.unbind().await?;
            if let Some(l) = live.take() {
                events.log(format!("stopping {} of {app}", l.version));
                self.stop_container(&l.container).await?;
            }
        }
        self.remove_strays(app, None).await?;
        self.inner.ledger.remove_app(app)?;
        events.log(format!("destroyed {app}"));
        Ok(())
    }

    /// The app's log: what every release wrote, oldest first; with `follow`, the stream keeps
    /// waiting for new lines (of newer releases too) until it is dropped.
    pub async fn logs(&self, app: &AppName, follow: bool) -> Result<LogStream, DeployError> {
        if !self.inner.ledger.has_app(app) {
            return Err(DeployError::UnknownApp { app: app.clone() });
        }
        Ok(logs::stream(
            AppLogs {
                dir: self.inner.ledger.app_dir(app).join("logs"),
            },
            follow,
        ))
    }

    /// Brings back every app after a restart: starts its router on its recorded port, takes
    /// over its current release's container if it still runs, or starts the release again.
    /// Containers of other releases left behind by a crash are removed.
    pub async fn restore(&self, events: &Events) -> Result<RestoreReport, DeployError> {
        let events = events.with_stage(Stage::Deploy);
        let mut report = RestoreReport::default();
        for app in self.inner.ledger.apps()? {
            match self.restore_app(&app, &events).await {
                Ok(Restored::Reused) => report.reused.push(app),
                Ok(Restored::Restarted) => report.restarted.push(app),
                Ok(Restored::Idle) => report.idle.push(app),
                Err(e) => {
                    events.warn(format!("cannot bring back {app}: {e}"));
                    report.failed.push((app, e));
                }
            }
        }
        Ok(report)
    }

    /// Stops every app's router and release. The ledger keeps everything, so a later
    /// [`LocalDeployer::restore`] starts them again.
    pub async fn shutdown(&self) -> Result<(), DeployError> {
        let slots: Vec<(AppName, Arc<Slot>)> = self.inner.slots.lock().await.drain().collect();
        let mut first_err = None;
        for (_, slot) in slots {
            let mut live = slot.live.lock().await;
            if let Err(e) = slot.router.switch(None).await {
                first_err.get_or_insert(e);
            }
            if let Some(l) = live.take() {
                if let Err(e) = self.stop_container(&l.container).await {
                    first_err.get_or_insert(e);
                }
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    async fn restore_app(&self, app: &AppName, events: &Events) -> Result<Restored, DeployError> {
        let slot = self.slot(app).await?;
        let mut live = slot.live.lock().await;
        let Some(current) = self.inner.ledger.current(app)? else {
            self.remove_strays(app, None).await?;
            return Ok(Restored::Idle);
        };
        let keep = live
            .as_ref()
            .filter(|l| l.version == current.version)
            .map(|l| l.container.clone());
        self.remove_strays(app, keep.as_deref()).await?;
        if keep.is_some() {
            events.log(format!(
                "{app}: {} is still running; took it over",
                current.version
            ));
            return Ok(Restored::Reused);
        }
        events.log(format!("{app}: starting {} again", current.version));
        let (image, rootfs) = self.prepare_image(&current.image, events).await?;
        let ready = Instant::now();
        let new = self.launch(&current, &image, &rootfs, events).await?;
        self.go_live(app, &slot, &mut live, new, ready, events)
            .await?;
        Ok(Restored::Restarted)
    }

    /// The app's router, started (on its recorded port) on first use; a container recorded as
    /// live that still runs is put behind it.
    async fn slot(&self, app: &AppName) -> Result<Arc<Slot>, DeployError> {
        let mut slots = self.inner.slots.lock().await;
        if let Some(s) = slots.get(app) {
            return Ok(s.clone());
        }
        if !self.inner.ledger.has_app(app) {
            return Err(DeployError::UnknownApp { app: app.clone() });
        }
        let addr = self.addr(app)?;
        let router = AppRoute::bind(app, addr, self.inner.opts.router_process.as_ref()).await?;
        let mut live: Option<Live> = self.inner.ledger.read(app, "live")?;
        if let Some(l) = &live {
            // A container without its pasta (or from before containers had one) cannot be
            // reached: it is started again. One that serves keeps its traffic (switching a
            // router process to where it already sends traffic changes nothing).
            if self.is_serving(&l.container).await? {
                router.switch(Some(l.port)).await?;
            } else {
                live = None;
            }
        }
        if let Some(host_router) = self.host_router().await? {
            router.route_host(host_router, &host_name(app));
        }
        let slot = Arc::new(Slot {
            router,
            live: tokio::sync::Mutex::new(live),
        });
        slots.insert(app.clone(), slot.clone());
        Ok(slot)
    }

    /// Records `new` as live, switches traffic to it, then drains and stops the previous one.
    async fn go_live(
        &self,
        app: &AppName,
        slot: &Slot,
        live: &mut Option<Live>,
        new: Live,
        ready: Instant,
        events: &Events,
    ) -> Result<(), DeployError> {
        self.inner.ledger.write(app, "live", &new)?;
        let old_upstream = slot.router.switch(Some(new.port)).await?;
        let took = ready.elapsed();
        events.log(format!(
            "switched traffic to {} in {} ms (image ready to traffic switched)",
            new.version,
            took.as_millis()
        ));
        tracing::info!(app = %app, version = %new.version, ms = took.as_millis() as u64, "traffic switched");
        let old = live.replace(new);
        if let Some(old) = old {
            if let Some(up) = old_upstream {
                let (drained, active) = up.drain(self.inner.opts.drain_timeout).await;
                if !drained {
                    events.warn(format!(
                        "{} still had {active} open connection(s) after {}; closing them",
                        old.version,
                        format_elapsed(self.inner.opts.drain_timeout)
                    ));
                }
            }
            events.log(format!("stopping {}", old.version));
            self.stop_container(&old.container).await?;
        }
        Ok(())
    }
}

enum Restored {
    Reused,
    Restarted,
    Idle,
}

struct AppLogs {
    dir: PathBuf,
}

impl logs::LogSource for AppLogs {
    fn files(&self) -> Vec<PathBuf> {
        let mut files: Vec<(ReleaseVersion, PathBuf)> = std::fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let name = e.file_name();
                let v = name.to_str()?.strip_suffix(".log")?.parse().ok()?;
                Some((v, e.path()))
            })
            .collect();
        files.sort();
        files.into_iter().map(|(_, p)| p).collect()
    }
}

#[async_trait]
impl Deployer for LocalDeployer {
    async fn deploy(&self, release: NewRelease, events: &Events) -> Result<Release, DeployError> {
        let events = events.with_stage(Stage::Deploy);
        let app = release.app.clone();
        if !self.inner.ledger.has_app(&app) {
            if !self.inner.opts.create_on_deploy {
                return Err(DeployError::UnknownApp { app });
            }
            self.create_app(&app).await?;
        }
        validate(&release)?;
        let slot = self.slot(&app).await?;
        let mut live = slot.live.lock().await;
        events.log(format!("preparing image {}", release.image));
        let (image, rootfs) = self.prepare_image(&release.image, &events).await?;
        let ready = Instant::now();
        let current = self.inner.ledger.current(&app)?;
        let version = self.inner.ledger.next_version(&app)?;
        let release = release.into_release(version, SystemTime::now(), current.as_ref());
        if release.deploy.strategy == Strategy::Recreate {
            if let Some(old) = live.take() {
                events.log(format!(
                    "stopping {} first (strategy recreate)",
                    old.version
                ));
                slot.router.switch(None).await?;
                self.stop_container(&old.container).await?;
                self.inner.ledger.remove(&app, "live")?;
            }
        }
        let new = self.launch(&release, &image, &rootfs, &events).await?;
        if let Err(e) = self.inner.ledger.record(&release) {
            let _ = self.stop_container(&new.container).await;
            return Err(e.into());
        }
        self.go_live(&app, &slot, &mut live, new, ready, &events)
            .await?;
        events.log(format!(
            "{} of {app} is live at {}",
            release.version,
            self.url(&app)?
        ));
        Ok(release)
    }

    async fn releases(&self, app: &AppName) -> Result<Vec<Release>, DeployError> {
        Ok(self.inner.ledger.releases(app)?)
    }
}

#[cfg(test)]
mod stored_tests {
    //! The state documents of the committed ledger fixtures (tests/deploy/fixtures) read with
    //! this version's types: an older binary reads a newer ledger's documents.
    use super::{Live, RouterState};
    use crate::runc::IdRange;

    type Result = std::result::Result<(), Box<dyn std::error::Error>>;

    macro_rules! fixture {
        ($ledger:literal, $doc:literal) => {
            include_str!(concat!(
                "../../tests/deploy/fixtures/",
                $ledger,
                "/hello/",
                $doc,
                ".json"
            ))
        };
    }

    #[test]
    fn state_documents_of_0_1_and_of_a_newer_version_read() -> Result {
        for (live, router, ids) in [
            (
                fixture!("ledger-0.1", "live"),
                fixture!("ledger-0.1", "router"),
                fixture!("ledger-0.1", "ids"),
            ),
            (
                fixture!("ledger-from-a-newer-version", "live"),
                fixture!("ledger-from-a-newer-version", "router"),
                fixture!("ledger-from-a-newer-version", "ids"),
            ),
        ] {
            let live: Live = serde_json::from_str(live)?;
            assert_eq!((live.version.to_string(), live.port), ("v2".into(), 40001));
            let router: RouterState = serde_json::from_str(router)?;
            assert_eq!(router.port, 40000);
            let ids: IdRange = serde_json::from_str(ids)?;
            assert_eq!((ids.host_first, ids.size), (1_000_000_000, 65536));
        }
        Ok(())
    }
}
