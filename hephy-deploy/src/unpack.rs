//! OCI images on disk to root filesystems: find the manifest for a platform in an OCI image
//! layout, then apply its layers in order (gzip, zstd or plain tar; whiteouts honoured; no
//! entry may write outside the root).
//!
//! Every blob read is checked against its digest while it streams, so a damaged layout fails
//! loudly instead of running a half image.

use std::collections::HashSet;
use std::fs;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Component, Path, PathBuf};

use hephy_core::{Digest, Platform};
use oci_spec::image::{Descriptor, ImageConfiguration, ImageIndex, ImageManifest};
use sha2::{Digest as _, Sha256, Sha512};

use crate::ledger::sync_dir;

/// The error returned by [`resolve`], [`unpack_rootfs`] and [`apply_layer`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UnpackError {
    /// The image layout directory has no `index.json`.
    #[error("no OCI image layout at {}: publish the image there first (hephy.local images are published by OciLayoutPublisher)", path.display())]
    NoLayout {
        /// The directory.
        path: PathBuf,
    },
    /// A blob is missing from the layout.
    #[error("blob {digest} is missing from the OCI layout at {}: publish the image again", layout.display())]
    MissingBlob {
        /// The layout.
        layout: PathBuf,
        /// The blob.
        digest: Digest,
    },
    /// A blob's content does not match its digest.
    #[error("blob {digest} in {} is damaged (its content hashes to {actual}): publish the image again", layout.display())]
    DigestMismatch {
        /// The layout.
        layout: PathBuf,
        /// The expected digest.
        digest: Digest,
        /// The digest of what was read.
        actual: String,
    },
    /// A manifest, index or config is not valid JSON of its kind.
    #[error(
        "{what} {digest} is not valid: {message}; publish the image again with a conforming tool"
    )]
    Invalid {
        /// What was read (manifest, index, config).
        what: &'static str,
        /// Its digest.
        digest: String,
        /// Why it is invalid.
        message: String,
    },
    /// The image index has no manifest for the platform.
    #[error("image {digest} has no manifest for {platform} (it has: {available}): build it for {platform} too, with `platforms = [\"{platform}\"]` in [build] of hephy.toml")]
    NoPlatform {
        /// The index.
        digest: Digest,
        /// The platform asked for.
        platform: String,
        /// The platforms it has.
        available: String,
    },
    /// A layer entry tried to leave the root filesystem or is otherwise unusable.
    #[error("layer {layer} has a bad entry {entry:?}: {problem}; rebuild the image")]
    BadEntry {
        /// The layer's digest.
        layer: String,
        /// The entry path.
        entry: String,
        /// What is wrong.
        problem: String,
    },
    /// Reading or writing files failed.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
}

fn io_err<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> UnpackError + 'a {
    move |source| UnpackError::Io {
        action,
        path: path.to_owned(),
        source,
    }
}

/// An image found in a layout: its manifest, config and layers, for one platform.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ResolvedImage {
    /// The OCI layout directory it is in.
    pub layout: PathBuf,
    /// The digest of the platform's image manifest (not of the index).
    pub manifest_digest: Digest,
    /// The image config: entrypoint, env, user, working dir.
    pub config: ImageConfiguration,
    /// The layers, bottom first.
    pub layers: Vec<Descriptor>,
}

/// The path of blob `digest` in the layout at `layout`.
pub fn blob_path(layout: &Path, digest: &Digest) -> PathBuf {
    layout
        .join("blobs")
        .join(digest.algorithm())
        .join(digest.encoded())
}

fn parse_digest(s: &str, what: &'static str) -> Result<Digest, UnpackError> {
    s.parse()
        .map_err(|e: hephy_core::DigestError| UnpackError::Invalid {
            what,
            digest: s.to_owned(),
            message: e.to_string(),
        })
}

/// Reads a small blob whole, checking its digest.
fn read_blob(layout: &Path, digest: &Digest) -> Result<Vec<u8>, UnpackError> {
    let mut reader = open_blob(layout, digest)?;
    let mut bytes = vec![];
    reader
        .read_to_end(&mut bytes)
        .map_err(io_err("read", &blob_path(layout, digest)))?;
    reader.verify()?;
    Ok(bytes)
}

