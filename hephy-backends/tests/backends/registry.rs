//! The registry publisher and puller against Debian's docker-registry, checked with skopeo,
//! umoci and qemu.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use hephy_backends::{FilesBackend, GoBackend};
use hephy_core::{
    AppConfig, Backend, BuildContext, BuildTarget, BuiltImage, Events, Platform, PublishError,
    PublishRequest, Publisher, Revision,
};
use hephy_oci::layout::OciLayout;
use hephy_oci::registry::{RegistryAuth, RegistryOptions, RegistryPublisher};
use hephy_testing::{
    skopeo_inspect, skopeo_inspect_raw, skopeo_inspect_raw_bytes, skopeo_list_tags, TestRegistry,
    TestingError, TokenAuth,
};

use crate::support::{collect, env, joined};
use hephy_testing::{free_port, http_get, umoci_unpack};

type Result<T = (), E = Box<dyn std::error::Error + Send + Sync>> = std::result::Result<T, E>;

/// Plain HTTP to the test registry, quick retries.
fn options(registry: &TestRegistry) -> RegistryOptions {
    RegistryOptions::new()
        .auth(RegistryAuth::Anonymous)
        .insecure(registry.host())
        .retries(2, Duration::from_millis(20))
}

fn publisher(registry: &TestRegistry, options: RegistryOptions) -> Result<RegistryPublisher> {
    Ok(RegistryPublisher::builder(registry.host())
        .prefix("apps")
        .options(options)
        .build()?)
}

/// Builds the hello-go fixture for linux/amd64 and linux/arm64 at once.
async fn build_go(out: &Path) -> Result<Vec<BuiltImage>> {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hello-go");
    let config = AppConfig::from_toml(
        "hephy.toml",
        r#"
[build]
backend = "go"
env = { GOPROXY = "off", GOFLAGS = "" }
[build.go]
data = "static"
"#,
    )?;
    let ctx = BuildContext::new(&fixture, config)
        .with_revision(Revision::new("0123456789abcdef0123456789abcdef01234567"))
        .with_source_date_epoch(UNIX_EPOCH + Duration::from_secs(1_700_000_000));
    let backend = GoBackend::new(env()?);
    let amd = BuildTarget::new(Platform::linux_amd64(), out.join("amd64"));
    let arm = BuildTarget::new(Platform::linux_arm64(), out.join("arm64"));
    let events = Events::discard();
    let (a, b) = tokio::join!(
        backend.build(&ctx, &amd, &events),
        backend.build(&ctx, &arm, &events)
    );
    Ok(vec![a?, b?])
}

/// A small image of a few files on the default base, for the host platform.
async fn build_files(dir: &Path) -> Result<BuiltImage> {
    let app = dir.join("app");
    std::fs::create_dir_all(&app)?;
    std::fs::write(app.join("index.html"), "<h1>hello</h1>\n")?;
    std::fs::write(app.join("robots.txt"), "User-agent: *\n")?;
    let ctx = BuildContext::new(&app, AppConfig::default())
        .with_source_date_epoch(UNIX_EPOCH + Duration::from_secs(1_700_000_000));
    let target = BuildTarget::new(Platform::host(), dir.join("out"));
    Ok(FilesBackend::new()
        .build(&ctx, &target, &Events::discard())
        .await?)
}

