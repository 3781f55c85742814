//! ilo-api: Ilo's REST API (actix-web) and the gRPC token service relays call (tonic).
//!
//! `domain` validates and does no I/O; `store` owns diesel; `passwords` and `tokens` build on
//! them; `http` and `grpc` are peers that never import each other; `startup` wires it all.

pub mod config;
pub mod domain;
mod grpc;
mod http;
pub mod limits;
mod metrics;
pub mod passwords;
pub mod secrets;
mod startup;
mod state;
pub mod store;
pub mod tokens;

pub use config::Config;
pub use startup::{Api, Application, Running, Services, observe};

/// One log line per event, filtered by `RUST_LOG` (default `info`).
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Ignore a second initialisation (the launcher and tests may call this more than once).
    let _ = tracing_subscriber::fmt().with_env_filter(filter).try_init();
}

/// Resolves on SIGTERM or SIGINT (Ctrl-C).
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
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
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
