//! Decode, envelope and map one record into planned writes (or its fate without any).

use cqrs_kafka::Record;
use opentelemetry::trace::SpanContext;
use tokio_util::sync::CancellationToken;

use super::{Fate, Pipeline, trace};
use crate::dead_letter::{Failure, Stage};
use crate::decode::{DecodeError, DecodedRecord, RawRecord};
use crate::envelope::Event;
use crate::map::Planned;
use crate::write::{Interrupted, retry};

/// A record that failed at `stage`, without upstream trace (its content is unusable).
fn failed(record: &Record, stage: Stage, error: String) -> (Fate, Option<SpanContext>) {
    let fate = Fate::Failed(Failure {
        stage,
        error,
        behind: None,
    });
    (fate, trace::upstream_of(record, None))
}

/// The fate of a record whose writes are `writes`, appended to `planned`.
fn planned_fate(
    planned: &mut Vec<Planned>,
    writes: Vec<Planned>,
    committed_ms: Option<i64>,
) -> Fate {
    if writes.is_empty() {
        return Fate::Skipped("unmapped");
    }
    let start = planned.len();
    planned.extend(writes);
    Fate::Planned(start..planned.len(), committed_ms)
}

impl Pipeline {
    /// Decode, envelope and map one record.
    pub(super) async fn plan(
        &self,
        record: &Record,
        planned: &mut Vec<Planned>,
        shutdown: &CancellationToken,
    ) -> Result<(Fate, Option<SpanContext>), Interrupted> {
        if self.projections.has_outbox_topic(&record.topic) {
            return Ok(self.plan_outbox(record, planned));
        }
        let decoded = match self.decode(record, shutdown).await? {
            Ok(decoded) => decoded,
            Err(e) => return Ok(failed(record, Stage::Decode, e.to_string())),
        };
        let change = match self.parser.parse(&decoded) {
            Ok(Event::Change(change)) => change,
            Ok(other) => {
                return Ok((
                    Fate::Skipped(other.kind()),
                    trace::upstream_of(record, None),
                ));
            }
            Err(e) => return Ok(failed(record, Stage::Envelope, e.to_string())),
        };
        if change.is_incremental_snapshot_read()
            && let (Some(schema), Some(table)) = (&change.source.schema, &change.source.table)
        {
            self.snapshot_rows
                .applied(&self.metrics, &format!("{schema}.{table}"), 1);
        }
        let context = trace::upstream_of(record, change.after.as_ref());
        let fate = match self.projections.plan(&change) {
            Ok(writes) => planned_fate(planned, writes, change.source.ts_ms),
            Err(e) => return Ok(failed(record, Stage::Map, e.to_string())),
        };
        Ok((fate, context))
    }

    /// An outbox record a projection reads: decoded by `cqrs-core`'s outbox decoder (the
    /// router's records are plain text, no registry), then mapped.
    fn plan_outbox(
        &self,
        record: &Record,
        planned: &mut Vec<Planned>,
    ) -> (Fate, Option<SpanContext>) {
        let event = match record.integration_event() {
            Ok(Some(event)) => event,
            Ok(None) => return (Fate::Skipped("tombstone"), trace::upstream_of(record, None)),
            Err(e) => return failed(record, Stage::Envelope, e.to_string()),
        };
        let fate = match self.projections.plan_outbox(&event) {
            Ok(writes) => {
                let occurred = event.occurred_at.map(|t| t.timestamp_millis());
                planned_fate(planned, writes, occurred)
            }
            Err(e) => return failed(record, Stage::Map, e.to_string()),
        };
        (fate, trace::upstream_of(record, None))
    }

    /// Decodes, retrying while the registry is unreachable.
    async fn decode(
        &self,
        record: &Record,
        shutdown: &CancellationToken,
    ) -> Result<Result<DecodedRecord, DecodeError>, Interrupted> {
        let mut raw = RawRecord::new(&record.topic).at(record.partition, record.offset);
        if let Some(key) = record.key() {
            raw = raw.with_key(key);
        }
        if let Some(value) = record.value() {
            raw = raw.with_value(value);
        }
        for (key, value) in record.headers_iter() {
            raw = raw.with_header(key, value);
        }
        let raw = &raw;
        retry(
            &self.backoff,
            shutdown,
            "schema registry unavailable",
            || async move {
                match self.decoder.decode(raw).await {
                    // Transient: retried; any other failure is the record's fate.
                    Err(e) if e.is_transient() => Err(e),
                    result => Ok(result),
                }
            },
        )
        .await
    }
}
