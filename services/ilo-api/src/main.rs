//! The `ilo-api` binary: configuration from flags and environment, then the service.
//! `ilo-api healthcheck` probes a running instance's `/ready` (for container health checks).

use std::process::ExitCode;

use clap::Parser;
use ilo_api::{Application, Config};

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    if ilo_runtime::is_healthcheck() {
        let config = Config::parse_from(["ilo-api"]);
        return Ok(ilo_runtime::healthcheck(config.http_addr));
    }
    let config = Config::parse();
    ilo_runtime::init_logging();
    tracing::info!(?config, "effective configuration");
    let app = Application::build(config).await?;
    app.run_until_stopped(ilo_runtime::shutdown_signal())
        .await?;
    Ok(ExitCode::SUCCESS)
}
