//! `hephy releases`, `hephy rollback` and `hephy deploy --image`.

use hephy_core::ReleaseVersion;

use super::{Ctx, Result};

/// Lists the app's releases, newest first.
pub async fn list(ctx: &Ctx<'_>) -> Result {
    let (c, a) = (ctx.client()?, ctx.app()?);
    let releases = c.releases(&a).await?;
    if releases.is_empty() {
        println!("{a} has no releases yet: git push hephy main");
    }
    for r in releases.iter().rev() {
        let created = humantime::format_rfc3339_seconds(r.created);
        println!("{:<5} {created}  {}  {}", r.version, r.image, r.cause);
    }
    Ok(())
}

/// Makes a new release from `version`'s image and config.
pub async fn rollback(version: ReleaseVersion, ctx: &Ctx<'_>) -> Result {
    let r = ctx.client()?.rollback(&ctx.app()?, version).await?;
    ctx.release_made(&r);
    Ok(())
}

/// Deploys an image built elsewhere as a new release.
pub async fn deploy(image: &str, ctx: &Ctx<'_>) -> Result {
    let r = ctx.client()?.deploy_image(&ctx.app()?, image).await?;
    ctx.release_made(&r);
    Ok(())
}
