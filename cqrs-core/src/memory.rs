//! An in-memory store: the whole write-side contract without a server, for tests and
//! prototypes.

use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use serde_json::Value;
use uuid::Uuid;

use crate::aggregate::Aggregate;
use crate::event::{EventEnvelope, EventMetadata};
use crate::store::{
    AggregateStore, CommandReceipt, Commit, Loaded, OutboxMessage, PersistenceMode, StoreError,
};
use crate::upcast::Upcasters;

#[derive(Default)]
struct Inner {
    /// Events per aggregate id, as stored (JSON), in sequence order.
    events: HashMap<String, Vec<(EventMetadata, Value)>>,
    /// Snapshot (event-sourced) or state row (state-stored) per aggregate id, with its version.
    states: HashMap<String, (Value, u64)>,
    /// Current version per aggregate id.
    versions: HashMap<String, u64>,
    outbox: Vec<OutboxMessage>,
    receipts: HashMap<Uuid, CommandReceipt>,
}

/// A store that keeps everything in memory, with the same semantics as the PostgreSQL
/// store: atomic commits, optimistic concurrency, idempotent command ids, an outbox,
/// snapshots and upcasting of stored events.
///
/// Events and state are kept as JSON, exactly as a database would, so serde mistakes and
/// upcasters are exercised. Clones share the same data.
///
/// ```
/// # use cqrs_core::{Aggregate, DomainEvent};
/// # use serde::{Deserialize, Serialize};
/// # #[derive(Debug, Default, Serialize, Deserialize)]
/// # struct Counter { value: u64 }
/// # enum CounterCommand { Add(u64) }
/// # #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
/// # enum CounterEvent { Added { by: u64 } }
/// # impl DomainEvent for CounterEvent { fn event_type(&self) -> &'static str { "CounterAdded" } }
/// # #[derive(Debug, PartialEq, thiserror::Error)]
/// # enum CounterError { #[error("zero")] Zero }
/// # impl Aggregate for Counter {
/// #     const TYPE: &'static str = "Counter";
/// #     type Command = CounterCommand; type Event = CounterEvent; type Error = CounterError;
/// #     fn handle(&self, c: &CounterCommand) -> Result<Vec<CounterEvent>, CounterError> {
/// #         match c { CounterCommand::Add(0) => Err(CounterError::Zero), CounterCommand::Add(n) => Ok(vec![CounterEvent::Added { by: *n }]) }
/// #     }
/// #     fn apply(&mut self, e: &CounterEvent) { match e { CounterEvent::Added { by } => self.value += by } }
/// # }
/// use cqrs_core::{AggregateStore, CommandHandler, CommandMetadata, InMemoryStore, PersistenceMode};
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let store = InMemoryStore::<Counter>::new(PersistenceMode::StateStored);
/// let handler = CommandHandler::new(store.clone());
/// handler.execute("c-1", &CounterCommand::Add(4), CommandMetadata::new()).await.unwrap().unwrap();
///
/// assert_eq!(store.load("c-1").await.unwrap().state.value, 4);
/// assert_eq!(store.outbox()[0].event_type, "CounterAdded");
/// # });
/// ```
pub struct InMemoryStore<A> {
    inner: Arc<Mutex<Inner>>,
    mode: PersistenceMode,
    upcasters: Arc<Upcasters>,
    _aggregate: PhantomData<fn() -> A>,
}

impl<A> Clone for InMemoryStore<A> {
    fn clone(&self) -> Self {
        InMemoryStore {
            inner: Arc::clone(&self.inner),
            mode: self.mode,
            upcasters: Arc::clone(&self.upcasters),
            _aggregate: PhantomData,
        }
    }
}

impl<A: Aggregate> InMemoryStore<A> {
    /// An empty store persisting aggregates in `mode`.
    pub fn new(mode: PersistenceMode) -> Self {
        InMemoryStore {
            inner: Arc::default(),
            mode,
            upcasters: Arc::new(Upcasters::new()),
            _aggregate: PhantomData,
        }
    }

    /// Applies `upcasters` to events read back.
    pub fn with_upcasters(mut self, upcasters: Upcasters) -> Self {
        self.upcasters = Arc::new(upcasters);
        self
    }

    /// Every outbox message committed so far, in commit order.
    pub fn outbox(&self) -> Vec<OutboxMessage> {
        self.lock().outbox.clone()
    }

    /// The events of one aggregate as stored (type, version and JSON payload).
    pub fn stored_events(&self, aggregate_id: &str) -> Vec<(EventMetadata, Value)> {
        self.lock()
            .events
            .get(aggregate_id)
            .cloned()
            .unwrap_or_default()
    }

