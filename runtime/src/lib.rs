//! What every Ilo binary shares: one logging setup, one shutdown signal, the probe that
//! container health checks run (the images hold no shell, curl or wget), [`proxies`]: who
//! the client is behind a load balancer, and [`counts`]: places counted per key.

pub mod counts;
pub mod proxies;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::ExitCode;
use std::time::Duration;

/// One log line per event, filtered by `RUST_LOG` (default `info`).
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Ignore a second initialisation (the launcher and tests may call this more than once).
    let _ = tracing_subscriber::fmt().with_env_filter(filter).try_init();
}

/// Resolves on SIGTERM or SIGINT (Ctrl-C).
pub async fn shutdown_signal() {
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

/// `<binary> healthcheck`: exits 0 when `GET /ready` on the service's own port answers 200.
/// A listen address of `0.0.0.0` is probed on loopback.
pub fn healthcheck(listen: SocketAddr) -> ExitCode {
    let mut addr = listen;
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    match ready(addr) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("{addr}/ready is not 200");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("{addr}/ready: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Whether the binary was started as `<binary> healthcheck`.
pub fn is_healthcheck() -> bool {
    std::env::args().nth(1).as_deref() == Some("healthcheck")
}

fn ready(addr: SocketAddr) -> std::io::Result<bool> {
    let timeout = Duration::from_secs(3);
    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.write_all(b"GET /ready HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head)?;
    Ok(head.starts_with(b"HTTP/1.") && &head[9..12] == b"200")
}
