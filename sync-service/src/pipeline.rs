//! One batch through the stages: decode, envelope, map, write, dead-letter. A batch is
//! settled when every record in it is applied, found stale, skipped or dead-lettered; the
//! consumer loop then stores its offsets.
//!
//! The decisions that keep a key in order live here: a record whose key is parked behind
//! a dead letter is held back (dead-lettered behind it), a record failing at any stage
//! parks its key for the rest of the batch, a key an operator released is asked again
//! before the batch (it flows at once), and records held back behind a dead letter that
//! was resolved while the batch ran are processed again in the same call. They are
//! unit-tested with in-memory sinks (`pipeline/tests.rs`).

mod plan;
mod trace;

use std::collections::HashMap;

use cqrs_core::backoff::Backoff;
use cqrs_kafka::Record;
use cqrs_mongo::ItemOutcome;
use opentelemetry::trace::{SpanContext, TraceContextExt};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::dead_letter::{DeadLetters, Failure, KeyRef, Stage, Status};
use crate::decode::Decoder;
use crate::envelope::EnvelopeParser;
use crate::map::{Planned, Projections};
use crate::metrics::{KindLabel, Metrics, StageLabel, TopicLabel};
use crate::progress::ProjectionProgress;
use crate::write::{Interrupted, Writer, retry};

/// What happened to one message.
#[derive(Debug)]
enum Fate {
    /// Nothing to project (heartbeat, tombstone, unmapped table...).
    Skipped(&'static str),
    /// Its writes are `planned[range]`; the change was committed at `committed_ms`.
    Planned(std::ops::Range<usize>, Option<i64>),
    /// Dead-lettered.
    Failed(Failure),
}

/// Summary of a processed batch.
///
/// ```
/// let report = sync_service::pipeline::BatchReport::default();
/// assert_eq!(report.applied + report.stale + report.skipped + report.dead_lettered, 0);
/// ```
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BatchReport {
    /// Writes applied.
    pub applied: usize,
    /// Writes found stale.
    pub stale: usize,
    /// Messages skipped.
    pub skipped: usize,
    /// Messages dead-lettered (failed or held back).
    pub dead_lettered: usize,
}

/// The stages, shared by every partition worker.
///
/// ```no_run
/// # async fn demo(config: sync_service::config::SyncConfig) -> Result<(), sync_service::ServiceError> {
/// let pipeline = sync_service::runtime::build_pipeline(&config, Default::default()).await?;
/// let stop = tokio_util::sync::CancellationToken::new();
/// let report = pipeline.process(&[cqrs_kafka::Record::new("cqrs.shop.orders", 0, 0)], &stop).await;
/// # Ok(()) }
/// ```
pub struct Pipeline {
    /// Decode stage.
    pub decoder: Decoder,
    /// Envelope stage.
    pub parser: EnvelopeParser,
    /// Map stage.
    pub projections: Projections,
    /// Write stage.
    pub writer: Writer,
    /// Dead-letter path.
    pub dead_letters: DeadLetters,
    /// Metrics.
    pub metrics: Metrics,
    /// Checkpoints per projection.
    pub progress: std::sync::Arc<ProjectionProgress>,
    /// Backoff of transient failures.
    pub backoff: Backoff,
    /// Incremental snapshot rows seen, for the running rebuilds' progress.
    pub snapshot_rows: std::sync::Arc<crate::rebuild::SnapshotRows>,
    /// What must live as long as the pipeline (the Vault client renewing its token and
    /// following the MongoDB secret).
    pub(crate) _keep_alive: Vec<Box<dyn std::any::Any + Send + Sync>>,
}

impl Pipeline {
    /// Processes a batch in order. Returns when every message is applied, found stale,
    /// skipped or dead-lettered; `Err` only on shutdown while a dependency was away, in
    /// which case nothing of the batch may be committed.
    pub async fn process(
        &self,
        batch: &[Record],
        shutdown: &CancellationToken,
    ) -> Result<BatchReport, Interrupted> {
        let span = tracing::info_span!(
            "sync.batch",
            messages = batch.len(),
            trace_id = tracing::field::Empty
        );
        let trace_id = span.context().span().span_context().trace_id();
        if trace_id != opentelemetry::trace::TraceId::INVALID {
            span.record("trace_id", tracing::field::display(trace_id));
        }
        for record in batch {
            self.metrics
                .consumed
                .get_or_create(&TopicLabel {
                    topic: record.topic.clone(),
                })
                .inc();
        }
        self.process_in(batch, shutdown, &span)
            .instrument(span.clone())
            .await
    }

