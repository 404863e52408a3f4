//! `hephy config ...`: config vars, each change a new release.

use clap::Subcommand;
use hephy_core::ConfigChange;

use super::{Ctx, Result};

/// `hephy config SUBCOMMAND`.
#[derive(Debug, Subcommand)]
pub enum ConfigCmd {
    /// Set vars: NAME=value ...
    Set {
        /// `NAME=value` pairs.
        #[arg(required = true)]
        assignments: Vec<String>,
    },
    /// Unset vars: NAME ...
    Unset {
        /// The names to remove.
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// List vars.
    List,
}

/// Runs a `config` subcommand.
pub async fn run(cmd: ConfigCmd, ctx: &Ctx<'_>) -> Result {
    let (c, a) = (ctx.client()?, ctx.app()?);
    let change = match cmd {
        ConfigCmd::List => {
            let view = c.config(&a).await?;
            if view.vars.is_empty() {
                println!("{a} has no config vars; set some with `hephy config set NAME=value`");
            }
            for (k, v) in view.vars.iter() {
                println!("{k}={v}");
            }
            return Ok(());
        }
        ConfigCmd::Set { assignments } => {
            ConfigChange::parse_assignments(assignments.iter().map(String::as_str))?
        }
        ConfigCmd::Unset { names } => ConfigChange::unset(names.iter().map(String::as_str)),
    };
    let r = c.change_config(&a, &change).await?;
    ctx.release_made(&r);
    Ok(())
}
