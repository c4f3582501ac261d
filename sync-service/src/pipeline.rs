//! One batch through the stages: decode, envelope, map, write, dead-letter; the offsets
//! to store come out at the end, only for messages whose fate is settled.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::sync::Arc;

use cqrs_mongo::{CheckpointUpdate, ItemOutcome};
use opentelemetry::trace::{SpanContext, TraceContextExt};
use rdkafka::message::{Headers, Message, OwnedMessage};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::dead_letter::{DeadLetter, DeadLetters, Failure, KeyRef, Stage, Status};
use cqrs_core::outbox::IntegrationEvent;

use crate::decode::{DecodeError, DecodedRecord, Decoder, RawRecord};
use crate::envelope::{EnvelopeParser, Event};
use crate::map::{Planned, Projections};
use crate::metrics::{KindLabel, Metrics, ProjectionLabel, StageLabel, TopicLabel};
use crate::write::{Backoff, Interrupted, Writer};

/// What happened to one message.
#[derive(Debug)]
enum Fate {
    /// Nothing to project (heartbeat, tombstone, unmapped table...).
    Skipped(&'static str),
    /// Its writes are `planned[range]`; the change was committed at `committed_ms`.
    Planned(Range<usize>, Option<i64>),
    /// Dead-lettered.
    Failed(Failure),
}

/// Where the offsets of a batch stand: the next offset per topic and partition.
pub type Offsets = BTreeMap<(String, i32), i64>;

/// Summary of a processed batch.
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
    /// Next offset per partition.
    pub offsets: Offsets,
}

