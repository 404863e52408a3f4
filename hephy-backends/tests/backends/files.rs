//! The files backend, unpacked with the real `umoci`.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::sync::Arc;

use hephy_backends::FilesBackend;
use hephy_core::{AppConfig, Backend, BuildContext, Confidence, Events, Job, Pipeline, Platform};
use hephy_oci::layout::OciLayout;
use hephy_oci::OciLayoutPublisher;

use hephy_testing::umoci_unpack;

use crate::support::{collect, joined};

type Result<T = (), E = Box<dyn std::error::Error + Send + Sync>> = std::result::Result<T, E>;

#[tokio::test]
async fn detects_anything_with_low_confidence() -> Result {
    let tmp = tempfile::tempdir()?;
    let d = FilesBackend::new()
        .detect(&BuildContext::new(tmp.path(), AppConfig::default()))
        .await;
    assert_eq!(d.confidence, Confidence::Low);
    assert_eq!(d.reason, "any directory can be shipped as files");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_image_unpacks_with_the_right_modes() -> Result {
    let tmp = tempfile::tempdir()?;
    let app = tmp.path().join("app");
    std::fs::create_dir_all(app.join("site/css"))?;
    std::fs::create_dir_all(app.join(".git"))?;
    std::fs::write(app.join(".git/HEAD"), "ref: refs/heads/main\n")?;
    std::fs::write(app.join("site/index.html"), "<h1>hi</h1>\n")?;
    std::fs::set_permissions(
        app.join("site/index.html"),
        std::fs::Permissions::from_mode(0o600),
    )?;
    std::fs::write(app.join("site/css/a.css"), "h1{}\n")?;
    std::fs::write(app.join("serve"), "#!/bin/sh\n")?;
    std::fs::set_permissions(app.join("serve"), std::fs::Permissions::from_mode(0o744))?;
    std::os::unix::fs::symlink("site/index.html", app.join("index.html"))?;
    std::fs::write(
        app.join("hephy.toml"),
        "[build.files]\nentrypoint = [\"/app/serve\"]\nenv = { GREETING = \"hi\" }\n[deploy]\nport = 9000\n",
    )?;
    let platform = Platform::host();
    let pipeline = Pipeline::builder()
        .backend(Arc::new(FilesBackend::new()))
        .publisher(Arc::new(OciLayoutPublisher::new(tmp.path().join("images"))))
        .build()?;
    let job = Job::context(
        "site".parse()?,
        BuildContext::open(&app)?,
        tmp.path().join("work"),
    );
    let report = pipeline.run(job.with_tag("v1"), &Events::discard()).await?;
    assert_eq!(report.backend, "files");
    assert!(!report.published.is_index);

    // Publishing the same build again copies no blob.
    let (events, lines) = collect();
    let job = Job::context(
        "site".parse()?,
        BuildContext::open(&app)?,
        tmp.path().join("work2"),
    );
    let again = pipeline.run(job.with_tag("v1"), &events).await?;
    assert_eq!(again.published.digest, report.published.digest);
    let log = joined(&lines);
    assert!(log.contains("0 blobs copied"), "{log}");

    let layout = OciLayout::open(tmp.path().join("images/hephy.local/site"))?;
    let bundle = tmp.path().join("bundle");
    umoci_unpack(layout.root(), "v1", &bundle)?;
    let root = bundle.join("rootfs");
    let mode =
        |p: &str| -> Result<u32> { Ok(std::fs::symlink_metadata(root.join(p))?.mode() & 0o7777) };
    assert_eq!(mode("app/site/index.html")?, 0o644);
    assert_eq!(mode("app/serve")?, 0o755);
    assert_eq!(mode("app/site/css")?, 0o755);
    assert_eq!(mode("tmp")?, 0o1777);
    assert_eq!(
        std::fs::read_link(root.join("app/index.html"))?,
        std::path::Path::new("site/index.html")
    );
    assert_eq!(
        std::fs::read_to_string(root.join("app/site/css/a.css"))?,
        "h1{}\n"
    );
    assert!(!root.join("app/.git").exists(), ".git is not shipped");
    assert!(
        !root.join("app/hephy.toml").exists(),
        "hephy.toml is not shipped"
    );
    assert!(std::fs::read_to_string(root.join("etc/passwd"))?.contains("app:x:65532:65532"));
    if hephy_testing::is_root() {
        assert_eq!(std::fs::symlink_metadata(root.join("app/serve"))?.uid(), 0);
    }

    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(bundle.join("config.json"))?)?;
    assert_eq!(config["process"]["args"], serde_json::json!(["/app/serve"]));
    assert_eq!(config["process"]["cwd"], "/app");
    let env: Vec<&str> = config["process"]["env"]
        .as_array()
        .ok_or("env")?
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert!(
        env.contains(&"PORT=9000") && env.contains(&"GREETING=hi"),
        "{env:?}"
    );
    let _ = platform;
    Ok(())
}

