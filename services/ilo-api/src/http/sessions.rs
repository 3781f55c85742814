//! `GET /session` (is this token still good?), `DELETE /session` (log out) and bearer-token
//! authentication for the routes that need it.

use std::sync::Arc;

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};

use serde::Serialize;
use utoipa::ToSchema;

use super::errors::{ApiError, ErrorBody};
use super::users::rfc3339;
use crate::secrets;
use crate::sessions::ValidSession;
use crate::state::AppState;
use crate::store;

/// The session named by `Authorization: Bearer <token>`, or `401 invalid_token`.
pub(super) async fn authenticate(
    state: &AppState,
    req: &HttpRequest,
) -> Result<Arc<ValidSession>, ApiError> {
    let header = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let token = secrets::bearer(header).ok_or(ApiError::InvalidToken)?;
    state
        .sessions
        .validate(token)
        .await?
        .ok_or(ApiError::InvalidToken)
}

#[derive(Serialize, ToSchema)]
pub(super) struct SessionReply {
    /// `Session of <username>`.
    detail: String,
    username: String,
    /// When the token stops working (RFC 3339, UTC).
    #[schema(example = "2026-11-25T09:30:00Z")]
    expires_at: String,
}

/// The session behind a bearer token: how a client learns whether its token still works, for
/// example before reconnecting a WebSocket (a browser cannot read the relay's `401`).
#[utoipa::path(get, path = "/session", tag = "sessions", operation_id = "get_session",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The token is valid", body = SessionReply),
        (status = 401, description = "`invalid_token`", body = ErrorBody),
    ))]
pub(super) async fn get(
    state: web::Data<AppState>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let session = authenticate(&state, &req).await?;
    Ok(HttpResponse::Ok().json(SessionReply {
        detail: format!("Session of {}", session.username),
        username: session.username.clone(),
        expires_at: rfc3339(session.expires_at)?,
    }))
}

/// Log out: revoke the bearer token. Relays close its connections with `4001`.
#[utoipa::path(delete, path = "/session", tag = "sessions", operation_id = "log_out",
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Revoked"),
        (status = 401, description = "`invalid_token`", body = ErrorBody),
    ))]
pub(super) async fn delete(
    state: web::Data<AppState>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let session = authenticate(&state, &req).await?;
    let id = session.session_id.clone();
    let existed = state
        .sessions
        .end(move |conn| store::delete_session(conn, &id))
        .await?;
    if !existed {
        return Err(ApiError::InvalidToken);
    }
    Ok(HttpResponse::NoContent().finish())
}
