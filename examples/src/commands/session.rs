//! `hephy login` and `hephy whoami`.

use hephy_api::Client;
use secrecy::SecretString;

use super::{Ctx, Result};
use crate::cli;

/// Checks the token against the server, then saves both.
pub async fn login(url: String, token: SecretString) -> Result {
    let me = Client::new(&url, token.clone()).whoami().await?;
    cli::Settings {
        url: Some(url.clone()),
        token: Some(token),
    }
    .save()?;
    let admin = if me.admin { " (admin)" } else { "" };
    println!("Logged in to {url} as {}{admin}", me.user);
    Ok(())
}

/// Who the token belongs to.
pub async fn whoami(ctx: &Ctx<'_>) -> Result {
    let me = ctx.client()?.whoami().await?;
    println!("{}{}", me.user, if me.admin { " (admin)" } else { "" });
    Ok(())
}
