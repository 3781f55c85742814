//! Who holds a token, asked of ilo-api over gRPC before every upgrade, through a small cache so
//! reconnect storms do not hammer ilo-api; and the revocations ilo-api streams back.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ilo_proto::v1::tokens_client::TokensClient;
use ilo_proto::v1::{CheckSessionsRequest, ValidateTokenRequest, WatchRevocationsRequest};
use ilo_protocol::close;
use sha2::{Digest, Sha256};
use tokio::sync::watch;
use tonic::transport::{Channel, Endpoint};

use crate::hub::{Hub, Identity};
use crate::metrics::Metrics;

/// How long a validation may take before ilo-api counts as unreachable.
const DEADLINE: Duration = Duration::from_secs(2);
/// Tokens remembered at most.
const CACHE_CAPACITY: usize = 10_000;

#[derive(Debug, PartialEq, Eq)]
pub enum AuthError {
    /// Unknown, expired or revoked.
    Invalid,
    /// ilo-api did not answer and the token is not known to be valid.
    Unavailable,
}

pub struct Auth {
    channel: Channel,
    client: TokensClient<Channel>,
    /// By SHA-256 of the token, so the relay's memory holds no usable token. Entries are trusted
    /// until the token expires; revocations remove them.
    cache: Mutex<HashMap<[u8; 32], Arc<Identity>>>,
    metrics: Arc<Metrics>,
}

impl Auth {
    pub fn new(ilo_grpc_url: &str, metrics: Arc<Metrics>) -> anyhow::Result<Self> {
        let channel = Endpoint::from_shared(ilo_grpc_url.to_owned())?
            .connect_timeout(DEADLINE)
            .timeout(DEADLINE)
            .tcp_nodelay(true)
            .connect_lazy();
        Ok(Self {
            client: TokensClient::new(channel.clone()),
            channel,
            cache: Mutex::new(HashMap::new()),
            metrics,
        })
    }

    /// The connection to ilo-api's gRPC port, shared by every client built on it.
    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    pub async fn validate(&self, token: &str) -> Result<Arc<Identity>, AuthError> {
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let now = unix_now();
        if let Some(identity) = self.lock().get(&key).filter(|i| i.expires_at > now) {
            self.metrics.validation_cache_hits.inc();
            return Ok(identity.clone());
        }
        let started = Instant::now();
        let reply = self
            .client
            .clone()
            .validate_token(ValidateTokenRequest {
                token: token.to_owned(),
            })
            .await;
        self.metrics
            .validation_seconds
            .observe(started.elapsed().as_secs_f64());
        let reply = match reply {
            Ok(reply) => reply.into_inner(),
            Err(status) if status.code() == tonic::Code::Unauthenticated => {
                return Err(AuthError::Invalid);
            }
            Err(status) => {
                tracing::warn!(code = ?status.code(), "ilo-api could not validate a token");
                return Err(AuthError::Unavailable);
            }
        };
        let identity = Arc::new(Identity {
            user_id: reply.user_id,
            username: reply.username,
            public_key: reply.public_key,
            session_id: reply.session_id,
            expires_at: reply.expires_at.map_or(now, |t| t.seconds),
        });
        let mut cache = self.lock();
        if cache.len() >= CACHE_CAPACITY {
            cache.retain(|_, i| i.expires_at > now);
            if cache.len() >= CACHE_CAPACITY {
                cache.clear();
            }
        }
        cache.insert(key, identity.clone());
        Ok(identity)
    }

    /// Forgets revoked sessions.
    pub fn forget(&self, session_ids: &[String]) {
        self.lock()
            .retain(|_, i| !session_ids.contains(&i.session_id));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Arc<Identity>>> {
        self.cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Follows ilo-api's revocation stream until `stopping`, closing revoked sessions' connections
    /// with 4001. Each time the stream (re)opens, revocations may have been missed, so every
    /// cached token is dropped and every live connection's session re-validated.
    pub async fn follow_revocations(
        self: Arc<Self>,
        hub: Arc<Hub>,
        mut stopping: watch::Receiver<bool>,
    ) {
        let mut backoff = Duration::from_millis(100);
        loop {
            let opened = self
                .client
                .clone()
                .watch_revocations(WatchRevocationsRequest {})
                .await;
            match opened {
                Ok(stream) => {
                    backoff = Duration::from_millis(100);
                    self.resync(&hub).await;
                    let mut stream = stream.into_inner();
                    loop {
                        tokio::select! {
                            next = stream.message() => match next {
                                Ok(Some(revocation)) => {
                                    self.forget(&revocation.session_ids);
                                    hub.close_sessions(&revocation.session_ids, close::INVALID_SESSION);
                                }
                                Ok(None) | Err(_) => break,
                            },
                            _ = stopping.wait_for(|s| *s) => return,
                        }
                    }
                    tracing::warn!("revocation stream ended; reopening");
                }
                Err(status) => {
                    tracing::debug!(code = ?status.code(), "cannot watch revocations yet")
                }
            }
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                _ = stopping.wait_for(|s| *s) => return,
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }

    /// Drops the cache and closes live connections whose sessions ended while unwatched.
    async fn resync(&self, hub: &Hub) {
        self.lock().clear();
        let session_ids = hub.session_ids();
        if session_ids.is_empty() {
            return;
        }
        match self
            .client
            .clone()
            .check_sessions(CheckSessionsRequest { session_ids })
            .await
        {
            Ok(reply) => {
                let ended = reply.into_inner().ended_session_ids;
                let closed = hub.close_sessions(&ended, close::INVALID_SESSION);
                tracing::info!(
                    closed,
                    "sessions re-checked after (re)opening the revocation stream"
                );
            }
            Err(status) => tracing::warn!(code = ?status.code(), "could not re-check sessions"),
        }
    }
}

pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}
