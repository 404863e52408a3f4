//! Health probes of a starting release: an HTTP GET of the configured path, or a TCP connect.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One probe of `addr`: `Ok` with what passed, or `Err` with why not (yet).
pub(crate) async fn probe(
    addr: SocketAddr,
    path: Option<&str>,
    timeout: Duration,
) -> Result<String, String> {
    match tokio::time::timeout(timeout, probe_inner(addr, path)).await {
        Ok(r) => r,
        Err(_) => Err(format!(
            "no answer within {}",
            hephy_core::format_elapsed(timeout)
        )),
    }
}

async fn probe_inner(addr: SocketAddr, path: Option<&str>) -> Result<String, String> {
    let mut stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("cannot connect to port {}: {e}", addr.port()))?;
    let Some(path) = path else {
        return Ok(format!("port {} accepts connections", addr.port()));
    };
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nUser-Agent: hephy-health-check\r\nConnection: close\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("cannot send GET {path}: {e}"))?;
    let mut head = Vec::with_capacity(256);
    let mut buf = [0u8; 256];
    while !head.windows(2).any(|w| w == b"\r\n") && head.len() < 4096 {
        let n = stream
            .read(&mut buf)
            .await
            .map_err(|e| format!("GET {path} failed: {e}"))?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let status_line = String::from_utf8_lossy(&head);
    let status_line = status_line.lines().next().unwrap_or("");
    let code: Option<u16> = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok());
    match code {
        Some(c) if (200..400).contains(&c) => Ok(format!("GET {path} answered {c}")),
        Some(c) => Err(format!("GET {path} answered {c}")),
        None => Err(format!(
            "GET {path} got no HTTP answer (first line {status_line:?})"
        )),
    }
}

/// Whether a socket of the network namespace of process `pid` listens on TCP `port` (read from
/// `/proc/PID/net/tcp` and `tcp6`, which show the sockets of that process's namespace).
pub(crate) fn listens(pid: i64, port: u16) -> bool {
    const LISTEN: &str = "0A";
    ["tcp", "tcp6"].iter().any(|table| {
        std::fs::read_to_string(format!("/proc/{pid}/net/{table}"))
            .unwrap_or_default()
            .lines()
            .skip(1)
            .any(|line| {
                let mut fields = line.split_whitespace();
                let local = fields.nth(1).unwrap_or("");
                let state = fields.nth(1).unwrap_or("");
                let local_port = local
                    .rsplit(':')
                    .next()
                    .and_then(|p| u16::from_str_radix(p, 16).ok());
                state == LISTEN && local_port == Some(port)
            })
    })
}
