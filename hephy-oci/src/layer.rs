//! Deterministic image layers: a sorted list of entries, written as a tar stream that is
//! compressed and hashed in one pass straight into an [`OciLayout`] blob.
//!
//! Every entry gets the same owner, a normalized mode (`0644`, or `0755` when any execute bit is
//! set; directories `0755`), one fixed modification time, and no user or group names, xattrs or
//! device numbers: the bytes depend only on the paths and contents.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use hephy_core::Digest;
use oci_spec::image::{Descriptor, MediaType};
use sha2::{Digest as _, Sha256};

use crate::layout::{to_oci_digest, HashingWriter, LayoutError, OciLayout};

/// How layer blobs are compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Compression {
    /// gzip, which every client reads. `level` 0–9; ko and go-containerregistry use 1.
    Gzip {
        /// The compression level.
        level: u32,
    },
    /// zstd (`application/vnd.oci.image.layer.v1.tar+zstd`): smaller and faster, read by
    /// containerd 1.5+, podman and recent Docker.
    Zstd {
        /// The compression level (1–22; 3 is zstd's default).
        level: i32,
    },
    /// gzip at level 1.
    #[default]
    GzipFast,
}

/// The error returned when parsing a [`Compression`] from text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid compression {input:?}: write \"gzip\", \"gzip:LEVEL\" (1-9), \"zstd\" or \"zstd:LEVEL\" (1-22)")]
pub struct CompressionError {
    input: String,
}

impl std::str::FromStr for Compression {
    type Err = CompressionError;

    /// `gzip` (level 1), `gzip:LEVEL`, `zstd` (level 3) or `zstd:LEVEL`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || CompressionError {
            input: s.to_owned(),
        };
        let (name, level) = match s.trim().split_once(':') {
            Some((n, l)) => (n, Some(l.parse::<i32>().map_err(|_| err())?)),
            None => (s.trim(), None),
        };
        match (name, level) {
            ("gzip", None) => Ok(Compression::GzipFast),
            ("gzip", Some(l)) if (1..=9).contains(&l) => Ok(Compression::Gzip { level: l as u32 }),
            ("zstd", None) => Ok(Compression::Zstd { level: 3 }),
            ("zstd", Some(l)) if (1..=22).contains(&l) => Ok(Compression::Zstd { level: l }),
            _ => Err(err()),
        }
    }
}

impl<'de> serde::Deserialize<'de> for Compression {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl Compression {
    /// The OCI media type of a layer compressed this way.
    pub fn media_type(&self) -> MediaType {
        match self {
            Compression::Zstd { .. } => MediaType::ImageLayerZstd,
            _ => MediaType::ImageLayerGzip,
        }
    }
}

/// Who owns the files in a layer and when they were last changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct LayerOptions {
    /// Compression of the blob.
    pub compression: Compression,
    /// The modification time of every entry (usually [`hephy_core::BuildContext::source_date_epoch`]).
    pub mtime: SystemTime,
    /// The owner of every entry.
    pub uid: u64,
    /// The group of every entry.
    pub gid: u64,
}

impl Default for LayerOptions {
    fn default() -> Self {
        LayerOptions {
            compression: Compression::default(),
            mtime: UNIX_EPOCH,
            uid: 0,
            gid: 0,
        }
    }
}

impl LayerOptions {
    /// Options with `mtime`.
    pub fn at(mtime: SystemTime) -> Self {
        LayerOptions {
            mtime,
            ..LayerOptions::default()
        }
    }

    /// Sets the compression.
    pub fn with_compression(mut self, compression: Compression) -> Self {
        self.compression = compression;
        self
    }

    /// Sets the owner.
    pub fn with_owner(mut self, uid: u64, gid: u64) -> Self {
        self.uid = uid;
        self.gid = gid;
        self
    }
}

