//! Domain events and the envelope of metadata every stored event carries.

use std::fmt::Debug;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use uuid::Uuid;

use crate::trace::TraceContext;

/// A fact an aggregate decided: the output of [`Aggregate::handle`](crate::Aggregate::handle).
///
/// Each event names its type with a stable string (stored with the event, used for routing
/// and upcasting, so never derive it from a Rust type name that may be refactored) and the
/// version of its payload schema. Bump the version when the payload changes shape and
/// register an [`Upcaster`](crate::Upcaster) from the old version.
///
/// The payload is stored as the event's serde JSON representation.
///
/// ```
/// use cqrs_core::DomainEvent;
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
/// enum AccountEvent {
///     Opened { owner: String },
///     Deposited { amount: u64 },
/// }
///
/// impl DomainEvent for AccountEvent {
///     fn event_type(&self) -> &'static str {
///         match self {
///             AccountEvent::Opened { .. } => "AccountOpened",
///             AccountEvent::Deposited { .. } => "MoneyDeposited",
///         }
///     }
/// }
///
/// assert_eq!(AccountEvent::Deposited { amount: 5 }.event_type(), "MoneyDeposited");
/// assert_eq!(AccountEvent::Deposited { amount: 5 }.event_version(), 1);
/// ```
pub trait DomainEvent:
    Serialize + DeserializeOwned + Clone + Debug + Send + Sync + 'static
{
    /// The stable type name of this event, for example `"OrderPlaced"`.
    fn event_type(&self) -> &'static str;

    /// The current schema version of this event's payload. Starts at 1.
    fn event_version(&self) -> u32 {
        1
    }
}

/// Metadata stored with every event.
///
/// ```
/// use cqrs_core::{CommandMetadata, EventMetadata};
///
/// let command = CommandMetadata::new().with_tenant_id("acme");
/// let meta = EventMetadata::for_command(&command, "Order", "order-1", 1, "OrderPlaced", 1);
/// assert_eq!(meta.causation_id, command.command_id);
/// assert_eq!(meta.correlation_id, command.correlation_id);
/// assert_eq!(meta.event_id.get_version_num(), 7);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventMetadata {
    /// Unique id of the event, a UUIDv7 (time-ordered).
    pub event_id: Uuid,
    /// Stable type name, see [`DomainEvent::event_type`].
    pub event_type: String,
    /// Schema version of the payload, see [`DomainEvent::event_version`].
    pub event_version: u32,
    /// Type of the aggregate that emitted the event.
    pub aggregate_type: String,
    /// Id of the aggregate that emitted the event.
    pub aggregate_id: String,
    /// Position of the event in its aggregate's stream: 1, 2, 3, ...
    pub sequence: u64,
    /// When the event was decided.
    pub occurred_at: DateTime<Utc>,
    /// Id shared by every command and event of one business flow.
    pub correlation_id: Uuid,
    /// Id of the command (or event) that caused this event.
    pub causation_id: Uuid,
    /// Tenant the event belongs to, for multi-tenant services.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<String>,
    /// W3C trace context of the command that produced the event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_context: Option<TraceContext>,
}

impl EventMetadata {
    /// Metadata for the `sequence`-th event of an aggregate, caused by `command`.
    pub fn for_command(
        command: &crate::CommandMetadata,
        aggregate_type: &str,
        aggregate_id: &str,
        sequence: u64,
        event_type: &str,
        event_version: u32,
    ) -> Self {
        EventMetadata {
            event_id: Uuid::now_v7(),
            event_type: event_type.to_owned(),
            event_version,
            aggregate_type: aggregate_type.to_owned(),
            aggregate_id: aggregate_id.to_owned(),
            sequence,
            occurred_at: Utc::now(),
            correlation_id: command.correlation_id,
            causation_id: command.command_id,
            tenant_id: command.tenant_id.clone(),
            trace_context: command.trace_context.clone(),
        }
    }
}

/// The part of [`EventMetadata`] stored beside an event's own columns: `cqrs-postgres`
/// writes it as the `metadata` jsonb column of its `events` table, and projections of
/// captured event rows read it back. Tolerant of rows written by other tools (missing ids
/// read as the nil UUID).
///
/// ```
/// use cqrs_core::StoredMetadata;
/// let stored: StoredMetadata = serde_json::from_str(r#"{"tenant_id":"acme"}"#).unwrap();
/// assert_eq!(stored.tenant_id.as_deref(), Some("acme"));
/// assert!(stored.correlation_id.is_nil());
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StoredMetadata {
    /// [`EventMetadata::correlation_id`].
    #[serde(default)]
    pub correlation_id: Uuid,
    /// [`EventMetadata::causation_id`].
    #[serde(default)]
    pub causation_id: Uuid,
    /// [`EventMetadata::tenant_id`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<String>,
    /// [`EventMetadata::trace_context`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_context: Option<TraceContext>,
}

impl StoredMetadata {
    /// The stored part of `metadata`.
    pub fn of(metadata: &EventMetadata) -> Self {
        StoredMetadata {
            correlation_id: metadata.correlation_id,
            causation_id: metadata.causation_id,
            tenant_id: metadata.tenant_id.clone(),
            trace_context: metadata.trace_context.clone(),
        }
    }
}

/// An event together with its metadata.
///
/// ```
/// # use cqrs_core::{CommandMetadata, EventEnvelope, EventMetadata};
/// let meta = EventMetadata::for_command(&CommandMetadata::new(), "Counter", "c-1", 1, "Incremented", 1);
/// let envelope = EventEnvelope { metadata: meta, payload: 42u32 };
/// assert_eq!(envelope.metadata.sequence, 1);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventEnvelope<E> {
    /// Who, when, where in the stream, why.
    pub metadata: EventMetadata,
    /// The event itself.
    pub payload: E,
}

/// An event about to be stored: its metadata and its payload already serialized to JSON.
///
/// Stores receive events in this form so that they need not know the event type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewEvent {
    /// Metadata of the event.
    pub metadata: EventMetadata,
    /// The serde JSON form of the event.
    pub payload: serde_json::Value,
}