#[tokio::test]
async fn build_dir_image_is_deterministic() -> Result {
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("d");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("a.txt"), "a")?;
    let settings = hephy_backends::files::FilesSettings::default()
        .with_base(hephy_oci::base::BaseImage::Scratch);
    let p = Platform::linux_amd64();
    let one = hephy_backends::files::build_dir_image(&dir, &settings, &p, &tmp.path().join("one"))
        .await?;
    let two = hephy_backends::files::build_dir_image(&dir, &settings, &p, &tmp.path().join("two"))
        .await?;
    assert_eq!(one.digest, two.digest);
    assert_eq!(one.manifest.size(), two.manifest.size());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn base_image_from_a_registry_and_from_a_layout() -> Result {
    use hephy_backends::files::FilesSettings;
    use hephy_oci::base::BaseImage;
    use hephy_oci::image::ImageBuilder;
    use hephy_oci::layer::Entry;

    let tmp = tempfile::tempdir()?;
    // A base image of our own: the default base plus a marker file, pushed with skopeo.
    let base_layout = OciLayout::create(tmp.path().join("base"))?;
    let p = Platform::linux_amd64();
    let base = BaseImage::Default
        .resolve(&p, &base_layout, tmp.path())
        .await?;
    ImageBuilder::new(p.clone())
        .base(base)
        .entries(vec![Entry::bytes(
            "etc/base-marker",
            b"from the base\n".to_vec(),
            0o644,
        )])
        .write(&base_layout, Some("1"))
        .await?;
    let registry = hephy_testing::TestRegistry::start()?;
    let out = std::process::Command::new("skopeo")
        .args(["copy", "--quiet", "--dest-tls-verify=false"])
        .arg(format!("oci:{}:1", base_layout.root().display()))
        .arg(format!("docker://{}/team/base:1", registry.host()))
        .output()?;
    assert!(
        out.status.success(),
        "skopeo copy: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let dir = tmp.path().join("site");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("index.html"), "hi\n")?;
    let ctx = BuildContext::new(&dir, AppConfig::default());
    let backend = FilesBackend::new()
        .with_registry_options(hephy_oci::RegistryOptions::default().insecure(registry.host()));
    let reference = format!("{}/team/base:1", registry.host());
    for (name, base) in [
        ("registry", reference.parse::<BaseImage>()?),
        (
            "layout",
            format!("oci:{}:1", base_layout.root().display()).parse::<BaseImage>()?,
        ),
    ] {
        let out_dir = tmp.path().join(name);
        let written = backend
            .build_image(
                &ctx,
                &FilesSettings::default().with_base(base),
                &p,
                &out_dir,
            )
            .await?;
        let layout = OciLayout::open(&out_dir)?;
        let manifest: oci_spec::image::ImageManifest = layout.read_json(&written.digest)?;
        let ann = manifest.annotations().clone().unwrap_or_default();
        assert!(
            ann.get("org.opencontainers.image.base.digest")
                .is_some_and(|d| d.starts_with("sha256:")),
            "{name}: {ann:?}"
        );
        let base_name = ann
            .get("org.opencontainers.image.base.name")
            .cloned()
            .unwrap_or_default();
        if name == "registry" {
            assert_eq!(base_name, reference);
        }
        assert_eq!(
            manifest.layers().len(),
            3,
            "{name}: default base, marker, files"
        );
        let bundle = tmp.path().join(format!("{name}-bundle"));
        umoci_unpack(layout.root(), "latest", &bundle)?;
        assert_eq!(
            std::fs::read_to_string(bundle.join("rootfs/etc/base-marker"))?,
            "from the base\n"
        );
        assert_eq!(
            std::fs::read_to_string(bundle.join("rootfs/app/index.html"))?,
            "hi\n"
        );
    }
    Ok(())
}

/// A tiny image on no base, fixed time: its manifest and config are byte-for-byte the same on
/// every machine, so they are snapshotted whole, digests included.
#[tokio::test]
async fn manifest_and_config_snapshot() -> Result {
    use hephy_backends::files::FilesSettings;
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("d");
    std::fs::create_dir_all(dir.join("bin"))?;
    std::fs::write(dir.join("bin/hello"), "#!/bin/sh\necho hello\n")?;
    std::fs::set_permissions(
        dir.join("bin/hello"),
        std::fs::Permissions::from_mode(0o755),
    )?;
    std::fs::write(dir.join("README"), "hello\n")?;
    let config = AppConfig::from_toml(
        "hephy.toml",
        "[build.files]\nbase = \"scratch\"\nentrypoint = [\"/app/bin/hello\"]\n",
    )?;
    let ctx = BuildContext::new(&dir, config)
        .with_revision(hephy_core::Revision::new(
            "89abcdef0123456789abcdef0123456789abcdef",
        ))
        .with_source_date_epoch(
            std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_600_000_000),
        );
    let settings: FilesSettings = ctx.config().build.backend_settings("files")?;
    let written = FilesBackend::new()
        .build_image(
            &ctx,
            &settings,
            &Platform::linux_arm64(),
            &tmp.path().join("out"),
        )
        .await?;
    let layout = OciLayout::open(tmp.path().join("out"))?;
    let manifest: serde_json::Value = layout.read_json(&written.digest)?;
    let config: serde_json::Value = layout.read_json(&written.config)?;
    insta::assert_snapshot!("files_manifest", serde_json::to_string_pretty(&manifest)?);
    insta::assert_snapshot!("files_config", serde_json::to_string_pretty(&config)?);
    insta::assert_snapshot!("files_manifest_digest", written.digest.to_string());
    Ok(())
}

