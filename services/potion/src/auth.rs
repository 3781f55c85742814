//! Who holds a token, asked of ilo-api over gRPC before every upgrade, through a small cache so
//! reconnect storms do not hammer ilo-api; and the revocations ilo-api streams back.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use ilo_proto::v1::tokens_client::TokensClient;
use ilo_proto::v1::{CheckSessionsRequest, ValidateTokenRequest, WatchRevocationsRequest};
use ilo_protocol::close;
use ilo_runtime::backoff::Backoff;
use ilo_runtime::tokens::TokenCache;
use moka::sync::Cache;
use sha2::{Digest, Sha256};
use tokio::sync::watch;
use tonic::transport::{Channel, Endpoint};

use crate::hub::{Hub, Identity};
use crate::metrics::Metrics;

/// How long a validation may take before ilo-api counts as unreachable.
const DEADLINE: Duration = Duration::from_secs(2);
/// Tokens remembered at most (valid ones, and unknown ones apart); the least used go first.
const CACHE_CAPACITY: u64 = 10_000;
/// How long a valid token is remembered (within its own expiry) before ilo-api is asked again.
const VALID_FOR: Duration = Duration::from_secs(3600);
/// How long a token ilo-api did not know is refused without asking again: a flood of garbage
/// tokens reaches ilo-api's database once per token, not once per upgrade. Tokens are random,
/// so an unknown one never becomes valid.
const UNKNOWN_FOR: Duration = Duration::from_secs(30);
/// How long a heard revocation is remembered: far longer than a validation can be in flight.
const REVOKED_FOR: Duration = Duration::from_secs(120);
/// Revoked session ids remembered at most.
const REVOKED_CAPACITY: u64 = 100_000;

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum AuthError {
    /// Unknown, expired or revoked.
    Invalid,
    /// ilo-api did not answer and the token is not known to be valid.
    Unavailable,
}

/// Keys are SHA-256 digests of tokens, so the relay's memory holds no usable token.
type TokenKey = [u8; 32];

pub(crate) struct Auth {
    channel: Channel,
    client: TokensClient<Channel>,
    /// Valid tokens. Answered from only while the revocation stream is open (a revocation
    /// missed while it is closed must not be trusted away), or when ilo-api cannot be reached.
    valid: TokenCache<TokenKey, Arc<Identity>>,
    /// Tokens ilo-api did not know.
    unknown: Cache<TokenKey, ()>,
    /// Sessions revoked lately: a validation that was in flight when one was revoked must not
    /// let it in (it read the session before the revocation), nor be cached.
    revoked: Cache<String, ()>,
    /// Held while a validation's result is checked against `revoked` and cached, and while a
    /// revocation is recorded, so the two cannot interleave.
    deciding: Mutex<()>,
    /// Whether the revocation stream is open.
    watching: AtomicBool,
    metrics: Arc<Metrics>,
}

impl Auth {
    pub(crate) fn new(ilo_grpc_url: &str, metrics: Arc<Metrics>) -> anyhow::Result<Self> {
        let channel = Endpoint::from_shared(ilo_grpc_url.to_owned())?
            .connect_timeout(DEADLINE)
            .timeout(DEADLINE)
            .tcp_nodelay(true)
            .connect_lazy();
        Ok(Self {
            client: TokensClient::new(channel.clone()),
            channel,
            valid: TokenCache::new(CACHE_CAPACITY, VALID_FOR),
            unknown: bounded(CACHE_CAPACITY, UNKNOWN_FOR),
            revoked: bounded(REVOKED_CAPACITY, REVOKED_FOR),
            deciding: Mutex::new(()),
            watching: AtomicBool::new(false),
            metrics,
        })
    }

    /// The connection to ilo-api's gRPC port, shared by every client built on it.
    pub(crate) fn channel(&self) -> Channel {
        self.channel.clone()
    }

