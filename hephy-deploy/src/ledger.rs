//! The release ledger: every app's numbered releases and small state documents, on disk.
//!
//! Layout under the ledger's root directory:
//!
//! ```text
//! <root>/<app>/app.json            the app exists (written last on create)
//! <root>/<app>/releases/v1.json    one hephy-core `Release` per file, serde JSON
//! <root>/<app>/<name>.json         state documents (router port, live release, ...)
//! ```
//!
//! Every file is written with [`hephy_core::fs::write_atomic`]: to a temporary file in the same
//! directory, fsynced, renamed over the target, then the directory is fsynced. A crash leaves
//! either the old or the new content, never a torn file; leftover temporary files start with `.`
//! and are ignored.
//!
//! Releases hold config vars, which are often secrets, so every file is created 0600 and every
//! directory the ledger creates 0700 ([`FileMode::Private`]), from the first byte on.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use hephy_core::fs::{create_atomic, create_dir_all, sync_dir, write_atomic, FileMode};
use hephy_core::{AppName, DeployError, Release, ReleaseVersion};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// The error returned by [`Ledger`] methods.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LedgerError {
    /// Reading or writing a ledger file failed.
    #[error("cannot {action} {}: {source}; check that the data directory exists, is writable and has free space", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// Why it failed.
        #[source]
        source: io::Error,
    },
    /// A ledger file does not hold what it should.
    #[error("{} is corrupt: {source}; restore it from a backup or remove it", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Why it cannot be read.
        #[source]
        source: serde_json::Error,
    },
    /// The app has not been created.
    #[error("unknown app {app}: create the app first")]
    UnknownApp {
        /// The app.
        app: AppName,
    },
    /// The app exists already.
    #[error("app {app} already exists: choose another name, or destroy it first")]
    AppExists {
        /// The app.
        app: AppName,
    },
    /// A release with this number has been recorded already.
    #[error(
        "release {version} of {app} is already recorded: releases are immutable, make a new one"
    )]
    ReleaseExists {
        /// The app.
        app: AppName,
        /// The release.
        version: ReleaseVersion,
    },
}

impl LedgerError {
    /// Advice that names hephy's CLI, for hephy's own tools to show after the message (see
    /// [`hephy_core::PipelineError::hint`]).
    pub fn hint(&self) -> Option<String> {
        match self {
            LedgerError::UnknownApp { app } => Some(format!("run `hephy apps create {app}`")),
            LedgerError::AppExists { app } => Some(format!("run `hephy apps destroy {app}`")),
            _ => None,
        }
    }
}

impl From<LedgerError> for DeployError {
    fn from(e: LedgerError) -> Self {
        match e {
            LedgerError::UnknownApp { app } => DeployError::UnknownApp { app },
            other => DeployError::other("release ledger", other),
        }
    }
}

fn io_err<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> LedgerError + 'a {
    move |source| LedgerError::Io {
        action,
        path: path.to_owned(),
        source,
    }
}

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

#[derive(Serialize, Deserialize)]
struct AppRecord {
    name: AppName,
    #[serde(with = "time_serde")]
    created: SystemTime,
}

mod time_serde {
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        let ms = t.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis();
        s.serialize_u64(u64::try_from(ms).unwrap_or(u64::MAX))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
        let ms = u64::deserialize(d)?;
        Ok(UNIX_EPOCH + Duration::from_millis(ms))
    }
}

/// Every app's releases and state documents under one directory.
///
/// ```
/// use hephy_deploy::ledger::Ledger;
/// let dir = tempfile::tempdir()?;
/// let ledger = Ledger::open(dir.path())?;
/// let app = "hello".parse()?;
/// ledger.create_app(&app)?;
/// assert_eq!(ledger.apps()?, vec![app.clone()]);
/// assert_eq!(ledger.next_version(&app)?.to_string(), "v1");
/// ledger.write(&app, "router", &serde_json::json!({"port": 8000}))?;
/// let router: Option<serde_json::Value> = ledger.read(&app, "router")?;
/// assert_eq!(router.unwrap()["port"], 8000);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct Ledger {
    root: PathBuf,
}

impl Ledger {
    /// Opens (creating it if needed) the ledger in `root`.
    pub fn open(root: impl Into<PathBuf>) -> Result<Ledger, LedgerError> {
        let root = root.into();
        create_dir_all(&root, FileMode::Private).map_err(io_err("create", &root))?;
        Ok(Ledger { root })
    }

    /// The directory the ledger lives in.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The directory of `app`, where callers may keep further per-app files (logs, bundles).
    pub fn app_dir(&self, app: &AppName) -> PathBuf {
        self.root.join(app.as_str())
    }

    fn releases_dir(&self, app: &AppName) -> PathBuf {
        self.app_dir(app).join("releases")
    }

    /// Whether `app` has been created.
    pub fn has_app(&self, app: &AppName) -> bool {
        self.app_dir(app).join("app.json").is_file()
    }

    fn require(&self, app: &AppName) -> Result<(), LedgerError> {
        if self.has_app(app) {
            Ok(())
        } else {
            Err(LedgerError::UnknownApp { app: app.clone() })
        }
    }

