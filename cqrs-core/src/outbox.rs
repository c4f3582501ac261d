//! The outbox format, read side: integration events as Debezium's outbox event router
//! publishes the rows `cqrs-postgres` writes ([`OutboxMessage`](crate::OutboxMessage)). One decoder
//! for every consumer: `cqrs-saga` reacts to these events, the sync-service projects them.
//!
//! The stack's `cqrs-outbox` connector (`docker/debezium/cqrs-outbox.json.tmpl`) routes
//! every row of a `<schema>.outbox` table (written by `cqrs-postgres` in the command's
//! transaction) to the topic `outbox.event.<aggregatetype>`:
//!
//! * key: the aggregate id, as UTF-8 text (`StringConverter`);
//! * value: the event payload, the JSON text of the `payload` column (`StringConverter`,
//!   `table.expand.json.payload=false`: the JSON travels byte for byte);
//! * headers: `id` (event id), `eventType`, `eventVersion`, `sequence`, `aggregateType`,
//!   `correlationId`, `causationId`, `tenantId`, `occurredAt` and `tracingSpanContext`
//!   (`traceparent=...` / `tracestate=...` lines), as text (`SimpleHeaderConverter`).
//!
//! [`IntegrationEvent::from_record`] decodes such a record without any registry.

use crate::TraceContext;
use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use uuid::Uuid;

/// Prefix of the topics the outbox event router writes (its default
/// `route.topic.replacement` is `outbox.event.${routedByValue}`).
pub const TOPIC_PREFIX: &str = "outbox.event.";

/// The topic carrying the outbox events of `aggregate_type`.
///
/// ```
/// assert_eq!(cqrs_core::outbox::outbox_topic("Order"), "outbox.event.Order");
/// ```
pub fn outbox_topic(aggregate_type: &str) -> String {
    format!("{TOPIC_PREFIX}{aggregate_type}")
}

/// Why a record is not a usable integration event. The runner skips such a record (it
/// can never become valid by retrying) and counts it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The record has no key (the router always sets the aggregate id as key).
    #[error("{topic}: record without key (aggregate id)")]
    MissingKey {
        /// Topic.
        topic: String,
    },
    /// A required header is absent.
    #[error("{topic}: header {header:?} is missing")]
    MissingHeader {
        /// Topic.
        topic: String,
        /// Header name.
        header: &'static str,
    },
    /// A header or the key holds an unusable value.
    #[error("{topic}: {what} is invalid: {message}")]
    Invalid {
        /// Topic.
        topic: String,
        /// What was being read.
        what: &'static str,
        /// Why.
        message: String,
    },
    /// The value is not JSON.
    #[error("{topic}: payload is not JSON: {message}")]
    Payload {
        /// Topic.
        topic: String,
        /// Parser message.
        message: String,
    },
}

/// Where a record was read from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Position {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
}

/// One event published by another service through its outbox.
#[derive(Debug, Clone, PartialEq)]
pub struct IntegrationEvent {
    /// Event id (the outbox row id, unique per event): with the handler name, the seed
    /// of the idempotency key of every command run in reaction.
    pub event_id: Uuid,
    /// Event type, e.g. `OrderPlaced`.
    pub event_type: String,
    /// Payload version (1 when the header is absent).
    pub event_version: u32,
    /// Aggregate type (the `aggregateType` header, else the topic suffix).
    pub aggregate_type: String,
    /// Aggregate id (the record key).
    pub aggregate_id: String,
    /// Sequence of the event in its aggregate, when known.
    pub sequence: Option<u64>,
    /// Correlation id of the business flow.
    pub correlation_id: Option<Uuid>,
    /// Command that produced the event.
    pub causation_id: Option<Uuid>,
    /// Tenant.
    pub tenant_id: Option<String>,
    /// When it happened.
    pub occurred_at: Option<DateTime<Utc>>,
    /// W3C trace context of the producing command.
    pub trace_context: Option<TraceContext>,
    /// The event payload.
    pub payload: serde_json::Value,
    /// Where it was read.
    pub position: Position,
}

