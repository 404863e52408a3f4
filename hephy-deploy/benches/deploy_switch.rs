//! How long a release takes from "image ready" (unpacked) to "traffic switched" on the local
//! deployer, with real runc containers of the Go hello app (needs root and runc).
//!
//! `cargo bench -p hephy-deploy --bench deploy_switch` deploys alternating releases of one app
//! and prints the minimum, median and maximum of the switch time the deployer reports, and of
//! the whole deploy call (which also drains and stops the previous release).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hephy_core::{Deployer, Events};
use hephy_deploy::local::LocalDeployer;

#[allow(dead_code)]
#[path = "../tests/deploy/support.rs"]
mod support;

use support::*;

fn stats(mut xs: Vec<f64>) -> String {
    xs.sort_by(f64::total_cmp);
    let median = xs[xs.len() / 2];
    format!(
        "min {:.1} ms, median {:.1} ms, max {:.1} ms",
        xs[0],
        median,
        xs[xs.len() - 1]
    )
}

fn main() -> Result {
    let releases: usize = std::env::var("HEPHY_BENCH_RELEASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let f = fixture()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let data = tempfile::tempdir()?;
        let app = unique_app("bench");
        let _guard = Containers(app.clone());
        let d = LocalDeployer::builder(data.path())
            .layout_root(&f.root)
            .drain_timeout(Duration::from_secs(5))
            .build()?;
        d.create_app(&app).await?;
        let lines = Arc::new(Mutex::new(Vec::<String>::new()));
        let sink = lines.clone();
        let events = Events::from_fn(move |e| {
            if let Ok(mut l) = sink.lock() {
                l.push(e.render());
            }
        });
        // The first deploy unpacks the images; the measured ones reuse them.
        d.deploy(release(&app, &f.one), &events).await?;
        d.deploy(release(&app, &f.two), &events).await?;
        lines.lock().map_err(|_| "poisoned")?.clear();
        let mut whole = vec![];
        for i in 0..releases {
            let image = if i % 2 == 0 { &f.one } else { &f.two };
            let started = Instant::now();
            d.deploy(release(&app, image), &events).await?;
            whole.push(started.elapsed().as_secs_f64() * 1000.0);
        }
        let switch: Vec<f64> = lines
            .lock()
            .map_err(|_| "poisoned")?
            .iter()
            .filter_map(|l| {
                let rest = l.split("switched traffic to ").nth(1)?;
                let ms = rest.split(" in ").nth(1)?.split(" ms").next()?;
                ms.trim().parse().ok()
            })
            .collect();
        if switch.len() != releases {
            return Err(format!("expected {releases} switch reports, got {}", switch.len()).into());
        }
        println!("local deployer, {releases} releases of the Go hello app:");
        println!("  image ready -> traffic switched: {}", stats(switch));
        println!(
            "  whole deploy (incl. drain + stop of the old release): {}",
            stats(whole)
        );
        d.shutdown().await?;
        Ok(())
    })
}
