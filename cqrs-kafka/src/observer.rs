//! Hooks for what the consumer learns on the side: partitions assigned and revoked, and
//! the lag librdkafka's statistics report (`statistics.interval.ms`).

/// A partition's position against its end, from librdkafka's statistics: the high
/// watermark of the last fetch response against the group's committed offset.
///
/// ```
/// let lag = cqrs_kafka::PartitionLag::new("t", 0, 90, 100).unwrap();
/// assert_eq!(lag.lag(), 10);
/// assert!(cqrs_kafka::PartitionLag::new("t", 0, -1001, 100).is_none());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionLag {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// The group's committed offset (the next record to consume).
    pub committed_offset: i64,
    /// The partition's high watermark (the offset the next record produced will get).
    pub high_watermark: i64,
}

impl PartitionLag {
    /// A lag from known values; `None` when librdkafka does not know them yet (negative
    /// offsets) or for its "unassigned" pseudo-partition (-1).
    ///
    /// ```
    /// assert!(cqrs_kafka::PartitionLag::new("t", -1, 0, 0).is_none());
    /// ```
    pub fn new(
        topic: impl Into<String>,
        partition: i32,
        committed_offset: i64,
        high_watermark: i64,
    ) -> Option<Self> {
        if partition < 0 || committed_offset < 0 || high_watermark < 0 {
            return None;
        }
        Some(PartitionLag {
            topic: topic.into(),
            partition,
            committed_offset,
            high_watermark,
        })
    }

    /// Records behind the end (never negative).
    ///
    /// ```
    /// assert_eq!(cqrs_kafka::PartitionLag::new("t", 0, 7, 5).unwrap().lag(), 0);
    /// ```
    pub fn lag(&self) -> i64 {
        (self.high_watermark - self.committed_offset).max(0)
    }

    /// Every known partition lag of a statistics report.
    pub(crate) fn from_statistics(statistics: &rdkafka::Statistics) -> Vec<PartitionLag> {
        statistics
            .topics
            .iter()
            .flat_map(|(topic, t)| {
                t.partitions.iter().filter_map(move |(partition, p)| {
                    PartitionLag::new(topic.clone(), *partition, p.committed_offset, p.hi_offset)
                })
            })
            .collect()
    }
}

/// What a loop tells its owner besides records. Every method has an empty default; they
/// run on librdkafka's callback thread, so they must return quickly.
///
/// ```
/// use cqrs_kafka::{Observer, PartitionLag};
///
/// struct LogLag;
/// impl Observer for LogLag {
///     fn partition_lag(&self, lag: &PartitionLag) {
///         println!("{}/{} is {} behind", lag.topic, lag.partition, lag.lag());
///     }
/// }
/// ```
pub trait Observer: Send + Sync + 'static {
    /// One partition's lag, at every statistics report.
    fn partition_lag(&self, lag: &PartitionLag) {
        let _ = lag;
    }

    /// Partitions just assigned to this consumer (`topic`, `partition`).
    fn assigned(&self, partitions: &[(String, i32)]) {
        let _ = partitions;
    }

    /// Partitions about to be taken away (after the revocation flush and commit).
    fn revoked(&self, partitions: &[(String, i32)]) {
        let _ = partitions;
    }
}

/// No observer.
impl Observer for () {}
