//! Fixed-window counters for the rate limits of `operations.md`, kept in memory per process.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Past this many tracked keys, expired windows are swept before a new key is added.
const SWEEP_ABOVE: usize = 10_000;

/// Counts events per key (a client address, a username) in windows of fixed length.
pub struct WindowLimit {
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
    pub fn new(limit: u32, window: Duration) -> Self {
        Self {
            limit,
            window,
            windows: Mutex::new(HashMap::new()),
        }
    }

    /// Counts one event for `key`; `Err(retry_after)` if it goes over the limit.
    pub fn hit(&self, key: &str) -> Result<(), Duration> {
        self.check(key)?;
        self.record(key);
        Ok(())
    }

    /// `Err(retry_after)` while `key` has used up its window, without counting anything.
    pub fn check(&self, key: &str) -> Result<(), Duration> {
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
    pub fn record(&self, key: &str) {
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
    pub fn reset(&self, key: &str) {
        self.lock().remove(key);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Window>> {
        // A panic while holding the lock cannot leave the map inconsistent; keep using it.
        self.windows
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The limits of one ilo-api process.
pub struct Limits {
    pub keys: WindowLimit,
    pub login_failures: WindowLimit,
    pub lookups: WindowLimit,
}

impl Limits {
    pub fn new(key_rate: u32, login_failures: u32, lookup_rate: u32) -> Self {
        const MINUTE: Duration = Duration::from_secs(60);
        Self {
            keys: WindowLimit::new(key_rate, MINUTE),
            login_failures: WindowLimit::new(login_failures, 15 * MINUTE),
            lookups: WindowLimit::new(lookup_rate, MINUTE),
        }
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
    fn reset_forgets_failures() {
        let limit = WindowLimit::new(1, Duration::from_secs(60));
        limit.record("u");
        assert!(limit.check("u").is_err());
        limit.reset("u");
        assert!(limit.check("u").is_ok());
    }
}
