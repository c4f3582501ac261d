//! [`PostgresStore`]: the [`AggregateStore`] of cqrs-core on PostgreSQL.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use cqrs_core::{
    Aggregate, AggregateStore, CommandReceipt, Commit, EventEnvelope, EventMetadata, ForCommand,
    Loaded, PersistenceMode, StoreError, StoredMetadata, Upcasters,
};
use futures::future::OptionFuture;
use serde_json::Value;
use tokio_postgres::Row;
use tokio_postgres::types::{Json, ToSql};
use uuid::Uuid;

use crate::error::{
    CommitContext, PostgresError, commit_error, stale_store_error, store_error, store_pool_error,
};
use crate::outbox::span_context_properties;
use crate::pool::PgPool;
use crate::schema::{SchemaName, render};

/// The store's statements, with the schema substituted once at construction.
struct Statements {
    find_receipt: String,
    load_event_sourced: String,
    load_state: String,
    load_events: String,
    insert_aggregate: String,
    update_aggregate: String,
    insert_events: String,
    insert_outbox: String,
    insert_processed: String,
}

impl Statements {
    fn new(schema: &SchemaName) -> Self {
        let r = |sql| render(sql, schema);
        Statements {
            find_receipt: r(include_str!("../sql/store/find_receipt.sql")),
            load_event_sourced: r(include_str!("../sql/store/load_event_sourced.sql")),
            load_state: r(include_str!("../sql/store/load_state.sql")),
            load_events: r(include_str!("../sql/store/load_events.sql")),
            insert_aggregate: r(include_str!("../sql/store/insert_aggregate.sql")),
            update_aggregate: r(include_str!("../sql/store/update_aggregate.sql")),
            insert_events: r(include_str!("../sql/store/insert_events.sql")),
            insert_outbox: r(include_str!("../sql/store/insert_outbox.sql")),
            insert_processed: r(include_str!("../sql/store/insert_processed_command.sql")),
        }
    }
}

/// Stores aggregates of type `A` in the service schema of a [`PgPool`].
///
/// * **Persistence mode** per aggregate type ([`PersistenceMode`]): event-sourced (events
///   in `events`, the state rebuilt from them, a snapshot in `aggregates` every N events)
///   or state-stored (the state in `aggregates`, events only in the outbox).
/// * **One command = one transaction**: the receipt (`processed_commands`), the version
///   check and new state or snapshot (`aggregates`), the events and the outbox rows are
///   written together or not at all. The statements of a commit are pipelined: one round
///   trip for `BEGIN`, one for all the writes, one for `COMMIT`.
/// * **Optimistic concurrency**: `UPDATE aggregates ... WHERE version = expected` (an
///   `INSERT` for a new aggregate); the unique `(aggregate_type, aggregate_id, sequence)`
///   of `events` is the second guard. A lost race is [`StoreError::Conflict`]; a command
///   id committed before is [`StoreError::DuplicateCommand`]; a lost connection is
///   [`StoreError::Backend`] with `transient: true`.
/// * **Upcasting**: stored events go through the [`Upcasters`] before being decoded.
/// * **Outbox** rows for every event (on by default; [`PostgresStore::with_outbox`]).
///
/// Statements are prepared once per connection and cached. Clones share the pool.
///
/// ```no_run
/// use cqrs_core::{CommandHandler, CommandMetadata, PersistenceMode, RetryPolicy};
/// use cqrs_postgres::{PgPool, PostgresConfig, PostgresStore};
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
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let config = PostgresConfig::from_url(&std::env::var("DATABASE_URL")?, "counters")?;
/// let pool = PgPool::new(&config)?;
/// pool.migrate().await?;
///
/// let store = PostgresStore::<Counter>::new(&pool, PersistenceMode::event_sourced().with_snapshots_every(100))?;
/// let handler = CommandHandler::new(store).with_retry_policy(RetryPolicy::default());
/// let outcome = handler.execute("c-1", &CounterCommand::Add(5), CommandMetadata::new()).await??;
/// println!("now at version {}, token {}", outcome.version(), outcome.consistency_token());
/// # Ok(()) }
/// ```
pub struct PostgresStore<A> {
    pool: PgPool,
    sql: Arc<Statements>,
    mode: PersistenceMode,
    upcasters: Arc<Upcasters>,
    outbox: bool,
    _aggregate: PhantomData<fn() -> A>,
}

