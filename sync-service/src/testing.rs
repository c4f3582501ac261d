//! In-memory sinks for the unit tests of the stages behind the consumer loop: a
//! read-model store with version guards, truncate floors and checkpoints, a dead-letter
//! path, both with failure injection and hooks that play "someone else meanwhile" (an
//! operator, another instance), and records in Debezium's JSON envelope.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use cqrs_core::backoff::Backoff;
use cqrs_core::{ReadModelWrite, SourceVersion, Target};
use cqrs_kafka::Record;
use cqrs_mongo::{Checkpoint, CheckpointUpdate, GuardedWrite, ItemError, ItemOutcome};
use tokio::sync::oneshot;

use crate::config::TableMapping;
use crate::dead_letter::{
    DeadLetter, DeadLetterError, DeadLetterSink, DeadLetters, Failure, KeyRef, LetterStore, Status,
};
use crate::decode::{Decoder, Format};
use crate::envelope::EnvelopeParser;
use crate::map::{Projections, TableProjection};
use crate::metrics::Metrics;
use crate::pipeline::Pipeline;
use crate::progress::ProjectionProgress;
use crate::write::{ReadStore, StoreError, Writer};

/// A hook run once on the state of a sink.
type Hook<S> = Box<dyn FnOnce(&mut S) + Send>;

/// What the in-memory store holds.
#[derive(Default)]
pub(crate) struct Store {
    /// `(namespace, id)` -> (version, deleted).
    pub(crate) docs: BTreeMap<(String, String), (SourceVersion, bool)>,
    /// Ids whose writes the "server" refuses (a unique index, a document too large).
    pub(crate) refuse: HashSet<String>,
    pub(crate) floors: HashMap<String, SourceVersion>,
    /// `(projection, topic/partition)` -> position.
    pub(crate) checkpoints: BTreeMap<(String, String), u64>,
    /// Whole requests to fail before answering again.
    pub(crate) fail_requests: usize,
    /// Bulk requests answered.
    pub(crate) bulks: usize,
    /// Writes received in bulk requests.
    pub(crate) writes: usize,
    /// `(id, version)` of every fill written, in order.
    pub(crate) fills: Vec<(String, SourceVersion)>,
    /// Runs after the next bulk request (another instance acting meanwhile).
    pub(crate) after_bulk: Option<Hook<Store>>,
}

impl Store {
    fn fail(&mut self) -> Result<(), StoreError> {
        if self.fail_requests > 0 {
            self.fail_requests -= 1;
            return Err(StoreError::Unavailable("memory store is down".into()));
        }
        Ok(())
    }

    /// Fails like [`Store::fail`] without consuming a failure (reads during an outage).
    fn clone_fail(&self) -> Result<(), StoreError> {
        if self.fail_requests > 0 {
            return Err(StoreError::Unavailable("memory store is down".into()));
        }
        Ok(())
    }

    /// Live (not deleted) ids of a namespace.
    pub(crate) fn live(&self, namespace: &str) -> Vec<String> {
        self.docs
            .iter()
            .filter(|((ns, _), (_, deleted))| ns == namespace && !deleted)
            .map(|((_, id), _)| id.clone())
            .collect()
    }
}

/// A read-model store in memory: a write applies when its version is newer than the
/// document's (else stale); a refused document fails, and so do its later writes of the
/// same request (held back), as cqrs-mongo's bulk writer does.
#[derive(Default)]
pub(crate) struct MemoryStore {
    state: Mutex<Store>,
}

impl MemoryStore {
    pub(crate) fn with<R>(&self, f: impl FnOnce(&mut Store) -> R) -> R {
        f(&mut self.state.lock().unwrap())
    }
}

fn namespace(target: &Target) -> String {
    format!(
        "{}.{}",
        target.database.as_deref().unwrap_or("read"),
        target.collection
    )
}

