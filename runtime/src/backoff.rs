//! Waits between attempts to reach a peer that is down: growing, jittered so that many clients
//! cut off together do not come back together, capped, and reset once the peer answers.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};

pub struct Backoff {
    builder: ExponentialBuilder,
    max: Duration,
    delays: ExponentialBackoff,
}

impl Backoff {
    /// Delays from `min`, doubling up to `max`, each with up to as much again of jitter.
    pub fn new(min: Duration, max: Duration) -> Self {
        let builder = ExponentialBuilder::new()
            .with_min_delay(min)
            .with_max_delay(max)
            .with_jitter()
            .without_max_times();
        Self {
            builder,
            max,
            delays: builder.build(),
        }
    }

    /// How long to wait before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        // The delays never run out (`without_max_times`); the cap stands in all the same.
        self.delays.next().unwrap_or(self.max)
    }

    /// The peer answered: the next failure waits `min` again.
    pub fn reset(&mut self) {
        self.delays = self.builder.build();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_to_the_cap_with_jitter_and_starts_over_after_a_reset() {
        let (min, max) = (Duration::from_millis(100), Duration::from_secs(2));
        let mut backoff = Backoff::new(min, max);
        let delays: Vec<Duration> = (0..12).map(|_| backoff.next_delay()).collect();
        assert!(delays[0] >= min && delays[0] <= 2 * min, "{delays:?}");
        assert!(delays.iter().all(|d| *d <= 2 * max), "{delays:?}");
        assert!(delays[11] >= max, "reaches the cap: {delays:?}");
        backoff.reset();
        assert!(backoff.next_delay() <= 2 * min);
    }
}
