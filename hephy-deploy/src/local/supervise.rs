//! Supervision: the current release of every app is watched, and a process found dead is
//! started again, with a wait that grows while it keeps dying (like Docker's and Kubernetes'
//! restart policies). Each app's record (`process` state document) says how it fares:
//! [`LocalDeployer::process`].
//!
//! The watching runs in the process that holds the deployer (hephy-server): while that process
//! is down, a dead app stays down (its router answers 503) until it is back.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hephy_api::ProcessInfo;
use hephy_core::{AppName, DeployError, Events, ReleaseVersion, Stage};
use serde::{Deserialize, Serialize};

use super::{logs, LocalDeployer};

/// Restarts within this window count toward the wait before the next one.
const WINDOW: u64 = 300;
/// This many restarts within the window make a crash loop.
const CRASH_LOOP: usize = 5;
/// The longest wait between restarts.
const MAX_WAIT: u64 = 60;
/// How many lines of a dead process are kept.
const LAST_LINES: usize = 10;

/// The `process` state document of an app.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Record {
    version: Option<ReleaseVersion>,
    restarts: u32,
    /// Seconds since the epoch of recent restarts (within [`WINDOW`]).
    recent: Vec<u64>,
    last_lines: Vec<String>,
    state: String,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Record {
    /// Seconds to wait after the last restart before the next: 0 for the first in a while, then
    /// 1, 2, 4 ... up to [`MAX_WAIT`].
    fn wait(&self) -> u64 {
        match self.recent.len() {
            0 => 0,
            n => (1u64 << (n - 1).min(6)).min(MAX_WAIT),
        }
    }
}

impl LocalDeployer {
    /// Watches every app's current release every `every` until the returned task is aborted
    /// (or the runtime ends): see [`LocalDeployer::check_processes`].
    pub fn supervise(&self, every: Duration, events: Events) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                me.check_processes(&events).await;
            }
        })
    }

    /// One round of supervision: every app whose current release no longer runs (its process
    /// died, or its network helper did) is started again, unless it died so often lately that
    /// its wait has not passed. An app in the middle of a deploy is left to it.
    pub async fn check_processes(&self, events: &Events) {
        let events = events.with_stage(Stage::Deploy);
        let Ok(apps) = self.inner.ledger.apps() else {
            return;
        };
        for app in apps {
            if let Err(e) = self.check_process(&app, &events).await {
                events.warn(format!("{app}: cannot restart its process: {e}"));
            }
        }
    }

    async fn check_process(&self, app: &AppName, events: &Events) -> Result<(), DeployError> {
        let Some(slot) = self.inner.slots.lock().await.get(app).cloned() else {
            return Ok(());
        };
        // A deploy holds the lock for as long as it runs: never wait for it.
        let Ok(mut live) = slot.live.try_lock() else {
            return Ok(());
        };
        let Some(current) = live.clone() else {
            return Ok(());
        };
        let mut record: Record = self.inner.ledger.read(app, "process")?.unwrap_or_default();
        if record.version != Some(current.version) {
            record = Record {
                version: Some(current.version),
                state: "running".into(),
                ..Record::default()
            };
        }
        if self.is_serving(&current.container).await? {
            if record.state != "running" {
                record.state = "running".into();
                self.inner.ledger.write(app, "process", &record)?;
            }
            return Ok(());
        }
        let t = now();
        record.recent.retain(|r| t.saturating_sub(*r) < WINDOW);
        let log = self
            .inner
            .ledger
            .app_dir(app)
            .join("logs")
            .join(format!("{}.log", current.version));
        if record.state == "running" {
            record.last_lines = logs::tail(&log, LAST_LINES);
            events.warn(format!(
                "{app}: {} stopped running; starting it again",
                current.version
            ));
        }
        let crash_loop = record.recent.len() >= CRASH_LOOP;
        if let Some(last) = record.recent.last() {
            if t < last + record.wait() {
                record.state = if crash_loop {
                    "crash-loop"
                } else {
                    "restarting"
                }
                .into();
                self.inner.ledger.write(app, "process", &record)?;
                return Ok(());
            }
        }
        record.state = "restarting".into();
        record.restarts += 1;
        record.recent.push(t);
        self.inner.ledger.write(app, "process", &record)?;

        // The dead container goes (with its network helper, so the router answers 503 until
        // the new one is live), then the same release starts again.
        self.stop_container(&current.container).await?;
        *live = None;
        self.inner.ledger.remove(app, "live")?;
        let release = self
            .inner
            .ledger
            .current(app)?
            .ok_or_else(|| DeployError::NoRelease { app: app.clone() })?;
        let (image, rootfs) = self.prepare_image(&release.image, events).await?;
        let ready = std::time::Instant::now();
        let new = self.launch(&release, &image, &rootfs, events).await?;
        self.go_live(app, &slot, &mut live, new, ready, events)
            .await?;
        record.state = "running".into();
        self.inner.ledger.write(app, "process", &record)?;
        events.log(format!(
            "{app}: {} runs again (restart {})",
            release.version, record.restarts
        ));
        Ok(())
    }

    /// How `app`'s current release fares under supervision; `None` without a release.
    pub fn process(&self, app: &AppName) -> Option<ProcessInfo> {
        let current = self.inner.ledger.current(app).ok()??;
        let record: Record = self
            .inner
            .ledger
            .read(app, "process")
            .ok()
            .flatten()
            .filter(|r: &Record| r.version == Some(current.version))
            .unwrap_or_else(|| Record {
                state: "running".into(),
                ..Record::default()
            });
        let mut info = ProcessInfo::default();
        info.state = record.state;
        info.restarts = record.restarts;
        info.last_restart = record.recent.last().copied();
        info.last_lines = record.last_lines;
        Some(info)
    }
}