    async fn process_in(
        &self,
        batch: &[Record],
        shutdown: &CancellationToken,
        batch_span: &tracing::Span,
    ) -> Result<BatchReport, Interrupted> {
        let (mut report, mut orphans) = self.process_round(batch, shutdown, batch_span).await?;
        // Messages held back behind a dead letter an operator resolved while this batch
        // ran: nothing holds them any more, so they are processed now (in order).
        while !orphans.is_empty() {
            let (more, next) = self.process_round(&orphans, shutdown, batch_span).await?;
            report.applied += more.applied;
            report.stale += more.stale;
            report.skipped += more.skipped;
            report.dead_lettered =
                (report.dead_lettered + more.dead_lettered).saturating_sub(orphans.len());
            orphans = next;
        }
        Ok(report)
    }

    /// Keys of the batch parked by earlier batches: asked again, so that an operator's
    /// `dlq skip` / `dlq replay` releases them at once.
    async fn recheck_parked(
        &self,
        batch: &[Record],
        shutdown: &CancellationToken,
    ) -> Result<(), Interrupted> {
        let mut parked: Vec<KeyRef> = Vec::new();
        for record in batch {
            let key = KeyRef::of(record);
            if self.dead_letters.parked(&key).is_some() && !parked.contains(&key) {
                parked.push(key);
            }
        }
        if parked.is_empty() {
            return Ok(());
        }
        retry(
            &self.backoff,
            shutdown,
            "cannot recheck parked keys",
            || self.dead_letters.recheck(&parked),
        )
        .await?;
        Ok(())
    }

    /// One pass over `batch`; returns its report and the messages held back behind a dead
    /// letter that was resolved meanwhile (to process again).
    async fn process_round(
        &self,
        batch: &[Record],
        shutdown: &CancellationToken,
        batch_span: &tracing::Span,
    ) -> Result<(BatchReport, Vec<Record>), Interrupted> {
        let mut fates = Vec::with_capacity(batch.len());
        let mut upstream: Vec<Option<SpanContext>> = Vec::with_capacity(batch.len());
        let mut planned: Vec<Planned> = Vec::new();
        let mut failed_keys: HashMap<KeyRef, String> = HashMap::new();
        // Keys held back behind a dead letter of an earlier batch, with that dead letter.
        let mut held_by_earlier: HashMap<KeyRef, String> = HashMap::new();
        self.recheck_parked(batch, shutdown).await?;
        for record in batch {
            let key = KeyRef::of(record);
            let behind = match failed_keys.get(&key) {
                Some(id) => Some(id.clone()),
                None => self.dead_letters.parked(&key).inspect(|blocker| {
                    held_by_earlier.insert(key.clone(), blocker.clone());
                }),
            };
            let (fate, context) = if behind.is_some() {
                let held = Fate::Failed(Failure {
                    stage: Stage::HeldBack,
                    error: "held back behind an earlier dead letter of the same key".into(),
                    behind,
                });
                (held, trace::upstream_of(record, None))
            } else {
                self.plan(record, &mut planned, shutdown).await?
            };
            if let Some(context) = &context {
                batch_span.add_link(context.clone());
            }
            upstream.push(context);
            if matches!(fate, Fate::Failed(_)) {
                failed_keys.insert(key, record.id());
            }
            fates.push(fate);
        }

        let reads = batch.iter().zip(&fates).flat_map(|(record, fate)| {
            let range = match fate {
                Fate::Planned(range, _) => range.clone(),
                _ => 0..0,
            };
            planned[range]
                .iter()
                .map(|p| (record.topic.as_str(), p.projection()))
        });
        let checkpoints = self.progress.checkpoints(batch, reads);
        let written = self
            .writer
            .write(&planned, checkpoints.clone(), shutdown)
            .instrument(tracing::info_span!("sync.write", writes = planned.len()))
            .await?;
        self.progress.saved(&checkpoints);
        trace::projections(&planned, &written.outcomes);
        self.metrics
            .write_latency
            .observe(written.latency.as_secs_f64());
        self.metrics.batch_size.observe(batch.len() as f64);
        self.metrics
            .mongodb_client_generation
            .set(i64::try_from(self.writer.client_generation()).unwrap_or(i64::MAX));

        let mut report = BatchReport::default();
        // Keys whose write failed in this batch: the store held their later writes back.
        let mut write_failed: HashMap<KeyRef, String> = HashMap::new();
        for ((record, fate), context) in batch.iter().zip(fates.iter_mut()).zip(&upstream) {
            let applied_any = self.settle_writes(
                record,
                fate,
                &planned,
                &written.outcomes,
                &mut write_failed,
                &mut report,
            );
            match fate {
                Fate::Skipped(kind) => {
                    report.skipped += 1;
                    self.metrics
                        .skipped
                        .get_or_create(&KindLabel {
                            kind: (*kind).to_owned(),
                        })
                        .inc();
                }
                Fate::Failed(failure) => {
                    self.dead_letter(record, failure, shutdown).await?;
                    report.dead_lettered += 1;
                }
                // Stale writes (redelivery, replay) made nothing visible: no latency.
                Fate::Planned(_, Some(committed_ms)) if applied_any => {
                    let now_ms = chrono::Utc::now().timestamp_millis();
                    let seconds = (now_ms - *committed_ms).max(0) as f64 / 1000.0;
                    self.metrics.end_to_end_latency.observe(seconds);
                }
                Fate::Planned(..) => {}
            }
            if let Some(context) = context {
                trace::apply(record, fate, context);
            }
        }
        let orphans = self.orphans(batch, &held_by_earlier, shutdown).await?;
        Ok((report, orphans))
    }

