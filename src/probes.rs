//! `/health`, `/ready` and `/metrics` for both services on the shared port: ready when the
//! database, the bus and the internal token service all answer; both services' metrics.

use actix_web::{HttpResponse, web};
use serde_json::json;

#[derive(Clone)]
pub struct Parts {
    pub api: ilo_api::Api,
    pub relay: potion::RelayService,
}

impl Parts {
    pub fn new(api: ilo_api::Api, relay: potion::RelayService) -> Self {
        Self { api, relay }
    }

    /// Registered before either service's routes, so these answer for both.
    pub fn mount(&self, cfg: &mut web::ServiceConfig) {
        cfg.app_data(web::Data::new(self.clone()))
            .route("/health", web::get().to(health))
            .route("/ready", web::get().to(ready))
            .route("/metrics", web::get().to(metrics));
    }
}

async fn health() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

async fn ready(parts: web::Data<Parts>) -> HttpResponse {
    let (database, relay) = tokio::join!(parts.api.ready(), parts.relay.readiness());
    let state = |up: bool| if up { "up" } else { "down" };
    let body = |status: &str| {
        json!({
            "status": status,
            "database": state(database),
            "bus": state(relay.bus),
            "auth": state(relay.auth),
        })
    };
    if database && relay.ready() {
        return HttpResponse::Ok().json(body("ready"));
    }
    let mut body = body("not_ready");
    body["code"] = "not_ready".into();
    body["detail"] = format!(
        "database {}, bus {}, auth {}",
        state(database),
        state(relay.bus),
        state(relay.auth)
    )
    .into();
    HttpResponse::ServiceUnavailable()
        .insert_header(("Retry-After", "1"))
        .json(body)
}

/// Both registries in one exposition; only the last may carry the `# EOF` terminator.
async fn metrics(parts: web::Data<Parts>) -> HttpResponse {
    let api = parts.api.metrics();
    let api = api.strip_suffix("# EOF\n").unwrap_or(&api);
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(format!("{api}{}", parts.relay.metrics()))
}
