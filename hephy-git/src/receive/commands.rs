//! The ref-update commands and capabilities a client sends.

use gix::ObjectId;

use super::pktline::{self, Line};
use super::ReceiveError;
use tokio::io::AsyncBufRead;

/// The capabilities the server advertises.
pub(crate) fn advertised_capabilities() -> String {
    format!(
        "report-status delete-refs side-band-64k quiet atomic ofs-delta push-options object-format=sha1 agent=hephy/{}",
        env!("CARGO_PKG_VERSION")
    )
}

/// The capabilities a client asked for.
#[derive(Debug, Default, Clone)]
pub(crate) struct Capabilities {
    pub(crate) report_status: bool,
    pub(crate) side_band_64k: bool,
    pub(crate) side_band: bool,
    pub(crate) quiet: bool,
    pub(crate) atomic: bool,
    pub(crate) push_options: bool,
    pub(crate) agent: Option<String>,
}

impl Capabilities {
    fn parse(text: &str) -> Result<Self, ReceiveError> {
        let mut caps = Capabilities::default();
        for cap in text.split(' ').filter(|c| !c.is_empty()) {
            match cap {
                "report-status" => caps.report_status = true,
                "side-band-64k" => caps.side_band_64k = true,
                "side-band" => caps.side_band = true,
                "quiet" => caps.quiet = true,
                "atomic" => caps.atomic = true,
                "push-options" => caps.push_options = true,
                // Accepted as they come: deletes and ofs-deltas need nothing from the server.
                "delete-refs" | "ofs-delta" => {}
                _ => {
                    if let Some(agent) = cap.strip_prefix("agent=") {
                        caps.agent = Some(agent.to_owned());
                    } else if let Some(format) = cap.strip_prefix("object-format=") {
                        if format != "sha1" {
                            return Err(ReceiveError::protocol(format!(
                                "this server keeps sha1 repositories and cannot take {format} objects: push from a sha1 repository"
                            )));
                        }
                    } else {
                        return Err(ReceiveError::protocol(format!(
                            "the client asked for capability {cap:?}, which this server did not offer"
                        )));
                    }
                }
            }
        }
        Ok(caps)
    }

    /// The payload size of side-band packets, if side-band is on.
    pub(crate) fn band_size(&self) -> Option<usize> {
        if self.side_band_64k {
            Some(65515)
        } else if self.side_band {
            Some(995)
        } else {
            None
        }
    }
}

/// One ref update.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Command {
    pub(crate) old: ObjectId,
    pub(crate) new: ObjectId,
    pub(crate) name: String,
}

impl Command {
    pub(crate) fn is_delete(&self) -> bool {
        self.new.is_null()
    }
}

/// Everything the client sends before the pack.
#[derive(Debug, Default)]
pub(crate) struct Request {
    pub(crate) commands: Vec<Command>,
    pub(crate) caps: Capabilities,
    pub(crate) push_options: Vec<String>,
    /// Set when the request went over a limit: reading stopped there, `commands` holds those
    /// read until then and the push is refused.
    pub(crate) over_limit: Option<String>,
}

/// The caps on what a client sends before the pack; see the builder methods of
/// [`GitServerBuilder`](crate::GitServerBuilder) that set them.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) ref_updates: usize,
    pub(crate) ref_update_bytes: usize,
    pub(crate) push_options: usize,
    pub(crate) push_options_bytes: usize,
    /// How much of a refused request may still be read to count its ref updates.
    pub(crate) count_bytes: u64,
}

/// `n` with thousands separators, as limits are written in messages: `10,001`.
pub(crate) fn count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, d) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(d);
    }
    out
}

fn parse_id(hex: &str) -> Result<ObjectId, ReceiveError> {
    ObjectId::from_hex(hex.as_bytes())
        .map_err(|_| ReceiveError::protocol(format!("{hex:?} is not an object id")))
}

fn parse_command(line: &str) -> Result<Command, ReceiveError> {
    let mut parts = line.splitn(3, ' ');
    let (Some(old), Some(new), Some(name)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(ReceiveError::protocol(format!(
            "malformed ref update {line:?}: expected \"OLD NEW REF\""
        )));
    };
    Ok(Command {
        old: parse_id(old)?,
        new: parse_id(new)?,
        name: name.to_owned(),
    })
}

