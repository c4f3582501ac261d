//! Reading partitions to their end without the broker's `ListOffsets(LATEST)` (wrong on
//! some brokers, see STACK-NOTES): a consumer without a group reads from the given offsets
//! until every partition reports its end (`enable.partition.eof`), and the offset of that
//! report is the partition's end.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use crate::config::KafkaConfig;

/// Reading a topic failed.
#[derive(Debug, thiserror::Error)]
pub enum TopicError {
    /// The client, the metadata or a fetch failed.
    #[error("reading topic {topic}: {source}")]
    Kafka {
        /// Topic.
        topic: String,
        /// Cause.
        #[source]
        source: KafkaError,
    },
    /// The end was not reached in time.
    #[error("topic {topic} did not reach its end within {0:?}", .timeout)]
    Timeout {
        /// Topic.
        topic: String,
        /// How long it was read.
        timeout: Duration,
    },
}

/// A consumer of `kafka`'s brokers (and TLS/SASL properties) that joins no group and
/// reports partition ends.
fn reader_config(kafka: &KafkaConfig) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", &kafka.bootstrap_servers);
    for (key, value) in &kafka.properties {
        config.set(key, value);
    }
    config
        // Never used to commit: the reader assigns partitions itself.
        .set("group.id", format!("{}-rebuild-reader", kafka.group_id))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "true")
        .set("fetch.wait.max.ms", "25");
    config
}

/// The partition numbers of `topic` (none when it does not exist).
pub(crate) fn partitions(
    kafka: &KafkaConfig,
    topic: &str,
    timeout: Duration,
) -> Result<Vec<i32>, TopicError> {
    let fail = |source| TopicError::Kafka {
        topic: topic.to_owned(),
        source,
    };
    let consumer: BaseConsumer = reader_config(kafka).create().map_err(fail)?;
    let metadata = consumer
        .fetch_metadata(Some(topic), timeout)
        .map_err(fail)?;
    Ok(metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic && t.error().is_none())
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect())
}

/// Reads `topic` from `start` (partition -> first offset to read; partitions of the topic
/// not in the map start at the beginning), handing each message to `each`, until every
/// partition reported its end; returns those ends (the next offset of each partition).
pub(crate) async fn read_to_end(
    kafka: &KafkaConfig,
    topic: &str,
    start: &BTreeMap<i32, i64>,
    timeout: Duration,
    mut each: impl FnMut(&BorrowedMessage<'_>),
) -> Result<BTreeMap<i32, i64>, TopicError> {
    let fail = |source| TopicError::Kafka {
        topic: topic.to_owned(),
        source,
    };
    let partitions = partitions(kafka, topic, timeout)?;
    let mut ends = BTreeMap::new();
    if partitions.is_empty() {
        return Ok(ends);
    }
    let consumer: StreamConsumer = reader_config(kafka).create().map_err(fail)?;
    let mut assignment = TopicPartitionList::new();
    for &p in &partitions {
        let offset = start
            .get(&p)
            .map_or(Offset::Beginning, |&o| Offset::Offset(o));
        assignment
            .add_partition_offset(topic, p, offset)
            .map_err(fail)?;
    }
    consumer.assign(&assignment).map_err(fail)?;
    let deadline = tokio::time::Instant::now() + timeout;
    while ends.len() < partitions.len() {
        let next = tokio::time::timeout_at(deadline, consumer.recv()).await;
        match next {
            Err(_) => {
                return Err(TopicError::Timeout {
                    topic: topic.to_owned(),
                    timeout,
                });
            }
            Ok(Ok(message)) => each(&message),
            Ok(Err(KafkaError::PartitionEOF(p))) => {
                let position = consumer.position().map_err(fail)?;
                let end = position
                    .find_partition(topic, p)
                    .and_then(|e| e.offset().to_raw())
                    .filter(|o| *o >= 0)
                    .or_else(|| start.get(&p).copied())
                    .unwrap_or(0);
                ends.insert(p, end);
            }
            Ok(Err(e)) => return Err(fail(e)),
        }
    }
    Ok(ends)
}

/// The key and value bytes of a message, owned.
pub(crate) fn payload(message: &BorrowedMessage<'_>) -> (Option<Vec<u8>>, Option<Vec<u8>>) {
    (
        message.key().map(<[u8]>::to_vec),
        message.payload().map(<[u8]>::to_vec),
    )
}
