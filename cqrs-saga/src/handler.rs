//! The reaction contract: an [`EventHandler`] turns an [`IntegrationEvent`] into commands
//! whose ids are derived from the event, so that a redelivered event runs nothing twice.

use async_trait::async_trait;
use cqrs_core::{CommandError, CommandMetadata, ConsistencyToken};
use uuid::Uuid;

use cqrs_core::outbox::IntegrationEvent;

/// Namespace of the UUIDv5 command ids derived by [`command_id`].
pub const COMMAND_ID_NAMESPACE: Uuid = Uuid::from_u128(0x6a1f_7d2e_3c4b_4e59_9a0d_1b2c_3d4e_5f60);

/// The idempotency key of the command `handler` runs for `event_id` at `step`:
/// UUIDv5 of `handler`, the event id and the step name. The same event handled again
/// (a redelivery, a replay, a second runner) derives the same id, and the store's
/// processed-commands table turns the second execution into a no-op that returns the
/// first receipt.
///
/// ```
/// use cqrs_saga::command_id;
/// use uuid::Uuid;
///
/// let event = Uuid::now_v7();
/// assert_eq!(command_id("billing", event, "invoice"), command_id("billing", event, "invoice"));
/// assert_ne!(command_id("billing", event, "invoice"), command_id("orders", event, "invoice"));
/// assert_ne!(command_id("billing", event, "invoice"), command_id("billing", event, "refund"));
/// ```
pub fn command_id(handler: &str, event_id: Uuid, step: &str) -> Uuid {
    let mut name = Vec::with_capacity(handler.len() + step.len() + 18);
    name.extend_from_slice(handler.as_bytes());
    name.push(0);
    name.extend_from_slice(event_id.as_bytes());
    name.push(0);
    name.extend_from_slice(step.as_bytes());
    Uuid::new_v5(&COMMAND_ID_NAMESPACE, &name)
}

/// Metadata of a command run in reaction to `event`: the derived idempotency key, the
/// event's correlation id (the flow continues), the event id as causation, and the
/// event's tenant and trace context.
///
/// ```
/// # use cqrs_saga::IntegrationEvent;
/// # let headers = [("id", Some(&b"0190c3f6-6c1e-7c4e-9c1e-3a2b1c0d9e8f"[..])), ("eventType", Some(&b"OrderPlaced"[..]))];
/// # let event = IntegrationEvent::from_record("outbox.event.Order", 0, 0, Some(b"o-1"), Some(b"{}"), headers).unwrap().unwrap();
/// let meta = cqrs_saga::reaction_metadata("inventory", &event, "reserve");
/// assert_eq!(meta.command_id, cqrs_saga::command_id("inventory", event.event_id, "reserve"));
/// assert_eq!(meta.causation_id, Some(event.event_id));
/// ```
pub fn reaction_metadata(handler: &str, event: &IntegrationEvent, step: &str) -> CommandMetadata {
    let id = command_id(handler, event.event_id, step);
    let mut meta = CommandMetadata::new()
        .with_command_id(id)
        .caused_by(event.event_id);
    meta.correlation_id = event.correlation_id.unwrap_or(event.event_id);
    meta.tenant_id = event.tenant_id.clone();
    meta.trace_context = event.trace_context.clone();
    meta
}

/// What handling one event did.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Handled {
    /// The handler does not react to this event.
    Ignored,
    /// A command ran (or had already run: `deduplicated`).
    Executed {
        /// Its idempotency key.
        command_id: Uuid,
        /// True when the command id had been processed before: nothing ran now.
        deduplicated: bool,
        /// Where the result can be awaited on the read side.
        token: ConsistencyToken,
    },
    /// A compensating command ran (or had already run) because a later step failed.
    Compensated {
        /// Its idempotency key.
        command_id: Uuid,
        /// True when it had already run.
        deduplicated: bool,
        /// Where the result can be awaited on the read side.
        token: ConsistencyToken,
        /// Why the flow is being compensated.
        reason: String,
    },
    /// The command was refused by the domain and no compensation is configured. The
    /// event is settled (retrying cannot change a rule violation).
    Rejected {
        /// The domain error, rendered.
        reason: String,
    },
}

/// Why an event could not be handled.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HandlerError {
    /// Infrastructure trouble (database down, conflicts exhausted): the runner retries
    /// the same event with backoff and does not move past it, so order is kept.
    #[error("{handler}: transient failure: {source}")]
    Transient {
        /// Handler name.
        handler: String,
        /// The cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The event can never be handled (its payload does not fit, the command is
    /// malformed): the runner reports it and moves on.
    #[error("{handler}: event {event_id} ({event_type}) cannot be handled: {message}")]
    Permanent {
        /// Handler name.
        handler: String,
        /// The event.
        event_id: Uuid,
        /// Its type.
        event_type: String,
        /// Why.
        message: String,
    },
}

impl HandlerError {
    /// A permanent failure for `event`.
    pub fn permanent(handler: &str, event: &IntegrationEvent, message: impl Into<String>) -> Self {
        HandlerError::Permanent {
            handler: handler.to_owned(),
            event_id: event.event_id,
            event_type: event.event_type.clone(),
            message: message.into(),
        }
    }

    /// Sorts a command failure: invalid commands are permanent, store trouble and
    /// exhausted conflicts transient.
    pub fn from_command(handler: &str, event: &IntegrationEvent, error: CommandError) -> Self {
        match error {
            CommandError::InvalidCommand(message) => Self::permanent(handler, event, message),
            other => HandlerError::Transient {
                handler: handler.to_owned(),
                source: Box::new(other),
            },
        }
    }

    /// True when retrying may help.
    pub fn is_transient(&self) -> bool {
        matches!(self, HandlerError::Transient { .. })
    }
}

/// Reacts to integration events. Implemented by [`SagaHandler`](crate::SagaHandler) for
/// the common case (event -> command on one aggregate type, with compensation); implement
/// it directly for anything else, deriving command ids with [`reaction_metadata`].
///
/// ```
/// use async_trait::async_trait;
/// use cqrs_saga::{EventHandler, Handled, HandlerError, IntegrationEvent, outbox_topic};
///
/// struct Audit;
///
/// #[async_trait]
/// impl EventHandler for Audit {
///     fn name(&self) -> &str { "audit" }
///     fn topics(&self) -> Vec<String> { vec![outbox_topic("Order")] }
///     async fn handle(&self, event: &IntegrationEvent) -> Result<Handled, HandlerError> {
///         println!("{} {}", event.event_type, event.aggregate_id);
///         Ok(Handled::Ignored)
///     }
/// }
/// ```
#[async_trait]
pub trait EventHandler: Send + Sync + 'static {
    /// Stable name: it seeds the command ids, so renaming a handler makes it react again
    /// to events it already handled.
    fn name(&self) -> &str;

    /// Topics the handler needs.
    fn topics(&self) -> Vec<String>;

    /// Reacts to one event. Must be idempotent: the runner delivers at least once.
    async fn handle(&self, event: &IntegrationEvent) -> Result<Handled, HandlerError>;
}