    /// Counts the outcomes of a planned record's writes; a failed write turns the record
    /// into a dead letter (held back behind the first failure of its key in this batch).
    /// Returns whether any of its writes applied.
    fn settle_writes(
        &self,
        record: &Record,
        fate: &mut Fate,
        planned: &[Planned],
        outcomes: &[ItemOutcome],
        write_failed: &mut HashMap<KeyRef, String>,
        report: &mut BatchReport,
    ) -> bool {
        let Fate::Planned(range, _) = fate else {
            return false;
        };
        let range = range.clone();
        let mut applied_any = false;
        for (p, outcome) in planned[range.clone()].iter().zip(&outcomes[range]) {
            let projection = trace::projection_label(p);
            match outcome {
                ItemOutcome::Applied => {
                    applied_any = true;
                    report.applied += 1;
                    self.metrics.applied.get_or_create(&projection).inc();
                }
                ItemOutcome::Stale => {
                    report.stale += 1;
                    self.metrics.stale.get_or_create(&projection).inc();
                }
                ItemOutcome::Failed(e) => {
                    let key = KeyRef::of(record);
                    let behind = write_failed.get(&key).cloned();
                    let stage = if behind.is_some() {
                        Stage::HeldBack
                    } else {
                        Stage::Write
                    };
                    *fate = Fate::Failed(Failure {
                        stage,
                        error: e.to_string(),
                        behind,
                    });
                    write_failed.entry(key).or_insert_with(|| record.id());
                    break;
                }
            }
        }
        applied_any
    }

    /// Of the keys held back behind dead letters of earlier batches, those whose dead
    /// letter an operator resolved while the batch ran (after the recheck): their held-back
    /// messages of this batch are marked replayed and returned to be processed again, so
    /// that no record of a released key stays pending behind nothing.
    async fn orphans(
        &self,
        batch: &[Record],
        held_by_earlier: &HashMap<KeyRef, String>,
        shutdown: &CancellationToken,
    ) -> Result<Vec<Record>, Interrupted> {
        if held_by_earlier.is_empty() {
            return Ok(Vec::new());
        }
        let blockers: Vec<String> = held_by_earlier.values().cloned().collect();
        let pending = retry(&self.backoff, shutdown, "cannot check dead letters", || {
            self.dead_letters.still_pending(&blockers)
        })
        .await?;
        let released: Vec<&KeyRef> = held_by_earlier
            .iter()
            .filter(|(_, blocker)| !pending.contains(*blocker))
            .map(|(key, _)| key)
            .collect();
        if released.is_empty() {
            return Ok(Vec::new());
        }
        let orphans: Vec<Record> = batch
            .iter()
            .filter(|r| released.contains(&&KeyRef::of(r)))
            .cloned()
            .collect();
        let ids: Vec<String> = orphans.iter().map(Record::id).collect();
        retry(
            &self.backoff,
            shutdown,
            "cannot resolve dead letters",
            || self.dead_letters.resolve(&ids, Status::Replayed),
        )
        .await?;
        for key in released {
            self.dead_letters.release(key);
        }
        tracing::info!(
            messages = orphans.len(),
            "held-back messages released by a resolved dead letter; processing them"
        );
        Ok(orphans)
    }

    async fn dead_letter(
        &self,
        record: &Record,
        failure: &Failure,
        shutdown: &CancellationToken,
    ) -> Result<(), Interrupted> {
        tracing::warn!(
            topic = %record.topic,
            partition = record.partition,
            offset = record.offset,
            stage = failure.stage.as_str(),
            error = %failure.error,
            "dead-lettering message"
        );
        retry(
            &self.backoff,
            shutdown,
            "dead-letter path unavailable",
            || self.dead_letters.send(record, failure),
        )
        .await?;
        self.metrics
            .dead_lettered
            .get_or_create(&StageLabel {
                stage: failure.stage.as_str().to_owned(),
            })
            .inc();
        Ok(())
    }
}

#[cfg(test)]
mod tests;
