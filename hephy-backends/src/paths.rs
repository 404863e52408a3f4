//! Paths a pushed repository names, and files read from it. Every backend resolves the paths
//! its `hephy.toml` table names (`dir`, `data`, `context`, `file`, `manifest`, `main`,
//! `base = "oci:DIR"`) and reads the files it parses (`go.mod`, `Cargo.toml`, `spin.toml`, the
//! Dockerfile) through here, so that neither a setting nor a committed symlink makes a build
//! read outside the repository, and no file is read without a bound.
//!
//! A path is checked twice: as written (no absolute path, no `..` above where it starts) and
//! after following symlinks (its real path must be inside the real repository root). The
//! second check is the one that matters: `context = "site"` passes the first when `site` is a
//! committed symlink to `/`.
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use hephy_backends::paths;
//! let repo = std::env::temp_dir().join(format!("hephy-paths-doc-{}", std::process::id()));
//! std::fs::create_dir_all(repo.join("public"))?;
//! std::os::unix::fs::symlink("/", repo.join("root"))?;
//!
//! assert!(paths::resolve(&repo, "[build.files] dir", "public").is_ok());
//! let e = paths::resolve(&repo, "[build.files] dir", "root").err().ok_or("escaped")?;
//! assert!(e.to_string().contains("leads outside the repository"), "{e}");
//! let e = paths::resolve(&repo, "[build.files] dir", "/").err().ok_or("escaped")?;
//! assert!(e.to_string().starts_with("[build.files] dir \"/\" points outside the repository"));
//! # std::fs::remove_dir_all(&repo)?;
//! # Ok(()) }
//! ```

use std::io::Read as _;
use std::path::{Component, Path, PathBuf};

use hephy_core::BuildError;

/// The most hephy reads of a file it parses itself (`go.mod`, `Cargo.toml`, `spin.toml`, a
/// Dockerfile): these are a few kilobytes in real repositories.
pub const MANIFEST_LIMIT: u64 = 1024 * 1024;

