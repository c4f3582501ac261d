//! Write stage: planned writes into MongoDB through cqrs-mongo's guarded bulk writer,
//! with checkpoints in the same request and retries with backoff while MongoDB is away.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use cqrs_core::{SourceVersion, Target};
use cqrs_mongo::{BulkWriter, CheckpointUpdate, GuardedWrite, ItemOutcome, MongoClient};
use tokio_util::sync::CancellationToken;

use crate::config::RetryConfig;
use crate::map::Planned;
use crate::truncate::TruncateFloors;

/// The write stage was stopped by shutdown before MongoDB acknowledged the batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("shut down before the batch was acknowledged")]
pub struct Interrupted;

/// Exponential backoff that gives up only on shutdown.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
}

impl Backoff {
    /// From the `[retry]` config.
    pub fn new(config: &RetryConfig) -> Self {
        Backoff {
            initial: Duration::from_millis(config.initial_backoff_ms),
            max: Duration::from_millis(config.max_backoff_ms),
        }
    }

    /// Sleeps before attempt `attempt + 1`; `Err` when shutdown came first.
    pub async fn wait(
        &self,
        attempt: u32,
        shutdown: &CancellationToken,
    ) -> Result<(), Interrupted> {
        let delay = self
            .initial
            .saturating_mul(1u32 << attempt.min(16))
            .min(self.max);
        tokio::select! {
            _ = tokio::time::sleep(delay) => Ok(()),
            _ = shutdown.cancelled() => Err(Interrupted),
        }
    }
}

/// What MongoDB said about the planned writes of a batch, in plan order.
#[derive(Debug, Default)]
pub struct Written {
    /// One outcome per planned item (a truncate counts as applied).
    pub outcomes: Vec<ItemOutcome>,
    /// Time spent in MongoDB requests, retries included.
    pub latency: Duration,
}

