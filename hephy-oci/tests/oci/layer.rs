//! Deterministic layers, symlink checks and layer splitting.

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

use hephy_oci::layer::{
    plan_layers, scan_dir, write_layer, Compression, LayerError, LayerOptions, SplitOptions,
};
use hephy_oci::layout::OciLayout;
use sha2::Digest as _;

type Result<T = (), E = Box<dyn std::error::Error + Send + Sync>> = std::result::Result<T, E>;

fn tree(root: &Path) -> Result {
    std::fs::create_dir_all(root.join("bin"))?;
    std::fs::create_dir_all(root.join("share/doc"))?;
    std::fs::write(root.join("bin/run"), "#!/bin/sh\necho hi\n")?;
    std::fs::set_permissions(root.join("bin/run"), std::fs::Permissions::from_mode(0o700))?;
    std::fs::write(root.join("share/doc/README"), "read me\n")?;
    std::fs::set_permissions(
        root.join("share/doc/README"),
        std::fs::Permissions::from_mode(0o600),
    )?;
    std::os::unix::fs::symlink("doc/README", root.join("share/readme"))?;
    Ok(())
}

fn no_skip(_: &str) -> bool {
    false
}

#[test]
fn same_tree_gives_the_same_bytes_whatever_the_file_times() -> Result {
    let tmp = tempfile::tempdir()?;
    for c in [Compression::GzipFast, Compression::Zstd { level: 3 }] {
        let opts =
            LayerOptions::at(UNIX_EPOCH + Duration::from_secs(1_700_000_000)).with_compression(c);
        let a = tmp.path().join(format!("a{c:?}"));
        tree(&a)?;
        let la = OciLayout::create(tmp.path().join(format!("la{c:?}")))?;
        let first = write_layer(&la, &scan_dir(&a, "", &no_skip)?, &opts)?;
        std::thread::sleep(Duration::from_millis(1100));
        let b = tmp.path().join(format!("b{c:?}"));
        tree(&b)?;
        let lb = OciLayout::create(tmp.path().join(format!("lb{c:?}")))?;
        let second = write_layer(&lb, &scan_dir(&b, "", &no_skip)?, &opts)?;
        assert_eq!(first.digest, second.digest, "{c:?}: same tree, same digest");
        assert_eq!(first.diff_id, second.diff_id);

        // The digest and diff_id are the sha256 of the blob and of the uncompressed tar.
        let blob = std::fs::read(la.blob_path(&first.digest))?;
        assert_eq!(
            format!("sha256:{}", hex::encode(sha2::Sha256::digest(&blob))),
            first.digest.to_string()
        );
        let mut tar_bytes = Vec::new();
        match c {
            Compression::Zstd { .. } => {
                zstd::Decoder::new(&blob[..])?.read_to_end(&mut tar_bytes)?;
            }
            _ => {
                flate2::read::GzDecoder::new(&blob[..]).read_to_end(&mut tar_bytes)?;
            }
        }
        assert_eq!(
            format!("sha256:{}", hex::encode(sha2::Sha256::digest(&tar_bytes))),
            first.diff_id.to_string()
        );
        assert_eq!(first.uncompressed_size, tar_bytes.len() as u64);

        // Entries: sorted, normalized modes, fixed owner and time, link kept.
        let mut archive = tar::Archive::new(&tar_bytes[..]);
        let mut seen = Vec::new();
        for e in archive.entries()? {
            let e = e?;
            let h = e.header();
            assert_eq!((h.uid()?, h.gid()?), (0, 0));
            assert_eq!(h.mtime()?, 1_700_000_000);
            assert_eq!(h.username()?, Some(""));
            seen.push((
                e.path()?.to_string_lossy().into_owned(),
                h.mode()? & 0o7777,
                h.entry_type(),
            ));
        }
        let names: Vec<&str> = seen.iter().map(|s| s.0.as_str()).collect();
        assert_eq!(
            names,
            [
                "bin/",
                "bin/run",
                "share/",
                "share/doc/",
                "share/doc/README",
                "share/readme"
            ]
        );
        assert_eq!(seen[1].1, 0o755, "executable keeps its exec bit as 0755");
        assert_eq!(seen[4].1, 0o644, "0600 becomes 0644");
        assert_eq!(seen[0].1, 0o755);
        assert!(seen[5].2.is_symlink());
    }
    Ok(())
}

