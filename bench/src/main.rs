//! `ilo-bench`: `ilo-bench api` measures ilo-api, `ilo-bench potion` (also the `potion-bench`
//! binary) measures relays.

use clap::{Parser, Subcommand};
use ilo_bench::{api, potion};

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
    /// Measure potion relays (the same as `potion-bench`).
    Potion(potion::Options),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Api(options) => api::run(options).await,
        Command::Potion(options) => potion::run(options).await,
    }
}
