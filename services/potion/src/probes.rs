//! `GET /health`, `GET /ready` (bus and ilo-api reachable) and `GET /metrics`.

use std::sync::Arc;
use std::time::Duration;

use actix_web::{HttpResponse, web};
use serde_json::json;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

use crate::relay::Relay;

pub async fn health() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

pub async fn ready(relay: web::Data<Arc<Relay>>) -> HttpResponse {
    let bus = relay.bus.is_up();
    let auth = auth_reachable(&relay).await;
    if bus && auth && !relay.is_stopping() {
        return HttpResponse::Ok().json(json!({"status": "ready", "bus": "up", "auth": "up"}));
    }
    let state = |up: bool| if up { "up" } else { "down" };
    HttpResponse::ServiceUnavailable()
        .insert_header(("Retry-After", "1"))
        .json(json!({
            "detail": format!("bus {}, auth {}", state(bus), state(auth)),
            "code": "not_ready",
            "bus": state(bus),
            "auth": state(auth),
        }))
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

pub async fn metrics(relay: web::Data<Arc<Relay>>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(relay.metrics.encode())
}
