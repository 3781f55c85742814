//! The REST API of `api.md` on actix-web: routes, body limits and the JSON error shape.

pub(crate) mod errors;
mod keys;
mod observe;
mod openapi;
mod probes;
mod sessions;
mod users;

use actix_web::{HttpRequest, web};
use serde::Serialize;
use utoipa::ToSchema;

use crate::state::AppState;
use errors::ApiError;

/// Largest request body accepted; larger ones get `413`.
pub(crate) const MAX_BODY: usize = 64 * 1024;

/// The `{"detail": ...}` body of Ilo's successful replies.
#[derive(Serialize, ToSchema)]
pub(crate) struct Detail {
    pub detail: String,
}

pub use observe::observe;
pub(crate) use probes::READY_TIMEOUT;

/// Every route of the REST API.
pub(crate) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.app_data(
        web::JsonConfig::default()
            .limit(MAX_BODY)
            .error_handler(errors::json_error),
    )
    .app_data(web::PayloadConfig::default().limit(MAX_BODY))
    .service(resource("/key").route(web::post().to(keys::create)))
    .service(resource("/key/").route(web::post().to(keys::create)))
    .service(resource("/key/{key}").route(web::delete().to(keys::revoke)))
    .service(
        resource("/user")
            .route(web::post().to(users::create))
            .route(web::put().to(users::login))
            .route(web::delete().to(users::delete)),
    )
    .service(
        resource("/user/public_key")
            .route(web::put().to(users::replace_public_key))
            .route(web::get().to(users::public_key_of_reserved_name)),
    )
    .service(
        resource("/user/password")
            .route(web::put().to(users::change_password))
            .route(web::get().to(users::public_key_of_reserved_name)),
    )
    .service(resource("/user/{username}").route(web::get().to(users::public_key)))
    .service(
        resource("/session")
            .route(web::get().to(sessions::get))
            .route(web::delete().to(sessions::delete)),
    )
    .service(resource("/health").route(web::get().to(probes::health)))
    .service(resource("/ready").route(web::get().to(probes::ready)))
    .service(resource("/metrics").route(web::get().to(probes::metrics)))
    .configure(openapi::routes)
    .default_service(web::to(not_found));
}

/// A resource whose unknown methods get `405` in the contract's shape.
fn resource(path: &str) -> actix_web::Resource {
    web::resource(path).default_service(web::to(|| async {
        Err::<actix_web::HttpResponse, _>(ApiError::MethodNotAllowed)
    }))
}

async fn not_found() -> Result<actix_web::HttpResponse, ApiError> {
    Err(ApiError::NotFound {
        code: "not_found",
        detail: "no such endpoint".into(),
    })
}

/// The client's address, the key of per-address limits: the TCP peer, or the client a trusted
/// load balancer names in `X-Forwarded-For`.
pub(crate) fn client_address(req: &HttpRequest) -> String {
    let Some(peer) = req.peer_addr() else {
        return "unknown".to_owned();
    };
    let trusted = req
        .app_data::<web::Data<AppState>>()
        .map(|s| s.trusted_proxies.clone())
        .unwrap_or_default();
    let forwarded = req
        .headers()
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok());
    ilo_runtime::proxies::client_of(peer.ip(), forwarded, &trusted).to_string()
}
