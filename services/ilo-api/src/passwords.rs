//! Argon2id hashing on a bounded pool, so a burst of logins cannot starve the rest of the
//! server, shared fairly: one client address holds at most `ILO_HASH_PER_CLIENT` of its places.

use std::sync::{Arc, Mutex, PoisonError, mpsc};

use argon2::password_hash::phc::{Output, ParamsString, PasswordHash, Salt};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use ilo_runtime::counts::{Counts, Held};
use tokio::sync::oneshot;

/// Logins and registrations allowed to wait for a hashing thread; past this they get `503`.
const MAX_WAITING: usize = 256;

#[derive(Debug, thiserror::Error)]
pub(crate) enum HashError {
    #[error("the password hashing pool is saturated")]
    Busy,
    #[error("this client has too many logins in progress")]
    TooManyFromClient,
    #[error("password hashing failed: {0}")]
    Failed(String),
}

/// The hashing pool: `threads` threads of its own hash, each in one argon2 memory block it
/// allocated once and reuses, so hashing holds `threads × 19 MiB` whatever the load (on tokio's
/// blocking pool, every thread that ever hashed kept its own 19 MiB: gigabytes under a login
/// storm). Up to [`MAX_WAITING`] more wait their turn.
#[derive(Clone)]
pub(crate) struct Passwords {
    /// At most [`MAX_WAITING`] jobs wait here; each thread holds the one it runs.
    jobs: mpsc::SyncSender<Job>,
    /// Verified against when the user does not exist, so that costs the same as a wrong password.
    dummy_hash: Arc<str>,
    /// Places held per client address, and how many each may hold (0: no cap). Past the cap a
    /// client gets `429`, and the other addresses' logins still find room.
    held: Counts<String>,
    per_client: usize,
}

type Job = Box<dyn FnOnce(&mut Hasher) + Send>;

impl Passwords {
    pub(crate) fn new(threads: usize, per_client: usize) -> anyhow::Result<Self> {
        let threads = threads.max(1);
        let (jobs, queue) = mpsc::sync_channel::<Job>(MAX_WAITING);
        let queue = Arc::new(Mutex::new(queue));
        for i in 0..threads {
            let queue = queue.clone();
            std::thread::Builder::new()
                .name(format!("argon2-{i}"))
                .spawn(move || {
                    let mut hasher = Hasher::new();
                    loop {
                        // The lock is let go before the job runs: the threads hash side by side.
                        let next = queue.lock().unwrap_or_else(PoisonError::into_inner).recv();
                        // Ends when every `Passwords` handle (every sender) is gone.
                        let Ok(job) = next else { return };
                        job(&mut hasher);
                    }
                })?;
        }
        let dummy_hash = Hasher::new().hash("an unknown user's password")?;
        Ok(Self {
            jobs,
            dummy_hash: dummy_hash.into(),
            held: Counts::default(),
            per_client,
        })
    }

    /// A PHC string (`$argon2id$v=19$m=19456,t=2,p=1$…`) for `password`, hashed on behalf of
    /// `client` (its address).
    pub(crate) async fn hash(&self, password: String, client: &str) -> Result<String, HashError> {
        self.run(client, move |hasher| {
            hasher
                .hash(&password)
                .map_err(|e| HashError::Failed(e.to_string()))
        })
        .await
    }

    /// Whether `password` matches `hash`; with no hash, verifies against a dummy and says no.
    pub(crate) async fn verify(
        &self,
        password: String,
        hash: Option<String>,
        client: &str,
    ) -> Result<bool, HashError> {
        let known = hash.is_some();
        let hash = hash.unwrap_or_else(|| self.dummy_hash.to_string());
        let matches = self
            .run(client, move |hasher| Ok(hasher.verify(&password, &hash)))
            .await?;
        Ok(known && matches)
    }

