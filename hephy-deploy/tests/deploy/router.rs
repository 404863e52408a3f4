//! The router: the 503 page instead of empty replies, and the router process's control socket.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use hephy_deploy::router::control::{self, RouterClient};
use hephy_deploy::router::Router;

use crate::support::Result;

/// A GET of `/` at `addr`, as a blocking client reads it.
fn get(addr: SocketAddr) -> Result<String> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

/// An upstream that answers every connection with `body`.
fn answering(body: &'static str) -> Result<SocketAddr> {
    let l = TcpListener::bind("127.0.0.1:0")?;
    let addr = l.local_addr()?;
    std::thread::spawn(move || {
        for mut s in l.incoming().flatten() {
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf);
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    Ok(addr)
}

/// What a port forwarder does when the app behind it died: accept, then close at once.
fn dead_behind_forwarder() -> Result<SocketAddr> {
    let l = TcpListener::bind("127.0.0.1:0")?;
    let addr = l.local_addr()?;
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            drop(s);
        }
    });
    Ok(addr)
}

#[tokio::test]
async fn an_app_without_a_process_gets_a_503_page_naming_it() -> Result {
    let router = Router::bind_named("127.0.0.1:0".parse()?, "hello").await?;
    let addr = router.local_addr();
    let none = tokio::task::spawn_blocking(move || get(addr)).await??;
    assert!(none.starts_with("HTTP/1.1 503 "), "{none}");
    assert!(none.contains("hello is not available"), "{none}");

    router.switch(Some(hephy_deploy::router::Upstream::new(
        dead_behind_forwarder()?,
    )));
    let dead = tokio::task::spawn_blocking(move || get(addr)).await??;
    assert!(
        dead.starts_with("HTTP/1.1 503 "),
        "an empty reply: {dead:?}"
    );

    router.switch(Some(hephy_deploy::router::Upstream::new(answering("up")?)));
    let up = tokio::task::spawn_blocking(move || get(addr)).await??;
    assert!(
        up.starts_with("HTTP/1.1 200 ") && up.ends_with("up"),
        "{up}"
    );
    Ok(())
}

/// The router process's protocol, served in this test's runtime: bind, switch, drain, and a
/// restart that listens and routes where the saved table says.
#[tokio::test]
async fn the_router_process_keeps_its_table_across_restarts() -> Result {
    let dir = tempfile::tempdir()?;
    let state = dir.path().join("router");
    let serving = tokio::spawn({
        let state = state.clone();
        async move { control::serve(&state).await }
    });
    let client = RouterClient::new(state.join(control::SOCKET));
    let mut tries = 0;
    while client.ping().await.is_err() {
        tries += 1;
        assert!(tries < 100, "the router never answered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let listen = TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    client.bind("hello", listen).await?;
    let (v1, v2) = (answering("v1")?, answering("v2")?);
    assert_eq!(client.switch("hello", Some(v1)).await?, None);
    assert!(tokio::task::spawn_blocking(move || get(listen))
        .await??
        .ends_with("v1"));
    // Switching to where traffic goes already changes nothing (an adopting server does it).
    assert_eq!(client.switch("hello", Some(v1)).await?, None);
    assert_eq!(client.switch("hello", Some(v2)).await?, Some(v1));
    assert_eq!(
        client.drain("hello", v1, Duration::from_secs(1)).await?,
        (true, 0)
    );
    assert!(tokio::task::spawn_blocking(move || get(listen))
        .await??
        .ends_with("v2"));
    let mode = std::fs::metadata(state.join(control::SOCKET))?.permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
        0o600
    );

    // A second router for the same directory refuses to start.
    let second = control::serve(&state)
        .await
        .err()
        .ok_or("a second router started")?;
    assert!(second.to_string().contains("already runs"), "{second}");

    // A new router process (here: a new task after the first ends) serves the saved table.
    serving.abort();
    let _ = serving.await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let again = tokio::spawn({
        let state = state.clone();
        async move { control::serve(&state).await }
    });
    let mut tries = 0;
    while client.ping().await.is_err() {
        tries += 1;
        assert!(tries < 100, "the restarted router never answered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(tokio::task::spawn_blocking(move || get(listen))
        .await??
        .ends_with("v2"));
    client.unbind("hello").await?;
    assert!(
        TcpStream::connect(listen).is_err(),
        "unbound, it no longer listens"
    );
    again.abort();
    Ok(())
}
