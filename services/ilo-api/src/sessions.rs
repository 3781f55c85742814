//! Sessions, with one owner: [`Sessions::issue`] opens one at login (applying `ILO_TOKEN_TTL`),
//! [`Sessions::lookup`] validates a token through a bounded cache, and [`Sessions::end`] deletes
//! sessions, revokes them in this process and publishes them to the other instances before it
//! returns. The store's deleting queries return [`Ended`], which only `end` consumes, so no
//! session is deleted without being revoked.
//!
//! With several instances the cache is trusted only while this instance hears the others'
//! revocations ([`crate::revocations`]): when it stops hearing them, the cache is emptied,
//! tokens are checked in the database, and the relays' revocation streams end.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use ilo_runtime::tokens::TokenCache;
use tokio::sync::broadcast;

use crate::revocations::Publisher;
use crate::secrets;
use crate::store::{self, AnyConnection, Ended, NewSession, Store, StoreError};

/// Revocations buffered per watcher; one that falls further behind is cut off and must resync.
const EVENT_BUFFER: usize = 1024;
/// Sessions remembered at most; the least used go first, one at a time.
const CACHE_CAPACITY: u64 = 100_000;
/// How long a validation is trusted without asking the database again.
const CACHE_TTL: Duration = Duration::from_secs(60);

/// Who holds a valid session token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ValidSession {
    pub(crate) session_id: String,
    pub(crate) user_id: String,
    pub(crate) username: String,
    pub(crate) public_key: String,
    /// Unix seconds.
    pub(crate) expires_at: i64,
}

/// A session just opened: the token is shown to the user once and never kept.
pub(crate) struct Issued {
    pub(crate) token: String,
    /// Unix seconds.
    pub(crate) expires_at: i64,
}

/// What the relays' revocation streams hear.
#[derive(Debug, Clone)]
pub(crate) enum Heard {
    Revoked(Arc<[String]>),
    /// Revocations may have been missed (this instance stopped hearing the others): every
    /// stream ends, so relays re-check their sessions.
    Missed,
}

pub(crate) struct Sessions {
    store: Store,
    ttl: Duration,
    /// By token digest.
    cache: TokenCache<String, Arc<ValidSession>>,
    /// Bumped by every revocation, under this lock, so that a lookup that raced one does not
    /// cache what it read before it.
    generation: Mutex<u64>,
    /// Whether revocations made elsewhere reach this instance (always, without Redis).
    trusted: AtomicBool,
    events: broadcast::Sender<Heard>,
    publisher: Option<Publisher>,
}

impl Sessions {
    /// Sessions on `store`; with a `publisher`, revocations go to the other instances too, and
    /// the cache waits for [`Sessions::hearing`] before it is trusted.
    pub(crate) fn new(store: Store, ttl: Duration, publisher: Option<Publisher>) -> Self {
        Self {
            store,
            ttl,
            cache: TokenCache::new(CACHE_CAPACITY, CACHE_TTL),
            generation: Mutex::new(0),
            trusted: AtomicBool::new(publisher.is_none()),
            events: broadcast::channel(EVENT_BUFFER).0,
            publisher,
        }
    }

    /// Opens a session for `user_id`, logged in with the API key `api_key_id`.
    pub(crate) async fn issue(
        &self,
        user_id: String,
        api_key_id: String,
    ) -> Result<Issued, StoreError> {
        let token =
            secrets::new_token().map_err(|e| StoreError::Unavailable(format!("no token: {e}")))?;
        let now = unix_now();
        let expires_at = now.saturating_add(self.ttl.as_secs().try_into().unwrap_or(i64::MAX));
        let session = NewSession {
            id: uuid::Uuid::new_v4().to_string(),
            token_hash: secrets::digest(&token),
            user_id,
            api_key_id,
            created_at: now,
            expires_at,
        };
        self.store
            .run(move |conn| store::insert_session(conn, session))
            .await?;
        Ok(Issued { token, expires_at })
    }

