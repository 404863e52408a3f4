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
/// A push server gives its pipeline one on its own data directory
/// ([`GitServerBuilder::pipeline_with`](crate::GitServerBuilder::pipeline_with)); to build
/// a commit outside a push, [`GitSource::resolve`] turns `HEAD`, a branch or a commit id into
/// the [`Revision`] a [`Job`](hephy_core::Job) takes.
///
/// ```
/// use hephy_git::GitSource;
/// let source = GitSource::new("/var/lib/hephy");
/// # let _ = source;
/// ```
#[derive(Debug, Clone)]
pub struct GitSource {
    location: Location,
}

#[derive(Debug, Clone)]
enum Location {
    /// One bare repository per app, as the server keeps them, under a data directory.
    Repos(PathBuf, Repos),
    /// One repository (bare or a checkout) for every app, as `hephy build` reads a CI checkout.
    Repository(PathBuf),
}

impl GitSource {
    /// A source for the repositories under `<data_dir>/repos`.
    pub fn new(data_dir: impl AsRef<Path>) -> Self {
        let data_dir = data_dir.as_ref();
        GitSource {
            location: Location::Repos(data_dir.to_owned(), Repos::new(data_dir)),
        }
    }

    /// The repository `app` is read from.
    fn repo_dir(&self, app: &AppName) -> Result<PathBuf, SourceError> {
        match &self.location {
            Location::Repos(_, repos) if !repos.exists(app) => {
                Err(SourceError::UnknownApp { app: app.clone() })
            }
            Location::Repos(_, repos) => Ok(repos.path(app)),
            Location::Repository(path) => Ok(path.clone()),
        }
    }

    /// The commit `name` names in the repository of `app`: `HEAD`, a branch (`main`), a tag, a
    /// full ref name (`refs/heads/main`), or a commit id, full or abbreviated to at least 4 hex
    /// digits. The revision carries the full ref name when `name` is (or `HEAD` points to) a
    /// ref; [`Source::materialize`] fills in the author, message and time.
    ///
    /// ```no_run
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use hephy_core::Job;
    /// let source = hephy_git::GitSource::new("/var/lib/hephy");
    /// let app = "hello".parse()?;
    /// let revision = source.resolve(&app, "main")?;
    /// let job = Job::push(app, revision, "/tmp/hephy-work");
    /// # let _ = job; Ok(()) }
    /// ```
    pub fn resolve(&self, app: &AppName, name: &str) -> Result<Revision, SourceError> {
        let unknown = || SourceError::UnknownRevision {
            app: app.clone(),
            name: name.to_owned(),
        };
        let repo = crate::repo::open_isolated(&self.repo_dir(app)?)
            .map_err(|e| other(format!("cannot open the repository of {app}"), e))?;
        // Refs first, as git does: a branch named like a commit prefix is that branch.
        let by_ref = if name == "HEAD" {
            let head = repo
                .head()
                .map_err(|e| other(format!("cannot read HEAD of {app}"), e))?;
            let ref_name = head.referent_name().map(|n| n.as_bstr().to_string());
            match head.id() {
                Some(id) => Some((id.detach(), ref_name)),
                None => return Err(unknown()),
            }
        } else if name.is_empty() || name.starts_with('-') {
            return Err(unknown());
        } else {
            match repo.try_find_reference(name) {
                Ok(Some(mut r)) => {
                    let full = r.name().as_bstr().to_string();
                    let id = r.peel_to_id().map_err(|_| unknown())?.detach();
                    Some((id, Some(full)))
                }
                Ok(None) | Err(_) => None,
            }
        };
        let (id, ref_name) = match by_ref {
            Some(found) => found,
            None => (object_id(&repo, name).ok_or_else(unknown)?, None),
        };
        let commit = repo
            .find_object(id)
            .ok()
            .and_then(|o| o.peel_to_commit().ok())
            .ok_or_else(unknown)?;
        let revision = Revision::new(commit.id.to_string());
        Ok(match ref_name {
            Some(r) => revision.with_ref_name(r),
            None => revision,
        })
    }

