//! `hephy`: the command-line client of hephy-server, and `hephy build` for CI without a server.
//!
//! A thin binary: the API client, CI templates and the build pipeline live in library crates.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use hephy_core::{AppName, ConfigChange, Release, ReleaseVersion};
use hephy_examples::{cli, local};
use hephy_git::api::{AppInfo, Client};
use hephy_git::ci::CiSystem;

#[derive(Parser)]
#[command(
    name = "hephy",
    version,
    about = "git push to deploy: the hephy client"
)]
struct Cli {
    /// The hephy server (default: from `hephy login`).
    #[arg(long, global = true, env = "HEPHY_URL")]
    url: Option<String>,
    /// The API token (default: from `hephy login`).
    #[arg(long, global = true, env = "HEPHY_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// The app (default: from the `hephy` git remote of the current repository).
    #[arg(long, short = 'a', global = true, env = "HEPHY_APP")]
    app: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Save the server address and token for later commands.
    Login {
        /// The server, like http://127.0.0.1:7080.
        url: String,
        /// The token (the server prints the admin token at first start).
        #[arg(long)]
        token: String,
    },
    /// Show who the token belongs to.
    Whoami,
    /// Create, list, show and destroy apps.
    #[command(subcommand)]
    Apps(AppsCmd),
    /// Manage your SSH public keys.
    #[command(subcommand)]
    Keys(KeysCmd),
    /// Set, unset and list config vars (each change is a release).
    #[command(subcommand)]
    Config(ConfigCmd),
    /// List the app's releases.
    Releases,
    /// Roll back to an earlier release, as a new release.
    Rollback {
        /// The release to go back to, like v2.
        version: ReleaseVersion,
    },
    /// Show the app's logs (or its last build's with --build).
    Logs {
        /// Keep following new lines.
        #[arg(short, long)]
        follow: bool,
        /// The last build's log instead of the app's.
        #[arg(long)]
        build: bool,
    },
    /// Print the app's URL and open it in a browser when one is available.
    Open,
    /// Build and publish the current checkout, as the server would (for CI).
    Build(local::BuildArgs),
    /// Explain which backend would build the current checkout, and why.
    Check(local::CheckArgs),
    /// Deploy an image built elsewhere.
    Deploy {
        /// A digest-pinned image reference.
        #[arg(long)]
        image: String,
    },
    /// Write a CI workflow that runs `hephy build` (github or gitlab).
    Ci(CiArgs),
}

#[derive(Subcommand)]
enum AppsCmd {
    /// Create an app (default name: the current directory's).
    Create { name: Option<String> },
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

#[derive(Subcommand)]
enum KeysCmd {
    /// Add a public key (default: ~/.ssh/id_ed25519.pub, else id_rsa.pub).
    Add { path: Option<PathBuf> },
    /// List your keys.
    List,
    /// Remove a key by fingerprint.
    Remove { fingerprint: String },
}

#[derive(Subcommand)]
enum ConfigCmd {
    /// Set vars: NAME=value ...
    Set {
        #[arg(required = true)]
        assignments: Vec<String>,
    },
    /// Unset vars: NAME ...
    Unset {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// List vars.
    List,
}

#[derive(Args)]
struct CiArgs {
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

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse_from(cli::split_colon_alias(std::env::args_os()));
    let style = cli::Style::detect(std::io::stdout().is_terminal());
    match run(cli, &style).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{}", style.error(&format!("error: {e}")));
            ExitCode::FAILURE
        }
    }
}

type Result<T = ()> = std::result::Result<T, Box<dyn std::error::Error>>;

