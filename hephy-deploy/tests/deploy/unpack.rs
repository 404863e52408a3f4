//! Images to root filesystems: layouts published by hephy-backends, layers made by hand.

use std::io::{Read, Write};
use std::path::Path;

use hephy_core::Platform;
use hephy_deploy::runc::{
    prepare_mount_points, resolve_user, runtime_spec, CgroupSupport, IdRange, SpecInput,
};
use hephy_deploy::unpack::{apply_layer, resolve, unpack_rootfs, UnpackError, UnpackLimits};

use crate::support::*;

const LIMITS: UnpackLimits = UnpackLimits::DEFAULT;

#[test]
fn published_images_unpack_to_a_rootfs() -> Result {
    let f = fixture()?;
    let layout = f.root.join("hephy.local").join(REPOSITORY);
    let digest = f.one.digest().ok_or("unpinned")?;
    let image = resolve(&layout, digest, &Platform::host(), &LIMITS)?;
    let entrypoint = image
        .config
        .config()
        .as_ref()
        .and_then(|c| c.entrypoint().clone())
        .ok_or("no entrypoint")?;
    let cache = tempfile::tempdir()?;
    let rootfs = unpack_rootfs(&image, cache.path(), &LIMITS)?;
    let binary = rootfs.join(entrypoint[0].trim_start_matches('/'));
    assert!(binary.is_file(), "{} is missing", binary.display());
    assert!(rootfs.join("etc/passwd").is_file());
    // Cached: a second unpack returns the same directory without redoing it.
    std::fs::write(rootfs.join("marker"), "")?;
    assert_eq!(unpack_rootfs(&image, cache.path(), &LIMITS)?, rootfs);
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
    let image = resolve(damaged.path(), digest, &Platform::host(), &LIMITS)?;
    let err = unpack_rootfs(&image, tempfile::tempdir()?.path(), &LIMITS)
        .err()
        .ok_or("unpacked a damaged blob")?;
    assert!(err.to_string().contains("publish the image again"), "{err}");

    // Limits name themselves and the image.
    let mut limits = UnpackLimits::default();
    limits.max_json_bytes = 100;
    let err = resolve(&layout, digest, &Platform::host(), &limits)
        .err()
        .ok_or("read a manifest over the limit")?;
    assert!(matches!(err, UnpackError::JsonTooLarge { .. }), "{err}");
    assert!(err.to_string().contains("the limit is 100 bytes"), "{err}");
    let image = resolve(&layout, digest, &Platform::host(), &LIMITS)?;
    let mut limits = UnpackLimits::default();
    limits.max_layer_entries = 1;
    let err = unpack_rootfs(&image, tempfile::tempdir()?.path(), &limits)
        .err()
        .ok_or("unpacked a layer over the entry limit")?;
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("of image {}", image.manifest_digest)),
        "{msg}"
    );
    assert!(msg.contains("more than 1 entries, the limit"), "{msg}");

    let err = resolve(&f.root.join("nowhere"), digest, &Platform::host(), &LIMITS)
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
    apply_layer(root.path(), &l1[..], "l1", &LIMITS)?;
    apply_layer(root.path(), &l2[..], "l2", &LIMITS)?;
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
    apply_layer(root.path(), &l3[..], "l3", &LIMITS)?;
    assert!(root.path().join("top.txt").is_file());

    // A `..` path is refused with the entry named.
    let mut raw = tar_layer(|b| file(b, "placeholder/x.txt", b"x"))?;
    let name = b"../../evil.txt\0";
    raw[..name.len()].copy_from_slice(name);
    fix_checksum(&mut raw[..512]);
    let err = apply_layer(root.path(), &raw[..], "l4", &LIMITS)
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
    apply_layer(root.path(), &gz.finish()?[..], "gzip", &LIMITS)?;
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
    apply_layer(root.path(), &zst[..], "zstd", &LIMITS)?;
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
        &LIMITS,
    )?;
    let cache = tempfile::tempdir()?;
    let rootfs = unpack_rootfs(&image, cache.path(), &LIMITS)?;
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

    let amd64 = resolve(layout.path(), &digest, &Platform::linux_amd64(), &LIMITS)?;
    assert_eq!(&amd64.manifest_digest, one);
    let arm64 = resolve(layout.path(), &digest, &"linux/arm64".parse()?, &LIMITS)?;
    assert_eq!(&arm64.manifest_digest, two);
    let err = resolve(layout.path(), &digest, &"linux/s390x".parse()?, &LIMITS)
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

