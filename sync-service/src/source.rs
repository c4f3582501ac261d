//! Source stage: the Kafka consumer group.
//!
//! Offsets are stored explicitly (`enable.auto.offset.store=false`) only after a batch's
//! writes are acknowledged by MongoDB (or its messages dead-lettered), and librdkafka
//! commits stored offsets on its timer, so a crash redelivers at most the unacknowledged
//! tail, which the version guards make harmless.
//!
//! When the group takes partitions away (an instance joins or leaves), the revocation
//! callback first lets the workers settle what they hold and commits it, so the next owner
//! starts exactly after the last applied change instead of replaying up to a commit
//! interval of it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::KafkaError;
use rdkafka::{ClientContext, TopicPartitionList};
use tokio::runtime::{Handle, RuntimeFlavor};
use tokio_util::sync::CancellationToken;

use crate::config::KafkaConfig;
use crate::metrics::{Metrics, PartitionLabel};
use crate::progress::Progress;

/// Logs group membership changes, flushes and commits before partitions are revoked, and
/// turns librdkafka statistics into lag metrics.
pub struct SourceContext {
    metrics: Metrics,
    progress: Arc<Progress>,
    flush_timeout: Duration,
    shutdown: CancellationToken,
}

impl SourceContext {
    /// A context reporting to `metrics` and flushing the work counted by `progress` (for up
    /// to `flush_timeout`) on revocation, unless `shutdown` was requested (the service then
    /// flushes and commits itself).
    ///
    /// ```
    /// # use std::{sync::Arc, time::Duration};
    /// use sync_service::{metrics::Metrics, progress::Progress, source::SourceContext};
    /// let context = SourceContext::new(
    ///     Metrics::new(),
    ///     Arc::new(Progress::default()),
    ///     Duration::from_secs(10),
    ///     tokio_util::sync::CancellationToken::new(),
    /// );
    /// ```
    pub fn new(
        metrics: Metrics,
        progress: Arc<Progress>,
        flush_timeout: Duration,
        shutdown: CancellationToken,
    ) -> Self {
        SourceContext {
            metrics,
            progress,
            flush_timeout,
            shutdown,
        }
    }

    /// Waits for the workers to settle what they hold (their offsets get stored), then
    /// commits synchronously. librdkafka runs this callback on the task polling the consumer,
    /// which therefore dispatches nothing new meanwhile; the workers run on other threads.
    fn flush_before_revoke(&self, consumer: &BaseConsumer<Self>) {
        if self.shutdown.is_cancelled() {
            return;
        }
        let pending = self.progress.in_flight();
        let started = Instant::now();
        let settled = match Handle::try_current().map(|h| h.runtime_flavor()) {
            Ok(RuntimeFlavor::MultiThread) => {
                tokio::task::block_in_place(|| self.progress.wait_idle(self.flush_timeout))
            }
            // Blocking the only runtime thread would block the workers too.
            _ => self.progress.in_flight() == 0,
        };
        if !settled {
            tracing::warn!(
                pending,
                left = self.progress.in_flight(),
                timeout_ms = self.flush_timeout.as_millis() as u64,
                "in-flight work not settled before the revocation; the next owner replays it \
                 (the version guards make that harmless)"
            );
        }
        match consumer.commit_consumer_state(CommitMode::Sync) {
            Ok(()) => tracing::info!(
                flushed = pending,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "flushed and committed before handing off partitions"
            ),
            // Nothing stored since the last commit.
            Err(KafkaError::ConsumerCommit(rdkafka::types::RDKafkaErrorCode::NoOffset)) => {
                tracing::info!(
                    flushed = pending,
                    "nothing to commit before handing off partitions"
                )
            }
            Err(e) => tracing::warn!(error = %e, "commit before the revocation failed"),
        }
    }
}

/// A subscription (usually a regex) whose topics do not exist yet: expected until Debezium
/// creates them, so not worth an error.
pub fn is_missing_topic(error: &KafkaError) -> bool {
    error.rdkafka_error_code() == Some(rdkafka::types::RDKafkaErrorCode::UnknownTopicOrPartition)
}

impl ClientContext for SourceContext {
    fn error(&self, error: KafkaError, reason: &str) {
        if is_missing_topic(&error) {
            tracing::debug!(%reason, "subscribed topics not available yet");
        } else {
            tracing::error!(%error, %reason, "librdkafka error");
        }
    }

