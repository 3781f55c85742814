//! What every Ilo crate shares: [`backoff`] (waits between attempts to reach a peer) and the
//! clock. With the `service` feature (the default), what the binaries share too: one logging
//! setup, one shutdown signal, settings at their defaults, the probe that container health checks
//! run (the images hold no shell, curl or wget), [`proxies`]: who the client is behind a load
//! balancer, [`counts`]: places counted per key, [`redis`]: one Redis or a cluster behind one
//! type, and [`tokens`]: validated tokens, forgotten by session. The client library takes only
//! the first part.

pub mod backoff;
#[cfg(feature = "service")]
pub mod counts;
#[cfg(feature = "service")]
pub mod proxies;
#[cfg(feature = "service")]
pub mod redis;
#[cfg(feature = "service")]
mod service;
#[cfg(feature = "service")]
pub mod tokens;

#[cfg(feature = "service")]
pub use service::*;

use std::time::Duration;

/// Unix time in seconds, by this machine's clock (0 before 1970).
pub fn unix_seconds() -> i64 {
    since_epoch().as_secs() as i64
}

/// Unix time in milliseconds, by this machine's clock.
pub fn unix_ms() -> u64 {
    since_epoch().as_millis() as u64
}

fn since_epoch() -> Duration {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
}
