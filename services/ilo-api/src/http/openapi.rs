//! `GET /openapi.json`, generated from the handlers' annotations so it cannot drift, and
//! `GET /docs`, Swagger UI served from assets compiled into the binary (no CDN). Swagger UI is
//! served by this module rather than by `utoipa_swagger_ui::SwaggerUi`, so that it carries a
//! strict Content-Security-Policy (it shares its origin with the web client and its storage)
//! and its 404s have the contract's `{detail, code}` body.

use std::borrow::Cow;
use std::sync::Arc;

use actix_web::http::header;
use actix_web::{HttpResponse, web};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_swagger_ui::Config;

use super::errors::{ApiError, ErrorBody};
use super::{Detail, keys, probes, sessions, users};
use crate::domain::Violation;

#[derive(OpenApi)]
#[openapi(
    info(title = "Ilo API", description = "API keys, users, sessions and the public-key directory of Ilo. \
        Every reply that is not 2xx has the body `{detail, code}`."),
    paths(
        keys::create, keys::revoke,
        users::create, users::login, users::public_key, users::replace_public_key,
        users::change_password, users::delete,
        sessions::get, sessions::delete,
        probes::health, probes::ready, probes::metrics,
    ),
    components(schemas(Detail, ErrorBody, Violation)),
    modifiers(&BearerAuth),
)]
pub(super) struct ApiDoc;

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

/// Swagger UI's own files only; inline styles are how it draws, inline scripts are not needed.
const DOCS_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
                        img-src 'self' data:; connect-src 'self'; font-src 'self'; \
                        base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

pub(super) fn routes(cfg: &mut web::ServiceConfig) {
    // The default validator badge calls an online service; keep the page offline.
    let config = Arc::new(Config::new(["/openapi.json"]).validator_url("none"));
    // Serialized once: the document cannot change while the process runs.
    let document = ApiDoc::openapi().to_json().unwrap_or_default();
    cfg.app_data(web::Data::new(config))
        .route(
            "/openapi.json",
            web::get().to(move || {
                let document = document.clone();
                async move {
                    HttpResponse::Ok()
                        .content_type("application/json")
                        .body(document)
                }
            }),
        )
        .route(
            "/docs",
            web::get().to(|| async {
                HttpResponse::PermanentRedirect()
                    .insert_header((header::LOCATION, "/docs/"))
                    .finish()
            }),
        )
        .route("/docs/{file:.*}", web::get().to(docs_file));
}

async fn docs_file(
    file: web::Path<String>,
    config: web::Data<Arc<Config<'static>>>,
) -> Result<HttpResponse, ApiError> {
    let found = utoipa_swagger_ui::serve(&file, config.get_ref().clone()).map_err(|e| {
        tracing::error!(error = %e, "swagger ui file");
        ApiError::Internal
    })?;
    let Some(found) = found else {
        return Err(ApiError::NotFound {
            code: "not_found",
            detail: "no such documentation file".into(),
        });
    };
    let mut reply = HttpResponse::Ok();
    reply
        .content_type(found.content_type)
        .insert_header((header::CONTENT_SECURITY_POLICY, DOCS_CSP))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"));
    if found.gzpipped {
        reply.insert_header((header::CONTENT_ENCODING, "gzip"));
    }
    // The files are compiled in: served without a copy (the initializer alone is rewritten).
    Ok(match found.bytes {
        Cow::Borrowed(bytes) => reply.body(bytes),
        Cow::Owned(bytes) => reply.body(bytes),
    })
}
