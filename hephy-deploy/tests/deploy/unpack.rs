//! Images to root filesystems: layouts published by hephy-backends, layers made by hand.

use std::io::Write;
use std::path::Path;

use hephy_core::Platform;
use hephy_deploy::runc::{
    prepare_mount_points, resolve_user, runtime_spec, CgroupSupport, IdRange, SpecInput,
};
use hephy_deploy::unpack::{apply_layer, resolve, unpack_rootfs, UnpackError};

use crate::support::*;

#[test]
fn published_images_unpack_to_a_rootfs() -> Result {
    let f = fixture()?;
    let layout = f.root.join("hephy.local").join(REPOSITORY);
    let digest = f.one.digest().ok_or("unpinned")?;
    let image = resolve(&layout, digest, &Platform::host())?;
    let entrypoint = image
        .config
        .config()
        .as_ref()
        .and_then(|c| c.entrypoint().clone())
        .ok_or("no entrypoint")?;
    let cache = tempfile::tempdir()?;
    let rootfs = unpack_rootfs(&image, cache.path())?;
    let binary = rootfs.join(entrypoint[0].trim_start_matches('/'));
    assert!(binary.is_file(), "{} is missing", binary.display());
    assert!(rootfs.join("etc/passwd").is_file());
    // Cached: a second unpack returns the same directory without redoing it.
    std::fs::write(rootfs.join("marker"), "")?;
    assert_eq!(unpack_rootfs(&image, cache.path())?, rootfs);
    assert!(rootfs.join("marker").exists());

    // A damaged blob is found by its digest.
    let layer = image.layers.last().ok_or("no layers")?;
    let damaged = tempfile::tempdir()?;
    copy_dir(&layout, damaged.path())?;
    let blob =
        hephy_deploy::unpack::blob_path(damaged.path(), &layer.digest().to_string().parse()?);
    let mut bytes = std::fs::read(&blob)?;
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&blob, bytes)?;
    let image = resolve(damaged.path(), digest, &Platform::host())?;
    let err = unpack_rootfs(&image, tempfile::tempdir()?.path())
        .err()
        .ok_or("unpacked a damaged blob")?;
    assert!(err.to_string().contains("publish the image again"), "{err}");

    let err = resolve(&f.root.join("nowhere"), digest, &Platform::host())
        .err()
        .ok_or("resolved nothing")?;
    assert!(matches!(err, UnpackError::NoLayout { .. }), "{err}");
    Ok(())
}

fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        let dst = to.join(e.file_name());
        if e.file_type()?.is_dir() {
            copy_dir(&e.path(), &dst)?;
        } else {
            std::fs::copy(e.path(), dst)?;
        }
    }
    Ok(())
}

fn tar_layer(
    build: impl FnOnce(&mut tar::Builder<Vec<u8>>) -> std::io::Result<()>,
) -> Result<Vec<u8>> {
    let mut b = tar::Builder::new(vec![]);
    build(&mut b)?;
    Ok(b.into_inner()?)
}

fn file(b: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8]) -> std::io::Result<()> {
    let mut h = tar::Header::new_gnu();
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_entry_type(tar::EntryType::Regular);
    b.append_data(&mut h, path, data)
}

fn symlink(b: &mut tar::Builder<Vec<u8>>, path: &str, target: &str) -> std::io::Result<()> {
    let mut h = tar::Header::new_gnu();
    h.set_size(0);
    h.set_mode(0o777);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_entry_type(tar::EntryType::Symlink);
    b.append_link(&mut h, path, target)
}

#[test]
fn layers_cannot_write_outside_the_root() -> Result {
    let outside = tempfile::tempdir()?;
    let root = tempfile::tempdir()?;
    let target = outside.path().to_str().ok_or("path")?.to_owned();
    // Layer 1: a symlink to an absolute host path; layer 2 writes through it.
    let l1 = tar_layer(|b| symlink(b, "escape", &target))?;
    let l2 = tar_layer(|b| file(b, "escape/owned.txt", b"gotcha"))?;
    apply_layer(root.path(), &l1[..], "l1")?;
    apply_layer(root.path(), &l2[..], "l2")?;
    assert!(
        !outside.path().join("owned.txt").exists(),
        "wrote outside the root"
    );
    let inside = root
        .path()
        .join(target.trim_start_matches('/'))
        .join("owned.txt");
    assert_eq!(std::fs::read(inside)?, b"gotcha");

    // A relative link climbing above the root stops at the root.
    let l3 = tar_layer(|b| {
        symlink(b, "up", "../../../../..")?;
        file(b, "up/top.txt", b"top")
    })?;
    apply_layer(root.path(), &l3[..], "l3")?;
    assert!(root.path().join("top.txt").is_file());

    // A `..` path is refused with the entry named.
    let mut raw = tar_layer(|b| file(b, "placeholder/x.txt", b"x"))?;
    let name = b"../../evil.txt\0";
    raw[..name.len()].copy_from_slice(name);
    fix_checksum(&mut raw[..512]);
    let err = apply_layer(root.path(), &raw[..], "l4")
        .err()
        .ok_or("accepted ..")?;
    assert!(matches!(err, UnpackError::BadEntry { .. }), "{err}");
    assert!(err.to_string().contains("../../evil.txt"), "{err}");
    Ok(())
}

