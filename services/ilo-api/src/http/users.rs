//! `POST /user` (register), `PUT /user` (log in), `GET /user/{username}` (public key directory),
//! `PUT /user/public_key` (a new device's key), `PUT /user/password` and `DELETE /user`.

use actix_web::{HttpRequest, HttpResponse, web};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::errors::{ApiError, ErrorBody};
use super::sessions::authenticate;
use super::{Detail, client_address, keys};
use crate::domain::{self, Password, PublicKey, Username, Violation, required};
use crate::sessions::unix_now;
use crate::state::AppState;
use crate::store::{self, NewUser};

/// Fields are optional in the type so that a missing one is reported as a broken rule (`422`)
/// together with every other, rather than as a JSON error.
#[derive(Deserialize, ToSchema)]
pub(super) struct CreateUser {
    /// 3 to 32 characters (NFC); no whitespace, control characters, bidirectional controls or
    /// invisible (default-ignorable) characters; at least one visible letter, digit,
    /// punctuation or symbol (not only blanks or combining marks). Unique ignoring case and
    /// look-alikes (the UTS #39 confusable skeleton): `alice` and `аlice` cannot both exist.
    #[schema(example = "cookielover57🍪")]
    username: Option<String>,
    /// 8 to 128 characters with a lowercase and an uppercase letter, a digit and a symbol.
    #[schema(example = "MySuperSecurePassword57!")]
    password: Option<String>,
    /// Base64 (standard or URL-safe, padding optional) of 32 to 2048 bytes.
    public_key: Option<String>,
    /// A key from `POST /key`.
    api_key: Option<String>,
}

#[derive(Deserialize, ToSchema)]
pub(super) struct Login {
    username: Option<String>,
    password: Option<String>,
    api_key: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub(super) struct LoginReply {
    /// `Successful Login for <username>`.
    detail: String,
    /// The session token: ≥ 128 random bits, URL-safe base64 characters only.
    token: String,
    /// When the token stops working (RFC 3339, UTC).
    #[schema(example = "2026-11-25T09:30:00Z")]
    expires_at: String,
}

#[derive(Deserialize, ToSchema)]
pub(super) struct DeleteUser {
    password: Option<String>,
}

#[derive(Deserialize, ToSchema)]
pub(super) struct ReplacePublicKey {
    /// The user's password: a stolen token alone cannot swap the key others encrypt to.
    password: Option<String>,
    /// The new key, under the same rules as at creation: base64 of 32 to 2048 bytes.
    public_key: Option<String>,
}

#[derive(Deserialize, ToSchema)]
pub(super) struct ChangePassword {
    /// The current password.
    password: Option<String>,
    /// The new one, under the same rules as at creation.
    #[schema(example = "AnEvenBetterPassword58?")]
    new_password: Option<String>,
}

/// Create a user who registers a public key.
#[utoipa::path(post, path = "/user", tag = "users", operation_id = "create_user", request_body = CreateUser,
    responses(
        (status = 201, description = "`Successfully created <username>`", body = Detail),
        (status = 400, description = "Malformed JSON, wrong content type or wrong JSON type", body = ErrorBody),
        (status = 401, description = "`invalid_api_key`", body = ErrorBody),
        (status = 409, description = "`username_taken` (case-insensitively)", body = ErrorBody),
        (status = 429, description = "Too many registrations from this address or with this API key, or too many hashes in flight from this address; see `Retry-After`", body = ErrorBody),
        (status = 413, description = "Body over 64 KiB", body = ErrorBody),
        (status = 422, description = "Every broken rule, in `detail` and `errors`", body = ErrorBody),
        (status = 503, description = "Database unavailable or hashing pool saturated", body = ErrorBody),
    ))]
