//! App logs: one file per release, read back and followed.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncSeekExt, BufReader};
use tokio::sync::mpsc;

/// The last `n` lines of the file at `path` (fewer if it is shorter; none if it cannot be read).
pub fn tail(path: &Path, n: usize) -> Vec<String> {
    let Ok(mut f) = std::fs::File::open(path) else {
        return vec![];
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let start = len.saturating_sub(64 * 1024);
    if f.seek(SeekFrom::Start(start)).is_err() {
        return vec![];
    }
    let mut buf = vec![];
    if f.read_to_end(&mut buf).is_err() {
        return vec![];
    }
    let text = String::from_utf8_lossy(&buf);
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    if start > 0 && !lines.is_empty() {
        lines.remove(0); // probably cut in the middle
    }
    let skip = lines.len().saturating_sub(n);
    lines.split_off(skip)
}

/// A stream of an app's log lines, from [`LocalDeployer::logs`](crate::local::LocalDeployer::logs).
///
/// Read it with [`LogStream::next_line`] or as a [`futures_util::Stream`]. Without `follow` it
/// ends after the last line written so far; with `follow` it waits for more, moving on to the
/// log of each newer release as soon as that release starts, until it is dropped. Lines an old
/// release writes after that (such as its goodbye on SIGTERM) are not followed, but a later
/// read without `follow` has them.
#[derive(Debug)]
pub struct LogStream {
    rx: mpsc::Receiver<String>,
}

impl LogStream {
    /// The next line, `None` at the end.
    pub async fn next_line(&mut self) -> Option<String> {
        self.rx.recv().await
    }
}

impl futures_util::Stream for LogStream {
    type Item = String;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<String>> {
        self.rx.poll_recv(cx)
    }
}

/// Which log files make up an app's log, oldest first, and which is being written now.
pub(crate) trait LogSource: Send + Sync + 'static {
    /// The files of all releases so far, oldest first.
    fn files(&self) -> Vec<PathBuf>;
}

/// Streams the lines of `source`'s files in order; with `follow`, keeps reading the newest.
pub(crate) fn stream(source: impl LogSource, follow: bool) -> LogStream {
    let (tx, rx) = mpsc::channel(256);
    tokio::spawn(async move {
        let mut done: Vec<PathBuf> = vec![];
        loop {
            let files = source.files();
            let Some(idx) = files.iter().position(|f| !done.contains(f)) else {
                if !follow {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
                if tx.is_closed() {
                    return;
                }
                continue;
            };
            let file = files[idx].clone();
            let is_last = idx + 1 == files.len();
            if read_file(&source, &file, follow && is_last, &tx)
                .await
                .is_err()
            {
                return; // the reader went away
            }
            done.push(file);
        }
    });
    LogStream { rx }
}

/// Sends every line of `path`; when `follow`, keeps waiting for more until a newer file appears.
async fn read_file(
    source: &impl LogSource,
    path: &Path,
    follow: bool,
    tx: &mpsc::Sender<String>,
) -> Result<(), ()> {
    let Ok(file) = tokio::fs::File::open(path).await else {
        return Ok(());
    };
    let mut reader = BufReader::new(file);
    let mut line = String::new();
    let mut pos: u64 = 0;
    loop {
        line.clear();
        let n = reader.read_line(&mut line).await.unwrap_or(0);
        if n > 0 && line.ends_with('\n') {
            pos += n as u64;
            tx.send(line.trim_end_matches(['\n', '\r']).to_owned())
                .await
                .map_err(drop)?;
            continue;
        }
        // At the end (maybe in the middle of a line being written): rewind to the line start.
        if n > 0 {
            reader.seek(SeekFrom::Start(pos)).await.map_err(drop)?;
        }
        let newer = source.files().last().is_some_and(|f| f != path);
        if !follow || newer {
            if n > 0 {
                // The file will not grow any more; send its unterminated last line.
                tx.send(line.trim_end_matches(['\n', '\r']).to_owned())
                    .await
                    .map_err(drop)?;
            }
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        if tx.is_closed() {
            return Err(());
        }
    }
}
