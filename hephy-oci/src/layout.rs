//! OCI image layouts on disk: `oci-layout`, `index.json` and content-addressed `blobs/`.
//!
//! Blobs are written through [`BlobWriter`], which hashes while it writes into a temporary file
//! inside the layout and renames it to its digest at the end, so a blob is either complete under
//! its name or absent, and memory never grows with its size.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::io::{self, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use hephy_core::{BuildError, Digest};
use oci_spec::image::{Descriptor, ImageIndex, MediaType};
use serde::de::DeserializeOwned;
use serde::Serialize;
use sha2::{Digest as _, Sha256};

/// The annotation naming a manifest in `index.json`, the tag of an OCI layout.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// The error returned by [`OciLayout`] operations.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LayoutError {
    /// A file of the layout could not be read or written.
    #[error("cannot {action} {}: {source}; check that the directory exists and is writable", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The directory is not an OCI image layout.
    #[error("{} is not an OCI image layout (no oci-layout file): create it with OciLayout::create or point to a layout directory", path.display())]
    NotALayout {
        /// The directory.
        path: PathBuf,
    },
    /// A JSON document of the layout is not what OCI describes.
    #[error("invalid JSON in {}: {message}; the layout is damaged, rebuild the image", path.display())]
    Json {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A blob the layout refers to is not in it.
    #[error("blob {digest} is missing from the layout at {}: the layout is incomplete, rebuild or re-pull the image", root.display())]
    MissingBlob {
        /// The layout directory.
        root: PathBuf,
        /// The blob.
        digest: Digest,
    },
    /// A digest in the layout is not a sha256 digest hephy understands.
    #[error("invalid digest {digest:?} in the layout at {}: only sha256 digests are supported", root.display())]
    BadDigest {
        /// The layout directory.
        root: PathBuf,
        /// The digest text.
        digest: String,
    },
}

/// A backend that writes its image into an [`OciLayout`] can use `?` on the layout's errors;
/// the layout error stays the source, for callers that look at it.
impl From<LayoutError> for BuildError {
    fn from(e: LayoutError) -> Self {
        BuildError::other(e.to_string(), e)
    }
}

impl LayoutError {
    pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        LayoutError::Io {
            action,
            path: path.into(),
            source,
        }
    }
}

/// Serializes `value` as compact JSON with every object's keys sorted.
///
/// oci-spec keeps annotations and labels in `HashMap`s, whose order changes from run to run;
/// sorting makes the bytes, and so the digest, depend only on the content.
pub fn canonical_json<T: Serialize>(value: &T) -> Result<Vec<u8>, serde_json::Error> {
    fn sort(v: serde_json::Value) -> serde_json::Value {
        match v {
            serde_json::Value::Object(map) => {
                let sorted: BTreeMap<String, serde_json::Value> =
                    map.into_iter().map(|(k, v)| (k, sort(v))).collect();
                serde_json::Value::Object(sorted.into_iter().collect())
            }
            serde_json::Value::Array(a) => {
                serde_json::Value::Array(a.into_iter().map(sort).collect())
            }
            other => other,
        }
    }
    serde_json::to_vec(&sort(serde_json::to_value(value)?))
}

/// Converts a hephy digest into an oci-spec one.
pub fn to_oci_digest(d: &Digest) -> Result<oci_spec::image::Digest, LayoutError> {
    // A hephy Digest is always `sha256:<64 hex>` or `sha512:<128 hex>`, which oci-spec accepts.
    d.to_string().parse().map_err(|_| LayoutError::BadDigest {
        root: PathBuf::new(),
        digest: d.to_string(),
    })
}

/// Converts a hephy platform into an oci-spec one.
pub(crate) fn to_oci_platform(
    p: &hephy_core::Platform,
) -> Result<oci_spec::image::Platform, oci_spec::OciSpecError> {
    let mut pb = oci_spec::image::PlatformBuilder::default()
        .architecture(oci_spec::image::Arch::from(p.architecture()))
        .os(oci_spec::image::Os::from(p.os()));
    if let Some(v) = p.variant() {
        pb = pb.variant(v.to_owned());
    }
    pb.build()
}

