//! What only the services and the launcher need (the `service` feature): settings, logging,
//! the shutdown signal and the container health probe.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::ExitCode;
use std::time::Duration;

/// A binary's settings at their defaults, whatever the environment holds: for tests, which a
/// developer's own `ILO_*` or `POTION_*` variables must not change.
pub fn defaults<T: clap::Parser>() -> T {
    let command = T::command().mut_args(|arg| arg.env(None::<&'static str>));
    let name = command.get_name().to_owned();
    let matches = command.get_matches_from([name]);
    T::from_arg_matches(&matches).expect("the defaults parse")
}

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

/// A duration setting: a number and a unit, `90s`, `15m`, `24h`, `7d`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text.char_indices().last().map_or(0, |(at, _)| at);
    let (number, unit) = text.split_at(split);
    let seconds: u64 = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => {
            return Err(format!(
                "{text:?}: expected a number and a unit (s, m, h, d)"
            ));
        }
    };
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?}: expected a number and a unit (s, m, h, d)"))?;
    match n.checked_mul(seconds) {
        Some(0) | None => Err(format!("{text:?}: must be positive and reasonable")),
        Some(total) => Ok(Duration::from_secs(total)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(clap::Parser)]
    struct Settings {
        #[arg(long, env = "PATH", default_value = "the default")]
        path: String,
    }

    #[test]
    fn defaults_ignore_the_environment() {
        // PATH is set in every test run; the parsed setting is still its default.
        assert!(std::env::var_os("PATH").is_some());
        assert_eq!(defaults::<Settings>().path, "the default");
    }

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("24h"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(604_800)));
        assert!(parse_duration("24").is_err());
        assert!(parse_duration("0h").is_err());
        assert!(parse_duration("h").is_err());
        assert!(parse_duration("24é").is_err());
        assert!(parse_duration("").is_err());
    }
}