    async fn run<T: Send + 'static>(
        &self,
        client: &str,
        work: impl FnOnce(&mut Hasher) -> Result<T, HashError> + Send + 'static,
    ) -> Result<T, HashError> {
        let _place = self.place_for(client)?;
        let (reply, answer) = oneshot::channel();
        let span = tracing::Span::current();
        let job: Job = Box::new(move |hasher| {
            let _ = reply.send(span.in_scope(|| work(hasher)));
        });
        // Full: every thread busy and MAX_WAITING jobs queued.
        self.jobs.try_send(job).map_err(|_| HashError::Busy)?;
        answer
            .await
            .map_err(|_| HashError::Failed("a hashing thread stopped".into()))?
    }

    fn place_for(&self, client: &str) -> Result<Held<String>, HashError> {
        self.held
            .take(&client.to_owned(), self.per_client)
            .ok_or(HashError::TooManyFromClient)
    }
}

/// One hashing thread's argon2id (OWASP's parameters: m = 19 MiB, t = 2, p = 1, the crate's
/// defaults) and the memory it hashes in.
struct Hasher {
    blocks: Vec<Block>,
}

impl Hasher {
    fn new() -> Self {
        Self {
            blocks: vec![Block::default(); Params::default().block_count()],
        }
    }

    fn hash(&mut self, password: &str) -> anyhow::Result<String> {
        let params = Params::default();
        let mut salt = [0u8; 16];
        getrandom::fill(&mut salt).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
        let mut out = [0u8; 32];
        Argon2::from(params.clone())
            .hash_password_into_with_memory(password.as_bytes(), &salt, &mut out, &mut self.blocks)
            .map_err(|e| anyhow::anyhow!("argon2: {e}"))?;
        let phc = PasswordHash {
            algorithm: Algorithm::Argon2id.ident(),
            version: Some(Version::V0x13.into()),
            params: ParamsString::try_from(&params).map_err(|e| anyhow::anyhow!("{e}"))?,
            salt: Some(Salt::new(&salt).map_err(|e| anyhow::anyhow!("{e}"))?),
            hash: Some(Output::new(&out).map_err(|e| anyhow::anyhow!("{e}"))?),
        };
        Ok(phc.to_string())
    }

    /// Recomputes the stored hash's output with its own salt and parameters and compares the
    /// two in constant time (`Output`'s equality). A hash made with other parameters gets memory
    /// of its size for this once.
    fn verify(&mut self, password: &str, stored: &str) -> bool {
        let Ok(phc) = PasswordHash::new(stored) else {
            return false;
        };
        let (Ok(params), Some(salt), Some(expected)) = (Params::try_from(&phc), phc.salt, phc.hash)
        else {
            return false;
        };
        if phc.algorithm != Algorithm::Argon2id.ident() {
            return false;
        }
        let mut out = vec![0u8; expected.len()];
        let salt: &[u8] = salt.as_ref();
        let argon2 = Argon2::from(params.clone());
        let computed = if params.block_count() == self.blocks.len() {
            argon2.hash_password_into_with_memory(
                password.as_bytes(),
                salt,
                &mut out,
                &mut self.blocks,
            )
        } else {
            argon2.hash_password_into(password.as_bytes(), salt, &mut out)
        };
        computed.is_ok() && Output::new(&out).is_ok_and(|out| out == expected)
    }
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

    /// Hashes stored before the pool kept its own memory, and hashes it makes, are the same
    /// PHC strings as the argon2 crate's own.
    #[tokio::test]
    async fn hashes_are_the_argon2_crates_own_both_ways() {
        use argon2::{PasswordHasher, PasswordVerifier};
        let pool = Passwords::new(2, 0).expect("pool");
        let stock = Argon2::default()
            .hash_password(b"Older-pass-1")
            .expect("hash")
            .to_string();
        assert!(
            pool.verify("Older-pass-1".into(), Some(stock), "c")
                .await
                .expect("verify")
        );
        let ours = pool.hash("Newer-pass-1".into(), "c").await.expect("hash");
        let parsed = PasswordHash::new(&ours).expect("a PHC string");
        assert!(
            Argon2::default()
                .verify_password(b"Newer-pass-1", &parsed)
                .is_ok()
        );
        assert!(
            Argon2::default()
                .verify_password(b"Newer-pass-2", &parsed)
                .is_err()
        );
        assert!(
            !pool
                .verify("x".into(), Some("not a hash".into()), "c")
                .await
                .expect("verify")
        );
    }
}