/// The error returned when a layer cannot be planned or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LayerError {
    /// A symlink points outside the directory being shipped.
    #[error("symlink {} points to {target:?}, outside the build context: make it relative and keep it inside the context, or replace it with the file it points to", path.display())]
    SymlinkEscapes {
        /// The symlink, relative to the context.
        path: PathBuf,
        /// Where it points.
        target: PathBuf,
    },
    /// A file is neither a regular file, a directory nor a symlink.
    #[error("{} is a {kind}, which cannot go into an image: remove it from the context", path.display())]
    UnsupportedFile {
        /// The file.
        path: PathBuf,
        /// What it is.
        kind: &'static str,
    },
    /// A path in the image is not a clean relative path.
    #[error("invalid path {path:?} in an image: use a path like \"app/server\" without \"..\"")]
    InvalidPath {
        /// The path.
        path: String,
    },
    /// Reading the context failed.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Writing the layer failed.
    #[error(transparent)]
    Layout(#[from] LayoutError),
    /// The background task writing the layer stopped.
    #[error("the task writing a layer stopped: {0}")]
    Task(String),
}

/// What an entry's content is.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum EntryKind {
    /// A directory.
    Dir,
    /// A file read from disk when the layer is written.
    File {
        /// The file on disk.
        source: PathBuf,
        /// Its size.
        size: u64,
        /// Whether it is executable.
        executable: bool,
    },
    /// A file from memory.
    Bytes {
        /// The content.
        data: Arc<[u8]>,
        /// Its mode (normalized like every other mode).
        mode: u32,
    },
    /// A symbolic link.
    Symlink {
        /// Its target, as stored.
        target: PathBuf,
    },
}

/// One entry of a layer: a path in the image (relative, `/`-separated) and what it is.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Entry {
    /// The path in the image, without a leading `/`.
    pub path: String,
    /// What it is.
    pub kind: EntryKind,
    /// An explicit mode that overrides the normalized one (`/tmp` is `1777`).
    pub mode: Option<u32>,
}

impl Entry {
    /// A directory.
    pub fn dir(path: impl Into<String>) -> Self {
        Entry {
            path: path.into(),
            kind: EntryKind::Dir,
            mode: None,
        }
    }

    /// A file with `data` and `mode`.
    pub fn bytes(path: impl Into<String>, data: impl Into<Arc<[u8]>>, mode: u32) -> Self {
        Entry {
            path: path.into(),
            kind: EntryKind::Bytes {
                data: data.into(),
                mode,
            },
            mode: None,
        }
    }

    /// A file read from `source` (of `size` bytes) when the layer is written.
    pub fn file(
        path: impl Into<String>,
        source: impl Into<PathBuf>,
        size: u64,
        executable: bool,
    ) -> Self {
        Entry {
            path: path.into(),
            kind: EntryKind::File {
                source: source.into(),
                size,
                executable,
            },
            mode: None,
        }
    }

    /// Sets an exact mode, kept as given.
    pub fn with_mode(mut self, mode: u32) -> Self {
        self.mode = Some(mode);
        self
    }

    /// The content size (0 for directories and links).
    pub fn size(&self) -> u64 {
        match &self.kind {
            EntryKind::File { size, .. } => *size,
            EntryKind::Bytes { data, .. } => data.len() as u64,
            _ => 0,
        }
    }

    fn normalized_mode(&self) -> u32 {
        if let Some(m) = self.mode {
            return m;
        }
        match &self.kind {
            EntryKind::Dir => 0o755,
            EntryKind::File { executable, .. } => {
                if *executable {
                    0o755
                } else {
                    0o644
                }
            }
            EntryKind::Bytes { mode, .. } => {
                if mode & 0o111 != 0 {
                    0o755
                } else {
                    0o644
                }
            }
            EntryKind::Symlink { .. } => 0o777,
        }
    }
}

fn check_image_path(path: &str) -> Result<String, LayerError> {
    let trimmed = path.trim_matches('/');
    let bad = || LayerError::InvalidPath {
        path: path.to_owned(),
    };
    if trimmed.is_empty() {
        return Ok(String::new());
    }
    for part in trimmed.split('/') {
        if part.is_empty() || part == "." || part == ".." {
            return Err(bad());
        }
    }
    Ok(trimmed.to_owned())
}