/// Converts an oci-spec digest into a hephy one.
pub fn from_oci_digest(d: &oci_spec::image::Digest) -> Result<Digest, hephy_core::DigestError> {
    d.to_string().parse()
}

/// An OCI image layout directory.
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use hephy_oci::layout::OciLayout;
/// let dir = std::env::temp_dir().join(format!("hephy-layout-doc-{}", std::process::id()));
/// let layout = OciLayout::create(&dir)?;
/// let (digest, size) = layout.write_blob(b"hello")?;
/// assert_eq!(size, 5);
/// assert_eq!(std::fs::read(layout.blob_path(&digest))?, b"hello");
/// assert!(OciLayout::open(&dir)?.index()?.manifests().is_empty());
/// # std::fs::remove_dir_all(&dir)?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OciLayout {
    root: PathBuf,
}

impl OciLayout {
    /// Creates a layout at `dir` (and its parents), or opens the one already there.
    pub fn create(dir: impl Into<PathBuf>) -> Result<Self, LayoutError> {
        let root = dir.into();
        let blobs = root.join("blobs").join("sha256");
        fs::create_dir_all(&blobs).map_err(|e| LayoutError::io("create", &blobs, e))?;
        let marker = root.join("oci-layout");
        if !marker.exists() {
            atomic_write(&marker, br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        }
        let layout = OciLayout { root };
        if !layout.root.join("index.json").exists() {
            layout.write_index(&empty_index())?;
        }
        Ok(layout)
    }

    /// Opens an existing layout.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, LayoutError> {
        let root = dir.into();
        if !root.join("oci-layout").is_file() {
            return Err(LayoutError::NotALayout { path: root });
        }
        Ok(OciLayout { root })
    }

