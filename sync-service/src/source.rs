//! Source stage: the consumer group, run by the toolkit's consumer loop (`cqrs-kafka`):
//! records dispatched to partition workers, offsets stored only once a batch's writes are
//! acknowledged (or its messages dead-lettered) and committed on a 1 s timer, at shutdown
//! and before partitions are revoked (after the workers settled what they hold, so the
//! next owner starts right after the last applied change). This module holds the
//! sync-service's settings of that loop and what it observes (lag, assignments).

use std::sync::Arc;
use std::time::Duration;

use cqrs_kafka::{BatchSettings, LoopConfig, Observer, PartitionLag};
use rdkafka::ClientConfig;

use crate::config::{KafkaConfig, SyncConfig};
use crate::metrics::{Metrics, PartitionLabel};
use crate::progress::ProjectionProgress;

/// A subscription (usually a regex) whose topics do not exist yet: expected until Debezium
/// creates them, so not worth an error.
pub use cqrs_kafka::is_missing_topic;

/// The largest message the dead-letter producer sends: the limit the stack's connectors and
/// broker are configured with (`producer.override.max.request.size`, `message.max.bytes`).
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// librdkafka settings of the consumer: ours first, then the user's pass-through
/// properties (TLS, SASL, ...). The consumer loop (`cqrs-kafka`) owns the offset store
/// and sets the commit timer (1 s) unless these set it.
///
/// ```
/// # let config = sync_service::config::SyncConfig::new("127.0.0.1:9092", "g", "mongodb://127.0.0.1:27017", "db");
/// let client = sync_service::source::client_config(&config.kafka);
/// assert_eq!(client.get("fetch.wait.max.ms"), Some("25"));
/// ```
pub fn client_config(kafka: &KafkaConfig) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &kafka.bootstrap_servers)
        .set("group.id", &kafka.group_id)
        // Earliest: a new group starts from the beginning of the topics (the broker's
        // LATEST is not reliable here, see STACK-NOTES, and a read model wants it all).
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", kafka.session_timeout_ms.to_string())
        .set("enable.partition.eof", "false")
        // Lag comes from the statistics: high watermarks of fetch responses (the broker's
        // ListOffsets(LATEST) is not reliable here) against committed offsets.
        .set("statistics.interval.ms", "5000")
        // librdkafka prefetches up to 64 MB per partition by default; the workers' queues
        // already hold a batch ahead, so a small prefetch bounds memory without starving
        // them. Measured at full throughput (BENCHMARKS.md): peak RSS 116 MB at 64 MB, 107 MB
        // at 16 MB, 73 MB at 4 MB; 1 MB keeps the same changes/s with the backoff below.
        .set("queued.max.messages.kbytes", "1024")
        // A partition whose prefetch reached that bound is fetched again only after
        // `fetch.queue.backoff.ms`, 1 s by default however soon the queue drains: measured
        // at 1 MB, 11.9k changes/s with the default against 58.8k at 5 ms.
        .set("fetch.queue.backoff.ms", "5")
        // A fetch waits up to 500 ms for data by default, and brokers that do not answer a
        // waiting fetch as soon as data arrives (tansu) then add that wait to every change's
        // latency: measured 129 ms p50 / 254 ms p99 produce-to-consume at 500 ms against
        // 9 / 22 ms at 25 ms. An idle consumer pays 40 small requests per second per broker.
        .set("fetch.wait.max.ms", "25")
        // A subscription regex meets a table's topic only at the next metadata refresh
        // (Debezium creates the topic with the table's first change): every 5 minutes by
        // default, every 5 s here.
        .set("topic.metadata.refresh.interval.ms", "5000");
    with_user_properties(&mut config, kafka);
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

/// The topics to subscribe to: the configured ones and/or regex, plus `extra_topics`
/// (those the registered projections read).
///
/// ```
/// # let config = sync_service::config::SyncConfig::new("127.0.0.1:9092", "g", "mongodb://127.0.0.1:27017", "db");
/// let topics = sync_service::source::topics(&config.kafka, &["cqrs.app.orders".into()]);
/// assert_eq!(topics, vec!["cqrs.app.orders".to_string()]);
/// ```
pub fn topics(kafka: &KafkaConfig, extra_topics: &[String]) -> Vec<String> {
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
    topics
}

/// The consumer loop's settings: `[batch]` bounds and workers, a queue of two batches per
/// worker, a 1 s commit timer, `kafka.revoke_flush_timeout_ms`.
///
/// ```
/// # let config = sync_service::config::SyncConfig::new("127.0.0.1:9092", "g", "mongodb://127.0.0.1:27017", "db");
/// let settings = sync_service::source::loop_config(&config, &[]);
/// assert_eq!(settings.workers, config.batch.workers);
/// assert_eq!(settings.queue_capacity, config.batch.max_size * 2);
/// ```
pub fn loop_config(config: &SyncConfig, extra_topics: &[String]) -> LoopConfig {
    LoopConfig::new(topics(&config.kafka, extra_topics))
        .with_workers(config.batch.workers)
        .with_batch(BatchSettings::new(
            config.batch.max_size,
            config.batch.max_wait(),
        ))
        .with_commit_interval(Duration::from_secs(1))
        .with_revoke_flush_timeout(config.kafka.revoke_flush_timeout())
}

/// What the consumer loop reports, into the metrics: lag and committed offset per
/// partition, projection progress per partition, series dropped when a partition leaves.
///
/// ```
/// use std::sync::Arc;
/// use cqrs_kafka::{Observer, PartitionLag};
/// use sync_service::{metrics::Metrics, progress::ProjectionProgress, source::SourceObserver};
///
/// let metrics = Metrics::new();
/// let observer = SourceObserver::new(metrics.clone(), Arc::new(ProjectionProgress::new(metrics.clone())));
/// observer.partition_lag(&PartitionLag::new("t", 0, 5, 9).unwrap());
/// assert!(metrics.render().contains("sync_consumer_lag{topic=\"t\",partition=\"0\"} 4"));
/// ```
pub struct SourceObserver {
    metrics: Metrics,
    progress: Arc<ProjectionProgress>,
}

impl SourceObserver {
    /// Reports into `metrics` and `progress` (see the example above).
    pub fn new(metrics: Metrics, progress: Arc<ProjectionProgress>) -> Self {
        SourceObserver { metrics, progress }
    }
}

impl Observer for SourceObserver {
    fn partition_lag(&self, lag: &PartitionLag) {
        let label = PartitionLabel {
            topic: lag.topic.clone(),
            partition: lag.partition,
        };
        self.metrics
            .committed
            .get_or_create(&label)
            .set(lag.committed_offset);
        self.metrics.lag.get_or_create(&label).set(lag.lag());
        self.progress
            .high_watermark(&lag.topic, lag.partition, lag.high_watermark);
    }

    fn assigned(&self, partitions: &[(String, i32)]) {
        self.progress.assigned(partitions);
    }

    fn revoked(&self, partitions: &[(String, i32)]) {
        self.metrics.forget_partitions(partitions);
        self.progress.revoked(partitions);
    }
}