fn fix_checksum(header: &mut [u8]) {
    header[148..156].fill(b' ');
    let sum: u32 = header.iter().map(|&b| u32::from(b)).sum();
    let text = format!("{sum:06o}\0 ");
    header[148..156].copy_from_slice(text.as_bytes());
}

#[test]
fn gzip_and_zstd_layers_and_whiteouts_by_hand() -> Result {
    let root = tempfile::tempdir()?;
    let base = tar_layer(|b| {
        file(b, "dir/a.txt", b"a")?;
        file(b, "dir/b.txt", b"b")?;
        file(b, "keep.txt", b"keep")
    })?;
    let mut gz = flate2::write::GzEncoder::new(vec![], flate2::Compression::fast());
    gz.write_all(&base)?;
    apply_layer(root.path(), &gz.finish()?[..], "gzip")?;
    assert_eq!(std::fs::read(root.path().join("dir/a.txt"))?, b"a");

    // Opaque dir with a new file in the same layer (before and after the marker), plus a
    // whiteout of a single file.
    let upper = tar_layer(|b| {
        file(b, "dir/c.txt", b"c")?;
        file(b, "dir/.wh..wh..opq", b"")?;
        file(b, "dir/d.txt", b"d")?;
        file(b, ".wh.keep.txt", b"")
    })?;
    let zst = zstd::encode_all(&upper[..], 3)?;
    apply_layer(root.path(), &zst[..], "zstd")?;
    let mut names: Vec<String> = std::fs::read_dir(root.path().join("dir"))?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<std::io::Result<_>>()?;
    names.sort();
    assert_eq!(names, ["c.txt", "d.txt"]);
    assert!(!root.path().join("keep.txt").exists());
    assert!(!root.path().join(".wh.keep.txt").exists());
    Ok(())
}