fn open_blob(layout: &Path, digest: &Digest) -> Result<VerifyingReader<fs::File>, UnpackError> {
    let path = blob_path(layout, digest);
    let file = fs::File::open(&path).map_err(|e| {
        if e.kind() == io::ErrorKind::NotFound {
            UnpackError::MissingBlob {
                layout: layout.to_owned(),
                digest: digest.clone(),
            }
        } else {
            io_err("open", &path)(e)
        }
    })?;
    Ok(VerifyingReader::new(file, layout, digest))
}

enum Hasher {
    Sha256(Sha256),
    Sha512(Sha512),
}

/// A reader that hashes what passes through it, to compare with the expected digest at the end.
struct VerifyingReader<R> {
    inner: R,
    hasher: Hasher,
    layout: PathBuf,
    digest: Digest,
}

impl<R: Read> VerifyingReader<R> {
    fn new(inner: R, layout: &Path, digest: &Digest) -> Self {
        let hasher = match digest.algorithm() {
            "sha512" => Hasher::Sha512(Sha512::new()),
            _ => Hasher::Sha256(Sha256::new()),
        };
        VerifyingReader {
            inner,
            hasher,
            layout: layout.to_owned(),
            digest: digest.clone(),
        }
    }

    /// Reads what is left and compares the digest.
    fn verify(mut self) -> Result<(), UnpackError> {
        let path = blob_path(&self.layout, &self.digest);
        io::copy(&mut self, &mut io::sink()).map_err(io_err("read", &path))?;
        let actual = match self.hasher {
            Hasher::Sha256(h) => hex::encode(h.finalize()),
            Hasher::Sha512(h) => hex::encode(h.finalize()),
        };
        if actual == self.digest.encoded() {
            Ok(())
        } else {
            Err(UnpackError::DigestMismatch {
                layout: self.layout,
                actual: format!("{}:{actual}", self.digest.algorithm()),
                digest: self.digest,
            })
        }
    }
}

impl<R: Read> Read for VerifyingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        match &mut self.hasher {
            Hasher::Sha256(h) => h.update(&buf[..n]),
            Hasher::Sha512(h) => h.update(&buf[..n]),
        }
        Ok(n)
    }
}

fn descriptor_platform(d: &Descriptor) -> Option<Platform> {
    let p = d.platform().as_ref()?;
    let mut s = format!("{}/{}", p.os(), p.architecture());
    if let Some(v) = p.variant() {
        s.push('/');
        s.push_str(v);
    }
    s.parse().ok()
}

/// Finds the image manifest `digest` names in the layout at `layout`, choosing `platform`'s
/// manifest when `digest` names an image index, and reads its config.
pub fn resolve(
    layout: &Path,
    digest: &Digest,
    platform: &Platform,
) -> Result<ResolvedImage, UnpackError> {
    if !layout.join("index.json").is_file() {
        return Err(UnpackError::NoLayout {
            path: layout.to_owned(),
        });
    }
    let mut digest = digest.clone();
    // An index may point at further indexes; a few levels are plenty for any real image.
    for _ in 0..4 {
        let bytes = read_blob(layout, &digest)?;
        let probe: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|e| UnpackError::Invalid {
                what: "manifest",
                digest: digest.to_string(),
                message: e.to_string(),
            })?;
        if probe.get("manifests").is_some() {
            let index: ImageIndex =
                serde_json::from_slice(&bytes).map_err(|e| UnpackError::Invalid {
                    what: "image index",
                    digest: digest.to_string(),
                    message: e.to_string(),
                })?;
            let chosen = index
                .manifests()
                .iter()
                .find(|m| descriptor_platform(m).is_some_and(|p| p.matches(platform)))
                .ok_or_else(|| UnpackError::NoPlatform {
                    digest: digest.clone(),
                    platform: platform.to_string(),
                    available: index
                        .manifests()
                        .iter()
                        .filter_map(descriptor_platform)
                        .map(|p| p.to_string())
                        .collect::<Vec<_>>()
                        .join(", "),
                })?;
            digest = parse_digest(chosen.digest().as_ref(), "image index")?;
            continue;
        }
        let manifest: ImageManifest =
            serde_json::from_slice(&bytes).map_err(|e| UnpackError::Invalid {
                what: "image manifest",
                digest: digest.to_string(),
                message: e.to_string(),
            })?;
        let config_digest = parse_digest(manifest.config().digest().as_ref(), "image manifest")?;
        let config_bytes = read_blob(layout, &config_digest)?;
        let config: ImageConfiguration =
            serde_json::from_slice(&config_bytes).map_err(|e| UnpackError::Invalid {
                what: "image config",
                digest: config_digest.to_string(),
                message: e.to_string(),
            })?;
        return Ok(ResolvedImage {
            layout: layout.to_owned(),
            manifest_digest: digest,
            config,
            layers: manifest.layers().clone(),
        });
    }
    Err(UnpackError::Invalid {
        what: "image index",
        digest: digest.to_string(),
        message: "image indexes nest more than 4 levels deep".into(),
    })
}

