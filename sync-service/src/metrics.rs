//! Prometheus metrics of the pipeline, served on `/metrics`.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Label of per-topic series.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TopicLabel {
    /// Source topic.
    pub topic: String,
}

/// Label of per-projection series.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProjectionLabel {
    /// Projection name.
    pub projection: String,
}

/// Label of per-stage series.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StageLabel {
    /// Pipeline stage.
    pub stage: String,
}

/// Label of per-partition series.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PartitionLabel {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
}

/// Label of per-projection, per-partition series.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProjectionPartitionLabel {
    /// Projection name.
    pub projection: String,
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
}

/// Label of skipped-message series.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    /// Message kind (heartbeat, tombstone, ...).
    pub kind: String,
}

/// Label of per-read-model series.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReadModelLabel {
    /// Read model (`database.name`).
    pub read_model: String,
}

/// Label of per-table series.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TableLabel {
    /// Source table (`schema.table`).
    pub table: String,
}

/// Every metric the service exports.
///
/// ```
/// let metrics = sync_service::metrics::Metrics::new();
/// assert!(metrics.render().contains("sync_batch_size_count 0"));
/// ```
#[derive(Clone)]
pub struct Metrics {
    /// Messages consumed per topic.
    pub consumed: Family<TopicLabel, Counter>,
    /// Writes applied per projection.
    pub applied: Family<ProjectionLabel, Counter>,
    /// Writes found stale (redelivery, replay, out of order) per projection.
    pub stale: Family<ProjectionLabel, Counter>,
    /// Messages dead-lettered per stage.
    pub dead_lettered: Family<StageLabel, Counter>,
    /// Messages skipped per kind.
    pub skipped: Family<KindLabel, Counter>,
    /// Messages per written batch.
    pub batch_size: Histogram,
    /// Seconds spent writing a batch to MongoDB.
    pub write_latency: Histogram,
    /// Seconds from the PostgreSQL commit (`source.ts_ms`) to MongoDB acknowledging the write.
    pub end_to_end_latency: Histogram,
    /// Messages behind per partition: the partition's high watermark (from fetch
    /// responses) minus the group's committed offset.
    pub lag: Family<PartitionLabel, Gauge>,
    /// Committed offset per partition.
    pub committed: Family<PartitionLabel, Gauge>,
    /// Offset of the last message each projection settled, per partition: its checkpoint
    /// in MongoDB (`[mongodb] checkpoint_collection`).
    pub projection_offset: Family<ProjectionPartitionLabel, Gauge>,
    /// Messages of the partition after the projection's checkpoint (high watermark from
    /// librdkafka's statistics).
    pub projection_lag: Family<ProjectionPartitionLabel, Gauge>,
    /// Generation of the MongoDB client when the last batch was written: 0 for the client
    /// of the start, +1 at every rebuild (a new Vault secret version, `[vault]` section).
    pub mongodb_client_generation: Gauge,
    /// Rows of incremental snapshots this process applied, per source table.
    pub snapshot_rows: Family<TableLabel, Counter>,
    /// Rows a rebuild has received so far (every instance's), per read model being rebuilt.
    pub rebuild_rows: Family<ReadModelLabel, Gauge>,
    /// The planner's row estimate of a rebuild's tables (0: unknown).
    pub rebuild_rows_estimate: Family<ReadModelLabel, Gauge>,
    /// 1 while a rebuild of the read model runs (signalled, snapshotting, catching up).
    pub rebuild_active: Family<ReadModelLabel, Gauge>,
    registry: Arc<Registry>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates the per-projection and per-stage series at 0, so that Prometheus sees their
    /// first increment (a series that appears at 1 shows no `increase()` or `rate()`).
    ///
    /// ```
    /// let metrics = sync_service::metrics::Metrics::new();
    /// metrics.initialize(["orders"]);
    /// assert!(metrics.render().contains("sync_changes_stale_total{projection=\"orders\"} 0"));
    /// assert!(metrics.render().contains("sync_changes_dead_lettered_total{stage=\"decode\"} 0"));
    /// ```
    pub fn initialize<'a>(&self, projections: impl IntoIterator<Item = &'a str>) {
        for projection in projections {
            let label = ProjectionLabel {
                projection: projection.to_owned(),
            };
            let _ = self.applied.get_or_create(&label);
            let _ = self.stale.get_or_create(&label);
        }
        for stage in crate::dead_letter::Stage::ALL {
            let _ = self.dead_lettered.get_or_create(&StageLabel {
                stage: stage.as_str().to_owned(),
            });
        }
    }

    /// Creates and registers the metrics.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("sync");
        let consumed = Family::<TopicLabel, Counter>::default();
        let applied = Family::<ProjectionLabel, Counter>::default();
        let stale = Family::<ProjectionLabel, Counter>::default();
        let dead_lettered = Family::<StageLabel, Counter>::default();
        let skipped = Family::<KindLabel, Counter>::default();
        let batch_size = Histogram::new(exponential_buckets(1.0, 2.0, 14));
        let write_latency = Histogram::new(exponential_buckets(0.0005, 2.0, 16));
        let end_to_end_latency = Histogram::new(exponential_buckets(0.005, 2.0, 14));
        registry.register(
            "end_to_end_latency_seconds",
            "PostgreSQL commit to MongoDB write acknowledged",
            end_to_end_latency.clone(),
        );
        let lag = Family::<PartitionLabel, Gauge>::default();
        let committed = Family::<PartitionLabel, Gauge>::default();
        registry.register(
            "consumer_lag",
            "Messages behind the partition's end, from committed offsets",
            lag.clone(),
        );
        registry.register(
            "committed_offset",
            "Committed offset per partition",
            committed.clone(),
        );
        let projection_offset = Family::<ProjectionPartitionLabel, Gauge>::default();
        let projection_lag = Family::<ProjectionPartitionLabel, Gauge>::default();
        registry.register(
            "projection_offset",
            "Offset of the last message a projection settled per partition (its checkpoint)",
            projection_offset.clone(),
        );
        registry.register(
            "projection_lag",
            "Messages of the partition after the projection's checkpoint",
            projection_lag.clone(),
        );
        let mongodb_client_generation = Gauge::default();
        registry.register(
            "mongodb_client_generation",
            "MongoDB client rebuilds (new credentials) as of the last written batch",
            mongodb_client_generation.clone(),
        );
        let snapshot_rows = Family::<TableLabel, Counter>::default();
        let rebuild_rows = Family::<ReadModelLabel, Gauge>::default();
        let rebuild_rows_estimate = Family::<ReadModelLabel, Gauge>::default();
        let rebuild_active = Family::<ReadModelLabel, Gauge>::default();
        registry.register(
            "snapshot_rows",
            "Incremental snapshot rows applied by this process, per source table",
            snapshot_rows.clone(),
        );
        registry.register(
            "rebuild_rows",
            "Rows a running rebuild has received, per read model",
            rebuild_rows.clone(),
        );
        registry.register(
            "rebuild_rows_estimate",
            "Planner estimate of the rows a running rebuild reads (0: unknown)",
            rebuild_rows_estimate.clone(),
        );
        registry.register(
            "rebuild_active",
            "1 while the read model is being rebuilt",
            rebuild_active.clone(),
        );
        registry.register("changes_consumed", "Messages consumed", consumed.clone());
        registry.register(
            "changes_applied",
            "Read-model writes applied",
            applied.clone(),
        );
        registry.register(
            "changes_stale",
            "Read-model writes found stale",
            stale.clone(),
        );
        registry.register(
            "changes_dead_lettered",
            "Messages sent to the dead-letter topic",
            dead_lettered.clone(),
        );
        registry.register(
            "changes_skipped",
            "Messages with nothing to project",
            skipped.clone(),
        );
        registry.register("batch_size", "Messages per batch", batch_size.clone());
        registry.register(
            "write_latency_seconds",
            "MongoDB write time per batch",
            write_latency.clone(),
        );
        Metrics {
            consumed,
            applied,
            stale,
            dead_lettered,
            skipped,
            batch_size,
            write_latency,
            end_to_end_latency,
            lag,
            committed,
            projection_offset,
            projection_lag,
            mongodb_client_generation,
            snapshot_rows,
            rebuild_rows,
            rebuild_rows_estimate,
            rebuild_active,
            registry: Arc::new(registry),
        }
    }

    /// Drops the per-partition series of `partitions` (revoked: another instance reports
    /// them now, and a stale series would count their lag twice).
    ///
    /// ```
    /// use sync_service::metrics::{Metrics, PartitionLabel};
    /// let metrics = Metrics::new();
    /// metrics.lag.get_or_create(&PartitionLabel { topic: "t".into(), partition: 0 }).set(3);
    /// metrics.forget_partitions(&[("t".to_string(), 0)]);
    /// assert!(!metrics.render().contains("partition=\"0\""));
    /// ```
    pub fn forget_partitions(&self, partitions: &[(String, i32)]) {
        for (topic, partition) in partitions {
            let label = PartitionLabel {
                topic: topic.clone(),
                partition: *partition,
            };
            self.lag.remove(&label);
            self.committed.remove(&label);
        }
    }

    /// The text exposition format.
    ///
    /// ```
    /// assert!(sync_service::metrics::Metrics::new().render().ends_with("# EOF\n"));
    /// ```
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}
