//! `ledge`: the command-line client for Ledge. See the `cli` module for the commands.

mod cli;

use std::process::ExitCode;

use clap::Parser;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    cli::main(cli::Cli::parse()).await
}