/// Whether the root filesystem of `image` is already unpacked under `cache`.
pub fn is_unpacked(image: &ResolvedImage, cache: &Path) -> bool {
    cache
        .join(image.manifest_digest.encoded())
        .join("rootfs")
        .is_dir()
}

/// Unpacks `image` into `<cache>/<manifest hex>/rootfs` (once: later calls return the existing
/// directory) and returns that path.
///
/// The layers are applied into a temporary directory that is renamed into place at the end, so
/// an interrupted unpack is never mistaken for a finished one.
pub fn unpack_rootfs(image: &ResolvedImage, cache: &Path) -> Result<PathBuf, UnpackError> {
    let dir = cache.join(image.manifest_digest.encoded());
    let rootfs = dir.join("rootfs");
    if rootfs.is_dir() {
        return Ok(rootfs);
    }
    fs::create_dir_all(cache).map_err(io_err("create", cache))?;
    let tmp = cache.join(format!(
        ".tmp-{}-{}",
        image.manifest_digest.encoded(),
        std::process::id()
    ));
    if tmp.exists() {
        fs::remove_dir_all(&tmp).map_err(io_err("remove", &tmp))?;
    }
    let tmp_root = tmp.join("rootfs");
    fs::create_dir_all(&tmp_root).map_err(io_err("create", &tmp_root))?;
    let result = (|| {
        for layer in &image.layers {
            let digest = parse_digest(layer.digest().as_ref(), "image manifest")?;
            let reader = open_blob(&image.layout, &digest)?;
            apply_layer_verified(&tmp_root, reader, &digest.to_string())?;
        }
        match fs::rename(&tmp, &dir) {
            Ok(()) => {}
            // Another unpack of the same image won the race; its result is as good as ours.
            Err(_) if rootfs.is_dir() => {
                let _ = fs::remove_dir_all(&tmp);
            }
            Err(e) => return Err(io_err("rename", &tmp)(e)),
        }
        sync_dir(cache).map_err(io_err("sync", cache))
    })();
    if result.is_err() {
        let _ = fs::remove_dir_all(&tmp);
    }
    result.map(|()| rootfs)
}

fn apply_layer_verified(
    root: &Path,
    reader: VerifyingReader<fs::File>,
    name: &str,
) -> Result<(), UnpackError> {
    let mut reader = reader;
    apply_layer(root, &mut reader, name)?;
    reader.verify()
}

