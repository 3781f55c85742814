//! `GET /openapi.json`, generated from the handlers' annotations so it cannot drift, and
//! `GET /docs`, Swagger UI served from assets compiled into the binary (no CDN).

use actix_web::{HttpResponse, web};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_swagger_ui::{Config, SwaggerUi};

use super::errors::ErrorBody;
use super::{Detail, keys, probes, sessions, users};
use crate::domain::Violation;

#[derive(OpenApi)]
#[openapi(
    info(title = "Ilo API", description = "API keys, users, sessions and the public-key directory of Ilo. \
        Every reply that is not 2xx has the body `{detail, code}`."),
    paths(
        keys::create, keys::revoke,
        users::create, users::login, users::public_key, users::replace_public_key, users::delete,
        sessions::get, sessions::delete,
        probes::health, probes::ready, probes::metrics,
    ),
    components(schemas(Detail, ErrorBody, Violation)),
    modifiers(&BearerAuth),
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        if let Some(components) = openapi.components.as_mut() {
            components.add_security_scheme(
                "bearer",
                SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
            );
        }
    }
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        SwaggerUi::new("/docs/{_:.*}")
            .url("/openapi.json", ApiDoc::openapi())
            // The default validator badge calls an online service; keep the page offline.
            .config(Config::default().validator_url("none")),
    )
    .route(
        "/docs",
        web::get().to(|| async {
            HttpResponse::PermanentRedirect()
                .insert_header(("Location", "/docs/"))
                .finish()
        }),
    );
}