/// A root filesystem dir beside host files a hostile layer would like to reach: `outside/`
/// with a secret, and the parent dir itself. [`Scene::check_outside`] fails if anything but
/// `rootfs/` changed.
struct Scene {
    dir: tempfile::TempDir,
    before: Vec<String>,
}

impl Scene {
    fn new() -> Result<Scene> {
        let dir = tempfile::tempdir()?;
        std::fs::create_dir_all(dir.path().join("rootfs/etc"))?;
        std::fs::create_dir_all(dir.path().join("outside/etc"))?;
        std::fs::write(dir.path().join("outside/secret.txt"), "secret")?;
        std::fs::write(
            dir.path().join("outside/etc/passwd"),
            "root:x:0:0::/:/bin/sh\n",
        )?;
        std::fs::write(dir.path().join("beside.txt"), "beside")?;
        let before = listing(dir.path())?;
        Ok(Scene { dir, before })
    }

    fn root(&self) -> std::path::PathBuf {
        self.dir.path().join("rootfs")
    }

    fn outside(&self) -> std::path::PathBuf {
        self.dir.path().join("outside")
    }

    fn apply(&self, layer: &[u8], limits: &UnpackLimits) -> Result<(), UnpackError> {
        apply_layer(&self.root(), layer, "hostile", limits)
    }

    /// The refusal of `layer`, checked to leave everything outside `rootfs/` as it was.
    fn refusal(&self, layer: &[u8], limits: &UnpackLimits) -> Result<UnpackError> {
        let err = self
            .apply(layer, limits)
            .err()
            .ok_or("the hostile layer was applied")?;
        self.check_outside()?;
        Ok(err)
    }

    fn check_outside(&self) -> Result {
        assert!(self.root().is_dir(), "the root filesystem dir is gone");
        assert_eq!(
            listing(self.dir.path())?,
            self.before,
            "something outside rootfs/ changed"
        );
        Ok(())
    }
}

/// Every path under `dir` but `rootfs/`, with its type, link count and content.
fn listing(dir: &Path) -> Result<Vec<String>> {
    use std::os::unix::fs::MetadataExt;
    let mut out = vec![];
    let mut pending = vec![dir.to_owned()];
    while let Some(d) = pending.pop() {
        for e in std::fs::read_dir(&d)? {
            let path = e?.path();
            let rel = path.strip_prefix(dir)?.display().to_string();
            if rel == "rootfs" {
                continue;
            }
            let meta = std::fs::symlink_metadata(&path)?;
            let what = if meta.is_dir() {
                pending.push(path.clone());
                "dir".to_owned()
            } else if meta.file_type().is_symlink() {
                format!("-> {}", std::fs::read_link(&path)?.display())
            } else {
                format!("{:?}", std::fs::read_to_string(&path)?)
            };
            out.push(format!("{rel} ({} links) {what}", meta.nlink()));
        }
    }
    out.sort();
    Ok(out)
}

/// A pax header of about `size` bytes (one `comment` record) for the entry after it.
fn pax_comment<W: Write>(b: &mut tar::Builder<W>, size: usize) -> std::io::Result<()> {
    let record = format!(" comment={}\n", "v".repeat(size));
    // The record's length counts its own digits.
    let mut len = record.len();
    len += (len + len.to_string().len()).to_string().len();
    let pax = format!("{len}{record}");
    let mut h = tar::Header::new_ustar();
    h.set_path("PaxHeaders/entry")?;
    h.set_size(pax.len() as u64);
    h.set_mode(0o644);
    h.set_entry_type(tar::EntryType::XHeader);
    h.set_cksum();
    b.append(&h, pax.as_bytes())
}

