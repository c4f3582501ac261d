//! The retry delays of the Vault client: the toolkit's one backoff policy
//! ([`cqrs_core::backoff`]), from the configured [`RetryOptions`] with ±20 % jitter so that
//! many clients of one Vault do not retry in step.

use cqrs_core::backoff::{Backoff as Policy, Jitter, Retry};

use crate::config::RetryOptions;

/// Consecutive failures of a Vault loop and the delay before its next try.
pub(crate) type Backoff = Retry;

impl From<RetryOptions> for Policy {
    fn from(options: RetryOptions) -> Self {
        Policy::exponential(options.initial, options.max).with_jitter(Jitter::Percent(20))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

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
        assert_eq!(b.attempts(), 11);
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(120));
    }
}
