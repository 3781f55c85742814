//! The standalone launcher: what `cargo run --release` starts. ilo-api (REST on ILO_HTTP_ADDR,
//! gRPC on ILO_GRPC_ADDR, SQLite in ./data unless DATABASE_URL says otherwise) and one potion
//! relay (POTION_ADDR, in-process bus unless REDIS_URL is set) in one process, the relay
//! validating tokens through ilo-api's gRPC port like any other relay. Flags are ilo-api's;
//! the relay reads its settings from the environment.

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let api_config = ilo_api::Config::parse();
    ilo_api::init_logging();
    tracing::info!(config = ?api_config, "effective ilo-api configuration");
    let api = ilo_api::Application::build(api_config).await?;

    let mut relay_config = potion::Config::parse_from(["potion"]);
    relay_config.ilo_grpc_url = format!("http://{}", api.grpc_addr());
    let relay = potion::Application::build(relay_config).await?;

    println!("Ilo is running:");
    println!(
        "  REST API and its documentation  http://{}/docs",
        api.http_addr()
    );
    println!("  WebSocket relay                 ws://{}/ws", relay.addr());

    let (stop, stopping) = tokio::sync::watch::channel(false);
    let until_stopped = |mut stopping: tokio::sync::watch::Receiver<bool>| async move {
        let _ = stopping.wait_for(|s| *s).await;
    };
    let api = tokio::spawn(api.run_until_stopped(until_stopped(stopping.clone())));
    let relay = tokio::spawn(relay.run_until_stopped(until_stopped(stopping)));
    ilo_api::shutdown_signal().await;
    let _ = stop.send(true);
    // The relay first (its clients get 1001), then the API.
    relay.await??;
    api.await??;
    Ok(())
}
