//! Exponential backoff: the one retry policy of the toolkit.
//!
//! Every loop that waits before trying again (a command after a concurrency conflict, the
//! sync-service while MongoDB or the registry is away, the saga runner after a transient
//! handler failure, the Vault client while Vault is unreachable) computes its delays here:
//! `initial * 2^attempt`, capped at `max`, then spread by a [`Jitter`].

use std::future::Future;
use std::time::Duration;

use rand::Rng;

/// How delays are spread so that contending retries do not fire together.
///
/// ```
/// use cqrs_core::backoff::Jitter;
/// assert_eq!(Jitter::default(), Jitter::None);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Jitter {
    /// Exactly the exponential delay (one consumer retrying one dependency).
    #[default]
    None,
    /// Uniform in `[0, delay]` ("full jitter": writers contending for one row).
    Full,
    /// Uniform in `delay * (1 ± percent / 100)`, never above the cap (periodic clients
    /// of a shared server). Values above 100 count as 100.
    Percent(u8),
}

/// An exponential backoff policy: `initial` before the first retry, doubling up to `max`.
///
/// A value, not a state: [`Backoff::delay`] takes the attempt number, and
/// [`Backoff::retry`] gives a counter for loops that reset after a success.
///
/// ```
/// use std::time::Duration;
/// use cqrs_core::backoff::Backoff;
///
/// let backoff = Backoff::exponential(Duration::from_millis(100), Duration::from_secs(1));
/// assert_eq!(backoff.delay(0), Duration::from_millis(100));
/// assert_eq!(backoff.delay(1), Duration::from_millis(200));
/// assert_eq!(backoff.delay(10), Duration::from_secs(1));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    jitter: Jitter,
}

/// The wait before a retry was cut short (see [`Backoff::sleep_unless`]).
///
/// ```
/// assert_eq!(cqrs_core::backoff::Cancelled.to_string(), "cancelled while waiting to retry");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("cancelled while waiting to retry")]
pub struct Cancelled;

impl Backoff {
    /// Delays from `initial` doubling up to `max` (raised to `initial` if smaller), no
    /// jitter.
    ///
    /// ```
    /// # use std::time::Duration;
    /// let b = cqrs_core::backoff::Backoff::exponential(Duration::from_secs(2), Duration::from_secs(1));
    /// assert_eq!(b.max(), Duration::from_secs(2));
    /// ```
    pub fn exponential(initial: Duration, max: Duration) -> Self {
        Backoff {
            initial,
            max: max.max(initial),
            jitter: Jitter::None,
        }
    }

    /// The same delays spread by `jitter`.
    ///
    /// ```
    /// # use std::time::Duration;
    /// use cqrs_core::backoff::{Backoff, Jitter};
    /// let b = Backoff::exponential(Duration::from_millis(10), Duration::from_millis(80))
    ///     .with_jitter(Jitter::Full);
    /// assert!(b.delay(5) <= Duration::from_millis(80));
    /// ```
    pub fn with_jitter(mut self, jitter: Jitter) -> Self {
        self.jitter = jitter;
        self
    }

    /// The delay before the first retry.
    ///
    /// ```
    /// # use std::time::Duration;
    /// let b = cqrs_core::backoff::Backoff::exponential(Duration::from_millis(5), Duration::from_secs(1));
    /// assert_eq!(b.initial(), Duration::from_millis(5));
    /// ```
    pub fn initial(&self) -> Duration {
        self.initial
    }

    /// The longest delay.
    ///
    /// ```
    /// # use std::time::Duration;
    /// let b = cqrs_core::backoff::Backoff::exponential(Duration::from_millis(5), Duration::from_secs(1));
    /// assert_eq!(b.max(), Duration::from_secs(1));
    /// ```
    pub fn max(&self) -> Duration {
        self.max
    }

    /// The jitter.
    ///
    /// ```
    /// # use std::time::Duration;
    /// use cqrs_core::backoff::{Backoff, Jitter};
    /// let b = Backoff::exponential(Duration::ZERO, Duration::ZERO).with_jitter(Jitter::Percent(20));
    /// assert_eq!(b.jitter(), Jitter::Percent(20));
    /// ```
    pub fn jitter(&self) -> Jitter {
        self.jitter
    }