/// Applies one layer (a tar stream, gzip- or zstd-compressed or plain, detected from its first
/// bytes) onto the directory `root`, honouring whiteouts. `name` names the layer in errors.
pub fn apply_layer(root: &Path, layer: impl Read, name: &str) -> Result<(), UnpackError> {
    let mut buffered = BufReader::with_capacity(256 * 1024, layer);
    let head = buffered
        .fill_buf()
        .map_err(io_err("read layer", Path::new(name)))?;
    let stream: Box<dyn Read + '_> = if head.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::read::MultiGzDecoder::new(buffered))
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Box::new(
            zstd::stream::read::Decoder::with_buffer(buffered)
                .map_err(io_err("read layer", Path::new(name)))?,
        )
    } else {
        Box::new(buffered)
    };
    let mut archive = tar::Archive::new(stream);
    archive.set_preserve_permissions(true);
    archive.set_preserve_ownerships(true);
    archive.set_preserve_mtime(true);
    archive.set_unpack_xattrs(false);
    let bad = |entry: &str, problem: String| UnpackError::BadEntry {
        layer: name.to_owned(),
        entry: entry.to_owned(),
        problem,
    };
    // Paths this layer has written: an opaque whiteout hides only what lower layers put there.
    let mut written: HashSet<PathBuf> = HashSet::new();
    let entries = archive
        .entries()
        .map_err(io_err("read layer", Path::new(name)))?;
    for entry in entries {
        let mut entry = entry.map_err(io_err("read layer", Path::new(name)))?;
        let raw_path = entry
            .path()
            .map_err(io_err("read layer", Path::new(name)))?
            .into_owned();
        let shown = raw_path.display().to_string();
        let rel = clean_relative(&raw_path).ok_or_else(|| {
            bad(
                &shown,
                "its path leaves the root filesystem with '..'".into(),
            )
        })?;
        let Some(file_name) = rel.file_name().map(|n| n.to_string_lossy().into_owned()) else {
            continue; // the root itself
        };
        let parent_rel = rel.parent().unwrap_or(Path::new(""));
        let parent = secure_join(root, parent_rel).map_err(|e| bad(&shown, e.to_string()))?;
        if file_name == ".wh..wh..opq" {
            if let Ok(children) = fs::read_dir(&parent) {
                for child in children.flatten() {
                    let child_rel = parent_rel.join(child.file_name());
                    if !written.contains(&child_rel) {
                        remove_any(&child.path()).map_err(io_err("remove", &child.path()))?;
                    }
                }
            }
            continue;
        }
        if let Some(hidden) = file_name.strip_prefix(".wh.") {
            let target = parent.join(hidden);
            if fs::symlink_metadata(&target).is_ok() {
                remove_any(&target).map_err(io_err("remove", &target))?;
            }
            continue;
        }
        fs::create_dir_all(&parent).map_err(io_err("create", &parent))?;
        let dest = parent.join(&file_name);
        let kind = entry.header().entry_type();
        let existing = fs::symlink_metadata(&dest).ok();
        if let Some(meta) = existing {
            // A directory over a directory merges; anything else replaces what was there.
            if !(meta.is_dir() && kind.is_dir()) {
                remove_any(&dest).map_err(io_err("remove", &dest))?;
            }
        }
        match kind {
            tar::EntryType::Link => {
                let target = entry
                    .link_name()
                    .map_err(io_err("read layer", Path::new(name)))?
                    .ok_or_else(|| bad(&shown, "a hard link without a target".into()))?
                    .into_owned();
                let target_rel = clean_relative(&target).ok_or_else(|| {
                    bad(
                        &shown,
                        "its hard link target leaves the root filesystem".into(),
                    )
                })?;
                let source =
                    secure_join(root, &target_rel).map_err(|e| bad(&shown, e.to_string()))?;
                fs::hard_link(&source, &dest).map_err(io_err("link", &dest))?;
            }
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                // Device nodes come from the runtime's /dev; images need not carry them.
                continue;
            }
            _ => {
                entry.unpack(&dest).map_err(io_err("write", &dest))?;
            }
        }
        written.insert(rel);
    }
    Ok(())
}

fn remove_any(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// `path` without leading `/` or `./`; `None` if it climbs out with `..`.
fn clean_relative(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir | Component::RootDir | Component::Prefix(_) => {}
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
        }
    }
    Some(out)
}

/// Joins `rel` onto `root`, following symlinks as if `root` were `/`: an absolute link target
/// restarts at `root` and `..` stops at `root`, so the result never leaves `root`.
///
/// The last component is resolved too; components that do not exist are appended as they are.
pub fn secure_join(root: &Path, rel: &Path) -> io::Result<PathBuf> {
    let mut resolved = PathBuf::new(); // relative to root
    let mut pending: Vec<std::ffi::OsString> = rel
        .components()
        .rev()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_owned()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .collect();
    let mut links = 0;
    while let Some(part) = pending.pop() {
        if part == ".." {
            resolved.pop();
            continue;
        }
        let candidate = resolved.join(&part);
        let full = root.join(&candidate);
        match fs::symlink_metadata(&full) {
            Ok(m) if m.file_type().is_symlink() => {
                links += 1;
                if links > 64 {
                    return Err(io::Error::other(format!(
                        "too many symbolic links resolving {}",
                        rel.display()
                    )));
                }
                let target = fs::read_link(&full)?;
                if target.is_absolute() {
                    resolved = PathBuf::new();
                }
                for c in target.components().rev() {
                    match c {
                        Component::Normal(n) => pending.push(n.to_owned()),
                        Component::ParentDir => pending.push("..".into()),
                        _ => {}
                    }
                }
            }
            _ => resolved = candidate,
        }
    }
    Ok(root.join(resolved))
}
