//! The `ilo-api` binary: configuration from flags and environment, then the service.

use clap::Parser;
use ilo_api::{Application, Config};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    ilo_api::init_logging();
    tracing::info!(?config, "effective configuration");
    let app = Application::build(config).await?;
    app.run_until_stopped(ilo_api::shutdown_signal()).await
}
