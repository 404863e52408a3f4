//! The spin backend: a Spin app packaged the way `spin registry push` does, read back from the
//! layout and from a real registry with skopeo; the CNCF Wasm format; and its refusals.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, UNIX_EPOCH};

use hephy_backends::spin::{
    SpinBackend, DATA_MEDIA_TYPE, LOCKED_APP_DIGEST_LABEL, SPIN_APPLICATION_MEDIA_TYPE,
    WASM_CONFIG_MEDIA_TYPE, WASM_LAYER_MEDIA_TYPE, WASM_MEDIA_TYPE,
};
use hephy_core::{
    Backend, BuildContext, BuildTarget, Digest, Events, Platform, PublishRequest, Publisher,
};
use hephy_oci::layout::OciLayout;
use hephy_oci::registry::{RegistryOptions, RegistryPublisher};
use hephy_testing::TestRegistry;
use serde_json::Value;

use crate::support::{env, refusal};

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// A valid core Wasm module exporting an empty `_start`, written by hand (no toolchain needed):
/// magic and version, a type section `() -> ()`, a function of that type, its export, its body.
fn tiny_wasm() -> Vec<u8> {
    let mut m = b"\0asm".to_vec();
    m.extend([1, 0, 0, 0]);
    m.extend([0x01, 0x04, 0x01, 0x60, 0x00, 0x00]); // type section
    m.extend([0x03, 0x02, 0x01, 0x00]); // function section
    m.extend([0x07, 0x0a, 0x01, 0x06]); // export section, one export named...
    m.extend(b"_start");
    m.extend([0x00, 0x00]); // ...a function, index 0
    m.extend([0x0a, 0x04, 0x01, 0x02, 0x00, 0x0b]); // code section: no locals, end
    m
}

/// A second, different module (a custom section makes it bigger than the inline limit).
fn bigger_wasm() -> Vec<u8> {
    let mut m = tiny_wasm();
    let payload = vec![b'x'; 300];
    let name = b"pad";
    let size = 1 + name.len() + payload.len();
    m.push(0x00);
    // LEB128 of the section size.
    let mut n = size;
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            m.push(byte);
            break;
        }
        m.push(byte | 0x80);
    }
    m.push(name.len() as u8);
    m.extend(name);
    m.extend(payload);
    m
}

const MANIFEST: &str = r#"spin_manifest_version = 2

[application]
name = "hello-spin"
version = "0.2.0"
authors = ["Hephy Tests <tests@hephy.invalid>"]
description = "A Spin app packaged by hephy"

[variables]
greeting = { default = "hello" }

[[trigger.http]]
route = "/..."
component = "hello"

[[trigger.http]]
route = "/static/..."
component = "assets"

[component.hello]
source = "target/hello.wasm"
allowed_outbound_hosts = ["https://example.com"]
environment = { MODE = "test" }
[component.hello.variables]
greeting = "{{ greeting }}"
[component.hello.build]
command = "cargo build --target wasm32-wasip1 --release"

[component.assets]
source = "target/assets.wasm"
files = [{ source = "public", destination = "/" }, "notes/*.txt"]
exclude_files = ["notes/secret.txt"]
"#;

fn spin_repo(with_hello: bool) -> Result<tempfile::TempDir, Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let p = dir.path();
    std::fs::create_dir_all(p.join("target"))?;
    std::fs::create_dir_all(p.join("public/css"))?;
    std::fs::create_dir_all(p.join("notes"))?;
    std::fs::write(p.join("spin.toml"), MANIFEST)?;
    if with_hello {
        std::fs::write(p.join("target/hello.wasm"), tiny_wasm())?;
    }
    std::fs::write(p.join("target/assets.wasm"), bigger_wasm())?;
    std::fs::write(p.join("public/index.html"), "<h1>hello</h1>".repeat(20))?;
    std::fs::write(p.join("public/css/site.css"), "body{}")?;
    std::fs::write(p.join("notes/a.txt"), "a note")?;
    std::fs::write(p.join("notes/secret.txt"), "not shipped")?;
    Ok(dir)
}

