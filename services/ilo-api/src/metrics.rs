//! Prometheus metrics of one ilo-api process, served at `GET /metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RequestLabels {
    pub method: String,
    /// The route pattern (`/key/{key}`), never the path, which may hold a key.
    pub route: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RouteLabels {
    pub route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct OutcomeLabels {
    pub outcome: &'static str,
}

pub(crate) struct Metrics {
    registry: Registry,
    pub http_requests: Family<RequestLabels, Counter>,
    pub http_seconds: Family<RouteLabels, Histogram>,
    pub logins: Family<OutcomeLabels, Counter>,
    pub validations: Family<OutcomeLabels, Counter>,
    pub validation_seconds: Histogram,
    /// 1 while this instance hears the other instances' revocations (always 1 without Redis).
    pub hearing_revocations: Gauge,
}

fn latency_histogram() -> Histogram {
    // 100 µs to ~3 s.
    Histogram::new(exponential_buckets(0.0001, 2.0, 16))
}

impl Metrics {
    pub(crate) fn new() -> Self {
        let mut registry = Registry::with_prefix("ilo_api");
        let http_requests = Family::default();
        let http_seconds = Family::new_with_constructor(latency_histogram as fn() -> Histogram);
        let logins = Family::default();
        let validations = Family::default();
        let validation_seconds = latency_histogram();
        let hearing_revocations = Gauge::default();
        registry.register(
            "http_requests",
            "HTTP requests by route and status",
            http_requests.clone(),
        );
        registry.register(
            "http_request_seconds",
            "HTTP latency by route",
            http_seconds.clone(),
        );
        registry.register("logins", "Login attempts by outcome", logins.clone());
        registry.register(
            "token_validations",
            "gRPC ValidateToken calls by outcome (cache hits are `cached`)",
            validations.clone(),
        );
        registry.register(
            "token_validation_seconds",
            "gRPC ValidateToken latency",
            validation_seconds.clone(),
        );
        registry.register(
            "hearing_revocations",
            "1 while revocations from the other instances are heard (its token cache is trusted)",
            hearing_revocations.clone(),
        );
        Self {
            registry,
            http_requests,
            http_seconds,
            logins,
            validations,
            validation_seconds,
            hearing_revocations,
        }
    }

    pub(crate) fn login(&self, outcome: &'static str) {
        self.logins.get_or_create(&OutcomeLabels { outcome }).inc();
    }

    /// The Prometheus text exposition.
    pub(crate) fn encode(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
