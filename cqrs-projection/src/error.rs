//! Why a change could not be projected. The runtime dead-letters the message with the
//! error's text, never skips it silently.

use cqrs_core::StoreError;

/// A change a projection could not turn into writes.
///
/// ```
/// use cqrs_projection::ProjectionError;
/// let e = ProjectionError::custom("unknown currency XYZ");
/// assert_eq!(e.to_string(), "unknown currency XYZ");
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProjectionError {
    /// A captured row of one of the toolkit's tables lacks a column or holds the wrong type.
    #[error("{table}: column {column}: {message}")]
    Row {
        /// `schema.table`.
        table: String,
        /// The column.
        column: &'static str,
        /// What is wrong.
        message: String,
    },
    /// An aggregate state, an event payload or an outbox payload does not deserialize into
    /// the type the projection names.
    #[error("{what} of {aggregate_type} {aggregate_id} does not fit {type_name}: {message}")]
    Deserialize {
        /// `state`, `event MoneyDeposited v1 #3` or `outbox payload`.
        what: String,
        /// Aggregate type.
        aggregate_type: String,
        /// Aggregate id.
        aggregate_id: String,
        /// The Rust type it was decoded into.
        type_name: &'static str,
        /// serde's message, naming the field.
        message: String,
    },
    /// An event could not be upcast or decoded (see [`cqrs_core::Upcasters::decode`]).
    #[error("{0}")]
    Event(#[from] StoreError),
    /// The row of a state projection's aggregate has no state: the aggregate is
    /// event-sourced, its current state is in its events.
    #[error(
        "{aggregate_type} {aggregate_id} has no state in its row (event-sourced): project its events instead"
    )]
    NoState {
        /// Aggregate type.
        aggregate_type: String,
        /// Aggregate id.
        aggregate_id: String,
    },
    /// An outbox record is not an integration event of the toolkit's format.
    #[error(transparent)]
    Outbox(#[from] cqrs_core::outbox::DecodeError),
    /// A model or id could not be encoded as BSON.
    #[error("read model {model}: {message}")]
    Encode {
        /// The model's collection.
        model: &'static str,
        /// What failed.
        message: String,
    },
    /// The projection itself refused the change.
    #[error("{0}")]
    Custom(String),
}

impl ProjectionError {
    /// An error of the projection's own, with its message.
    pub fn custom(message: impl std::fmt::Display) -> Self {
        ProjectionError::Custom(message.to_string())
    }
}
