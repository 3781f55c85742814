//! What every connection of one relay shares.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::watch;

use crate::auth::Auth;
use crate::bus::Bus;
use crate::caps::Caps;
use crate::config::Config;
use crate::hub::{ConnId, Hub};
use crate::metrics::Metrics;
use crate::rooms::Rooms;

pub(crate) struct Relay {
    pub config: Config,
    pub hub: Arc<Hub>,
    pub bus: Arc<dyn Bus>,
    pub auth: Arc<Auth>,
    pub metrics: Arc<Metrics>,
    pub(crate) rooms: Rooms,
    pub(crate) caps: Caps,
    pub(crate) trusted_proxies: Vec<ilo_runtime::proxies::IpNet>,
    /// Random per process: makes message ids unique across relays.
    pub relay_id: String,
    pub stopping: watch::Receiver<bool>,
    next_conn: AtomicU64,
    next_message: AtomicU64,
}

impl Relay {
    pub(crate) fn new(
        config: Config,
        hub: Arc<Hub>,
        bus: Arc<dyn Bus>,
        auth: Arc<Auth>,
        metrics: Arc<Metrics>,
        relay_id: String,
        stopping: watch::Receiver<bool>,
    ) -> Self {
        let caps = Caps::new(
            config.max_connections_per_user,
            config.max_connections_per_address,
        );
        let rooms = Rooms::new(
            hub.clone(),
            bus.clone(),
            metrics.clone(),
            config.max_rooms,
            config.history_size,
        );
        Self {
            rooms,
            caps,
            trusted_proxies: ilo_runtime::proxies::blocks(&config.trusted_proxies),
            config,
            hub,
            bus,
            auth,
            metrics,
            relay_id,
            stopping,
            next_conn: AtomicU64::new(1),
            next_message: AtomicU64::new(1),
        }
    }

    pub(crate) fn next_conn_id(&self) -> ConnId {
        self.next_conn.fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) fn next_message_id(&self) -> String {
        let n = self.next_message.fetch_add(1, Ordering::Relaxed);
        format!("{}-{n}", self.relay_id)
    }

    pub(crate) fn is_stopping(&self) -> bool {
        *self.stopping.borrow()
    }
}
