//! The rate limits of `operations.md`. With Redis they are counted there, so every instance
//! shares one count; they are always counted in this process's memory too, which decides when
//! Redis does not answer. A Redis outage therefore locks nobody out and lifts no limit: each
//! instance goes on enforcing it alone (a client spreading over N instances gets at most N times
//! the budget until Redis is back), and counting resumes in Redis when it answers again.

mod memory;
mod shared;

use std::time::Duration;

pub(crate) use shared::SharedCounts;

/// The settings of [`Limits`], each `0` for no limit.
pub(crate) struct Settings {
    pub(crate) key_rate: u32,
    pub(crate) login_failures: u32,
    pub(crate) lookup_rate: u32,
    pub(crate) login_rate: u32,
    pub(crate) register_rate: u32,
}

/// The limits of an instance.
pub(crate) struct Limits {
    pub(crate) keys: WindowLimit,
    /// Failed logins per client address (all usernames, and each username from it).
    pub(crate) login_failures: WindowLimit,
    pub(crate) usernames: UsernameGuard,
    pub(crate) lookups: WindowLimit,
    /// Successful logins per client address; per API key, ten times as many.
    pub(crate) logins: WindowLimit,
    pub(crate) logins_per_key: WindowLimit,
    /// Registrations per client address per hour; per API key, ten times as many.
    pub(crate) registrations: WindowLimit,
    pub(crate) registrations_per_key: WindowLimit,
}

impl Limits {
    pub(crate) fn new(settings: &Settings, shared: Option<SharedCounts>) -> Self {
        const MINUTE: Duration = Duration::from_secs(60);
        let window = |name, limit, length| WindowLimit::new(name, limit, length, shared.clone());
        Self {
            keys: window("keys", settings.key_rate, MINUTE),
            login_failures: window("login_failures", settings.login_failures, 15 * MINUTE),
            usernames: UsernameGuard {
                memory: memory::UsernameGuard::new(settings.login_failures),
                threshold: settings.login_failures,
                shared: shared.clone(),
            },
            lookups: window("lookups", settings.lookup_rate, MINUTE),
            logins: window("logins", settings.login_rate, MINUTE),
            logins_per_key: window(
                "logins_per_key",
                settings.login_rate.saturating_mul(10),
                MINUTE,
            ),
            registrations: window("registrations", settings.register_rate, 60 * MINUTE),
            registrations_per_key: window(
                "registrations_per_key",
                settings.register_rate.saturating_mul(10),
                60 * MINUTE,
            ),
        }
    }
}

/// Events per key (a client address, a username) in fixed windows.
pub(crate) struct WindowLimit {
    name: &'static str,
    limit: u32,
    window: Duration,
    memory: memory::WindowLimit,
    shared: Option<SharedCounts>,
}

impl WindowLimit {
    fn new(name: &'static str, limit: u32, window: Duration, shared: Option<SharedCounts>) -> Self {
        Self {
            name,
            limit,
            window,
            memory: memory::WindowLimit::new(limit, window),
            shared: shared.filter(|_| limit > 0),
        }
    }

    /// Counts one event for `key`; `Err(retry_after)` if it goes over the limit (uncounted).
    pub(crate) async fn hit(&self, key: &str) -> Result<(), Duration> {
        let local = self.memory.hit(key);
        self.ask("hit", key).await.unwrap_or(local)
    }

    /// `Err(retry_after)` while `key` has used up its window, without counting anything.
    pub(crate) async fn check(&self, key: &str) -> Result<(), Duration> {
        let local = self.memory.check(key);
        self.ask("check", key).await.unwrap_or(local)
    }

    /// Counts one event for `key`.
    pub(crate) async fn record(&self, key: &str) {
        self.memory.record(key);
        let _ = self.ask("record", key).await;
    }

    /// Forgets `key` (a successful login clears that username's failures).
    pub(crate) async fn reset(&self, key: &str) {
        self.memory.reset(key);
        if let Some(shared) = &self.shared {
            shared.delete(&self.shared_key(key)).await;
        }
    }

    async fn ask(&self, op: &str, key: &str) -> Option<Result<(), Duration>> {
        let shared = self.shared.as_ref()?;
        shared
            .window(op, &self.shared_key(key), self.limit, self.window)
            .await
    }

    fn shared_key(&self, key: &str) -> String {
        format!("ilo:limit:{}:{key}", self.name)
    }
}

/// Growing delays for a username guessed from anywhere (see [`memory::UsernameGuard`]).
pub(crate) struct UsernameGuard {
    memory: memory::UsernameGuard,
    threshold: u32,
    shared: Option<SharedCounts>,
}

impl UsernameGuard {
    /// `Err(retry_after)` while `user` is in a delay for `address`.
    pub(crate) async fn check(&self, user: &str, address: &str) -> Result<(), Duration> {
        let local = self.memory.check(user, address);
        self.ask("check", user, address).await.unwrap_or(local)
    }

    pub(crate) async fn failed(&self, user: &str) {
        self.memory.failed(user);
        let _ = self.ask("failed", user, "").await;
    }

    /// The owner got in from `address`: failures forgotten, the address remembered.
    pub(crate) async fn succeeded(&self, user: &str, address: &str) {
        self.memory.succeeded(user, address);
        let _ = self.ask("succeeded", user, address).await;
    }

    async fn ask(&self, op: &str, user: &str, address: &str) -> Option<Result<(), Duration>> {
        if self.threshold == 0 {
            return None;
        }
        let shared = self.shared.as_ref()?;
        shared.guard(op, user, address, self.threshold).await
    }
}
