//! The storage contract of the write side, implemented by the in-memory store and by
//! `cqrs-postgres`.

use std::num::NonZeroU64;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::aggregate::Aggregate;
use crate::consistency::ConsistencyToken;
use crate::event::{EventEnvelope, EventMetadata, NewEvent};
use crate::trace::TraceContext;
use crate::upcast::UpcastError;

/// How an aggregate is persisted; users pick per aggregate.
///
/// ```
/// use cqrs_core::PersistenceMode;
///
/// let es = PersistenceMode::event_sourced().with_snapshots_every(50);
/// assert!(es.is_event_sourced());
/// assert!(!PersistenceMode::StateStored.is_event_sourced());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PersistenceMode {
    /// Events are the source of truth; state is rebuilt by replaying them, starting from
    /// a snapshot taken every `snapshot_every` events when set.
    EventSourced {
        /// Snapshot interval, `None` for no snapshots.
        snapshot_every: Option<NonZeroU64>,
    },
    /// The state row is the source of truth; events are published through the outbox only.
    StateStored,
}

impl PersistenceMode {
    /// Event-sourced without snapshots.
    pub const fn event_sourced() -> Self {
        PersistenceMode::EventSourced {
            snapshot_every: None,
        }
    }

    /// Sets the snapshot interval (ignored for state-stored aggregates; 0 disables).
    pub fn with_snapshots_every(self, events: u64) -> Self {
        match self {
            PersistenceMode::EventSourced { .. } => PersistenceMode::EventSourced {
                snapshot_every: NonZeroU64::new(events),
            },
            other => other,
        }
    }

    /// True for [`PersistenceMode::EventSourced`].
    pub const fn is_event_sourced(&self) -> bool {
        matches!(self, PersistenceMode::EventSourced { .. })
    }

    /// Whether a commit that moves an aggregate from `old_version` to `new_version` must
    /// write a snapshot.
    pub fn snapshot_due(&self, old_version: u64, new_version: u64) -> bool {
        match self {
            PersistenceMode::EventSourced {
                snapshot_every: Some(n),
            } => new_version / n.get() > old_version / n.get(),
            _ => false,
        }
    }
}

/// An aggregate's state as loaded, with the version it is at (0 when new).
#[derive(Debug, Clone)]
pub struct Loaded<A> {
    /// The state.
    pub state: A,
    /// Number of events applied so far.
    pub version: u64,
}

/// The record of a processed command, kept for idempotency: a second submission of the
/// same command id returns it instead of running the command again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandReceipt {
    /// Idempotency key of the command.
    pub command_id: Uuid,
    /// Aggregate type the command ran on.
    pub aggregate_type: String,
    /// Aggregate id the command ran on.
    pub aggregate_id: String,
    /// Aggregate version after the command.
    pub version: u64,
    /// Metadata of the events the command produced.
    pub events: Vec<EventMetadata>,
    /// Token a reader can wait on.
    pub consistency_token: ConsistencyToken,
    /// When the command was committed.
    pub processed_at: DateTime<Utc>,
}

/// Everything one command writes, in one transaction.
#[derive(Debug)]
pub struct Commit<'a, A> {
    /// Aggregate id.
    pub aggregate_id: &'a str,
    /// Version the command was decided on; the commit fails with
    /// [`StoreError::Conflict`] if another writer moved the aggregate meanwhile.
    pub expected_version: u64,
    /// The new events, sequences `expected_version + 1 ..`.
    pub events: &'a [NewEvent],
    /// The state after applying the events.
    pub state: &'a A,
    /// The receipt to keep under the command id.
    pub receipt: &'a CommandReceipt,
}

impl<A> Commit<'_, A> {
    /// Version after the commit.
    pub fn new_version(&self) -> u64 {
        self.expected_version + self.events.len() as u64
    }
}

/// A row of the transactional outbox, in the layout of Debezium's outbox event router.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutboxMessage {
    /// Event id (the outbox `id` column).
    pub id: Uuid,
    /// `aggregatetype`: routes the message to a topic.
    pub aggregate_type: String,
    /// `aggregateid`: becomes the Kafka message key.
    pub aggregate_id: String,
    /// `type`: the event type.
    pub event_type: String,
    /// `payload`: the event JSON.
    pub payload: serde_json::Value,
    /// W3C trace context (the `tracingspancontext` column).
    pub trace_context: Option<TraceContext>,
    /// Full metadata of the event.
    pub metadata: EventMetadata,
}

