//! Write stage: planned writes into the read-model store (MongoDB through cqrs-mongo's
//! guarded bulk writer), with checkpoints in the same request and retries with backoff
//! while the store is away.
//!
//! The store is a small interface, [`ReadStore`]: guarded bulk writes, truncate floors,
//! checkpoints. [`Writer`] makes the decisions on top of it (which writes a truncate made
//! stale, when to sweep behind a floor recorded elsewhere, what to retry) and is
//! unit-tested over an in-memory store; [`MongoStore`] is the production one.

mod coalesce;
mod mongo;

use std::collections::{BTreeMap, HashSet};
use std::fmt::Display;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use cqrs_core::backoff::Backoff;
use cqrs_core::{SourceVersion, Target};
use cqrs_mongo::bson::Bson;
use cqrs_mongo::{Checkpoint, CheckpointUpdate, GuardedWrite, ItemOutcome};
use tokio_util::sync::CancellationToken;

pub use mongo::MongoStore;

use crate::map::Planned;
use crate::truncate::FloorCache;
use coalesce::Kept;

/// The write stage was stopped by shutdown before the store acknowledged the batch.
///
/// ```
/// assert!(sync_service::write::Interrupted.to_string().starts_with("shut down"));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("shut down before the batch was acknowledged")]
pub struct Interrupted;

/// Why a request to the read-model store failed as a whole (the writer retries it).
///
/// ```
/// let e = sync_service::write::StoreError::Unavailable("down".into());
/// assert!(e.to_string().contains("down"));
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// cqrs-mongo refused the request.
    #[error(transparent)]
    Mongo(#[from] cqrs_mongo::MongoError),
    /// The MongoDB driver failed.
    #[error("mongodb: {0}")]
    Driver(#[from] mongodb::error::Error),
    /// Another store did not answer.
    #[error("read-model store unavailable: {0}")]
    Unavailable(String),
}

/// The read-model store beneath the write stage.
///
/// Every method may fail as a whole ([`StoreError`]); the [`Writer`] retries it, so each
/// must be safe to repeat (guarded writes are idempotent, floors and checkpoints only
/// move forward).
///
/// ```no_run
/// # async fn demo(store: std::sync::Arc<dyn sync_service::write::ReadStore>) -> Result<(), sync_service::write::StoreError> {
/// store.probe().await?;
/// let floors = store.floors(None).await?;
/// let positions = store.checkpoints("orders").await?;
/// # Ok(()) }
/// ```
#[async_trait]
pub trait ReadStore: Send + Sync + 'static {
    /// Applies guarded writes and saves checkpoints in one request: one outcome per write,
    /// in order. A write of a document after one of its writes failed is not applied and
    /// fails too (held back).
    async fn bulk(
        &self,
        writes: Vec<GuardedWrite>,
        checkpoints: Vec<CheckpointUpdate>,
    ) -> Result<Vec<ItemOutcome>, StoreError>;

    /// Records the truncate floor of `namespace` at `floor` (only forward); true when it
    /// moved.
    async fn record_floor(&self, namespace: &str, floor: SourceVersion)
    -> Result<bool, StoreError>;

    /// The stored floors of `namespaces` (all when `None`).
    async fn floors(
        &self,
        namespaces: Option<&[String]>,
    ) -> Result<Vec<(String, SourceVersion)>, StoreError>;

    /// Deletes the documents of `target` older than `floor`; returns how many.
    async fn sweep(&self, target: &Target, floor: SourceVersion) -> Result<u64, StoreError>;

    /// The stored versions of documents `ids` of `target`'s live version (those that exist
    /// and are not tombstones): the versions incremental snapshot rows adopt. For the
    /// children scope of a child table (`map::children_scope`) the ids are those of
    /// `map::versioned_id` and the versions the children's own (live, not deleted).
    async fn live_versions(
        &self,
        target: &Target,
        ids: &[Bson],
    ) -> Result<Vec<(Bson, SourceVersion)>, StoreError>;

    /// The stored checkpoints of `projection`.
    async fn checkpoints(&self, projection: &str) -> Result<Vec<Checkpoint>, StoreError>;

    /// One cheap request (the readiness probe).
    async fn probe(&self) -> Result<(), StoreError>;

    /// `database.collection` of a target (the default database when it names none).
    fn namespace(&self, target: &Target) -> String;

    /// How many times the client was rebuilt (new credentials from Vault); 0 by default.
    fn generation(&self) -> u64 {
        0
    }
}