/// Reads the commands (and push options); an empty request means the client has nothing to
/// push. A request over one of `limits` comes back with [`Request::over_limit`] set.
pub(crate) async fn read_request<R: AsyncBufRead + Unpin>(
    input: &mut R,
    limits: &Limits,
) -> Result<Request, ReceiveError> {
    let mut req = Request::default();
    loop {
        let line = match pktline::read(input).await? {
            // A client that closes without sending anything had nothing to push.
            None if req.commands.is_empty() => return Ok(req),
            None => {
                return Err(ReceiveError::protocol(
                    "the client closed the connection before the end of its ref updates",
                ))
            }
            Some(Line::Flush) => break,
            Some(Line::Data(d)) => d,
        };
        if line.len() > limits.ref_update_bytes {
            if req.commands.is_empty() {
                // The capabilities say how to answer; without them the answer is an ERR line.
                req.caps = first_line_caps(&line);
            }
            req.over_limit = Some(format!(
                "a ref update line is {} bytes long; the limit is {}: push refs with shorter names, or ask the server's admin to raise max_ref_update_bytes",
                count(line.len() as u64),
                count(limits.ref_update_bytes as u64),
            ));
            return Ok(req);
        }
        if req.commands.len() == limits.ref_updates {
            let total = count_rest(input, req.commands.len() + 1, limits.count_bytes).await;
            req.over_limit = Some(format!(
                "the push has {total} ref updates; the limit is {}: push fewer refs at once (for example a few branches or tags per push), or ask the server's admin to raise max_ref_updates",
                count(limits.ref_updates as u64),
            ));
            return Ok(req);
        }
        let text = String::from_utf8(line)
            .map_err(|_| ReceiveError::protocol("a ref update is not valid UTF-8"))?;
        let text = text.strip_suffix('\n').unwrap_or(&text);
        if text.starts_with("shallow ") {
            return Err(ReceiveError::protocol(
                "pushing from a shallow clone is not supported: run `git fetch --unshallow` and push again",
            ));
        }
        if req.commands.is_empty() {
            let (cmd, caps) = match text.split_once('\0') {
                Some((c, caps)) => (c, caps),
                None => (text, ""),
            };
            req.caps = Capabilities::parse(caps)?;
            req.commands.push(parse_command(cmd)?);
        } else {
            req.commands.push(parse_command(text)?);
        }
    }
    if req.caps.push_options && !req.commands.is_empty() {
        // Past a limit the options are still read to the flush (within the counting budget),
        // so the message says how far over the push is.
        let (mut n, mut bytes, mut read) = (0u64, 0u64, 0u64);
        let complete = loop {
            match pktline::read(input).await? {
                None => {
                    return Err(ReceiveError::protocol(
                        "the client closed the connection before the end of its push options",
                    ))
                }
                Some(Line::Flush) => break true,
                Some(Line::Data(d)) => {
                    let option = String::from_utf8_lossy(&d);
                    let option = option.strip_suffix('\n').unwrap_or(&option);
                    n += 1;
                    bytes += option.len() as u64;
                    read += d.len() as u64 + 4;
                    if n <= limits.push_options as u64 && bytes <= limits.push_options_bytes as u64
                    {
                        req.push_options.push(option.to_owned());
                    } else if read > limits.count_bytes {
                        break false;
                    }
                }
            }
        };
        let about = if complete { "" } else { "more than " };
        if n > limits.push_options as u64 {
            req.over_limit = Some(format!(
                "the push has {about}{} push options; the limit is {}: send fewer `git push -o` options, or ask the server's admin to raise max_push_options",
                count(n),
                count(limits.push_options as u64),
            ));
        } else if bytes > limits.push_options_bytes as u64 {
            req.over_limit = Some(format!(
                "the push options take {about}{} bytes; the limit is {}: send shorter `git push -o` options, or ask the server's admin to raise max_push_options_bytes",
                count(bytes),
                count(limits.push_options_bytes as u64),
            ));
        }
    }
    Ok(req)
}

/// The capabilities of a first ref-update line, or none when they cannot be read.
fn first_line_caps(line: &[u8]) -> Capabilities {
    line.iter()
        .position(|b| *b == 0)
        .and_then(|nul| std::str::from_utf8(&line[nul + 1..]).ok())
        .and_then(|caps| Capabilities::parse(caps.trim_end_matches('\n')).ok())
        .unwrap_or_default()
}

/// The number of ref updates of a request that went over the limit, `read` of them read
/// already: the rest are read up to the flush and dropped, and counted while they take at most
/// `budget` bytes, so the message can say how many there were. Past the budget (or a broken
/// stream), "more than N".
async fn count_rest<R: AsyncBufRead + Unpin>(input: &mut R, read: usize, budget: u64) -> String {
    let mut n = read as u64;
    let mut bytes = 0u64;
    loop {
        match pktline::read(input).await {
            Ok(Some(Line::Data(d))) => {
                n += 1;
                bytes += d.len() as u64 + 4;
                if bytes > budget {
                    return format!("more than {}", count(n));
                }
            }
            Ok(Some(Line::Flush)) => return count(n),
            Ok(None) | Err(_) => return format!("at least {}", count(n)),
        }
    }
}
