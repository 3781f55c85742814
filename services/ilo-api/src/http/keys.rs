//! `POST /key` and `DELETE /key/{key}`: API keys, stored only as hashes.

use actix_web::{HttpRequest, HttpResponse, web};

use super::errors::{ApiError, ErrorBody};
use super::{Detail, client_address};
use crate::secrets;
use crate::sessions::unix_now;
use crate::state::AppState;
use crate::store;

/// Obtain an API key (rate limited per client address).
#[utoipa::path(post, path = "/key", tag = "keys", operation_id = "create_key",
    responses(
        (status = 201, description = "The new key is in `detail`", body = Detail,
            example = json!({"detail": "824a47ae-d0b9-4350-bffb-cc2ee48424a3"})),
        (status = 429, description = "Too many keys from this address; see `Retry-After`", body = ErrorBody),
        (status = 503, description = "The database is unavailable", body = ErrorBody),
    ))]
pub(super) async fn create(
    state: web::Data<AppState>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    state
        .limits
        .keys
        .hit(&client_address(&req))
        .await
        .map_err(ApiError::rate_limited)?;
    let key = secrets::new_api_key();
    let (id, key_hash) = (uuid::Uuid::new_v4().to_string(), secrets::digest(&key));
    state
        .store
        .run(move |conn| store::insert_api_key(conn, &id, &key_hash, unix_now()))
        .await?;
    Ok(HttpResponse::Created().json(Detail { detail: key }))
}

/// Revoke an API key. Users created with it remain; sessions opened with it end.
#[utoipa::path(delete, path = "/key/{key}", tag = "keys", operation_id = "revoke_key",
    params(("key" = String, Path, description = "The API key to revoke")),
    responses(
        (status = 200, description = "`Successfully deleted <key>`", body = Detail),
        (status = 404, description = "No such key", body = ErrorBody),
        (status = 503, description = "The database is unavailable", body = ErrorBody),
    ))]
pub(super) async fn revoke(
    state: web::Data<AppState>,
    key: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let key = key.into_inner();
    let unknown = || ApiError::NotFound {
        code: "unknown_api_key",
        detail: "no such API key".into(),
    };
    let key_hash = secrets::api_key_digest(&key).ok_or_else(unknown)?;
    let found = state
        .sessions
        .end(move |conn| store::delete_api_key(conn, &key_hash))
        .await?;
    if !found {
        return Err(unknown());
    }
    Ok(HttpResponse::Ok().json(Detail {
        detail: format!("Successfully deleted {key}"),
    }))
}

/// The API key's id if `raw` names a live key.
pub(super) async fn live_key_id(state: &AppState, raw: &str) -> Result<String, ApiError> {
    let key_hash = secrets::api_key_digest(raw).ok_or(ApiError::InvalidApiKey)?;
    state
        .store
        .run(move |conn| store::api_key_id(conn, &key_hash))
        .await?
        .ok_or(ApiError::InvalidApiKey)
}