#[async_trait]
impl ReadStore for MemoryStore {
    async fn bulk(
        &self,
        writes: Vec<GuardedWrite>,
        checkpoints: Vec<CheckpointUpdate>,
    ) -> Result<Vec<ItemOutcome>, StoreError> {
        let mut s = self.state.lock().unwrap();
        s.fail()?;
        s.bulks += 1;
        s.writes += writes.len();
        let mut failed: HashSet<(String, String)> = HashSet::new();
        let mut outcomes = Vec::with_capacity(writes.len());
        for w in writes {
            // A child is guarded by its own version: kept as a document of its own, by
            // parent and key, in the namespace of its children (`map::floor_scope`).
            let ns = namespace(&crate::map::floor_scope(&w.write));
            let id = match &w.write {
                ReadModelWrite::Child { id, key, .. } => format!("{id}/{key}"),
                other => other.id().to_string(),
            };
            let child = matches!(w.write, ReadModelWrite::Child { .. });
            let doc = (ns.clone(), id.clone());
            if s.refuse.contains(&id) || failed.contains(&doc) {
                failed.insert(doc);
                outcomes.push(ItemOutcome::Failed(ItemError {
                    namespace: ns,
                    id,
                    code: Some(11000),
                    message: "refused".into(),
                }));
                continue;
            }
            let version = w.write.version();
            let deleted = matches!(
                w.write,
                ReadModelWrite::Delete { .. }
                    | ReadModelWrite::Child {
                        change: cqrs_core::ChildChange::Delete,
                        ..
                    }
            );
            if w.fill && !deleted {
                s.fills.push((id.clone(), version));
                // cqrs-mongo's fill: creates a missing document, adds to a live one
                // (its version stays), leaves a tombstone alone.
                let outcome = match s.docs.get(&doc) {
                    None => {
                        s.docs.insert(doc, (version, false));
                        ItemOutcome::Applied
                    }
                    // A child fill only adds a child never seen.
                    Some((_, false)) if !child => ItemOutcome::Applied,
                    Some(_) => ItemOutcome::Stale,
                };
                outcomes.push(outcome);
                continue;
            }
            let newer = s.docs.get(&doc).is_none_or(|(v, _)| *v < version);
            if newer {
                s.docs.insert(doc, (version, deleted));
                outcomes.push(ItemOutcome::Applied);
            } else {
                outcomes.push(ItemOutcome::Stale);
            }
        }
        for cp in checkpoints {
            let entry = s
                .checkpoints
                .entry((cp.projection, cp.partition))
                .or_default();
            *entry = (*entry).max(cp.position);
        }
        if let Some(hook) = s.after_bulk.take() {
            hook(&mut s);
        }
        Ok(outcomes)
    }

    async fn record_floor(
        &self,
        namespace: &str,
        floor: SourceVersion,
    ) -> Result<bool, StoreError> {
        let mut s = self.state.lock().unwrap();
        s.fail()?;
        let entry = s.floors.entry(namespace.to_owned()).or_default();
        let moved = *entry < floor;
        *entry = (*entry).max(floor);
        Ok(moved)
    }

    async fn floors(
        &self,
        namespaces: Option<&[String]>,
    ) -> Result<Vec<(String, SourceVersion)>, StoreError> {
        let mut s = self.state.lock().unwrap();
        s.fail()?;
        Ok(s.floors
            .iter()
            .filter(|(ns, _)| namespaces.is_none_or(|wanted| wanted.contains(ns)))
            .map(|(ns, floor)| (ns.clone(), *floor))
            .collect())
    }

    async fn sweep(&self, target: &Target, floor: SourceVersion) -> Result<u64, StoreError> {
        let mut s = self.state.lock().unwrap();
        s.fail()?;
        let ns = namespace(target);
        let before = s.docs.len();
        s.docs.retain(|(n, _), (v, _)| *n != ns || *v >= floor);
        Ok((before - s.docs.len()) as u64)
    }

    async fn live_versions(
        &self,
        target: &Target,
        ids: &[bson::Bson],
    ) -> Result<Vec<(bson::Bson, SourceVersion)>, StoreError> {
        let s = self.state.lock().unwrap();
        s.clone_fail()?;
        let ns = namespace(target);
        Ok(ids
            .iter()
            .map(|id| {
                // A child's own version, kept by parent and key (see `bulk`).
                let key = match crate::map::split_versioned_id(id) {
                    Some((parent, key)) => format!("{parent}/{key}"),
                    None => id.to_string(),
                };
                (id, key)
            })
            .filter_map(|(id, key)| match s.docs.get(&(ns.clone(), key)) {
                Some((v, false)) => Some((id.clone(), *v)),
                _ => None,
            })
            .collect())
    }

    async fn checkpoints(&self, projection: &str) -> Result<Vec<Checkpoint>, StoreError> {
        let mut s = self.state.lock().unwrap();
        s.fail()?;
        Ok(s.checkpoints
            .iter()
            .filter(|((p, _), _)| p == projection)
            .map(|((p, partition), position)| Checkpoint {
                projection: p.clone(),
                partition: partition.clone(),
                position: *position,
                updated_at: chrono::Utc::now(),
            })
            .collect())
    }

    async fn probe(&self) -> Result<(), StoreError> {
        self.state.lock().unwrap().fail()
    }

    fn namespace(&self, target: &Target) -> String {
        namespace(target)
    }
}

