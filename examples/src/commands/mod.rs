//! The `hephy` CLI's commands, one module per command group; the binary only parses and calls
//! [`run`].

mod apps;
mod ci;
mod config;
mod keys;
mod releases;
mod session;

use std::io::Write;

use clap::{Args, Subcommand};
use hephy_api::Client;
use hephy_core::{AppName, Release, ReleaseVersion};
use secrecy::SecretString;

use crate::cli::{self, Style};
use crate::local;

/// What a command returns.
pub type Result<T = ()> = std::result::Result<T, Box<dyn std::error::Error>>;

/// The flags every command takes.
#[derive(Debug, Clone, Default, Args)]
pub struct Global {
    /// The hephy server (default: from `hephy login`).
    #[arg(long, global = true, env = "HEPHY_URL")]
    pub url: Option<String>,
    /// The API token (default: from `hephy login`).
    #[arg(long, global = true, env = "HEPHY_TOKEN", hide_env_values = true, value_parser = cli::secret)]
    pub token: Option<SecretString>,
    /// The app (default: from the `hephy` git remote of the current repository).
    #[arg(long, short = 'a', global = true, env = "HEPHY_APP")]
    pub app: Option<String>,
}

/// Every command of the CLI.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Save the server address and token for later commands.
    Login {
        /// The server, like http://127.0.0.1:7080.
        url: String,
        /// The token (the server prints the admin token at first start).
        #[arg(long, value_parser = cli::secret)]
        token: SecretString,
    },
    /// Show who the token belongs to.
    Whoami,
    /// Create, list, show and destroy apps.
    #[command(subcommand)]
    Apps(apps::AppsCmd),
    /// Manage your SSH public keys.
    #[command(subcommand)]
    Keys(keys::KeysCmd),
    /// Set, unset and list config vars (each change is a release).
    #[command(subcommand)]
    Config(config::ConfigCmd),
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
    Ci(ci::CiArgs),
}

/// What every command may need: the flags, the saved settings and the terminal's style.
pub struct Ctx<'a> {
    global: &'a Global,
    settings: cli::Settings,
    style: &'a Style,
}

impl Ctx<'_> {
    /// The app from `--app`, the `hephy` remote, or the directory name.
    fn app(&self) -> Result<AppName> {
        Ok(cli::resolve_app(self.global.app.as_deref())?)
    }

    /// An API client for the server of the flags or of `hephy login`.
    fn client(&self) -> Result<Client> {
        let url = self.global.url.as_ref().or(self.settings.url.as_ref());
        let token = self.global.token.as_ref().or(self.settings.token.as_ref());
        match (url, token) {
            (Some(url), Some(token)) => Ok(Client::new(url, token.clone())),
            _ => Err(cli::NOT_LOGGED_IN.into()),
        }
    }

    fn release_made(&self, r: &Release) {
        let line = format!(
            "{} of {} is live: {} ({})",
            r.version, r.app, r.image, r.cause
        );
        println!("{}", self.style.ok(&line));
    }
}

/// Runs `command`.
pub async fn run(command: Command, global: &Global, style: &Style) -> Result {
    let ctx = Ctx {
        global,
        settings: cli::Settings::load(),
        style,
    };
    match command {
        Command::Login { url, token } => session::login(url, token).await?,
        Command::Whoami => session::whoami(&ctx).await?,
        Command::Apps(cmd) => apps::run(cmd, &ctx).await?,
        Command::Keys(cmd) => keys::run(cmd, &ctx).await?,
        Command::Config(cmd) => config::run(cmd, &ctx).await?,
        Command::Releases => releases::list(&ctx).await?,
        Command::Rollback { version } => releases::rollback(version, &ctx).await?,
        Command::Deploy { image } => releases::deploy(&image, &ctx).await?,
        Command::Logs { follow, build } => apps::logs(follow, build, &ctx).await?,
        Command::Open => apps::open(&ctx).await?,
        Command::Build(args) => local::build(args, global.app.as_deref(), style).await?,
        Command::Check(args) => local::check(args, style).await?,
        Command::Ci(args) => ci::write(args, &ctx)?,
    }
    std::io::stdout().flush()?;
    Ok(())
}