impl IntegrationEvent {
    /// Decodes a record of an outbox topic. `Ok(None)` for a record without value (a
    /// tombstone: nothing to react to).
    ///
    /// ```
    /// use cqrs_core::outbox::IntegrationEvent;
    ///
    /// let headers = [
    ///     ("id", Some(&b"0190c3f6-6c1e-7c4e-9c1e-3a2b1c0d9e8f"[..])),
    ///     ("eventType", Some(&b"OrderPlaced"[..])),
    ///     ("sequence", Some(&b"1"[..])),
    /// ];
    /// let event = IntegrationEvent::from_record(
    ///     "outbox.event.Order", 0, 42, Some(b"o-1"), Some(br#"{"total":5}"#), headers,
    /// ).unwrap().unwrap();
    /// assert_eq!(event.aggregate_type, "Order");
    /// assert_eq!(event.aggregate_id, "o-1");
    /// assert_eq!(event.payload["total"], 5);
    /// assert_eq!(event.sequence, Some(1));
    /// ```
    pub fn from_record<'h>(
        topic: &str,
        partition: i32,
        offset: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: impl IntoIterator<Item = (&'h str, Option<&'h [u8]>)>,
    ) -> Result<Option<IntegrationEvent>, DecodeError> {
        let Some(value) = value else {
            return Ok(None);
        };
        let invalid = |what: &'static str, message: String| DecodeError::Invalid {
            topic: topic.to_owned(),
            what,
            message,
        };
        let mut h = Headers::default();
        for (name, v) in headers {
            let Some(v) = v else { continue };
            let text = std::str::from_utf8(v)
                .map_err(|e| invalid("header", format!("{name}: {e}")))?
                .trim();
            if text.is_empty() {
                continue;
            }
            let slot = match name {
                "id" => &mut h.id,
                "eventType" => &mut h.event_type,
                "eventVersion" => &mut h.event_version,
                "sequence" => &mut h.sequence,
                "aggregateType" => &mut h.aggregate_type,
                "correlationId" => &mut h.correlation_id,
                "causationId" => &mut h.causation_id,
                "tenantId" => &mut h.tenant_id,
                "occurredAt" => &mut h.occurred_at,
                "tracingSpanContext" => &mut h.span_context,
                "traceparent" => &mut h.traceparent,
                "tracestate" => &mut h.tracestate,
                _ => continue,
            };
            *slot = Some(text.to_owned());
        }
        let missing = |header| DecodeError::MissingHeader {
            topic: topic.to_owned(),
            header,
        };
        let key = key.ok_or_else(|| DecodeError::MissingKey {
            topic: topic.to_owned(),
        })?;
        let aggregate_id = std::str::from_utf8(key)
            .map_err(|e| invalid("key", e.to_string()))?
            // A JSON-encoded string key (JsonConverter) is accepted too.
            .trim_matches('"')
            .to_owned();
        if aggregate_id.is_empty() {
            return Err(DecodeError::MissingKey {
                topic: topic.to_owned(),
            });
        }
        let uuid = |what: &'static str, v: Option<String>| -> Result<Option<Uuid>, DecodeError> {
            v.map(|s| Uuid::parse_str(&s).map_err(|e| invalid(what, e.to_string())))
                .transpose()
        };
        let event_id = uuid("id header", h.id)?.ok_or_else(|| missing("id"))?;
        let event_type = h.event_type.ok_or_else(|| missing("eventType"))?;
        let event_version = match h.event_version {
            Some(v) => v.parse().map_err(|e: std::num::ParseIntError| {
                invalid("eventVersion header", e.to_string())
            })?,
            None => 1,
        };
        let sequence = h
            .sequence
            .map(|v| v.parse::<u64>())
            .transpose()
            .map_err(|e| invalid("sequence header", e.to_string()))?;
        let occurred_at = h
            .occurred_at
            .map(|v| DateTime::parse_from_rfc3339(&v).map(|t| t.with_timezone(&Utc)))
            .transpose()
            .map_err(|e| invalid("occurredAt header", e.to_string()))?;
        let aggregate_type = match h.aggregate_type {
            Some(t) => t,
            None => topic
                .strip_prefix(TOPIC_PREFIX)
                .filter(|s| !s.is_empty())
                .unwrap_or(topic)
                .to_owned(),
        };
        let trace_context = trace_context(h.span_context, h.traceparent, h.tracestate);
        let payload = serde_json::from_slice(value).map_err(|e| DecodeError::Payload {
            topic: topic.to_owned(),
            message: e.to_string(),
        })?;
        Ok(Some(IntegrationEvent {
            event_id,
            event_type,
            event_version,
            aggregate_type,
            aggregate_id,
            sequence,
            correlation_id: uuid("correlationId header", h.correlation_id)?,
            causation_id: uuid("causationId header", h.causation_id)?,
            tenant_id: h.tenant_id,
            occurred_at,
            trace_context,
            payload,
            position: Position {
                topic: topic.to_owned(),
                partition,
                offset,
            },
        }))
    }

    /// The payload as a typed value.
    ///
    /// ```
    /// # use cqrs_core::outbox::IntegrationEvent;
    /// # let headers = [("id", Some(&b"0190c3f6-6c1e-7c4e-9c1e-3a2b1c0d9e8f"[..])), ("eventType", Some(&b"OrderPlaced"[..]))];
    /// # let event = IntegrationEvent::from_record("outbox.event.Order", 0, 0, Some(b"o-1"), Some(br#"{"total":5}"#), headers).unwrap().unwrap();
    /// #[derive(serde::Deserialize)]
    /// struct Placed { total: i64 }
    /// assert_eq!(event.payload_as::<Placed>().unwrap().total, 5);
    /// ```
    pub fn payload_as<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        T::deserialize(&self.payload)
    }

    /// True for an event of `aggregate_type` with type `event_type`.
    pub fn is(&self, aggregate_type: &str, event_type: &str) -> bool {
        self.aggregate_type == aggregate_type && self.event_type == event_type
    }
}

