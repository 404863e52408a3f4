//! pkt-lines and side-band multiplexing on async streams.
//!
//! Decoding uses gix-packetline; encoding is a four-digit hex length in front of the data.

use std::io;

use tokio::io::{AsyncBufRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The largest payload of one pkt-line.
pub(crate) const MAX_DATA: usize = 65516;

/// Appends `data` as one pkt-line.
pub(crate) fn encode(data: &[u8], out: &mut Vec<u8>) {
    debug_assert!(data.len() <= MAX_DATA);
    out.extend_from_slice(format!("{:04x}", data.len() + 4).as_bytes());
    out.extend_from_slice(data);
}

/// Appends a flush-pkt.
pub(crate) fn flush(out: &mut Vec<u8>) {
    out.extend_from_slice(b"0000");
}

/// Appends `data` on side-band `channel`, split into packets of at most `max` payload bytes.
pub(crate) fn encode_band(channel: u8, data: &[u8], max: usize, out: &mut Vec<u8>) {
    for chunk in data.chunks(max.max(1)) {
        out.extend_from_slice(format!("{:04x}", chunk.len() + 5).as_bytes());
        out.push(channel);
        out.extend_from_slice(chunk);
    }
}

/// One pkt-line read from the client.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Line {
    Data(Vec<u8>),
    Flush,
}

/// Reads one pkt-line; `Ok(None)` when the input ends cleanly before a line starts.
pub(crate) async fn read<R: AsyncBufRead + Unpin>(input: &mut R) -> io::Result<Option<Line>> {
    let mut prefix = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        let n = input.read(&mut prefix[got..]).await?;
        if n == 0 {
            if got == 0 {
                return Ok(None);
            }
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the client closed the connection in the middle of a pkt-line",
            ));
        }
        got += n;
    }
    match gix_packetline::decode::hex_prefix(&prefix).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("invalid pkt-line from the client: {e}"),
        )
    })? {
        gix_packetline::decode::PacketLineOrWantedSize::Line(
            gix_packetline::PacketLineRef::Flush,
        ) => Ok(Some(Line::Flush)),
        gix_packetline::decode::PacketLineOrWantedSize::Line(other) => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("unexpected {other:?} packet in a protocol v0/v1 push"),
        )),
        gix_packetline::decode::PacketLineOrWantedSize::Wanted(n) => {
            let mut data = vec![0u8; n as usize];
            input.read_exact(&mut data).await?;
            Ok(Some(Line::Data(data)))
        }
    }
}

/// Writes to the client, with side-band multiplexing when the client asked for it.
pub(crate) struct Output<W> {
    inner: W,
    /// The payload size of side-band packets, `None` without side-band.
    band: Option<usize>,
    quiet: bool,
}

impl<W: AsyncWrite + Unpin> Output<W> {
    pub(crate) fn new(inner: W) -> Self {
        Output {
            inner,
            band: None,
            quiet: false,
        }
    }

    pub(crate) fn set_band(&mut self, band: Option<usize>, quiet: bool) {
        self.band = band;
        self.quiet = quiet;
    }

    /// Writes bytes as they are and flushes, so they reach the client now.
    pub(crate) async fn raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.inner.write_all(bytes).await?;
        self.inner.flush().await
    }

    /// Sends an empty side-band data packet, which the client ignores, so that the connection
    /// does not look idle.
    pub(crate) async fn keepalive(&mut self) -> io::Result<()> {
        if self.band.is_some() {
            self.raw(b"0005\x01").await?;
        }
        Ok(())
    }

    /// Sends progress text (channel 2) when side-band is on and the client is not quiet.
    ///
    /// git asks for `quiet` whenever its stderr is not a terminal; like the output of git's own
    /// hooks, build logs are not progress and go through [`Output::message`].
    pub(crate) async fn progress(&mut self, text: &str) -> io::Result<()> {
        if self.quiet {
            return Ok(());
        }
        self.message(text).await
    }

    /// Sends text on channel 2 even to a quiet client (errors and the push's outcome).
    pub(crate) async fn message(&mut self, text: &str) -> io::Result<()> {
        let Some(max) = self.band else {
            return Ok(());
        };
        let mut buf = Vec::with_capacity(text.len() + 16);
        encode_band(2, text.as_bytes(), max, &mut buf);
        self.raw(&buf).await
    }

    /// Sends a pkt-line stream (such as the report) as data: on channel 1 followed by a flush
    /// with side-band, as it is without.
    pub(crate) async fn data(&mut self, pkts: &[u8]) -> io::Result<()> {
        match self.band {
            Some(max) => {
                let mut buf = Vec::with_capacity(pkts.len() + 16);
                encode_band(1, pkts, max, &mut buf);
                flush(&mut buf);
                self.raw(&buf).await
            }
            None => self.raw(pkts).await,
        }
    }
}
