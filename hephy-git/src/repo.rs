//! App repositories: one bare git repository per app under `<data_dir>/repos/<app>.git`.

use std::path::{Path, PathBuf};

use hephy_core::AppName;

/// The error returned by [`repo_path`] for a path that does not name an app repository.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path:?} is not an app repository: use /APP.git (or APP.git, /APP, APP) where APP is an app name like my-app")]
pub struct RepoPathError {
    path: String,
}

impl RepoPathError {
    /// The rejected path.
    pub fn path(&self) -> &str {
        &self.path
    }
}

/// Reads the app from a repository path as a git client sends it: `/APP.git`, `APP.git`,
/// `/APP` or `APP` (and the same with a trailing `/`). Anything else, such as `../x.git`,
/// `a/b.git` or a percent-encoded name, is refused, so a path can never leave the data
/// directory.
///
/// ```
/// use hephy_git::repo_path;
/// assert_eq!(repo_path("/hello.git")?.as_str(), "hello");
/// assert_eq!(repo_path("hello")?.as_str(), "hello");
/// assert!(repo_path("/../hello.git").is_err());
/// assert!(repo_path("/%2e%2e/hello.git").is_err());
/// # Ok::<(), hephy_git::RepoPathError>(())
/// ```
pub fn repo_path(path: &str) -> Result<AppName, RepoPathError> {
    let err = || RepoPathError {
        path: path.to_owned(),
    };
    let p = path.strip_prefix('/').unwrap_or(path);
    let p = p.strip_suffix('/').unwrap_or(p);
    let p = p.strip_suffix(".git").unwrap_or(p);
    p.parse::<AppName>().map_err(|_| err())
}

/// Where the repositories of a data directory live.
#[derive(Debug, Clone)]
pub(crate) struct Repos {
    root: PathBuf,
}

impl Repos {
    pub(crate) fn new(data_dir: &Path) -> Self {
        Repos {
            root: data_dir.join("repos"),
        }
    }

    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    /// The repository directory of `app` (an [`AppName`] cannot contain `/` or `..`).
    pub(crate) fn path(&self, app: &AppName) -> PathBuf {
        self.root.join(format!("{app}.git"))
    }

    pub(crate) fn exists(&self, app: &AppName) -> bool {
        self.path(app).join("HEAD").is_file()
    }

    /// Opens the repository of `app` without reading the user's or system's git configuration.
    pub(crate) fn open(&self, app: &AppName) -> Result<gix::Repository, gix::Error> {
        open_isolated(&self.path(app))
    }

    /// The apps with a repository, sorted.
    pub(crate) fn list(&self) -> std::io::Result<Vec<AppName>> {
        let mut apps = vec![];
        let entries = match std::fs::read_dir(&self.root) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(apps),
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name();
            let Some(name) = name.to_str().and_then(|n| n.strip_suffix(".git")) else {
                continue;
            };
            if let Ok(app) = name.parse::<AppName>() {
                if entry.path().join("HEAD").is_file() {
                    apps.push(app);
                }
            }
        }
        apps.sort();
        Ok(apps)
    }
}

/// Opens a repository with only its own configuration: the server must behave the same whatever
/// the machine's `~/.gitconfig` says.
pub(crate) fn open_isolated(path: &Path) -> Result<gix::Repository, gix::Error> {
    gix::open_opts(path, gix::open::Options::isolated())
}