    /// The session behind `token`, if it is known, unexpired and not revoked.
    pub(crate) async fn validate(
        &self,
        token: &str,
    ) -> Result<Option<Arc<ValidSession>>, StoreError> {
        Ok(self.lookup(token).await?.0)
    }

    /// Like [`Sessions::validate`], and whether the answer came from the cache.
    pub(crate) async fn lookup(
        &self,
        token: &str,
    ) -> Result<(Option<Arc<ValidSession>>, bool), StoreError> {
        let token_hash = secrets::digest(token);
        let now = unix_now();
        let trusted = self.trusted.load(Ordering::Acquire);
        if trusted
            && let Some(session) = self.cache.get(&token_hash)
            && session.expires_at > now
        {
            return Ok((Some(session), true));
        }
        let generation = *self.lock();
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
        self.remember(token_hash, &session, generation);
        Ok((Some(session), false))
    }

    fn remember(&self, token_hash: String, session: &Arc<ValidSession>, generation: u64) {
        let current = self.lock();
        // Not while untrusted, nor when a revocation came in since the database was read.
        if *current != generation || !self.trusted.load(Ordering::Acquire) {
            return;
        }
        self.cache
            .insert(token_hash, session.session_id.clone(), session.clone());
    }

    /// Which of `session_ids` have ended (revoked, expired or never existed).
    pub(crate) async fn ended(&self, session_ids: Vec<String>) -> Result<Vec<String>, StoreError> {
        let now = unix_now();
        let ids = session_ids.clone();
        let live: HashSet<String> = self
            .store
            .run(move |conn| store::live_sessions(conn, &ids, now))
            .await?
            .into_iter()
            .collect();
        Ok(session_ids
            .into_iter()
            .filter(|id| !live.contains(id))
            .collect())
    }

    /// Runs `delete`, a store query that deletes sessions, then revokes them here and, with
    /// Redis, publishes them to the other instances; returns once they are published (or
    /// publishing gave up). Whether what `delete` was to delete existed.
    pub(crate) async fn end(
        &self,
        delete: impl FnOnce(&mut AnyConnection) -> Result<Ended, StoreError> + Send + 'static,
    ) -> Result<bool, StoreError> {
        let ended = self.store.run(delete).await?;
        if ended.sessions.is_empty() {
            return Ok(ended.found);
        }
        let ids: Arc<[String]> = ended.sessions.into();
        self.revoke(&ids);
        tracing::info!(sessions = ids.len(), "sessions ended");
        if let Some(publisher) = &self.publisher {
            publisher.publish(&ids).await;
        }
        Ok(ended.found)
    }

    /// Forgets the sessions and tells this instance's watchers (relays) they are gone.
    fn revoke(&self, ids: &Arc<[String]>) {
        {
            let mut generation = self.lock();
            *generation += 1;
            for id in ids.iter() {
                self.cache.forget(id);
            }
        }
        // No receiver is fine: no relay is watching right now, and relays resync when they connect.
        let _ = self.events.send(Heard::Revoked(ids.clone()));
    }

    /// Sessions another instance revoked.
    pub(crate) fn heard(&self, ids: Vec<String>) {
        if !ids.is_empty() {
            self.revoke(&ids.into());
        }
    }

    /// Whether this instance hears the other instances' revocations. When it stops, the cache
    /// is emptied and not used until it hears them again, and every watcher is told to resync.
    pub(crate) fn hearing(&self, up: bool) {
        let was = {
            let mut generation = self.lock();
            *generation += 1;
            self.trusted.swap(up, Ordering::AcqRel)
        };
        if !up {
            self.cache.clear();
            if was {
                let _ = self.events.send(Heard::Missed);
            }
        }
    }

    /// Whether revocations made anywhere reach this instance's watchers.
    pub(crate) fn is_hearing(&self) -> bool {
        self.trusted.load(Ordering::Acquire)
    }

    /// Revocations from now on. A receiver that lags gets `RecvError::Lagged` and must resync.
    pub(crate) fn subscribe(&self) -> broadcast::Receiver<Heard> {
        self.events.subscribe()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, u64> {
        self.generation
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

pub(crate) use ilo_runtime::unix_seconds as unix_now;