    /// A source that reads every app from the one repository at `path` (bare, or a checkout's
    /// directory), so a build of a checkout sees exactly the tree a push would.
    pub fn repository(path: impl Into<PathBuf>) -> Self {
        GitSource {
            location: Location::Repository(path.into()),
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
        let path = self.repo_dir(app)?;
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

    /// The data directory for [`GitSource::new`], the repository for
    /// [`GitSource::repository`].
    fn location(&self) -> Option<&Path> {
        Some(match &self.location {
            Location::Repos(data_dir, _) => data_dir,
            Location::Repository(path) => path,
        })
    }
}

/// The object a full or abbreviated (4 to 40 hex digits) commit id names, if exactly one.
fn object_id(repo: &gix::Repository, hex: &str) -> Option<ObjectId> {
    if !(4..=40).contains(&hex.len()) || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    if hex.len() == 40 {
        return ObjectId::from_hex(hex.as_bytes()).ok();
    }
    let prefix = gix::hash::Prefix::from_hex(hex).ok()?;
    // `Err(())` inside is an ambiguous prefix: more than one object starts with it.
    repo.objects.lookup_prefix(prefix, None).ok()??.ok()
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
    let mut jobs = vec![];
    walk_tree(&repo, tree, dest, Path::new(""), &mut jobs, events)?;
    let stats = write_files(&repo, jobs)?;
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

/// A file (or symlink) to write.
struct FileJob {
    path: PathBuf,
    rel: PathBuf,
    id: ObjectId,
    kind: EntryKind,
}

/// Creates the directories of tree `id` under `dir` (which exists) and collects its files.
///
/// Directories are created here, before any file or symlink, and everything is created
/// exclusively: a tree that names an entry twice (a symlink and a directory of the same name)
/// fails instead of making a write go through a symlink.
fn walk_tree(
    repo: &gix::Repository,
    id: ObjectId,
    dir: &Path,
    rel: &Path,
    jobs: &mut Vec<FileJob>,
    events: &Events,
) -> Result<(), SourceError> {
    let tree = repo
        .find_tree(id)
        .map_err(|e| other(format!("cannot read tree {id}"), e))?;
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
                std::fs::create_dir(&path).map_err(|source| SourceError::Io {
                    path: path.clone(),
                    source,
                })?;
                walk_tree(repo, oid, &path, &rel_path, jobs, events)?;
            }
            EntryKind::Commit => {
                events.warn(format!(
                    "submodule {} is not included in the build: vendor its files into the repository if the app needs them",
                    rel_path.display()
                ));
            }
            kind => jobs.push(FileJob {
                path,
                rel: rel_path,
                id: oid,
                kind,
            }),
        }
    }
    Ok(())
}

/// Writes the files, on every core: inflating blobs is most of the work.
fn write_files(repo: &gix::Repository, jobs: Vec<FileJob>) -> Result<Stats, SourceError> {
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, 8)
        .min(jobs.len().div_ceil(64).max(1));
    let mut parts: Vec<Vec<FileJob>> = (0..threads).map(|_| vec![]).collect();
    for (i, job) in jobs.into_iter().enumerate() {
        parts[i % threads].push(job);
    }
    std::thread::scope(|scope| {
        let handles: Vec<_> = parts
            .into_iter()
            .map(|part| {
                let repo = repo.clone();
                scope.spawn(move || {
                    let mut stats = Stats::default();
                    for job in part {
                        write_file(&repo, &job, &mut stats)?;
                    }
                    Ok::<_, SourceError>(stats)
                })
            })
            .collect();
        let mut total = Stats::default();
        for h in handles {
            let stats = h.join().map_err(|_| SourceError::Other {
                message: "a checkout thread panicked".into(),
                source: None,
            })??;
            total.files += stats.files;
            total.bytes += stats.bytes;
        }
        Ok(total)
    })
}

fn write_file(repo: &gix::Repository, job: &FileJob, stats: &mut Stats) -> Result<(), SourceError> {
    let io = |source| SourceError::Io {
        path: job.path.clone(),
        source,
    };
    let blob = repo
        .find_blob(job.id)
        .map_err(|e| other(format!("cannot read {}", job.rel.display()), e))?;
    if job.kind == EntryKind::Link {
        let target = blob.data.to_path().map_err(|_| {
            invalid(format!(
                "the symlink {} has a target that is not a path",
                job.rel.display()
            ))
        })?;
        symlink(target, &job.path).map_err(io)?;
    } else {
        let mode = if job.kind == EntryKind::BlobExecutable {
            0o755
        } else {
            0o644
        };
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&job.path)
            .map_err(io)?;
        f.write_all(&blob.data).map_err(io)?;
        stats.bytes += blob.data.len() as u64;
    }
    stats.files += 1;
    Ok(())
}
