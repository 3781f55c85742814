//! Every failure a client can see, mapped to a status and the contract's `{detail, code}` body
//! in one place.

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;
use utoipa::ToSchema;

use crate::domain::{Rule, Violation};
use crate::passwords::HashError;
use crate::store::StoreError;

/// The body of every reply that is not 2xx.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ErrorBody {
    /// What went wrong, for people. For `422`, every broken rule, separated by `; `.
    pub detail: String,
    /// What went wrong, for programs: stable snake_case.
    #[schema(example = "weak_password")]
    pub code: &'static str,
    /// For `422` only: each broken rule with the field it concerns.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<Violation>,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum ApiError {
    #[error("{detail}")]
    BadRequest { code: &'static str, detail: String },
    #[error("{}", join(.0))]
    Invalid(Vec<Violation>),
    #[error("the request body is larger than 64 KiB")]
    PayloadTooLarge,
    #[error("the API key is unknown or revoked")]
    InvalidApiKey,
    #[error("wrong username or password")]
    InvalidCredentials,
    #[error("the bearer token is missing, malformed, expired or revoked")]
    InvalidToken,
    #[error("the username {0} is taken")]
    UsernameTaken(String),
    #[error("{detail}")]
    NotFound { code: &'static str, detail: String },
    #[error("too many requests; retry in {0} s")]
    RateLimited(u64),
    #[error("the server is busy; retry shortly")]
    Busy,
    #[error("the database is unavailable; retry shortly")]
    DatabaseUnavailable,
    #[error("this method is not allowed here")]
    MethodNotAllowed,
    #[error("internal error")]
    Internal,
}

fn join(violations: &[Violation]) -> String {
    violations
        .iter()
        .map(|v| v.message.as_str())
        .collect::<Vec<_>>()
        .join("; ")
}

impl ApiError {
    pub(crate) fn code(&self) -> &'static str {
        match self {
            Self::BadRequest { code, .. } | Self::NotFound { code, .. } => code,
            Self::Invalid(violations) => invalid_code(violations),
            Self::PayloadTooLarge => "payload_too_large",
            Self::InvalidApiKey => "invalid_api_key",
            Self::InvalidCredentials => "invalid_credentials",
            Self::InvalidToken => "invalid_token",
            Self::UsernameTaken(_) => "username_taken",
            Self::RateLimited(_) => "rate_limited",
            Self::Busy => "busy",
            Self::DatabaseUnavailable => "database_unavailable",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::Internal => "internal_error",
        }
    }

    pub(crate) fn rate_limited(retry_after: std::time::Duration) -> Self {
        // Round up: retrying at the announced second must succeed.
        Self::RateLimited(retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0))
    }
}

/// The code of a `422`: the field's own code when one field is at fault.
fn invalid_code(violations: &[Violation]) -> &'static str {
    let first = violations.first().map(|v| v.field);
    let one_field = violations.iter().all(|v| Some(v.field) == first);
    let missing = violations.iter().all(|v| v.kind == Rule::Missing);
    match (one_field, first) {
        _ if missing => "missing_field",
        (true, Some("username")) => "invalid_username",
        (true, Some("password")) => "weak_password",
        (true, Some("public_key")) => "invalid_public_key",
        _ => "validation_failed",
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::BadRequest { .. } => StatusCode::BAD_REQUEST,
            Self::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::InvalidApiKey | Self::InvalidCredentials | Self::InvalidToken => {
                StatusCode::UNAUTHORIZED
            }
            Self::UsernameTaken(_) => StatusCode::CONFLICT,
            Self::NotFound { .. } => StatusCode::NOT_FOUND,
            Self::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::Busy | Self::DatabaseUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut reply = HttpResponse::build(self.status_code());
        match self {
            Self::RateLimited(seconds) => {
                reply.insert_header((header::RETRY_AFTER, seconds.to_string()));
            }
            Self::Busy | Self::DatabaseUnavailable => {
                reply.insert_header((header::RETRY_AFTER, HeaderValue::from_static("1")));
            }
            Self::InvalidToken => {
                reply.insert_header((header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer")));
            }
            _ => {}
        }
        let errors = match self {
            Self::Invalid(violations) => violations.clone(),
            _ => Vec::new(),
        };
        reply.json(ErrorBody {
            detail: self.to_string(),
            code: self.code(),
            errors,
        })
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::UsernameTaken => Self::Internal,
            StoreError::Unavailable(reason) => {
                tracing::warn!(%reason, "database unavailable");
                Self::DatabaseUnavailable
            }
        }
    }
}

impl From<HashError> for ApiError {
    fn from(e: HashError) -> Self {
        match e {
            HashError::Busy => Self::Busy,
            HashError::TooManyFromClient => Self::RateLimited(1),
            HashError::Failed(reason) => {
                tracing::error!(%reason, "password hashing failed");
                Self::Internal
            }
        }
    }
}

impl From<anyhow::Error> for ApiError {
    fn from(e: anyhow::Error) -> Self {
        tracing::error!(error = %e, "internal error");
        Self::Internal
    }
}

/// Maps actix's JSON extraction failures to the contract: `413` for size, `400` for the rest.
/// The body is never echoed: it may hold a password.
pub(crate) fn json_error(
    err: actix_web::error::JsonPayloadError,
    _: &actix_web::HttpRequest,
) -> actix_web::Error {
    use actix_web::error::{JsonPayloadError as J, PayloadError};
    let api = match &err {
        J::Overflow { .. } | J::OverflowKnownLength { .. } | J::Payload(PayloadError::Overflow) => {
            ApiError::PayloadTooLarge
        }
        J::ContentType => ApiError::BadRequest {
            code: "wrong_content_type",
            detail: "the body must be JSON with Content-Type: application/json".into(),
        },
        J::Deserialize(e) if e.is_data() => ApiError::BadRequest {
            code: "wrong_json_type",
            detail: format!(
                "the body must be a JSON object whose fields are strings (line {}, column {})",
                e.line(),
                e.column()
            ),
        },
        J::Deserialize(e) => ApiError::BadRequest {
            code: "malformed_json",
            detail: format!(
                "the body is not valid JSON (line {}, column {})",
                e.line(),
                e.column()
            ),
        },
        _ => ApiError::BadRequest {
            code: "bad_request",
            detail: "the body could not be read".into(),
        },
    };
    actix_web::error::InternalError::from_response(err, api.error_response()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_single_field_gets_its_own_code() {
        let weak = vec![Violation::new("password", "password needs a digit")];
        assert_eq!(ApiError::Invalid(weak).code(), "weak_password");
        let mixed = vec![
            Violation::new("password", "password needs a digit"),
            Violation::new("username", "username must not contain whitespace"),
        ];
        let err = ApiError::Invalid(mixed);
        assert_eq!(err.code(), "validation_failed");
        assert_eq!(
            err.to_string(),
            "password needs a digit; username must not contain whitespace"
        );
    }

    #[test]
    fn retry_after_rounds_up() {
        let err = ApiError::rate_limited(std::time::Duration::from_millis(1500));
        assert!(matches!(err, ApiError::RateLimited(2)));
    }
}
