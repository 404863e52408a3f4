//! The files backend, unpacked with the real `umoci`.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::sync::Arc;

use hephy_backends::layout::OciLayout;
use hephy_backends::{FilesBackend, OciLayoutPublisher};
use hephy_core::{AppConfig, Backend, BuildContext, Confidence, Events, Job, Pipeline, Platform};

use crate::layout::tools::umoci_unpack;

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
    if crate::layout::tools::is_root() {
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
        .with_base(hephy_backends::base::BaseImage::Scratch);
    let p = Platform::linux_amd64();
    let one = hephy_backends::files::build_dir_image(&dir, &settings, &p, &tmp.path().join("one"))
        .await?;
    let two = hephy_backends::files::build_dir_image(&dir, &settings, &p, &tmp.path().join("two"))
        .await?;
    assert_eq!(one.digest, two.digest);
    assert_eq!(one.manifest.size(), two.manifest.size());
    Ok(())
}