impl<A> Clone for PostgresStore<A> {
    fn clone(&self) -> Self {
        PostgresStore {
            pool: self.pool.clone(),
            sql: Arc::clone(&self.sql),
            mode: self.mode,
            upcasters: Arc::clone(&self.upcasters),
            outbox: self.outbox,
            _aggregate: PhantomData,
        }
    }
}

impl<A> fmt::Debug for PostgresStore<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresStore")
            .field("schema", &self.pool.schema().as_str())
            .field("mode", &self.mode)
            .field("upcasters", &self.upcasters)
            .field("outbox", &self.outbox)
            .finish()
    }
}

impl<A: Aggregate> PostgresStore<A> {
    /// A store of state-stored aggregates: `new(pool, PersistenceMode::StateStored)`.
    ///
    /// ```no_run
    /// # use cqrs_core::{Aggregate, DomainEvent};
    /// # #[derive(Debug, Default, serde::Serialize, serde::Deserialize)] struct Cart;
    /// # #[derive(Debug, Clone, serde::Serialize, serde::Deserialize, DomainEvent)] struct CartEvent;
    /// # impl Aggregate for Cart { const TYPE: &'static str = "Cart"; type Command = (); type Event = CartEvent; type Error = cqrs_core::Rejected;
    /// #   fn handle(&self, _: &()) -> Result<Vec<CartEvent>, cqrs_core::Rejected> { Ok(vec![]) } fn apply(&mut self, _: &CartEvent) {} }
    /// # fn f(pool: &cqrs_postgres::PgPool) -> Result<(), cqrs_postgres::PostgresError> {
    /// let carts = cqrs_postgres::PostgresStore::<Cart>::state_stored(pool)?;
    /// # Ok(()) }
    /// ```
    pub fn state_stored(pool: &PgPool) -> Result<Self, PostgresError> {
        Self::new(pool, PersistenceMode::StateStored)
    }

    /// A store of event-sourced aggregates with the default snapshot policy:
    /// `new(pool, PersistenceMode::event_sourced())`.
    pub fn event_sourced(pool: &PgPool) -> Result<Self, PostgresError> {
        Self::new(pool, PersistenceMode::event_sourced())
    }

    /// A store for aggregates of type `A` in the pool's schema, persisted in `mode`, with
    /// the outbox on and no upcasters. Run [`PgPool::migrate`] once before using it.
    ///
    /// # Errors
    /// [`PostgresError::Config`] when `A::TYPE` is not a valid aggregate type name.
    ///
    /// ```no_run
    /// # use cqrs_core::{Aggregate, DomainEvent, PersistenceMode};
    /// # use serde::{Deserialize, Serialize};
    /// # #[derive(Debug, Default, Serialize, Deserialize)] struct Cart;
    /// # #[derive(Debug, Clone, Serialize, Deserialize)] struct CartEvent;
    /// # impl DomainEvent for CartEvent { fn event_type(&self) -> &'static str { "CartEvent" } }
    /// # #[derive(Debug, thiserror::Error)] #[error("x")] struct CartError;
    /// # impl Aggregate for Cart { const TYPE: &'static str = "Cart"; type Command = (); type Event = CartEvent; type Error = CartError;
    /// #   fn handle(&self, _: &()) -> Result<Vec<CartEvent>, CartError> { Ok(vec![]) } fn apply(&mut self, _: &CartEvent) {} }
    /// # fn f(pool: &cqrs_postgres::PgPool) -> Result<(), cqrs_postgres::PostgresError> {
    /// // State-stored: the cart row is the truth, its events only go to the outbox.
    /// let carts = cqrs_postgres::PostgresStore::<Cart>::new(pool, PersistenceMode::StateStored)?;
    /// # Ok(()) }
    /// ```
    pub fn new(pool: &PgPool, mode: PersistenceMode) -> Result<Self, PostgresError> {
        cqrs_core::validate::aggregate_type(A::TYPE).map_err(PostgresError::Config)?;
        Ok(PostgresStore {
            pool: pool.clone(),
            sql: Arc::new(Statements::new(pool.schema())),
            mode,
            upcasters: Arc::new(Upcasters::new()),
            outbox: true,
            _aggregate: PhantomData,
        })
    }