/// What the in-memory dead-letter path holds.
#[derive(Default)]
pub(crate) struct Letters {
    /// What reached the dead-letter "topic", in order.
    pub(crate) published: Vec<(Record, Failure)>,
    pub(crate) records: BTreeMap<String, DeadLetter>,
    /// Publications to fail before taking them again.
    pub(crate) fail_publishes: usize,
    /// Runs right after the next query of some keys answered (an operator acting while a
    /// batch runs, after its recheck).
    pub(crate) after_recheck: Option<Hook<Letters>>,
}

impl Letters {
    /// Ids of the pending records.
    pub(crate) fn pending(&self) -> Vec<String> {
        self.records
            .values()
            .filter(|r| r.status == Status::Pending)
            .map(|r| r.id.clone())
            .collect()
    }

    /// An operator resolves a record (`dlq skip` / `dlq replay`).
    pub(crate) fn resolve(&mut self, id: &str, status: Status) {
        if let Some(r) = self.records.get_mut(id) {
            r.status = status;
        }
    }

    /// The stage and blocker of the record of `id`.
    pub(crate) fn letter(&self, id: &str) -> (crate::dead_letter::Stage, Option<String>) {
        let r = &self.records[id];
        (r.stage, r.behind.clone())
    }
}

/// A full query held at the gate: it has read the records and waits to answer.
struct Gate {
    reached: oneshot::Sender<()>,
    release: oneshot::Receiver<()>,
}

/// The dead-letter topic and records in memory.
#[derive(Default)]
pub(crate) struct MemoryLetters {
    state: Mutex<Letters>,
    gate: Mutex<Option<Gate>>,
}

impl MemoryLetters {
    pub(crate) fn with<R>(&self, f: impl FnOnce(&mut Letters) -> R) -> R {
        f(&mut self.state.lock().unwrap())
    }

    /// Holds the next full query (a refresh) after it has read the records and before it
    /// answers: the receiver fires when it got there, the sender lets it go.
    pub(crate) fn hold_next_refresh(&self) -> (oneshot::Receiver<()>, oneshot::Sender<()>) {
        let (reached_tx, reached_rx) = oneshot::channel();
        let (release_tx, release_rx) = oneshot::channel();
        *self.gate.lock().unwrap() = Some(Gate {
            reached: reached_tx,
            release: release_rx,
        });
        (reached_rx, release_tx)
    }
}

#[async_trait]
impl DeadLetterSink for MemoryLetters {
    async fn publish(&self, record: &Record, failure: &Failure) -> Result<(), DeadLetterError> {
        let mut s = self.state.lock().unwrap();
        if s.fail_publishes > 0 {
            s.fail_publishes -= 1;
            return Err(DeadLetterError::Unavailable("memory topic is down".into()));
        }
        s.published.push((record.clone(), failure.clone()));
        Ok(())
    }
}

#[async_trait]
impl LetterStore for MemoryLetters {
    async fn save(&self, letter: &DeadLetter) -> Result<(), DeadLetterError> {
        let mut s = self.state.lock().unwrap();
        s.records.insert(letter.id.clone(), letter.clone());
        Ok(())
    }

    async fn pending_of(
        &self,
        keys: Option<&[KeyRef]>,
    ) -> Result<Vec<DeadLetter>, DeadLetterError> {
        let found: Vec<DeadLetter> = {
            let mut s = self.state.lock().unwrap();
            let found = s
                .records
                .values()
                .filter(|r| r.status == Status::Pending)
                .filter(|r| {
                    keys.is_none_or(|keys| {
                        keys.iter().any(|k| k.topic == r.topic && k.key == r.key)
                    })
                })
                .cloned()
                .collect();
            if keys.is_some()
                && let Some(hook) = s.after_recheck.take()
            {
                hook(&mut s);
            }
            found
        };
        if keys.is_none() {
            let gate = self.gate.lock().unwrap().take();
            if let Some(gate) = gate {
                let _ = gate.reached.send(());
                let _ = gate.release.await;
            }
        }
        Ok(found)
    }

    async fn still_pending(&self, ids: &[String]) -> Result<HashSet<String>, DeadLetterError> {
        let s = self.state.lock().unwrap();
        Ok(ids
            .iter()
            .filter(|id| {
                s.records
                    .get(*id)
                    .is_some_and(|r| r.status == Status::Pending)
            })
            .cloned()
            .collect())
    }

    async fn resolve(&self, ids: &[String], status: Status) -> Result<u64, DeadLetterError> {
        let mut s = self.state.lock().unwrap();
        let mut n = 0;
        for id in ids {
            if let Some(r) = s.records.get_mut(id)
                && r.status == Status::Pending
            {
                r.status = status;
                n += 1;
            }
        }
        Ok(n)
    }