/// The error returned by [`resolve`], [`read`] and the other functions of this module.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PathError {
    /// The path is absolute, or climbs above where it starts with `..`.
    #[error("{key} {value:?} points outside the repository: give a path relative to the repository root, without leading / or ../")]
    Outside {
        /// What named the path, such as `[build.files] dir`.
        key: String,
        /// The path as written.
        value: String,
    },
    /// The path stays inside as written, but a symlink on the way leads out.
    #[error("{key} {value:?} leads outside the repository through a symlink: point it at a path inside the repository, or commit the files instead of a link to them")]
    SymlinkOutside {
        /// What named the path.
        key: String,
        /// The path as written.
        value: String,
    },
    /// A file hephy reads is a symlink that leads outside the repository.
    #[error("{name} is a symlink that leads outside the repository: commit the file itself instead of a link to it")]
    FileOutside {
        /// The file, relative to the repository.
        name: String,
    },
    /// A file hephy reads is not a regular file (a directory, a device, a FIFO).
    #[error("{name} is not a regular file: commit the file itself")]
    NotAFile {
        /// The file, relative to the repository.
        name: String,
    },
    /// A file hephy reads is bigger than it reads.
    #[error("{name} is {}; the limit is {}: make it smaller, or check that the right file is committed", human_size(*.size), human_size(*.limit))]
    TooLarge {
        /// The file, relative to the repository.
        name: String,
        /// Its size in bytes (at least this much).
        size: u64,
        /// The limit in bytes.
        limit: u64,
    },
    /// A directory hephy walks holds more entries than it looks at.
    #[error("{name} holds more than {limit} files and directories: an OCI layout needs far fewer; commit only the image it holds")]
    TooMany {
        /// The directory, as named.
        name: String,
        /// The limit.
        limit: usize,
    },
    /// The file system failed.
    #[error("cannot read {name}: {source}")]
    Io {
        /// The path, relative to the repository.
        name: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

impl From<PathError> for BuildError {
    fn from(e: PathError) -> Self {
        match e {
            PathError::Io { name, source } => {
                BuildError::other(format!("cannot read {name}"), source)
            }
            other => BuildError::InvalidContext {
                problem: other.to_string(),
            },
        }
    }
}

/// `1 MB`, `3.5 MB`, `900 KB`, `12 bytes`: rounded up, so a file just over a limit never
/// reads as the limit itself.
fn human_size(bytes: u64) -> String {
    const KB: u64 = 1024;
    const MB: u64 = 1024 * KB;
    let tenths = |unit: u64| bytes.saturating_mul(10).div_ceil(unit);
    let show = |t: u64, unit: &str| {
        if t.is_multiple_of(10) {
            format!("{} {unit}", t / 10)
        } else {
            format!("{}.{} {unit}", t / 10, t % 10)
        }
    };
    if bytes >= MB {
        show(tenths(MB), "MB")
    } else if bytes >= KB {
        show(tenths(KB), "KB")
    } else {
        format!("{bytes} bytes")
    }
}

/// `root` with every symlink followed: what paths inside it are compared with.
fn real_root(root: &Path) -> Result<PathBuf, PathError> {
    root.canonicalize().map_err(|source| PathError::Io {
        name: "the repository".into(),
        source,
    })
}

/// Whether `rel` stays below where it starts as written: not absolute, no `..` above it.
fn stays_below(rel: &Path) -> bool {
    let mut depth: usize = 0;
    for c in rel.components() {
        match c {
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            Component::ParentDir => match depth.checked_sub(1) {
                Some(d) => depth = d,
                None => return false,
            },
            Component::RootDir | Component::Prefix(_) => return false,
        }
    }
    true
}

/// The real path of `path`, whose real path must be inside `real_root`: symlinks followed
/// where it exists; where it does not, its deepest existing ancestor's real path plus the rest
/// (nothing that does not exist can lead anywhere). `None` when it leads outside.
fn real_inside(real_root: &Path, path: &Path) -> Result<Option<PathBuf>, std::io::Error> {
    let mut missing = Vec::new();
    let mut at = path;
    let real = loop {
        match at.canonicalize() {
            Ok(real) => break real,
            // `file.txt/sub` does not exist either.
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
                ) =>
            {
                let (Some(parent), Some(name)) = (at.parent(), at.file_name()) else {
                    return Err(e);
                };
                missing.push(name.to_owned());
                at = parent;
            }
            Err(e) => return Err(e),
        }
    };
    if !real.starts_with(real_root) {
        return Ok(None);
    }
    Ok(Some(missing.iter().rev().fold(real, |p, n| p.join(n))))
}

/// `path` relative to the repository at `root`, for messages: `docker/Dockerfile` for what
/// [`resolve`] returned for it.
pub fn relative(root: &Path, path: &Path) -> PathBuf {
    root.canonicalize()
        .ok()
        .and_then(|real| path.strip_prefix(real).ok().map(Path::to_path_buf))
        .or_else(|| path.strip_prefix(root).ok().map(Path::to_path_buf))
        .unwrap_or_else(|| path.to_path_buf())
}

/// Resolves `value`, a path relative to the repository at `root` that `key` names (such as
/// `[build.dockerfile] context`), inside the repository after following symlinks. Returns its
/// real path; it may not exist (callers say what they expected there).
pub fn resolve(root: &Path, key: &str, value: &str) -> Result<PathBuf, PathError> {
    resolve_in(root, root, key, value)
}

