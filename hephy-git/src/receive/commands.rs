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
/// push.
pub(crate) async fn read_request<R: AsyncBufRead + Unpin>(
    input: &mut R,
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
        loop {
            match pktline::read(input).await? {
                None => {
                    return Err(ReceiveError::protocol(
                        "the client closed the connection before the end of its push options",
                    ))
                }
                Some(Line::Flush) => break,
                Some(Line::Data(d)) => {
                    let option = String::from_utf8_lossy(&d);
                    req.push_options
                        .push(option.strip_suffix('\n').unwrap_or(&option).to_owned());
                }
            }
        }
    }
    Ok(req)
}
