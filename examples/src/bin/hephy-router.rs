//! `hephy-router`: the data plane. It keeps every app's address served while hephy-server
//! stops, crashes, restarts or is replaced; hephy-server starts it when none runs and gives it
//! orders over `DATA_DIR/deploy/router/router.sock`. A thin binary around
//! `hephy_deploy::router::control::serve`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

#[derive(Parser)]
#[command(
    name = "hephy-router",
    version,
    about = "the router that keeps hephy's apps reachable"
)]
struct Args {
    /// hephy-server's data directory.
    #[arg(long, env = "HEPHY_DATA_DIR", default_value = ".hephy-data")]
    data_dir: PathBuf,
}

#[tokio::main]
async fn main() -> ExitCode {
    hephy_examples::runtime::init_logging();
    let dir = hephy_examples::runtime::router_dir(&Args::parse().data_dir);
    match hephy_deploy::router::control::serve(&dir).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hephy-router: {e}");
            ExitCode::FAILURE
        }
    }
}
