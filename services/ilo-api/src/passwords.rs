//! Argon2id hashing on a bounded pool, so a burst of logins cannot starve the rest of the server.

use std::sync::Arc;

use argon2::{Argon2, PasswordHasher, PasswordVerifier};
use tokio::sync::Semaphore;

/// Logins and registrations allowed to wait for a hashing thread; past this they get `503`.
const MAX_WAITING: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum HashError {
    #[error("the password hashing pool is saturated")]
    Busy,
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
}

impl Passwords {
    pub fn new(threads: usize) -> anyhow::Result<Self> {
        let dummy_hash = hash_now("an unknown user's password")?;
        Ok(Self {
            running: Arc::new(Semaphore::new(threads.max(1))),
            admitted: Arc::new(Semaphore::new(threads.max(1) + MAX_WAITING)),
            dummy_hash: dummy_hash.into(),
        })
    }

    /// A PHC string (`$argon2id$v=19$m=19456,t=2,p=1$…`) for `password`.
    pub async fn hash(&self, password: String) -> Result<String, HashError> {
        self.run(move || hash_now(&password).map_err(|e| HashError::Failed(e.to_string())))
            .await
    }

    /// Whether `password` matches `hash`; with no hash, verifies against a dummy and says no.
    pub async fn verify(&self, password: String, hash: Option<String>) -> Result<bool, HashError> {
        let known = hash.is_some();
        let hash = hash.unwrap_or_else(|| self.dummy_hash.to_string());
        let matches = self
            .run(move || {
                Ok(Argon2::default()
                    .verify_password(password.as_bytes(), hash.as_str())
                    .is_ok())
            })
            .await?;
        Ok(known && matches)
    }

    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> Result<T, HashError> + Send + 'static,
    ) -> Result<T, HashError> {
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
        let pool = Passwords::new(1).expect("pool");
        let hash = pool.hash("Secret1!".into()).await.expect("hash");
        assert!(
            hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{hash}"
        );
        assert!(
            pool.verify("Secret1!".into(), Some(hash.clone()))
                .await
                .expect("verify")
        );
        assert!(
            !pool
                .verify("Secret2!".into(), Some(hash))
                .await
                .expect("verify")
        );
        assert!(!pool.verify("Secret1!".into(), None).await.expect("verify"));
    }
}