    async fn probe(&self) -> Result<(), DeadLetterError> {
        Ok(())
    }
}

/// The topic of the test table `app.orders`.
pub(crate) const TOPIC: &str = "cqrs.app.orders";
/// Its projection's name.
pub(crate) const PROJECTION: &str = "app.orders";
/// The namespace its documents go to.
pub(crate) const ORDERS: &str = "read.orders";

/// A pipeline with one declarative projection (`app.orders` into `read.orders`) over
/// in-memory sinks.
pub(crate) struct Fixture {
    pub(crate) pipeline: Pipeline,
    pub(crate) store: Arc<MemoryStore>,
    pub(crate) letters: Arc<MemoryLetters>,
    pub(crate) metrics: Metrics,
}

pub(crate) fn fixture() -> Fixture {
    let mapping: TableMapping =
        toml::from_str("table = \"app.orders\"\ncollection = \"orders\"").unwrap();
    let mut projections = Projections::default();
    projections.add_table(TableProjection::new(&mapping, "read"));
    let store = Arc::new(MemoryStore::default());
    let letters = Arc::new(MemoryLetters::default());
    let backoff = Backoff::exponential(Duration::from_millis(1), Duration::from_millis(2));
    let metrics = Metrics::new();
    let pipeline = Pipeline {
        decoder: Decoder::without_registry().with_default_format(Format::Auto),
        parser: EnvelopeParser::default(),
        projections,
        writer: Writer::new(store.clone(), backoff),
        dead_letters: DeadLetters::new(letters.clone(), letters.clone()),
        metrics: metrics.clone(),
        progress: Arc::new(ProjectionProgress::new(metrics.clone())),
        backoff,
        snapshot_rows: Default::default(),
        _keep_alive: Vec::new(),
    };
    Fixture {
        pipeline,
        store,
        letters,
        metrics,
    }
}

fn envelope(op: &str, before: &str, after: &str, lsn: u64) -> Vec<u8> {
    format!(
        r#"{{"op":"{op}","before":{before},"after":{after},"source":{{"connector":"postgresql",
        "name":"cqrs","db":"cqrs","schema":"app","table":"orders","lsn":{lsn},"txId":7,
        "ts_ms":1700000000000,"snapshot":"false"}},"ts_ms":1700000000001}}"#
    )
    .into_bytes()
}

fn key(id: i32) -> Vec<u8> {
    format!(r#"{{"id":{id}}}"#).into_bytes()
}

/// An insert (or update) of order `id` at WAL position `lsn`, at `offset` of partition 0.
pub(crate) fn upsert(offset: i64, id: i32, lsn: u64) -> Record {
    let row = format!(r#"{{"id":{id},"total":{lsn}}}"#);
    Record::new(TOPIC, 0, offset)
        .with_key(key(id))
        .with_value(envelope("c", "null", &row, lsn))
}

/// Order `id` read by an incremental snapshot: `op` r, `snapshot` incremental, no LSN.
pub(crate) fn snapshot_read(offset: i64, id: i32) -> Record {
    let value = format!(
        r#"{{"op":"r","before":null,"after":{{"id":{id},"total":1}},"source":{{
        "connector":"postgresql","name":"cqrs","db":"cqrs","schema":"app","table":"orders",
        "lsn":null,"txId":null,"ts_ms":1700000000000,"snapshot":"incremental"}},
        "ts_ms":1700000000001}}"#
    );
    Record::new(TOPIC, 0, offset)
        .with_key(key(id))
        .with_value(value.into_bytes())
}

/// A delete of order `id`.
pub(crate) fn delete(offset: i64, id: i32, lsn: u64) -> Record {
    let row = format!(r#"{{"id":{id},"total":0}}"#);
    Record::new(TOPIC, 0, offset)
        .with_key(key(id))
        .with_value(envelope("d", &row, "null", lsn))
}

/// The tombstone Debezium sends after a delete.
pub(crate) fn tombstone(offset: i64, id: i32) -> Record {
    Record::new(TOPIC, 0, offset).with_key(key(id))
}

/// A record of order `id` whose value no decoder reads.
pub(crate) fn poison(offset: i64, id: i32) -> Record {
    Record::new(TOPIC, 0, offset)
        .with_key(key(id))
        .with_value(b"{not json".to_vec())
}

/// A `TRUNCATE` of the table (keyless, like Debezium's).
pub(crate) fn truncate(offset: i64, lsn: u64) -> Record {
    Record::new(TOPIC, 0, offset).with_value(envelope("t", "null", "null", lsn))
}

/// The `_id` string of order `id` in [`MemoryStore`].
pub(crate) fn doc_id(id: i32) -> String {
    bson::Bson::Int32(id).to_string()
}
