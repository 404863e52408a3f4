//! A release's container: confined (see `network.rs` and `ids.rs`),
//! started, health-checked and stopped.
//!
//! Starting one takes four steps: `runc create` makes its namespaces, pasta joins its network
//! namespace to the host, `runc start` runs the app, and the health check waits for it.
//! Stopping one stops the container, then its pasta.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};

use hephy_core::{format_elapsed, AppName, DeployError, Events, Release};

use super::network::{self, Attach, ContainerDir};
use super::{container_id, free_port, health, ids, is_container_of, logs, other, Live};
use super::{LocalDeployer, LOG_TAIL};
use crate::runc::{prepare_mount_points, runtime_spec, SpecInput};
use crate::unpack::ResolvedImage;

impl LocalDeployer {
    fn container_dir(&self, id: &str) -> ContainerDir {
        ContainerDir::new(&self.inner.containers_dir, id)
    }

    /// Starts `release` in a new container and waits until it is healthy. On failure the
    /// container is removed and the error carries the tail of its log.
    pub(super) async fn launch(
        &self,
        release: &Release,
        image: &ResolvedImage,
        rootfs: &Path,
        events: &Events,
    ) -> Result<Live, DeployError> {
        let app = &release.app;
        let id = container_id(app, release.version);
        let app_dir = self.inner.ledger.app_dir(app);
        let bundle = app_dir.join("bundles").join(release.version.to_string());
        let log_dir = app_dir.join("logs");
        let log = log_dir.join(format!("{}.log", release.version));
        for d in [&bundle, &log_dir] {
            std::fs::create_dir_all(d)
                .map_err(|e| other(format!("cannot create {}", d.display()), e))?;
        }
        let ids = ids::ids_of(&self.inner.ledger, app, &self.inner.id_lock)?;
        ids::check_reachable(rootfs, ids)?;
        // A container of this number may be left from an attempt that failed or crashed.
        self.stop_container(&id).await?;

        let dir = self.container_dir(&id);
        let egress = release.deploy.egress;
        let dns_forward = network::write_etc(&dir, app.as_str(), egress)
            .map_err(|e| other(format!("cannot prepare the container {id}: {e}"), e))?;
        // The app has a network of its own, so it listens on the port it asked for; the router
        // reaches it through a free port of the host's loopback.
        let app_port = release.deploy.port;
        let host_port = free_port(Ipv4Addr::LOCALHOST.into())?;
        let spec = runtime_spec(
            &image.config,
            &SpecInput {
                rootfs,
                hostname: app.as_str(),
                config: &release.config,
                port: app_port,
                extra_env: vec![
                    ("HEPHY_APP".into(), app.to_string()),
                    ("HEPHY_RELEASE".into(), release.version.to_string()),
                ],
                resources: &release.deploy.resources,
                cgroups: self.inner.cgroups,
                ids: Some(ids),
                etc: Some(dir.etc()),
            },
        )
        .map_err(|e| other(format!("cannot run image {}: {e}", release.image), e))?;
        for w in &spec.warnings {
            events.warn(w);
        }
        prepare_mount_points(&spec.spec, rootfs).map_err(|e| {
            other(
                format!("cannot make the mount points in {}: {e}", rootfs.display()),
                e,
            )
        })?;
        let config_json = serde_json::to_vec_pretty(&spec.spec)
            .map_err(|e| other("cannot write the runtime spec", e))?;
        // The spec carries the config vars in the process's environment: owner-only.
        hephy_core::fs::write_atomic(
            &bundle.join("config.json"),
            &config_json,
            hephy_core::fs::FileMode::Private,
        )
        .map_err(|e| other(format!("cannot write {}", bundle.display()), e))?;

        events.log(format!(
            "starting {} as container {id} (host uids {}+, port {app_port} forwarded from 127.0.0.1:{host_port}{})",
            release.version,
            ids.host_first,
            if egress == hephy_core::Egress::Deny { ", no egress" } else { "" }
        ));
        let attach = Attach {
            pasta: &self.inner.opts.pasta,
            pid: 0, // known once `runc create` has made the process
            host_port,
            app_port,
            egress,
            dns_forward,
        };
        let unhealthy = |reason: String| DeployError::Unhealthy {
            app: app.clone(),
            version: release.version,
            reason,
            log_tail: logs::tail(&log, LOG_TAIL),
        };
        if let Err(reason) = self.start(&id, &bundle, &log, &dir, attach).await {
            let _ = self.stop_container(&id).await;
            return Err(unhealthy(reason));
        }

        let addr = SocketAddr::new(Ipv4Addr::LOCALHOST.into(), host_port);
        if let Err(reason) = self.wait_healthy(release, &id, addr, events).await {
            events.warn(format!("{} is not healthy: {reason}", release.version));
            let _ = self.stop_container(&id).await;
            return Err(unhealthy(reason));
        }
        Ok(Live {
            version: release.version,
            container: id,
            port: host_port,
        })
    }

