//! Waits between attempts to reach a peer that is down: growing, jittered so that many clients
//! cut off together do not come back together, capped, and reset once the peer answers. Built
//! on `backon`'s exponential delays; the jitter is its own or, for clients, full.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};

pub struct Backoff {
    builder: ExponentialBuilder,
    max: Duration,
    delays: ExponentialBackoff,
    /// Each delay is a random part of the grown one ("full jitter").
    full_jitter: bool,
}

impl Backoff {
    /// Delays from `min`, doubling up to `max`, each with up to as much again of jitter: for a
    /// service reconnecting to a peer.
    pub fn new(min: Duration, max: Duration) -> Self {
        Self::build(min, max, false)
    }

    /// Delays anywhere from zero up to a bound that grows from `min` to `max`: for many
    /// clients that lost the same server, so they come back spread out.
    pub fn full_jitter(min: Duration, max: Duration) -> Self {
        Self::build(min, max, true)
    }

    fn build(min: Duration, max: Duration, full_jitter: bool) -> Self {
        let mut builder = ExponentialBuilder::new()
            .with_min_delay(min)
            .with_max_delay(max)
            .without_max_times();
        if !full_jitter {
            builder = builder.with_jitter();
        }
        Self {
            builder,
            max,
            delays: builder.build(),
            full_jitter,
        }
    }

    /// How long to wait before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        // The delays never run out (`without_max_times`); the cap stands in all the same.
        let grown = self.delays.next().unwrap_or(self.max);
        if self.full_jitter {
            spread(grown)
        } else {
            grown
        }
    }

    /// The peer answered: the next failure waits `min` again.
    pub fn reset(&mut self) {
        self.delays = self.builder.build();
    }
}

/// A random wait below `bound`: to spread a crowd that may come back at once.
pub fn spread(bound: Duration) -> Duration {
    bound.mul_f64(fastrand::f64())
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

    #[test]
    fn full_jitter_stays_under_a_growing_bound() {
        let (min, max) = (Duration::from_millis(100), Duration::from_secs(1));
        let mut backoff = Backoff::full_jitter(min, max);
        let bounds = [100, 200, 400, 800, 1000, 1000];
        let delays: Vec<Duration> = bounds.iter().map(|_| backoff.next_delay()).collect();
        for (delay, bound) in delays.iter().zip(bounds) {
            assert!(*delay <= Duration::from_millis(bound), "{delays:?}");
        }
        assert!(spread(Duration::from_millis(500)) < Duration::from_millis(500));
    }
}
