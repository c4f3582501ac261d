//! Where a batch leaves its partitions, and which worker owns a partition: the two pure
//! decisions of the loop.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::{Offset, TopicPartitionList};

use crate::Record;

/// The next offset to consume per topic and partition.
pub type Offsets = BTreeMap<(String, i32), i64>;

/// The offsets to store once `records` settled: per partition, one past the highest offset.
///
/// ```
/// use cqrs_kafka::{Record, next_offsets};
/// let records = [Record::new("t", 0, 4), Record::new("t", 1, 9), Record::new("t", 0, 5)];
/// let next = next_offsets(&records);
/// assert_eq!(next[&("t".to_string(), 0)], 6);
/// assert_eq!(next[&("t".to_string(), 1)], 10);
/// ```
pub fn next_offsets(records: &[Record]) -> Offsets {
    let mut next = Offsets::new();
    for r in records {
        let entry = next.entry((r.topic.clone(), r.partition)).or_insert(0);
        *entry = (*entry).max(r.offset + 1);
    }
    next
}

/// The worker (of `workers`) that owns a partition: every record of a partition goes to
/// the same worker, so the records of one key stay in order. Stable within a process.
///
/// The partitions of one topic go to consecutive workers from a start picked by the topic's
/// name, so a topic's partitions spread evenly over the workers (a hash of the pair would
/// put two of a topic's four partitions on one worker about as often as not, leaving
/// another idle), and several topics start on different workers.
///
/// ```
/// let w = cqrs_kafka::worker_of("t", 3, 4);
/// assert!(w < 4);
/// assert_eq!(w, cqrs_kafka::worker_of("t", 3, 4));
/// assert_eq!(cqrs_kafka::worker_of("t", 3, 0), 0);
/// // Four partitions, four workers: one each.
/// let mut owners: Vec<usize> = (0..4).map(|p| cqrs_kafka::worker_of("t", p, 4)).collect();
/// owners.sort();
/// assert_eq!(owners, [0, 1, 2, 3]);
/// ```
pub fn worker_of(topic: &str, partition: i32, workers: usize) -> usize {
    if workers <= 1 {
        return 0;
    }
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    topic.hash(&mut hasher);
    let workers = workers as u64;
    let start = hasher.finish() % workers;
    // Kafka partitions are never negative; a negative one still gets a worker below
    // `workers` (`rem_euclid`). The sum is below 2 * workers, which is a usize.
    let offset = i64::from(partition).rem_euclid(workers as i64) as u64;
    ((start + offset) % workers) as usize
}

/// Where settled offsets go: the consumer's offset store, committed by librdkafka's timer
/// and by [`OffsetSink::commit`] (shutdown, revocation). A trait so the loop's decisions
/// are tested without a broker.
pub(crate) trait OffsetSink: Send + Sync {
    /// Stores offsets for the next commit.
    fn store(&self, offsets: &Offsets) -> Result<(), KafkaError>;
    /// Commits what is stored, synchronously.
    fn commit(&self) -> Result<(), KafkaError>;
}

fn partition_list(offsets: &Offsets) -> Result<TopicPartitionList, KafkaError> {
    let mut tpl = TopicPartitionList::new();
    for ((topic, partition), next) in offsets {
        tpl.add_partition_offset(topic, *partition, Offset::Offset(*next))?;
    }
    Ok(tpl)
}

impl<C: ConsumerContext + 'static> OffsetSink for StreamConsumer<C> {
    fn store(&self, offsets: &Offsets) -> Result<(), KafkaError> {
        self.store_offsets(&partition_list(offsets)?)
    }
    fn commit(&self) -> Result<(), KafkaError> {
        self.commit_consumer_state(CommitMode::Sync)
    }
}

impl<C: ConsumerContext> OffsetSink for BaseConsumer<C> {
    fn store(&self, offsets: &Offsets) -> Result<(), KafkaError> {
        self.store_offsets(&partition_list(offsets)?)
    }
    fn commit(&self) -> Result<(), KafkaError> {
        self.commit_consumer_state(CommitMode::Sync)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_offsets_of_nothing_is_empty() {
        assert!(next_offsets(&[]).is_empty());
    }

    #[test]
    fn partitions_spread_over_workers_and_keep_their_worker() {
        let owners: Vec<usize> = (0..64).map(|p| worker_of("topic", p, 4)).collect();
        for w in 0..4 {
            assert!(owners.contains(&w), "worker {w} owns no partition of 64");
        }
        let again: Vec<usize> = (0..64).map(|p| worker_of("topic", p, 4)).collect();
        assert_eq!(owners, again);
    }
}