#[test]
fn runtime_spec_follows_the_image_and_release() -> Result {
    let f = fixture()?;
    let layout = f.root.join("hephy.local").join(REPOSITORY);
    let image = resolve(
        &layout,
        f.one.digest().ok_or("unpinned")?,
        &Platform::host(),
    )?;
    let cache = tempfile::tempdir()?;
    let rootfs = unpack_rootfs(&image, cache.path())?;
    assert_eq!(resolve_user(&rootfs, "app")?, (65532, 65532));
    assert_eq!(resolve_user(&rootfs, "1000")?, (1000, 0));
    assert_eq!(resolve_user(&rootfs, "app:0")?, (65532, 0));
    let err = resolve_user(&rootfs, "nobody")
        .err()
        .ok_or("resolved an unknown user")?;
    assert!(
        err.to_string().contains("not in the image's /etc/passwd"),
        "{err}"
    );

    let mut vars = hephy_core::ConfigVars::default();
    vars.set("GREETING", "there")?;
    let mut resources = hephy_core::Resources::default();
    resources.memory = Some(256 << 20);
    resources.cpus = Some(0.5);
    let etc = tempfile::tempdir()?;
    for name in hephy_deploy::runc::ETC_FILES {
        std::fs::write(etc.path().join(name), "")?;
    }
    let ids = IdRange {
        host_first: 1_000_000_000,
        size: 65536,
    };
    let input = SpecInput {
        rootfs: &rootfs,
        hostname: "hello",
        config: &vars,
        port: 4321,
        extra_env: vec![],
        resources: &resources,
        cgroups: CgroupSupport {
            memory: false,
            cpu: true,
            pids: true,
        },
        ids: Some(ids),
        etc: Some(etc.path()),
    };
    let spec = runtime_spec(&image.config, &input)?;
    let json = serde_json::to_value(&spec.spec)?;
    let env: Vec<&str> = json["process"]["env"]
        .as_array()
        .ok_or("no env")?
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert!(
        env.contains(&"GREETING=there"),
        "config vars override the image: {env:?}"
    );
    assert!(
        env.contains(&"PORT=4321"),
        "PORT overrides the image's: {env:?}"
    );
    assert_eq!(
        env.iter().filter(|e| e.starts_with("PORT=")).count(),
        1,
        "{env:?}"
    );
    let entrypoint = image
        .config
        .config()
        .as_ref()
        .and_then(|c| c.entrypoint().clone());
    assert_eq!(json["process"]["args"], serde_json::json!(entrypoint));
    assert_eq!(json["process"]["user"]["uid"], 65532);
    assert_eq!(json["process"]["noNewPrivileges"], true);
    assert_eq!(
        json["process"]["capabilities"]["bounding"],
        serde_json::json!([])
    );
    assert_eq!(json["root"]["readonly"], true);
    assert_eq!(json["root"]["path"], rootfs.to_str().ok_or("path")?);
    let namespaces: Vec<&str> = json["linux"]["namespaces"]
        .as_array()
        .ok_or("no namespaces")?
        .iter()
        .filter_map(|n| n["type"].as_str())
        .collect();
    for ns in ["network", "user", "pid", "mount"] {
        assert!(namespaces.contains(&ns), "{namespaces:?}");
    }
    let map = serde_json::json!([{"containerID": 0, "hostID": 1_000_000_000u32, "size": 65536}]);
    assert_eq!(json["linux"]["uidMappings"], map);
    assert_eq!(json["linux"]["gidMappings"], map);
    let seccomp = &json["linux"]["seccomp"];
    assert_eq!(seccomp["defaultAction"], "SCMP_ACT_ERRNO");
    let allowed: Vec<&str> = seccomp["syscalls"][0]["names"]
        .as_array()
        .ok_or("no allowed syscalls")?
        .iter()
        .filter_map(|n| n.as_str())
        .collect();
    assert!(allowed.contains(&"read") && allowed.contains(&"epoll_pwait"));
    for refused in ["unshare", "mount", "setns", "bpf", "keyctl"] {
        assert!(!allowed.contains(&refused), "{refused} is allowed");
    }
    assert_eq!(json["linux"]["resources"]["pids"]["limit"], 1024);
    let mounts = json["mounts"].as_array().ok_or("no mounts")?;
    for name in hephy_deploy::runc::ETC_FILES {
        let m = mounts
            .iter()
            .find(|m| m["destination"] == format!("/etc/{name}"))
            .ok_or(format!("no /etc/{name} mount"))?;
        assert_eq!(m["source"], etc.path().join(name).to_str().ok_or("path")?);
        assert!(m["options"]
            .as_array()
            .is_some_and(|o| o.contains(&"ro".into())));
    }

    // runc cannot make mount points in a root owned by the host's root: they are made first,
    // and /tmp gets the mode the tmpfs over it must have.
    prepare_mount_points(&spec.spec, &rootfs)?;
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(rootfs.join("tmp"))?.permissions().mode() & 0o7777,
        0o1777
    );
    for p in [
        "proc",
        "sys",
        "dev",
        "etc/hosts",
        "etc/hostname",
        "etc/resolv.conf",
    ] {
        assert!(rootfs.join(p).exists(), "{p} is missing");
    }

    let err = runtime_spec(
        &image.config,
        &SpecInput {
            ids: Some(IdRange {
                host_first: 1_000_000_000,
                size: 1000,
            }),
            ..input.clone()
        },
    )
    .err()
    .ok_or("ran uid 65532 in a user namespace of 1000 ids")?;
    assert!(
        err.to_string().contains("use a uid and gid below 1000"),
        "{err}"
    );
    let tmp = json["mounts"]
        .as_array()
        .ok_or("no mounts")?
        .iter()
        .find(|m| m["destination"] == "/tmp")
        .ok_or("no /tmp mount")?;
    assert_eq!(tmp["type"], "tmpfs");
    assert_eq!(json["linux"]["resources"]["cpu"]["quota"], 50000);
    assert!(
        json["linux"]["resources"]["memory"].is_null(),
        "skipped without a memory cgroup"
    );
    assert_eq!(spec.warnings.len(), 1, "{:?}", spec.warnings);
    assert!(
        spec.warnings[0].contains("memory limit"),
        "{:?}",
        spec.warnings
    );
    Ok(())
}

#[test]
fn an_index_resolves_to_the_platform_manifest() -> Result {
    use sha2::Digest as _;

    let f = fixture()?;
    let layout = tempfile::tempdir()?;
    copy_dir(&f.root.join("hephy.local").join(REPOSITORY), layout.path())?;
    let one = f.one.digest().ok_or("unpinned")?;
    let two = f.two.digest().ok_or("unpinned")?;
    let size = |d: &hephy_core::Digest| -> Result<u64> {
        Ok(std::fs::metadata(hephy_deploy::unpack::blob_path(layout.path(), d))?.len())
    };
    // An index that says "one" is the amd64 image and "two" the arm64 one.
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": one.to_string(),
             "size": size(one)?, "platform": {"os": "linux", "architecture": "amd64"}},
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": two.to_string(),
             "size": size(two)?, "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}},
        ]
    });
    let bytes = serde_json::to_vec(&index)?;
    let digest = hephy_core::Digest::sha256(hex::encode(sha2::Sha256::digest(&bytes)))?;
    std::fs::write(
        hephy_deploy::unpack::blob_path(layout.path(), &digest),
        &bytes,
    )?;

    let amd64 = resolve(layout.path(), &digest, &Platform::linux_amd64())?;
    assert_eq!(&amd64.manifest_digest, one);
    let arm64 = resolve(layout.path(), &digest, &"linux/arm64".parse()?)?;
    assert_eq!(&arm64.manifest_digest, two);
    let err = resolve(layout.path(), &digest, &"linux/s390x".parse()?)
        .err()
        .ok_or("resolved a platform the index lacks")?;
    let msg = err.to_string();
    assert!(msg.contains("has no manifest for linux/s390x"), "{msg}");
    assert!(
        msg.contains("(it has: linux/amd64, linux/arm64/v8)"),
        "{msg}"
    );
    Ok(())
}