impl From<&NewEvent> for OutboxMessage {
    fn from(event: &NewEvent) -> Self {
        let m = &event.metadata;
        OutboxMessage {
            id: m.event_id,
            aggregate_type: m.aggregate_type.clone(),
            aggregate_id: m.aggregate_id.clone(),
            event_type: m.event_type.clone(),
            payload: event.payload.clone(),
            trace_context: m.trace_context.clone(),
            metadata: m.clone(),
        }
    }
}

/// Infrastructure errors of the write side: kept apart from domain errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Another writer changed the aggregate since it was loaded.
    #[error(
        "concurrency conflict on {aggregate_type} {aggregate_id}: expected version {expected_version}, another writer committed first"
    )]
    Conflict {
        /// Aggregate type.
        aggregate_type: String,
        /// Aggregate id.
        aggregate_id: String,
        /// Version the losing writer expected.
        expected_version: u64,
    },
    /// The command id was already committed (by a concurrent submission of the same command).
    #[error("command {command_id} was already processed")]
    DuplicateCommand {
        /// The command id.
        command_id: Uuid,
    },
    /// A value could not be serialized.
    #[error("cannot serialize {what}: {source}")]
    Serialize {
        /// What was being serialized.
        what: String,
        /// The serde error.
        #[source]
        source: serde_json::Error,
    },
    /// A stored value could not be read back.
    #[error("cannot deserialize {what}: {source}")]
    Deserialize {
        /// What was being read.
        what: String,
        /// The serde error.
        #[source]
        source: serde_json::Error,
    },
    /// A stored event could not be upcast.
    #[error(transparent)]
    Upcast(#[from] UpcastError),
    /// The input cannot be stored (an invalid id, an out-of-range number).
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// The store does not support the operation in this mode.
    #[error("unsupported: {0}")]
    Unsupported(&'static str),
    /// The storage backend failed. `transient` tells whether retrying may help.
    #[error("storage backend error: {message}")]
    Backend {
        /// What failed; never contains credentials.
        message: String,
        /// True for connection losses and similar.
        transient: bool,
        /// The backend's error.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
}

impl StoreError {
    /// True for [`StoreError::Conflict`].
    pub fn is_conflict(&self) -> bool {
        matches!(self, StoreError::Conflict { .. })
    }
}

/// Where an aggregate's events, state, outbox rows and command receipts are kept.
///
/// `commit` must be atomic: all of it or nothing, and it must fail with
/// [`StoreError::Conflict`] when the aggregate is no longer at `expected_version`, and with
/// [`StoreError::DuplicateCommand`] when the receipt's command id was already committed.
#[async_trait]
pub trait AggregateStore<A: Aggregate>: Send + Sync {
    /// Loads the current state (from the state row, or a snapshot plus the events after it).
    async fn load(&self, aggregate_id: &str) -> Result<Loaded<A>, StoreError>;

    /// Events of one aggregate with a sequence above `after_sequence`, upcast and decoded.
    /// State-stored aggregates keep no events: [`StoreError::Unsupported`].
    async fn load_events(
        &self,
        aggregate_id: &str,
        after_sequence: u64,
    ) -> Result<Vec<EventEnvelope<A::Event>>, StoreError>;

    /// The receipt of an already processed command, if any.
    async fn find_receipt(&self, command_id: Uuid) -> Result<Option<CommandReceipt>, StoreError>;

    /// Writes one command's events, state, outbox rows and receipt atomically.
    async fn commit(&self, commit: Commit<'_, A>) -> Result<(), StoreError>;

    /// What a command handler needs before deciding: the receipt of `command_id` when that
    /// command was already processed, else the aggregate's current state. The default
    /// looks the receipt up, then loads; a store may answer both in one round trip.
    async fn load_for_command(
        &self,
        aggregate_id: &str,
        command_id: Uuid,
    ) -> Result<ForCommand<A>, StoreError> {
        match self.find_receipt(command_id).await? {
            Some(receipt) => Ok(ForCommand::Processed(receipt)),
            None => Ok(ForCommand::Ready(self.load(aggregate_id).await?)),
        }
    }
}

/// The answer of [`AggregateStore::load_for_command`].
///
/// ```
/// use cqrs_core::{ForCommand, Loaded};
/// let ready: ForCommand<u32> = ForCommand::Ready(Loaded { state: 0, version: 0 });
/// assert!(matches!(ready, ForCommand::Ready(Loaded { version: 0, .. })));
/// ```
#[derive(Debug, Clone)]
pub enum ForCommand<A> {
    /// The command was processed before: its receipt.
    Processed(CommandReceipt),
    /// Not processed yet: the aggregate as it stands.
    Ready(Loaded<A>),
}