async fn run(cli: Cli, style: &cli::Style) -> Result {
    let settings = cli::Settings::load();
    let app = || -> Result<AppName> { Ok(cli::resolve_app(cli.app.as_deref())?) };
    let client = || -> Result<Client> {
        let url = cli
            .url
            .clone()
            .or(settings.url.clone())
            .ok_or(cli::NOT_LOGGED_IN)?;
        let token = cli
            .token
            .clone()
            .or(settings.token.clone())
            .ok_or(cli::NOT_LOGGED_IN)?;
        Ok(Client::new(&url, &token))
    };
    match cli.command {
        Command::Login { url, token } => {
            let c = Client::new(&url, &token);
            let me = c.whoami().await?;
            cli::Settings {
                url: Some(url.clone()),
                token: Some(token),
            }
            .save()?;
            println!(
                "Logged in to {url} as {}{}",
                me.user,
                if me.admin { " (admin)" } else { "" }
            );
        }
        Command::Whoami => {
            let me = client()?.whoami().await?;
            println!("{}{}", me.user, if me.admin { " (admin)" } else { "" });
        }
        Command::Apps(cmd) => match cmd {
            AppsCmd::Create { name } => {
                let name: AppName = match name {
                    Some(n) => n.parse()?,
                    None => cli::app_from_dir()?,
                };
                let info = client()?.create_app(&name).await?;
                println!("{}", style.ok(&format!("Created {}", info.name)));
                println!("Add it as a git remote and push:");
                println!("  git remote add hephy {}", info.git_http);
                if let Some(ssh) = &info.git_ssh {
                    println!("  (or over SSH: git remote add hephy {ssh})");
                }
                println!("  git push hephy main");
            }
            AppsCmd::List => {
                for a in client()?.apps().await? {
                    let v = a
                        .release
                        .as_ref()
                        .map(|r| r.version.to_string())
                        .unwrap_or_else(|| "-".into());
                    println!("{:<24} {:<5} {}", a.name, v, a.url.unwrap_or_default());
                }
            }
            AppsCmd::Info => print_app(&client()?.app(&app()?).await?, style),
            AppsCmd::Destroy { confirm } => {
                let name = app()?;
                if confirm != name.as_str() {
                    return Err(format!(
                        "refusing to destroy {name}: pass --confirm {name} to confirm"
                    )
                    .into());
                }
                client()?.destroy_app(&name).await?;
                println!("{}", style.ok(&format!("Destroyed {name}")));
            }
        },
        Command::Keys(cmd) => match cmd {
            KeysCmd::Add { path } => {
                let path = match path {
                    Some(p) => p,
                    None => cli::default_public_key()?,
                };
                let line = std::fs::read_to_string(&path)
                    .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
                let k = client()?.add_key(line.trim()).await?;
                println!(
                    "{}",
                    style.ok(&format!("Added {} {}", k.fingerprint, k.comment))
                );
            }
            KeysCmd::List => {
                for k in client()?.keys().await? {
                    println!("{} {}", k.fingerprint, k.comment);
                }
            }
            KeysCmd::Remove { fingerprint } => {
                client()?.remove_key(&fingerprint).await?;
                println!("{}", style.ok(&format!("Removed {fingerprint}")));
            }
        },
        Command::Config(cmd) => {
            let (c, a) = (client()?, app()?);
            let change = match cmd {
                ConfigCmd::List => {
                    let view = c.config(&a).await?;
                    if view.vars.is_empty() {
                        println!(
                            "{a} has no config vars; set some with `hephy config set NAME=value`"
                        );
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
            print_release_made(&r, style);
        }
        Command::Releases => {
            let (c, a) = (client()?, app()?);
            let releases = c.releases(&a).await?;
            if releases.is_empty() {
                println!("{a} has no releases yet: git push hephy main");
            }
            for r in releases.iter().rev() {
                println!(
                    "{:<5} {}  {}  {}",
                    r.version,
                    humantime::format_rfc3339_seconds(r.created),
                    r.image,
                    r.cause
                );
            }
        }
        Command::Rollback { version } => {
            let r = client()?.rollback(&app()?, version).await?;
            print_release_made(&r, style);
        }
        Command::Logs { follow, build } => {
            let mut out = std::io::stdout();
            client()?.logs(&app()?, build, follow, &mut out).await?;
        }
        Command::Open => {
            let info = client()?.app(&app()?).await?;
            let url = info
                .url
                .ok_or("the app is not running yet: git push hephy main")?;
            println!("{url}");
            let _ = std::process::Command::new("xdg-open")
                .arg(&url)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn();
        }
        Command::Build(args) => local::build(args, cli.app.as_deref(), style).await?,
        Command::Check(args) => local::check(args, style).await?,
        Command::Deploy { image } => {
            let r = client()?.deploy_image(&app()?, &image).await?;
            print_release_made(&r, style);
        }
        Command::Ci(args) => {
            let name = app().or_else(|_| cli::app_from_dir())?;
            let path = PathBuf::from(args.system.path());
            if path.exists() && !args.force {
                return Err(
                    format!("{} exists: pass --force to overwrite it", path.display()).into(),
                );
            }
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            std::fs::write(
                &path,
                args.system
                    .workflow(name.as_str(), &args.branch, args.deploy),
            )?;
            println!("{}", style.ok(&format!("Wrote {}", path.display())));
        }
    }
    std::io::stdout().flush()?;
    Ok(())
}

fn print_app(a: &AppInfo, style: &cli::Style) {
    println!("{}", style.bold(&format!("=== {}", a.name)));
    println!("git (http): {}", a.git_http);
    if let Some(s) = &a.git_ssh {
        println!("git (ssh):  {s}");
    }
    println!(
        "url:        {}",
        a.url.as_deref().unwrap_or("(not running)")
    );
    println!("users:      {}", a.users.join(", "));
    match &a.release {
        Some(r) => println!("release:    {} {} ({})", r.version, r.image, r.cause),
        None => println!("release:    none yet: git push hephy main"),
    }
}

fn print_release_made(r: &Release, style: &cli::Style) {
    println!(
        "{}",
        style.ok(&format!(
            "{} of {} is live: {} ({})",
            r.version, r.app, r.image, r.cause
        ))
    );
}
