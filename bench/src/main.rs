//! `ilo-bench`: load generators that measure Ilo over loopback and print figures (never asserts).
//!
//! `ilo-bench api` starts the release `ilo-api` binary on a fresh SQLite database (or
//! `--database-url`), with its rate limits off, and measures key issuance, logins, `/health`
//! latency while logins saturate the hashing pool, and gRPC `ValidateToken`.

mod api;
mod stats;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "ilo-bench", about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Measure ilo-api (REST and gRPC).
    Api(api::Options),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Api(options) => api::run(options).await,
    }
}
