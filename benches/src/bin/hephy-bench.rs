//! The hephy side of `benches/build-vs-buildah.sh`.
//!
//! - `hephy-bench gen-context DIR [FILES] [MEGABYTES]`: writes a deterministic build context of
//!   about MEGABYTES (default 250) in FILES files (default 3000): every third file incompressible
//!   random bytes, the others compressible text.
//! - `hephy-bench free-port`: prints a free loopback port.
//! - `hephy-bench push CONTEXT REGISTRY APP TAG WORK_DIR`: builds CONTEXT with the files backend
//!   on an empty base (like `FROM scratch` + `COPY . /app`) for the host platform, pushes it to
//!   the plain-HTTP registry REGISTRY as `REGISTRY/bench/APP:TAG` through the core pipeline, and
//!   prints `key=value` lines: seconds, uploaded and total blob bytes, digest.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use hephy_backends::FilesBackend;
use hephy_core::{AppConfig, BuildContext, Events, Job, Pipeline, Platform};
use hephy_oci::registry::{RegistryAuth, RegistryOptions, RegistryPublisher};

type Result<T = (), E = Box<dyn std::error::Error + Send + Sync>> = std::result::Result<T, E>;

const USAGE: &str = "usage: hephy-bench gen-context DIR [FILES] [MEGABYTES]
       hephy-bench free-port
       hephy-bench push CONTEXT REGISTRY APP TAG WORK_DIR";

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("gen-context") if args.len() >= 2 => gen_context(
            Path::new(&args[1]),
            parse_or(args.get(2), 3000),
            parse_or(args.get(3), 250),
        ),
        Some("free-port") => free_port(),
        Some("push") if args.len() == 6 => {
            push(
                Path::new(&args[1]),
                &args[2],
                &args[3],
                &args[4],
                Path::new(&args[5]),
            )
            .await
        }
        _ => Err(USAGE.into()),
    };
    if let Err(e) = result {
        eprintln!("hephy-bench: {e}");
        let mut source = e.source();
        while let Some(s) = source {
            eprintln!("  caused by: {s}");
            source = s.source();
        }
        std::process::exit(1);
    }
}

fn parse_or(arg: Option<&String>, default: u64) -> u64 {
    arg.and_then(|a| a.parse().ok()).unwrap_or(default)
}

fn free_port() -> Result {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    println!("{}", listener.local_addr()?.port());
    Ok(())
}

/// xorshift64*: small, fast and the same on every machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

const WORDS: &[&str] = &[
    "the",
    "build",
    "image",
    "layer",
    "registry",
    "push",
    "deploy",
    "release",
    "config",
    "app",
    "function",
    "return",
    "value",
    "error",
    "result",
    "stream",
    "digest",
    "manifest",
    "index",
    "platform",
    "linux",
    "amd64",
    "arm64",
    "commit",
    "branch",
    "main",
    "server",
    "client",
    "request",
    "response",
    "header",
    "body",
    "status",
    "ok",
    "not",
    "found",
    "let",
    "mut",
    "fn",
    "struct",
    "impl",
    "trait",
    "pub",
    "use",
    "mod",
    "self",
    "super",
    "crate",
    "async",
    "await",
    "match",
    "if",
    "else",
    "for",
    "while",
    "loop",
    "break",
    "continue",
    "const",
    "static",
    "string",
    "vector",
    "option",
    "some",
    "none",
    "true",
    "false",
    "log",
    "line",
    "file",
    "path",
    "directory",
    "context",
    "cache",
    "hash",
    "bytes",
    "size",
    "time",
    "date",
    "user",
    "group",
];

/// About `megabytes` MB in `files` files under `dir`: a third random bytes, the rest text.
fn gen_context(dir: &Path, files: u64, megabytes: u64) -> Result {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mean = megabytes * 1_000_000 / files.max(1);
    // Sizes spread evenly between 10% and 190% of the mean.
    let low = mean / 10;
    let spread = mean * 18 / 10;
    let mut total = 0u64;
    for i in 0..files {
        let size = low + rng.below(spread);
        let random = i % 3 == 0;
        let path: PathBuf = dir
            .join(format!("d{:02}", i / 100))
            .join(format!("s{}", (i / 10) % 10))
            .join(if random {
                format!("blob-{i:04}.bin")
            } else {
                format!("text-{i:04}.txt")
            });
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let mut out = BufWriter::with_capacity(1 << 16, std::fs::File::create(&path)?);
        let mut written = 0u64;
        if random {
            while written < size {
                let word = rng.next().to_le_bytes();
                let n = (size - written).min(8) as usize;
                out.write_all(&word[..n])?;
                written += n as u64;
            }
        } else {
            let mut line = String::new();
            while written < size {
                line.clear();
                let words = 6 + rng.below(10);
                for w in 0..words {
                    if w > 0 {
                        line.push(' ');
                    }
                    line.push_str(WORDS[rng.below(WORDS.len() as u64) as usize]);
                }
                line.push('\n');
                let n = (size - written).min(line.len() as u64) as usize;
                out.write_all(&line.as_bytes()[..n])?;
                written += n as u64;
            }
        }
        out.flush()?;
        total += written;
    }
    println!("files={files}");
    println!("bytes={total}");
    Ok(())
}

async fn push(context: &Path, registry: &str, app: &str, tag: &str, work: &Path) -> Result {
    let started = Instant::now();
    let config = AppConfig::from_toml(
        "hephy.toml",
        &format!(
            r#"
[build]
backend = "files"
platforms = ["{}"]
[build.files]
base = "scratch"
dest = "/app"
"#,
            Platform::host()
        ),
    )?;
    let publisher = Arc::new(
        RegistryPublisher::builder(registry)
            .prefix("bench")
            .options(
                RegistryOptions::new()
                    .auth(RegistryAuth::Anonymous)
                    .insecure(registry),
            )
            .build()?,
    );
    let pipeline = Pipeline::builder()
        .backend(Arc::new(FilesBackend::new()))
        .publisher(publisher.clone())
        .build()?;
    let job = Job::context(app.parse()?, BuildContext::new(context, config), work).with_tag(tag);
    let events = Events::from_fn(|e| eprintln!("{}", e.render()));
    let report = pipeline.run(job, &events).await?;
    let seconds = started.elapsed().as_secs_f64();
    let stats = publisher
        .last_push_stats()
        .ok_or("the publisher recorded no push")?;
    println!("seconds={seconds:.3}");
    println!("blobs={}", stats.blobs);
    println!("blob_bytes={}", stats.blob_bytes);
    println!("uploaded_blobs={}", stats.uploaded);
    println!("uploaded_bytes={}", stats.uploaded_bytes);
    println!("reference={}", report.published.reference);
    Ok(())
}