fn platforms_of(index: &serde_json::Value) -> Vec<String> {
    let mut out: Vec<String> = index["manifests"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| {
            format!(
                "{}/{}",
                m["platform"]["os"].as_str().unwrap_or("?"),
                m["platform"]["architecture"].as_str().unwrap_or("?")
            )
        })
        .collect();
    out.sort();
    out
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(bytes))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_arch_push_is_one_index_skips_known_blobs_mounts_and_pulls_back() -> Result {
    let tmp = tempfile::tempdir()?;
    let registry = TestRegistry::start()?;
    let images = build_go(&tmp.path().join("build")).await?;
    let request = PublishRequest::new("hello".parse()?, "v1", images.clone())
        .with_annotation("org.opencontainers.image.revision", "0123456789abcdef");

    // First push: every blob is uploaded, then two manifests and one index.
    let first = publisher(&registry, options(&registry))?;
    let (events, lines) = collect();
    let published = first.publish(&request, &events).await?;
    let stats = first.last_push_stats().ok_or("no stats after a push")?;
    let log = joined(&lines);
    assert!(published.is_index, "two platforms make an index");
    assert_eq!(
        published.reference.to_string(),
        format!("{}/apps/hello:v1@{}", registry.host(), published.digest)
    );
    assert_eq!(
        stats.uploaded, stats.blobs,
        "a fresh registry has no blob: {stats}"
    );
    assert!(stats.uploaded_bytes > 0 && stats.uploaded_bytes == stats.blob_bytes);
    assert_eq!(stats.manifests, 3, "two manifests and one index: {stats}");
    assert!(log.contains("pushing layer sha256:"), "{log}");
    assert!(
        log.contains(" MB)") || log.contains(" kB)"),
        "sizes in the log: {log}"
    );

    // What the registry serves is an OCI index with both platforms, byte for byte ours.
    let tagged = format!("{}/apps/hello:v1", registry.host());
    let raw = skopeo_inspect_raw_bytes(&tagged, None)?;
    assert_eq!(
        format!("sha256:{}", sha256_hex(&raw)),
        published.digest.to_string()
    );
    let index: serde_json::Value = serde_json::from_slice(&raw)?;
    assert_eq!(
        index["mediaType"],
        "application/vnd.oci.image.index.v1+json"
    );
    assert_eq!(platforms_of(&index), ["linux/amd64", "linux/arm64"]);
    assert_eq!(
        index["annotations"]["org.opencontainers.image.revision"],
        "0123456789abcdef"
    );
    let summary = skopeo_inspect(&tagged, None)?;
    assert_eq!(summary["Os"], "linux");

    // The same build pushed again, by a new publisher: every blob is found, none uploaded.
    let second = publisher(&registry, options(&registry))?;
    let (events, lines) = collect();
    let again = second.publish(&request, &events).await?;
    let stats2 = second.last_push_stats().ok_or("no stats after a push")?;
    assert_eq!(again.digest, published.digest);
    assert_eq!(
        (stats2.uploaded, stats2.uploaded_bytes, stats2.existing),
        (0, 0, stats.blobs),
        "a second push must upload nothing: {stats2}"
    );
    assert!(joined(&lines).contains("already exists"));

    // Another app with the same blobs: the publisher knows them in apps/hello and mounts them.
    let other = PublishRequest::new("hello-two".parse()?, "v1", images.clone());
    let (events, lines) = collect();
    first.publish(&other, &events).await?;
    let stats3 = first.last_push_stats().ok_or("no stats after a push")?;
    assert_eq!(
        (stats3.uploaded, stats3.mounted),
        (0, stats.blobs),
        "blobs known in apps/hello are mounted: {stats3}\n{}",
        joined(&lines)
    );
    assert!(joined(&lines).contains("mounted from apps/hello"));
    assert_eq!(
        skopeo_list_tags(&format!("{}/apps/hello-two", registry.host()), None)?,
        ["v1"]
    );

    // Pull the whole index back: same digest, and its layout holds every blob.
    let opts = options(&registry);
    let reference = registry.reference("apps/hello", "v1")?;
    let whole = OciLayout::create(tmp.path().join("pulled-all"))?;
    let digest = opts.pull_to_layout(&reference, None, &whole).await?;
    assert_eq!(digest, published.digest);
    for blob in whole.blobs_of(&digest)? {
        assert!(
            whole.has_blob(&blob),
            "{blob} missing from the pulled layout"
        );
    }

    // Pull only arm64: the manifest the index lists for it, which runs under qemu.
    let arm_entry = index["manifests"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| m["platform"]["architecture"] == "arm64")
        .ok_or("no arm64 entry")?;
    let arm_layout = OciLayout::create(tmp.path().join("pulled-arm64"))?;
    let arm = opts
        .pull_to_layout(&reference, Some(&Platform::linux_arm64()), &arm_layout)
        .await?;
    assert_eq!(Some(arm.to_string().as_str()), arm_entry["digest"].as_str());
    assert_eq!(
        arm, images[1].manifest,
        "the pulled arm64 manifest is the one built"
    );
    let bundle = tmp.path().join("arm64-bundle");
    umoci_unpack(arm_layout.root(), "v1", &bundle)?;
    let port = free_port()?;
    let mut child = tokio::process::Command::new("qemu-aarch64-static")
        .arg(bundle.join("rootfs/app/hello"))
        .env("PORT", port.to_string())
        .kill_on_drop(true)
        .spawn()?;
    let reply = http_get(port).await;
    child.kill().await?;
    let reply = reply?;
    assert!(reply.starts_with("HTTP/1.0 200"), "{reply}");
    Ok(())
}

