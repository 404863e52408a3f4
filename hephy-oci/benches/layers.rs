//! Layer writing: tar + compress + sha256 of a generated tree, gzip and zstd, one layer and the
//! same tree split into parallel layers.

// criterion_group! generates an undocumented public function.
#![allow(missing_docs)]

use std::path::Path;
use std::time::UNIX_EPOCH;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use hephy_oci::layer::{
    plan_layers, scan_dir, write_layer, write_layers, Compression, LayerOptions, SplitOptions,
};
use hephy_oci::layout::OciLayout;

/// 32 MiB in 256 files of 128 KiB: half compressible text, half pseudo-random bytes.
fn generate(root: &Path) -> std::io::Result<u64> {
    let mut total = 0;
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    for d in 0..16 {
        let dir = root.join(format!("dir{d:02}"));
        std::fs::create_dir_all(&dir)?;
        for f in 0..16 {
            let body: Vec<u8> = if f % 2 == 0 {
                format!("line {d} {f} of a fairly repetitive text file\n")
                    .repeat(3000)
                    .into_bytes()
                    .into_iter()
                    .take(128 * 1024)
                    .collect()
            } else {
                (0..128 * 1024)
                    .map(|_| {
                        state ^= state << 13;
                        state ^= state >> 7;
                        state ^= state << 17;
                        state as u8
                    })
                    .collect()
            };
            total += body.len() as u64;
            std::fs::write(dir.join(format!("file{f:02}.bin")), body)?;
        }
    }
    Ok(total)
}

fn bench(c: &mut Criterion) {
    let tmp = std::env::temp_dir().join(format!("hephy-bench-layers-{}", std::process::id()));
    let src = tmp.join("tree");
    let bytes = match generate(&src) {
        Ok(b) => b,
        Err(e) => panic!("cannot generate the tree in {}: {e}", tmp.display()),
    };
    let no_skip = |_: &str| false;
    let entries = match scan_dir(&src, "", &no_skip) {
        Ok(e) => e,
        Err(e) => panic!("cannot scan the tree: {e}"),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
    {
        Ok(r) => r,
        Err(e) => panic!("cannot start tokio: {e}"),
    };

    let mut group = c.benchmark_group("write_layer");
    group.sample_size(10);
    group.throughput(Throughput::Bytes(bytes));
    for (name, compression) in [
        ("gzip-1", Compression::GzipFast),
        ("gzip-6", Compression::Gzip { level: 6 }),
        ("zstd-3", Compression::Zstd { level: 3 }),
    ] {
        let opts = LayerOptions::at(UNIX_EPOCH).with_compression(compression);
        group.bench_with_input(BenchmarkId::new("one-layer", name), &opts, |b, opts| {
            b.iter(|| {
                let out = tmp.join("out-one");
                let _ = std::fs::remove_dir_all(&out);
                let layout = OciLayout::create(&out).map_err(|e| e.to_string())?;
                write_layer(&layout, &entries, opts).map_err(|e| e.to_string())
            })
        });
        group.bench_with_input(
            BenchmarkId::new("split-parallel", name),
            &opts,
            |b, opts| {
                b.iter(|| {
                    let out = tmp.join("out-split");
                    let _ = std::fs::remove_dir_all(&out);
                    let layout = OciLayout::create(&out).map_err(|e| e.to_string())?;
                    let plan = plan_layers(entries.clone(), &SplitOptions::with_target(4 << 20));
                    runtime
                        .block_on(write_layers(&layout, plan, *opts))
                        .map_err(|e| e.to_string())
                })
            },
        );
    }
    group.finish();
    let _ = std::fs::remove_dir_all(&tmp);
}

criterion_group!(benches, bench);
criterion_main!(benches);
