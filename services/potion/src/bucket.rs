//! The per-connection rate limits (sends; joins and leaves): a token bucket, and the strikes
//! that tell a client who keeps pushing past it from one who was briefly too quick.

use std::time::Instant;

/// What a bucket says to one more action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    Allowed,
    /// Refused: answer `rate_limited`.
    Refused,
    /// Refused more times in a row than the burst: close the connection with 4008.
    Exceeded,
}

pub(crate) struct Bucket {
    burst: f64,
    /// Tokens per second; 0 turns the limit off.
    rate: f64,
    /// Tokens left and when they were counted; `None` until first used.
    state: Option<(f64, Instant)>,
    strikes: u32,
}

impl Bucket {
    pub(crate) fn new(burst: u32, rate: u32) -> Self {
        Self {
            burst: f64::from(burst.max(1)),
            rate: f64::from(rate),
            state: None,
            strikes: 0,
        }
    }

    pub(crate) fn take(&mut self, now: Instant) -> Verdict {
        if self.rate == 0.0 {
            return Verdict::Allowed;
        }
        let (tokens, at) = self.state.unwrap_or((self.burst, now));
        let tokens = (tokens + now.duration_since(at).as_secs_f64() * self.rate).min(self.burst);
        if tokens >= 1.0 {
            self.state = Some((tokens - 1.0, now));
            self.strikes = 0;
            return Verdict::Allowed;
        }
        self.state = Some((tokens, now));
        self.strikes += 1;
        if f64::from(self.strikes) > self.burst {
            Verdict::Exceeded
        } else {
            Verdict::Refused
        }
    }

    /// The refill rate, for the error's wording.
    pub(crate) fn rate(&self) -> f64 {
        self.rate
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_burst_then_the_rate_then_strikes_close() {
        let start = Instant::now();
        let mut bucket = Bucket::new(3, 2);
        for _ in 0..3 {
            assert_eq!(bucket.take(start), Verdict::Allowed);
        }
        for _ in 0..3 {
            assert_eq!(bucket.take(start), Verdict::Refused);
        }
        assert_eq!(bucket.take(start), Verdict::Exceeded);
        // Half a second later one token is back, and the strikes are forgiven.
        assert_eq!(
            bucket.take(start + Duration::from_millis(500)),
            Verdict::Allowed
        );
        assert_eq!(
            bucket.take(start + Duration::from_millis(500)),
            Verdict::Refused
        );
    }

    #[test]
    fn a_rate_of_zero_is_no_limit() {
        let mut bucket = Bucket::new(1, 0);
        let now = Instant::now();
        assert!((0..1000).all(|_| bucket.take(now) == Verdict::Allowed));
    }
}