/// The stages, shared by every partition worker.
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
    /// Backoff of transient failures.
    pub backoff: Backoff,
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
        batch: &[OwnedMessage],
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
        self.process_in(batch, shutdown, &span)
            .instrument(span.clone())
            .await
    }

    async fn process_in(
        &self,
        batch: &[OwnedMessage],
        shutdown: &CancellationToken,
        batch_span: &tracing::Span,
    ) -> Result<BatchReport, Interrupted> {
        let (mut report, mut orphans) = self
            .process_round(batch, true, shutdown, batch_span)
            .await?;
        // Messages held back behind a dead letter an operator resolved while this batch
        // ran: nothing holds them any more, so they are processed now (in order).
        while !orphans.is_empty() {
            let (more, next) = self
                .process_round(&orphans, false, shutdown, batch_span)
                .await?;
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
        batch: &[OwnedMessage],
        shutdown: &CancellationToken,
    ) -> Result<(), Interrupted> {
        let mut parked: Vec<KeyRef> = Vec::new();
        for message in batch {
            let key = KeyRef::of(message);
            if self.dead_letters.parked(&key).is_some() && !parked.contains(&key) {
                parked.push(key);
            }
        }
        let mut attempt = 0;
        while let Err(e) = self.dead_letters.recheck(&parked).await {
            tracing::warn!(error = %e, attempt, "cannot recheck parked keys; retrying");
            self.backoff.wait(attempt, shutdown).await?;
            attempt += 1;
        }
        Ok(())
    }

    /// One pass over `batch`; returns its report and the messages held back behind a dead
    /// letter that was resolved meanwhile (to process again).
    async fn process_round(
        &self,
        batch: &[OwnedMessage],
        first: bool,
        shutdown: &CancellationToken,
        batch_span: &tracing::Span,
    ) -> Result<(BatchReport, Vec<OwnedMessage>), Interrupted> {
        let mut fates = Vec::with_capacity(batch.len());
        let mut upstream: Vec<Option<SpanContext>> = Vec::with_capacity(batch.len());
        let mut planned: Vec<Planned> = Vec::new();
        let mut failed_keys: HashMap<KeyRef, String> = HashMap::new();
        // Keys held back behind a dead letter of an earlier batch, with that dead letter.
        let mut held_by_earlier: HashMap<KeyRef, String> = HashMap::new();
        self.recheck_parked(batch, shutdown).await?;
        for message in batch {
            if first {
                self.metrics
                    .consumed
                    .get_or_create(&TopicLabel {
                        topic: message.topic().to_owned(),
                    })
                    .inc();
            }
            let key = KeyRef::of(message);
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
                (held, upstream_of(message, None))
            } else {
                self.plan(message, &mut planned, shutdown).await?
            };
            if let Some(context) = &context {
                batch_span.add_link(context.clone());
            }
            upstream.push(context);
            if matches!(fate, Fate::Failed(_)) {
                failed_keys.insert(
                    key,
                    DeadLetter::id_of(message.topic(), message.partition(), message.offset()),
                );
            }
            fates.push(fate);
        }

        let checkpoints = checkpoints(batch, &fates, &planned);
        let written = self
            .writer
            .write(&planned, checkpoints, shutdown)
            .instrument(tracing::info_span!("sync.write", writes = planned.len()))
            .await?;
        trace_projections(&planned, &written.outcomes);
        self.metrics
            .write_latency
            .observe(written.latency.as_secs_f64());
        self.metrics.batch_size.observe(batch.len() as f64);
        self.metrics
            .mongodb_client_generation
            .set(i64::try_from(self.writer.client_generation()).unwrap_or(i64::MAX));

        let mut report = BatchReport::default();
        // Keys whose write failed in this batch: the writer held their later writes back.
        let mut write_failed: HashMap<KeyRef, String> = HashMap::new();
        for ((message, fate), context) in batch.iter().zip(fates.iter_mut()).zip(&upstream) {
            // Stale writes (redelivery, replay) made nothing visible: no latency to record.
            let mut applied_any = false;
            if let Fate::Planned(range, _) = fate {
                let range = range.clone();
                for (p, outcome) in planned[range.clone()].iter().zip(&written.outcomes[range]) {
                    let projection = projection_of(p);
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
                            let key = KeyRef::of(message);
                            let behind = write_failed.get(&key).cloned();
                            *fate = Fate::Failed(Failure {
                                stage: if behind.is_some() {
                                    Stage::HeldBack
                                } else {
                                    Stage::Write
                                },
                                error: e.to_string(),
                                behind,
                            });
                            write_failed.entry(key).or_insert_with(|| {
                                DeadLetter::id_of(
                                    message.topic(),
                                    message.partition(),
                                    message.offset(),
                                )
                            });
                            break;
                        }
                    }
                }
            }
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
                    self.dead_letter(message, failure, shutdown).await?;
                    report.dead_lettered += 1;
                }
                Fate::Planned(_, Some(committed_ms)) if applied_any => {
                    let now_ms = chrono::Utc::now().timestamp_millis();
                    let seconds = (now_ms - *committed_ms).max(0) as f64 / 1000.0;
                    self.metrics.end_to_end_latency.observe(seconds);
                }
                Fate::Planned(..) => {}
            }
            if let Some(context) = context {
                trace_apply(message, fate, context);
            }
            let next = report
                .offsets
                .entry((message.topic().to_owned(), message.partition()))
                .or_insert(0);
            *next = (*next).max(message.offset() + 1);
        }
        let orphans = self.orphans(batch, &held_by_earlier, shutdown).await?;
        Ok((report, orphans))
    }

    /// Of the keys held back behind dead letters of earlier batches, those whose dead
    /// letter an operator resolved while the batch ran (after the recheck): their held-back
    /// messages of this batch are marked replayed and returned to be processed again, so
    /// that no record of a released key stays pending behind nothing.
    async fn orphans(
        &self,
        batch: &[OwnedMessage],
        held_by_earlier: &HashMap<KeyRef, String>,
        shutdown: &CancellationToken,
    ) -> Result<Vec<OwnedMessage>, Interrupted> {
        if held_by_earlier.is_empty() {
            return Ok(Vec::new());
        }
        let blockers: Vec<String> = held_by_earlier.values().cloned().collect();
        let mut attempt = 0;
        let pending = loop {
            match self.dead_letters.still_pending(&blockers).await {
                Ok(pending) => break pending,
                Err(e) => {
                    tracing::warn!(error = %e, attempt, "cannot check dead letters; retrying");
                    self.backoff.wait(attempt, shutdown).await?;
                    attempt += 1;
                }
            }
        };
        let released: Vec<&KeyRef> = held_by_earlier
            .iter()
            .filter(|(_, blocker)| !pending.contains(*blocker))
            .map(|(key, _)| key)
            .collect();
        if released.is_empty() {
            return Ok(Vec::new());
        }
        let orphans: Vec<OwnedMessage> = batch
            .iter()
            .filter(|m| released.contains(&&KeyRef::of(m)))
            .cloned()
            .collect();
        let ids: Vec<String> = orphans
            .iter()
            .map(|m| DeadLetter::id_of(m.topic(), m.partition(), m.offset()))
            .collect();
        let mut attempt = 0;
        while let Err(e) = self.dead_letters.resolve(&ids, Status::Replayed).await {
            tracing::warn!(error = %e, attempt, "cannot resolve dead letters; retrying");
            self.backoff.wait(attempt, shutdown).await?;
            attempt += 1;
        }
        for key in released {
            self.dead_letters.release(key);
        }
        tracing::info!(
            messages = orphans.len(),
            "held-back messages released by a resolved dead letter; processing them"
        );
        Ok(orphans)
    }

    /// Decode, envelope and map one message.
    async fn plan(
        &self,
        message: &OwnedMessage,
        planned: &mut Vec<Planned>,
        shutdown: &CancellationToken,
    ) -> Result<(Fate, Option<SpanContext>), Interrupted> {
        let failed = |stage, error: String| {
            let fate = Fate::Failed(Failure {
                stage,
                error,
                behind: None,
            });
            (fate, upstream_of(message, None))
        };
        if self.projections.has_outbox_topic(message.topic()) {
            return Ok(self.plan_outbox(message, planned));
        }
        let decoded = match self.decode(message, shutdown).await? {
            Ok(decoded) => decoded,
            Err(e) => return Ok(failed(Stage::Decode, e.to_string())),
        };
        let change = match self.parser.parse(&decoded) {
            Ok(Event::Change(change)) => change,
            Ok(other) => return Ok((Fate::Skipped(other.kind()), upstream_of(message, None))),
            Err(e) => return Ok(failed(Stage::Envelope, e.to_string())),
        };
        let context = upstream_of(message, change.after.as_ref());
        let fate = match self.projections.plan(&change) {
            Ok(writes) if writes.is_empty() => Fate::Skipped("unmapped"),
            Ok(writes) => {
                let start = planned.len();
                planned.extend(writes);
                Fate::Planned(start..planned.len(), change.source.ts_ms)
            }
            Err(e) => return Ok(failed(Stage::Map, e.to_string())),
        };
        Ok((fate, context))
    }

    /// An outbox record a projection reads: decoded by `cqrs-core`'s outbox decoder (the
    /// router's records are plain text, no registry), then mapped.
    fn plan_outbox(
        &self,
        message: &OwnedMessage,
        planned: &mut Vec<Planned>,
    ) -> (Fate, Option<SpanContext>) {
        let failed = |stage, error: String| {
            let fate = Fate::Failed(Failure {
                stage,
                error,
                behind: None,
            });
            (fate, upstream_of(message, None))
        };
        let decoded = IntegrationEvent::from_record(
            message.topic(),
            message.partition(),
            message.offset(),
            message.key(),
            message.payload(),
            headers_of(message).map(|(k, v)| (k, Some(v))),
        );
        let event = match decoded {
            Ok(Some(event)) => event,
            Ok(None) => return (Fate::Skipped("tombstone"), upstream_of(message, None)),
            Err(e) => return failed(Stage::Envelope, e.to_string()),
        };
        let fate = match self.projections.plan_outbox(&event) {
            Ok(writes) if writes.is_empty() => Fate::Skipped("unmapped"),
            Ok(writes) => {
                let start = planned.len();
                planned.extend(writes);
                let occurred = event.occurred_at.map(|t| t.timestamp_millis());
                Fate::Planned(start..planned.len(), occurred)
            }
            Err(e) => return failed(Stage::Map, e.to_string()),
        };
        (fate, upstream_of(message, None))
    }

    /// Decodes, retrying while the registry is unreachable.
    async fn decode(
        &self,
        message: &OwnedMessage,
        shutdown: &CancellationToken,
    ) -> Result<Result<DecodedRecord, DecodeError>, Interrupted> {
        let mut raw = RawRecord::new(message.topic()).at(message.partition(), message.offset());
        if let Some(key) = message.key() {
            raw = raw.with_key(key);
        }
        if let Some(value) = message.payload() {
            raw = raw.with_value(value);
        }
        if let Some(headers) = message.headers() {
            for h in headers.iter() {
                raw = raw.with_header(h.key, h.value);
            }
        }
        let mut attempt = 0;
        loop {
            match self.decoder.decode(&raw).await {
                Err(e) if e.is_transient() => {
                    tracing::warn!(error = %e, attempt, "schema registry unavailable; retrying");
                    self.backoff.wait(attempt, shutdown).await?;
                    attempt += 1;
                }
                result => return Ok(result),
            }
        }
    }

    async fn dead_letter(
        &self,
        message: &OwnedMessage,
        failure: &Failure,
        shutdown: &CancellationToken,
    ) -> Result<(), Interrupted> {
        tracing::warn!(
            topic = message.topic(),
            partition = message.partition(),
            offset = message.offset(),
            stage = failure.stage.as_str(),
            error = %failure.error,
            "dead-lettering message"
        );
        let mut attempt = 0;
        while let Err(e) = self.dead_letters.send(message, failure).await {
            tracing::warn!(error = %e, attempt, "dead-letter path unavailable; retrying");
            self.backoff.wait(attempt, shutdown).await?;
            attempt += 1;
        }
        self.metrics
            .dead_lettered
            .get_or_create(&StageLabel {
                stage: failure.stage.as_str().to_owned(),
            })
            .inc();
        Ok(())
    }
}