#[test]
fn symlinks_out_of_the_context_are_refused() -> Result {
    let tmp = tempfile::tempdir()?;
    let root = tmp.path().join("ctx");
    std::fs::create_dir_all(root.join("a/b"))?;
    std::os::unix::fs::symlink("../../../etc/passwd", root.join("a/b/escape"))?;
    let err = scan_dir(&root, "", &no_skip)
        .err()
        .ok_or("an escaping symlink was accepted")?;
    assert!(matches!(err, LayerError::SymlinkEscapes { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("a/b/escape") && msg.contains("outside the build context"),
        "{msg}"
    );

    std::fs::remove_file(root.join("a/b/escape"))?;
    std::os::unix::fs::symlink("/etc/passwd", root.join("a/abs"))?;
    assert!(matches!(
        scan_dir(&root, "", &no_skip),
        Err(LayerError::SymlinkEscapes { .. })
    ));

    std::fs::remove_file(root.join("a/abs"))?;
    std::os::unix::fs::symlink("../../a", root.join("a/b/up"))?;
    assert_eq!(
        scan_dir(&root, "", &no_skip)?.len(),
        3,
        "a link that stays inside is kept"
    );
    Ok(())
}

#[test]
fn changing_one_file_changes_one_small_layer() -> Result {
    let tmp = tempfile::tempdir()?;
    let root = tmp.path().join("ctx");
    for d in 0..8 {
        std::fs::create_dir_all(root.join(format!("d{d}")))?;
        for f in 0..40 {
            let body: Vec<u8> = (0..20_000u32)
                .map(|i| ((i * 7 + f * 13 + d) % 251) as u8)
                .collect();
            std::fs::write(root.join(format!("d{d}/f{f}.bin")), body)?;
        }
    }
    let split = SplitOptions::with_target(512 * 1024);
    let opts = LayerOptions::default();
    let write_all = |layout: &OciLayout| -> Result<Vec<(hephy_core::Digest, u64)>> {
        let plan = plan_layers(scan_dir(&root, "", &no_skip)?, &split);
        plan.iter()
            .map(|entries| Ok(write_layer(layout, entries, &opts).map(|l| (l.digest, l.size))?))
            .collect()
    };
    let before = write_all(&OciLayout::create(tmp.path().join("one"))?)?;
    assert!(
        before.len() >= 8,
        "6.4 MB at 512 KiB a layer gives several layers: {}",
        before.len()
    );
    std::fs::write(root.join("d3/f17.bin"), b"changed")?;
    let after = write_all(&OciLayout::create(tmp.path().join("two"))?)?;
    assert_eq!(before.len(), after.len());
    let changed: Vec<_> = after.iter().filter(|l| !before.contains(l)).collect();
    assert_eq!(changed.len(), 1, "one file changed, one layer changed");
    let total: u64 = after.iter().map(|l| l.1).sum();
    assert!(
        changed[0].1 * 4 < total,
        "the changed layer is a small part of the image"
    );
    Ok(())
}

#[test]
fn long_names_and_link_targets_survive() -> Result {
    let tmp = tempfile::tempdir()?;
    let root = tmp.path().join("ctx");
    let deep = (0..6)
        .map(|i| format!("directory-with-a-long-name-{i}"))
        .collect::<Vec<_>>()
        .join("/");
    std::fs::create_dir_all(root.join(&deep))?;
    std::fs::write(root.join(&deep).join("file-with-a-long-name.txt"), "deep\n")?;
    std::os::unix::fs::symlink(
        format!("{deep}/file-with-a-long-name.txt"),
        root.join("link"),
    )?;
    let layout = OciLayout::create(tmp.path().join("l"))?;
    let layer = write_layer(
        &layout,
        &scan_dir(&root, "", &no_skip)?,
        &LayerOptions::default(),
    )?;
    let blob = std::fs::read(layout.blob_path(&layer.digest))?;
    let mut tar_bytes = Vec::new();
    flate2::read::GzDecoder::new(&blob[..]).read_to_end(&mut tar_bytes)?;
    let mut found = (false, false);
    for e in tar::Archive::new(&tar_bytes[..]).entries()? {
        let mut e = e?;
        let path = e.path()?.to_string_lossy().into_owned();
        if path == format!("{deep}/file-with-a-long-name.txt") {
            let mut s = String::new();
            e.read_to_string(&mut s)?;
            assert_eq!(s, "deep\n");
            found.0 = true;
        }
        if path == "link" {
            let target = e
                .link_name()?
                .ok_or("no link target")?
                .to_string_lossy()
                .into_owned();
            assert_eq!(target, format!("{deep}/file-with-a-long-name.txt"));
            found.1 = true;
        }
    }
    assert_eq!(
        found,
        (true, true),
        "the long path and the long link are in the layer"
    );
    Ok(())
}

fn peak_rss_kib() -> Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .ok_or("no VmHWM")?;
    Ok(line.split_whitespace().nth(1).ok_or("bad VmHWM")?.parse()?)
}

/// A 256 MiB file goes through tar, gzip and both hashes without the process growing by more
/// than a small fraction of it: the layer streams from disk to disk.
#[test]
fn memory_does_not_grow_with_the_layer() -> Result {
    let tmp = tempfile::tempdir()?;
    let root = tmp.path().join("ctx");
    std::fs::create_dir_all(&root)?;
    // Sparse: costs no disk, reads as zeros.
    std::fs::File::create(root.join("big.bin"))?.set_len(256 << 20)?;
    // Reset the peak so earlier tests in this process do not count.
    std::fs::write("/proc/self/clear_refs", "5")?;
    let before = peak_rss_kib()?;
    let layout = OciLayout::create(tmp.path().join("l"))?;
    let layer = write_layer(
        &layout,
        &scan_dir(&root, "", &no_skip)?,
        &LayerOptions::default(),
    )?;
    let grown = peak_rss_kib()?.saturating_sub(before);
    assert!(layer.uncompressed_size > 256 << 20);
    assert!(
        grown < 64 * 1024,
        "writing a 256 MiB layer grew the process by {grown} KiB"
    );
    Ok(())
}
