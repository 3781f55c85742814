//! `GET /ws` and `GET /ws/<room>`: everything checked before the WebSocket upgrade — the
//! origin, the room name, the token (header, then subprotocol, then query) — with HTTP errors in
//! the contract's `{detail, code}` shape.

use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderMap};
use actix_web::{HttpRequest, HttpResponse, ResponseError, web};
use ilo_protocol::{BEARER_PREFIX, ROOM_RULE, SUBPROTOCOL, is_valid_room};
use serde::Deserialize;

use crate::auth::AuthError;
use crate::caps::Full;
use crate::connection;
use crate::outbox::Outbox;
use crate::relay::Relay;
use crate::socket;

#[derive(Debug, thiserror::Error)]
pub(crate) enum UpgradeError {
    #[error("{ROOM_RULE}")]
    BadRoom,
    #[error("the session token is missing, unknown, expired or revoked")]
    InvalidToken,
    #[error("this origin may not open WebSocket connections here")]
    ForbiddenOrigin,
    #[error("tokens cannot be checked right now; retry shortly")]
    AuthUnavailable,
    #[error("this relay is shutting down; connect to another")]
    ShuttingDown,
    #[error("the WebSocket handshake is invalid: {0}")]
    Handshake(String),
    #[error("too many open connections {0}; close some first")]
    TooManyConnections(&'static str),
}

impl ResponseError for UpgradeError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::BadRoom | Self::Handshake(_) => StatusCode::BAD_REQUEST,
            Self::InvalidToken => StatusCode::UNAUTHORIZED,
            Self::ForbiddenOrigin => StatusCode::FORBIDDEN,
            Self::AuthUnavailable | Self::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
            Self::TooManyConnections(_) => StatusCode::TOO_MANY_REQUESTS,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let code = match self {
            Self::BadRoom => "bad_room",
            Self::InvalidToken => "invalid_token",
            Self::ForbiddenOrigin => "forbidden_origin",
            Self::AuthUnavailable => "auth_unavailable",
            Self::ShuttingDown => "shutting_down",
            Self::Handshake(_) => "bad_handshake",
            Self::TooManyConnections(_) => "too_many_connections",
        };
        let mut reply = HttpResponse::build(self.status_code());
        match self {
            Self::AuthUnavailable | Self::ShuttingDown => {
                reply.insert_header((header::RETRY_AFTER, "1"));
            }
            Self::TooManyConnections(_) => {
                reply.insert_header((header::RETRY_AFTER, "10"));
            }
            _ => {}
        }
        reply.json(serde_json::json!({"detail": self.to_string(), "code": code}))
    }
}

#[derive(Deserialize)]
struct WsQuery {
    token: Option<String>,
    room: Option<String>,
}

pub(crate) async fn ws(
    req: HttpRequest,
    body: web::Payload,
    relay: web::Data<Arc<Relay>>,
) -> Result<HttpResponse, UpgradeError> {
    upgrade(req, body, relay.get_ref().clone(), None).await
}

pub(crate) async fn ws_room(
    req: HttpRequest,
    body: web::Payload,
    relay: web::Data<Arc<Relay>>,
    room: web::Path<String>,
) -> Result<HttpResponse, UpgradeError> {
    upgrade(req, body, relay.get_ref().clone(), Some(room.into_inner())).await
}

async fn upgrade(
    req: HttpRequest,
    body: web::Payload,
    relay: Arc<Relay>,
    path_room: Option<String>,
) -> Result<HttpResponse, UpgradeError> {
    if relay.is_stopping() {
        return Err(UpgradeError::ShuttingDown);
    }
    if !origin_allowed(&req, &relay.config.allowed_origins) {
        return Err(UpgradeError::ForbiddenOrigin);
    }
    let query = web::Query::<WsQuery>::from_query(req.query_string())
        .map(web::Query::into_inner)
        .unwrap_or(WsQuery {
            token: None,
            room: None,
        });
    let room = path_room.or(query.room);
    if room.as_deref().is_some_and(|r| !is_valid_room(r)) {
        return Err(UpgradeError::BadRoom);
    }
    let token = token_of(req.headers(), query.token).ok_or(UpgradeError::InvalidToken)?;
    let identity = relay.auth.validate(&token).await.map_err(|e| match e {
        AuthError::Invalid => UpgradeError::InvalidToken,
        AuthError::Unavailable => UpgradeError::AuthUnavailable,
    })?;

    let slot = relay
        .caps
        .admit(&identity.user_id, client_address(&req, &relay))
        .map_err(|full| {
            UpgradeError::TooManyConnections(match full {
                Full::User => "for this user",
                Full::Address => "from this address",
            })
        })?;

    let protocol = subprotocols(req.headers())
        .iter()
        .any(|p| p == SUBPROTOCOL)
        .then_some(SUBPROTOCOL);
    let outbox = Arc::new(Outbox::new(
        relay.config.queue,
        relay.metrics.slow_consumers.clone(),
    ));
    let (response, incoming) = socket::accept(
        &req,
        body,
        protocol,
        outbox.clone(),
        connection::MAX_MESSAGE,
        relay.config.coalesce(),
    )
    .map_err(|e| UpgradeError::Handshake(e.to_string()))?;
    connection::start(relay, identity, outbox, incoming, room, slot);
    Ok(response)
}

/// The client's address: the TCP peer, or the client a trusted load balancer names.
fn client_address(req: &HttpRequest, relay: &Relay) -> std::net::IpAddr {
    let peer = req
        .peer_addr()
        .map_or(std::net::IpAddr::from([0, 0, 0, 0]), |a| a.ip());
    let forwarded = req
        .headers()
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok());
    ilo_runtime::proxies::client_of(peer, forwarded, &relay.trusted_proxies)
}

/// The token, by the protocol's order of preference: header, subprotocol, query.
fn token_of(headers: &HeaderMap, query: Option<String>) -> Option<String> {
    let from_header = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim().to_owned());
    let from_subprotocol = || {
        subprotocols(headers)
            .into_iter()
            .find_map(|p| p.strip_prefix(BEARER_PREFIX).map(str::to_owned))
    };
    from_header
        .or_else(from_subprotocol)
        .or(query)
        .filter(|t| !t.is_empty())
}

fn subprotocols(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|p| p.trim().to_owned())
        .filter(|p| !p.is_empty())
        .collect()
}

/// No Origin (not a browser), the relay's own origin, or one the configuration allows.
fn origin_allowed(req: &HttpRequest, allowed: &[String]) -> bool {
    let Some(origin) = req
        .headers()
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
    else {
        return true;
    };
    let host = req.connection_info().host().to_owned();
    let own = origin
        .split_once("://")
        .is_some_and(|(_, rest)| rest.eq_ignore_ascii_case(&host));
    own || allowed
        .iter()
        .any(|a| a == "*" || a.trim_end_matches('/').eq_ignore_ascii_case(origin))
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::HeaderValue;

    #[test]
    fn the_header_wins_then_the_subprotocol_then_the_query() {
        let mut headers = HeaderMap::new();
        assert_eq!(token_of(&headers, Some("q".into())), Some("q".into()));
        headers.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static("potion.v1, bearer.s"),
        );
        assert_eq!(token_of(&headers, Some("q".into())), Some("s".into()));
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer h"));
        assert_eq!(token_of(&headers, Some("q".into())), Some("h".into()));
    }
}