fn headers_of(message: &OwnedMessage) -> impl Iterator<Item = (&str, &[u8])> {
    message
        .headers()
        .into_iter()
        .flat_map(|h| h.iter())
        .filter_map(|h| h.value.map(|v| (h.key, v)))
}

fn upstream_of(message: &OwnedMessage, row: Option<&bson::Document>) -> Option<SpanContext> {
    crate::telemetry::upstream_context(headers_of(message), row)
}

/// A span in the message's own trace recording what became of it.
fn trace_apply(message: &OwnedMessage, fate: &Fate, upstream: &SpanContext) {
    let outcome = match fate {
        Fate::Skipped(kind) => *kind,
        Fate::Planned(..) => "applied",
        Fate::Failed(_) => "dead_lettered",
    };
    let span = tracing::info_span!(
        "sync.apply",
        topic = message.topic(),
        partition = message.partition(),
        offset = message.offset(),
        outcome,
        trace_id = %upstream.trace_id(),
    );
    // Fails only when no OpenTelemetry layer is installed: then there is nothing to link.
    let _ =
        span.set_parent(opentelemetry::Context::new().with_remote_span_context(upstream.clone()));
    span.in_scope(|| tracing::debug!("change applied to the read side"));
}

/// One span per projection of the batch with its applied and stale counts.
fn trace_projections(planned: &[Planned], outcomes: &[ItemOutcome]) {
    let mut counts: BTreeMap<&str, (usize, usize, usize)> = BTreeMap::new();
    for (p, outcome) in planned.iter().zip(outcomes) {
        let entry = counts.entry(&**p.projection()).or_default();
        match outcome {
            ItemOutcome::Applied => entry.0 += 1,
            ItemOutcome::Stale => entry.1 += 1,
            ItemOutcome::Failed(_) => entry.2 += 1,
        }
    }
    for (projection, (applied, stale, failed)) in counts {
        tracing::info_span!("sync.projection", projection, applied, stale, failed).in_scope(|| {});
    }
}

fn projection_of(p: &Planned) -> ProjectionLabel {
    ProjectionLabel {
        projection: p.projection().to_string(),
    }
}

/// One checkpoint per projection and partition the batch moved.
fn checkpoints(
    batch: &[OwnedMessage],
    fates: &[Fate],
    planned: &[Planned],
) -> Vec<CheckpointUpdate> {
    let mut latest: BTreeMap<(Arc<str>, String), i64> = BTreeMap::new();
    for (message, fate) in batch.iter().zip(fates) {
        let Fate::Planned(range, _) = fate else {
            continue;
        };
        for p in &planned[range.clone()] {
            let projection = p.projection();
            let partition = format!("{}/{}", message.topic(), message.partition());
            let entry = latest
                .entry((Arc::clone(projection), partition))
                .or_insert(0);
            *entry = (*entry).max(message.offset());
        }
    }
    latest
        .into_iter()
        .map(|((projection, partition), offset)| {
            CheckpointUpdate::new(
                projection.to_string(),
                partition,
                u64::try_from(offset).unwrap_or(0),
            )
        })
        .collect()
}