    /// The delay before retry `attempt + 1` without jitter: `initial * 2^attempt`, capped.
    ///
    /// ```
    /// # use std::time::Duration;
    /// let b = cqrs_core::backoff::Backoff::exponential(Duration::from_millis(1), Duration::from_secs(60));
    /// assert_eq!(b.ceiling(3), Duration::from_millis(8));
    /// assert_eq!(b.ceiling(u32::MAX), Duration::from_secs(60));
    /// ```
    pub fn ceiling(&self, attempt: u32) -> Duration {
        // 2^20 is past any cap worth having: 1 ms becomes 17 minutes.
        let factor = 1u32 << attempt.min(20);
        self.initial.saturating_mul(factor).min(self.max)
    }

    /// The delay before retry `attempt + 1` (0: before the first retry), jitter applied.
    ///
    /// ```
    /// # use std::time::Duration;
    /// use cqrs_core::backoff::{Backoff, Jitter};
    /// let b = Backoff::exponential(Duration::from_millis(100), Duration::from_secs(1))
    ///     .with_jitter(Jitter::Percent(20));
    /// let d = b.delay(0);
    /// assert!(d >= Duration::from_millis(80) && d <= Duration::from_millis(120));
    /// ```
    pub fn delay(&self, attempt: u32) -> Duration {
        let ceiling = self.ceiling(attempt);
        match self.jitter {
            Jitter::None => ceiling,
            Jitter::Full => {
                let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
                Duration::from_nanos(rand::rng().random_range(0..=nanos))
            }
            Jitter::Percent(percent) => {
                let spread = f64::from(percent.min(100)) / 100.0;
                if spread == 0.0 {
                    return ceiling;
                }
                let factor = rand::rng().random_range(1.0 - spread..=1.0 + spread);
                ceiling.mul_f64(factor).min(self.max)
            }
        }
    }

    /// Sleeps for [`Backoff::delay`]`(attempt)`, or returns [`Cancelled`] as soon as
    /// `cancel` completes (a shutdown signal, for instance).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// # use std::time::Duration;
    /// use cqrs_core::backoff::{Backoff, Cancelled};
    /// let b = Backoff::exponential(Duration::from_secs(60), Duration::from_secs(60));
    /// assert_eq!(b.sleep_unless(0, std::future::ready(())).await, Err(Cancelled));
    /// let quick = Backoff::exponential(Duration::from_millis(1), Duration::from_millis(1));
    /// assert_eq!(quick.sleep_unless(0, std::future::pending::<()>()).await, Ok(()));
    /// # }
    /// ```
    pub async fn sleep_unless(
        &self,
        attempt: u32,
        cancel: impl Future<Output = ()>,
    ) -> Result<(), Cancelled> {
        tokio::select! {
            biased;
            () = cancel => Err(Cancelled),
            () = tokio::time::sleep(self.delay(attempt)) => Ok(()),
        }
    }

    /// A counter of consecutive failures following this policy.
    ///
    /// ```
    /// # use std::time::Duration;
    /// let b = cqrs_core::backoff::Backoff::exponential(Duration::from_millis(10), Duration::from_secs(1));
    /// let mut retry = b.retry();
    /// assert_eq!(retry.next_delay(), Duration::from_millis(10));
    /// assert_eq!(retry.next_delay(), Duration::from_millis(20));
    /// retry.reset();
    /// assert_eq!(retry.attempts(), 0);
    /// ```
    pub fn retry(&self) -> Retry {
        Retry {
            policy: *self,
            count: 0,
        }
    }
}

/// Consecutive failures of one loop and the delay before its next try.
///
/// ```
/// # use std::time::Duration;
/// use cqrs_core::backoff::{Retry, Backoff};
/// let mut retry = Retry::new(Backoff::exponential(Duration::from_millis(1), Duration::from_millis(4)));
/// let delays: Vec<_> = (0..4).map(|_| retry.next_delay().as_millis()).collect();
/// assert_eq!(delays, [1, 2, 4, 4]);
/// assert_eq!(retry.attempts(), 4);
/// ```
#[derive(Debug, Clone)]
pub struct Retry {
    policy: Backoff,
    count: u32,
}

