//! `GET /health`, `GET /ready` (bus and ilo-api reachable) and `GET /metrics`.

use std::sync::Arc;
use std::time::Duration;

use actix_web::{HttpResponse, web};
use serde_json::json;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

use crate::relay::Relay;
use crate::startup::Readiness;

pub(crate) async fn health() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

pub(crate) async fn ready(relay: web::Data<Arc<Relay>>) -> HttpResponse {
    let readiness = readiness(&relay).await;
    if readiness.ready() {
        return HttpResponse::Ok().json(json!({"status": "ready", "bus": "up", "auth": "up"}));
    }
    let state = |up: bool| if up { "up" } else { "down" };
    let (bus, auth) = (state(readiness.bus), state(readiness.auth));
    HttpResponse::ServiceUnavailable()
        .insert_header(("Retry-After", "1"))
        .json(json!({
            "detail": format!("bus {bus}, auth {auth}"),
            "code": "not_ready",
            "bus": bus,
            "auth": auth,
        }))
}

pub(crate) async fn readiness(relay: &Relay) -> Readiness {
    Readiness {
        bus: relay.bus.is_up(),
        auth: auth_reachable(relay).await,
        stopping: relay.is_stopping(),
    }
}

async fn auth_reachable(relay: &Relay) -> bool {
    let mut health = HealthClient::new(relay.auth.channel());
    let check = health.check(HealthCheckRequest {
        service: "ilo.v1.Tokens".into(),
    });
    matches!(
        tokio::time::timeout(Duration::from_secs(1), check).await,
        Ok(Ok(reply)) if reply.get_ref().status == 1
    )
}

pub(crate) async fn metrics(relay: web::Data<Arc<Relay>>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(relay.metrics.encode())
}
