//! The `ledge` command-line tool.
//!
//! The commands and flags are a contract (docs/client.md, "CLI"): scripts and tests parse
//! the output, so each command prints exactly one thing per result. A run goes:
//!
//! 1. clap parses the arguments (`args.rs`); a usage error exits with status 2.
//! 2. A [`ledge_client::Client`] is made over `--endpoints` (or `LEDGE_ENDPOINTS`, default
//!    `127.0.0.1:7700`). It finds the leader and retries on its own, within 5 s per call.
//! 3. The command makes its call (`commands.rs`) and prints the result (`render/`): aligned
//!    text by default, or with `--output json` one JSON object per result per line.
//!    `kv watch` keeps printing: each message of the stream as it arrives, flushed at once so
//!    that a script reading the pipe line by line sees it, until the server ends the stream
//!    (exit 0), the stream fails (an error, as below) or the process is interrupted.
//! 4. Any error goes to stderr as `<CodeName>: <message>`, with the leader hint if the server
//!    sent one, and the exit status is 1. A get of a missing key is such an error (`NotFound`),
//!    so `ledge kv get` succeeds only when it prints a value.

mod args;
mod commands;
mod duration;
mod render;

use std::{
    io::{self, BufWriter},
    process::ExitCode,
};

use ledge_client::Client;

pub use args::Cli;
use commands::{Failure, Printer};

/// Runs the parsed command line and returns the process exit status.
pub async fn main(cli: Cli) -> ExitCode {
    let result = async {
        let client = Client::connect(cli.endpoints).await?;
        let mut printer = Printer::new(BufWriter::new(io::stdout()), cli.output);
        commands::run(&client, cli.command, &mut printer).await?;
        printer.flush()?;
        Ok::<(), Failure>(())
    }
    .await;
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Client(error)) => {
            eprintln!("{error}");
            ExitCode::FAILURE
        }
        // A reader that went away (`ledge kv scan | head`) is not worth a message.
        Err(Failure::Output(error)) if error.kind() == io::ErrorKind::BrokenPipe => ExitCode::FAILURE,
        Err(Failure::Output(error)) => {
            eprintln!("error writing output: {error}");
            ExitCode::FAILURE
        }
    }
}
