//! A custom platform on hephy's crates, in one file: `git push` over HTTP builds the pushed
//! files into an OCI image with this file's own backend, publishes it into an OCI layout with
//! hephy's publisher, and hands the release to this file's own deployer, which keeps releases in
//! memory and prints them.
//!
//! ```text
//! cargo run -p hephy-embed-example -- .hephy-embed 127.0.0.1:7070
//! git push http://127.0.0.1:7070/hello.git main
//! ```
//!
//! To make it yours, replace `ShipFiles` with your build and `Shelf` with your scheduler.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use hephy_core::{
    async_trait, AppName, Backend, BuildContext, BuildError, BuildTarget, BuiltImage, Confidence,
    DeployError, Deployer, Detection, Events, NewRelease, Pipeline, Release, ReleaseVersion,
};
use hephy_git::GitServer;
use hephy_oci::image::ImageBuilder;
use hephy_oci::layout::OciLayout;
use hephy_oci::OciLayoutPublisher;
use tokio::sync::Mutex;

/// A backend: ships the pushed files under `/srv` in an image that runs `/srv/start`.
struct ShipFiles;

#[async_trait]
impl Backend for ShipFiles {
    fn name(&self) -> &str {
        "ship"
    }

    // Chooses this backend for a push with a start script, without a hephy.toml.
    async fn detect(&self, ctx: &BuildContext) -> Detection {
        if ctx.dir().join("start").is_file() {
            Detection::yes("ship", Confidence::High, "found a start script")
        } else {
            Detection::no(
                "ship",
                "no start script: add an executable file named start",
            )
        }
    }

    async fn build(
        &self,
        ctx: &BuildContext,
        target: &BuildTarget,
        events: &Events,
    ) -> Result<BuiltImage, BuildError> {
        events.log(format!("shipping the files for {}", target.platform));
        let layout = OciLayout::create(&target.out_dir)?;
        let image = ImageBuilder::for_context(ctx, target.platform.clone())
            .dir(ctx.dir(), "srv")
            .workdir("/srv")
            .entrypoint(["/srv/start"])
            .write(&layout, None)
            .await?;
        let platform = Some(target.platform.clone());
        Ok(BuiltImage::new(platform, &target.out_dir, image.digest))
    }
}

/// A deployer: keeps every app's releases in memory and prints each new one.
#[derive(Default)]
struct Shelf {
    releases: Mutex<HashMap<AppName, Vec<Release>>>,
}

#[async_trait]
impl Deployer for Shelf {
    async fn deploy(&self, new: NewRelease, events: &Events) -> Result<Release, DeployError> {
        let mut all = self.releases.lock().await;
        let releases = all.entry(new.app.clone()).or_default();
        let current = releases.last();
        let version = ReleaseVersion::next_after(current.map(|r| r.version));
        let release = new.into_release(version, SystemTime::now(), current);
        println!(
            "released {} {} {}",
            release.app, release.version, release.image
        );
        events.log(format!("{} is on the shelf", release.version));
        releases.push(release.clone());
        Ok(release)
    }

    async fn releases(&self, app: &AppName) -> Result<Vec<Release>, DeployError> {
        Ok(self
            .releases
            .lock()
            .await
            .get(app)
            .cloned()
            .unwrap_or_default())
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let data = std::path::absolute(args.next().unwrap_or_else(|| ".hephy-embed".into()))?;
    // No accounts: anyone who reaches the address may push, so keep it on loopback.
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:7070".into());

    // The push server gives the pipeline the source that reads its repositories.
    let images = data.join("images");
    let server = GitServer::builder(&data)
        .pipeline_with(|source| {
            Pipeline::builder()
                .source(Arc::new(source))
                .backend(Arc::new(ShipFiles))
                .publisher(Arc::new(OciLayoutPublisher::new(images)))
                .deployer(Arc::new(Shelf::default()))
        })
        .build()?;
    let app: AppName = "hello".parse()?;
    if !server.apps()?.contains(&app) {
        server.create_app(&app, "you")?;
    }

    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("git push http://{}/{app}.git main", listener.local_addr()?);
    server.serve_http(listener).await?;
    Ok(())
}
