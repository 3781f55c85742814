//! The `potion` binary: configuration from flags and environment, then one relay.

use clap::Parser;
use potion::{Application, Config};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).init();
    let redis = config.redis_url.as_deref().map(without_credentials);
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
    app.run_until_stopped(shutdown_signal()).await
}

/// `redis://user:pw@host/` → `redis://***@host/`.
fn without_credentials(url: &str) -> String {
    match (url.split_once("://"), url.rsplit_once('@')) {
        (Some((scheme, _)), Some((_, host))) => format!("{scheme}://***@{host}"),
        _ => url.to_owned(),
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