/// Calls `call` until it succeeds, waiting `backoff` between attempts and logging
/// `what`; `Err` only when `shutdown` comes first.
pub(crate) async fn retry<T, E, F, Fut>(
    backoff: &Backoff,
    shutdown: &CancellationToken,
    what: &str,
    mut call: F,
) -> Result<T, Interrupted>
where
    E: Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut attempt = 0;
    loop {
        match call().await {
            Ok(value) => return Ok(value),
            Err(e) => {
                tracing::warn!(error = %e, attempt, "{what}; retrying");
                backoff
                    .sleep_unless(attempt, shutdown.cancelled())
                    .await
                    .map_err(|_| Interrupted)?;
                attempt = attempt.saturating_add(1);
            }
        }
    }
}

/// What the store said about the planned writes of a batch, in plan order.
///
/// ```
/// let written = sync_service::write::Written::default();
/// assert!(written.outcomes.is_empty());
/// ```
#[derive(Debug, Default)]
pub struct Written {
    /// One outcome per planned item (a truncate counts as applied unless replayed).
    pub outcomes: Vec<ItemOutcome>,
    /// Time spent in store requests, retries included.
    pub latency: Duration,
}

/// Applies batches of planned writes.
///
/// ```no_run
/// # async fn demo(mongo: cqrs_mongo::MongoClient) {
/// use std::{sync::Arc, time::Duration};
/// use cqrs_core::backoff::Backoff;
/// use sync_service::write::{MongoStore, Writer};
///
/// let store = MongoStore::new(mongo).with_truncate_collection("my_truncates");
/// let writer = Writer::new(Arc::new(store), Backoff::exponential(Duration::from_millis(100), Duration::from_secs(10)));
/// assert_eq!(writer.client_generation(), 0);
/// # }
/// ```
#[derive(Clone)]
pub struct Writer {
    store: Arc<dyn ReadStore>,
    floors: FloorCache,
    backoff: Backoff,
    /// Whether the last request reached the store (for readiness).
    healthy: Arc<AtomicBool>,
}

/// Where a planned item went.
enum Slot {
    /// Sent in the bulk request, at this index.
    Sent(usize),
    /// Older than its collection's truncate floor: stale, not sent.
    BelowFloor,
    /// A truncate, applied after the bulk request.
    Truncate,
}

impl Writer {
    /// A writer over `store`, retrying with `backoff`.
    ///
    /// ```no_run
    /// # fn demo(mongo: cqrs_mongo::MongoClient, retry: &sync_service::config::RetryConfig) {
    /// use sync_service::write::{MongoStore, Writer};
    /// let writer = Writer::new(std::sync::Arc::new(MongoStore::new(mongo)), retry.backoff());
    /// # }
    /// ```
    pub fn new(store: Arc<dyn ReadStore>, backoff: Backoff) -> Self {
        Writer {
            store,
            floors: FloorCache::default(),
            backoff,
            healthy: Arc::new(AtomicBool::new(true)),
        }
    }

    /// The store.
    ///
    /// ```no_run
    /// # async fn demo(writer: sync_service::write::Writer) {
    /// writer.store().probe().await.ok();
    /// # }
    /// ```
    pub fn store(&self) -> &Arc<dyn ReadStore> {
        &self.store
    }

    /// The truncate floors known here.
    ///
    /// ```no_run
    /// # async fn demo(writer: sync_service::write::Writer) {
    /// println!("{:?}", writer.floors().floor("read.orders"));
    /// # }
    /// ```
    pub fn floors(&self) -> &FloorCache {
        &self.floors
    }