impl Retry {
    /// A counter at zero following `policy` (anything convertible into a [`Backoff`]).
    ///
    /// ```
    /// # use std::time::Duration;
    /// use cqrs_core::backoff::{Retry, Backoff};
    /// let retry = Retry::new(Backoff::exponential(Duration::from_millis(1), Duration::from_secs(1)));
    /// assert_eq!(retry.attempts(), 0);
    /// ```
    pub fn new(policy: impl Into<Backoff>) -> Self {
        policy.into().retry()
    }

    /// The delay before the next try; counts one more failure.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # let mut retry = cqrs_core::backoff::Backoff::exponential(Duration::from_millis(1), Duration::from_secs(1)).retry();
    /// assert_eq!(retry.next_delay(), Duration::from_millis(1));
    /// ```
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.policy.delay(self.count);
        self.count = self.count.saturating_add(1);
        delay
    }

    /// Back to the initial delay (after a success).
    ///
    /// ```
    /// # use std::time::Duration;
    /// # let mut retry = cqrs_core::backoff::Backoff::exponential(Duration::from_millis(1), Duration::from_secs(1)).retry();
    /// retry.next_delay();
    /// retry.reset();
    /// assert_eq!(retry.next_delay(), Duration::from_millis(1));
    /// ```
    pub fn reset(&mut self) {
        self.count = 0;
    }

    /// Failures counted since the last reset.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # let retry = cqrs_core::backoff::Backoff::exponential(Duration::from_millis(1), Duration::from_secs(1)).retry();
    /// assert_eq!(retry.attempts(), 0);
    /// ```
    pub fn attempts(&self) -> u32 {
        self.count
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn doubles_from_initial_and_caps_at_max() {
        let b = Backoff::exponential(ms(100), ms(1_000));
        let delays: Vec<u128> = (0..6).map(|a| b.delay(a).as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1_000, 1_000]);
        assert_eq!(b.delay(u32::MAX), ms(1_000));
    }

    #[test]
    fn full_jitter_stays_within_zero_and_the_ceiling() {
        let b = Backoff::exponential(ms(10), ms(50)).with_jitter(Jitter::Full);
        for attempt in 0..8 {
            assert!(b.delay(attempt) <= b.ceiling(attempt));
        }
    }

    #[test]
    fn percent_jitter_stays_around_the_delay_and_below_the_cap() {
        let b = Backoff::exponential(ms(100), ms(1_000)).with_jitter(Jitter::Percent(20));
        for _ in 0..50 {
            let first = b.delay(0);
            assert!(first >= ms(80) && first <= ms(120), "{first:?}");
            assert!(b.delay(9) <= ms(1_000));
        }
        let none = Backoff::exponential(ms(100), ms(100)).with_jitter(Jitter::Percent(0));
        assert_eq!(none.delay(0), ms(100));
    }

    #[test]
    fn retry_counts_and_resets() {
        let mut a = Backoff::exponential(ms(1), ms(3)).retry();
        assert_eq!(a.next_delay(), ms(1));
        assert_eq!(a.next_delay(), ms(2));
        assert_eq!(a.next_delay(), ms(3));
        assert_eq!(a.attempts(), 3);
        a.reset();
        assert_eq!(a.next_delay(), ms(1));
    }

    #[tokio::test]
    async fn sleep_is_cut_short_by_cancellation() {
        let b = Backoff::exponential(Duration::from_secs(3_600), Duration::from_secs(3_600));
        let started = std::time::Instant::now();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let cancel = async move {
            let _ = rx.await;
        };
        let sleeping = tokio::spawn(async move { b.sleep_unless(0, cancel).await });
        let _ = tx.send(());
        assert_eq!(sleeping.await.ok(), Some(Err(Cancelled)));
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