    /// Creates `app`; an error if it exists.
    pub fn create_app(&self, app: &AppName) -> Result<(), LedgerError> {
        if self.has_app(app) {
            return Err(LedgerError::AppExists { app: app.clone() });
        }
        let releases = self.releases_dir(app);
        create_dir_all(&releases, FileMode::Private).map_err(io_err("create", &releases))?;
        sync_dir(&self.root).map_err(io_err("sync", &self.root))?;
        let record = AppRecord {
            name: app.clone(),
            created: SystemTime::now(),
        };
        self.write_path(&self.app_dir(app).join("app.json"), &record)
    }

    /// Removes `app` with its releases and every file kept in its directory.
    pub fn remove_app(&self, app: &AppName) -> Result<(), LedgerError> {
        self.require(app)?;
        let dir = self.app_dir(app);
        // Rename first so a crash halfway through never leaves a half-deleted app that looks alive.
        let trash = self.root.join(format!(
            ".trash-{}-{}-{}",
            app,
            std::process::id(),
            TMP_COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::rename(&dir, &trash).map_err(io_err("remove", &dir))?;
        sync_dir(&self.root).map_err(io_err("sync", &self.root))?;
        std::fs::remove_dir_all(&trash).map_err(io_err("remove", &trash))
    }

    /// The created apps, in name order.
    pub fn apps(&self) -> Result<Vec<AppName>, LedgerError> {
        let mut apps = vec![];
        let entries = std::fs::read_dir(&self.root).map_err(io_err("list", &self.root))?;
        for entry in entries {
            let entry = entry.map_err(io_err("list", &self.root))?;
            let Some(name) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
                continue;
            };
            if self.has_app(&name) {
                apps.push(name);
            }
        }
        apps.sort();
        Ok(apps)
    }

    /// The releases of `app`, oldest first.
    pub fn releases(&self, app: &AppName) -> Result<Vec<Release>, LedgerError> {
        self.require(app)?;
        let dir = self.releases_dir(app);
        let mut found = vec![];
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(vec![]),
            Err(e) => return Err(io_err("list", &dir)(e)),
        };
        for entry in entries {
            let entry = entry.map_err(io_err("list", &dir))?;
            let name = entry.file_name();
            let Some(version) = name
                .to_str()
                .and_then(|n| n.strip_suffix(".json"))
                .and_then(|n| n.parse::<ReleaseVersion>().ok())
            else {
                continue;
            };
            found.push((version, entry.path()));
        }
        found.sort();
        found
            .into_iter()
            .map(|(_, path)| read_json(&path))
            .collect()
    }

    /// The newest release of `app`.
    pub fn current(&self, app: &AppName) -> Result<Option<Release>, LedgerError> {
        Ok(self.releases(app)?.pop())
    }

    /// The number the next release of `app` gets.
    pub fn next_version(&self, app: &AppName) -> Result<ReleaseVersion, LedgerError> {
        Ok(ReleaseVersion::next_after(
            self.current(app)?.map(|r| r.version),
        ))
    }

    /// Records `release` durably; an error if its number is taken.
    pub fn record(&self, release: &Release) -> Result<(), LedgerError> {
        self.require(&release.app)?;
        let path = self
            .releases_dir(&release.app)
            .join(format!("{}.json", release.version));
        let exists = || LedgerError::ReleaseExists {
            app: release.app.clone(),
            version: release.version,
        };
        if path.exists() {
            return Err(exists());
        }
        // Made once, never replaced, even by a second writer racing this one.
        match create_atomic(&path, &to_json(&path, release)?, FileMode::Private) {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(exists()),
            other => other.map_err(io_err("write", &path)),
        }
    }

    /// Reads the state document `name` of `app`; `None` if it was never written.
    pub fn read<T: DeserializeOwned>(
        &self,
        app: &AppName,
        name: &str,
    ) -> Result<Option<T>, LedgerError> {
        self.require(app)?;
        let path = self.app_dir(app).join(format!("{name}.json"));
        match std::fs::metadata(&path) {
            Ok(_) => read_json(&path).map(Some),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err("read", &path)(e)),
        }
    }

    /// Writes the state document `name` of `app` durably.
    pub fn write<T: Serialize>(
        &self,
        app: &AppName,
        name: &str,
        value: &T,
    ) -> Result<(), LedgerError> {
        self.require(app)?;
        self.write_path(&self.app_dir(app).join(format!("{name}.json")), value)
    }

    /// Removes the state document `name` of `app`, if it exists.
    pub fn remove(&self, app: &AppName, name: &str) -> Result<(), LedgerError> {
        let path = self.app_dir(app).join(format!("{name}.json"));
        match std::fs::remove_file(&path) {
            Ok(()) => sync_dir(&self.app_dir(app)).map_err(io_err("sync", &path)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err("remove", &path)(e)),
        }
    }

    fn write_path<T: Serialize + ?Sized>(&self, path: &Path, value: &T) -> Result<(), LedgerError> {
        write_atomic(path, &to_json(path, value)?, FileMode::Private).map_err(io_err("write", path))
    }
}

fn to_json<T: Serialize + ?Sized>(path: &Path, value: &T) -> Result<Vec<u8>, LedgerError> {
    let mut bytes = serde_json::to_vec_pretty(value).map_err(|source| LedgerError::Corrupt {
        path: path.to_owned(),
        source,
    })?;
    bytes.push(b'\n');
    Ok(bytes)
}

fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T, LedgerError> {
    let bytes = std::fs::read(path).map_err(io_err("read", path))?;
    serde_json::from_slice(&bytes).map_err(|source| LedgerError::Corrupt {
        path: path.to_owned(),
        source,
    })
}