    /// Loads every stored truncate floor (at start, before the first batch).
    ///
    /// ```no_run
    /// # async fn demo(writer: sync_service::write::Writer) {
    /// let known = writer.load_floors().await.unwrap_or(0);
    /// # }
    /// ```
    pub async fn load_floors(&self) -> Result<usize, StoreError> {
        let found = self.store.floors(None).await?;
        let n = found.len();
        self.floors.learn(found);
        Ok(n)
    }

    /// How many times the MongoDB client was rebuilt (new credentials from Vault) so far;
    /// 0 for the client of the start.
    ///
    /// ```no_run
    /// # async fn demo(writer: sync_service::write::Writer) {
    /// assert_eq!(writer.client_generation(), 0);
    /// # }
    /// ```
    pub fn client_generation(&self) -> u64 {
        self.store.generation()
    }

    /// True unless the last store request failed as a whole.
    ///
    /// ```no_run
    /// # async fn demo(writer: sync_service::write::Writer) {
    /// writer.observe(false);
    /// assert!(!writer.is_healthy());
    /// # }
    /// ```
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// Records the outcome of a request made elsewhere (a periodic probe), so readiness
    /// reflects the store even when no batch is flowing.
    ///
    /// ```no_run
    /// # async fn demo(writer: sync_service::write::Writer) {
    /// writer.observe(true);
    /// assert!(writer.is_healthy());
    /// # }
    /// ```
    pub fn observe(&self, reachable: bool) {
        self.healthy.store(reachable, Ordering::Relaxed);
    }

