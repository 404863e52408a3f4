//! OciLayout, plus the helpers the image tests share (umoci, free ports, HTTP).

use hephy_oci::layout::{LayoutError, OciLayout, REF_NAME};
use oci_spec::image::{Descriptor, MediaType};

type Result<T = (), E = Box<dyn std::error::Error + Send + Sync>> = std::result::Result<T, E>;

#[test]
fn create_write_read_and_name_manifests() -> Result {
    let tmp = tempfile::tempdir()?;
    let layout = OciLayout::create(tmp.path().join("l"))?;
    assert_eq!(
        std::fs::read_to_string(tmp.path().join("l/oci-layout"))?,
        r#"{"imageLayoutVersion":"1.0.0"}"#
    );
    let d1 = layout.write_json(MediaType::ImageConfig, &serde_json::json!({"b": 1, "a": 2}))?;
    // Canonical JSON: keys sorted, compact.
    let digest: hephy_core::Digest = d1.digest().to_string().parse()?;
    assert_eq!(
        std::fs::read(layout.blob_path(&digest))?,
        br#"{"a":2,"b":1}"#
    );
    let back: serde_json::Value = layout.read_json(&digest)?;
    assert_eq!(back["a"], 2);

    layout.add_manifest(&d1, Some("v1"))?;
    let d2 = Descriptor::new(
        MediaType::ImageManifest,
        3,
        layout
            .write_blob(b"abc")?
            .0
            .to_string()
            .parse::<oci_spec::image::Digest>()?,
    );
    layout.add_manifest(&d2, Some("v1"))?;
    layout.add_manifest(&d1, Some("v2"))?;
    let index = OciLayout::open(tmp.path().join("l"))?.index()?;
    assert_eq!(
        index.manifests().len(),
        2,
        "a name points at one image: {index:?}"
    );
    let v1 = layout.resolve("v1")?.ok_or("v1 missing")?;
    assert_eq!(v1.digest(), d2.digest());
    assert_eq!(
        v1.annotations()
            .as_ref()
            .and_then(|a| a.get(REF_NAME))
            .map(String::as_str),
        Some("v1")
    );
    Ok(())
}

#[test]
fn open_refuses_a_plain_directory() -> Result {
    let tmp = tempfile::tempdir()?;
    let err = OciLayout::open(tmp.path())
        .err()
        .ok_or("opened a plain directory")?;
    assert!(matches!(err, LayoutError::NotALayout { .. }));
    assert!(
        err.to_string().contains("is not an OCI image layout"),
        "{err}"
    );
    // A backend's build() can use `?` on it; the message stays, and so does the error.
    let message = err.to_string();
    let build: hephy_core::BuildError = err.into();
    assert_eq!(build.to_string(), message);
    let source = std::error::Error::source(&build).ok_or("the layout error was dropped")?;
    assert!(source.downcast_ref::<LayoutError>().is_some(), "{source:?}");
    Ok(())
}

#[test]
fn copy_blob_skips_present_blobs() -> Result {
    let tmp = tempfile::tempdir()?;
    let a = OciLayout::create(tmp.path().join("a"))?;
    let b = OciLayout::create(tmp.path().join("b"))?;
    let (d, _) = a.write_blob(b"layer bytes")?;
    assert!(b.copy_blob_from(&a, &d)?, "first copy copies");
    assert!(!b.copy_blob_from(&a, &d)?, "second copy skips");
    assert_eq!(std::fs::read(b.blob_path(&d))?, b"layer bytes");
    Ok(())
}
