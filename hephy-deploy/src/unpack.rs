//! OCI images on disk to root filesystems: find the manifest for a platform in an OCI image
//! layout, then apply its layers in order (gzip, zstd or plain tar; whiteouts honoured; no
//! entry may write outside the root).
//!
//! Every blob read is checked against its digest while it streams, so a damaged layout fails
//! loudly instead of running a half image. Images are input from whoever pushed them, so
//! everything read is capped ([`UnpackLimits`]): a layer's decompressed size and entry count,
//! the tar headers of one entry, and the size of manifests and configs.

use std::cell::Cell;
use std::collections::HashSet;
use std::fs;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Component, Path, PathBuf};
use std::rc::Rc;

use hephy_core::{Digest, Platform};
use oci_spec::image::{Descriptor, ImageConfiguration, ImageIndex, ImageManifest};
use sha2::{Digest as _, Sha256, Sha512};

use hephy_core::fs::sync_dir;

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
        /// The layer (its digest, and the image it is in).
        layer: String,
        /// The entry path.
        entry: String,
        /// What is wrong.
        problem: String,
    },
    /// A layer decompresses to more bytes than [`UnpackLimits::max_layer_bytes`].
    #[error("layer {layer} decompresses to more than {}, the limit: rebuild the image with smaller layers, or raise the deployer's limit (UnpackLimits::max_layer_bytes)", size_text(*limit))]
    LayerTooLarge {
        /// The layer (its digest, and the image it is in).
        layer: String,
        /// The limit in bytes.
        limit: u64,
    },
    /// A layer has more entries than [`UnpackLimits::max_layer_entries`].
    #[error("layer {layer} has more than {limit} entries, the limit: rebuild the image with fewer files per layer, or raise the deployer's limit (UnpackLimits::max_layer_entries)")]
    TooManyEntries {
        /// The layer (its digest, and the image it is in).
        layer: String,
        /// The limit.
        limit: u64,
    },
    /// The tar headers of one entry (long names, pax records) are larger than
    /// [`MAX_ENTRY_HEADER_BYTES`].
    #[error("layer {layer} has an entry whose tar headers (long names, pax records) pass {}, the limit: rebuild the image with a conforming tool", size_text(*limit))]
    HeaderTooLarge {
        /// The layer (its digest, and the image it is in).
        layer: String,
        /// The limit in bytes.
        limit: u64,
    },
    /// A manifest, index or config is larger than [`UnpackLimits::max_json_bytes`].
    #[error("{what} {digest} is {size} bytes; the limit is {}: publish a smaller {what}, or raise the deployer's limit (UnpackLimits::max_json_bytes)", size_text(*limit))]
    JsonTooLarge {
        /// What was read (manifest, config).
        what: &'static str,
        /// Its digest.
        digest: Digest,
        /// Its size in bytes (at least this much, if it grew while being read).
        size: u64,
        /// The limit in bytes.
        limit: u64,
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

/// The most bytes the tar headers of one entry may take: its header blocks with the GNU long
/// names and pax records before it, which the tar reader holds in memory. Paths are at most
/// 4 KiB on Linux, so this leaves room for any honest entry and its extended attributes.
pub const MAX_ENTRY_HEADER_BYTES: u64 = 1 << 20;

/// Caps on what one image may make [`resolve`] and [`unpack_rootfs`] read and write. An image
/// over a cap is refused with an error that names the cap.
///
/// ```
/// use hephy_deploy::unpack::UnpackLimits;
/// let mut limits = UnpackLimits::default();
/// limits.max_layer_bytes = 2 << 30;
/// assert_eq!(limits.max_layer_entries, 1_000_000);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct UnpackLimits {
    /// The most bytes one layer may decompress to, tar headers included; the sizes of its files
    /// (sparse ones at their full size) must add up to no more either (default 8 GiB).
    pub max_layer_bytes: u64,
    /// The most entries (files, directories, links, whiteouts) one layer may have (default
    /// 1,000,000).
    pub max_layer_entries: u64,
    /// The largest image index, manifest or config read, in bytes (default 4 MiB, as registries
    /// cap manifests).
    pub max_json_bytes: u64,
}

impl UnpackLimits {
    /// The defaults: 8 GiB and 1,000,000 entries per layer, 4 MiB of JSON.
    pub const DEFAULT: UnpackLimits = UnpackLimits {
        max_layer_bytes: 8 << 30,
        max_layer_entries: 1_000_000,
        max_json_bytes: 4 << 20,
    };
}

