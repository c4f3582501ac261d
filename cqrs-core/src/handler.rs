//! The command handling entry point: load, decide, persist, return the result.

use std::marker::PhantomData;
use std::time::Duration;

use chrono::Utc;

use crate::aggregate::{Aggregate, validate_aggregate_id, validate_type_name};
use crate::backoff::{Backoff, Jitter};
use crate::command::CommandMetadata;
use crate::consistency::ConsistencyToken;
use crate::event::{DomainEvent, EventEnvelope, EventMetadata, NewEvent};
use crate::store::{AggregateStore, CommandReceipt, Commit, ForCommand, StoreError};

/// How often and how patiently a command is re-run after a concurrency conflict.
///
/// Each retry loads the aggregate afresh and decides again, so the command sees the
/// winner's events. The delays follow a [`Backoff`]: doubling from 2 ms up to 200 ms by
/// default, with full jitter so that contending writers spread out.
///
/// ```
/// use cqrs_core::RetryPolicy;
/// use std::time::Duration;
///
/// let policy = RetryPolicy::default().with_max_attempts(10).with_backoff(Duration::from_millis(1), Duration::from_millis(50));
/// assert_eq!(policy.max_attempts, 10);
/// assert_eq!(policy.backoff.max(), Duration::from_millis(50));
/// assert_eq!(RetryPolicy::no_retry().max_attempts, 1);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in total, including the first (at least 1).
    pub max_attempts: u32,
    /// Delays between attempts.
    pub backoff: Backoff,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            backoff: Backoff::exponential(Duration::from_millis(2), Duration::from_millis(200))
                .with_jitter(Jitter::Full),
        }
    }
}

impl RetryPolicy {
    /// Fail on the first conflict: the caller sees [`CommandError::Conflict`].
    ///
    /// ```
    /// assert_eq!(cqrs_core::RetryPolicy::no_retry().max_attempts, 1);
    /// ```
    pub fn no_retry() -> Self {
        RetryPolicy {
            max_attempts: 1,
            ..Self::default()
        }
    }

    /// Sets the number of attempts (at least 1).
    ///
    /// ```
    /// assert_eq!(cqrs_core::RetryPolicy::default().with_max_attempts(0).max_attempts, 1);
    /// ```
    pub fn with_max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }

    /// Sets the backoff bounds (full jitter, as by default).
    ///
    /// ```
    /// # use std::time::Duration;
    /// let p = cqrs_core::RetryPolicy::default().with_backoff(Duration::from_millis(1), Duration::from_millis(9));
    /// assert_eq!(p.backoff.initial(), Duration::from_millis(1));
    /// ```
    pub fn with_backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.backoff = Backoff::exponential(initial, max).with_jitter(Jitter::Full);
        self
    }

    /// The jittered delay before retry number `retry` (1-based).
    fn delay(&self, retry: u32) -> Duration {
        self.backoff.delay(retry.saturating_sub(1))
    }
}

/// Infrastructure failures of a command, apart from its domain errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CommandError {
    /// The command lost every attempt against concurrent writers.
    #[error("{aggregate_type} {aggregate_id}: still conflicting after {attempts} attempts")]
    Conflict {
        /// Aggregate type.
        aggregate_type: String,
        /// Aggregate id.
        aggregate_id: String,
        /// Attempts made.
        attempts: u32,
    },
    /// The command or its metadata is malformed; nothing was written.
    #[error("invalid command: {0}")]
    InvalidCommand(String),
    /// The store failed; nothing was written.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The result of a successful command.
#[derive(Debug, Clone, PartialEq)]
pub struct CommandOutcome<E> {
    /// The durable result: version, event metadata, consistency token. A repeated
    /// submission of the same command id returns the receipt of the first one.
    pub receipt: CommandReceipt,
    /// The events this call committed; empty when the call was deduplicated or the
    /// command decided no events.
    pub events: Vec<EventEnvelope<E>>,
    /// True when the command id had been processed before and nothing ran now.
    pub deduplicated: bool,
    /// Attempts this call made (conflicts cause retries).
    pub attempts: u32,
}

