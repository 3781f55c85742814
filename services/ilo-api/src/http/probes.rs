//! `GET /health`, `GET /ready` and `GET /metrics`.

use std::time::Duration;

use actix_web::{HttpResponse, web};
use serde_json::json;

use super::errors::{ApiError, ErrorBody};
use crate::state::AppState;

/// How long `/ready` waits for the database.
pub(crate) const READY_TIMEOUT: Duration = Duration::from_secs(1);

/// The process runs.
#[utoipa::path(get, path = "/health", tag = "operations",
    responses((status = 200, description = "Running", example = json!({"status": "ok"}))))]
pub(super) async fn health() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

/// The database answers.
#[utoipa::path(get, path = "/ready", tag = "operations",
    responses(
        (status = 200, description = "Ready", example = json!({"status": "ready"})),
        (status = 503, description = "`database_unavailable`", body = ErrorBody),
    ))]
pub(super) async fn ready(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    state.store.ping(READY_TIMEOUT).await?;
    Ok(HttpResponse::Ok().json(json!({"status": "ready"})))
}

/// Prometheus metrics.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
pub(super) async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(state.metrics.encode())
}