    /// Writes everything planned plus the checkpoints, retrying whole-request failures
    /// with backoff until the store answers or shutdown. Writes older than their
    /// collection's truncate floor are stale without being sent; truncates apply after
    /// the other writes (the version guard keeps rows newer than the truncate, whatever
    /// the order inside the batch); a floor recorded meanwhile elsewhere is enforced after
    /// the writes (see [`truncate`](crate::truncate)). Several writes of one document are
    /// coalesced into the one that decides its final state where that changes no outcome
    /// (see `write/coalesce.rs`).
    ///
    /// ```no_run
    /// # async fn demo(writer: sync_service::write::Writer) {
    /// let stop = tokio_util::sync::CancellationToken::new();
    /// let written = writer.write(&[], vec![], &stop).await.expect("not shut down");
    /// assert!(written.outcomes.is_empty());
    /// # }
    /// ```
    pub async fn write(
        &self,
        planned: &[Planned],
        checkpoints: Vec<CheckpointUpdate>,
        shutdown: &CancellationToken,
    ) -> Result<Written, Interrupted> {
        let started = Instant::now();
        let adopted = self.fill_versions(planned, shutdown).await?;
        let mut writes: Vec<GuardedWrite> = Vec::new();
        let mut slots: Vec<Slot> = Vec::with_capacity(planned.len());
        // The floor each written collection was filtered with, and its target.
        let mut used: BTreeMap<String, Option<SourceVersion>> = BTreeMap::new();
        let mut targets: BTreeMap<String, Target> = BTreeMap::new();
        // Truncates met so far in this batch: they apply after its writes, so a snapshot
        // row that follows one must already fill at its version (or the sweep takes it).
        let mut truncated: BTreeMap<String, SourceVersion> = BTreeMap::new();
        for (i, p) in planned.iter().enumerate() {
            match p {
                Planned::Write { write, .. } => {
                    // A child write answers to the floor of its children, not its parent's.
                    let scope = crate::map::floor_scope(&write.write);
                    let target = &scope;
                    let ns = self.store.namespace(target);
                    let floor = *used
                        .entry(ns.clone())
                        .or_insert_with(|| self.floors.floor(&ns));
                    let fill_floor = floor.max(truncated.get(&ns).copied());
                    targets.entry(ns).or_insert_with(|| target.clone());
                    if write.fill {
                        // A snapshot row takes the position of its document's last change
                        // before it; it is newer than a truncate that set the floor (it was
                        // read after it), so it fills at the floor's version at least.
                        let version = adopted
                            .get(&i)
                            .copied()
                            .max(fill_floor)
                            .unwrap_or(write.write.version());
                        slots.push(Slot::Sent(writes.len()));
                        let mut lifted = write.clone();
                        lifted.write = lifted.write.with_version(version);
                        writes.push(lifted);
                    } else if floor.is_some_and(|f| write.write.version() < f) {
                        slots.push(Slot::BelowFloor);
                    } else {
                        slots.push(Slot::Sent(writes.len()));
                        writes.push(write.clone());
                    }
                }
                Planned::Truncate {
                    target, version, ..
                } => {
                    let seen = truncated.entry(self.store.namespace(target)).or_default();
                    *seen = (*seen).max(*version);
                    slots.push(Slot::Truncate);
                }
            }
        }
        let sent = self.send(&writes, checkpoints, shutdown).await?;
        let mut outcomes = Vec::with_capacity(planned.len());
        for (p, slot) in planned.iter().zip(slots) {
            let outcome = match (p, slot) {
                (_, Slot::Sent(i)) => sent.get(i).cloned().unwrap_or(ItemOutcome::Applied),
                (_, Slot::BelowFloor) => ItemOutcome::Stale,
                (
                    Planned::Truncate {
                        target, version, ..
                    },
                    Slot::Truncate,
                ) => {
                    if self.truncate(target, *version, shutdown).await? {
                        ItemOutcome::Applied
                    } else {
                        ItemOutcome::Stale
                    }
                }
                (Planned::Write { .. }, Slot::Truncate) => ItemOutcome::Applied,
            };
            outcomes.push(outcome);
        }
        if sent.contains(&ItemOutcome::Applied) {
            let namespaces: Vec<String> = used.keys().cloned().collect();
            let found = self
                .retrying(shutdown, "cannot read the truncate floors", || {
                    self.store.floors(Some(&namespaces))
                })
                .await?;
            for (ns, floor) in self.floors.newer(&used, found) {
                if let Some(target) = targets.get(&ns) {
                    self.retrying(shutdown, "cannot sweep behind a truncate", || {
                        self.store.sweep(target, floor)
                    })
                    .await?;
                }
            }
        }
        Ok(Written {
            outcomes,
            latency: started.elapsed(),
        })
    }

    /// Sends `writes` coalesced (see [`coalesce`]) with the checkpoints; returns one
    /// outcome per write. The documents whose superseding write failed are sent again,
    /// uncoalesced, so their failures and hold-backs are those of their own writes.
    async fn send(
        &self,
        writes: &[GuardedWrite],
        checkpoints: Vec<CheckpointUpdate>,
        shutdown: &CancellationToken,
    ) -> Result<Vec<ItemOutcome>, Interrupted> {
        let doc = |w: &GuardedWrite| {
            format!(
                "{}\u{0}{:?}",
                self.store.namespace(w.write.target()),
                w.write.id()
            )
        };
        let plan = coalesce::coalesce(writes, doc);
        let sent = self
            .retrying(shutdown, "MongoDB write failed", || {
                self.store.bulk(plan.sent.clone(), checkpoints.clone())
            })
            .await?;
        let outcome = |i: usize| sent.get(i).cloned().unwrap_or(ItemOutcome::Applied);
        let mut outcomes: Vec<ItemOutcome> = plan
            .kept
            .iter()
            .map(|kept| match *kept {
                Kept::Sent(i) | Kept::By(i) => outcome(i),
            })
            .collect();
        // Documents whose superseding write failed: all their writes again, in order.
        let again: HashSet<String> = writes
            .iter()
            .zip(&plan.kept)
            .filter(|(_, kept)| matches!(kept, Kept::By(i) if outcome(*i).is_failed()))
            .map(|(w, _)| doc(w))
            .collect();
        if again.is_empty() {
            return Ok(outcomes);
        }
        let indices: Vec<usize> = (0..writes.len())
            .filter(|&i| again.contains(&doc(&writes[i])))
            .collect();
        let retried: Vec<GuardedWrite> = indices.iter().map(|&i| writes[i].clone()).collect();
        let resent = self
            .retrying(shutdown, "MongoDB write failed", || {
                self.store.bulk(retried.clone(), Vec::new())
            })
            .await?;
        for (i, o) in indices.into_iter().zip(resent) {
            outcomes[i] = o;
        }
        Ok(outcomes)
    }

