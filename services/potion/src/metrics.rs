//! Prometheus metrics of one relay, served at `GET /metrics`.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

pub(crate) struct Metrics {
    registry: Registry,
    pub connections: Gauge,
    pub rooms: Gauge,
    pub messages_in: Counter,
    pub deliveries: Counter,
    pub publish_seconds: Histogram,
    pub bus_reconnects: Counter,
    pub validation_seconds: Histogram,
    pub validation_cache_hits: Counter,
    pub slow_consumers: Counter,
    pub rate_limited: Counter,
}

impl Metrics {
    pub(crate) fn new() -> Self {
        let mut registry = Registry::with_prefix("potion");
        let metrics = Self {
            connections: Gauge::default(),
            rooms: Gauge::default(),
            messages_in: Counter::default(),
            deliveries: Counter::default(),
            publish_seconds: Histogram::new(exponential_buckets(0.00005, 2.0, 16)),
            bus_reconnects: Counter::default(),
            validation_seconds: Histogram::new(exponential_buckets(0.0001, 2.0, 16)),
            validation_cache_hits: Counter::default(),
            slow_consumers: Counter::default(),
            rate_limited: Counter::default(),
            registry: Registry::default(),
        };
        registry.register(
            "connections",
            "Open WebSocket connections",
            metrics.connections.clone(),
        );
        registry.register(
            "rooms",
            "Rooms with a member on this relay",
            metrics.rooms.clone(),
        );
        registry.register(
            "messages_in",
            "Messages accepted from clients",
            metrics.messages_in.clone(),
        );
        registry.register(
            "deliveries",
            "Frames queued to local recipients",
            metrics.deliveries.clone(),
        );
        registry.register(
            "publish_seconds",
            "Time to hand a message to the fan-out bus",
            metrics.publish_seconds.clone(),
        );
        registry.register(
            "bus_reconnects",
            "Reconnections to Redis",
            metrics.bus_reconnects.clone(),
        );
        registry.register(
            "token_validation_seconds",
            "gRPC ValidateToken latency",
            metrics.validation_seconds.clone(),
        );
        registry.register(
            "token_cache_hits",
            "Token validations answered from the cache",
            metrics.validation_cache_hits.clone(),
        );
        registry.register(
            "slow_consumer_disconnects",
            "Connections closed with 4009",
            metrics.slow_consumers.clone(),
        );
        registry.register(
            "rate_limited",
            "Sends refused by the rate limit",
            metrics.rate_limited.clone(),
        );
        Self {
            registry,
            ..metrics
        }
    }

    pub(crate) fn encode(&self) -> String {
        let mut text = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
