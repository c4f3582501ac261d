//! Progress per projection: the checkpoints the write stage saves with every batch
//! (`[mongodb] checkpoint_collection`), read back at each assignment and exported as
//! `sync_projection_offset` and `sync_projection_lag` per projection and partition.
//!
//! A projection's checkpoint of a partition is the offset of the last message of that
//! partition it settled: applied, found stale, skipped (a tombstone, a heartbeat) or
//! dead-lettered, the same point the consumer group commits after. It moves for every
//! projection known to read the partition's topic (because it planned a write from it, in
//! this process or, per its checkpoints, before), so a topic whose last message was a
//! tombstone does not look one message behind forever. Checkpoints only move forward.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};

use cqrs_kafka::Record;
use cqrs_mongo::{Checkpoint, CheckpointUpdate};

use crate::metrics::{Metrics, ProjectionPartitionLabel};

/// What this process knows of every projection's position.
///
/// ```
/// use std::sync::Arc;
/// use cqrs_kafka::Record;
/// use sync_service::{metrics::Metrics, progress::ProjectionProgress};
///
/// let metrics = Metrics::new();
/// let progress = ProjectionProgress::new(metrics.clone());
/// progress.assigned(&[("cqrs.app.orders".to_string(), 0)]);
/// let batch = [Record::new("cqrs.app.orders", 0, 7), Record::new("cqrs.app.orders", 0, 8)];
/// let orders: Arc<str> = Arc::from("orders");
/// let updates = progress.checkpoints(&batch, [("cqrs.app.orders", &orders)]);
/// assert_eq!(updates[0].position, 8);
/// progress.saved(&updates);
/// progress.high_watermark("cqrs.app.orders", 0, 12);
/// assert!(metrics.render().contains(
///     "sync_projection_lag{projection=\"orders\",topic=\"cqrs.app.orders\",partition=\"0\"} 3"));
/// ```
pub struct ProjectionProgress {
    metrics: Metrics,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Projections known to read each topic.
    readers: HashMap<String, BTreeSet<Arc<str>>>,
    /// Checkpoint offset per projection and assigned partition.
    positions: HashMap<(Arc<str>, String, i32), i64>,
    /// High watermark per assigned partition.
    high: HashMap<(String, i32), i64>,
    /// Partitions assigned here: only they are reported.
    assigned: HashSet<(String, i32)>,
    /// An assignment came since the checkpoints were last read.
    reload: bool,
}

impl std::fmt::Debug for ProjectionProgress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProjectionProgress").finish_non_exhaustive()
    }
}

