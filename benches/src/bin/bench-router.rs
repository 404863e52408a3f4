//! The local deployer's router alone, for `benches/router-vs-nginx.sh`: listens on LISTEN and
//! sends every connection to UPSTREAM, as it does for an app's release.
//!
//! Usage: `bench-router LISTEN UPSTREAM`

use std::net::SocketAddr;

use hephy_deploy::router::{Router, Upstream};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: bench-router LISTEN UPSTREAM";
    let listen: SocketAddr = args.next().ok_or(usage)?.parse()?;
    let upstream: SocketAddr = args.next().ok_or(usage)?.parse()?;
    let router = Router::bind_named(listen, "bench").await?;
    router.switch(Some(Upstream::new(upstream)));
    println!("listening on {}", router.local_addr());
    std::future::pending::<()>().await;
    Ok(())
}