    pub(crate) async fn validate(&self, token: &str) -> Result<Arc<Identity>, AuthError> {
        let key: TokenKey = Sha256::digest(token.as_bytes()).into();
        let now = unix_now();
        let cached = self.valid.get(&key).filter(|i| i.expires_at > now);
        if let Some(identity) = &cached
            && self.watching.load(Ordering::Acquire)
        {
            self.metrics.validation_cache_hits.inc();
            return Ok(identity.clone());
        }
        if self.unknown.contains_key(&key) {
            self.metrics.validation_cache_hits.inc();
            return Err(AuthError::Invalid);
        }
        let started = Instant::now();
        let ask = || {
            let mut client = self.client.clone();
            let request = ValidateTokenRequest {
                token: token.to_owned(),
            };
            async move { client.validate_token(request).await }
        };
        let reply = match ask().await {
            // The instance this relay was connected to went away: the channel connects again,
            // resolving the name anew, so one more try reaches another instance.
            Err(status) if status.code() == tonic::Code::Unavailable => ask().await,
            reply => reply,
        };
        self.metrics
            .validation_seconds
            .observe(started.elapsed().as_secs_f64());
        let reply = match reply {
            Ok(reply) => reply.into_inner(),
            Err(status) if status.code() == tonic::Code::Unauthenticated => {
                self.unknown.insert(key, ());
                return Err(AuthError::Invalid);
            }
            // ilo-api is unreachable: a token known to be valid still connects, so chat goes
            // on through an ilo-api outage; the re-check when the stream reopens catches any
            // revocation missed meanwhile.
            Err(_) if cached.is_some() => {
                self.metrics.validation_cache_hits.inc();
                return cached.ok_or(AuthError::Unavailable);
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
        let _deciding = self.decide();
        if self.revoked.contains_key(&identity.session_id) {
            return Err(AuthError::Invalid);
        }
        self.valid
            .insert(key, identity.session_id.clone(), identity.clone());
        Ok(identity)
    }

    /// Forgets revoked sessions, and remembers them for a while: see [`Auth::is_revoked`].
    pub(crate) fn forget(&self, session_ids: &[String]) {
        let _deciding = self.decide();
        for id in session_ids {
            self.revoked.insert(id.clone(), ());
            self.valid.forget(id);
        }
    }

    /// Whether the session was revoked lately. A connection checks it once it is registered in
    /// the hub: a revocation heard before that is caught here, one heard after closes it there.
    pub(crate) fn is_revoked(&self, session_id: &str) -> bool {
        self.revoked.contains_key(session_id)
    }

    fn decide(&self) -> std::sync::MutexGuard<'_, ()> {
        self.deciding.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Follows ilo-api's revocation stream until `stopping`, closing revoked sessions' connections
    /// with 4001. Each time the stream (re)opens, revocations may have been missed, so every
    /// cached token is dropped and every live connection's session re-validated.
    pub(crate) async fn follow_revocations(
        self: Arc<Self>,
        hub: Arc<Hub>,
        mut stopping: watch::Receiver<bool>,
    ) {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        loop {
            let opened = self
                .client
                .clone()
                .watch_revocations(WatchRevocationsRequest {})
                .await;
            match opened {
                Ok(stream) => {
                    backoff.reset();
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
                    self.stop_trusting();
                    tracing::warn!("revocation stream ended; reopening");
                }
                Err(status) => {
                    tracing::debug!(code = ?status.code(), "cannot watch revocations yet")
                }
            }
            tokio::select! {
                () = tokio::time::sleep(backoff.next_delay()) => {}
                _ = stopping.wait_for(|s| *s) => return,
            }
        }
    }

    /// Until the stream is open again, every upgrade asks ilo-api first.
    fn stop_trusting(&self) {
        self.watching.store(false, Ordering::Release);
    }

    /// Empties the cache (a revocation missed while the stream was closed cannot linger in it)
    /// and trusts it again, and closes live connections whose sessions ended meanwhile.
    async fn resync(&self, hub: &Hub) {
        self.valid.clear();
        self.watching.store(true, Ordering::Release);
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

fn bounded<K, V>(capacity: u64, ttl: Duration) -> Cache<K, V>
where
    K: std::hash::Hash + Eq + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    Cache::builder()
        .max_capacity(capacity)
        .time_to_live(ttl)
        .build()
}

pub(crate) use ilo_runtime::unix_seconds as unix_now;