fn hard_link(b: &mut tar::Builder<Vec<u8>>, path: &str, target: &str) -> std::io::Result<()> {
    let mut h = tar::Header::new_gnu();
    h.set_size(0);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_entry_type(tar::EntryType::Link);
    b.append_link(&mut h, path, target)
}

#[test]
fn whiteouts_stay_in_their_directory() -> Result {
    let scene = Scene::new()?;
    std::fs::write(scene.root().join("etc/keep"), "keep")?;
    let mut messages = vec![];
    for name in [
        ".wh...",
        ".wh..",
        ".wh.",
        "etc/.wh...",
        ".wh.../x",
        "etc/.wh.x/y",
    ] {
        let layer = tar_layer(|b| file(b, name, b""))?;
        let err = scene.refusal(&layer, &LIMITS)?;
        assert!(matches!(err, UnpackError::BadEntry { .. }), "{name}: {err}");
        assert!(scene.root().join("etc/keep").is_file(), "{name}");
        messages.push(err.to_string());
    }
    insta::assert_snapshot!("whiteout_refusals", messages.join("\n"));

    // Whiteouts that name one file still work, through a symlinked directory too (and content,
    // which a whiteout should not have, is read past rather than taken for tar headers).
    let layer = tar_layer(|b| {
        symlink(b, "conf", "/etc")?;
        file(b, "conf/.wh.keep", &vec![0; 2 << 20])?;
        file(b, "after", b"after")
    })?;
    scene.apply(&layer, &LIMITS)?;
    assert!(!scene.root().join("etc/keep").exists());
    assert!(scene.root().join("after").is_file());
    scene.check_outside()
}

#[test]
fn links_in_a_layer_cannot_reach_outside_the_root() -> Result {
    let scene = Scene::new()?;
    let outside = scene.outside().to_str().ok_or("path")?.to_owned();
    // In one layer: a symlink to the host's root, then writes through it; a symlink to the
    // host's secret, then a file in its place; a relative climb.
    let layer = tar_layer(|b| {
        symlink(b, "a", "/")?;
        file(b, "a/etc/x", b"x")?;
        file(b, &format!("a{outside}/secret.txt"), b"overwritten")?;
        symlink(b, "up", "../../../..")?;
        file(b, "up/etc/passwd", b"root:x:0:0::/root:/bin/sh\n")?;
        symlink(b, "secret", &format!("{outside}/secret.txt"))?;
        file(b, "secret", b"replaced")
    })?;
    scene.apply(&layer, &LIMITS)?;
    scene.check_outside()?;
    assert_eq!(std::fs::read(scene.root().join("etc/x"))?, b"x");
    let inner_secret = scene
        .root()
        .join(outside.trim_start_matches('/'))
        .join("secret.txt");
    assert_eq!(std::fs::read(inner_secret)?, b"overwritten");
    assert!(scene.root().join("etc/passwd").is_file());
    let secret = std::fs::symlink_metadata(scene.root().join("secret"))?;
    assert!(
        secret.is_file(),
        "the symlink was replaced, not written through"
    );

    // Hard links: a `..` climb is refused by name; an absolute target or one through a
    // symlink resolves inside the root, where the host file is not.
    let refusals = [
        (
            "../outside/secret.txt",
            "its hard link target leaves the root filesystem",
        ),
        (&format!("{outside}/etc/passwd") as &str, "cannot link"),
        (&format!("a{outside}/etc/passwd"), "cannot link"),
    ];
    for (target, want) in refusals {
        let layer = tar_layer(|b| hard_link(b, "stolen", target))?;
        let err = scene.refusal(&layer, &LIMITS)?;
        assert!(err.to_string().contains(want), "{target}: {err}");
        assert!(!scene.root().join("stolen").exists(), "{target}");
    }
    // A hard link to a symlink links the symlink itself, which stays inside the root.
    let layer = tar_layer(|b| {
        symlink(b, "host-secret", &format!("{outside}/secret.txt"))?;
        hard_link(b, "linked", "host-secret")
    })?;
    scene.apply(&layer, &LIMITS)?;
    let linked = std::fs::symlink_metadata(scene.root().join("linked"))?;
    assert!(linked.file_type().is_symlink(), "{linked:?}");
    scene.check_outside()
}