#[tokio::test]
async fn zstd_layers_on_request() -> Result {
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("d");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("a.txt"), "a".repeat(10_000))?;
    std::fs::write(
        dir.join("hephy.toml"),
        "[build.files]\ncompression = \"zstd:5\"\n",
    )?;
    let ctx = BuildContext::open(&dir)?;
    let settings: hephy_backends::files::FilesSettings =
        ctx.config().build.backend_settings("files")?;
    let written = FilesBackend::new()
        .build_image(
            &ctx,
            &settings,
            &Platform::linux_amd64(),
            &tmp.path().join("out"),
        )
        .await?;
    assert_eq!(written.new_layers.len(), 1);
    let layer = &written.new_layers[0];
    assert_eq!(
        layer.media_type.to_string(),
        "application/vnd.oci.image.layer.v1.tar+zstd"
    );
    let blob = std::fs::read(OciLayout::open(tmp.path().join("out"))?.blob_path(&layer.digest))?;
    let tar_bytes = zstd::decode_all(&blob[..])?;
    let mut names = Vec::new();
    for e in tar::Archive::new(&tar_bytes[..]).entries()? {
        names.push(e?.path()?.to_string_lossy().into_owned());
    }
    assert_eq!(names, ["app/", "app/a.txt"]);

    let bad = AppConfig::from_toml("hephy.toml", "[build.files]\ncompression = \"lz4\"\n")?;
    let err = bad
        .build
        .backend_settings::<hephy_backends::files::FilesSettings>("files")
        .err()
        .ok_or("lz4 accepted")?;
    assert!(
        err.to_string().contains("invalid compression \"lz4\""),
        "{err}"
    );
    Ok(())
}

#[tokio::test]
async fn a_symlink_out_of_the_context_fails_the_build() -> Result {
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("d");
    std::fs::create_dir_all(&dir)?;
    std::os::unix::fs::symlink("../../secret", dir.join("leak"))?;
    let ctx = BuildContext::new(&dir, AppConfig::default());
    let target = hephy_core::BuildTarget::new(Platform::linux_amd64(), tmp.path().join("out"));
    let err = FilesBackend::new()
        .build(&ctx, &target, &Events::discard())
        .await
        .err()
        .ok_or("an escaping symlink was shipped")?;
    assert!(
        matches!(err, hephy_core::BuildError::InvalidContext { .. }),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .contains("symlink leak points to \"../../secret\", outside the build context"),
        "{err}"
    );
    Ok(())
}