    /// Applies `upcasters` to stored events before decoding them.
    ///
    /// ```no_run
    /// # fn f<A: cqrs_core::Aggregate>(store: cqrs_postgres::PostgresStore<A>) {
    /// use cqrs_core::Upcasters;
    /// let store = store.with_upcasters(Upcasters::new().register_fn("MoneyDeposited", 1, |mut p| {
    ///     p["currency"] = "EUR".into();
    ///     Ok(p)
    /// }));
    /// # }
    /// ```
    pub fn with_upcasters(mut self, upcasters: Upcasters) -> Self {
        self.upcasters = Arc::new(upcasters);
        self
    }

    /// Turns the outbox on (the default) or off. Off, events are not published; useful
    /// for aggregates nobody outside the service listens to.
    ///
    /// ```no_run
    /// # fn f<A: cqrs_core::Aggregate>(store: cqrs_postgres::PostgresStore<A>) {
    /// let private = store.with_outbox(false);
    /// # }
    /// ```
    pub fn with_outbox(mut self, enabled: bool) -> Self {
        self.outbox = enabled;
        self
    }

    /// The persistence mode.
    ///
    /// ```no_run
    /// # fn f<A: cqrs_core::Aggregate>(store: cqrs_postgres::PostgresStore<A>) {
    /// assert!(store.mode().is_event_sourced());
    /// # }
    /// ```
    pub fn mode(&self) -> PersistenceMode {
        self.mode
    }