    /// `runc create`, pasta, `runc start`.
    async fn start(
        &self,
        id: &str,
        bundle: &Path,
        log: &Path,
        dir: &ContainerDir,
        mut attach: Attach<'_>,
    ) -> Result<(), String> {
        let runc = &self.inner.runc;
        runc.create(id, bundle, log)
            .await
            .map_err(|e| e.to_string())?;
        attach.pid = match runc.state(id).await {
            Ok(Some(s)) if s.pid > 0 => s.pid,
            Ok(_) => return Err(format!("container {id} has no process after `runc create`")),
            Err(e) => return Err(e.to_string()),
        };
        network::attach(dir, &attach)
            .await
            .map_err(|e| format!("cannot connect its network: {e}"))?;
        runc.start(id).await.map_err(|e| e.to_string())
    }

    /// Probes until healthy, the container exits, or the health timeout passes. Probes start
    /// 20ms apart and back off to the configured interval, so a fast app switches fast.
    async fn wait_healthy(
        &self,
        release: &Release,
        id: &str,
        addr: SocketAddr,
        events: &Events,
    ) -> Result<(), String> {
        let health = &release.deploy.health;
        let path = health.path.as_deref();
        let started = Instant::now();
        let deadline = started + health.timeout;
        let mut wait = Duration::from_millis(20);
        let mut last = String::new();
        let mut probes = 0u32;
        loop {
            let pid = match self.inner.runc.state(id).await {
                Ok(Some(s)) if s.is_running() => s.pid,
                Ok(_) => return Err(format!("it exited before it became healthy ({last})")),
                Err(e) => return Err(format!("cannot check its container: {e}")),
            };
            probes += 1;
            let probe_timeout = health.interval.max(Duration::from_secs(1));
            // pasta accepts on the host port whether or not the app listens behind it, so a
            // bare connect proves nothing: the app's own socket must be listening.
            let result = match path {
                None if !health::listens(pid, release.deploy.port) => Err(format!(
                    "nothing listens on port {} in the container yet",
                    release.deploy.port
                )),
                _ => health::probe(addr, path, probe_timeout).await,
            };
            match result {
                Ok(what) => {
                    events.log(format!(
                        "health check passed: {what} after {} ({probes} probe(s))",
                        format_elapsed(started.elapsed())
                    ));
                    return Ok(());
                }
                Err(reason) => {
                    if reason != last {
                        events.log(format!("health probe {probes}: {reason}"));
                        last = reason;
                    }
                }
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(format!(
                    "no healthy answer within {} ({last})",
                    format_elapsed(health.timeout)
                ));
            }
            tokio::time::sleep(wait.min(deadline - now)).await;
            wait = (wait * 2).min(health.interval.max(Duration::from_millis(20)));
        }
    }

    /// Whether container `id` runs with its network attached.
    pub(super) async fn is_serving(&self, id: &str) -> Result<bool, DeployError> {
        let running = self
            .inner
            .runc
            .state(id)
            .await
            .map_err(|e| other("cannot ask runc about a container", e))?
            .is_some_and(|s| s.is_running());
        Ok(running && network::is_attached(&self.container_dir(id)))
    }

    /// Removes every container of `app` except `keep`, with what is left of their networks.
    pub(super) async fn remove_strays(
        &self,
        app: &AppName,
        keep: Option<&str>,
    ) -> Result<(), DeployError> {
        let mut ids: Vec<String> = self
            .inner
            .runc
            .list()
            .await
            .map_err(|e| other("cannot list containers with runc", e))?
            .into_iter()
            .map(|c| c.id)
            .collect();
        // pasta outlives a container that died with no one to stop it.
        if let Ok(entries) = std::fs::read_dir(&self.inner.containers_dir) {
            ids.extend(
                entries
                    .flatten()
                    .filter_map(|e| e.file_name().into_string().ok()),
            );
        }
        ids.sort();
        ids.dedup();
        for id in ids {
            if is_container_of(&id, app) && Some(id.as_str()) != keep {
                self.stop_container(&id).await?;
            }
        }
        Ok(())
    }

    /// Stops and removes container `id`, then its network.
    pub(super) async fn stop_container(&self, id: &str) -> Result<(), DeployError> {
        self.inner
            .runc
            .stop(id, self.inner.opts.stop_timeout)
            .await
            .map_err(|e| other(format!("cannot stop container {id}"), e))?;
        let dir = self.container_dir(id);
        if network::exists(&dir) {
            network::detach(&dir)
                .await
                .map_err(|e| other(format!("cannot remove the network of {id}: {e}"), e))?;
        }
        Ok(())
    }
}