    fn stats(&self, statistics: rdkafka::Statistics) {
        for (topic, t) in &statistics.topics {
            for (partition, p) in &t.partitions {
                // -1 is librdkafka's "unassigned partition"; negative offsets are "unknown".
                if *partition < 0 || p.committed_offset < 0 || p.hi_offset < 0 {
                    continue;
                }
                let label = PartitionLabel {
                    topic: topic.clone(),
                    partition: *partition,
                };
                self.metrics
                    .committed
                    .get_or_create(&label)
                    .set(p.committed_offset);
                self.metrics
                    .lag
                    .get_or_create(&label)
                    .set((p.hi_offset - p.committed_offset).max(0));
            }
        }
    }
}

impl ConsumerContext for SourceContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(tpl) => {
                tracing::info!(partitions = %describe(tpl), "partitions revoked");
                self.flush_before_revoke(consumer);
            }
            Rebalance::Assign(tpl) => {
                tracing::info!(partitions = %describe(tpl), "partitions assigned")
            }
            Rebalance::Error(e) => tracing::warn!(error = %e, "rebalance error"),
        }
    }
}

fn describe(tpl: &TopicPartitionList) -> String {
    tpl.elements()
        .iter()
        .map(|e| format!("{}/{}", e.topic(), e.partition()))
        .collect::<Vec<_>>()
        .join(",")
}

/// The largest message the dead-letter producer sends: the limit the stack's connectors and
/// broker are configured with (`producer.override.max.request.size`, `message.max.bytes`).
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// The consumer the service reads from.
pub type Source = StreamConsumer<SourceContext>;

/// librdkafka settings of the consumer: ours first, then the user's pass-through
/// properties (TLS, SASL, ...), which may override anything but the offset store.
pub fn client_config(kafka: &KafkaConfig) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &kafka.bootstrap_servers)
        .set("group.id", &kafka.group_id)
        .set("enable.auto.commit", "true")
        .set("auto.commit.interval.ms", "1000")
        // Earliest: a new group starts from the beginning of the topics (the broker's
        // LATEST is not reliable here, see STACK-NOTES, and a read model wants it all).
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", kafka.session_timeout_ms.to_string())
        .set("enable.partition.eof", "false")
        // Lag comes from the statistics: high watermarks of fetch responses (the broker's
        // ListOffsets(LATEST) is not reliable here) against committed offsets.
        .set("statistics.interval.ms", "5000")
        // librdkafka prefetches up to 64 MB per consumer by default; the workers' queues
        // already hold a batch ahead, so a small prefetch bounds memory without starving
        // them. Measured at full throughput (BENCHMARKS.md): peak RSS 116 MB at 64 MB, 107 MB
        // at 16 MB, 73 MB at 4 MB, with the same changes/s.
        .set("queued.max.messages.kbytes", "4096")
        // A fetch waits up to 500 ms for data by default, and brokers that do not answer a
        // waiting fetch as soon as data arrives (tansu) then add that wait to every change's
        // latency: measured 129 ms p50 / 254 ms p99 produce-to-consume at 500 ms against
        // 9 / 22 ms at 25 ms. An idle consumer pays 40 small requests per second per broker.
        .set("fetch.wait.max.ms", "25");
    with_user_properties(&mut config, kafka);
    config.set("enable.auto.offset.store", "false");
    config
}

/// librdkafka settings of the dead-letter producer: the bootstrap servers and the user's
/// pass-through properties (TLS, SASL, ...), then idempotent, fully acknowledged writes.
pub fn producer_config(kafka: &KafkaConfig) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &kafka.bootstrap_servers)
        // A dead letter carries the original message, which may be as large as the change
        // events the stack's connector is allowed to produce (64 MiB, see the README's
        // "Message size" section); librdkafka's 1 MB default would refuse it and the
        // pipeline would retry forever.
        .set("message.max.bytes", MAX_MESSAGE_BYTES.to_string());
    with_user_properties(&mut config, kafka);
    config.set("enable.idempotence", "true").set("acks", "all");
    config
}

fn with_user_properties(config: &mut ClientConfig, kafka: &KafkaConfig) {
    for (key, value) in &kafka.properties {
        config.set(key, value);
    }
}

/// Creates the consumer and subscribes to the configured topics and/or regex, plus
/// `extra_topics` (those the registered projections read).
pub fn subscribe(
    kafka: &KafkaConfig,
    extra_topics: &[String],
    context: SourceContext,
) -> Result<Source, KafkaError> {
    let consumer: Source = client_config(kafka).create_with_context(context)?;
    let mut topics: Vec<String> = kafka.topics.clone();
    topics.extend(
        extra_topics
            .iter()
            .filter(|t| !kafka.topics.contains(t))
            .cloned(),
    );
    if let Some(regex) = kafka.topic_regex.as_deref().filter(|r| !r.is_empty()) {
        topics.push(format!("^{}", regex.trim_start_matches('^')));
    }
    let refs: Vec<&str> = topics.iter().map(String::as_str).collect();
    consumer.subscribe(&refs)?;
    Ok(consumer)
}