/// [`resolve`] for a path written relative to `base`, a directory inside the repository (a
/// Spin component's `source` is relative to its `spin.toml`): `..` may not climb above `base`,
/// and the real path must be inside the repository at `root`.
pub fn resolve_in(root: &Path, base: &Path, key: &str, value: &str) -> Result<PathBuf, PathError> {
    if !stays_below(Path::new(value)) {
        return Err(PathError::Outside {
            key: key.to_owned(),
            value: value.to_owned(),
        });
    }
    let real_root = real_root(root)?;
    let joined = base.join(value);
    match real_inside(&real_root, &joined) {
        Ok(Some(real)) => Ok(real),
        Ok(None) => Err(PathError::SymlinkOutside {
            key: key.to_owned(),
            value: value.to_owned(),
        }),
        Err(source) => Err(PathError::Io {
            name: format!("{key} {value:?}"),
            source,
        }),
    }
}

/// Whether `path` (found by walking or globbing the repository) is, after following symlinks,
/// inside the repository at `root`; its real path if so. `name` is what messages call it.
pub fn inside(root: &Path, path: &Path, name: &str) -> Result<PathBuf, PathError> {
    let real_root = real_root(root)?;
    match real_inside(&real_root, path) {
        Ok(Some(real)) => Ok(real),
        Ok(None) => Err(PathError::FileOutside {
            name: name.to_owned(),
        }),
        Err(source) => Err(PathError::Io {
            name: name.to_owned(),
            source,
        }),
    }
}

/// The real path of the regular file at `path` in the repository at `root`, `None` when
/// there is nothing there (or a symlink to nothing). Refuses a symlink that leads outside the
/// repository, and anything that is not a regular file (a link to `/dev/zero`, a FIFO).
pub fn regular_file(root: &Path, path: &Path, name: &str) -> Result<Option<PathBuf>, PathError> {
    match path.symlink_metadata() {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(PathError::Io {
                name: name.to_owned(),
                source,
            })
        }
        Ok(_) => {}
    }
    let real = match path.canonicalize() {
        Ok(real) => real,
        // A dangling symlink: there is no file.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(PathError::Io {
                name: name.to_owned(),
                source,
            })
        }
    };
    if !real.starts_with(real_root(root)?) {
        return Err(PathError::FileOutside {
            name: name.to_owned(),
        });
    }
    let meta = real.metadata().map_err(|source| PathError::Io {
        name: name.to_owned(),
        source,
    })?;
    if !meta.is_file() {
        return Err(PathError::NotAFile {
            name: name.to_owned(),
        });
    }
    Ok(Some(real))
}

/// Reads the file `rel` (relative to the repository at `root`, such as `go.mod`) whole, at
/// most `limit` bytes: `None` when there is no such file. Refuses what [`regular_file`] refuses,
/// and a file over the limit, naming both sizes.
pub fn read(root: &Path, rel: &str, limit: u64) -> Result<Option<Vec<u8>>, PathError> {
    read_path(root, &root.join(rel), rel, limit)
}

/// [`read`] for a file already resolved (with [`resolve`]) to `path`; `name` is what
/// messages call it.
pub fn read_path(
    root: &Path,
    path: &Path,
    name: &str,
    limit: u64,
) -> Result<Option<Vec<u8>>, PathError> {
    let Some(real) = regular_file(root, path, name)? else {
        return Ok(None);
    };
    let io = |source| PathError::Io {
        name: name.to_owned(),
        source,
    };
    let file = std::fs::File::open(&real).map_err(io)?;
    let len = file.metadata().map_err(io)?.len();
    let too_large = |size| PathError::TooLarge {
        name: name.to_owned(),
        size,
        limit,
    };
    if len > limit {
        return Err(too_large(len));
    }
    // The size can grow between the stat and the read; read one byte more to see it.
    let mut bytes = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    file.take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.len() as u64 > limit {
        return Err(too_large(bytes.len() as u64));
    }
    Ok(Some(bytes))
}

/// [`read_path`] as UTF-8 text.
pub fn read_text(
    root: &Path,
    path: &Path,
    name: &str,
    limit: u64,
) -> Result<Option<String>, PathError> {
    match read_path(root, path, name, limit)? {
        None => Ok(None),
        Some(bytes) => String::from_utf8(bytes)
            .map(Some)
            .map_err(|e| PathError::Io {
                name: name.to_owned(),
                source: std::io::Error::new(std::io::ErrorKind::InvalidData, e.utf8_error()),
            }),
    }
}