impl ProjectionProgress {
    /// Reports into `metrics`.
    ///
    /// ```
    /// let progress = sync_service::progress::ProjectionProgress::new(sync_service::metrics::Metrics::new());
    /// assert!(progress.positions().is_empty());
    /// ```
    pub fn new(metrics: Metrics) -> Self {
        ProjectionProgress {
            metrics,
            state: Mutex::default(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // Every update is a few map operations: a panic cannot leave them half done.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The checkpoints to save with a batch: for every partition of `batch`, its last
    /// offset, for every projection known to read its topic, `reads` included (the
    /// `(topic, projection)` of each write the batch planned).
    ///
    /// ```
    /// # let progress = sync_service::progress::ProjectionProgress::new(sync_service::metrics::Metrics::new());
    /// let orders: std::sync::Arc<str> = "orders".into();
    /// let batch = [cqrs_kafka::Record::new("t", 0, 4)];
    /// assert_eq!(progress.checkpoints(&batch, [("t", &orders)])[0].partition, "t/0");
    /// assert!(progress.checkpoints(&[cqrs_kafka::Record::new("u", 0, 1)], []).is_empty());
    /// ```
    pub fn checkpoints<'a>(
        &self,
        batch: &[Record],
        reads: impl IntoIterator<Item = (&'a str, &'a Arc<str>)>,
    ) -> Vec<CheckpointUpdate> {
        let mut state = self.state();
        for (topic, projection) in reads {
            if !state
                .readers
                .get(topic)
                .is_some_and(|r| r.contains(projection))
            {
                state
                    .readers
                    .entry(topic.to_owned())
                    .or_default()
                    .insert(Arc::clone(projection));
            }
        }
        let last = cqrs_kafka::next_offsets(batch);
        let mut updates = Vec::new();
        for ((topic, partition), next) in last {
            let Some(readers) = state.readers.get(&topic) else {
                continue;
            };
            let position = u64::try_from(next - 1).unwrap_or(0);
            for projection in readers {
                updates.push(CheckpointUpdate::new(
                    projection.to_string(),
                    format!("{topic}/{partition}"),
                    position,
                ));
            }
        }
        updates
    }

    /// Checkpoints the store acknowledged.
    ///
    /// ```
    /// # let progress = sync_service::progress::ProjectionProgress::new(sync_service::metrics::Metrics::new());
    /// progress.assigned(&[("t".to_string(), 0)]);
    /// progress.saved(&[cqrs_mongo::CheckpointUpdate::new("orders", "t/0", 9)]);
    /// assert_eq!(progress.positions()[&("orders".into(), "t".into(), 0)], 9);
    /// ```
    pub fn saved(&self, updates: &[CheckpointUpdate]) {
        self.learn_all(
            updates
                .iter()
                .map(|u| (u.projection.as_str(), u.partition.as_str(), u.position)),
        );
    }

    /// Checkpoints read from the store (at an assignment): they tell which projections read
    /// which topics, and where the assigned partitions stand.
    ///
    /// ```
    /// # let progress = sync_service::progress::ProjectionProgress::new(sync_service::metrics::Metrics::new());
    /// progress.assigned(&[("t".to_string(), 1)]);
    /// let stored = cqrs_mongo::Checkpoint {
    ///     projection: "orders".into(), partition: "t/1".into(), position: 3, updated_at: chrono::Utc::now(),
    /// };
    /// progress.loaded(&[stored]);
    /// assert_eq!(progress.positions().len(), 1);
    /// ```
    pub fn loaded(&self, checkpoints: &[Checkpoint]) {
        self.learn_all(
            checkpoints
                .iter()
                .map(|c| (c.projection.as_str(), c.partition.as_str(), c.position)),
        );
    }

    /// Learns `(projection, topic/partition, position)` checkpoints.
    fn learn_all<'a>(&self, checkpoints: impl Iterator<Item = (&'a str, &'a str, u64)>) {
        let mut state = self.state();
        for (projection, partition, position) in checkpoints {
            if let Some((topic, partition)) = split(partition) {
                let position = i64::try_from(position).unwrap_or(i64::MAX);
                self.learn(&mut state, projection, topic, partition, position);
            }
        }
    }

    fn learn(
        &self,
        state: &mut State,
        projection: &str,
        topic: &str,
        partition: i32,
        position: i64,
    ) {
        let name: Arc<str> = state
            .readers
            .get(topic)
            .and_then(|r| r.iter().find(|p| &***p == projection).cloned())
            .unwrap_or_else(|| Arc::from(projection));
        state
            .readers
            .entry(topic.to_owned())
            .or_default()
            .insert(Arc::clone(&name));
        if !state.assigned.contains(&(topic.to_owned(), partition)) {
            return;
        }
        let entry = state
            .positions
            .entry((Arc::clone(&name), topic.to_owned(), partition))
            .or_insert(position);
        *entry = (*entry).max(position);
        let position = *entry;
        let label = label(&name, topic, partition);
        self.metrics
            .projection_offset
            .get_or_create(&label)
            .set(position);
        if let Some(high) = state.high.get(&(topic.to_owned(), partition)) {
            self.metrics
                .projection_lag
                .get_or_create(&label)
                .set((high - position - 1).max(0));
        }
    }

    /// A partition's high watermark (librdkafka's statistics).
    ///
    /// ```
    /// # let progress = sync_service::progress::ProjectionProgress::new(sync_service::metrics::Metrics::new());
    /// progress.high_watermark("t", 0, 100); // ignored: partition 0 is not assigned here
    /// ```
    pub fn high_watermark(&self, topic: &str, partition: i32, high: i64) {
        let mut state = self.state();
        if !state.assigned.contains(&(topic.to_owned(), partition)) {
            return;
        }
        state.high.insert((topic.to_owned(), partition), high);
        for ((projection, t, p), position) in &state.positions {
            if t == topic && *p == partition {
                self.metrics
                    .projection_lag
                    .get_or_create(&label(projection, topic, partition))
                    .set((high - position - 1).max(0));
            }
        }
    }

    /// Partitions assigned here: their checkpoints are to be read again
    /// ([`ProjectionProgress::take_reload`]).
    ///
    /// ```
    /// # let progress = sync_service::progress::ProjectionProgress::new(sync_service::metrics::Metrics::new());
    /// progress.assigned(&[("t".to_string(), 0)]);
    /// assert!(progress.take_reload());
    /// ```
    pub fn assigned(&self, partitions: &[(String, i32)]) {
        let mut state = self.state();
        state.assigned.extend(partitions.iter().cloned());
        state.reload = true;
    }

    /// Partitions taken away: their series go (another instance reports them now).
    ///
    /// ```
    /// # let progress = sync_service::progress::ProjectionProgress::new(sync_service::metrics::Metrics::new());
    /// progress.assigned(&[("t".to_string(), 0)]);
    /// progress.saved(&[cqrs_mongo::CheckpointUpdate::new("orders", "t/0", 9)]);
    /// progress.revoked(&[("t".to_string(), 0)]);
    /// assert!(progress.positions().is_empty());
    /// ```
    pub fn revoked(&self, partitions: &[(String, i32)]) {
        let mut state = self.state();
        let gone: HashSet<&(String, i32)> = partitions.iter().collect();
        state.assigned.retain(|p| !gone.contains(p));
        state.high.retain(|p, _| !gone.contains(p));
        let metrics = &self.metrics;
        state.positions.retain(|(projection, topic, partition), _| {
            if gone.contains(&(topic.clone(), *partition)) {
                let label = label(projection, topic, *partition);
                metrics.projection_offset.remove(&label);
                metrics.projection_lag.remove(&label);
                false
            } else {
                true
            }
        });
    }

    /// True once after each assignment: the caller reads the checkpoints again.
    ///
    /// ```
    /// # let progress = sync_service::progress::ProjectionProgress::new(sync_service::metrics::Metrics::new());
    /// assert!(!progress.take_reload());
    /// ```
    pub fn take_reload(&self) -> bool {
        std::mem::take(&mut self.state().reload)
    }

    /// The positions known, by projection (tests, diagnostics).
    ///
    /// ```
    /// # let progress = sync_service::progress::ProjectionProgress::new(sync_service::metrics::Metrics::new());
    /// assert!(progress.positions().is_empty());
    /// ```
    pub fn positions(&self) -> BTreeMap<(String, String, i32), i64> {
        self.state()
            .positions
            .iter()
            .map(|((p, t, n), o)| ((p.to_string(), t.clone(), *n), *o))
            .collect()
    }
}

fn label(projection: &str, topic: &str, partition: i32) -> ProjectionPartitionLabel {
    ProjectionPartitionLabel {
        projection: projection.to_owned(),
        topic: topic.to_owned(),
        partition,
    }
}

/// `topic/partition` of a checkpoint.
fn split(partition: &str) -> Option<(&str, i32)> {
    let (topic, number) = partition.rsplit_once('/')?;
    Some((topic, number.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use chrono::Utc;

    use super::*;

    fn progress() -> (ProjectionProgress, Metrics) {
        let metrics = Metrics::new();
        (ProjectionProgress::new(metrics.clone()), metrics)
    }

    fn name(n: &str) -> Arc<str> {
        Arc::from(n)
    }

    #[test]
    fn every_projection_reading_a_topic_moves_to_the_batchs_last_offset() {
        let (progress, _) = progress();
        let (a, b) = (name("a"), name("b"));
        // Offset 5 is a tombstone: no write, but the checkpoint passes it.
        let batch = [
            Record::new("t", 0, 4),
            Record::new("t", 0, 5),
            Record::new("u", 1, 9),
        ];
        let updates = progress.checkpoints(&batch, [("t", &a), ("t", &b)]);
        let got: Vec<(String, String, u64)> = updates
            .iter()
            .map(|u| (u.projection.clone(), u.partition.clone(), u.position))
            .collect();
        assert_eq!(
            got,
            [("a".into(), "t/0".into(), 5), ("b".into(), "t/0".into(), 5)]
        );
        // Known readers move with batches that plan nothing for them.
        let later = progress.checkpoints(&[Record::new("t", 0, 6)], []);
        assert_eq!(later.len(), 2);
    }

    #[test]
    fn only_assigned_partitions_are_reported_and_revoked_ones_disappear() {
        let (progress, metrics) = progress();
        let a = name("a");
        progress.assigned(&[("t".into(), 0)]);
        let updates = progress.checkpoints(
            &[Record::new("t", 0, 3), Record::new("t", 1, 3)],
            [("t", &a)],
        );
        progress.saved(&updates);
        assert_eq!(
            progress.positions().len(),
            1,
            "partition 1 is not assigned here"
        );
        progress.high_watermark("t", 0, 10);
        let text = metrics.render();
        assert!(
            text.contains(r#"sync_projection_offset{projection="a",topic="t",partition="0"} 3"#),
            "{text}"
        );
        assert!(
            text.contains(r#"sync_projection_lag{projection="a",topic="t",partition="0"} 6"#),
            "{text}"
        );
        progress.revoked(&[("t".into(), 0)]);
        assert!(!metrics.render().contains("sync_projection_offset{"));
        assert!(progress.positions().is_empty());
    }

    #[test]
    fn checkpoints_read_back_teach_the_readers_and_never_move_backwards() {
        let (progress, _) = progress();
        progress.assigned(&[("t".into(), 2)]);
        assert!(progress.take_reload());
        assert!(!progress.take_reload(), "once per assignment");
        let stored = |position| Checkpoint {
            projection: "a".into(),
            partition: "t/2".into(),
            position,
            updated_at: Utc::now(),
        };
        progress.loaded(&[stored(40)]);
        progress.loaded(&[stored(30)]);
        assert_eq!(progress.positions()[&("a".into(), "t".into(), 2)], 40);
        // The checkpoint taught that `a` reads `t`: a batch without writes moves it.
        let updates = progress.checkpoints(&[Record::new("t", 2, 41)], []);
        assert_eq!(updates.len(), 1);
        assert_eq!(updates[0].position, 41);
    }

    #[test]
    fn topics_with_slashes_split_on_the_last_one() {
        assert_eq!(split("a/b/3"), Some(("a/b", 3)));
        assert_eq!(split("nopartition"), None);
    }
}