    /// The versions the fills of `planned` adopt, by index: the last earlier write of the
    /// same document in the batch, else the live document's (all its earlier changes are
    /// applied there). Fills of documents with neither keep their own (lowest) version.
    async fn fill_versions(
        &self,
        planned: &[Planned],
        shutdown: &CancellationToken,
    ) -> Result<BTreeMap<usize, SourceVersion>, Interrupted> {
        let mut adopted = BTreeMap::new();
        let mut last: BTreeMap<(String, String), SourceVersion> = BTreeMap::new();
        let mut lookups: BTreeMap<String, (Target, Vec<(usize, Bson)>)> = BTreeMap::new();
        for (i, p) in planned.iter().enumerate() {
            let Planned::Write { write, .. } = p else {
                continue;
            };
            // A child's version is its own: a child fill adopts the child's, never its
            // parent's (see `map::children`).
            let target = crate::map::floor_scope(&write.write);
            let ns = self.store.namespace(&target);
            let id = crate::map::versioned_id(&write.write);
            let key = (ns.clone(), id.to_string());
            if !write.fill {
                last.insert(key, write.write.version());
            } else if let Some(version) = last.get(&key) {
                adopted.insert(i, *version);
            } else {
                lookups
                    .entry(ns)
                    .or_insert_with(|| (target.clone(), Vec::new()))
                    .1
                    .push((i, id));
            }
        }
        for (target, wanted) in lookups.into_values() {
            let ids: Vec<Bson> = wanted.iter().map(|(_, id)| id.clone()).collect();
            let found = self
                .retrying(
                    shutdown,
                    "cannot read the live versions of snapshot rows",
                    || self.store.live_versions(&target, &ids),
                )
                .await?;
            let found: BTreeMap<String, SourceVersion> = found
                .into_iter()
                .map(|(id, v)| (id.to_string(), v))
                .collect();
            for (i, id) in wanted {
                if let Some(v) = found.get(&id.to_string()) {
                    adopted.insert(i, *v);
                }
            }
        }
        Ok(adopted)
    }

    /// Records a truncate of `target` at `version`, then deletes every document older
    /// than the floor. True when the floor moved or a document was deleted (false: a
    /// replayed truncate).
    async fn truncate(
        &self,
        target: &Target,
        version: SourceVersion,
        shutdown: &CancellationToken,
    ) -> Result<bool, Interrupted> {
        let ns = self.store.namespace(target);
        let moved = self
            .retrying(shutdown, "cannot record a truncate", || {
                self.store.record_floor(&ns, version)
            })
            .await?;
        let floor = self.floors.floor(&ns).unwrap_or_default().max(version);
        self.floors.learn([(ns, floor)]);
        let deleted = self
            .retrying(shutdown, "cannot sweep behind a truncate", || {
                self.store.sweep(target, floor)
            })
            .await?;
        Ok(moved || deleted > 0)
    }

    /// [`retry`], recording whether the store answered (readiness).
    async fn retrying<T, F, Fut>(
        &self,
        shutdown: &CancellationToken,
        what: &str,
        mut call: F,
    ) -> Result<T, Interrupted>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, StoreError>>,
    {
        let healthy = &self.healthy;
        let value = retry(&self.backoff, shutdown, what, || {
            let attempt = call();
            async move {
                let result = attempt.await;
                healthy.store(result.is_ok(), Ordering::Relaxed);
                result
            }
        })
        .await?;
        Ok(value)
    }
}