/// Applies batches of planned writes.
#[derive(Clone)]
pub struct Writer {
    mongo: MongoClient,
    bulk: BulkWriter,
    backoff: Backoff,
    floors: TruncateFloors,
    /// Whether the last request reached MongoDB (for readiness).
    healthy: std::sync::Arc<std::sync::atomic::AtomicBool>,
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
    /// A writer over `mongo`, truncate floors in `_sync_truncates` of its default database.
    pub fn new(mongo: MongoClient, backoff: Backoff) -> Self {
        Writer {
            bulk: mongo.bulk_writer(),
            floors: TruncateFloors::new(mongo.clone(), "_sync_truncates"),
            mongo,
            backoff,
            healthy: std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true)),
        }
    }

    /// Keeps the truncate floors in `collection` of the default database.
    ///
    /// ```no_run
    /// # async fn demo(mongo: cqrs_mongo::MongoClient, retry: &sync_service::config::RetryConfig) {
    /// use sync_service::write::{Backoff, Writer};
    /// let writer = Writer::new(mongo, Backoff::new(retry)).with_truncate_collection("my_truncates");
    /// # }
    /// ```
    pub fn with_truncate_collection(mut self, collection: &str) -> Self {
        self.floors = TruncateFloors::new(self.mongo.clone(), collection);
        self
    }

    /// The truncate floors (load them with [`TruncateFloors::load`] before the first batch).
    pub fn floors(&self) -> &TruncateFloors {
        &self.floors
    }

    /// How many times the MongoDB client was rebuilt (new credentials from Vault) so far;
    /// 0 for the client of the start.
    ///
    /// ```no_run
    /// # async fn demo(mongo: cqrs_mongo::MongoClient, retry: &sync_service::config::RetryConfig) {
    /// use sync_service::write::{Backoff, Writer};
    ///
    /// let writer = Writer::new(mongo, Backoff::new(retry));
    /// assert_eq!(writer.client_generation(), 0);
    /// # }
    /// ```
    pub fn client_generation(&self) -> u64 {
        self.mongo.generation()
    }

    /// True unless the last MongoDB request failed as a whole.
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Records the outcome of a request made elsewhere (a periodic probe), so readiness
    /// reflects MongoDB even when no batch is flowing.
    pub fn observe(&self, reachable: bool) {
        self.healthy
            .store(reachable, std::sync::atomic::Ordering::Relaxed);
    }

    /// Writes everything planned plus the checkpoints, retrying whole-request failures
    /// with backoff until MongoDB answers or shutdown. Writes older than their collection's
    /// truncate floor are stale without being sent; truncates apply after the other writes
    /// (the version guard keeps rows newer than the truncate, whatever the order inside the
    /// batch); a floor recorded meanwhile elsewhere is enforced after the writes (see
    /// [`truncate`](crate::truncate)).
    pub async fn write(
        &self,
        planned: &[Planned],
        checkpoints: Vec<CheckpointUpdate>,
        shutdown: &CancellationToken,
    ) -> Result<Written, Interrupted> {
        let started = Instant::now();
        let mut writes: Vec<GuardedWrite> = Vec::new();
        let mut slots: Vec<Slot> = Vec::with_capacity(planned.len());
        // The floor each written collection was filtered with, and its target.
        let mut used: BTreeMap<String, Option<SourceVersion>> = BTreeMap::new();
        let mut targets: BTreeMap<String, Target> = BTreeMap::new();
        for p in planned {
            match p {
                Planned::Write { write, .. } => {
                    let target = write.write.target();
                    let ns = self.floors.namespace(target);
                    let floor = *used
                        .entry(ns.clone())
                        .or_insert_with(|| self.floors.floor(&ns));
                    targets.entry(ns).or_insert_with(|| target.clone());
                    if floor.is_some_and(|f| write.write.version() < f) {
                        slots.push(Slot::BelowFloor);
                    } else {
                        slots.push(Slot::Sent(writes.len()));
                        writes.push(write.clone());
                    }
                }
                Planned::Truncate { .. } => slots.push(Slot::Truncate),
            }
        }
        let result = self
            .retrying(shutdown, || {
                self.bulk.write(writes.clone(), checkpoints.clone())
            })
            .await?;
        let mut outcomes = Vec::with_capacity(planned.len());
        for (p, slot) in planned.iter().zip(slots) {
            let outcome = match (p, slot) {
                (_, Slot::Sent(i)) => result.items.get(i).cloned().unwrap_or(ItemOutcome::Applied),
                (_, Slot::BelowFloor) => ItemOutcome::Stale,
                (
                    Planned::Truncate {
                        target, version, ..
                    },
                    Slot::Truncate,
                ) => {
                    let moved = self
                        .retrying(shutdown, || self.floors.truncate(target, *version))
                        .await?;
                    if moved {
                        ItemOutcome::Applied
                    } else {
                        ItemOutcome::Stale
                    }
                }
                (Planned::Write { .. }, Slot::Truncate) => ItemOutcome::Applied,
            };
            outcomes.push(outcome);
        }
        if result.applied() > 0 {
            let newer = self
                .retrying(shutdown, || self.floors.newer_than(&used))
                .await?;
            for (ns, floor) in newer {
                if let Some(target) = targets.get(&ns) {
                    self.retrying(shutdown, || self.floors.sweep(target, floor))
                        .await?;
                }
            }
        }
        Ok(Written {
            outcomes,
            latency: started.elapsed(),
        })
    }

    async fn retrying<T, E, F, Fut>(
        &self,
        shutdown: &CancellationToken,
        mut call: F,
    ) -> Result<T, Interrupted>
    where
        E: std::fmt::Display,
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, E>>,
    {
        let mut attempt = 0;
        loop {
            match call().await {
                Ok(value) => {
                    self.healthy
                        .store(true, std::sync::atomic::Ordering::Relaxed);
                    return Ok(value);
                }
                Err(e) => {
                    self.healthy
                        .store(false, std::sync::atomic::Ordering::Relaxed);
                    tracing::warn!(error = %e, attempt, "MongoDB write failed; retrying");
                    self.backoff.wait(attempt, shutdown).await?;
                    attempt += 1;
                }
            }
        }
    }
}
