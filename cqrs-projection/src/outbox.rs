//! An integration event from a service's transactional outbox, with a typed payload.

use cqrs_core::outbox::IntegrationEvent;
use cqrs_core::{ConsistencyToken, SourceVersion};
use serde::de::DeserializeOwned;

use crate::error::ProjectionError;
use crate::row::deserialize;

/// An event published through the outbox (`outbox.event.<AggregateType>`, decoded by
/// [`IntegrationEvent::from_record`]) with its payload deserialized as `T`.
///
/// Outbox records carry no source position; the aggregate's `sequence` (its version after
/// the event) orders them, so writes made from them are guarded by it: right for read
/// models keyed by the aggregate. A document fed by events of several aggregates needs a
/// scoped patch per aggregate (see [`Write::scoped_patch`](crate::Write::scoped_patch)).
///
/// ```
/// use cqrs_core::outbox::IntegrationEvent;
/// use cqrs_projection::OutboxChange;
///
/// #[derive(serde::Deserialize)]
/// struct Placed { total: i64 }
///
/// let headers = [
///     ("id", Some(&b"0190c3f6-6c1e-7c4e-9c1e-3a2b1c0d9e8f"[..])),
///     ("eventType", Some(&b"OrderPlaced"[..])),
///     ("sequence", Some(&b"1"[..])),
/// ];
/// let event = IntegrationEvent::from_record(
///     "outbox.event.Order", 0, 0, Some(b"o-1"), Some(br#"{"total":5}"#), headers,
/// ).unwrap().unwrap();
/// let change = OutboxChange::<Placed>::from_event(event).unwrap();
/// assert_eq!(change.payload.total, 5);
/// assert_eq!(change.token().to_string(), "Order:1:o-1");
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct OutboxChange<T> {
    /// The event (ids, type, version, aggregate, sequence, correlation, trace context, the
    /// raw JSON payload).
    pub event: IntegrationEvent,
    /// The payload, deserialized.
    pub payload: T,
}

impl<T: DeserializeOwned> OutboxChange<T> {
    /// Deserializes the payload of `event`; an event without `sequence` header cannot be
    /// ordered and is refused.
    pub fn from_event(event: IntegrationEvent) -> Result<Self, ProjectionError> {
        if event.sequence.is_none() {
            return Err(ProjectionError::Outbox(
                cqrs_core::outbox::DecodeError::MissingHeader {
                    topic: event.position.topic.clone(),
                    header: "sequence",
                },
            ));
        }
        let what = format!(
            "outbox payload of {} v{}",
            event.event_type, event.event_version
        );
        let payload = deserialize(
            event.payload.clone(),
            what,
            &event.aggregate_type,
            &event.aggregate_id,
        )?;
        Ok(OutboxChange { event, payload })
    }
}

impl<T> OutboxChange<T> {
    /// The aggregate's version after the event (the `sequence` header).
    pub fn sequence(&self) -> u64 {
        self.event.sequence.unwrap_or(0)
    }

    /// The version guarding writes made from the event: its sequence.
    pub fn position(&self) -> SourceVersion {
        SourceVersion::new(self.sequence())
    }

    /// The token of the command that published it.
    pub fn token(&self) -> ConsistencyToken {
        ConsistencyToken::new(
            &self.event.aggregate_type,
            &self.event.aggregate_id,
            self.sequence(),
        )
    }
}