    /// The layout directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the blob `digest` is (or would be) stored.
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.root
            .join("blobs")
            .join(digest.algorithm())
            .join(digest.encoded())
    }

    /// Whether the blob is present.
    pub fn has_blob(&self, digest: &Digest) -> bool {
        self.blob_path(digest).is_file()
    }

    /// A writer for a new blob, hashing as it writes; [`BlobWriter::finish`] names it by digest.
    pub fn blob_writer(&self) -> Result<BlobWriter, LayoutError> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let dir = self.root.join("blobs").join("sha256");
        fs::create_dir_all(&dir).map_err(|e| LayoutError::io("create", &dir, e))?;
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let tmp = dir.join(format!(".tmp-{}-{n}", std::process::id()));
        let file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(|e| LayoutError::io("create", &tmp, e))?;
        Ok(BlobWriter {
            layout: self.clone(),
            tmp: Some(tmp),
            file: io::BufWriter::with_capacity(256 * 1024, file),
            hasher: Sha256::new(),
            size: 0,
        })
    }

    /// Writes a whole blob from memory.
    pub fn write_blob(&self, bytes: &[u8]) -> Result<(Digest, u64), LayoutError> {
        let mut w = self.blob_writer()?;
        w.write_all(bytes)
            .map_err(|e| LayoutError::io("write", self.root.join("blobs"), e))?;
        w.finish()
    }

    /// Writes `value` as canonical JSON (see [`canonical_json`]) and returns its descriptor.
    pub fn write_json<T: Serialize>(
        &self,
        media_type: MediaType,
        value: &T,
    ) -> Result<Descriptor, LayoutError> {
        let bytes = canonical_json(value).map_err(|e| LayoutError::Json {
            path: self.root.clone(),
            message: e.to_string(),
        })?;
        let (digest, size) = self.write_blob(&bytes)?;
        Ok(Descriptor::new(media_type, size, to_oci_digest(&digest)?))
    }

    /// Reads blob `digest` as JSON.
    pub fn read_json<T: DeserializeOwned>(&self, digest: &Digest) -> Result<T, LayoutError> {
        let path = self.blob_path(digest);
        let file = File::open(&path).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                LayoutError::MissingBlob {
                    root: self.root.clone(),
                    digest: digest.clone(),
                }
            } else {
                LayoutError::io("read", &path, e)
            }
        })?;
        serde_json::from_reader(BufReader::new(file)).map_err(|e| LayoutError::Json {
            path,
            message: e.to_string(),
        })
    }

    /// The layout's `index.json`.
    pub fn index(&self) -> Result<ImageIndex, LayoutError> {
        let path = self.root.join("index.json");
        let bytes = fs::read(&path).map_err(|e| LayoutError::io("read", &path, e))?;
        serde_json::from_slice(&bytes).map_err(|e| LayoutError::Json {
            path,
            message: e.to_string(),
        })
    }

    /// Replaces `index.json` (atomically).
    pub fn write_index(&self, index: &ImageIndex) -> Result<(), LayoutError> {
        let path = self.root.join("index.json");
        let bytes = canonical_json(index).map_err(|e| LayoutError::Json {
            path: path.clone(),
            message: e.to_string(),
        })?;
        atomic_write(&path, &bytes)
    }

    /// Adds `descriptor` (of a manifest or an index) to `index.json`, named `ref_name` when given;
    /// an entry with the same name is replaced, so a name always points at one image.
    pub fn add_manifest(
        &self,
        descriptor: &Descriptor,
        ref_name: Option<&str>,
    ) -> Result<(), LayoutError> {
        let mut index = self.index()?;
        let mut d = descriptor.clone();
        let mut manifests: Vec<Descriptor> = index.manifests().clone();
        if let Some(name) = ref_name {
            let mut ann = d.annotations().clone().unwrap_or_default();
            ann.insert(REF_NAME.to_owned(), name.to_owned());
            d.set_annotations(Some(ann));
            manifests.retain(|m| ref_name_of(m) != Some(name));
        } else {
            manifests.retain(|m| m.digest() != d.digest() || ref_name_of(m).is_some());
        }
        manifests.push(d);
        manifests.sort_by(|a, b| {
            (ref_name_of(a), a.digest().to_string()).cmp(&(ref_name_of(b), b.digest().to_string()))
        });
        index.set_manifests(manifests);
        self.write_index(&index)
    }

    /// The descriptor named `ref_name` in `index.json`.
    pub fn resolve(&self, ref_name: &str) -> Result<Option<Descriptor>, LayoutError> {
        Ok(self
            .index()?
            .manifests()
            .iter()
            .find(|m| ref_name_of(m) == Some(ref_name))
            .cloned())
    }

    /// Copies blob `digest` from `other` unless it is already here (hard link when possible).
    /// Returns whether it was copied.
    pub fn copy_blob_from(&self, other: &OciLayout, digest: &Digest) -> Result<bool, LayoutError> {
        let dest = self.blob_path(digest);
        if dest.is_file() {
            return Ok(false);
        }
        let src = other.blob_path(digest);
        if !src.is_file() {
            return Err(LayoutError::MissingBlob {
                root: other.root.clone(),
                digest: digest.clone(),
            });
        }
        if let Some(parent) = dest.parent() {
            fs::create_dir_all(parent).map_err(|e| LayoutError::io("create", parent, e))?;
        }
        // Blobs are immutable, so sharing the inode is safe and saves the copy.
        if fs::hard_link(&src, &dest).is_ok() {
            return Ok(true);
        }
        let mut w = self.blob_writer()?;
        let mut r = File::open(&src).map_err(|e| LayoutError::io("read", &src, e))?;
        io::copy(&mut r, &mut w).map_err(|e| LayoutError::io("copy", &src, e))?;
        let (got, _) = w.finish()?;
        if &got != digest {
            return Err(LayoutError::BadDigest {
                root: other.root.clone(),
                digest: format!("{digest} (content hashes to {got})"),
            });
        }
        Ok(true)
    }

    /// Every blob a manifest or index refers to, recursively, including itself.
    pub fn blobs_of(&self, digest: &Digest) -> Result<Vec<Digest>, LayoutError> {
        let mut out = vec![digest.clone()];
        let value: serde_json::Value = self.read_json(digest)?;
        let bad = |s: String| LayoutError::BadDigest {
            root: self.root.clone(),
            digest: s,
        };
        if let Some(ms) = value.get("manifests").and_then(|m| m.as_array()) {
            for m in ms {
                let d = m.get("digest").and_then(|d| d.as_str()).unwrap_or_default();
                let d: Digest = d.parse().map_err(|_| bad(d.to_owned()))?;
                out.extend(self.blobs_of(&d)?);
            }
        }
        let config = value.get("config").into_iter();
        let layers = value
            .get("layers")
            .and_then(|l| l.as_array())
            .into_iter()
            .flatten();
        for d in config.chain(layers) {
            let text = d.get("digest").and_then(|d| d.as_str()).unwrap_or_default();
            out.push(text.parse().map_err(|_| bad(text.to_owned()))?);
        }
        Ok(out)
    }
}