/// The first `limit` bytes of the regular file at `path`, for a scan that only needs a
/// file's head (the imports of a Go file); `None` for anything else, symlinks included.
pub fn read_head(path: &Path, limit: u64) -> Option<Vec<u8>> {
    let meta = path.symlink_metadata().ok()?;
    if !meta.is_file() {
        return None;
    }
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .ok()?
        .take(limit)
        .read_to_end(&mut bytes)
        .ok()?;
    Some(bytes)
}

/// The most entries [`layout_dir`] looks at in an OCI layout of the repository.
pub const LAYOUT_ENTRY_LIMIT: usize = 100_000;

/// The base image a `hephy.toml` names with `key` (`base = "oci:DIR"`), checked: an OCI layout
/// must be a directory inside the repository at `root` (see [`layout_dir`]), and is returned
/// with its real path. Other bases are returned as they are.
pub fn base_image(
    root: &Path,
    key: &str,
    base: &hephy_oci::base::BaseImage,
) -> Result<hephy_oci::base::BaseImage, PathError> {
    match base {
        hephy_oci::base::BaseImage::Layout { path, reference } => {
            let value = match reference {
                Some(r) => format!("oci:{}:{r}", path.display()),
                None => format!("oci:{}", path.display()),
            };
            let real = layout_dir(root, key, &value, &path.to_string_lossy())?;
            Ok(hephy_oci::base::BaseImage::Layout {
                path: real,
                reference: reference.clone(),
            })
        }
        other => Ok(other.clone()),
    }
}

/// Resolves `dir`, an OCI layout of the repository at `root` named by `key` as `value` (such
/// as `base = "oci:base"`), and checks what is in it: only directories and regular files, or
/// symlinks to them inside the repository, as a blob that links to `/etc/shadow` would
/// otherwise be copied into the image.
pub fn layout_dir(root: &Path, key: &str, value: &str, dir: &str) -> Result<PathBuf, PathError> {
    let real = resolve(root, key, dir).map_err(|e| match e {
        PathError::Outside { key, .. } => PathError::Outside {
            key,
            value: value.to_owned(),
        },
        PathError::SymlinkOutside { key, .. } => PathError::SymlinkOutside {
            key,
            value: value.to_owned(),
        },
        other => other,
    })?;
    let real_root = real_root(root)?;
    let name = |p: &Path| {
        p.strip_prefix(&real_root)
            .unwrap_or(p)
            .display()
            .to_string()
    };
    let io = |p: &Path, source| PathError::Io {
        name: name(p),
        source,
    };
    let mut todo = vec![real.clone()];
    let mut seen = 0usize;
    // Iterative: the repository decides how deep the tree is.
    while let Some(d) = todo.pop() {
        let entries = match std::fs::read_dir(&d) {
            Ok(entries) => entries,
            // Not a directory, or missing: opening the layout says so.
            Err(_) if d == real => break,
            Err(e) => return Err(io(&d, e)),
        };
        for e in entries {
            let e = e.map_err(|e| io(&d, e))?;
            seen += 1;
            if seen > LAYOUT_ENTRY_LIMIT {
                return Err(PathError::TooMany {
                    name: value.to_owned(),
                    limit: LAYOUT_ENTRY_LIMIT,
                });
            }
            let p = e.path();
            let ft = e.file_type().map_err(|e| io(&p, e))?;
            if ft.is_dir() {
                todo.push(p);
            } else if ft.is_symlink() {
                regular_file(root, &p, &name(&p))?;
            } else if !ft.is_file() {
                return Err(PathError::NotAFile { name: name(&p) });
            }
        }
    }
    Ok(real)
}
