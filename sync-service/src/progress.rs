//! Work in flight between the consumer and the partition workers: the readiness probe asks
//! whether it is stuck, and a partition revocation waits for it to drain before the
//! partitions move to another instance.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Messages handed to the workers and not yet settled (applied, found stale, skipped or
/// dead-lettered, with their offsets stored), and the time of the last settled batch.
///
/// ```
/// use std::time::Duration;
/// use sync_service::progress::Progress;
///
/// let progress = Progress::default();
/// progress.dispatched();
/// assert_eq!(progress.in_flight(), 1);
/// progress.settled(1);
/// assert!(progress.wait_idle(Duration::from_millis(10)));
/// ```
#[derive(Debug, Default)]
pub struct Progress {
    in_flight: AtomicUsize,
    last_settled: Mutex<Option<Instant>>,
}

impl Progress {
    /// One more message handed to a worker.
    ///
    /// ```
    /// # let progress = sync_service::progress::Progress::default();
    /// progress.dispatched();
    /// ```
    pub fn dispatched(&self) {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
    }

    /// `messages` settled, their offsets stored.
    ///
    /// ```
    /// # let progress = sync_service::progress::Progress::default();
    /// progress.dispatched();
    /// progress.settled(1);
    /// assert_eq!(progress.in_flight(), 0);
    /// ```
    pub fn settled(&self, messages: usize) {
        self.in_flight.fetch_sub(messages, Ordering::AcqRel);
        if let Ok(mut last) = self.last_settled.lock() {
            *last = Some(Instant::now());
        }
    }

    /// Messages handed out and not settled yet.
    ///
    /// ```
    /// assert_eq!(sync_service::progress::Progress::default().in_flight(), 0);
    /// ```
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    /// Work is waiting and nothing settled for `after`.
    ///
    /// ```
    /// # use std::time::Duration;
    /// let progress = sync_service::progress::Progress::default();
    /// assert!(!progress.stuck(Duration::ZERO));
    /// ```
    pub fn stuck(&self, after: Duration) -> bool {
        let idle = self
            .last_settled
            .lock()
            .ok()
            .and_then(|l| *l)
            .is_some_and(|t| t.elapsed() > after);
        self.in_flight() > 0 && idle
    }

    /// Blocks the calling thread until nothing is in flight or `timeout` passed; returns
    /// whether everything settled. Called from the rebalance callback, which librdkafka runs
    /// on the thread polling the consumer, while the workers keep running elsewhere.
    ///
    /// ```
    /// # use std::time::Duration;
    /// let progress = sync_service::progress::Progress::default();
    /// progress.dispatched();
    /// assert!(!progress.wait_idle(Duration::from_millis(20)));
    /// ```
    pub fn wait_idle(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while self.in_flight() > 0 {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        true
    }
}