#[tokio::test]
async fn wrong_credentials_are_refused_clearly_and_publish_nothing() -> Result {
    let tmp = tempfile::tempdir()?;
    let registry = TestRegistry::start_with_auth("hephy", "s3cret")?;
    let image = build_files(tmp.path()).await?;
    let request = PublishRequest::new("site".parse()?, "v1", vec![image]);
    let repository = format!("{}/apps/site", registry.host());

    for auth in [
        RegistryAuth::basic("hephy", "wrong"),
        RegistryAuth::Anonymous,
    ] {
        let described = auth.describe();
        let publisher = publisher(&registry, options(&registry).auth(auth))?;
        let err = publisher
            .publish(&request, &Events::discard())
            .await
            .err()
            .ok_or("a push with bad credentials succeeded")?;
        let PublishError::Unauthorized {
            registry: name,
            hint,
        } = &err
        else {
            return Err(format!("expected Unauthorized, got {err:?}").into());
        };
        assert_eq!(name, &registry.host());
        assert!(hint.contains(&described), "{hint}");
        assert!(hint.contains("docker login"), "{hint}");
        assert!(hint.contains("nothing was published"), "{hint}");
        assert!(
            registry.repositories().is_empty(),
            "{:?}",
            registry.repositories()
        );
        assert_eq!(
            skopeo_list_tags(&repository, registry.credentials())?,
            Vec::<String>::new()
        );
    }
    let message = publisher(
        &registry,
        options(&registry).auth(RegistryAuth::basic("hephy", "wrong")),
    )?
    .publish(&request, &Events::discard())
    .await
    .err()
    .ok_or("a push with bad credentials succeeded")?
    .to_string()
    .replace(&registry.host(), "127.0.0.1:PORT");
    insta::assert_snapshot!(message);

    // The right credentials publish, and skopeo sees the tag.
    let good = publisher(
        &registry,
        options(&registry).auth(RegistryAuth::basic("hephy", "s3cret")),
    )?;
    let published = good.publish(&request, &Events::discard()).await?;
    assert!(!published.is_index);
    assert_eq!(
        skopeo_list_tags(&repository, registry.credentials())?,
        ["v1"]
    );
    let raw = skopeo_inspect_raw(&format!("{repository}:v1"), registry.credentials())?;
    assert_eq!(
        raw["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    match skopeo_inspect_raw(&format!("{repository}:v1"), Some(("hephy", "wrong"))) {
        Err(TestingError::Failed { .. }) => {}
        other => return Err(format!("skopeo with wrong credentials: {other:?}").into()),
    }
    Ok(())
}

#[tokio::test]
async fn docker_config_credentials_are_used() -> Result {
    let tmp = tempfile::tempdir()?;
    let registry = TestRegistry::start_with_auth("ci", "from-config")?;
    let image = build_files(tmp.path()).await?;
    let config = tmp.path().join("config.json");
    // What `docker login` writes: base64("ci:from-config").
    std::fs::write(
        &config,
        format!(
            r#"{{"auths":{{"{}":{{"auth":"Y2k6ZnJvbS1jb25maWc="}}}}}}"#,
            registry.host()
        ),
    )?;
    let creds = hephy_oci::registry::DockerConfig::from_path(&config)?
        .credentials(&registry.host())?
        .ok_or("no credentials read from config.json")?;
    let publisher = publisher(
        &registry,
        options(&registry).auth(RegistryAuth::basic(creds.username, creds.password)),
    )?;
    publisher
        .publish(
            &PublishRequest::new("site".parse()?, "v2", vec![image]),
            &Events::discard(),
        )
        .await?;
    assert_eq!(
        skopeo_list_tags(
            &format!("{}/apps/site", registry.host()),
            registry.credentials()
        )?,
        ["v2"]
    );
    Ok(())
}

#[tokio::test]
async fn an_unreachable_registry_names_the_address() -> Result {
    let tmp = tempfile::tempdir()?;
    let image = build_files(tmp.path()).await?;
    // A port nothing listens on.
    let port = free_port()?;
    let host = format!("127.0.0.1:{port}");
    let publisher = RegistryPublisher::builder(&host)
        .options(
            RegistryOptions::new()
                .auth(RegistryAuth::Anonymous)
                .insecure(&host)
                .retries(1, Duration::from_millis(10)),
        )
        .build()?;
    let err = publisher
        .publish(
            &PublishRequest::new("site".parse()?, "v1", vec![image]),
            &Events::discard(),
        )
        .await
        .err()
        .ok_or("a push to a closed port succeeded")?;
    let PublishError::Unreachable {
        registry, message, ..
    } = &err
    else {
        return Err(format!("expected Unreachable, got {err:?}").into());
    };
    assert_eq!(registry, &host);
    assert!(message.contains(&format!("http://{host}/v2/")), "{message}");
    Ok(())
}

/// A loopback proxy in front of a registry that spoils the first request of its first `faults`
/// connections: odd ones get `503 Service Unavailable`, even ones are dropped unanswered.
/// Returns its address and the count of faults injected so far.
async fn flaky_proxy(
    upstream: std::net::SocketAddr,
    faults: usize,
) -> Result<(String, Arc<std::sync::atomic::AtomicUsize>)> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let injected = Arc::new(AtomicUsize::new(0));
    let count = injected.clone();
    tokio::spawn(async move {
        let mut n = 0usize;
        while let Ok((mut client, _)) = listener.accept().await {
            n += 1;
            if n <= faults {
                let count = count.clone();
                tokio::spawn(async move {
                    // Wait for the request to arrive, then spoil it.
                    let mut buf = [0u8; 1024];
                    let _ = client.read(&mut buf).await;
                    count.fetch_add(1, Ordering::SeqCst);
                    if n % 2 == 1 {
                        let _ = client
                            .write_all(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                            .await;
                    }
                    // Dropping the socket closes the connection (unanswered for even ones).
                });
                continue;
            }
            tokio::spawn(async move {
                if let Ok(mut server) = tokio::net::TcpStream::connect(upstream).await {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                }
            });
        }
    });
    Ok((addr.to_string(), injected))
}

#[tokio::test]
async fn server_errors_and_dropped_connections_are_retried() -> Result {
    use std::sync::atomic::Ordering;
    let tmp = tempfile::tempdir()?;
    let registry = TestRegistry::start()?;
    let image = build_files(tmp.path()).await?;
    let request = PublishRequest::new("site".parse()?, "v1", vec![image]);
    let opts = |host: &str, retries: u32| {
        RegistryOptions::new()
            .auth(RegistryAuth::Anonymous)
            .insecure(host)
            .concurrency(1)
            .retries(retries, Duration::from_millis(10))
    };

    // Without retries, the first spoiled request fails the push.
    let (host, _) = flaky_proxy(registry.addr(), 4).await?;
    let no_retries = RegistryPublisher::builder(&host)
        .options(opts(&host, 0))
        .build()?;
    assert!(
        no_retries
            .publish(&request, &Events::discard())
            .await
            .is_err(),
        "a 503 without retries should fail the push"
    );

    // With retries, the push goes through every fault.
    let (host, injected) = flaky_proxy(registry.addr(), 4).await?;
    let publisher = RegistryPublisher::builder(&host)
        .options(opts(&host, 5))
        .build()?;
    let published = publisher.publish(&request, &Events::discard()).await?;
    assert!(
        injected.load(Ordering::SeqCst) >= 3,
        "the proxy should have spoiled several requests, spoiled {}",
        injected.load(Ordering::SeqCst)
    );
    let raw = skopeo_inspect_raw_bytes(&format!("{}/site:v1", registry.host()), None)?;
    assert_eq!(
        format!("sha256:{}", sha256_hex(&raw)),
        published.digest.to_string()
    );
    Ok(())
}

/// A token service for a [`TestRegistry`] with token auth: answers `GET /token` with a JWT
/// (RS256, signed by `openssl` with a throwaway self-signed key) granting what was asked for, to
/// the basic-auth user `user`/`password` only.
struct TokenService {
    realm: String,
    cert: PathBuf,
    issued: Arc<std::sync::atomic::AtomicUsize>,
}

const TOKEN_ISSUER: &str = "hephy-test-issuer";
const TOKEN_SERVICE: &str = "hephy-test-registry";

async fn token_service(dir: &Path, user: &str, password: &str) -> Result<TokenService> {
    use base64::Engine as _;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let key = dir.join("token.key");
    let cert = dir.join("token.crt");
    let out = std::process::Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args(["-subj", "/CN=hephy-test-token"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()?;
    if !out.status.success() {
        return Err(format!("openssl req: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    let der = std::process::Command::new("openssl")
        .args(["x509", "-outform", "DER", "-in"])
        .arg(&cert)
        .output()?
        .stdout;
    let x5c = base64::engine::general_purpose::STANDARD.encode(der);
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let realm = format!("http://{}/token", listener.local_addr()?);
    let issued = Arc::new(AtomicUsize::new(0));
    let count = issued.clone();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let (key, x5c, expected, count) =
                (key.clone(), x5c.clone(), expected.clone(), count.clone());
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let n = conn.read(&mut buf).await.unwrap_or(0);
                let head = String::from_utf8_lossy(&buf[..n]).to_string();
                let authorized = head.lines().any(|l| {
                    l.to_ascii_lowercase().starts_with("authorization:")
                        && l[14..].trim() == expected
                });
                let reply = if authorized {
                    match jwt(&head, &key, &x5c) {
                        Ok(token) => {
                            count.fetch_add(1, Ordering::SeqCst);
                            let body = format!(r#"{{"token":"{token}","expires_in":300}}"#);
                            format!("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len())
                        }
                        Err(e) => format!("HTTP/1.1 500 Internal Server Error\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{e}", e.to_string().len()),
                    }
                } else {
                    let body = r#"{"details":"incorrect username or password"}"#;
                    format!("HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len())
                };
                let _ = conn.write_all(reply.as_bytes()).await;
            });
        }
    });
    Ok(TokenService {
        realm,
        cert,
        issued,
    })
}

/// A JWT granting the `scope`s of the request line.
fn jwt(head: &str, key: &Path, x5c: &str) -> Result<String> {
    use base64::Engine as _;
    let url = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let target = head.split_whitespace().nth(1).ok_or("no request line")?;
    let query = target.split_once('?').map(|(_, q)| q).unwrap_or_default();
    let mut access = Vec::new();
    for pair in query.split('&') {
        let Some(("scope", scope)) = pair.split_once('=') else {
            continue;
        };
        let scope = scope
            .replace("%3A", ":")
            .replace("%2C", ",")
            .replace("%2F", "/");
        let mut parts = scope.splitn(3, ':');
        let (Some(kind), Some(name), Some(actions)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        access.push(serde_json::json!({
            "type": kind, "name": name, "actions": actions.split(',').collect::<Vec<_>>()
        }));
    }
    let now = std::time::SystemTime::now()
        .duration_since(UNIX_EPOCH)?
        .as_secs();
    let header = serde_json::json!({"alg": "RS256", "typ": "JWT", "x5c": [x5c]});
    let claims = serde_json::json!({
        "iss": TOKEN_ISSUER, "sub": "hephy", "aud": TOKEN_SERVICE,
        "exp": now + 300, "nbf": now - 10, "iat": now, "jti": format!("{now}-{}", access.len()),
        "access": access,
    });
    let input = format!(
        "{}.{}",
        url.encode(serde_json::to_vec(&header)?),
        url.encode(serde_json::to_vec(&claims)?)
    );
    let mut child = std::process::Command::new("openssl")
        .args(["dgst", "-sha256", "-sign"])
        .arg(key)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    {
        use std::io::Write as _;
        let mut stdin = child.stdin.take().ok_or("no stdin")?;
        stdin.write_all(input.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        return Err("openssl dgst -sign failed".into());
    }
    Ok(format!("{input}.{}", url.encode(out.stdout)))
}

#[tokio::test]
async fn bearer_tokens_from_a_token_service() -> Result {
    use std::sync::atomic::Ordering;
    let tmp = tempfile::tempdir()?;
    let tokens = token_service(tmp.path(), "hephy", "s3cret").await?;
    let registry = TestRegistry::builder()
        .basic_auth("hephy", "s3cret")
        .token_auth(TokenAuth::new(
            &tokens.realm,
            TOKEN_SERVICE,
            TOKEN_ISSUER,
            &tokens.cert,
        ))
        .start()?;
    let image = build_files(tmp.path()).await?;
    let request = PublishRequest::new("site".parse()?, "v1", vec![image]);

    // Wrong password: the token service refuses, and nothing is published.
    let bad = publisher(
        &registry,
        options(&registry).auth(RegistryAuth::basic("hephy", "nope")),
    )?;
    let err = bad
        .publish(&request, &Events::discard())
        .await
        .err()
        .ok_or("a push with a wrong password succeeded")?;
    assert!(
        matches!(&err, PublishError::Unauthorized { hint, .. } if hint.contains("token service refused")),
        "{err:?}"
    );
    assert!(registry.repositories().is_empty());

    // The right password is exchanged for bearer tokens, which the registry accepts.
    let good = publisher(
        &registry,
        options(&registry).auth(RegistryAuth::basic("hephy", "s3cret")),
    )?;
    let published = good.publish(&request, &Events::discard()).await?;
    assert!(
        tokens.issued.load(Ordering::SeqCst) >= 1,
        "no token was issued"
    );
    assert_eq!(registry.repositories(), ["apps/site"]);

    // A bearer token given as it is works too: pull with one fetched from the service.
    let reply = reqwest::Client::new()
        .get(format!(
            "{}?service={TOKEN_SERVICE}&scope=repository:apps/site:pull",
            tokens.realm
        ))
        .basic_auth("hephy", Some("s3cret"))
        .send()
        .await?
        .text()
        .await?;
    let token: serde_json::Value = serde_json::from_str(&reply)?;
    let token = token["token"].as_str().ok_or("no token in the reply")?;
    let pulled = OciLayout::create(tmp.path().join("pulled"))?;
    let reference = registry.reference("apps/site", "v1")?;
    let digest = options(&registry)
        .auth(RegistryAuth::bearer(token))
        .pull_to_layout(&reference, None, &pulled)
        .await?;
    assert_eq!(digest, published.digest);
    Ok(())
}

#[tokio::test]
async fn base_image_layers_are_pulled_and_then_mounted_not_uploaded() -> Result {
    let tmp = tempfile::tempdir()?;
    let registry = TestRegistry::start()?;
    // A base image in the registry: the default base plus a file, as apps/base:1.
    let base = build_files(&tmp.path().join("base")).await?;
    let base_layers = {
        let layout = OciLayout::open(&base.layout)?;
        let m: serde_json::Value = layout.read_json(&base.manifest)?;
        m["layers"].as_array().map(Vec::len).unwrap_or(0)
    };
    publisher(&registry, options(&registry))?
        .publish(
            &PublishRequest::new("base".parse()?, "1", vec![base]),
            &Events::discard(),
        )
        .await?;

    // An app built on it: the backend pulls the base through the registry client.
    let app = tmp.path().join("app");
    std::fs::create_dir_all(&app)?;
    std::fs::write(app.join("main.txt"), "on a registry base\n")?;
    let config = AppConfig::from_toml(
        "hephy.toml",
        &format!(
            "[build.files]\nbase = \"{}/apps/base:1\"\n",
            registry.host()
        ),
    )?;
    let ctx = BuildContext::new(&app, config)
        .with_source_date_epoch(UNIX_EPOCH + Duration::from_secs(1_700_000_000));
    let image = FilesBackend::new()
        .with_registry_options(options(&registry))
        .build(
            &ctx,
            &BuildTarget::new(Platform::host(), tmp.path().join("app-out")),
            &Events::discard(),
        )
        .await?;

    // A fresh publisher knows nothing, but the manifest names its base: its layers are mounted.
    let fresh = publisher(&registry, options(&registry))?;
    let (events, lines) = collect();
    fresh
        .publish(
            &PublishRequest::new("site".parse()?, "v1", vec![image]),
            &events,
        )
        .await?;
    let stats = fresh.last_push_stats().ok_or("no stats")?;
    assert_eq!(
        stats.mounted,
        base_layers,
        "every base layer is mounted from apps/base: {stats}\n{}",
        joined(&lines)
    );
    assert!(joined(&lines).contains("mounted from apps/base"));
    assert!(
        stats.uploaded >= 2,
        "the app's own layer and config are uploaded: {stats}"
    );
    Ok(())
}

#[test]
fn bad_registry_names_are_refused_when_building() {
    let err = RegistryPublisher::builder("https://registry.example/x")
        .build()
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        err.contains("host[:port]") || err.contains("invalid registry"),
        "{err}"
    );
}

#[test]
fn test_registry_starts_answers_and_stops() -> Result {
    let registry = TestRegistry::start()?;
    let addr = registry.addr();
    let repo = format!("{}/nothing/here", registry.host());
    assert_eq!(skopeo_list_tags(&repo, None)?, Vec::<String>::new());
    assert!(registry.repositories().is_empty());
    registry.stop();
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "the registry on {addr} should be gone after stop()"
    );
    Ok(())
}

#[test]
fn test_registry_with_auth_refuses_wrong_credentials() -> Result {
    let registry = TestRegistry::start_with_auth("hephy", "s3cret")?;
    let repo = format!("{}/nothing/here", registry.host());
    assert_eq!(
        skopeo_list_tags(&repo, registry.credentials())?,
        Vec::<String>::new()
    );
    match skopeo_list_tags(&repo, Some(("hephy", "wrong"))) {
        Err(TestingError::Failed { stderr, .. }) => assert!(
            stderr.contains("unauthorized") || stderr.contains("401"),
            "expected skopeo to report 401 unauthorized, got: {stderr}"
        ),
        other => return Err(format!("expected wrong credentials to fail, got {other:?}").into()),
    }
    Ok(())
}
