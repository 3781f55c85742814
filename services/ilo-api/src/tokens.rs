//! Session tokens after login: validation (through a small cache) and revocation, which every
//! relay hears about through [`Tokens::subscribe`] (the gRPC `WatchRevocations` stream) and, when
//! `REDIS_URL` is set, on the Redis channel [`REVOCATIONS_CHANNEL`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::broadcast;

use crate::secrets;
use crate::store::{self, Store, StoreError};

/// Redis channel carrying `{"session_ids": [...]}` for each revocation.
pub const REVOCATIONS_CHANNEL: &str = "ilo:revocations";
/// Revocations buffered per watcher; one that falls further behind is cut off and must resync.
const REVOCATION_BUFFER: usize = 1024;
/// Sessions remembered at most; the cache is emptied when it fills.
const CACHE_CAPACITY: usize = 100_000;
/// How long a validation is trusted without asking the database again.
const CACHE_TTL: Duration = Duration::from_secs(60);

/// Who holds a valid session token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidSession {
    pub session_id: String,
    pub user_id: String,
    pub username: String,
    pub public_key: String,
    /// Unix seconds.
    pub expires_at: i64,
}

pub type Revoked = Arc<[String]>;

pub struct Tokens {
    store: Store,
    cache: Mutex<Cache>,
    revocations: broadcast::Sender<Revoked>,
}

#[derive(Default)]
struct Cache {
    by_token: HashMap<String, (Arc<ValidSession>, Instant)>,
    token_of_session: HashMap<String, String>,
    /// Bumped by every revocation, so a lookup that raced one does not cache what it read.
    generation: u64,
}

impl Tokens {
    pub fn new(store: Store) -> Self {
        Self {
            store,
            cache: Mutex::new(Cache::default()),
            revocations: broadcast::channel(REVOCATION_BUFFER).0,
        }
    }

    /// The session behind `token`, if it is known, unexpired and not revoked.
    pub async fn validate(&self, token: &str) -> Result<Option<Arc<ValidSession>>, StoreError> {
        Ok(self.lookup(token).await?.0)
    }

    /// Like [`Tokens::validate`], and whether the answer came from the cache.
    pub async fn lookup(
        &self,
        token: &str,
    ) -> Result<(Option<Arc<ValidSession>>, bool), StoreError> {
        let token_hash = secrets::digest(token);
        let now = unix_now();
        let generation = {
            let cache = self.lock();
            if let Some((session, fresh_until)) = cache.by_token.get(&token_hash)
                && Instant::now() < *fresh_until
                && session.expires_at > now
            {
                return Ok((Some(session.clone()), true));
            }
            cache.generation
        };
        let key = token_hash.clone();
        let found = self
            .store
            .run(move |conn| store::session_by_token(conn, &key, now))
            .await?;
        let Some(found) = found else {
            return Ok((None, false));
        };
        let session = Arc::new(ValidSession {
            session_id: found.session_id,
            user_id: found.user.id,
            username: found.user.username,
            public_key: found.user.public_key,
            expires_at: found.expires_at,
        });
        self.remember(token_hash, session.clone(), generation);
        Ok((Some(session), false))
    }

    fn remember(&self, token_hash: String, session: Arc<ValidSession>, generation: u64) {
        let mut cache = self.lock();
        if cache.generation != generation {
            return;
        }
        if cache.by_token.len() >= CACHE_CAPACITY {
            cache.by_token.clear();
            cache.token_of_session.clear();
        }
        cache
            .token_of_session
            .insert(session.session_id.clone(), token_hash.clone());
        cache
            .by_token
            .insert(token_hash, (session, Instant::now() + CACHE_TTL));
    }

    /// Which of `session_ids` have ended (revoked, expired or never existed).
    pub async fn ended(&self, session_ids: Vec<String>) -> Result<Vec<String>, StoreError> {
        let now = unix_now();
        let (ids, asked) = (session_ids.clone(), session_ids);
        let live = self
            .store
            .run(move |conn| store::live_sessions(conn, &ids, now))
            .await?;
        let live: std::collections::HashSet<String> = live.into_iter().collect();
        Ok(asked.into_iter().filter(|id| !live.contains(id)).collect())
    }

    /// Forgets the sessions and tells every watcher (relays) they are gone.
    pub fn revoke(&self, session_ids: Vec<String>) {
        if session_ids.is_empty() {
            return;
        }
        {
            let mut cache = self.lock();
            cache.generation += 1;
            for id in &session_ids {
                if let Some(token_hash) = cache.token_of_session.remove(id) {
                    cache.by_token.remove(&token_hash);
                }
            }
        }
        tracing::info!(sessions = session_ids.len(), "sessions revoked");
        // No receiver is fine: no relay is watching right now, and relays resync when they connect.
        let _ = self.revocations.send(session_ids.into());
    }

    /// Revocations from now on. A receiver that lags gets `RecvError::Lagged` and must resync.
    pub fn subscribe(&self) -> broadcast::Receiver<Revoked> {
        self.revocations.subscribe()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Publishes every revocation on Redis until `revocations` closes. Reconnects by itself;
/// a revocation that finds Redis down is logged and dropped (relays also hear it over gRPC).
pub async fn publish_to_redis(url: String, mut revocations: broadcast::Receiver<Revoked>) {
    let client = match redis::Client::open(url) {
        Ok(client) => client,
        Err(e) => {
            tracing::error!(error = %e, "REDIS_URL is not a Redis URL; revocations go over gRPC only");
            return;
        }
    };
    let mut connection = None;
    loop {
        let ids = match revocations.recv().await {
            Ok(ids) => ids,
            Err(broadcast::error::RecvError::Lagged(n)) => {
                tracing::warn!(missed = n, "revocation publisher fell behind");
                continue;
            }
            Err(broadcast::error::RecvError::Closed) => return,
        };
        let payload = serde_json::json!({ "session_ids": &*ids }).to_string();
        if connection.is_none() {
            connection = client.get_multiplexed_async_connection().await.ok();
        }
        let sent = match connection.as_mut() {
            Some(conn) => redis::cmd("PUBLISH")
                .arg(REVOCATIONS_CHANNEL)
                .arg(&payload)
                .query_async::<i64>(conn)
                .await
                .is_ok(),
            None => false,
        };
        if !sent {
            connection = None;
            tracing::warn!("could not publish a revocation on Redis");
        }
    }
}

pub use ilo_runtime::unix_seconds as unix_now;
