//! `ilo-bench`: `ilo-bench api` measures ilo-api, `ilo-bench potion` (also the `potion-bench`
//! binary) measures relays, `ilo-bench floor` what loopback writes alone cost, `ilo-bench e2e`
//! what end-to-end encryption costs a client.

use clap::{Parser, Subcommand};
use ilo_bench::{api, e2e, floor, potion};

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
    /// Measure the kernel's cost of a relay's writes alone, with no relay (the floor).
    Floor(floor::Options),
    /// Measure sealing and opening ilo-e2e/1 messages.
    E2e(e2e::Options),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Api(options) => api::run(options).await,
        Command::Potion(options) => potion::run(options).await,
        Command::Floor(options) => floor::run(options).await,
        Command::E2e(options) => e2e::run(options).await,
    }
}
