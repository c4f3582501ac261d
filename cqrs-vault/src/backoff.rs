//! Jittered exponential backoff.

use std::time::Duration;

use rand::Rng;

use crate::config::RetryOptions;

#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    options: RetryOptions,
    attempt: u32,
}

impl Backoff {
    pub(crate) fn new(options: RetryOptions) -> Self {
        Backoff {
            options,
            attempt: 0,
        }
    }

    /// The delay before the next attempt: initial * 2^n, capped, with +-20 % jitter.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let base = self
            .options
            .initial
            .saturating_mul(1u32 << self.attempt.min(16))
            .min(self.options.max);
        self.attempt = self.attempt.saturating_add(1);
        let jitter = rand::rng().random_range(0.8..1.2);
        base.mul_f64(jitter).min(self.options.max)
    }

    pub(crate) fn reset(&mut self) {
        self.attempt = 0;
    }

    pub(crate) fn attempts(&self) -> u32 {
        self.attempt
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_and_caps() {
        let mut b = Backoff::new(RetryOptions {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(1),
        });
        let first = b.next_delay();
        assert!(first >= Duration::from_millis(80) && first <= Duration::from_millis(120));
        for _ in 0..10 {
            assert!(b.next_delay() <= Duration::from_secs(1));
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(120));
    }
}
