//! `potion-bench`: load on potion relays through the same client library the tests use.

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    ilo_bench::potion::run(ilo_bench::potion::Options::parse()).await
}