/// Lists a directory tree as layer entries under `prefix` in the image, sorted by path.
///
/// `skip` is called with each path relative to `root` (`/`-separated); entries for which it
/// returns true are left out with everything below them. Symlinks are kept as links, but one
/// whose target leaves `root` (absolute, or too many `..`) is refused with
/// [`LayerError::SymlinkEscapes`].
pub fn scan_dir(
    root: &Path,
    prefix: &str,
    skip: &dyn Fn(&str) -> bool,
) -> Result<Vec<Entry>, LayerError> {
    let prefix = check_image_path(prefix)?;
    let mut out = Vec::new();
    // Parent directories of the prefix, so the layer is complete on its own.
    let mut acc = String::new();
    for part in prefix.split('/').filter(|p| !p.is_empty()) {
        if !acc.is_empty() {
            acc.push('/');
        }
        acc.push_str(part);
        out.push(Entry::dir(acc.clone()));
    }
    scan_into(root, "", &prefix, skip, &mut out)?;
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

fn join(a: &str, b: &str) -> String {
    if a.is_empty() {
        b.to_owned()
    } else if b.is_empty() {
        a.to_owned()
    } else {
        format!("{a}/{b}")
    }
}

fn scan_into(
    dir: &Path,
    rel: &str,
    prefix: &str,
    skip: &dyn Fn(&str) -> bool,
    out: &mut Vec<Entry>,
) -> Result<(), LayerError> {
    let read_err = |path: &Path, source| LayerError::Read {
        path: path.to_owned(),
        source,
    };
    let mut children: Vec<(String, PathBuf)> = Vec::new();
    for e in fs::read_dir(dir).map_err(|e| read_err(dir, e))? {
        let e = e.map_err(|e| read_err(dir, e))?;
        let name = e.file_name();
        let Some(name) = name.to_str() else {
            return Err(LayerError::InvalidPath {
                path: e.path().to_string_lossy().into_owned(),
            });
        };
        children.push((name.to_owned(), e.path()));
    }
    children.sort();
    for (name, path) in children {
        let rel_child = join(rel, &name);
        if skip(&rel_child) {
            continue;
        }
        let meta = fs::symlink_metadata(&path).map_err(|e| read_err(&path, e))?;
        let image_path = join(prefix, &rel_child);
        let ft = meta.file_type();
        if ft.is_dir() {
            out.push(Entry::dir(image_path));
            scan_into(&path, &rel_child, prefix, skip, out)?;
        } else if ft.is_file() {
            out.push(Entry {
                path: image_path,
                kind: EntryKind::File {
                    source: path,
                    size: meta.len(),
                    executable: meta.permissions().mode() & 0o111 != 0,
                },
                mode: None,
            });
        } else if ft.is_symlink() {
            let target = fs::read_link(&path).map_err(|e| read_err(&path, e))?;
            if !symlink_stays_inside(&rel_child, &target) {
                return Err(LayerError::SymlinkEscapes {
                    path: PathBuf::from(rel_child),
                    target,
                });
            }
            out.push(Entry {
                path: image_path,
                kind: EntryKind::Symlink { target },
                mode: None,
            });
        } else {
            let kind = {
                use std::os::unix::fs::FileTypeExt;
                if ft.is_socket() {
                    "socket"
                } else if ft.is_fifo() {
                    "named pipe"
                } else {
                    "device file"
                }
            };
            return Err(LayerError::UnsupportedFile { path, kind });
        }
    }
    Ok(())
}

/// Whether a link at `link` (relative to the context root) pointing to `target` resolves inside
/// the root, judged lexically as a container runtime would see it.
fn symlink_stays_inside(link: &str, target: &Path) -> bool {
    if target.is_absolute() {
        return false;
    }
    let mut depth: i64 = link.split('/').count() as i64 - 1;
    for c in target.components() {
        match c {
            Component::ParentDir => {
                depth -= 1;
                if depth < 0 {
                    return false;
                }
            }
            Component::Normal(_) => depth += 1,
            _ => {}
        }
    }
    true
}

/// Adds the missing parent directories of every entry, sorts by path and drops duplicates
/// (the first entry of a path wins).
pub fn normalize(mut entries: Vec<Entry>) -> Result<Vec<Entry>, LayerError> {
    let mut by_path: BTreeMap<String, Entry> = BTreeMap::new();
    for mut e in entries.drain(..) {
        e.path = check_image_path(&e.path)?;
        if e.path.is_empty() {
            continue;
        }
        let mut acc = String::new();
        let parts: Vec<&str> = e.path.split('/').collect();
        for part in &parts[..parts.len() - 1] {
            acc = join(&acc, part);
            by_path
                .entry(acc.clone())
                .or_insert_with(|| Entry::dir(acc.clone()));
        }
        let key = e.path.clone();
        match by_path.get(&key) {
            Some(existing) if existing.kind != EntryKind::Dir || e.kind == EntryKind::Dir => {
                // An explicit directory entry (with a mode) replaces an implied one.
                if existing.kind == EntryKind::Dir && e.mode.is_some() {
                    by_path.insert(key, e);
                }
            }
            _ => {
                by_path.insert(key, e);
            }
        }
    }
    Ok(by_path.into_values().collect())
}

/// A layer written into a layout.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Layer {
    /// The digest of the compressed blob.
    pub digest: Digest,
    /// The digest of the uncompressed tar (the image config's `diff_id`).
    pub diff_id: Digest,
    /// The compressed size.
    pub size: u64,
    /// The uncompressed size.
    pub uncompressed_size: u64,
    /// The blob's media type.
    pub media_type: MediaType,
    descriptor: Descriptor,
}

