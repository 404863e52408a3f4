//! `hephy keys ...`: the user's SSH public keys.

use std::path::PathBuf;

use clap::Subcommand;

use super::{Ctx, Result};
use crate::cli;

/// `hephy keys SUBCOMMAND`.
#[derive(Debug, Subcommand)]
pub enum KeysCmd {
    /// Add a public key (default: ~/.ssh/id_ed25519.pub, else id_rsa.pub).
    Add {
        /// The public key file.
        path: Option<PathBuf>,
    },
    /// List your keys.
    List,
    /// Remove a key by fingerprint.
    Remove {
        /// The key's fingerprint, as `keys list` shows it.
        fingerprint: String,
    },
}

/// Runs a `keys` subcommand.
pub async fn run(cmd: KeysCmd, ctx: &Ctx<'_>) -> Result {
    match cmd {
        KeysCmd::Add { path } => {
            let path = match path {
                Some(p) => p,
                None => cli::default_public_key()?,
            };
            let line = std::fs::read_to_string(&path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            let k = ctx.client()?.add_key(line.trim()).await?;
            let added = format!("Added {} {}", k.fingerprint, k.comment);
            println!("{}", ctx.style.ok(&added));
        }
        KeysCmd::List => {
            for k in ctx.client()?.keys().await? {
                println!("{} {}", k.fingerprint, k.comment);
            }
        }
        KeysCmd::Remove { fingerprint } => {
            ctx.client()?.remove_key(&fingerprint).await?;
            println!("{}", ctx.style.ok(&format!("Removed {fingerprint}")));
        }
    }
    Ok(())
}