#[derive(Default)]
struct Headers {
    id: Option<String>,
    event_type: Option<String>,
    event_version: Option<String>,
    sequence: Option<String>,
    aggregate_type: Option<String>,
    correlation_id: Option<String>,
    causation_id: Option<String>,
    tenant_id: Option<String>,
    occurred_at: Option<String>,
    span_context: Option<String>,
    traceparent: Option<String>,
    tracestate: Option<String>,
}

/// The trace context from `traceparent`/`tracestate` headers (set by Debezium's tracing
/// integration when it is active) or from the `tracingspancontext` column placed in a
/// header (`java.util.Properties` text). An unparsable context is dropped, never fatal.
fn trace_context(
    properties: Option<String>,
    traceparent: Option<String>,
    tracestate: Option<String>,
) -> Option<TraceContext> {
    let (parent, state) = match (traceparent, properties) {
        (Some(p), _) => (p, tracestate),
        (None, Some(props)) => {
            let mut parent = None;
            let mut state = None;
            for line in props.lines() {
                if let Some(v) = line.strip_prefix("traceparent=") {
                    parent = Some(v.replace("\\\\", "\\"));
                } else if let Some(v) = line.strip_prefix("tracestate=") {
                    state = Some(v.replace("\\\\", "\\"));
                }
            }
            (parent?, state)
        }
        (None, None) => return None,
    };
    TraceContext::parse(&parent, state.as_deref()).ok()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const ID: &[u8] = b"0190c3f6-6c1e-7c4e-9c1e-3a2b1c0d9e8f";

    #[test]
    fn decodes_every_header() {
        let headers = [
            ("id", Some(ID)),
            ("eventType", Some(&b"StockReserved"[..])),
            ("eventVersion", Some(&b"2"[..])),
            ("sequence", Some(&b"7"[..])),
            ("aggregateType", Some(&b"Warehouse"[..])),
            ("correlationId", Some(ID)),
            ("tenantId", Some(&b"acme"[..])),
            ("occurredAt", Some(&b"2026-01-02T03:04:05.123456Z"[..])),
            (
                "tracingSpanContext",
                Some(&b"traceparent=00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\n"[..]),
            ),
            ("causationId", None),
        ];
        let e = IntegrationEvent::from_record(
            "outbox.event.Warehouse",
            3,
            9,
            Some(b"main"),
            Some(b"{\"a\": [1, 2]}"),
            headers,
        )
        .unwrap()
        .unwrap();
        assert_eq!(e.event_type, "StockReserved");
        assert_eq!(e.event_version, 2);
        assert_eq!(e.sequence, Some(7));
        assert_eq!(e.aggregate_type, "Warehouse");
        assert_eq!(e.tenant_id.as_deref(), Some("acme"));
        assert_eq!(e.causation_id, None);
        assert_eq!(e.correlation_id, Some(e.event_id));
        assert_eq!(
            e.trace_context.unwrap().trace_id(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(e.position.partition, 3);
        assert_eq!(e.payload["a"][1], 2);
    }

    #[test]
    fn refuses_unusable_records() {
        let ok = [("id", Some(ID)), ("eventType", Some(&b"X"[..]))];
        assert!(matches!(
            IntegrationEvent::from_record("t", 0, 0, None, Some(b"{}"), ok),
            Err(DecodeError::MissingKey { .. })
        ));
        assert!(matches!(
            IntegrationEvent::from_record("t", 0, 0, Some(b"k"), Some(b"{"), ok),
            Err(DecodeError::Payload { .. })
        ));
        assert!(matches!(
            IntegrationEvent::from_record("t", 0, 0, Some(b"k"), Some(b"{}"), [("id", Some(ID))]),
            Err(DecodeError::MissingHeader {
                header: "eventType",
                ..
            })
        ));
        let bad_id = [("id", Some(&b"nope"[..])), ("eventType", Some(&b"X"[..]))];
        assert!(matches!(
            IntegrationEvent::from_record("t", 0, 0, Some(b"k"), Some(b"{}"), bad_id),
            Err(DecodeError::Invalid { .. })
        ));
        assert_eq!(
            IntegrationEvent::from_record("t", 0, 0, Some(b"k"), None, ok).unwrap(),
            None
        );
    }
}
