//! Who holds a token, asked of ilo-api over gRPC before every upgrade, through a small cache so
//! reconnect storms do not hammer ilo-api; and the revocations ilo-api streams back.

use std::collections::{HashMap, HashSet, VecDeque};
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
/// Tokens remembered at most (valid ones, and unknown ones apart).
const CACHE_CAPACITY: usize = 10_000;
/// How long a token ilo-api did not know is refused without asking again: a flood of garbage
/// tokens reaches ilo-api's database once per token, not once per upgrade. Tokens are random,
/// so an unknown one never becomes valid.
const UNKNOWN_FOR: Duration = Duration::from_secs(30);
/// How long a heard revocation is remembered: far longer than a validation can be in flight.
const REVOKED_FOR: Duration = Duration::from_secs(120);
/// Revoked session ids remembered at most; the oldest are forgotten first.
const REVOKED_CAPACITY: usize = 100_000;

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
    /// Behind one lock, so that a revocation and a validation's result cannot interleave.
    cache: Mutex<Cache>,
    metrics: Arc<Metrics>,
}

#[derive(Default)]
struct Cache {
    /// By SHA-256 of the token, so the relay's memory holds no usable token. Entries are trusted
    /// until the token expires; revocations remove them.
    valid: HashMap<[u8; 32], Arc<Identity>>,
    /// Tokens ilo-api did not know, and when it said so.
    unknown: HashMap<[u8; 32], Instant>,
    /// Sessions revoked lately: a validation that was in flight when one was revoked must not
    /// let it in (it read the session before the revocation), nor be cached.
    revoked: HashSet<String>,
    revoked_order: VecDeque<(Instant, String)>,
}

impl Cache {
    fn remember_revoked(&mut self, session_ids: &[String]) {
        let now = Instant::now();
        while let Some((at, id)) = self.revoked_order.front()
            && (now.duration_since(*at) > REVOKED_FOR
                || self.revoked_order.len() + session_ids.len() > REVOKED_CAPACITY)
        {
            self.revoked.remove(id);
            self.revoked_order.pop_front();
        }
        for id in session_ids {
            if self.revoked.insert(id.clone()) {
                self.revoked_order.push_back((now, id.clone()));
            }
        }
    }
}

/// Keeps a map under its capacity: expired entries go first, everything if that is not enough.
fn make_room<V>(map: &mut HashMap<[u8; 32], V>, live: impl Fn(&V) -> bool) {
    if map.len() >= CACHE_CAPACITY {
        map.retain(|_, v| live(v));
        if map.len() >= CACHE_CAPACITY {
            map.clear();
        }
    }
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
            cache: Mutex::new(Cache::default()),
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
        {
            let cache = self.lock();
            if let Some(identity) = cache.valid.get(&key).filter(|i| i.expires_at > now) {
                self.metrics.validation_cache_hits.inc();
                return Ok(identity.clone());
            }
            if cache
                .unknown
                .get(&key)
                .is_some_and(|at| at.elapsed() < UNKNOWN_FOR)
            {
                self.metrics.validation_cache_hits.inc();
                return Err(AuthError::Invalid);
            }
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
                let mut cache = self.lock();
                make_room(&mut cache.unknown, |at| at.elapsed() < UNKNOWN_FOR);
                cache.unknown.insert(key, Instant::now());
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
        if cache.revoked.contains(&identity.session_id) {
            return Err(AuthError::Invalid);
        }
        make_room(&mut cache.valid, |i| i.expires_at > now);
        cache.valid.insert(key, identity.clone());
        Ok(identity)
    }

    /// Forgets revoked sessions, and remembers them for a while: see [`Auth::is_revoked`].
    pub fn forget(&self, session_ids: &[String]) {
        let mut cache = self.lock();
        cache.remember_revoked(session_ids);
        cache
            .valid
            .retain(|_, i| !session_ids.contains(&i.session_id));
    }

    /// Whether the session was revoked lately. A connection checks it once it is registered in
    /// the hub: a revocation heard before that is caught here, one heard after closes it there.
    pub fn is_revoked(&self, session_id: &str) -> bool {
        self.lock().revoked.contains(session_id)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Cache> {
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
        self.lock().valid.clear();
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

pub use ilo_runtime::unix_seconds as unix_now;
