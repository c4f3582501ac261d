//! The aggregate: decides events from commands, evolves its state from events.

use serde::{Serialize, de::DeserializeOwned};

use crate::event::DomainEvent;

/// A consistency boundary of the write side.
///
/// `handle` decides: it validates a command against the current state and returns the
/// events that record the decision, or a domain error. `apply` evolves: it folds one event
/// into the state and never fails (an event is a fact already decided). Both are pure and
/// synchronous; I/O belongs to the [`CommandHandler`](crate::CommandHandler) and the store.
///
/// The state is serializable because stores keep it as a snapshot (event-sourced
/// aggregates) or as the aggregate's row (state-stored aggregates).
///
/// ```
/// use cqrs_core::{Aggregate, DomainEvent};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Debug, Default, Serialize, Deserialize)]
/// struct Counter { value: u64 }
///
/// enum CounterCommand { Add(u64) }
///
/// #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
/// enum CounterEvent { Added { by: u64 } }
///
/// impl DomainEvent for CounterEvent {
///     fn event_type(&self) -> &'static str { "CounterAdded" }
/// }
///
/// #[derive(Debug, PartialEq, thiserror::Error)]
/// enum CounterError { #[error("cannot add zero")] Zero }
///
/// impl Aggregate for Counter {
///     const TYPE: &'static str = "Counter";
///     type Command = CounterCommand;
///     type Event = CounterEvent;
///     type Error = CounterError;
///
///     fn handle(&self, command: &CounterCommand) -> Result<Vec<CounterEvent>, CounterError> {
///         match command {
///             CounterCommand::Add(0) => Err(CounterError::Zero),
///             CounterCommand::Add(n) => Ok(vec![CounterEvent::Added { by: *n }]),
///         }
///     }
///
///     fn apply(&mut self, event: &CounterEvent) {
///         match event { CounterEvent::Added { by } => self.value += by }
///     }
/// }
///
/// let mut counter = Counter::default();
/// for event in counter.handle(&CounterCommand::Add(3)).unwrap() {
///     counter.apply(&event);
/// }
/// assert_eq!(counter.value, 3);
/// assert_eq!(counter.handle(&CounterCommand::Add(0)).unwrap_err(), CounterError::Zero);
/// ```
pub trait Aggregate: Default + Serialize + DeserializeOwned + Send + Sync + 'static {
    /// Stable name of the aggregate type, stored with every event (`"Order"`).
    /// Letters, digits, `_` and `-` only.
    const TYPE: &'static str;
    /// The commands this aggregate handles.
    type Command: Send + Sync;
    /// The events it emits.
    type Event: DomainEvent;
    /// Its domain errors: rule violations, reported to the caller apart from
    /// infrastructure errors.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Decides the events for `command` given the current state.
    fn handle(&self, command: &Self::Command) -> Result<Vec<Self::Event>, Self::Error>;

    /// Folds one event into the state.
    fn apply(&mut self, event: &Self::Event);
}

/// Checks that an aggregate type or id is safe to store and to route on.
///
/// Aggregate types: 1 to 64 characters of `[A-Za-z0-9_-]`. Aggregate ids: 1 to 256 bytes,
/// no control characters.
pub(crate) fn validate_type_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "aggregate type {name:?} must be 1-64 characters of letters, digits, '_' or '-'"
        ))
    }
}

/// See [`validate_type_name`].
pub(crate) fn validate_aggregate_id(id: &str) -> Result<(), String> {
    if id.is_empty() {
        return Err("aggregate id must not be empty".into());
    }
    if id.len() > 256 {
        return Err(format!(
            "aggregate id is {} bytes long, at most 256 are allowed",
            id.len()
        ));
    }
    if id.chars().any(char::is_control) {
        return Err("aggregate id must not contain control characters".into());
    }
    Ok(())
}

/// A domain rule refused a command: the error type of an aggregate that needs no richer
/// one (a message for the caller, nothing to match on).
///
/// ```
/// use cqrs_core::Rejected;
/// let e = Rejected::because("deposits must be positive");
/// assert_eq!(e.to_string(), "deposits must be positive");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Rejected(pub String);

impl Rejected {
    /// The rule that refused the command, in words.
    pub fn because(reason: impl Into<String>) -> Self {
        Rejected(reason.into())
    }
}