    /// The pool.
    ///
    /// ```no_run
    /// # fn f<A: cqrs_core::Aggregate>(store: cqrs_postgres::PostgresStore<A>) {
    /// println!("{}", store.pool().schema());
    /// # }
    /// ```
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.pool.connection().await.map_err(store_pool_error)
    }

    /// Runs `operation`, and once more on a fresh connection when it failed because its
    /// connection was dead (closed, terminated) or its credential was (login refused,
    /// role dropped by a revoked lease): see [`PgPool::on_stale_credentials`].
    ///
    /// Safe for every operation of the store: reads have no effect, and a commit that
    /// failed this way was rolled back with its connection, or, if the connection died
    /// during `COMMIT` itself, is recognised by its command id when run again
    /// ([`StoreError::DuplicateCommand`], which the handler answers with the receipt).
    async fn retrying<T, F, Fut>(&self, mut operation: F) -> Result<T, StoreError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, StoreError>>,
    {
        let seen = self.pool.credentials_generation();
        match operation().await {
            Err(e) => match stale_store_error(&e) {
                Some(kind) => {
                    tracing::warn!(
                        target: "cqrs_postgres",
                        schema = %self.pool.schema(),
                        aggregate_type = A::TYPE,
                        error = %e,
                        ?kind,
                        "connection or credential went stale; running the operation again on a fresh connection"
                    );
                    if self.pool.recover(seen, kind).await {
                        operation().await
                    } else {
                        Err(e)
                    }
                }
                None => Err(e),
            },
            ok => ok,
        }
    }

    fn decode_state(value: Value, aggregate_id: &str) -> Result<A, StoreError> {
        serde_json::from_value(value).map_err(|source| StoreError::Deserialize {
            what: format!("state of {} {aggregate_id}", A::TYPE),
            source,
        })
    }

    /// Decodes an event row whose columns start at `at`: sequence, event_id, event_type,
    /// event_version, payload, metadata, occurred_at.
    fn decode_event(
        &self,
        aggregate_id: &str,
        row: &Row,
        at: usize,
    ) -> Result<EventEnvelope<A::Event>, StoreError> {
        let read = |e| store_error("reading an event", e);
        let sequence: i64 = row.try_get(at).map_err(read)?;
        let event_id: Uuid = row.try_get(at + 1).map_err(read)?;
        let event_type: String = row.try_get(at + 2).map_err(read)?;
        let event_version: i32 = row.try_get(at + 3).map_err(read)?;
        let payload: Value = row.try_get(at + 4).map_err(read)?;
        let metadata: Option<Value> = row.try_get(at + 5).map_err(read)?;
        let occurred_at: DateTime<Utc> = row.try_get(at + 6).map_err(read)?;
        let stored: StoredMetadata = match metadata {
            Some(value) => {
                serde_json::from_value(value).map_err(|source| StoreError::Deserialize {
                    what: format!("metadata of event {event_id}"),
                    source,
                })?
            }
            None => StoredMetadata::default(),
        };
        let metadata = EventMetadata {
            event_id,
            event_type,
            event_version: u32::try_from(event_version).map_err(|_| corrupt("event_version"))?,
            aggregate_type: A::TYPE.to_owned(),
            aggregate_id: aggregate_id.to_owned(),
            sequence: u64::try_from(sequence).map_err(|_| corrupt("sequence"))?,
            occurred_at,
            correlation_id: stored.correlation_id,
            causation_id: stored.causation_id,
            tenant_id: stored.tenant_id,
            trace_context: stored.trace_context,
        };
        self.upcasters.decode(metadata, payload)
    }

    /// Loads on `client`, in the mode of the store.
    async fn load_on(
        &self,
        client: &deadpool_postgres::Object,
        aggregate_id: &str,
    ) -> Result<Loaded<A>, StoreError> {
        match self.mode {
            PersistenceMode::EventSourced { .. } => {
                self.load_event_sourced(client, aggregate_id).await
            }
            PersistenceMode::StateStored => self.load_state_stored(client, aggregate_id).await,
        }
    }

    async fn load_event_sourced(
        &self,
        client: &deadpool_postgres::Object,
        aggregate_id: &str,
    ) -> Result<Loaded<A>, StoreError> {
        let statement = prepare(client, &self.sql.load_event_sourced).await?;
        let rows = client
            .query(&statement, &[&A::TYPE, &aggregate_id])
            .await
            .map_err(|e| store_error("loading an aggregate", e))?;

        let read = |e| store_error("loading an aggregate", e);
        let Some(first) = rows.first() else {
            // No aggregates row: the aggregate does not exist yet.
            return Ok(Loaded {
                state: A::default(),
                version: 0,
            });
        };
        let recorded: i64 = first.try_get(0).map_err(read)?;
        let recorded = u64::try_from(recorded).map_err(|_| corrupt("version"))?;
        let snapshot_version: Option<i64> = first.try_get(1).map_err(read)?;
        let (mut state, mut version) = match snapshot_version {
            Some(at) => {
                let snapshot: Option<Value> = first.try_get(2).map_err(read)?;
                let snapshot = snapshot.ok_or_else(|| {
                    inconsistent(format!(
                        "{} {aggregate_id}: the event after the snapshot is missing",
                        A::TYPE
                    ))
                })?;
                (
                    Self::decode_state(snapshot, aggregate_id)?,
                    u64::try_from(at).map_err(|_| corrupt("snapshot_version"))?,
                )
            }
            None => (A::default(), 0),
        };
        for row in &rows {
            let sequence: Option<i64> = row.try_get(3).map_err(read)?;
            if sequence.is_none() {
                continue; // no event after the snapshot
            }
            let event = self.decode_event(aggregate_id, row, 3)?;
            if event.metadata.sequence != version + 1 {
                return Err(inconsistent(format!(
                    "{} {aggregate_id}: event #{} follows #{version}",
                    A::TYPE,
                    event.metadata.sequence
                )));
            }
            state.apply(&event.payload);
            version = event.metadata.sequence;
        }
        if recorded != version {
            return Err(inconsistent(format!(
                "{} {aggregate_id}: the aggregates row is at version {recorded} but the events end at {version}",
                A::TYPE,
            )));
        }
        Ok(Loaded { state, version })
    }

    async fn load_state_stored(
        &self,
        client: &deadpool_postgres::Object,
        aggregate_id: &str,
    ) -> Result<Loaded<A>, StoreError> {
        let statement = prepare(client, &self.sql.load_state).await?;
        let row = client
            .query_opt(&statement, &[&A::TYPE, &aggregate_id])
            .await
            .map_err(|e| store_error("loading an aggregate", e))?;
        let Some(row) = row else {
            return Ok(Loaded {
                state: A::default(),
                version: 0,
            });
        };
        let read = |e| store_error("loading an aggregate", e);
        let version: i64 = row.try_get(0).map_err(read)?;
        let state: Option<Value> = row.try_get(1).map_err(read)?;
        let state = state.ok_or_else(|| {
            inconsistent(format!(
                "{} {aggregate_id} has no state row (was it stored event-sourced?)",
                A::TYPE
            ))
        })?;
        Ok(Loaded {
            state: Self::decode_state(state, aggregate_id)?,
            version: u64::try_from(version).map_err(|_| corrupt("version"))?,
        })
    }
}

