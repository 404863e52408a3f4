//! [`GitSource`]: materializes a pushed commit's tree into a build context with gix.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::{symlink, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use gix::bstr::ByteSlice;
use gix::objs::tree::EntryKind;
use gix::ObjectId;
use hephy_core::{async_trait, AppName, Events, Revision, Source, SourceError};

use crate::repo::Repos;

/// A [`Source`] that writes the tree of a commit of an app's repository into a directory: no
/// `.git`, symlinks kept as symlinks, executable bits kept, submodules left out (with a warning).
///
/// ```
/// use hephy_git::GitSource;
/// let source = GitSource::new("/var/lib/hephy");
/// # let _ = source;
/// ```
#[derive(Debug, Clone)]
pub struct GitSource {
    repos: Repos,
}

impl GitSource {
    /// A source for the repositories under `<data_dir>/repos`.
    pub fn new(data_dir: impl AsRef<Path>) -> Self {
        GitSource {
            repos: Repos::new(data_dir.as_ref()),
        }
    }
}

#[async_trait]
impl Source for GitSource {
    async fn materialize(
        &self,
        app: &AppName,
        revision: &Revision,
        dest: &Path,
        events: &Events,
    ) -> Result<Revision, SourceError> {
        if !self.repos.exists(app) {
            return Err(SourceError::UnknownApp { app: app.clone() });
        }
        let path = self.repos.path(app);
        let app = app.clone();
        let revision = revision.clone();
        let dest = dest.to_owned();
        let events = events.clone();
        tokio::task::spawn_blocking(move || checkout(&path, &app, &revision, &dest, &events))
            .await
            .map_err(|e| SourceError::Other {
                message: format!("the checkout stopped: {e}"),
                source: None,
            })?
    }
}

fn other(message: String, source: impl std::error::Error + Send + Sync + 'static) -> SourceError {
    SourceError::Other {
        message,
        source: Some(Box::new(source)),
    }
}

fn checkout(
    repo_dir: &Path,
    app: &AppName,
    revision: &Revision,
    dest: &Path,
    events: &Events,
) -> Result<Revision, SourceError> {
    let unknown = || SourceError::UnknownCommit {
        app: app.clone(),
        commit: revision.commit.clone(),
    };
    let repo = crate::repo::open_isolated(repo_dir)
        .map_err(|e| other(format!("cannot open the repository of {app}"), e))?;
    let id = ObjectId::from_hex(revision.commit.as_bytes()).map_err(|_| unknown())?;
    let commit = repo.find_commit(id).map_err(|_| unknown())?;
    let decoded = commit
        .decode()
        .map_err(|e| other(format!("commit {id} is malformed"), e))?;
    let author = decoded
        .author()
        .map_err(|e| other(format!("commit {id} has a malformed author"), e))?;
    let mut out = revision.clone();
    out.author = format!("{} <{}>", author.name, author.email);
    out.message = decoded.message.to_str_lossy().trim_end().to_owned();
    if let Ok(t) = author.time() {
        if t.seconds >= 0 {
            out.time = Some(UNIX_EPOCH + Duration::from_secs(t.seconds as u64));
        }
    }
    let tree = decoded.tree();
    let mut stats = Stats::default();
    write_tree(&repo, tree, dest, Path::new(""), &mut stats, events)?;
    events.log(format!(
        "Checked out {} files ({} bytes) of {} by {}",
        stats.files,
        stats.bytes,
        out.short(),
        out.author
    ));
    Ok(out)
}

#[derive(Default)]
struct Stats {
    files: u64,
    bytes: u64,
}

fn invalid(problem: String) -> SourceError {
    SourceError::Invalid { problem }
}

/// Writes the tree `id` into `dir` (which exists). New files and directories are created
/// exclusively, so a tree that names an entry twice (a symlink and a directory of the same
/// name) cannot make a write go through a symlink.
fn write_tree(
    repo: &gix::Repository,
    id: ObjectId,
    dir: &Path,
    rel: &Path,
    stats: &mut Stats,
    events: &Events,
) -> Result<(), SourceError> {
    let tree = repo
        .find_tree(id)
        .map_err(|e| other(format!("cannot read tree {id}"), e))?;
    let io = |path: PathBuf| move |source| SourceError::Io { path, source };
    for entry in tree.iter() {
        let entry = entry.map_err(|e| other(format!("tree {id} is malformed"), e))?;
        let name = entry.filename().to_str().map_err(|_| {
            invalid(format!(
                "{:?} in {} is not a UTF-8 file name: rename it",
                entry.filename(),
                rel.display()
            ))
        })?;
        if name.is_empty()
            || name == "."
            || name == ".."
            || name.contains('/')
            || name.contains('\0')
            || name.eq_ignore_ascii_case(".git")
        {
            return Err(invalid(format!(
                "the commit holds an entry named {name:?} in {:?}, which cannot be checked out safely: remove it from the history",
                rel.display().to_string()
            )));
        }
        let path = dir.join(name);
        let rel_path = rel.join(name);
        let oid = entry.object_id();
        match entry.mode().kind() {
            EntryKind::Tree => {
                std::fs::create_dir(&path).map_err(io(path.clone()))?;
                write_tree(repo, oid, &path, &rel_path, stats, events)?;
            }
            kind @ (EntryKind::Blob | EntryKind::BlobExecutable) => {
                let blob = repo
                    .find_blob(oid)
                    .map_err(|e| other(format!("cannot read {}", rel_path.display()), e))?;
                let mode = if kind == EntryKind::BlobExecutable {
                    0o755
                } else {
                    0o644
                };
                let mut f = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(mode)
                    .open(&path)
                    .map_err(io(path.clone()))?;
                f.write_all(&blob.data).map_err(io(path.clone()))?;
                stats.files += 1;
                stats.bytes += blob.data.len() as u64;
            }
            EntryKind::Link => {
                let blob = repo
                    .find_blob(oid)
                    .map_err(|e| other(format!("cannot read {}", rel_path.display()), e))?;
                let target = blob.data.to_path().map_err(|_| {
                    invalid(format!(
                        "the symlink {} has a target that is not a path",
                        rel_path.display()
                    ))
                })?;
                symlink(target, &path).map_err(io(path.clone()))?;
                stats.files += 1;
            }
            EntryKind::Commit => {
                events.warn(format!(
                    "submodule {} is not included in the build: vendor its files into the repository if the app needs them",
                    rel_path.display()
                ));
            }
        }
    }
    Ok(())
}
