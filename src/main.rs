//! The standalone launcher: what `cargo run --release` starts. Today it runs ilo-api with its
//! zero-setup defaults (SQLite in `./data`); the relay joins it in the same process later.

use clap::Parser;
use ilo_api::{Application, Config};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    ilo_api::init_logging();
    tracing::info!(?config, "effective configuration");
    let app = Application::build(config).await?;
    println!("Ilo is running: open http://{}/docs", app.http_addr());
    app.run_until_stopped(ilo_api::shutdown_signal()).await
}