impl Layer {
    /// The layer's descriptor for a manifest.
    pub fn descriptor(&self) -> Descriptor {
        self.descriptor.clone()
    }
}

fn tar_header(entry: &Entry, opts: &LayerOptions) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_mode(entry.normalized_mode());
    h.set_uid(opts.uid);
    h.set_gid(opts.gid);
    let mtime = opts
        .mtime
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    h.set_mtime(mtime);
    h.set_size(entry.size());
    h
}

/// Writes `entries` (see [`normalize`]) as one layer into `layout`: tar, compressed and hashed
/// in one streaming pass, blocking the calling thread.
pub fn write_layer(
    layout: &OciLayout,
    entries: &[Entry],
    opts: &LayerOptions,
) -> Result<Layer, LayerError> {
    write_layer_until(layout, entries, opts, &AtomicBool::new(false))
}

fn write_layer_until(
    layout: &OciLayout,
    entries: &[Entry],
    opts: &LayerOptions,
    cancel: &AtomicBool,
) -> Result<Layer, LayerError> {
    let blob = layout.blob_writer()?;
    let io_err = |e: io::Error| LayerError::Layout(LayoutError::io("write", layout.root(), e));
    let (blob, diff_hex, uncompressed) = match opts.compression {
        Compression::Zstd { level } => {
            let enc = zstd::Encoder::new(blob, level).map_err(io_err)?;
            let (enc, hex, n) = write_tar(HashingWriter::new(enc), entries, opts, cancel)?;
            (enc.finish().map_err(io_err)?, hex, n)
        }
        Compression::Gzip { level } => {
            let enc = flate2::GzBuilder::new().write(blob, flate2::Compression::new(level.min(9)));
            let (enc, hex, n) = write_tar(HashingWriter::new(enc), entries, opts, cancel)?;
            (enc.finish().map_err(io_err)?, hex, n)
        }
        Compression::GzipFast => {
            let enc = flate2::GzBuilder::new().write(blob, flate2::Compression::fast());
            let (enc, hex, n) = write_tar(HashingWriter::new(enc), entries, opts, cancel)?;
            (enc.finish().map_err(io_err)?, hex, n)
        }
    };
    let (digest, size) = blob.finish()?;
    let diff_id = Digest::sha256(diff_hex.clone()).map_err(|_| {
        LayerError::Layout(LayoutError::BadDigest {
            root: layout.root().to_owned(),
            digest: diff_hex,
        })
    })?;
    let descriptor = Descriptor::new(opts.compression.media_type(), size, to_oci_digest(&digest)?);
    Ok(Layer {
        digest,
        diff_id,
        size,
        uncompressed_size: uncompressed,
        media_type: opts.compression.media_type(),
        descriptor,
    })
}

