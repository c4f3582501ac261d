//! What a batch tells the traces: the upstream context of each record (W3C headers or the
//! outbox's trace column), a `sync.apply` span in that trace, a `sync.projection` span per
//! projection.

use std::collections::BTreeMap;

use cqrs_kafka::Record;
use cqrs_mongo::ItemOutcome;
use opentelemetry::trace::{SpanContext, TraceContextExt};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::Fate;
use crate::map::Planned;
use crate::metrics::ProjectionLabel;

/// The headers of a record that have a value.
fn headers_of(record: &Record) -> impl Iterator<Item = (&str, &[u8])> {
    record
        .headers_iter()
        .filter_map(|(key, value)| value.map(|v| (key, v)))
}

/// The W3C trace context a record carries (headers, else the row's trace column).
pub(super) fn upstream_of(record: &Record, row: Option<&bson::Document>) -> Option<SpanContext> {
    crate::telemetry::upstream_context(headers_of(record), row)
}

/// A span in the record's own trace recording what became of it.
pub(super) fn apply(record: &Record, fate: &Fate, upstream: &SpanContext) {
    let outcome = match fate {
        Fate::Skipped(kind) => *kind,
        Fate::Planned(..) => "applied",
        Fate::Failed(_) => "dead_lettered",
    };
    let span = tracing::info_span!(
        "sync.apply",
        topic = %record.topic,
        partition = record.partition,
        offset = record.offset,
        outcome,
        trace_id = %upstream.trace_id(),
    );
    // Fails only when no OpenTelemetry layer is installed: then there is nothing to link.
    let _ =
        span.set_parent(opentelemetry::Context::new().with_remote_span_context(upstream.clone()));
    span.in_scope(|| tracing::debug!("change applied to the read side"));
}

/// One span per projection of the batch with its applied and stale counts.
pub(super) fn projections(planned: &[Planned], outcomes: &[ItemOutcome]) {
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

/// The metrics label of a planned write's projection.
pub(super) fn projection_label(p: &Planned) -> ProjectionLabel {
    ProjectionLabel {
        projection: p.projection().to_string(),
    }
}
