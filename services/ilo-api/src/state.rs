//! What request handlers share: the store, the hashing pool, sessions, limits and metrics.

use crate::limits::Limits;
use crate::metrics::Metrics;
use crate::passwords::Passwords;
use crate::sessions::Sessions;
use crate::store::Store;
use ilo_runtime::proxies::IpNet;
use std::sync::Arc;

#[derive(Clone)]
pub(crate) struct AppState {
    pub store: Store,
    pub passwords: Passwords,
    pub sessions: Arc<Sessions>,
    pub limits: Arc<Limits>,
    pub metrics: Arc<Metrics>,
    /// Proxies allowed to name the client (`ILO_TRUSTED_PROXIES`).
    pub trusted_proxies: Arc<[IpNet]>,
}
