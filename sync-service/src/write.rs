//! Write stage: planned writes into MongoDB through cqrs-mongo's guarded bulk writer,
//! with checkpoints in the same request and retries with backoff while MongoDB is away.

use std::time::{Duration, Instant};

use bson::{Bson, Document, doc};
use cqrs_core::ReadModelWrite;
use cqrs_mongo::{BulkWriter, CheckpointUpdate, ItemOutcome, MongoClient};
use futures::TryStreamExt;
use tokio_util::sync::CancellationToken;

use crate::config::RetryConfig;
use crate::map::{MongoWrite, Planned};

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
    /// Whether the last request reached MongoDB (for readiness).
    healthy: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Writer {
    /// A writer over `mongo`.
    pub fn new(mongo: MongoClient, backoff: Backoff) -> Self {
        Writer {
            bulk: mongo.bulk_writer(),
            mongo,
            backoff,
            healthy: std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true)),
        }
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
    /// with backoff until MongoDB answers or shutdown.
    pub async fn write(
        &self,
        planned: &[Planned],
        checkpoints: Vec<CheckpointUpdate>,
        shutdown: &CancellationToken,
    ) -> Result<Written, Interrupted> {
        let started = Instant::now();
        let mut writes: Vec<MongoWrite> = Vec::new();
        let mut slots: Vec<Option<usize>> = Vec::with_capacity(planned.len());
        for p in planned {
            match p {
                Planned::Write { write, .. } => {
                    slots.push(Some(writes.len()));
                    writes.push(write.clone());
                }
                Planned::Truncate { .. } => slots.push(None),
            }
        }
        let result = self
            .retrying(shutdown, || {
                self.bulk.write(writes.clone(), checkpoints.clone())
            })
            .await?;
        // Truncates after the documents: the version guard keeps rows newer than the
        // truncate, whatever the order inside the batch.
        let mut outcomes = Vec::with_capacity(planned.len());
        for (p, slot) in planned.iter().zip(slots) {
            let outcome = match (p, slot) {
                (_, Some(i)) => result.items.get(i).cloned().unwrap_or(ItemOutcome::Applied),
                (
                    Planned::Truncate {
                        target, version, ..
                    },
                    None,
                ) => {
                    let (target, version) = (target.clone(), *version);
                    self.retrying(shutdown, || self.truncate(target.clone(), version))
                        .await?
                }
                (Planned::Write { .. }, None) => ItemOutcome::Applied,
            };
            outcomes.push(outcome);
        }
        Ok(Written {
            outcomes,
            latency: started.elapsed(),
        })
    }

    /// Tombstones every live document of the target older than `version`, through the
    /// same guarded deletes as single rows.
    async fn truncate(
        &self,
        target: cqrs_core::Target,
        version: cqrs_core::SourceVersion,
    ) -> Result<ItemOutcome, String> {
        let collection = self
            .mongo
            .database(target.database.as_deref())
            .collection::<Document>(&target.collection);
        let ids: Vec<Bson> = collection
            .find(doc! { "_deleted": { "$ne": true } })
            .projection(doc! { "_id": 1 })
            .await
            .map_err(|e| format!("truncate of {}: {e}", target.collection))?
            .try_collect::<Vec<Document>>()
            .await
            .map_err(|e| format!("truncate of {}: {e}", target.collection))?
            .into_iter()
            .filter_map(|mut d| d.remove("_id"))
            .collect();
        let deletes = ids
            .into_iter()
            .map(|id| ReadModelWrite::Delete {
                target: target.clone(),
                id,
                version,
            })
            .collect();
        let result = self
            .bulk
            .write(deletes, Vec::new())
            .await
            .map_err(|e| e.to_string())?;
        // Failed if a delete failed, applied if one tombstoned a document, else stale
        // (everything was already gone or newer: a replayed truncate).
        let failed = result.items.iter().find(|o| o.is_failed()).cloned();
        Ok(failed.unwrap_or(if result.applied() > 0 {
            ItemOutcome::Applied
        } else {
            ItemOutcome::Stale
        }))
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
