//! What the loop is doing: records in flight between the consumer and the workers, when a
//! batch last settled, whether partitions are assigned. Readiness probes read it, and a
//! revocation waits for the in-flight records to drain before partitions move.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The loop's status, shared with whoever watches it ([`ConsumerLoop::status`](crate::ConsumerLoop::status)).
///
/// ```
/// use std::time::Duration;
/// use cqrs_kafka::LoopStatus;
///
/// let status = LoopStatus::default();
/// status.dispatched();
/// assert_eq!(status.in_flight(), 1);
/// status.settled(1);
/// assert!(status.wait_idle(Duration::from_millis(10)));
/// assert!(!status.is_assigned());
/// ```
#[derive(Debug, Default)]
pub struct LoopStatus {
    in_flight: AtomicUsize,
    last_settled: Mutex<Option<Instant>>,
    assigned: AtomicBool,
    /// Partitions revoked since the dispatcher last looked (`any_revoked` spares it the lock
    /// on every record).
    revoked: Mutex<Vec<(String, i32)>>,
    any_revoked: AtomicBool,
}

impl LoopStatus {
    /// One more record handed to a worker.
    ///
    /// ```
    /// # let status = cqrs_kafka::LoopStatus::default();
    /// status.dispatched();
    /// assert_eq!(status.in_flight(), 1);
    /// ```
    pub fn dispatched(&self) {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
    }

    /// `records` settled, their offsets stored.
    ///
    /// ```
    /// # let status = cqrs_kafka::LoopStatus::default();
    /// status.dispatched();
    /// status.settled(1);
    /// assert_eq!(status.in_flight(), 0);
    /// ```
    pub fn settled(&self, records: usize) {
        // Saturating: a miscount must not wrap into "billions in flight".
        let _ = self
            .in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                Some(n.saturating_sub(records))
            });
        if let Ok(mut last) = self.last_settled.lock() {
            *last = Some(Instant::now());
        }
    }

    /// Records handed out and not settled yet.
    ///
    /// ```
    /// assert_eq!(cqrs_kafka::LoopStatus::default().in_flight(), 0);
    /// ```
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    /// Records are waiting and nothing settled for `after`.
    ///
    /// ```
    /// # use std::time::Duration;
    /// let status = cqrs_kafka::LoopStatus::default();
    /// assert!(!status.stuck(Duration::ZERO));
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
    /// whether everything settled. Called from the revocation callback, which librdkafka
    /// runs on the thread polling the consumer while the workers run elsewhere.
    ///
    /// ```
    /// # use std::time::Duration;
    /// let status = cqrs_kafka::LoopStatus::default();
    /// status.dispatched();
    /// assert!(!status.wait_idle(Duration::from_millis(20)));
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

    /// True while the consumer group has assigned partitions to this consumer.
    ///
    /// ```
    /// assert!(!cqrs_kafka::LoopStatus::default().is_assigned());
    /// ```
    pub fn is_assigned(&self) -> bool {
        self.assigned.load(Ordering::Acquire)
    }

    pub(crate) fn set_assigned(&self, assigned: bool) {
        self.assigned.store(assigned, Ordering::Release);
    }

    /// The group took `partitions` away (called from the revocation callback).
    pub(crate) fn note_revoked(&self, partitions: Vec<(String, i32)>) {
        if let Ok(mut revoked) = self.revoked.lock() {
            revoked.extend(partitions);
            self.any_revoked.store(true, Ordering::Release);
        }
    }

    /// The partitions revoked since the last call.
    pub(crate) fn take_revoked(&self) -> Vec<(String, i32)> {
        if !self.any_revoked.swap(false, Ordering::AcqRel) {
            return Vec::new();
        }
        self.revoked
            .lock()
            .map(|mut r| std::mem::take(&mut *r))
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stuck_only_with_work_waiting_and_nothing_settled_lately() {
        let status = LoopStatus::default();
        status.dispatched();
        status.dispatched();
        status.settled(1);
        assert!(!status.stuck(Duration::from_secs(60)));
        std::thread::sleep(Duration::from_millis(15));
        assert!(status.stuck(Duration::from_millis(10)));
        status.settled(5);
        assert_eq!(
            status.in_flight(),
            0,
            "settling more than in flight saturates"
        );
        assert!(!status.stuck(Duration::ZERO));
    }

    #[test]
    fn wait_idle_returns_once_another_thread_settles() {
        let status = std::sync::Arc::new(LoopStatus::default());
        status.dispatched();
        let worker = std::sync::Arc::clone(&status);
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            worker.settled(1);
        });
        assert!(status.wait_idle(Duration::from_secs(5)));
        let _ = t.join();
    }
}