#[async_trait]
impl<A: Aggregate> AggregateStore<A> for PostgresStore<A> {
    async fn load(&self, aggregate_id: &str) -> Result<Loaded<A>, StoreError> {
        cqrs_core::validate::aggregate_id(aggregate_id).map_err(StoreError::InvalidInput)?;
        self.retrying(|| async {
            let client = self.client().await?;
            self.load_on(&client, aggregate_id).await
        })
        .await
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
        cqrs_core::validate::aggregate_id(aggregate_id).map_err(StoreError::InvalidInput)?;
        let after = to_i64(after_sequence, "sequence")?;
        self.retrying(|| self.load_events_once(aggregate_id, after))
            .await
    }

    async fn find_receipt(&self, command_id: Uuid) -> Result<Option<CommandReceipt>, StoreError> {
        self.retrying(|| async {
            let client = self.client().await?;
            self.find_receipt_on(&client, command_id).await
        })
        .await
    }

    /// Both queries on one connection at once: tokio-postgres pipelines them, so the
    /// idempotency check costs no round trip of its own.
    async fn load_for_command(
        &self,
        aggregate_id: &str,
        command_id: Uuid,
    ) -> Result<ForCommand<A>, StoreError> {
        cqrs_core::validate::aggregate_id(aggregate_id).map_err(StoreError::InvalidInput)?;
        self.retrying(|| async {
            let client = self.client().await?;
            let (receipt, loaded) = futures::try_join!(
                self.find_receipt_on(&client, command_id),
                self.load_on(&client, aggregate_id)
            )?;
            Ok(match receipt {
                Some(receipt) => ForCommand::Processed(receipt),
                None => ForCommand::Ready(loaded),
            })
        })
        .await
    }

    async fn commit(&self, commit: Commit<'_, A>) -> Result<(), StoreError> {
        self.retrying(|| self.commit_once(&commit)).await
    }
}

impl<A: Aggregate> PostgresStore<A> {
    async fn load_events_once(
        &self,
        aggregate_id: &str,
        after: i64,
    ) -> Result<Vec<EventEnvelope<A::Event>>, StoreError> {
        let client = self.client().await?;
        let statement = prepare(&client, &self.sql.load_events).await?;
        let rows = client
            .query(&statement, &[&A::TYPE, &aggregate_id, &after])
            .await
            .map_err(|e| store_error("loading events", e))?;
        drop(client);
        rows.iter()
            .map(|row| self.decode_event(aggregate_id, row, 0))
            .collect()
    }

    async fn find_receipt_on(
        &self,
        client: &deadpool_postgres::Object,
        command_id: Uuid,
    ) -> Result<Option<CommandReceipt>, StoreError> {
        let statement = prepare(client, &self.sql.find_receipt).await?;
        let row = client
            .query_opt(&statement, &[&command_id])
            .await
            .map_err(|e| store_error("looking up a command receipt", e))?;
        let Some(row) = row else { return Ok(None) };
        let receipt: Value = row
            .try_get(0)
            .map_err(|e| store_error("looking up a command receipt", e))?;
        serde_json::from_value(receipt)
            .map(Some)
            .map_err(|source| StoreError::Deserialize {
                what: format!("receipt of command {command_id}"),
                source,
            })
    }

