//! Argon2id hashing on a bounded pool, so a burst of logins cannot starve the rest of the
//! server, shared fairly: one client address holds at most `ILO_HASH_PER_CLIENT` of its places.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use argon2::{Argon2, PasswordHasher, PasswordVerifier};
use tokio::sync::Semaphore;

/// Logins and registrations allowed to wait for a hashing thread; past this they get `503`.
const MAX_WAITING: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum HashError {
    #[error("the password hashing pool is saturated")]
    Busy,
    #[error("this client has too many logins in progress")]
    TooManyFromClient,
    #[error("password hashing failed: {0}")]
    Failed(String),
}

/// The hashing pool: `threads` hashes run at once on tokio's blocking threads, up to
/// [`MAX_WAITING`] more wait their turn.
#[derive(Clone)]
pub struct Passwords {
    running: Arc<Semaphore>,
    admitted: Arc<Semaphore>,
    /// Verified against when the user does not exist, so that costs the same as a wrong password.
    dummy_hash: Arc<str>,
    /// Places held per client address, and how many each may hold (0: no cap). Past the cap a
    /// client gets `429`, and the other addresses' logins still find room.
    held: Arc<Mutex<HashMap<String, usize>>>,
    per_client: usize,
}

/// A client's place in the pool, given back when dropped.
struct Place {
    held: Arc<Mutex<HashMap<String, usize>>>,
    client: String,
}

impl Drop for Place {
    fn drop(&mut self) {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = held.get_mut(&self.client) {
            *n -= 1;
            if *n == 0 {
                held.remove(&self.client);
            }
        }
    }
}

impl Passwords {
    pub fn new(threads: usize, per_client: usize) -> anyhow::Result<Self> {
        let dummy_hash = hash_now("an unknown user's password")?;
        Ok(Self {
            running: Arc::new(Semaphore::new(threads.max(1))),
            admitted: Arc::new(Semaphore::new(threads.max(1) + MAX_WAITING)),
            dummy_hash: dummy_hash.into(),
            held: Arc::default(),
            per_client,
        })
    }

    /// A PHC string (`$argon2id$v=19$m=19456,t=2,p=1$…`) for `password`, hashed on behalf of
    /// `client` (its address).
    pub async fn hash(&self, password: String, client: &str) -> Result<String, HashError> {
        self.run(client, move || {
            hash_now(&password).map_err(|e| HashError::Failed(e.to_string()))
        })
        .await
    }

    /// Whether `password` matches `hash`; with no hash, verifies against a dummy and says no.
    pub async fn verify(
        &self,
        password: String,
        hash: Option<String>,
        client: &str,
    ) -> Result<bool, HashError> {
        let known = hash.is_some();
        let hash = hash.unwrap_or_else(|| self.dummy_hash.to_string());
        let matches = self
            .run(client, move || {
                Ok(Argon2::default()
                    .verify_password(password.as_bytes(), hash.as_str())
                    .is_ok())
            })
            .await?;
        Ok(known && matches)
    }

    async fn run<T: Send + 'static>(
        &self,
        client: &str,
        work: impl FnOnce() -> Result<T, HashError> + Send + 'static,
    ) -> Result<T, HashError> {
        let _place = self.place_for(client)?;
        let _admitted = self
            .admitted
            .clone()
            .try_acquire_owned()
            .map_err(|_| HashError::Busy)?;
        let running = self
            .running
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| HashError::Busy)?;
        let span = tracing::Span::current();
        tokio::task::spawn_blocking(move || {
            let _running = running;
            span.in_scope(work)
        })
        .await
        .map_err(|e| HashError::Failed(e.to_string()))?
    }
}

impl Passwords {
    fn place_for(&self, client: &str) -> Result<Place, HashError> {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        let count = held.entry(client.to_owned()).or_default();
        if self.per_client > 0 && *count >= self.per_client {
            return Err(HashError::TooManyFromClient);
        }
        *count += 1;
        Ok(Place {
            held: self.held.clone(),
            client: client.to_owned(),
        })
    }
}

/// Hashes on the calling thread; argon2's defaults are OWASP's: m = 19 MiB, t = 2, p = 1.
pub fn hash_now(password: &str) -> anyhow::Result<String> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| anyhow::anyhow!("argon2: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_verify_and_use_owasp_parameters() {
        let pool = Passwords::new(1, 4).expect("pool");
        let hash = pool.hash("Secret1!".into(), "c").await.expect("hash");
        assert!(
            hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{hash}"
        );
        assert!(
            pool.verify("Secret1!".into(), Some(hash.clone()), "c")
                .await
                .expect("verify")
        );
        assert!(
            !pool
                .verify("Secret2!".into(), Some(hash), "c")
                .await
                .expect("verify")
        );
        assert!(
            !pool
                .verify("Secret1!".into(), None, "c")
                .await
                .expect("verify")
        );
    }
}
