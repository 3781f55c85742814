//! The limits as one process counts them: fixed-window counters, and [`UsernameGuard`], the
//! progressive delays that slow a guessed username down without locking its owner out.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Past this many tracked keys, expired windows are swept before a new key is added.
const SWEEP_ABOVE: usize = 10_000;

/// Counts events per key (a client address, a username) in windows of fixed length.
pub(super) struct WindowLimit {
    /// Events allowed per window; `0` turns the limit off.
    limit: u32,
    window: Duration,
    // A std Mutex: nothing awaits while it is held, and each use is a few map operations.
    windows: Mutex<HashMap<String, Window>>,
}

struct Window {
    started: Instant,
    count: u32,
}

impl WindowLimit {
    pub(super) fn new(limit: u32, window: Duration) -> Self {
        Self {
            limit,
            window,
            windows: Mutex::new(HashMap::new()),
        }
    }

    /// Counts one event for `key`; `Err(retry_after)` if it goes over the limit.
    pub(super) fn hit(&self, key: &str) -> Result<(), Duration> {
        self.check(key)?;
        self.record(key);
        Ok(())
    }

    /// `Err(retry_after)` while `key` has used up its window, without counting anything.
    pub(super) fn check(&self, key: &str) -> Result<(), Duration> {
        if self.limit == 0 {
            return Ok(());
        }
        let now = Instant::now();
        let windows = self.lock();
        match windows.get(key) {
            Some(w) if w.count >= self.limit && now < w.started + self.window => {
                Err(w.started + self.window - now)
            }
            _ => Ok(()),
        }
    }

    /// Counts one event for `key`.
    pub(super) fn record(&self, key: &str) {
        if self.limit == 0 {
            return;
        }
        let now = Instant::now();
        let mut windows = self.lock();
        if windows.len() >= SWEEP_ABOVE && !windows.contains_key(key) {
            windows.retain(|_, w| now < w.started + self.window);
        }
        let window = windows.entry(key.to_owned()).or_insert(Window {
            started: now,
            count: 0,
        });
        if now >= window.started + self.window {
            *window = Window {
                started: now,
                count: 0,
            };
        }
        window.count += 1;
    }

