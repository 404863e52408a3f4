//! Image layers unpacked onto a root filesystem, whiteouts included: nothing may be written,
//! linked or removed outside the root.
//!
//! An input starting with byte 0 is a raw layer (tar, gzip or zstd) after that byte; any other
//! input describes entries that are written into a tar with valid checksums, so the fuzzer
//! spends its time on paths, links and whiteouts rather than on header checksums.
#![no_main]

use std::fs;
use std::io::Read as _;
use std::path::{Path, PathBuf};

use hephy_deploy::unpack::{apply_layer, UnpackLimits};
use libfuzzer_sys::arbitrary::{self, Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
enum Kind {
    File,
    Dir,
    Symlink,
    Hardlink,
    Fifo,
    Other(u8),
}

#[derive(Debug, Arbitrary)]
struct Entry {
    kind: Kind,
    /// Written as it is into the header's name field (at most 100 bytes).
    path: Vec<u8>,
    link: Vec<u8>,
    mode: u16,
    data: Vec<u8>,
}

fn header_field(field: &mut [u8], value: &[u8]) {
    let n = value.len().min(field.len());
    field[..n].copy_from_slice(&value[..n]);
}

fn build_tar(entries: Vec<Entry>) -> Vec<u8> {
    let mut out = Vec::new();
    for e in entries.into_iter().take(64) {
        let mut h = tar::Header::new_old();
        let kind = match e.kind {
            Kind::File => tar::EntryType::Regular,
            Kind::Dir => tar::EntryType::Directory,
            Kind::Symlink => tar::EntryType::Symlink,
            Kind::Hardlink => tar::EntryType::Link,
            Kind::Fifo => tar::EntryType::Fifo,
            Kind::Other(b) => tar::EntryType::new(b),
        };
        h.set_entry_type(kind);
        let data: &[u8] = if kind == tar::EntryType::Regular {
            &e.data
        } else {
            &[]
        };
        h.set_size(data.len() as u64);
        h.set_mode(u32::from(e.mode) & 0o7777);
        h.set_mtime(0);
        {
            let old = h.as_old_mut();
            header_field(&mut old.name, &e.path);
            header_field(&mut old.linkname, &e.link);
        }
        h.set_cksum();
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.extend_from_slice(&[0u8; 1024]);
    out
}

/// Everything under `dir` (relative path, and the file's bytes or a link's target), sorted.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = vec![];
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(entries) = fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            let rel = p.strip_prefix(dir).unwrap_or(&p).to_path_buf();
            let Ok(meta) = fs::symlink_metadata(&p) else {
                continue;
            };
            let content = if meta.file_type().is_symlink() {
                fs::read_link(&p)
                    .map(|t| t.into_os_string().into_encoded_bytes())
                    .unwrap_or_default()
            } else if meta.is_dir() {
                todo.push(p.clone());
                b"<dir>".to_vec()
            } else {
                let mut buf = vec![];
                let _ = fs::File::open(&p).and_then(|mut f| f.read_to_end(&mut buf));
                buf
            };
            out.push((rel, content));
        }
    }
    out.sort();
    out
}

fuzz_target!(|data: &[u8]| {
    let layer = match data.split_first() {
        Some((0, raw)) => raw.to_vec(),
        _ => match Vec::<Entry>::arbitrary_take_rest(Unstructured::new(data)) {
            Ok(entries) => build_tar(entries),
            Err(_) => return,
        },
    };
    let Ok(base) = tempfile::tempdir() else {
        return;
    };
    let root = base.path().join("root");
    let outside = base.path().join("outside");
    // A lower layer: files and directories to white out, and links that point out of the
    // root, which the unpacker must resolve inside it.
    let setup = (|| -> std::io::Result<()> {
        fs::create_dir_all(root.join("etc/app"))?;
        fs::create_dir_all(root.join("bin"))?;
        fs::write(root.join("etc/passwd"), b"root:x:0:0")?;
        fs::write(root.join("etc/app/conf"), b"a=1")?;
        fs::write(root.join("bin/sh"), b"#!")?;
        fs::create_dir_all(&outside)?;
        fs::write(outside.join("secret"), b"keep me")?;
        fs::write(base.path().join("sibling"), b"keep me too")?;
        std::os::unix::fs::symlink("../outside", root.join("up"))?;
        std::os::unix::fs::symlink(&outside, root.join("abs"))?;
        std::os::unix::fs::symlink("/", root.join("slash"))?;
        Ok(())
    })();
    if setup.is_err() {
        return;
    }
    let before = snapshot(&outside);
    let limits = {
        let mut l = UnpackLimits::default();
        l.max_layer_bytes = 16 << 20;
        l.max_layer_entries = 1000;
        l
    };
    let _ = apply_layer(&root, layer.as_slice(), "fuzz", &limits);
    assert_eq!(
        snapshot(&outside),
        before,
        "the layer changed a directory outside the root"
    );
    assert_eq!(
        fs::read(base.path().join("sibling")).ok().as_deref(),
        Some(&b"keep me too"[..]),
        "the layer changed a file next to the root"
    );
    let mut names: Vec<_> = fs::read_dir(base.path())
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    names.sort();
    assert_eq!(
        names,
        ["outside", "root", "sibling"],
        "the layer wrote next to the root"
    );
    drop(base);
});
