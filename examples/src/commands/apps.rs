//! `hephy apps ...`, `hephy logs` and `hephy open`.

use clap::Subcommand;
use hephy_api::AppInfo;
use hephy_core::AppName;

use super::{Ctx, Result};
use crate::cli;

/// `hephy apps SUBCOMMAND`.
#[derive(Debug, Subcommand)]
pub enum AppsCmd {
    /// Create an app (default name: the current directory's).
    Create {
        /// The app's name.
        name: Option<String>,
    },
    /// List apps.
    List,
    /// Show an app.
    Info,
    /// Destroy an app, its releases and its containers.
    Destroy {
        /// Type the app's name again to confirm.
        #[arg(long)]
        confirm: String,
    },
}

/// Runs an `apps` subcommand.
pub async fn run(cmd: AppsCmd, ctx: &Ctx<'_>) -> Result {
    match cmd {
        AppsCmd::Create { name } => {
            let name: AppName = match name {
                Some(n) => n.parse()?,
                None => cli::app_from_dir()?,
            };
            let info = ctx.client()?.create_app(&name).await?;
            println!("{}", ctx.style.ok(&format!("Created {}", info.name)));
            println!("Add it as a git remote and push:");
            println!("  git remote add hephy {}", info.git_http);
            if let Some(ssh) = &info.git_ssh {
                println!("  (or over SSH: git remote add hephy {ssh})");
            }
            println!("  git push hephy main");
        }
        AppsCmd::List => {
            for a in ctx.client()?.apps().await? {
                let v = a.release.as_ref().map(|r| r.version.to_string());
                let v = v.unwrap_or_else(|| "-".into());
                println!("{:<24} {:<5} {}", a.name, v, a.url.unwrap_or_default());
            }
        }
        AppsCmd::Info => print_app(&ctx.client()?.app(&ctx.app()?).await?, ctx),
        AppsCmd::Destroy { confirm } => {
            let name = ctx.app()?;
            if confirm != name.as_str() {
                let msg = format!("refusing to destroy {name}: pass --confirm {name} to confirm");
                return Err(msg.into());
            }
            ctx.client()?.destroy_app(&name).await?;
            println!("{}", ctx.style.ok(&format!("Destroyed {name}")));
        }
    }
    Ok(())
}

/// The app's log (or its last build's), followed when asked.
pub async fn logs(follow: bool, build: bool, ctx: &Ctx<'_>) -> Result {
    let mut out = std::io::stdout();
    ctx.client()?
        .logs(&ctx.app()?, build, follow, &mut out)
        .await?;
    Ok(())
}

/// Prints the app's URL and opens it where a browser is at hand.
pub async fn open(ctx: &Ctx<'_>) -> Result {
    let info = ctx.client()?.app(&ctx.app()?).await?;
    let url = info
        .url
        .ok_or("the app is not running yet: git push hephy main")?;
    println!("{url}");
    let _ = std::process::Command::new("xdg-open")
        .arg(&url)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
    Ok(())
}

fn print_app(a: &AppInfo, ctx: &Ctx<'_>) {
    println!("{}", ctx.style.bold(&format!("=== {}", a.name)));
    println!("git (http): {}", a.git_http);
    if let Some(s) = &a.git_ssh {
        println!("git (ssh):  {s}");
    }
    let url = a.url.as_deref().unwrap_or("(not running)");
    println!("url:        {url}");
    println!("users:      {}", a.users.join(", "));
    match &a.release {
        Some(r) => println!("release:    {} {} ({})", r.version, r.image, r.cause),
        None => println!("release:    none yet: git push hephy main"),
    }
    if let Some(p) = &a.process {
        println!("process:    {} (restarts: {})", p.state, p.restarts);
        if !p.last_lines.is_empty() {
            println!("last lines before it died:");
            for l in &p.last_lines {
                println!("  {l}");
            }
        }
    }
}