/// The `org.opencontainers.image.ref.name` of a descriptor.
pub fn ref_name_of(d: &Descriptor) -> Option<&str> {
    d.annotations()
        .as_ref()
        .and_then(|a| a.get(REF_NAME))
        .map(String::as_str)
}

fn empty_index() -> ImageIndex {
    let mut index = ImageIndex::default();
    index.set_media_type(Some(MediaType::ImageIndex));
    index.set_manifests(vec![]);
    index.set_annotations(None::<HashMap<String, String>>);
    index
}

fn atomic_write(path: &Path, bytes: &[u8]) -> Result<(), LayoutError> {
    hephy_core::fs::write_atomic(path, bytes, hephy_core::fs::FileMode::Public)
        .map_err(|e| LayoutError::io("write", path, e))
}

/// A blob being written: hashes and counts every byte, then [`finish`](BlobWriter::finish)
/// renames the temporary file to the blob's digest. Dropped unfinished, it removes the file.
#[derive(Debug)]
pub struct BlobWriter {
    layout: OciLayout,
    tmp: Option<PathBuf>,
    file: io::BufWriter<File>,
    hasher: Sha256,
    size: u64,
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl BlobWriter {
    /// Bytes written so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Flushes, names the blob by its digest and returns the digest and size.
    pub fn finish(mut self) -> Result<(Digest, u64), LayoutError> {
        let tmp = self.tmp.take().unwrap_or_default();
        self.file
            .flush()
            .map_err(|e| LayoutError::io("write", &tmp, e))?;
        let hex = hex::encode(self.hasher.clone().finalize());
        let digest = Digest::sha256(hex.clone()).map_err(|_| LayoutError::BadDigest {
            root: self.layout.root.clone(),
            digest: hex,
        })?;
        let dest = self.layout.blob_path(&digest);
        fs::rename(&tmp, &dest).map_err(|e| LayoutError::io("rename", &dest, e))?;
        Ok((digest, self.size))
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        if let Some(tmp) = self.tmp.take() {
            let _ = fs::remove_file(tmp);
        }
    }
}

/// A writer that hashes what passes through it (for a layer's uncompressed `diff_id`).
#[derive(Debug)]
pub struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    size: u64,
}

impl<W: Write> HashingWriter<W> {
    /// Wraps `inner`.
    pub fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: Sha256::new(),
            size: 0,
        }
    }

    /// The inner writer, the sha256 hex of what passed and its length.
    pub fn finish(self) -> (W, String, u64) {
        (self.inner, hex::encode(self.hasher.finalize()), self.size)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}
