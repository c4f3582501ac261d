//! The consumer's context: logs librdkafka's errors, turns statistics into
//! [`Observer::partition_lag`] calls, and before partitions are revoked lets the workers
//! settle what they hold and commits it, so the next owner starts right after the last
//! settled record instead of replaying up to a commit interval of them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientContext, TopicPartitionList};
use tokio::runtime::{Handle, RuntimeFlavor};
use tokio_util::sync::CancellationToken;

use crate::offsets::OffsetSink;
use crate::{LoopStatus, Observer, PartitionLag};

/// A subscription (usually a regex) whose topics do not exist yet: expected until their
/// producer creates them, so not worth an error.
///
/// ```
/// use rdkafka::error::KafkaError;
/// use rdkafka::types::RDKafkaErrorCode;
/// assert!(cqrs_kafka::is_missing_topic(&KafkaError::MessageConsumption(RDKafkaErrorCode::UnknownTopicOrPartition)));
/// assert!(!cqrs_kafka::is_missing_topic(&KafkaError::Canceled));
/// ```
pub fn is_missing_topic(error: &KafkaError) -> bool {
    error.rdkafka_error_code() == Some(RDKafkaErrorCode::UnknownTopicOrPartition)
}

/// The context of the loop's consumer.
pub(crate) struct LoopContext {
    pub(crate) status: Arc<LoopStatus>,
    pub(crate) observer: Arc<dyn Observer>,
    pub(crate) flush_timeout: Duration,
    /// Cancelled on shutdown: the loop then flushes and commits by itself.
    pub(crate) stop: CancellationToken,
}

/// What a revocation flush did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Flushed {
    /// Shutdown was requested: the loop settles and commits on its way out.
    Skipped,
    /// Waited (`settled`: everything in flight settled in time), then committed.
    Committed { settled: bool },
    /// Waited, but nothing was stored since the last commit.
    NothingToCommit { settled: bool },
    /// Waited, and the commit failed.
    CommitFailed { settled: bool, error: String },
}

/// Waits up to `timeout` for the in-flight records to settle (blocking this thread on a
/// multi-thread runtime only: on a current-thread runtime the workers would be blocked
/// too), then commits.
pub(crate) fn flush_before_revoke(
    status: &LoopStatus,
    sink: &dyn OffsetSink,
    timeout: Duration,
    stop: &CancellationToken,
) -> Flushed {
    if stop.is_cancelled() {
        return Flushed::Skipped;
    }
    let settled = match Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(RuntimeFlavor::MultiThread) => tokio::task::block_in_place(|| status.wait_idle(timeout)),
        _ => status.in_flight() == 0,
    };
    match sink.commit() {
        Ok(()) => Flushed::Committed { settled },
        Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {
            Flushed::NothingToCommit { settled }
        }
        Err(e) => Flushed::CommitFailed {
            settled,
            error: e.to_string(),
        },
    }
}

impl LoopContext {
    fn revoke(&self, consumer: &BaseConsumer<Self>) {
        let pending = self.status.in_flight();
        let started = Instant::now();
        let flushed = flush_before_revoke(&self.status, consumer, self.flush_timeout, &self.stop);
        let settled = match &flushed {
            Flushed::Skipped => return,
            Flushed::Committed { settled }
            | Flushed::NothingToCommit { settled }
            | Flushed::CommitFailed { settled, .. } => *settled,
        };
        if !settled {
            tracing::warn!(
                pending,
                left = self.status.in_flight(),
                timeout_ms = self.flush_timeout.as_millis() as u64,
                "in-flight work not settled before the revocation; the next owner replays it"
            );
        }
        match flushed {
            Flushed::Committed { .. } => tracing::info!(
                flushed = pending,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "flushed and committed before handing off partitions"
            ),
            Flushed::NothingToCommit { .. } => tracing::info!(
                flushed = pending,
                "nothing to commit before handing off partitions"
            ),
            Flushed::CommitFailed { error, .. } => {
                tracing::warn!(%error, "commit before the revocation failed")
            }
            Flushed::Skipped => {}
        }
    }
}