fn write_tar<W: Write>(
    w: HashingWriter<W>,
    entries: &[Entry],
    opts: &LayerOptions,
    cancel: &AtomicBool,
) -> Result<(W, String, u64), LayerError> {
    let mut tar = tar::Builder::new(w);
    tar.mode(tar::HeaderMode::Deterministic);
    let werr = |path: &str, e: io::Error| LayerError::Read {
        path: PathBuf::from(path),
        source: e,
    };
    for e in entries {
        if cancel.load(Ordering::Relaxed) {
            return Err(LayerError::Task("cancelled".to_owned()));
        }
        let mut h = tar_header(e, opts);
        match &e.kind {
            EntryKind::Dir => {
                h.set_entry_type(tar::EntryType::Directory);
                tar.append_data(&mut h, format!("{}/", e.path), io::empty())
                    .map_err(|x| werr(&e.path, x))?;
            }
            EntryKind::File { source, size, .. } => {
                h.set_entry_type(tar::EntryType::Regular);
                let f = fs::File::open(source).map_err(|x| LayerError::Read {
                    path: source.clone(),
                    source: x,
                })?;
                // The size was recorded when the tree was scanned; a file that changed since
                // would corrupt the tar, so read exactly that many bytes and check.
                let mut limited = f.take(*size);
                let mut counted = CountingReader {
                    inner: &mut limited,
                    n: 0,
                };
                tar.append_data(&mut h, &e.path, &mut counted)
                    .map_err(|x| LayerError::Read {
                        path: source.clone(),
                        source: x,
                    })?;
                if counted.n != *size {
                    return Err(LayerError::Read {
                        path: source.clone(),
                        source: io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "the file shrank while the layer was written; do not change the context during a build",
                        ),
                    });
                }
            }
            EntryKind::Bytes { data, .. } => {
                h.set_entry_type(tar::EntryType::Regular);
                tar.append_data(&mut h, &e.path, &data[..])
                    .map_err(|x| werr(&e.path, x))?;
            }
            EntryKind::Symlink { target } => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_size(0);
                tar.append_link(&mut h, &e.path, target)
                    .map_err(|x| werr(&e.path, x))?;
            }
        }
    }
    let hashing = tar.into_inner().map_err(|x| werr("tar", x))?;
    Ok(hashing.finish())
}

struct CountingReader<R> {
    inner: R,
    n: u64,
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.n += n as u64;
        Ok(n)
    }
}

/// Writes several layers at once on blocking threads, as many at a time as there are cores
/// (compression is the costly part and layers are independent). The result keeps the order of
/// `layers`. Dropping the future stops the layers being written at their next entry.
pub async fn write_layers(
    layout: &OciLayout,
    layers: Vec<Vec<Entry>>,
    opts: LayerOptions,
) -> Result<Vec<Layer>, LayerError> {
    struct CancelOnDrop(Arc<AtomicBool>);
    impl Drop for CancelOnDrop {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Relaxed);
        }
    }
    let cancel = CancelOnDrop(Arc::new(AtomicBool::new(false)));
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let permits = Arc::new(tokio::sync::Semaphore::new(cores));
    let mut tasks = Vec::with_capacity(layers.len());
    for entries in layers {
        let permit = permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| LayerError::Task(e.to_string()))?;
        let layout = layout.clone();
        let flag = cancel.0.clone();
        tasks.push(tokio::task::spawn_blocking(move || {
            let _permit = permit;
            write_layer_until(&layout, &entries, &opts, &flag)
        }));
    }
    let mut out = Vec::with_capacity(tasks.len());
    for t in tasks {
        out.push(t.await.map_err(|e| LayerError::Task(e.to_string()))??);
    }
    Ok(out)
}

/// How [`plan_layers`] splits a large tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct SplitOptions {
    /// Aim for layers of about this many bytes (uncompressed).
    pub target_layer_bytes: u64,
    /// Never make more layers than this (images are limited to about 127 layers in all).
    pub max_layers: usize,
}

impl SplitOptions {
    /// Options aiming at layers of `bytes` (uncompressed).
    pub fn with_target(bytes: u64) -> Self {
        SplitOptions {
            target_layer_bytes: bytes,
            ..SplitOptions::default()
        }
    }
}

impl Default for SplitOptions {
    fn default() -> Self {
        SplitOptions {
            target_layer_bytes: 8 << 20,
            max_layers: 48,
        }
    }
}

