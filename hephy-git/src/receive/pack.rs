//! Receiving a pack: streamed from the client straight into gix-pack's indexer, which writes
//! the pack and its index into the repository and completes thin packs from its objects.

use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use gix::ObjectId;
use tokio::io::{AsyncBufRead, AsyncReadExt};
use tokio::sync::mpsc;

use crate::repo::open_isolated;

/// Why a pack could not be received.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PackError {
    #[error("the push is larger than this server's limit of {limit} bytes: push less at once (split the history into several pushes) or raise max_push_bytes")]
    TooLarge { limit: u64 },
    #[error("reading the pack from the client failed: {0}")]
    Read(#[source] io::Error),
    #[error("the pack is not valid: {0}")]
    Invalid(String),
    #[error("cannot write the pack into {}: {message}", path.display())]
    Write { path: PathBuf, message: String },
}

/// A pack written into the repository.
///
/// Dropped without [`ReceivedPack::accept`], it removes itself: a rejected or cancelled push
/// leaves no objects behind.
pub(crate) struct ReceivedPack {
    files: Vec<PathBuf>,
    keep: Option<PathBuf>,
    index: gix_pack::index::File,
    accepted: bool,
}

impl ReceivedPack {
    /// Whether the pack holds `id`.
    pub(crate) fn contains(&self, id: &ObjectId) -> bool {
        self.index.lookup(id).is_some()
    }

    /// The number of objects in the pack.
    pub(crate) fn len(&self) -> u32 {
        self.index.num_objects()
    }

    /// Keeps the pack: removes the `.keep` file that protected it while refs did not point to it.
    pub(crate) fn accept(mut self) {
        self.accepted = true;
        if let Some(keep) = &self.keep {
            let _ = std::fs::remove_file(keep);
        }
    }
}

impl Drop for ReceivedPack {
    fn drop(&mut self) {
        if !self.accepted {
            // Nothing points to its objects.
            for f in self.files.iter().chain(self.keep.iter()) {
                let _ = std::fs::remove_file(f);
            }
        }
    }
}

const CHUNK: usize = 256 * 1024;

/// Reads the pack that follows the commands and indexes it into `repo_dir`.
///
/// Returns `None` for an empty pack (a push that only moves refs to objects the server has).
pub(crate) async fn receive<R: AsyncBufRead + Unpin>(
    input: &mut R,
    repo_dir: &Path,
    limit: u64,
) -> Result<Option<ReceivedPack>, PackError> {
    let mut header = [0u8; 12];
    input
        .read_exact(&mut header)
        .await
        .map_err(PackError::Read)?;
    if &header[..4] != b"PACK" {
        return Err(PackError::Invalid(
            "it does not start with PACK: the client sent something else".into(),
        ));
    }
    let count = u32::from_be_bytes([header[8], header[9], header[10], header[11]]);
    if count == 0 {
        let mut trailer = [0u8; 20];
        input
            .read_exact(&mut trailer)
            .await
            .map_err(PackError::Read)?;
        return Ok(None);
    }

    let (tx, rx) = mpsc::channel::<Bytes>(16);
    let interrupt = Arc::new(AtomicBool::new(false));
    let repo_dir = repo_dir.to_owned();
    let pack_dir = repo_dir.join("objects").join("pack");
    let indexer = {
        let interrupt = interrupt.clone();
        let pack_dir = pack_dir.clone();
        tokio::task::spawn_blocking(move || index(rx, &repo_dir, &pack_dir, &interrupt))
    };
    let _stop = StopOnDrop(interrupt.clone());

    // Feed the indexer until it has the whole pack; it stops reading at the pack's trailer, so
    // it decides when the pack ends, not the end of the input.
    let pump = async {
        if tx.send(Bytes::copy_from_slice(&header)).await.is_err() {
            return Ok(());
        }
        let mut total = header.len() as u64;
        loop {
            let mut buf = vec![0u8; CHUNK];
            let n = input.read(&mut buf).await.map_err(PackError::Read)?;
            if n == 0 {
                return Ok(());
            }
            total += n as u64;
            if total > limit {
                return Err(PackError::TooLarge { limit });
            }
            buf.truncate(n);
            if tx.send(Bytes::from(buf)).await.is_err() {
                return Ok(());
            }
        }
    };
    tokio::pin!(indexer);
    let outcome = tokio::select! {
        r = &mut indexer => r,
        r = pump => {
            if let Err(e) = r {
                interrupt.store(true, Ordering::SeqCst);
                drop(tx);
                let _ = indexer.await;
                return Err(e);
            }
            drop(tx);
            indexer.await
        }
    };
    let outcome =
        outcome.map_err(|e| PackError::Invalid(format!("the indexer stopped: {e}")))??;
    Ok(Some(outcome))
}

struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// Reads the channel as a byte stream.
struct ChannelReader {
    rx: mpsc::Receiver<Bytes>,
    current: Bytes,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(b) => self.current = b,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        self.current = self.current.slice(n..);
        Ok(n)
    }
}

fn index(
    rx: mpsc::Receiver<Bytes>,
    repo_dir: &Path,
    pack_dir: &Path,
    interrupt: &AtomicBool,
) -> Result<ReceivedPack, PackError> {
    let write_err = |message: String| PackError::Write {
        path: pack_dir.to_owned(),
        message,
    };
    std::fs::create_dir_all(pack_dir).map_err(|e| write_err(e.to_string()))?;
    let repo = open_isolated(repo_dir).map_err(|e| write_err(e.to_string()))?;
    let mut reader = io::BufReader::with_capacity(
        CHUNK,
        ChannelReader {
            rx,
            current: Bytes::new(),
        },
    );
    // A client can only leave out delta bases reachable from the refs it was shown; with no refs
    // the pack is complete and takes gix's faster pass-through path.
    let has_refs = repo
        .references()
        .ok()
        .and_then(|r| r.all().ok().map(|mut all| all.next().is_some()))
        .unwrap_or(true);
    let thin_pack_lookup = has_refs.then(|| repo.objects.clone());
    let mut progress = gix::progress::Discard;
    let outcome = gix_pack::Bundle::write_to_directory(
        &mut reader,
        Some(pack_dir),
        &mut progress,
        interrupt,
        // Thin packs leave out delta bases the client knows the server has; they are looked
        // up here and appended, so the pack on disk stands alone.
        thin_pack_lookup,
        repo.object_hash(),
        gix_pack::bundle::write::Options::default(),
    )
    .map_err(|e| PackError::Invalid(format!("{e:#}")))?;
    let (Some(index_path), Some(data_path)) = (outcome.index_path, outcome.data_path) else {
        return Err(write_err("the indexer wrote no files".into()));
    };
    let index = gix_pack::index::File::at(&index_path, repo.object_hash())
        .map_err(|e| write_err(format!("cannot read the new index: {e}")))?;
    Ok(ReceivedPack {
        // Without a keep file the same pack was already there: it is not ours to remove.
        files: if outcome.keep_path.is_some() {
            vec![data_path, index_path]
        } else {
            vec![]
        },
        keep: outcome.keep_path,
        index,
        accepted: false,
    })
}