    /// Appends an event as if an older release had stored it, bypassing the handler: for
    /// testing upcasters. The sequence must be the aggregate's next one.
    pub fn insert_stored_event(
        &self,
        metadata: EventMetadata,
        payload: Value,
    ) -> Result<(), StoreError> {
        let mut inner = self.lock();
        let version = inner
            .versions
            .get(&metadata.aggregate_id)
            .copied()
            .unwrap_or(0);
        if metadata.sequence != version + 1 {
            return Err(StoreError::Conflict {
                aggregate_type: metadata.aggregate_type,
                aggregate_id: metadata.aggregate_id,
                expected_version: metadata.sequence.saturating_sub(1),
            });
        }
        inner
            .versions
            .insert(metadata.aggregate_id.clone(), metadata.sequence);
        inner
            .events
            .entry(metadata.aggregate_id.clone())
            .or_default()
            .push((metadata, payload));
        Ok(())
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // No code panics while holding the lock, and the data stays consistent even if
        // one did (every commit writes after all checks), so a poisoned lock is usable.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn decode_state(value: &Value, aggregate_id: &str) -> Result<A, StoreError> {
        serde_json::from_value(value.clone()).map_err(|source| StoreError::Deserialize {
            what: format!("state of {} {aggregate_id}", A::TYPE),
            source,
        })
    }
}

#[async_trait]
impl<A: Aggregate> AggregateStore<A> for InMemoryStore<A> {
    async fn load(&self, aggregate_id: &str) -> Result<Loaded<A>, StoreError> {
        let (state, events) = {
            let inner = self.lock();
            let state = inner.states.get(aggregate_id).cloned();
            let events = inner.events.get(aggregate_id).cloned().unwrap_or_default();
            (state, events)
        };
        let (mut state, mut version) = match &state {
            Some((value, version)) => (Self::decode_state(value, aggregate_id)?, *version),
            None => (A::default(), 0),
        };
        if self.mode.is_event_sourced() {
            let from = version;
            for (metadata, payload) in events.into_iter().filter(|(m, _)| m.sequence > from) {
                let envelope = self.upcasters.decode::<A::Event>(metadata, payload)?;
                state.apply(&envelope.payload);
                version = envelope.metadata.sequence;
            }
        }
        Ok(Loaded { state, version })
    }

    async fn load_events(
        &self,
        aggregate_id: &str,
        after_sequence: u64,
    ) -> Result<Vec<EventEnvelope<A::Event>>, StoreError> {
        if !self.mode.is_event_sourced() {
            return Err(StoreError::Unsupported(
                "state-stored aggregates keep no event stream",
            ));
        }
        self.stored_events(aggregate_id)
            .into_iter()
            .filter(|(m, _)| m.sequence > after_sequence)
            .map(|(metadata, payload)| self.upcasters.decode(metadata, payload))
            .collect()
    }

    async fn find_receipt(&self, command_id: Uuid) -> Result<Option<CommandReceipt>, StoreError> {
        Ok(self.lock().receipts.get(&command_id).cloned())
    }

    async fn commit(&self, commit: Commit<'_, A>) -> Result<(), StoreError> {
        let new_version = commit.new_version();
        let state = serde_json::to_value(commit.state).map_err(|source| StoreError::Serialize {
            what: format!("state of {} {}", A::TYPE, commit.aggregate_id),
            source,
        })?;
        let mut inner = self.lock();
        let current = inner
            .versions
            .get(commit.aggregate_id)
            .copied()
            .unwrap_or(0);
        if current != commit.expected_version {
            return Err(StoreError::Conflict {
                aggregate_type: A::TYPE.to_owned(),
                aggregate_id: commit.aggregate_id.to_owned(),
                expected_version: commit.expected_version,
            });
        }
        if inner.receipts.contains_key(&commit.receipt.command_id) {
            return Err(StoreError::DuplicateCommand {
                command_id: commit.receipt.command_id,
            });
        }
        // All checks passed: from here on every write happens.
        inner
            .versions
            .insert(commit.aggregate_id.to_owned(), new_version);
        match self.mode {
            PersistenceMode::StateStored => {
                inner
                    .states
                    .insert(commit.aggregate_id.to_owned(), (state, new_version));
            }
            PersistenceMode::EventSourced { .. } => {
                let stream = inner
                    .events
                    .entry(commit.aggregate_id.to_owned())
                    .or_default();
                stream.extend(
                    commit
                        .events
                        .iter()
                        .map(|e| (e.metadata.clone(), e.payload.clone())),
                );
                if self.mode.snapshot_due(commit.expected_version, new_version) {
                    inner
                        .states
                        .insert(commit.aggregate_id.to_owned(), (state, new_version));
                }
            }
        }
        inner
            .outbox
            .extend(commit.events.iter().map(OutboxMessage::from));
        inner
            .receipts
            .insert(commit.receipt.command_id, commit.receipt.clone());
        Ok(())
    }
}

impl<A> std::fmt::Debug for InMemoryStore<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InMemoryStore")
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}