impl ClientContext for LoopContext {
    fn error(&self, error: KafkaError, reason: &str) {
        if is_missing_topic(&error) {
            tracing::debug!(%reason, "subscribed topics not available yet");
        } else {
            tracing::error!(%error, %reason, "librdkafka error");
        }
    }

    fn stats(&self, statistics: rdkafka::Statistics) {
        for lag in PartitionLag::from_statistics(&statistics) {
            self.observer.partition_lag(&lag);
        }
    }
}

impl ConsumerContext for LoopContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(tpl) => {
                tracing::info!(partitions = %describe(tpl), "partitions revoked");
                // The dispatcher may have paused some: a pause outlives the assignment in
                // librdkafka, and the next owner (maybe us again) must fetch them.
                if let Err(e) = consumer.resume(tpl) {
                    tracing::debug!(error = %e, "resuming revoked partitions");
                }
                self.status.note_revoked(partitions(tpl));
                self.revoke(consumer);
                self.observer.revoked(&partitions(tpl));
            }
            Rebalance::Assign(tpl) => {
                tracing::info!(partitions = %describe(tpl), "partitions assigned")
            }
            Rebalance::Error(e) => tracing::warn!(error = %e, "rebalance error"),
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let assigned = consumer
            .assignment()
            .map(|a| a.count() > 0)
            .unwrap_or(false);
        self.status.set_assigned(assigned);
        if let Rebalance::Assign(tpl) = rebalance {
            self.observer.assigned(&partitions(tpl));
        }
    }
}

fn partitions(tpl: &TopicPartitionList) -> Vec<(String, i32)> {
    tpl.elements()
        .iter()
        .map(|e| (e.topic().to_owned(), e.partition()))
        .collect()
}

fn describe(tpl: &TopicPartitionList) -> String {
    tpl.elements()
        .iter()
        .map(|e| format!("{}/{}", e.topic(), e.partition()))
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::offsets::Offsets;
    use std::sync::Mutex;

    /// Counts commits; answers with `result`.
    struct Committer {
        commits: Mutex<usize>,
        result: fn() -> Result<(), KafkaError>,
    }

    impl OffsetSink for Committer {
        fn store(&self, _: &Offsets) -> Result<(), KafkaError> {
            Ok(())
        }
        fn commit(&self) -> Result<(), KafkaError> {
            *self.commits.lock().unwrap() += 1;
            (self.result)()
        }
    }

    fn committer(result: fn() -> Result<(), KafkaError>) -> Committer {
        Committer {
            commits: Mutex::new(0),
            result,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn revocation_waits_for_the_workers_then_commits() {
        let status = Arc::new(LoopStatus::default());
        status.dispatched();
        let worker = Arc::clone(&status);
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(30)).await;
            worker.settled(1);
        });
        let sink = committer(|| Ok(()));
        let flushed = flush_before_revoke(
            &status,
            &sink,
            Duration::from_secs(5),
            &CancellationToken::new(),
        );
        assert_eq!(flushed, Flushed::Committed { settled: true });
        assert_eq!(*sink.commits.lock().unwrap(), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn revocation_commits_what_settled_when_the_rest_takes_too_long() {
        let status = LoopStatus::default();
        status.dispatched();
        let sink = committer(|| Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)));
        let flushed = flush_before_revoke(
            &status,
            &sink,
            Duration::from_millis(20),
            &CancellationToken::new(),
        );
        assert_eq!(flushed, Flushed::NothingToCommit { settled: false });
        assert_eq!(*sink.commits.lock().unwrap(), 1);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn revocation_never_blocks_a_current_thread_runtime_and_skips_on_shutdown() {
        let status = LoopStatus::default();
        status.dispatched();
        let sink = committer(|| Ok(()));
        let flushed = flush_before_revoke(
            &status,
            &sink,
            Duration::from_secs(60),
            &CancellationToken::new(),
        );
        assert_eq!(flushed, Flushed::Committed { settled: false });
        let stop = CancellationToken::new();
        stop.cancel();
        let skipped = flush_before_revoke(&status, &sink, Duration::from_secs(60), &stop);
        assert_eq!(skipped, Flushed::Skipped);
        assert_eq!(*sink.commits.lock().unwrap(), 1, "no commit on shutdown");
    }
}
