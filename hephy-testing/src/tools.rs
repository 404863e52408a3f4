//! Tools for tests that unpack and run images: umoci, free ports, a plain HTTP GET.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// What the helpers return.
pub type Result<T = (), E = Box<dyn std::error::Error + Send + Sync>> = std::result::Result<T, E>;

/// `umoci unpack --image LAYOUT:TAG BUNDLE` (as root, or rootless otherwise).
pub fn umoci_unpack(layout: &Path, tag: &str, bundle: &Path) -> Result {
    let mut cmd = Command::new("umoci");
    cmd.arg("unpack");
    if !is_root() {
        cmd.arg("--rootless");
    }
    let out = cmd
        .arg("--image")
        .arg(format!("{}:{tag}", layout.display()))
        .arg(bundle)
        .output()?;
    if !out.status.success() {
        return Err(format!(
            "umoci unpack failed: {}",
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    Ok(())
}

/// Whether the tests run as root.
pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// A free loopback port.
pub fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// GETs `/` from 127.0.0.1:`port`, retrying until the server answers or 30 s pass.
pub async fn http_get(port: u16) -> Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        match tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
            Ok(mut s) => {
                s.write_all(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n")
                    .await?;
                let mut buf = String::new();
                s.read_to_string(&mut buf).await?;
                return Ok(buf);
            }
            Err(e) if tokio::time::Instant::now() > deadline => {
                return Err(format!("nothing answered on port {port}: {e}").into())
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}