/// Splits the entries of a tree into layers so that changing one file changes one small layer.
///
/// Files of at least half the target size get a layer of their own. The other files go into
/// `B` buckets chosen by a hash of their path, where `B` is the total size over the target,
/// rounded up to a power of two: a file keeps its bucket while it and its neighbours change,
/// and only a doubling of the context moves files between buckets. Each layer carries the
/// directories above its files (identical in every layer, so they stack cleanly). A tree smaller
/// than the target stays one layer. The result is deterministic.
pub fn plan_layers(entries: Vec<Entry>, opts: &SplitOptions) -> Vec<Vec<Entry>> {
    let target = opts.target_layer_bytes.max(1);
    let max_layers = opts.max_layers.max(1);
    let total: u64 = entries.iter().map(Entry::size).sum();
    if total <= target || max_layers == 1 {
        return vec![entries];
    }
    let (mut big, small): (Vec<Entry>, Vec<Entry>) = entries
        .into_iter()
        .partition(|e| e.size() >= target / 2 && e.kind != EntryKind::Dir);
    big.sort_by(|a, b| a.path.cmp(&b.path));
    // Largest files first get their own layers while the cap allows.
    let mut order: Vec<usize> = (0..big.len()).collect();
    order.sort_by(|&a, &b| big[b].size().cmp(&big[a].size()).then(a.cmp(&b)));
    let own_cap = max_layers.saturating_sub(1).min(max_layers / 2 + 1);
    let mut own = vec![false; big.len()];
    for &i in order.iter().take(own_cap) {
        own[i] = true;
    }
    let mut small = small;
    let mut own_layers = Vec::new();
    for (i, e) in big.into_iter().enumerate() {
        if own[i] {
            own_layers.push(e);
        } else {
            small.push(e);
        }
    }
    let small_total: u64 = small.iter().map(Entry::size).sum();
    let room = max_layers.saturating_sub(own_layers.len()).max(1);
    let wanted = small_total.div_ceil(target).max(1) as usize;
    let mut buckets = wanted.next_power_of_two();
    while buckets > room {
        buckets /= 2;
    }
    let buckets = buckets.max(1);
    let mut out: Vec<Vec<Entry>> = vec![Vec::new(); buckets];
    let dirs: Vec<Entry> = small
        .iter()
        .filter(|e| e.kind == EntryKind::Dir)
        .cloned()
        .collect();
    for e in small {
        if e.kind == EntryKind::Dir {
            continue;
        }
        let b = bucket_of(&e.path, buckets);
        out[b].push(e);
    }
    for e in own_layers {
        out.push(vec![e]);
    }
    // Each layer gets the directories above its files, with their attributes from the tree.
    let dir_map: BTreeMap<&str, &Entry> = dirs.iter().map(|d| (d.path.as_str(), d)).collect();
    let mut result = Vec::new();
    let mut dirs_placed = false;
    for layer in out {
        if layer.is_empty() {
            continue;
        }
        let mut with_dirs: BTreeMap<String, Entry> = BTreeMap::new();
        for e in layer {
            let mut acc = String::new();
            let parts: Vec<&str> = e.path.split('/').collect();
            for part in &parts[..parts.len() - 1] {
                acc = join(&acc, part);
                let d = dir_map
                    .get(acc.as_str())
                    .map(|d| (*d).clone())
                    .unwrap_or_else(|| Entry::dir(acc.clone()));
                with_dirs.entry(acc.clone()).or_insert(d);
            }
            with_dirs.insert(e.path.clone(), e);
        }
        if !dirs_placed {
            // Empty directories belong somewhere too: the first layer.
            for d in &dirs {
                with_dirs.entry(d.path.clone()).or_insert_with(|| d.clone());
            }
            dirs_placed = true;
        }
        result.push(with_dirs.into_values().collect());
    }
    if result.is_empty() {
        result.push(dirs);
    }
    result
}

fn bucket_of(path: &str, buckets: usize) -> usize {
    let h = Sha256::digest(path.as_bytes());
    let mut n = [0u8; 8];
    n.copy_from_slice(&h[..8]);
    (u64::from_be_bytes(n) % buckets as u64) as usize
}
