//! `cargo run --release`: Ilo on one machine with no external server. ilo-api and a potion
//! relay in one process on `ILO_HTTP_ADDR` (REST, `/ws`, the web client). Flags are ilo-api's;
//! the relay's settings (`POTION_*`, `REDIS_URL`) come from the environment.

use std::io::Write;

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    ilo_runtime::init_logging();
    let api_config = ilo_api::Config::parse();
    let relay_config = potion::Config::parse_from(["potion"]);
    tracing::info!(config = ?api_config, "effective ilo-api configuration");
    let bus = if relay_config.redis_url.is_some() {
        "Redis"
    } else {
        "in process"
    };
    let ilo = ilo::Standalone::build(api_config, relay_config).await?;

    // Not `println!`: a closed stdout (a supervisor, a pipe whose reader left) must not stop Ilo.
    let _ = writeln!(
        std::io::stdout(),
        "Ilo is running. Open http://{addr}/ in a browser.\n  data      {}\n  fan-out   {bus}\n  \
         REST API  http://{addr}/docs   WebSocket ws://{addr}/ws\nStop with Ctrl-C.",
        ilo.database(),
        addr = ilo.addr(),
    );
    ilo.run_until_stopped(ilo_runtime::shutdown_signal()).await
}
