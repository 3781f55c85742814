//! Counted places per key, given back when dropped: how many connections a user holds, how
//! many password hashes an address has in flight. A key's entry goes when its count reaches
//! zero, so the map holds only what is in use.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// Cloning shares the counts.
pub struct Counts<K: Hash + Eq + Clone>(Arc<Mutex<HashMap<K, usize>>>);

impl<K: Hash + Eq + Clone> Clone for Counts<K> {
    fn clone(&self) -> Self {
        Self(Arc::clone(&self.0))
    }
}

impl<K: Hash + Eq + Clone> Default for Counts<K> {
    fn default() -> Self {
        Self(Arc::default())
    }
}

/// One place counted under its key until dropped.
pub struct Held<K: Hash + Eq + Clone> {
    counts: Arc<Mutex<HashMap<K, usize>>>,
    key: K,
}

impl<K: Hash + Eq + Clone> Counts<K> {
    /// A place under `key`, unless it already holds `cap` of them (`0`: no cap).
    pub fn take(&self, key: &K, cap: usize) -> Option<Held<K>> {
        let mut counts = lock(&self.0);
        let count = counts.entry(key.clone()).or_default();
        if cap > 0 && *count >= cap {
            return None;
        }
        *count += 1;
        Some(Held {
            counts: Arc::clone(&self.0),
            key: key.clone(),
        })
    }

    /// Places held under `key` now.
    pub fn count(&self, key: &K) -> usize {
        lock(&self.0).get(key).copied().unwrap_or(0)
    }
}

impl<K: Hash + Eq + Clone> Drop for Held<K> {
    fn drop(&mut self) {
        let mut counts = lock(&self.counts);
        if let Some(n) = counts.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.key);
            }
        }
    }
}

fn lock<K>(counts: &Mutex<HashMap<K, usize>>) -> MutexGuard<'_, HashMap<K, usize>> {
    // Each use is a few map operations; a panic cannot leave the map inconsistent.
    counts.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_are_capped_and_given_back() {
        let counts = Counts::default();
        let first = counts.take(&"a", 2).expect("first");
        let _second = counts.take(&"a", 2).expect("second");
        assert!(counts.take(&"a", 2).is_none());
        assert!(counts.take(&"b", 2).is_some(), "other keys are apart");
        drop(first);
        assert_eq!(counts.count(&"a"), 1);
        assert!(counts.take(&"a", 0).is_some(), "0 is no cap");
    }
}