pub(super) async fn create(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Json<CreateUser>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let mut broken = Vec::new();
    let username = required("username", body.username, &mut broken);
    let password = required("password", body.password, &mut broken);
    let public_key = required("public_key", body.public_key, &mut broken);
    let api_key = required("api_key", body.api_key, &mut broken);
    let username = username.and_then(|u| keep(Username::parse(&u), &mut broken));
    let password = password.and_then(|p| keep(Password::parse(p), &mut broken));
    let public_key = public_key.and_then(|k| keep(PublicKey::parse(k), &mut broken));
    let (Some(username), Some(password), Some(public_key), Some(api_key)) =
        (username, password, public_key, api_key)
    else {
        return Err(ApiError::Invalid(broken));
    };

    let api_key_id = keys::live_key_id(&state, &api_key).await?;
    let address = client_address(&req);
    let limits = &state.limits;
    limits
        .registrations
        .hit(&address)
        .await
        .map_err(ApiError::rate_limited)?;
    limits
        .registrations_per_key
        .hit(&api_key_id)
        .await
        .map_err(ApiError::rate_limited)?;
    let password_hash = state
        .passwords
        .hash(password.into_inner(), &address)
        .await?;
    let user = NewUser {
        id: uuid::Uuid::new_v4().to_string(),
        username: username.as_str().to_owned(),
        username_key: username.key().to_owned(),
        username_skeleton: username.skeleton(),
        password_hash,
        public_key: public_key.into_inner(),
        created_at: unix_now(),
    };
    match state
        .store
        .run(move |conn| store::insert_user(conn, user))
        .await
    {
        Err(store::StoreError::UsernameTaken) => {
            Err(ApiError::UsernameTaken(username.as_str().to_owned()))
        }
        other => other.map_err(ApiError::from),
    }?;
    tracing::info!("user created");
    Ok(HttpResponse::Created().json(Detail {
        detail: format!("Successfully created {}", username.as_str()),
    }))
}

fn keep<T>(parsed: Result<T, Vec<Violation>>, broken: &mut Vec<Violation>) -> Option<T> {
    parsed.map_err(|mut v| broken.append(&mut v)).ok()
}

/// Log a user in and obtain a session token.
#[utoipa::path(put, path = "/user", tag = "users", request_body = Login,
    responses(
        (status = 200, description = "Logged in", body = LoginReply),
        (status = 400, description = "Malformed JSON, wrong content type or wrong JSON type", body = ErrorBody),
        (status = 401, description = "`invalid_api_key`, or `invalid_credentials` for an unknown user or a wrong password alike", body = ErrorBody),
        (status = 422, description = "A field is missing or the password is over 128 characters", body = ErrorBody),
        (status = 429, description = "Too many failures from this address (in all or for this username), a growing delay after failures for this username from anywhere, too many logins from this address or API key, or too many hashes in flight from this address; see `Retry-After`", body = ErrorBody),
        (status = 503, description = "Database unavailable or hashing pool saturated", body = ErrorBody),
    ))]
pub(super) async fn login(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Json<Login>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let mut broken = Vec::new();
    let username = required("username", body.username, &mut broken);
    let password = required("password", body.password, &mut broken);
    let api_key = required("api_key", body.api_key, &mut broken);
    let (Some(username), Some(password), Some(api_key)) = (username, password, api_key) else {
        return Err(ApiError::Invalid(broken));
    };
    refuse_overlong(&password)?;
    let api_key_id = keys::live_key_id(&state, &api_key).await?;
    let successes = [
        (
            &state.limits.logins,
            format!("addr:{}", client_address(&req)),
        ),
        (&state.limits.logins_per_key, format!("key:{api_key_id}")),
    ];
    for (limit, key) in &successes {
        if let Err(retry) = limit.check(key).await {
            state.metrics.login("rate_limited");
            return Err(ApiError::rate_limited(retry));
        }
    }

    let name = Username::parse(&username).ok();
    let user = verify_password(&state, &req, name.as_ref().map(Username::key), password).await?;
    for (limit, key) in &successes {
        limit.record(key).await;
    }

    let issued = state.sessions.issue(user.id, api_key_id).await?;
    state.metrics.login("success");
    Ok(HttpResponse::Ok().json(LoginReply {
        detail: format!("Successful Login for {}", user.username),
        token: issued.token,
        expires_at: rfc3339(issued.expires_at)?,
    }))
}

