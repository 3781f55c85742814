//! What request handlers share: the store, the hashing pool, tokens, limits and metrics.

use std::sync::Arc;
use std::time::Duration;

use crate::limits::Limits;
use crate::metrics::Metrics;
use crate::passwords::Passwords;
use crate::store::Store;
use crate::tokens::Tokens;
use ilo_runtime::proxies::IpNet;

#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub passwords: Passwords,
    pub tokens: Arc<Tokens>,
    pub limits: Arc<Limits>,
    pub metrics: Arc<Metrics>,
    pub token_ttl: Duration,
    /// Proxies allowed to name the client (`ILO_TRUSTED_PROXIES`).
    pub trusted_proxies: Arc<[IpNet]>,
}