fn ctx(dir: &Path) -> Result<BuildContext, Box<dyn std::error::Error>> {
    Ok(BuildContext::open(dir)?
        .with_source_date_epoch(UNIX_EPOCH + Duration::from_secs(1_700_000_000)))
}

fn read_blob(layout: &OciLayout, digest: &str) -> Result<Vec<u8>, Box<dyn std::error::Error>> {
    let d: Digest = digest.parse()?;
    Ok(std::fs::read(layout.blob_path(&d))?)
}

/// Replaces digests with stable placeholders, so snapshots show structure.
fn redact(v: &str) -> String {
    let mut out = String::new();
    let mut rest = v;
    while let Some(i) = rest.find("sha256:") {
        out.push_str(&rest[..i]);
        let hex: String = rest[i + 7..]
            .chars()
            .take_while(|c| c.is_ascii_hexdigit())
            .collect();
        out.push_str(&format!("sha256:{}…", &hex[..hex.len().min(8)]));
        rest = &rest[i + 7 + hex.len()..];
    }
    out.push_str(rest);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn packages_like_spin_registry_push() -> TestResult {
    let dir = spin_repo(true)?;
    let out = tempfile::tempdir()?;
    let backend = SpinBackend::new(env()?).without_spin();
    let c = ctx(dir.path())?;
    let d = backend.detect(&c).await;
    assert_eq!(d.reason, "found spin.toml (Spin app hello-spin)");
    backend.check(&c, &[Platform::linux_arm64()]).await?;
    let err = refusal(
        &backend,
        &c,
        &[Platform::linux_amd64(), Platform::linux_arm64()],
        "several platforms for one Wasm artifact should be refused",
    )
    .await?;
    insta::assert_snapshot!("several_platforms", err.to_string());
    let image = backend
        .build(
            &c,
            &BuildTarget::new(Platform::host(), out.path()),
            &Events::discard(),
        )
        .await?;
    assert_eq!(image.platform, None, "a Spin app is platform-independent");

    let layout = OciLayout::open(out.path())?;
    let manifest: Value =
        serde_json::from_slice(&read_blob(&layout, &image.manifest.to_string())?)?;
    let layers = manifest["layers"].as_array().ok_or("no layers")?;
    let types: Vec<&str> = layers
        .iter()
        .filter_map(|l| l["mediaType"].as_str())
        .collect();
    assert_eq!(
        types,
        vec![
            WASM_LAYER_MEDIA_TYPE, // hello.wasm
            WASM_LAYER_MEDIA_TYPE, // assets.wasm
            DATA_MEDIA_TYPE,       // public/index.html (the small files are inlined)
            SPIN_APPLICATION_MEDIA_TYPE,
        ]
    );
    assert_eq!(
        manifest["config"]["mediaType"],
        "application/vnd.oci.image.config.v1+json"
    );
    let config: Value = serde_json::from_slice(&read_blob(
        &layout,
        manifest["config"]["digest"]
            .as_str()
            .ok_or("no config digest")?,
    )?)?;
    let locked_digest = layers[3]["digest"].as_str().ok_or("no digest")?;
    assert_eq!(
        config["config"]["Labels"][LOCKED_APP_DIGEST_LABEL],
        locked_digest
    );
    assert_eq!(config["architecture"], "wasm");

    let locked: Value = serde_json::from_slice(&read_blob(&layout, locked_digest)?)?;
    // Every content reference that is not inline is a layer of the manifest.
    let layer_digests: Vec<&str> = layers.iter().filter_map(|l| l["digest"].as_str()).collect();
    for c in locked["components"].as_array().ok_or("no components")? {
        let src = c["source"]["digest"].as_str().ok_or("no source digest")?;
        assert!(layer_digests.contains(&src), "{src} is not a layer");
        for f in c["files"].as_array().into_iter().flatten() {
            if f.get("inline").is_none() {
                let d = f["digest"].as_str().ok_or("no file digest")?;
                assert!(layer_digests.contains(&d), "{d} is not a layer");
            }
        }
    }
    insta::assert_snapshot!(
        "spin_manifest",
        redact(&serde_json::to_string_pretty(&manifest)?)
    );
    insta::assert_snapshot!(
        "spin_locked_app",
        redact(&serde_json::to_string_pretty(&locked)?)
    );

    // Published to a real registry, skopeo reads the same manifest back.
    let registry = TestRegistry::start()?;
    let publisher = RegistryPublisher::builder(registry.host())
        .prefix("team")
        .options(RegistryOptions::new().insecure(registry.host()))
        .build()?;
    publisher
        .publish(
            &PublishRequest::new("hello-spin".parse()?, "v1", vec![image.clone()]),
            &Events::discard(),
        )
        .await?;
    let dest = format!("{}/team/hello-spin:v1", registry.host());
    let raw = Command::new("skopeo")
        .args(["inspect", "--tls-verify=false", "--raw"])
        .arg(format!("docker://{dest}"))
        .output()?;
    assert!(
        raw.status.success(),
        "{}",
        String::from_utf8_lossy(&raw.stderr)
    );
    let pushed: Value = serde_json::from_slice(&raw.stdout)?;
    assert_eq!(pushed, manifest);
    Ok(())
}

#[tokio::test]
async fn cncf_wasm_format_holds_one_component() -> TestResult {
    let dir = tempfile::tempdir()?;
    std::fs::write(
        dir.path().join("spin.toml"),
        "spin_manifest_version = 2\n[application]\nname = \"one\"\n[[trigger.http]]\nroute = \"/\"\ncomponent = { source = \"app.wasm\" }\n",
    )?;
    std::fs::write(dir.path().join("app.wasm"), tiny_wasm())?;
    std::fs::write(
        dir.path().join("hephy.toml"),
        "[build.spin]\nformat = \"wasm\"\n",
    )?;
    let out = tempfile::tempdir()?;
    let image = SpinBackend::new(env()?)
        .without_spin()
        .build(
            &ctx(dir.path())?,
            &BuildTarget::new(Platform::host(), out.path()),
            &Events::discard(),
        )
        .await?;
    let layout = OciLayout::open(out.path())?;
    let manifest: Value =
        serde_json::from_slice(&read_blob(&layout, &image.manifest.to_string())?)?;
    assert_eq!(manifest["config"]["mediaType"], WASM_CONFIG_MEDIA_TYPE);
    assert_eq!(manifest["layers"][0]["mediaType"], WASM_MEDIA_TYPE);
    let config: Value = serde_json::from_slice(&read_blob(
        &layout,
        manifest["config"]["digest"].as_str().ok_or("no config")?,
    )?)?;
    assert_eq!(config["os"], "wasip1");
    assert_eq!(config["layerDigests"][0], manifest["layers"][0]["digest"]);
    assert_eq!(
        read_blob(
            &layout,
            manifest["layers"][0]["digest"].as_str().ok_or("no layer")?
        )?,
        tiny_wasm()
    );

    // A registry takes it as it is.
    let registry = TestRegistry::start()?;
    RegistryPublisher::builder(registry.host())
        .options(RegistryOptions::new().insecure(registry.host()))
        .build()?
        .publish(
            &PublishRequest::new("one".parse()?, "v1", vec![image.clone()]),
            &Events::discard(),
        )
        .await?;
    let raw = Command::new("skopeo")
        .args(["inspect", "--tls-verify=false", "--raw"])
        .arg(format!("docker://{}/one:v1", registry.host()))
        .output()?;
    assert!(
        raw.status.success(),
        "{}",
        String::from_utf8_lossy(&raw.stderr)
    );
    assert_eq!(serde_json::from_slice::<Value>(&raw.stdout)?, manifest);

    // Two components do not fit.
    let two = spin_repo(true)?;
    std::fs::write(
        two.path().join("hephy.toml"),
        "[build.spin]\nformat = \"wasm\"\n",
    )?;
    let err = refusal(
        &SpinBackend::new(env()?).without_spin(),
        &ctx(two.path())?,
        &[Platform::host()],
        "format = wasm with two components should be refused",
    )
    .await?;
    insta::assert_snapshot!(err.to_string());
    Ok(())
}

#[tokio::test]
async fn missing_wasm_names_the_file_and_spin_build() -> TestResult {
    let dir = spin_repo(false)?;
    let err = refusal(
        &SpinBackend::new(env()?).without_spin(),
        &ctx(dir.path())?,
        &[Platform::host()],
        "a missing .wasm should be refused",
    )
    .await?;
    insta::assert_snapshot!(err.to_string());

    // Not Wasm at all.
    std::fs::write(dir.path().join("target/hello.wasm"), "#!/bin/sh\n")?;
    let out = tempfile::tempdir()?;
    let err = SpinBackend::new(env()?)
        .without_spin()
        .build(
            &ctx(dir.path())?,
            &BuildTarget::new(Platform::host(), out.path()),
            &Events::discard(),
        )
        .await
        .err()
        .ok_or("a file that is not Wasm should be refused")?;
    insta::assert_snapshot!("not_wasm", err.to_string());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spin_app_goes_through_the_pipeline() -> TestResult {
    use std::sync::Arc;

    use hephy_backends::default_backends;
    use hephy_core::{Job, Pipeline};
    use hephy_oci::OciLayoutPublisher;

    let dir = spin_repo(true)?;
    let work = tempfile::tempdir()?;
    let mut builder = Pipeline::builder();
    for b in default_backends(&env()?) {
        builder = builder.backend(b);
    }
    let pipeline = builder
        .publisher(Arc::new(OciLayoutPublisher::new(
            work.path().join("images"),
        )))
        .build()?;
    let job = Job::context(
        "hello-spin".parse()?,
        ctx(dir.path())?,
        work.path().join("work"),
    );
    let report = pipeline.run(job.with_tag("v1"), &Events::discard()).await?;
    assert_eq!(report.backend, "spin");
    assert!(
        report
            .published
            .reference
            .to_string()
            .starts_with("hephy.local/hello-spin:v1@sha256:"),
        "{}",
        report.published.reference
    );
    assert!(
        report.published.platforms.is_empty(),
        "a Wasm artifact has no platform"
    );
    Ok(())
}

/// `spin build` runs the component build commands a push wrote: in the sandbox, as the build
/// user, on a copy of the repository, from which the artifact is then packaged.
#[tokio::test]
async fn spin_build_runs_confined_on_a_copy() -> TestResult {
    use std::os::unix::fs::PermissionsExt;
    let dir = spin_repo(false)?;
    let tools = tempfile::tempdir()?;
    let secret = tools.path().join("secret");
    std::fs::write(&secret, "host-secret")?;
    // A stand-in for spin, installed by the admin (outside the repository): what the build
    // command would do, plus a look around.
    let spin = tools.path().join("spin");
    std::fs::write(
        &spin,
        format!(
            "#!/bin/sh\necho \"spin uid=$(id -u) args=$*\"\ncat {} 2>&1\n\
             [ \"$*\" = \"build -f spin.toml\" ] || exit 9\ncp target/assets.wasm target/hello.wasm\n",
            secret.display()
        ),
    )?;
    std::fs::set_permissions(&spin, std::fs::Permissions::from_mode(0o755))?;
    let (events, lines) = crate::support::collect();
    let out = tempfile::tempdir()?;
    SpinBackend::new(env()?)
        .with_spin(&spin)
        .build(
            &ctx(dir.path())?.with_app("spin-spy".parse()?),
            &BuildTarget::new(Platform::host(), out.path()),
            &events,
        )
        .await?;
    let log = crate::support::joined(&lines);
    assert!(
        log.contains("spin uid=65534 args=build -f spin.toml"),
        "{log}"
    );
    assert!(!log.contains("host-secret"), "{log}");
    assert!(log.contains("Packaged 2 component(s)"), "{log}");
    assert!(
        !dir.path().join("target/hello.wasm").exists(),
        "spin build wrote into the repository instead of its copy"
    );
    Ok(())
}
