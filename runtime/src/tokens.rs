//! Validated tokens, kept by their digest and forgotten by session: what ilo-api and the relays
//! remember so a token need not be checked again, without ever answering for a revoked one.
//! Bounded (moka: the least used go first, one at a time) and each entry kept for a while.

use std::hash::Hash;
use std::time::Duration;

use moka::sync::Cache;

pub struct TokenCache<K, V> {
    /// Token digest → the session it belongs to, and what is known of it.
    by_token: Cache<K, (String, V)>,
    /// Session → its token's digest, to forget a revoked session's token.
    token_of: Cache<String, K>,
}

impl<K, V> TokenCache<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// At most `capacity` tokens, each for at most `ttl`.
    pub fn new(capacity: u64, ttl: Duration) -> Self {
        Self {
            by_token: Cache::builder()
                .max_capacity(capacity)
                .time_to_live(ttl)
                .build(),
            token_of: Cache::builder()
                .max_capacity(capacity)
                .time_to_live(ttl)
                .build(),
        }
    }

    /// What is known of `token`. An entry counts only while its session still maps to it:
    /// [`TokenCache::forget`] removes the mapping, so the two maps evicting on their own can
    /// never revive a revoked token.
    pub fn get(&self, token: &K) -> Option<V> {
        let (session, value) = self.by_token.get(token)?;
        (self.token_of.get(&session).as_ref() == Some(token)).then_some(value)
    }

    pub fn insert(&self, token: K, session: String, value: V) {
        self.token_of.insert(session.clone(), token.clone());
        self.by_token.insert(token, (session, value));
    }

    /// Forgets the token of a session (revoked).
    pub fn forget(&self, session: &str) {
        if let Some(token) = self.token_of.remove(session) {
            self.by_token.invalidate(&token);
        }
    }

    /// Forgets everything (revocations may have been missed).
    pub fn clear(&self) {
        self.by_token.invalidate_all();
        self.token_of.invalidate_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_forgotten_session_is_never_answered_again() {
        let cache = TokenCache::new(10, Duration::from_secs(60));
        cache.insert("t1", "s1".into(), 1);
        cache.insert("t2", "s2".into(), 2);
        assert_eq!((cache.get(&"t1"), cache.get(&"t2")), (Some(1), Some(2)));
        cache.forget("s1");
        assert_eq!((cache.get(&"t1"), cache.get(&"t2")), (None, Some(2)));
        // The index losing a session (its own eviction) is enough to stop answering.
        cache.token_of.invalidate("s2");
        assert_eq!(cache.get(&"t2"), None);
        cache.insert("t3", "s3".into(), 3);
        cache.clear();
        assert_eq!(cache.get(&"t3"), None);
    }
}
