//! Source stage: the Kafka consumer group.
//!
//! Offsets are stored explicitly (`enable.auto.offset.store=false`) only after a batch's
//! writes are acknowledged by MongoDB (or its messages dead-lettered), and librdkafka
//! commits stored offsets on its timer, so a crash redelivers at most the unacknowledged
//! tail, which the version guards make harmless.

use rdkafka::ClientConfig;
use rdkafka::consumer::{Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::{ClientContext, TopicPartitionList};

use crate::config::KafkaConfig;

/// Logs group membership changes.
pub struct SourceContext;

impl ClientContext for SourceContext {}

impl ConsumerContext for SourceContext {
    fn pre_rebalance(
        &self,
        _consumer: &rdkafka::consumer::BaseConsumer<Self>,
        rebalance: &Rebalance<'_>,
    ) {
        match rebalance {
            Rebalance::Revoke(tpl) => {
                tracing::info!(partitions = %describe(tpl), "partitions revoked")
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
        .set("enable.partition.eof", "false");
    for (key, value) in &kafka.properties {
        config.set(key, value);
    }
    config.set("enable.auto.offset.store", "false");
    config
}

/// Creates the consumer and subscribes to the configured topics and/or regex.
pub fn subscribe(kafka: &KafkaConfig) -> Result<Source, KafkaError> {
    let consumer: Source = client_config(kafka).create_with_context(SourceContext)?;
    let mut topics: Vec<String> = kafka.topics.clone();
    if let Some(regex) = kafka.topic_regex.as_deref().filter(|r| !r.is_empty()) {
        topics.push(format!("^{}", regex.trim_start_matches('^')));
    }
    let refs: Vec<&str> = topics.iter().map(String::as_str).collect();
    consumer.subscribe(&refs)?;
    Ok(consumer)
}