#[test]
fn a_gzip_bomb_stops_at_the_size_limit() -> Result {
    let scene = Scene::new()?;
    // 64 MiB of zeros that gzip packs into well under 1% of that.
    let gz = flate2::write::GzEncoder::new(vec![], flate2::Compression::best());
    let mut b = tar::Builder::new(gz);
    let mut h = tar::Header::new_gnu();
    h.set_size(64 << 20);
    h.set_mode(0o644);
    h.set_mtime(0);
    b.append_data(&mut h, "zeros", std::io::repeat(0).take(64 << 20))?;
    let bomb = b.into_inner()?.finish()?;
    assert!(bomb.len() < 256 << 10, "the bomb is {} bytes", bomb.len());

    let mut limits = UnpackLimits::default();
    limits.max_layer_bytes = 16 << 20;
    let err = scene.refusal(&bomb, &limits)?;
    assert!(matches!(err, UnpackError::LayerTooLarge { .. }), "{err}");
    insta::assert_snapshot!("gzip_bomb", err);
    let written = std::fs::metadata(scene.root().join("zeros")).map_or(0, |m| m.len());
    assert!(written <= 16 << 20, "wrote {written} bytes");

    // Tar headers count too: empty files, each behind a pax record of 512 KiB.
    let gz = flate2::write::GzEncoder::new(vec![], flate2::Compression::best());
    let mut b = tar::Builder::new(gz);
    for i in 0..40 {
        pax_comment(&mut b, 512 << 10)?;
        let mut h = tar::Header::new_gnu();
        h.set_size(0);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        b.append_data(&mut h, format!("empty{i}"), &[][..])?;
    }
    let headers = b.into_inner()?.finish()?;
    let err = scene.refusal(&headers, &limits)?;
    assert!(matches!(err, UnpackError::LayerTooLarge { .. }), "{err}");

    // A sparse file is counted at its full size, not at what the tar holds.
    let octal = |n: u64| -> Result<[u8; 12]> { Ok(format!("{n:011o}\0").as_bytes().try_into()?) };
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::GNUSparse);
    h.set_size(0);
    h.set_mode(0o644);
    h.set_mtime(0);
    let gnu = h.as_gnu_mut().ok_or("not a GNU header")?;
    // One empty block at 1 GiB: a 1 GiB file of nothing but a hole.
    gnu.sparse[0].offset = octal(1 << 30)?;
    gnu.sparse[0].numbytes = octal(0)?;
    gnu.realsize = octal(1 << 30)?;
    let sparse = tar_layer(|b| b.append_data(&mut h, "sparse", &[][..]))?;
    let err = scene.refusal(&sparse, &limits)?;
    assert!(matches!(err, UnpackError::LayerTooLarge { .. }), "{err}");
    Ok(())
}

#[test]
fn entry_count_and_header_size_are_capped() -> Result {
    let scene = Scene::new()?;
    let mut limits = UnpackLimits::default();
    limits.max_layer_entries = 100;
    let many = tar_layer(|b| (0..101).try_for_each(|i| file(b, &format!("f{i}"), b"")))?;
    let err = scene.refusal(&many, &limits)?;
    assert!(matches!(err, UnpackError::TooManyEntries { .. }), "{err}");
    insta::assert_snapshot!("too_many_entries", err);
    let enough = tar_layer(|b| (0..100).try_for_each(|i| file(b, &format!("g{i}"), b"")))?;
    scene.apply(&enough, &limits)?;

    // A pax record of 2 MiB before one entry would be held in memory whole.
    let layer = tar_layer(|b| {
        pax_comment(b, 2 << 20)?;
        file(b, "big", b"")
    })?;
    let err = scene.refusal(&layer, &LIMITS)?;
    assert!(matches!(err, UnpackError::HeaderTooLarge { .. }), "{err}");
    assert!(err.to_string().contains("pass 1 MiB, the limit"), "{err}");
    Ok(())
}
