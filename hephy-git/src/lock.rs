//! The per-app push lock: one push to an app at a time, never stuck.
//!
//! Two layers: an in-process table that says who holds the lock and since when, and an OS file
//! lock (`flock`) on `<data_dir>/locks/<app>.lock` that keeps a second server process on the same
//! data directory out. The OS releases a file lock when its process dies, so a crash can never
//! leave a stale lock behind; the file's content (who and when) is only informative.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use fs4::fs_std::FileExt;
use hephy_core::AppName;

/// Who holds a push lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockHolder {
    /// The user who pushes.
    pub user: String,
    /// When the push started, as RFC 3339 UTC.
    pub started: String,
}

/// The error returned when an app's push lock cannot be taken.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LockError {
    /// Another push to the app is running.
    #[error("another push to {app} is running (started by {} at {}); wait for it to finish", .holder.user, .holder.started)]
    Busy {
        /// The app.
        app: AppName,
        /// Who pushes.
        holder: LockHolder,
    },
    /// The lock file could not be used.
    #[error("cannot use the push lock {}: {source}; check that the data directory is writable", path.display())]
    Io {
        /// The lock file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

type Table = Arc<Mutex<HashMap<AppName, LockHolder>>>;

/// The push locks of one data directory.
#[derive(Debug, Clone)]
pub(crate) struct PushLocks {
    dir: PathBuf,
    held: Table,
}

/// A held push lock, released when dropped (on every path, including a panic or a dropped
/// future).
#[derive(Debug)]
pub(crate) struct PushGuard {
    app: AppName,
    held: Table,
    // Closing the file releases the OS lock.
    _file: File,
}

impl Drop for PushGuard {
    fn drop(&mut self) {
        let mut held = match self.held.lock() {
            Ok(h) => h,
            Err(poisoned) => poisoned.into_inner(),
        };
        held.remove(&self.app);
    }
}

impl PushLocks {
    pub(crate) fn new(data_dir: &Path) -> Self {
        PushLocks {
            dir: data_dir.join("locks"),
            held: Arc::default(),
        }
    }

    /// Takes the lock of `app` for `user`, or says at once who holds it.
    pub(crate) fn try_lock(&self, app: &AppName, user: &str) -> Result<PushGuard, LockError> {
        let mut held = match self.held.lock() {
            Ok(h) => h,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some(holder) = held.get(app) {
            return Err(LockError::Busy {
                app: app.clone(),
                holder: holder.clone(),
            });
        }
        let path = self.dir.join(format!("{app}.lock"));
        let io = |source| LockError::Io {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(&self.dir).map_err(io)?;
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        if !file.try_lock_exclusive().map_err(io)? {
            // Another process on the same data directory pushes to this app.
            let mut text = String::new();
            let _ = file.read_to_string(&mut text);
            let mut lines = text.lines();
            let holder = LockHolder {
                user: lines.next().unwrap_or("another server process").to_owned(),
                started: lines.next().unwrap_or("an unknown time").to_owned(),
            };
            return Err(LockError::Busy {
                app: app.clone(),
                holder,
            });
        }
        let holder = LockHolder {
            user: user.to_owned(),
            started: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
        };
        file.set_len(0).map_err(io)?;
        file.rewind().map_err(io)?;
        writeln!(
            file,
            "{}\n{}\npid {}",
            holder.user,
            holder.started,
            std::process::id()
        )
        .map_err(io)?;
        held.insert(app.clone(), holder);
        Ok(PushGuard {
            app: app.clone(),
            held: self.held.clone(),
            _file: file,
        })
    }

    /// Who holds the lock of `app` in this process, if anyone.
    pub(crate) fn holder(&self, app: &AppName) -> Option<LockHolder> {
        let held = match self.held.lock() {
            Ok(h) => h,
            Err(poisoned) => poisoned.into_inner(),
        };
        held.get(app).cloned()
    }
}