    async fn commit_once(&self, commit: &Commit<'_, A>) -> Result<(), StoreError> {
        let aggregate_id = commit.aggregate_id;
        cqrs_core::validate::aggregate_id(aggregate_id).map_err(StoreError::InvalidInput)?;
        if commit.events.is_empty() {
            return Err(StoreError::InvalidInput(
                "a commit needs at least one event".into(),
            ));
        }
        for (offset, event) in commit.events.iter().enumerate() {
            let m = &event.metadata;
            if m.aggregate_type != A::TYPE
                || m.aggregate_id != aggregate_id
                || m.sequence != commit.expected_version + offset as u64 + 1
            {
                return Err(StoreError::InvalidInput(format!(
                    "event {} does not belong at position {} of {} {aggregate_id}",
                    m.event_id,
                    commit.expected_version + offset as u64 + 1,
                    A::TYPE
                )));
            }
        }
        let receipt = commit.receipt;
        let expected = to_i64(commit.expected_version, "version")?;
        let new_version = to_i64(commit.new_version(), "version")?;

        // The state goes to the row of a state-stored aggregate on every commit, to the
        // snapshot of an event-sourced one when a snapshot is due.
        let state = match self.mode {
            PersistenceMode::StateStored => true,
            PersistenceMode::EventSourced { .. } => self
                .mode
                .snapshot_due(commit.expected_version, commit.new_version()),
        };
        let state: Option<Value> = if state {
            Some(
                serde_json::to_value(commit.state).map_err(|source| StoreError::Serialize {
                    what: format!("state of {} {aggregate_id}", A::TYPE),
                    source,
                })?,
            )
        } else {
            None
        };
        let state_version = state.as_ref().map(|_| new_version);
        // Our own types, serialized straight into the wire buffer (no intermediate Value).
        let receipt_json = Json(receipt);
        // Column arrays, shared by events and outbox.
        let n = commit.events.len();
        let mut sequences = Vec::with_capacity(n);
        let mut ids = Vec::with_capacity(n);
        let mut types = Vec::with_capacity(n);
        let mut versions = Vec::with_capacity(n);
        let mut payloads = Vec::with_capacity(n);
        let mut occurred = Vec::with_capacity(n);
        for event in commit.events {
            let m = &event.metadata;
            sequences.push(to_i64(m.sequence, "sequence")?);
            ids.push(m.event_id);
            types.push(m.event_type.as_str());
            versions.push(i32::try_from(m.event_version).map_err(|_| {
                StoreError::InvalidInput(format!("event version {} is too large", m.event_version))
            })?);
            payloads.push(&event.payload);
            occurred.push(m.occurred_at);
        }
        let event_sourced = self.mode.is_event_sourced();
        let mut metadata = Vec::new();
        if event_sourced {
            metadata.reserve(n);
            for event in commit.events {
                let m = &event.metadata;
                metadata.push(Json(StoredMetadata::of(m)));
            }
        }
        let (mut spans, mut correlations, mut causations, mut tenants) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        if self.outbox {
            for event in commit.events {
                let m = &event.metadata;
                spans.push(m.trace_context.as_ref().map(span_context_properties));
                correlations.push(m.correlation_id);
                causations.push(m.causation_id);
                tenants.push(m.tenant_id.as_deref());
            }
        }

        let ctx = CommitContext {
            aggregate_type: A::TYPE,
            aggregate_id,
            expected_version: commit.expected_version,
            command_id: receipt.command_id,
        };
        let fail = |e| commit_error(&ctx, e);

        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(fail)?;
        let processed_stmt = tx
            .prepare_cached(&self.sql.insert_processed)
            .await
            .map_err(prepare_error)?;
        let aggregate_stmt = tx
            .prepare_cached(if expected == 0 {
                &self.sql.insert_aggregate
            } else {
                &self.sql.update_aggregate
            })
            .await
            .map_err(prepare_error)?;
        let events_stmt = if event_sourced {
            Some(
                tx.prepare_cached(&self.sql.insert_events)
                    .await
                    .map_err(prepare_error)?,
            )
        } else {
            None
        };
        let outbox_stmt = if self.outbox {
            Some(
                tx.prepare_cached(&self.sql.insert_outbox)
                    .await
                    .map_err(prepare_error)?,
            )
        } else {
            None
        };

        // Pipelined: the four statements go out back to back and run in this order; the
        // receipt first, so that a concurrent duplicate of the same command waits on its
        // key and reports DuplicateCommand rather than a conflict.
        let type_name: &str = A::TYPE;
        let processed_params: [&(dyn ToSql + Sync); 6] = [
            &receipt.command_id,
            &type_name,
            &aggregate_id,
            &new_version,
            &receipt_json,
            &receipt.processed_at,
        ];
        let aggregate_params: Vec<&(dyn ToSql + Sync)> = if expected == 0 {
            vec![
                &type_name,
                &aggregate_id,
                &new_version,
                &state,
                &state_version,
            ]
        } else {
            vec![
                &type_name,
                &aggregate_id,
                &expected,
                &new_version,
                &state,
                &state_version,
            ]
        };
        let events_params: [&(dyn ToSql + Sync); 9] = [
            &type_name,
            &aggregate_id,
            &sequences,
            &ids,
            &types,
            &versions,
            &payloads,
            &metadata,
            &occurred,
        ];
        let outbox_params: [&(dyn ToSql + Sync); 12] = [
            &type_name,
            &aggregate_id,
            &ids,
            &types,
            &payloads,
            &spans,
            &sequences,
            &versions,
            &occurred,
            &correlations,
            &causations,
            &tenants,
        ];
        let processed = tx.execute(&processed_stmt, &processed_params);
        let aggregate = tx.execute(&aggregate_stmt, &aggregate_params);
        let events: OptionFuture<_> = events_stmt
            .as_ref()
            .map(|stmt| tx.execute(stmt, &events_params))
            .into();
        let outbox: OptionFuture<_> = outbox_stmt
            .as_ref()
            .map(|stmt| tx.execute(stmt, &outbox_params))
            .into();
        let (processed, aggregate, events, outbox) =
            futures::join!(processed, aggregate, events, outbox);

        // The first failure in statement order is the cause; later ones only report the
        // aborted transaction.
        let outcome = (|| {
            processed.map_err(fail)?;
            if aggregate.map_err(fail)? == 0 {
                return Err(StoreError::Conflict {
                    aggregate_type: A::TYPE.to_owned(),
                    aggregate_id: aggregate_id.to_owned(),
                    expected_version: commit.expected_version,
                });
            }
            events.transpose().map_err(fail)?;
            outbox.transpose().map_err(fail)?;
            Ok(())
        })();
        match outcome {
            Ok(()) => tx.commit().await.map_err(fail),
            Err(e) => {
                // Best effort: if the connection is gone, the server rolls back anyway.
                let _ = tx.rollback().await;
                Err(e)
            }
        }
    }
}

async fn prepare(
    client: &deadpool_postgres::Object,
    sql: &str,
) -> Result<tokio_postgres::Statement, StoreError> {
    client.prepare_cached(sql).await.map_err(prepare_error)
}

fn prepare_error(e: tokio_postgres::Error) -> StoreError {
    let missing = e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE);
    let err = store_error("preparing a statement", e);
    match (missing, err) {
        (
            true,
            StoreError::Backend {
                message,
                transient,
                source,
            },
        ) => StoreError::Backend {
            message: format!("{message}; run PgPool::migrate() for this schema first"),
            transient,
            source,
        },
        (_, err) => err,
    }
}

fn to_i64(value: u64, what: &str) -> Result<i64, StoreError> {
    i64::try_from(value)
        .map_err(|_| StoreError::InvalidInput(format!("{what} {value} does not fit in a bigint")))
}

fn corrupt(column: &str) -> StoreError {
    StoreError::Backend {
        message: format!("stored {column} is out of range"),
        transient: false,
        source: None,
    }
}

fn inconsistent(message: String) -> StoreError {
    StoreError::Backend {
        message: format!("inconsistent stored aggregate: {message}"),
        transient: false,
        source: None,
    }
}