/// Checks `password` for the user with `user_key` (`None`: a name no user can have) under the
/// failure limits; the user on success. An unknown user is verified against a dummy hash, so it
/// costs what a wrong password costs.
///
/// Failures count per client address, in all and for this username, and a client past either
/// gets 429 until its window ends. A username guessed from many addresses is slowed by
/// [`crate::limits::UsernameGuard`]'s growing delays instead: its owner is never locked out.
async fn verify_password(
    state: &AppState,
    req: &HttpRequest,
    user_key: Option<&str>,
    password: String,
) -> Result<store::UserRow, ApiError> {
    let address = client_address(req);
    let keys: Vec<String> = std::iter::once(format!("addr:{address}"))
        .chain(user_key.map(|k| format!("addr:{address}|user:{k}")))
        .collect();
    let limits = &state.limits;
    let refused = async {
        for key in &keys {
            limits.login_failures.check(key).await?;
        }
        match user_key {
            Some(user) => limits.usernames.check(user, &address).await,
            None => Ok(()),
        }
    };
    if let Err(retry) = refused.await {
        state.metrics.login("rate_limited");
        return Err(ApiError::rate_limited(retry));
    }
    let user = match user_key {
        Some(key) => {
            let key = key.to_owned();
            state
                .store
                .run(move |conn| store::user_by_key(conn, &key))
                .await?
        }
        None => None,
    };
    let hash = user.as_ref().map(|u| u.password_hash.clone());
    let matches = state.passwords.verify(password, hash, &address).await?;
    match user {
        Some(user) if matches => {
            for key in keys.iter().skip(1) {
                limits.login_failures.reset(key).await;
            }
            // A user was found, so `user_key` named it.
            if let Some(key) = user_key {
                limits.usernames.succeeded(key, &address).await;
            }
            Ok(user)
        }
        _ => {
            for key in &keys {
                limits.login_failures.record(key).await;
            }
            if let Some(key) = user_key {
                limits.usernames.failed(key).await;
            }
            state.metrics.login("failure");
            Err(ApiError::InvalidCredentials)
        }
    }
}

/// The logged-in user, once they have typed their password again (under the same failure
/// limits as a login): what deleting an account or replacing its key asks for.
async fn confirm_password(
    state: &AppState,
    req: &HttpRequest,
    username: &str,
    password: String,
) -> Result<store::UserRow, ApiError> {
    refuse_overlong(&password)?;
    verify_password(state, req, Some(&Username::key_of(username)), password).await
}

fn refuse_overlong(password: &str) -> Result<(), ApiError> {
    if domain::password_too_long(password) {
        return Err(ApiError::Invalid(vec![Violation::new(
            "password",
            format!(
                "password must be at most {} characters",
                domain::PASSWORD_CHARS.end()
            ),
        )]));
    }
    Ok(())
}

pub(super) fn rfc3339(unix_seconds: i64) -> anyhow::Result<String> {
    Ok(time::OffsetDateTime::from_unix_timestamp(unix_seconds)?
        .format(&time::format_description::well_known::Rfc3339)?)
}

/// A user's public key (rate limited per client address).
#[utoipa::path(get, path = "/user/{username}", tag = "users",
    params(("username" = String, Path, description = "Matched as at creation: NFC, ignoring case")),
    responses(
        (status = 200, description = "The public key is in `detail`", body = Detail),
        (status = 404, description = "`user_not_found`", body = ErrorBody),
        (status = 429, description = "Too many lookups from this address", body = ErrorBody),
    ))]
pub(super) async fn public_key(
    state: web::Data<AppState>,
    req: HttpRequest,
    username: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    look_up(&state, &req, &username).await
}

/// `GET /user/public_key` and `GET /user/password`: the key of a user named `public_key` or
/// `password`, whose paths are also the routes of [`replace_public_key`] and
/// [`change_password`].
pub(super) async fn public_key_of_reserved_name(
    state: web::Data<AppState>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let name = req.path().rsplit('/').next().unwrap_or_default().to_owned();
    look_up(&state, &req, &name).await
}

async fn look_up(
    state: &AppState,
    req: &HttpRequest,
    username: &str,
) -> Result<HttpResponse, ApiError> {
    state
        .limits
        .lookups
        .hit(&client_address(req))
        .await
        .map_err(ApiError::rate_limited)?;
    let user = match Username::parse(username) {
        Ok(name) => {
            let key = name.key().to_owned();
            state
                .store
                .run(move |conn| store::user_by_key(conn, &key))
                .await?
        }
        // A name that breaks the rules cannot exist; the database need not be asked.
        Err(_) => None,
    };
    let user = user.ok_or_else(|| ApiError::NotFound {
        code: "user_not_found",
        detail: "no such user".into(),
    })?;
    Ok(HttpResponse::Ok().json(Detail {
        detail: user.public_key,
    }))
}

/// Delete the logged-in user and all its sessions (their connections close with `4001`).
#[utoipa::path(delete, path = "/user", tag = "users", operation_id = "delete_user", request_body = DeleteUser,
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = "`invalid_token`, or `invalid_credentials` for a wrong password", body = ErrorBody),
        (status = 422, description = "`password` is missing", body = ErrorBody),
        (status = 429, description = "Too many wrong passwords", body = ErrorBody),
    ))]