impl Default for UnpackLimits {
    fn default() -> Self {
        UnpackLimits::DEFAULT
    }
}

/// `8 GiB`, `4 MiB`, or `1234 bytes` when the size is no whole number of either.
fn size_text(bytes: u64) -> String {
    for (unit, name) in [(1u64 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")] {
        if bytes >= unit && bytes.is_multiple_of(unit) {
            return format!("{} {name}", bytes / unit);
        }
    }
    format!("{bytes} bytes")
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

/// Reads a small blob whole, checking its digest and that it is at most `limit` bytes.
fn read_blob(
    layout: &Path,
    digest: &Digest,
    what: &'static str,
    limit: u64,
) -> Result<Vec<u8>, UnpackError> {
    let mut reader = open_blob(layout, digest)?;
    let path = blob_path(layout, digest);
    let too_large = |size| UnpackError::JsonTooLarge {
        what,
        digest: digest.clone(),
        size,
        limit,
    };
    let size = reader
        .inner
        .metadata()
        .map_err(io_err("read", &path))?
        .len();
    if size > limit {
        return Err(too_large(size));
    }
    let mut bytes = vec![];
    // The file may grow after the size was checked: read one byte past the limit to tell.
    (&mut reader)
        .take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(io_err("read", &path))?;
    if bytes.len() as u64 > limit {
        return Err(too_large(bytes.len() as u64));
    }
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
/// manifest when `digest` names an image index, and reads its config. Indexes, manifests and
/// configs larger than `limits.max_json_bytes` are refused.
pub fn resolve(
    layout: &Path,
    digest: &Digest,
    platform: &Platform,
    limits: &UnpackLimits,
) -> Result<ResolvedImage, UnpackError> {
    if !layout.join("index.json").is_file() {
        return Err(UnpackError::NoLayout {
            path: layout.to_owned(),
        });
    }
    let mut digest = digest.clone();
    // An index may point at further indexes; a few levels are plenty for any real image.
    for _ in 0..4 {
        let bytes = read_blob(layout, &digest, "manifest", limits.max_json_bytes)?;
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
        let config_bytes = read_blob(layout, &config_digest, "config", limits.max_json_bytes)?;
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
/// directory) and returns that path. A layer over one of `limits` stops the unpack.
///
/// The layers are applied into a temporary directory that is renamed into place at the end, so
/// an interrupted unpack is never mistaken for a finished one.
pub fn unpack_rootfs(
    image: &ResolvedImage,
    cache: &Path,
    limits: &UnpackLimits,
) -> Result<PathBuf, UnpackError> {
    let dir = cache.join(image.manifest_digest.encoded());
    let rootfs = dir.join("rootfs");
    if rootfs.is_dir() {
        return Ok(rootfs);
    }
    fs::create_dir_all(cache).map_err(io_err("create", cache))?;
    // Others may pass (containers run as host uids of their own range) but not list; setuid
    // and setgid bits are dropped on unpack, so nothing here lets a host user become root.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(cache, fs::Permissions::from_mode(0o701))
            .map_err(io_err("restrict", cache))?;
    }
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
            let name = format!("{digest} of image {}", image.manifest_digest);
            apply_layer_verified(&tmp_root, reader, &name, limits)?;
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
    limits: &UnpackLimits,
) -> Result<(), UnpackError> {
    let mut reader = reader;
    apply_layer(root, &mut reader, name, limits)?;
    reader.verify()
}

/// Which cap a [`MeteredReader`] hit.
#[derive(Clone, Copy)]
enum Over {
    Layer,
    Header,
}

/// What a [`MeteredReader`] has seen, shared with the loop that drives the tar reader (which
/// owns the reader itself).
#[derive(Default)]
struct Meter {
    read: Cell<u64>,
    /// Where the tar reader started reading the headers of the next entry, while it does.
    headers_from: Cell<Option<u64>>,
    over: Cell<Option<Over>>,
}

/// Counts the decompressed bytes of a layer and fails the read that passes a cap, before the
/// bytes are used: a small gzip layer can inflate to terabytes, and a pax record to gigabytes
/// of memory.
struct MeteredReader<R> {
    inner: R,
    meter: Rc<Meter>,
    max: u64,
}

impl<R: Read> Read for MeteredReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let read = self.meter.read.get().saturating_add(n as u64);
        self.meter.read.set(read);
        let over = if read > self.max {
            Some(Over::Layer)
        } else if self
            .meter
            .headers_from
            .get()
            .is_some_and(|from| read - from > MAX_ENTRY_HEADER_BYTES)
        {
            Some(Over::Header)
        } else {
            None
        };
        if let Some(over) = over {
            self.meter.over.set(Some(over));
            return Err(io::Error::other("the layer passed an unpack limit"));
        }
        Ok(n)
    }
}

/// What a whiteout entry asks for.
enum Whiteout<'a> {
    /// Remove what lower layers put in the directory.
    Opaque,
    /// Remove the named file or directory of the lower layers.
    Remove(&'a str),
    /// AUFS metadata (`.wh..wh.plnk` and the like) that says nothing to other runtimes.
    Ignore,
}

/// Reads the whiteout in a file name, or `None` for a plain name. A name that would reach
/// beyond its directory (`.wh.`, `.wh..`, `.wh...`) is an error.
fn whiteout(file_name: &str) -> Result<Option<Whiteout<'_>>, String> {
    if file_name == ".wh..wh..opq" {
        return Ok(Some(Whiteout::Opaque));
    }
    if file_name.starts_with(".wh..wh.") {
        return Ok(Some(Whiteout::Ignore));
    }
    let Some(hidden) = file_name.strip_prefix(".wh.") else {
        return Ok(None);
    };
    if hidden.is_empty() || hidden == "." || hidden == ".." || hidden.contains(['/', '\0']) {
        return Err(format!(
            "whiteout {file_name:?} names no file in its directory (a whiteout is .wh.NAME, NAME a file name other than . and ..)"
        ));
    }
    Ok(Some(Whiteout::Remove(hidden)))
}

/// Applies one layer (a tar stream, gzip- or zstd-compressed or plain, detected from its first
/// bytes) onto the directory `root`, honouring whiteouts. `name` names the layer in errors
/// ([`unpack_rootfs`] passes `DIGEST of image DIGEST`).
///
/// Nothing is written, linked or removed outside `root`: parents are resolved with
/// [`secure_join`], the last component is never followed, and whiteouts must name one file of
/// their directory. A layer over one of `limits` is refused; what it wrote until then stays.
pub fn apply_layer(
    root: &Path,
    layer: impl Read,
    name: &str,
    limits: &UnpackLimits,
) -> Result<(), UnpackError> {
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
    let meter = Rc::new(Meter::default());
    let mut archive = tar::Archive::new(MeteredReader {
        inner: stream,
        meter: meter.clone(),
        max: limits.max_layer_bytes,
    });
    archive.set_preserve_permissions(true);
    archive.set_preserve_ownerships(true);
    archive.set_preserve_mtime(true);
    archive.set_unpack_xattrs(false);
    let bad = |entry: &str, problem: String| UnpackError::BadEntry {
        layer: name.to_owned(),
        entry: entry.to_owned(),
        problem,
    };
    let too_large = || UnpackError::LayerTooLarge {
        layer: name.to_owned(),
        limit: limits.max_layer_bytes,
    };
    // A failed read may be the meter's refusal, which the tar reader wraps in its own words.
    let fail = |action: &'static str, path: &Path| {
        let meter = meter.clone();
        let path = path.to_owned();
        move |source: io::Error| match meter.over.get() {
            Some(Over::Layer) => too_large(),
            Some(Over::Header) => UnpackError::HeaderTooLarge {
                layer: name.to_owned(),
                limit: MAX_ENTRY_HEADER_BYTES,
            },
            None => UnpackError::Io {
                action,
                path,
                source,
            },
        }
    };
    // Paths this layer has written: an opaque whiteout hides only what lower layers put there.
    let mut written: HashSet<PathBuf> = HashSet::new();
    let (mut count, mut sizes) = (0u64, 0u64);
    let mut entries = archive
        .entries()
        .map_err(fail("read layer", Path::new(name)))?;
    loop {
        meter.headers_from.set(Some(meter.read.get()));
        let next = entries.next();
        meter.headers_from.set(None);
        let Some(entry) = next else { break };
        let mut entry = entry.map_err(fail("read layer", Path::new(name)))?;
        count += 1;
        if count > limits.max_layer_entries {
            return Err(UnpackError::TooManyEntries {
                layer: name.to_owned(),
                limit: limits.max_layer_entries,
            });
        }
        // Sparse files are written with holes: their full size counts, not what the tar holds.
        sizes = sizes.saturating_add(entry.size());
        if sizes > limits.max_layer_bytes {
            return Err(too_large());
        }
        'apply: {
            let kind = entry.header().entry_type();
            if kind.is_pax_global_extensions() {
                break 'apply; // archive-wide metadata, not a file
            }
            let raw_path = entry
                .path()
                .map_err(fail("read layer", Path::new(name)))?
                .into_owned();
            let shown = raw_path.display().to_string();
            let rel = clean_relative(&raw_path).ok_or_else(|| {
                bad(
                    &shown,
                    "its path leaves the root filesystem with '..'".into(),
                )
            })?;
            let Some(file_name) = rel.file_name().map(|n| n.to_string_lossy().into_owned()) else {
                break 'apply; // the root itself
            };
            let parent_rel = rel.parent().unwrap_or(Path::new(""));
            if let Some(dir) = parent_rel
                .iter()
                .map(|c| c.to_string_lossy())
                .find(|c| c.starts_with(".wh."))
            {
                if dir.starts_with(".wh..wh.") {
                    break 'apply; // inside AUFS metadata, as whiteout() ignores it
                }
                return Err(bad(
                    &shown,
                    format!("whiteout {dir:?} is used as a directory; a whiteout is a file"),
                ));
            }
            let parent = secure_join(root, parent_rel).map_err(|e| bad(&shown, e.to_string()))?;
            match whiteout(&file_name).map_err(|problem| bad(&shown, problem))? {
                Some(Whiteout::Opaque) => {
                    if let Ok(children) = fs::read_dir(&parent) {
                        for child in children.flatten() {
                            let child_rel = parent_rel.join(child.file_name());
                            if !written.contains(&child_rel) {
                                remove_any(&child.path())
                                    .map_err(io_err("remove", &child.path()))?;
                            }
                        }
                    }
                    break 'apply;
                }
                Some(Whiteout::Remove(hidden)) => {
                    let target = parent.join(hidden);
                    // Whiting out what no lower layer has (or a path through a file) is a no-op.
                    if fs::symlink_metadata(&target).is_ok() {
                        remove_any(&target).map_err(io_err("remove", &target))?;
                    }
                    break 'apply;
                }
                Some(Whiteout::Ignore) => break 'apply,
                None => {}
            }
            fs::create_dir_all(&parent).map_err(io_err("create", &parent))?;
            let dest = parent.join(&file_name);
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
                        .map_err(fail("read layer", Path::new(name)))?
                        .ok_or_else(|| bad(&shown, "a hard link without a target".into()))?
                        .into_owned();
                    let target_rel = clean_relative(&target).ok_or_else(|| {
                        bad(
                            &shown,
                            "its hard link target leaves the root filesystem".into(),
                        )
                    })?;
                    let Some(target_name) = target_rel.file_name() else {
                        return Err(bad(&shown, "a hard link to the root directory".into()));
                    };
                    // As tar does, link the entry itself: a symlink stays a symlink, inside root.
                    let source = secure_join(root, target_rel.parent().unwrap_or(Path::new("")))
                        .map_err(|e| bad(&shown, e.to_string()))?
                        .join(target_name);
                    fs::hard_link(&source, &dest).map_err(io_err("link", &dest))?;
                }
                tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                    // Device nodes come from the runtime's /dev; images need not carry them.
                    break 'apply;
                }
                _ => {
                    entry.unpack(&dest).map_err(fail("write", &dest))?;
                    let mode = entry.header().mode().unwrap_or(0);
                    if mode & 0o6000 != 0 && !entry.header().entry_type().is_symlink() {
                        // Containers run with no_new_privs, where setuid does nothing; on the
                        // host the bit would let a local user reach root through an image.
                        use std::os::unix::fs::PermissionsExt;
                        fs::set_permissions(&dest, fs::Permissions::from_mode(mode & 0o1777))
                            .map_err(io_err("chmod", &dest))?;
                    }
                }
            }
            written.insert(rel);
        }
        // Read what was not (a whiteout's content, a device's): the tar reader would skip it
        // while the meter counts the next entry's headers.
        io::copy(&mut entry, &mut io::sink()).map_err(fail("read layer", Path::new(name)))?;
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