impl<E> CommandOutcome<E> {
    /// Aggregate version after the command.
    pub fn version(&self) -> u64 {
        self.receipt.version
    }

    /// Token a reader can use to wait for the read side.
    pub fn consistency_token(&self) -> &ConsistencyToken {
        &self.receipt.consistency_token
    }
}

/// What [`CommandHandler::execute`] returns: infrastructure errors outside, domain
/// errors inside, so callers can never confuse a rule violation with an outage.
pub type CommandResult<A> =
    Result<Result<CommandOutcome<<A as Aggregate>::Event>, <A as Aggregate>::Error>, CommandError>;

/// Runs commands against aggregates kept in a store.
///
/// `execute` loads the aggregate, lets it decide, and commits events, state, outbox rows
/// and the command receipt in one atomic step. A concurrency conflict re-runs the command
/// on fresh state per the [`RetryPolicy`]; a repeated command id returns the first result.
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
/// # enum CounterError { #[error("cannot add zero")] Zero }
/// # impl Aggregate for Counter {
/// #     const TYPE: &'static str = "Counter";
/// #     type Command = CounterCommand; type Event = CounterEvent; type Error = CounterError;
/// #     fn handle(&self, c: &CounterCommand) -> Result<Vec<CounterEvent>, CounterError> {
/// #         match c { CounterCommand::Add(0) => Err(CounterError::Zero), CounterCommand::Add(n) => Ok(vec![CounterEvent::Added { by: *n }]) }
/// #     }
/// #     fn apply(&mut self, e: &CounterEvent) { match e { CounterEvent::Added { by } => self.value += by } }
/// # }
/// use cqrs_core::{CommandHandler, CommandMetadata, InMemoryStore, PersistenceMode};
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let handler = CommandHandler::new(InMemoryStore::<Counter>::new(PersistenceMode::event_sourced()));
/// let meta = CommandMetadata::new();
///
/// let first = handler.execute("c-1", &CounterCommand::Add(2), meta.clone()).await?.unwrap();
/// assert_eq!(first.version(), 1);
///
/// // Same command id again: applied once, same result.
/// let again = handler.execute("c-1", &CounterCommand::Add(2), meta).await?.unwrap();
/// assert!(again.deduplicated);
/// assert_eq!(again.receipt, first.receipt);
///
/// // A rule violation is a domain error, inside the Ok.
/// let rejected = handler.execute("c-1", &CounterCommand::Add(0), CommandMetadata::new()).await?;
/// assert_eq!(rejected.unwrap_err(), CounterError::Zero);
/// # Ok::<(), cqrs_core::CommandError>(())
/// # }).unwrap();
/// ```
pub struct CommandHandler<A, S> {
    store: S,
    retry: RetryPolicy,
    _aggregate: PhantomData<fn() -> A>,
}

