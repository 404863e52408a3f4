//! Smart HTTP: auth, paths, fetch refused, gzip and chunked request bodies.

use std::io::Write;

use base64::Engine as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::*;

/// Sends one raw HTTP/1.1 request and returns the status code and body.
async fn raw(server: &TestServer, request: Vec<u8>) -> Result<(u16, Vec<u8>)> {
    let mut stream = tokio::net::TcpStream::connect(server.addr).await?;
    stream.write_all(&request).await?;
    let mut response = vec![];
    stream.read_to_end(&mut response).await?;
    let text = String::from_utf8_lossy(&response);
    let status: u16 = text.split(' ').nth(1).ok_or("no status line")?.parse()?;
    let body_at = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no end of headers")?
        + 4;
    Ok((status, response[body_at..].to_vec()))
}

fn auth(server: &TestServer) -> String {
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("alice:{}", server.token));
    format!("Authorization: Basic {basic}\r\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_or_missing_credentials_are_refused() -> Result {
    let (server, app, _work, repo) = server_with_app("secret").await?;
    commit_file(&repo, "index.html", b"x\n", "x").await?;

    let wrong = format!("http://alice:{}@{}/secret.git", "0".repeat(64), server.addr);
    let push = git(&repo, &["push", &wrong, "main"]).await?;
    assert!(!push.ok, "a wrong token was accepted");
    assert!(
        push.stderr.contains("Authentication failed"),
        "{}",
        push.stderr
    );

    let anonymous = format!("http://{}/secret.git", server.addr);
    let push = git(&repo, &["push", &anonymous, "main"]).await?;
    assert!(!push.ok, "a push without credentials was accepted");

    // The 401 asks for basic credentials, so git prompts or asks its credential helper.
    let (status, body) = raw(
        &server,
        b"GET /secret.git/info/refs?service=git-receive-pack HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_vec(),
    )
    .await?;
    assert_eq!(status, 401);
    // This server shows hephy's CLI hints (as hephy-server does) after the library's words.
    assert!(
        String::from_utf8_lossy(&body).ends_with(
            "authentication required: use your user name and an API token as the password (create one with `hephy tokens create`)\n"
        ),
        "{}",
        String::from_utf8_lossy(&body)
    );

    // A real user without a grant on the app is forbidden.
    server.accounts.add_user("bob", false)?;
    let bob = server.accounts.create_token("bob")?;
    let url = format!("http://bob:{bob}@{}/secret.git", server.addr);
    let push = git(&repo, &["push", &url, "main"]).await?;
    assert!(!push.ok, "bob pushed to an app he has no access to");
    assert!(
        push.stderr.contains("bob may not push to secret"),
        "{}",
        push.stderr
    );

    // A token of one user under another user's name is refused.
    let url = format!("http://alice:{bob}@{}/secret.git", server.addr);
    assert!(!git(&repo, &["push", &url, "main"]).await?.ok);
    assert_server_repo(&server, &app, &[]).await?;
    Ok(())
}