    /// Forgets `key` (a successful login clears that username's failures).
    pub(super) fn reset(&self, key: &str) {
        self.lock().remove(key);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Window>> {
        // A panic while holding the lock cannot leave the map inconsistent; keep using it.
        self.windows
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The longest delay a guessed username imposes: a few seconds, never a lockout.
pub(super) const MAX_DELAY: Duration = Duration::from_secs(8);
/// Failures for a username are forgotten after this long without a new one.
pub(super) const FAILURES_FOR: Duration = Duration::from_secs(15 * 60);
/// Addresses remembered per username as ones its owner logged in from.
pub(super) const KNOWN_ADDRESSES: usize = 16;

/// Progressive delays per username, as OWASP's Authentication Cheat Sheet recommends against
/// lockout ("Account Lockout": an attacker must not be able to lock the owner out) and ASVS
/// 5.0 V6.3.1 asks: once a username has `threshold` failures from anywhere, each further
/// attempt waits 1, 2, 4 … up to [`MAX_DELAY`] seconds after the last failure, and attempts in
/// the delay are refused uncounted, so an attacker gets one guess per delay. Addresses the owner
/// logged in from before are exempt (the cheat sheet's "device cookies", keyed by address), and
/// a correct password is never refused for longer than the delay.
pub(super) struct UsernameGuard {
    threshold: u32,
    users: Mutex<HashMap<String, Guarded>>,
}

#[derive(Default)]
struct Guarded {
    failures: u32,
    last_failure: Option<Instant>,
    known: Vec<String>,
}

impl UsernameGuard {
    pub(super) fn new(threshold: u32) -> Self {
        Self {
            threshold,
            users: Mutex::new(HashMap::new()),
        }
    }

    /// `Err(retry_after)` while `user` is in a delay for `address`.
    pub(super) fn check(&self, user: &str, address: &str) -> Result<(), Duration> {
        if self.threshold == 0 {
            return Ok(());
        }
        let users = self.lock();
        let Some(guarded) = users.get(user) else {
            return Ok(());
        };
        let (Some(last), true) = (guarded.last_failure, guarded.failures >= self.threshold) else {
            return Ok(());
        };
        if guarded.known.iter().any(|a| a == address) || last.elapsed() >= FAILURES_FOR {
            return Ok(());
        }
        let delay = Self::delay(guarded.failures - self.threshold);
        match delay.checked_sub(last.elapsed()) {
            Some(left) if !left.is_zero() => Err(left),
            _ => Ok(()),
        }
    }

    pub(super) fn delay(past_threshold: u32) -> Duration {
        Duration::from_secs(1u64 << past_threshold.min(10)).min(MAX_DELAY)
    }

    pub(super) fn failed(&self, user: &str) {
        if self.threshold == 0 {
            return;
        }
        let mut users = self.lock();
        if users.len() >= SWEEP_ABOVE && !users.contains_key(user) {
            users.retain(|_, g| {
                g.last_failure.is_some_and(|t| t.elapsed() < FAILURES_FOR) || !g.known.is_empty()
            });
        }
        let guarded = users.entry(user.to_owned()).or_default();
        if guarded
            .last_failure
            .is_some_and(|t| t.elapsed() >= FAILURES_FOR)
        {
            guarded.failures = 0;
        }
        guarded.failures += 1;
        guarded.last_failure = Some(Instant::now());
    }

    /// The owner got in from `address`: failures forgotten, the address remembered.
    pub(super) fn succeeded(&self, user: &str, address: &str) {
        if self.threshold == 0 {
            return;
        }
        let mut users = self.lock();
        let guarded = users.entry(user.to_owned()).or_default();
        guarded.failures = 0;
        guarded.last_failure = None;
        if !guarded.known.iter().any(|a| a == address) {
            if guarded.known.len() >= KNOWN_ADDRESSES {
                guarded.known.remove(0);
            }
            guarded.known.push(address.to_owned());
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Guarded>> {
        self.users
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_past_the_limit_until_the_window_ends() {
        let limit = WindowLimit::new(2, Duration::from_millis(50));
        assert!(limit.hit("a").is_ok());
        assert!(limit.hit("a").is_ok());
        let retry = limit.hit("a").expect_err("third is refused");
        assert!(retry <= Duration::from_millis(50));
        assert!(limit.hit("b").is_ok(), "other keys are unaffected");
        std::thread::sleep(Duration::from_millis(60));
        assert!(limit.hit("a").is_ok(), "a new window starts");
    }

    #[test]
    fn zero_turns_the_limit_off() {
        let limit = WindowLimit::new(0, Duration::from_secs(60));
        for _ in 0..1000 {
            assert!(limit.hit("a").is_ok());
        }
    }

    #[test]
    fn a_guessed_username_is_delayed_progressively_not_locked() {
        let guard = UsernameGuard::new(3);
        for _ in 0..3 {
            assert!(guard.check("ann", "1.1.1.1").is_ok());
            guard.failed("ann");
        }
        let first = guard.check("ann", "2.2.2.2").expect_err("delayed");
        assert!(first <= Duration::from_secs(1), "{first:?}");
        guard.failed("ann");
        let second = guard.check("ann", "2.2.2.2").expect_err("delayed");
        assert!(second > Duration::from_secs(1) && second <= Duration::from_secs(2));
        for _ in 0..20 {
            guard.failed("ann");
        }
        let longest = guard.check("ann", "3.3.3.3").expect_err("delayed");
        assert!(
            longest <= MAX_DELAY,
            "never more than a few seconds: {longest:?}"
        );
        assert!(
            guard.check("bob", "3.3.3.3").is_ok(),
            "other names are unaffected"
        );
    }

    #[test]
    fn the_owners_known_address_is_not_delayed() {
        let guard = UsernameGuard::new(1);
        guard.succeeded("ann", "10.0.0.1");
        for _ in 0..50 {
            guard.failed("ann");
        }
        assert!(guard.check("ann", "10.0.0.1").is_ok());
        assert!(guard.check("ann", "6.6.6.6").is_err());
    }

    #[test]
    fn reset_forgets_failures() {
        let limit = WindowLimit::new(1, Duration::from_secs(60));
        limit.record("u");
        assert!(limit.check("u").is_err());
        limit.reset("u");
        assert!(limit.check("u").is_ok());
    }
}
