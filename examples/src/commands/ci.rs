//! `hephy ci SYSTEM`: writes a workflow that runs `hephy build` in the app's CI.

use std::path::PathBuf;

use clap::Args;
use hephy_core::fs::{write_atomic, FileMode};

use super::{Ctx, Result};
use crate::ci::CiSystem;
use crate::cli;

/// `hephy ci`'s arguments.
#[derive(Debug, Args)]
pub struct CiArgs {
    /// github or gitlab.
    system: CiSystem,
    /// The branch that builds.
    #[arg(long, default_value = "main")]
    branch: String,
    /// Also deploy the built image (needs HEPHY_URL and HEPHY_TOKEN secrets).
    #[arg(long)]
    deploy: bool,
    /// Overwrite an existing workflow file.
    #[arg(long)]
    force: bool,
}

/// Writes the workflow file, refusing to overwrite one without `--force`.
pub fn write(args: CiArgs, ctx: &Ctx<'_>) -> Result {
    let name = ctx.app().or_else(|_| cli::app_from_dir())?;
    let path = PathBuf::from(args.system.path());
    if path.exists() && !args.force {
        return Err(format!("{} exists: pass --force to overwrite it", path.display()).into());
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let workflow = args
        .system
        .workflow(name.as_str(), &args.branch, args.deploy);
    write_atomic(&path, workflow.as_bytes(), FileMode::Public)?;
    println!("{}", ctx.style.ok(&format!("Wrote {}", path.display())));
    Ok(())
}