/// `Authorization` values through the real server: the scheme in any case is read, each
/// malformed form gets a 401 that says what is wrong (never echoing the credentials), and a
/// header over the length cap is refused before it is decoded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorization_headers_are_parsed_with_limits() -> Result {
    let server = TestServer::start().await?;
    server.app("real")?;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let get = |value: String| {
        format!(
            "GET /real.git/info/refs?service=git-receive-pack HTTP/1.1\r\nHost: x\r\nAuthorization: {value}\r\nConnection: close\r\n\r\n"
        )
        .into_bytes()
    };
    let good = b64(&format!("alice:{}", server.token));
    for value in [format!("basic {good}"), format!("BASIC   {good}  ")] {
        let (status, body) = raw(&server, get(value.clone())).await?;
        assert_eq!(status, 200, "{value}: {}", String::from_utf8_lossy(&body));
    }
    let long = format!(
        "Basic {}",
        "A".repeat(hephy_git::auth::MAX_AUTHORIZATION_BYTES)
    );
    for (value, says) in [
        ("Basic !!!".to_owned(), "not base64"),
        (format!("Basic {}", b64(&server.token)), "no ':'"),
        (format!("Digest {good}"), "\"Digest\" is not supported"),
        (
            format!("Basic {good} extra"),
            "spaces or control characters",
        ),
        ("Basic".to_owned(), "no credentials"),
        (long, "the limit is 4096"),
        // git's side wants the user name too: a bare token is not enough.
        (
            format!("Bearer {}", server.token),
            "use your user name and an API token",
        ),
    ] {
        let (status, body) = raw(&server, get(value.clone())).await?;
        let body = String::from_utf8_lossy(&body);
        let shown: String = value.chars().take(40).collect();
        assert_eq!(status, 401, "{shown}: {body}");
        assert!(
            body.contains(says),
            "{shown}: expected {says:?} in {body:?}"
        );
        assert!(
            !body.contains(&server.token),
            "{shown}: the token was echoed"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malicious_paths_unknown_apps_and_fetch_are_refused() -> Result {
    let server = TestServer::start().await?;
    server.app("real")?;
    // A repository outside the repos directory that a path escape would reach.
    let outside = server.server.data_dir().join("x.git");
    std::fs::create_dir_all(&outside)?;
    for path in [
        "/../x.git",
        "/%2e%2e/x.git",
        "/%2E%2E/repos/real.git",
        "/repos/../x.git",
        "/real.git/../../x.git",
        "/..%2fx.git",
        "//etc/passwd",
        "/Real.git",
        "/real.git.git",
    ] {
        let request = format!(
            "GET {path}/info/refs?service=git-receive-pack HTTP/1.1\r\nHost: x\r\n{}Connection: close\r\n\r\n",
            auth(&server)
        );
        let (status, body) = raw(&server, request.into_bytes()).await?;
        assert!(
            status == 404 || status == 400,
            "{path} was not refused: {status} {}",
            String::from_utf8_lossy(&body)
        );
    }
    // The four spellings of a real app work.
    for path in ["/real.git", "/real"] {
        let request = format!(
            "GET {path}/info/refs?service=git-receive-pack HTTP/1.1\r\nHost: x\r\n{}Connection: close\r\n\r\n",
            auth(&server)
        );
        let (status, body) = raw(&server, request.into_bytes()).await?;
        assert_eq!(status, 200, "{path}: {}", String::from_utf8_lossy(&body));
        assert!(body.starts_with(b"001f# service=git-receive-pack\n0000"));
    }
    for path in ["real.git", "real", "/real.git/", "/real.git"] {
        assert_eq!(hephy_git::repo_path(path)?.as_str(), "real");
    }

    // An unknown app, through the real client.
    let work = tempfile::tempdir()?;
    let repo = client_repo(work.path()).await?;
    commit_file(&repo, "a", b"a\n", "a").await?;
    let push = git(&repo, &["push", &server.url("nope"), "main"]).await?;
    assert!(!push.ok);
    // This server shows hephy's CLI hints, as hephy-server does.
    assert!(
        push.stderr
            .contains("app nope does not exist: create it first (run `hephy apps create nope`)"),
        "{}",
        push.stderr
    );

    // Fetching and cloning are refused with a reason.
    let clone = git(work.path(), &["clone", &server.url("real"), "copy"]).await?;
    assert!(!clone.ok, "clone worked");
    assert!(
        clone.stderr.contains("hephy receives pushes only"),
        "{}",
        clone.stderr
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gzip_and_chunked_request_bodies() -> Result {
    let (server, app, _work, repo) = server_with_app("raw").await?;
    let c1 = commit_file(&repo, "a", b"a\n", "a").await?;
    git_ok(
        &repo,
        &[
            "push",
            &server.url("raw"),
            "main:refs/heads/one",
            "main:refs/heads/two",
        ],
    )
    .await?;

    // Delete `one` with a gzip-compressed, chunked request, as a client may send it.
    let mut body = vec![];
    let line = format!(
        "{c1} {} refs/heads/one\0report-status delete-refs side-band-64k agent=test\n",
        "0".repeat(40)
    );
    body.extend_from_slice(format!("{:04x}", line.len() + 4).as_bytes());
    body.extend_from_slice(line.as_bytes());
    body.extend_from_slice(b"0000");
    let mut gz = flate2::write::GzEncoder::new(vec![], flate2::Compression::default());
    gz.write_all(&body)?;
    let gz = gz.finish()?;
    let mut request = format!(
        "POST /raw.git/git-receive-pack HTTP/1.1\r\nHost: x\r\n{}Content-Type: application/x-git-receive-pack-request\r\nContent-Encoding: gzip\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        auth(&server)
    )
    .into_bytes();
    for chunk in gz.chunks(7) {
        request.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        request.extend_from_slice(chunk);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"0\r\n\r\n");
    let (status, response) = raw(&server, request).await?;
    assert_eq!(status, 200);
    let text = String::from_utf8_lossy(&response);
    assert!(
        text.contains("unpack ok") && text.contains("ok refs/heads/one"),
        "unexpected report: {text:?}"
    );
    assert_server_repo(&server, &app, &[("refs/heads/two", &c1)]).await?;
    Ok(())
}

/// A receive-pack request whose body is `pkts`, as the raw bytes of an HTTP/1.1 request.
fn receive_pack_request(server: &TestServer, app: &str, pkts: &[u8]) -> Vec<u8> {
    let mut request = format!(
        "POST /{app}.git/git-receive-pack HTTP/1.1\r\nHost: x\r\n{}Content-Type: application/x-git-receive-pack-request\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        auth(server),
        pkts.len()
    )
    .into_bytes();
    request.extend_from_slice(pkts);
    request
}

fn pkt(data: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(format!("{:04x}", data.len() + 4).as_bytes());
    out.extend_from_slice(data);
}

/// pkt-lines no git client sends, written by hand: over-long ref updates and a flood of them.
/// Each is refused with the limit named, and the server goes on serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_pkt_lines_before_the_pack_are_refused() -> Result {
    let server = TestServer::start().await?;
    server.app("raw")?;
    let zero = "0".repeat(40);
    let one = "1".repeat(40);

    // One ref update of 5,000 bytes.
    let name = format!("refs/heads/{}", "n".repeat(4900));
    let mut pkts = vec![];
    pkt(
        format!("{zero} {one} {name}\0report-status side-band-64k agent=test\n").as_bytes(),
        &mut pkts,
    );
    pkts.extend_from_slice(b"0000");
    let (status, body) = raw(&server, receive_pack_request(&server, "raw", &pkts)).await?;
    let text = String::from_utf8_lossy(&body);
    assert_eq!(status, 200);
    assert!(
        text.contains("error: a ref update line is 5,0")
            && text.contains("bytes long; the limit is 4,096"),
        "the limit was not named: {text:?}"
    );

    // 100,000 ref updates, from a client that asked for neither side-band nor report-status:
    // it gets an ERR line.
    let mut pkts = vec![];
    for i in 0..100_000 {
        pkt(
            format!("{zero} {one} refs/heads/b{i}\n").as_bytes(),
            &mut pkts,
        );
    }
    pkts.extend_from_slice(b"0000");
    let (status, body) = raw(&server, receive_pack_request(&server, "raw", &pkts)).await?;
    let text = String::from_utf8_lossy(&body);
    assert_eq!(status, 200);
    assert!(
        text.contains("ERR the push has 100,000 ref updates; the limit is 1,000"),
        "the limit was not named: {text:?}"
    );

    // A pkt-line whose length is not hex, and one that says more than a pkt-line can hold.
    for bad in [&b"zzzzdata"[..], &b"ffff"[..]] {
        let (status, _) = raw(&server, receive_pack_request(&server, "raw", bad)).await?;
        assert_eq!(status, 200);
    }

    // Still serving.
    let work = tempfile::tempdir()?;
    let repo = client_repo(work.path()).await?;
    commit_file(&repo, "index.html", b"x\n", "x").await?;
    git_ok(&repo, &["push", &server.url("raw"), "main"]).await?;
    Ok(())
}