pub(super) async fn delete(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Json<DeleteUser>,
) -> Result<HttpResponse, ApiError> {
    let session = authenticate(&state, &req).await?;
    let mut broken = Vec::new();
    let Some(password) = required("password", body.into_inner().password, &mut broken) else {
        return Err(ApiError::Invalid(broken));
    };
    let user = confirm_password(&state, &req, &session.username, password).await?;
    state
        .sessions
        .end(move |conn| store::delete_user(conn, &user.id))
        .await?;
    tracing::info!("user deleted");
    Ok(HttpResponse::NoContent().finish())
}

/// Replace the logged-in user's public key, as a client does on a new device or after its keys
/// were lost (`e2e.md`). Every session of the user ends, so its connections close with `4001`
/// and other members see the user come back with the new key.
#[utoipa::path(put, path = "/user/public_key", tag = "users", request_body = ReplacePublicKey,
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Replaced; every session of the user has ended"),
        (status = 400, description = "Malformed JSON, wrong content type or wrong JSON type", body = ErrorBody),
        (status = 401, description = "`invalid_token`, or `invalid_credentials` for a wrong password", body = ErrorBody),
        (status = 422, description = "A field is missing, or the key breaks the rules", body = ErrorBody),
        (status = 429, description = "Too many wrong passwords", body = ErrorBody),
        (status = 503, description = "Database unavailable or hashing pool saturated", body = ErrorBody),
    ))]
pub(super) async fn replace_public_key(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Json<ReplacePublicKey>,
) -> Result<HttpResponse, ApiError> {
    let session = authenticate(&state, &req).await?;
    let body = body.into_inner();
    let mut broken = Vec::new();
    let password = required("password", body.password, &mut broken);
    let public_key = required("public_key", body.public_key, &mut broken);
    let public_key = public_key.and_then(|k| keep(PublicKey::parse(k), &mut broken));
    let (Some(password), Some(public_key)) = (password, public_key) else {
        return Err(ApiError::Invalid(broken));
    };
    let user = confirm_password(&state, &req, &session.username, password).await?;
    let public_key = public_key.into_inner();
    state
        .sessions
        .end(move |conn| store::replace_public_key(conn, &user.id, &public_key))
        .await?;
    tracing::info!("public key replaced; the user's sessions ended");
    Ok(HttpResponse::NoContent().finish())
}

/// Change the logged-in user's password. The session that asks stays; every other session of
/// the user ends (their connections close with `4001`): changing a password is how a user
/// shuts out whoever learned the old one.
#[utoipa::path(put, path = "/user/password", tag = "users", request_body = ChangePassword,
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Changed; the user's other sessions have ended"),
        (status = 400, description = "Malformed JSON, wrong content type or wrong JSON type", body = ErrorBody),
        (status = 401, description = "`invalid_token`, or `invalid_credentials` for a wrong current password", body = ErrorBody),
        (status = 422, description = "A field is missing, or the new password breaks the rules", body = ErrorBody),
        (status = 429, description = "Too many wrong passwords, or too many hashes in flight from this address", body = ErrorBody),
        (status = 503, description = "Database unavailable or hashing pool saturated", body = ErrorBody),
    ))]
pub(super) async fn change_password(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Json<ChangePassword>,
) -> Result<HttpResponse, ApiError> {
    let session = authenticate(&state, &req).await?;
    let body = body.into_inner();
    let mut broken = Vec::new();
    let password = required("password", body.password, &mut broken);
    let new_password = required("new_password", body.new_password, &mut broken);
    let new_password = new_password.and_then(|p| keep(Password::parse(p), &mut broken));
    let (Some(password), Some(new_password)) = (password, new_password) else {
        return Err(ApiError::Invalid(broken));
    };
    let user = confirm_password(&state, &req, &session.username, password).await?;
    let hash = state
        .passwords
        .hash(new_password.into_inner(), &client_address(&req))
        .await?;
    let keep = session.session_id.clone();
    state
        .sessions
        .end(move |conn| store::change_password(conn, &user.id, &hash, &keep))
        .await?;
    tracing::info!("password changed; the user's other sessions ended");
    Ok(HttpResponse::NoContent().finish())
}
