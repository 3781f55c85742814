//! The `potion` binary: configuration from flags and environment, then one relay.
//! `potion healthcheck` probes a running relay's `/ready` (for container health checks).

use std::process::ExitCode;

use clap::Parser;
use potion::{Application, Config};

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    if ilo_runtime::is_healthcheck() {
        let config = Config::parse_from(["potion"]);
        return Ok(ilo_runtime::healthcheck(config.addr));
    }
    let config = Config::parse();
    ilo_runtime::init_logging();
    let redis = match (&config.redis_cluster, &config.redis_url) {
        (Some(seeds), _) => Some(format!(
            "cluster {}",
            ilo_runtime::redis::seeds(seeds)
                .iter()
                .map(|seed| without_credentials(seed))
                .collect::<Vec<_>>()
                .join(",")
        )),
        (None, url) => url.as_deref().map(without_credentials),
    };
    tracing::info!(
        addr = %config.addr,
        ilo_grpc_url = %config.ilo_grpc_url,
        redis = redis.as_deref().unwrap_or("unset (in-process bus)"),
        allowed_origins = ?config.allowed_origins,
        max_rooms = config.max_rooms,
        max_body = config.max_body,
        send_burst = config.send_burst,
        send_rate = config.send_rate,
        queue = config.queue,
        ping_secs = config.ping_secs,
        idle_secs = config.idle_secs,
        lease_secs = config.lease_secs,
        "effective configuration"
    );
    let app = Application::build(config).await?;
    app.run_until_stopped(ilo_runtime::shutdown_signal())
        .await?;
    Ok(ExitCode::SUCCESS)
}

/// `redis://user:pw@host/` → `redis://***@host/`.
fn without_credentials(url: &str) -> String {
    match (url.split_once("://"), url.rsplit_once('@')) {
        (Some((scheme, _)), Some((_, host))) => format!("{scheme}://***@{host}"),
        _ => url.to_owned(),
    }
}