impl<A, S> CommandHandler<A, S>
where
    A: Aggregate,
    S: AggregateStore<A>,
{
    /// A handler with the default retry policy.
    pub fn new(store: S) -> Self {
        CommandHandler {
            store,
            retry: RetryPolicy::default(),
            _aggregate: PhantomData,
        }
    }

    /// Replaces the retry policy.
    pub fn with_retry_policy(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// The store, for reads such as [`AggregateStore::load`].
    pub fn store(&self) -> &S {
        &self.store
    }

    /// Runs `command` on aggregate `aggregate_id`.
    pub async fn execute(
        &self,
        aggregate_id: &str,
        command: &A::Command,
        metadata: CommandMetadata,
    ) -> CommandResult<A> {
        validate_type_name(A::TYPE).map_err(CommandError::InvalidCommand)?;
        validate_aggregate_id(aggregate_id).map_err(CommandError::InvalidCommand)?;
        if let Some(tenant) = &metadata.tenant_id
            && (tenant.is_empty() || tenant.len() > 128 || tenant.chars().any(char::is_control))
        {
            return Err(CommandError::InvalidCommand(
                "tenant id must be 1-128 bytes without control characters".into(),
            ));
        }

        // The receipt check and the first load: one round trip where the store can.
        let mut first = match self
            .store
            .load_for_command(aggregate_id, metadata.command_id)
            .await?
        {
            ForCommand::Processed(receipt) => return Ok(Ok(deduplicated(receipt, 0))),
            ForCommand::Ready(loaded) => Some(loaded),
        };

        let mut attempt = 0;
        loop {
            attempt += 1;
            let loaded = match first.take() {
                Some(loaded) => loaded,
                None => self.store.load(aggregate_id).await?,
            };
            let mut state = loaded.state;
            let decided = match state.handle(command) {
                Ok(events) => events,
                Err(domain) => return Ok(Err(domain)),
            };
            let (new_events, envelopes) =
                stamp::<A>(aggregate_id, loaded.version, &metadata, decided)?;
            for envelope in &envelopes {
                state.apply(&envelope.payload);
            }
            let version = loaded.version + envelopes.len() as u64;
            let receipt = CommandReceipt {
                command_id: metadata.command_id,
                aggregate_type: A::TYPE.to_owned(),
                aggregate_id: aggregate_id.to_owned(),
                version,
                events: envelopes.iter().map(|e| e.metadata.clone()).collect(),
                consistency_token: ConsistencyToken::new(A::TYPE, aggregate_id, version),
                processed_at: Utc::now(),
            };
            if new_events.is_empty() {
                // Nothing decided, nothing to make durable: running it again is harmless.
                return Ok(Ok(CommandOutcome {
                    receipt,
                    events: envelopes,
                    deduplicated: false,
                    attempts: attempt,
                }));
            }
            let commit = Commit {
                aggregate_id,
                expected_version: loaded.version,
                events: &new_events,
                state: &state,
                receipt: &receipt,
            };
            match self.store.commit(commit).await {
                Ok(()) => {
                    return Ok(Ok(CommandOutcome {
                        receipt,
                        events: envelopes,
                        deduplicated: false,
                        attempts: attempt,
                    }));
                }
                Err(StoreError::Conflict { .. }) if attempt < self.retry.max_attempts => {
                    tokio::time::sleep(self.retry.delay(attempt)).await;
                }
                Err(StoreError::Conflict { .. }) => {
                    return Err(CommandError::Conflict {
                        aggregate_type: A::TYPE.to_owned(),
                        aggregate_id: aggregate_id.to_owned(),
                        attempts: attempt,
                    });
                }
                Err(StoreError::DuplicateCommand { command_id }) => {
                    // A concurrent submission of the same command won; return its result.
                    let receipt = self.store.find_receipt(command_id).await?.ok_or_else(|| {
                        StoreError::InvalidInput(format!(
                            "command {command_id} reported as duplicate but has no receipt"
                        ))
                    })?;
                    return Ok(Ok(deduplicated(receipt, attempt)));
                }
                Err(other) => return Err(other.into()),
            }
        }
    }
}

fn deduplicated<E>(receipt: CommandReceipt, attempts: u32) -> CommandOutcome<E> {
    CommandOutcome {
        receipt,
        events: Vec::new(),
        deduplicated: true,
        attempts,
    }
}

/// Decided events in their stored form and as envelopes for the caller.
type Stamped<E> = (Vec<NewEvent>, Vec<EventEnvelope<E>>);

/// Gives decided events their metadata and serialized form.
fn stamp<A: Aggregate>(
    aggregate_id: &str,
    version: u64,
    command: &CommandMetadata,
    events: Vec<A::Event>,
) -> Result<Stamped<A::Event>, StoreError> {
    let mut new_events = Vec::with_capacity(events.len());
    let mut envelopes = Vec::with_capacity(events.len());
    for (offset, event) in events.into_iter().enumerate() {
        let metadata = EventMetadata::for_command(
            command,
            A::TYPE,
            aggregate_id,
            version + offset as u64 + 1,
            event.event_type(),
            event.event_version(),
        );
        let payload = serde_json::to_value(&event).map_err(|source| StoreError::Serialize {
            what: format!("event {}", event.event_type()),
            source,
        })?;
        new_events.push(NewEvent {
            metadata: metadata.clone(),
            payload,
        });
        envelopes.push(EventEnvelope {
            metadata,
            payload: event,
        });
    }
    Ok((new_events, envelopes))
}
