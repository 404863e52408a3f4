//! The files a Spin component mounts (`files = [...]`), found in the repository: patterns,
//! directories and single files, each refused when a link leads out of the repository.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use hephy_core::BuildError;

use super::bad;
use super::manifest::RawMount;
use crate::paths;

/// Where a manifest's paths are resolved: relative to `root`, its directory, and inside
/// `repo`, the repository, after following symlinks.
#[derive(Clone, Copy)]
pub(super) struct Dirs<'a> {
    pub(super) repo: &'a Path,
    pub(super) root: &'a Path,
}

fn rel_string(p: &Path) -> String {
    p.components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join("/")
}

/// The files under `dir`, walked iteratively (the repository decides how deep it is). A
/// symlink to a file is followed when it stays inside the repository at `repo`, and refused
/// when it leads out of it; links to directories are not followed.
fn walk_files(repo: &Path, dir: &Path) -> Result<Vec<PathBuf>, BuildError> {
    let name = |p: &Path| {
        let real_repo = repo.canonicalize().unwrap_or_else(|_| repo.to_path_buf());
        rel_string(
            p.strip_prefix(&real_repo)
                .or_else(|_| p.strip_prefix(repo))
                .unwrap_or(p),
        )
    };
    let io = |p: &Path, e: std::io::Error| bad(format!("cannot read {}: {e}", name(p)));
    let mut out = vec![];
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).map_err(|e| io(&d, e))? {
            let e = e.map_err(|e| io(&d, e))?;
            let p = e.path();
            let ft = e.file_type().map_err(|e| io(&p, e))?;
            if ft.is_dir() {
                todo.push(p);
            } else if ft.is_file() {
                out.push(p);
            } else if ft.is_symlink() {
                let real = paths::inside(repo, &p, &name(&p))?;
                if real.is_file() {
                    out.push(p);
                }
            }
        }
    }
    out.sort();
    Ok(out)
}

pub(super) fn resolve_files(
    rel: &str,
    dirs: Dirs<'_>,
    id: &str,
    mounts: &[RawMount],
    exclude: &[String],
) -> Result<Vec<(String, PathBuf)>, BuildError> {
    let excludes = exclude
        .iter()
        .map(|p| {
            glob::Pattern::new(p).map_err(|e| {
                bad(format!(
                    "{rel}: component {id}: exclude_files pattern {p:?} is invalid: {e}"
                ))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let excluded = |app_rel: &Path| excludes.iter().any(|p| p.matches_path(app_rel));
    let Dirs { repo, root } = dirs;
    let in_component = |e: BuildError| bad(format!("{rel}: component {id}: {e}"));
    let mut files: BTreeMap<String, PathBuf> = BTreeMap::new();
    for m in mounts {
        match m {
            RawMount::Pattern(p) => {
                let key = format!("component {id} files pattern");
                let real = paths::resolve_in(repo, root, &key, p)?;
                // Walked and named as written; `real` only says where it leads.
                let path = root.join(p);
                if real.is_dir() {
                    for f in walk_files(repo, &path).map_err(in_component)? {
                        let app_rel = f.strip_prefix(root).unwrap_or(&f).to_path_buf();
                        if !excluded(&app_rel) {
                            files.insert(rel_string(&app_rel), f);
                        }
                    }
                } else if real.is_file() {
                    files.insert(rel_string(Path::new(p.trim_start_matches("./"))), real);
                } else if glob::Pattern::escape(p) != *p {
                    let pattern = path.to_string_lossy().into_owned();
                    let found = glob::glob(&pattern).map_err(|e| {
                        bad(format!(
                            "{rel}: component {id}: files pattern {p:?} is invalid: {e}"
                        ))
                    })?;
                    for f in found.flatten() {
                        let name = rel_string(f.strip_prefix(root).unwrap_or(&f));
                        let real =
                            paths::inside(repo, &f, &name).map_err(|e| in_component(e.into()))?;
                        if !real.is_file() {
                            continue;
                        }
                        let Ok(app_rel) = f.strip_prefix(root).map(Path::to_path_buf) else {
                            continue;
                        };
                        if !excluded(&app_rel) {
                            files.insert(rel_string(&app_rel), f);
                        }
                    }
                } else {
                    return Err(bad(format!(
                        "{rel}: component {id}: files entry {p:?} does not exist and is not a glob pattern: fix the path, or remove it from files"
                    )));
                }
            }
            RawMount::Placement {
                source,
                destination,
            } => {
                let key = format!("component {id} files source");
                let real = paths::resolve_in(repo, root, &key, source)?;
                let src = root.join(source);
                let dest = destination.trim_start_matches('/');
                if real.is_dir() {
                    for f in walk_files(repo, &src).map_err(in_component)? {
                        let inner = f.strip_prefix(&src).unwrap_or(&f);
                        let guest = if dest.is_empty() {
                            rel_string(inner)
                        } else {
                            format!("{}/{}", dest.trim_end_matches('/'), rel_string(inner))
                        };
                        files.insert(guest, f);
                    }
                } else if real.is_file() {
                    if dest.is_empty() || dest.ends_with('/') {
                        return Err(bad(format!(
                            "{rel}: component {id}: \"{destination}\" is not a valid destination file name for the file {source}: name the file, like \"/static/{}\"",
                            src.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
                        )));
                    }
                    files.insert(dest.to_owned(), real);
                } else {
                    return Err(bad(format!(
                        "{rel}: component {id}: files source {source:?} does not exist: fix the path"
                    )));
                }
            }
        }
    }
    Ok(files.into_iter().collect())
}
