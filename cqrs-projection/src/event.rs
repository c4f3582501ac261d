//! A domain event of an event-sourced aggregate, from its row in `<schema>.events`.

use cqrs_core::{
    ConsistencyToken, DomainEvent, EventEnvelope, EventMetadata, SourceVersion, StoredMetadata,
    Upcasters,
};

use crate::change::{Change, Op};
use crate::error::ProjectionError;
use crate::row::{Row, deserialize};

/// The table holding the events of event-sourced aggregates (`cqrs-postgres`'s migrations).
pub const EVENTS_TABLE: &str = "events";

/// One event of aggregate type `A::TYPE`, captured from `<schema>.events`, upcast and
/// decoded into the aggregate's event type `E`.
///
/// ```
/// use cqrs_core::{CommandMetadata, EventEnvelope, EventMetadata};
/// use cqrs_projection::EventChange;
/// # #[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)] struct Deposited { amount: i64 }
/// # impl cqrs_core::DomainEvent for Deposited { fn event_type(&self) -> &'static str { "MoneyDeposited" } }
/// let event = Deposited { amount: 5 };
/// let metadata = EventMetadata::for_command(&CommandMetadata::new(), "Account", "acc-1", 4, "MoneyDeposited", 1);
/// // In a projection's unit test:
/// let change = EventChange::new(EventEnvelope { metadata, payload: event });
/// assert_eq!(change.token().to_string(), "Account:4:acc-1");
/// assert_eq!(change.payload().amount, 5);
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct EventChange<E> {
    /// The event with its metadata (id, type and version after upcasting, aggregate,
    /// sequence, occurred-at truncated to milliseconds, correlation, causation, tenant,
    /// trace context).
    pub envelope: EventEnvelope<E>,
    /// Where the event sits in the source (the WAL position of its row): the version
    /// guarding the read-model writes made from it.
    pub position: SourceVersion,
}

impl<E: DomainEvent> EventChange<E> {
    /// An event at position = its sequence, for tests.
    pub fn new(envelope: EventEnvelope<E>) -> Self {
        let position = SourceVersion::new(envelope.metadata.sequence);
        EventChange { envelope, position }
    }

    /// The event.
    pub fn payload(&self) -> &E {
        &self.envelope.payload
    }

    /// Its metadata.
    pub fn metadata(&self) -> &EventMetadata {
        &self.envelope.metadata
    }

    /// The id of the aggregate that emitted it.
    pub fn aggregate_id(&self) -> &str {
        &self.envelope.metadata.aggregate_id
    }

    /// The token of the command that emitted it: its aggregate at the event's sequence.
    /// (A command emitting several events returns the token of the last one.)
    pub fn token(&self) -> ConsistencyToken {
        let m = &self.envelope.metadata;
        ConsistencyToken::new(&m.aggregate_type, &m.aggregate_id, m.sequence)
    }

    /// Decodes a captured row of `<schema>.events` of `aggregate_type` through
    /// `upcasters`: `Ok(None)` for events of other aggregate types and for operations that
    /// are not inserts (the table is append-only).
    ///
    /// A row whose payload does not upcast or deserialize into `E` is an error: the runtime
    /// dead-letters the message.
    pub fn from_change(
        change: &Change,
        aggregate_type: &str,
        upcasters: &Upcasters,
    ) -> Result<Option<Self>, ProjectionError> {
        if !matches!(change.op, Op::Create | Op::Read) {
            return Ok(None);
        }
        let Some(image) = change.after.as_ref() else {
            return Ok(None);
        };
        let row = Row::new(change, image);
        if row.str("aggregate_type")? != aggregate_type {
            return Ok(None);
        }
        let aggregate_id = row.str("aggregate_id")?;
        let stored: StoredMetadata = match row.json("metadata") {
            Some(json) => deserialize(json, "event metadata", aggregate_type, aggregate_id)?,
            None => StoredMetadata::default(),
        };
        let metadata = EventMetadata {
            event_id: row.uuid("event_id")?,
            event_type: row.str("event_type")?.to_owned(),
            event_version: u32::try_from(row.u64("event_version")?).unwrap_or(u32::MAX),
            aggregate_type: aggregate_type.to_owned(),
            aggregate_id: aggregate_id.to_owned(),
            sequence: row.u64("sequence")?,
            occurred_at: row.time("occurred_at")?,
            correlation_id: stored.correlation_id,
            causation_id: stored.causation_id,
            tenant_id: stored.tenant_id,
            trace_context: stored.trace_context,
        };
        let payload = row.json("payload").unwrap_or(serde_json::Value::Null);
        let envelope = upcasters.decode(metadata, payload)?;
        Ok(Some(EventChange {
            envelope,
            position: change.version,
        }))
    }
}
