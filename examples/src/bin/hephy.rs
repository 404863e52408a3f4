//! `hephy`: the command-line client of hephy-server, and `hephy build` for CI without a server.
//!
//! A thin binary: the commands live in `hephy_examples::commands`, the API client in `hephy-api`.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use hephy_examples::cli::{split_colon_alias, Style};
use hephy_examples::commands::{self, Command, Global};

#[derive(Parser)]
#[command(
    name = "hephy",
    version,
    about = "git push to deploy: the hephy client"
)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse_from(split_colon_alias(std::env::args_os()));
    let style = Style::detect(std::io::stdout().is_terminal());
    match commands::run(cli.command, &cli.global, &style).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{}", style.error(&format!("error: {e}")));
            ExitCode::FAILURE
        }
    }
}
