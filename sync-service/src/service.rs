//! The service: its configuration and projections, run by [`runtime`](crate::runtime)
//! (the consumer loop, periodic tasks, HTTP endpoints, graceful shutdown).

use cqrs_core::{Aggregate, Projection, ReadModel, Target};
use cqrs_mongo::MongoReadModel;
use cqrs_projection::{
    ChildProjection, EventProjection, OutboxProjection, StateProjection, StateView,
};
use tokio_util::sync::CancellationToken;

use crate::config::SyncConfig;
use crate::envelope::Change;
use crate::map::{ChildTableProjection, MongoWrite, Projections, TableProjection};
use crate::metrics::Metrics;

/// Why the service could not start or stopped with an error. Each variant keeps the error
/// it comes from as its [`source`](std::error::Error::source).
///
/// ```
/// use std::error::Error as _;
/// use sync_service::{ServiceError, UnknownFormat};
///
/// let e = ServiceError::from(UnknownFormat("xml".into()));
/// assert!(e.to_string().starts_with("kafka.format: unknown format \"xml\""));
/// assert!(e.source().is_some_and(|s| s.is::<UnknownFormat>()));
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServiceError {
    /// The task running an embedded service panicked or was aborted.
    #[error("sync-service task: {0}")]
    Task(String),
    /// The configuration is invalid (a configuration made in code is checked at start).
    #[error("{0}")]
    Config(#[from] crate::config::ConfigError),
    /// Kafka client setup failed.
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// MongoDB setup failed.
    #[error("mongodb: {0}")]
    Mongo(#[from] cqrs_mongo::MongoError),
    /// State the service keeps in MongoDB could not be read at start.
    #[error("reading {what} from MongoDB: {source}")]
    State {
        /// What was read.
        what: &'static str,
        /// Error.
        #[source]
        source: crate::write::StoreError,
    },
    /// Dead-letter setup failed.
    #[error("dead letters: {0}")]
    DeadLetter(#[from] crate::dead_letter::DeadLetterError),
    /// `kafka.format` names no format the decoder knows.
    #[error("kafka.format: {0}")]
    Format(#[from] crate::decode::UnknownFormat),
    /// The schema registry settings are unusable.
    #[error("schema registry: {0}")]
    Registry(#[from] crate::decode::RegistryConfigError),
    /// Vault could not provide the MongoDB settings.
    #[cfg(feature = "vault")]
    #[error("vault: {0}")]
    Vault(#[from] crate::config::vault::VaultSetupError),
    /// Rebuilds could not be set up (`[rebuild]`), or a rebuild step failed.
    #[error("{0}")]
    Rebuild(#[from] crate::rebuild::RebuildError),
    /// The HTTP endpoint could not bind.
    #[error("http endpoint {listen}: {source}")]
    Http {
        /// Address.
        listen: String,
        /// Error.
        #[source]
        source: std::io::Error,
    },
}

/// The sync-service: build it from a config, add Rust projections, run it.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use sync_service::{config::SyncConfig, SyncService};
/// use tokio_util::sync::CancellationToken;
///
/// let config = SyncConfig::load("sync.toml".as_ref())?;
/// let shutdown = CancellationToken::new();
/// SyncService::new(config).run(shutdown).await?;
/// # Ok(()) }
/// ```
pub struct SyncService {
    config: SyncConfig,
    projections: Projections,
    metrics: Metrics,
}

impl SyncService {
    /// A service with the declarative projections of `config`.
    pub fn new(config: SyncConfig) -> Self {
        let mut projections = Projections::default();
        for mapping in &config.projections {
            match ChildTableProjection::new(mapping, &config.mongodb.database) {
                Some(children) => projections.add_children(children),
                None => {
                    projections.add_table(TableProjection::new(mapping, &config.mongodb.database))
                }
            }
        }
        SyncService {
            config,
            projections,
            metrics: Metrics::new(),
        }
    }

    /// The service's metrics: keep a clone to read counters while it runs (they are also
    /// served on `/metrics`).
    pub fn metrics(&self) -> Metrics {
        self.metrics.clone()
    }

    /// Adds a projection of the state of a state-stored aggregate of service schema
    /// `schema` (its `aggregates` table): typed state in, typed writes out, each write
    /// carrying the aggregate version for `Repository::wait_for`.
    ///
    /// ```no_run
    /// # use cqrs_projection::{ProjectionError, StateChange, StateProjection, Write};
    /// # #[derive(Debug, Default, serde::Serialize, serde::Deserialize)] struct Account { balance: i64 }
    /// # #[derive(Debug, thiserror::Error)] #[error("no")] struct No;
    /// # #[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)] struct Ev;
    /// # impl cqrs_core::DomainEvent for Ev { fn event_type(&self) -> &'static str { "Ev" } }
    /// # impl cqrs_core::Aggregate for Account {
    /// #     const TYPE: &'static str = "Account"; type Command = (); type Event = Ev; type Error = No;
    /// #     fn handle(&self, _: &()) -> Result<Vec<Ev>, No> { Ok(vec![]) } fn apply(&mut self, _: &Ev) {}
    /// # }
    /// # #[derive(Debug, serde::Serialize, serde::Deserialize)] struct Balance { #[serde(rename = "_id")] id: String, balance: i64 }
    /// # impl cqrs_core::ReadModel for Balance { type Id = String; const COLLECTION: &'static str = "balances"; fn id(&self) -> String { self.id.clone() } }
    /// # impl cqrs_mongo::MongoReadModel for Balance {}
    /// # struct Balances;
    /// # impl StateProjection for Balances {
    /// #     type Aggregate = Account; type Model = Balance;
    /// #     fn project(&self, a: &StateChange<Account>) -> Result<Vec<Write<Balance>>, ProjectionError> { Ok(vec![]) }
    /// # }
    /// # async fn demo() -> Result<(), sync_service::ServiceError> {
    /// use sync_service::{config::SyncConfig, SyncService};
    ///
    /// let config = SyncConfig::new("127.0.0.1:9092", "bank-read-side", "mongodb://127.0.0.1:27017", "bank")
    ///     .with_schema_registry("http://127.0.0.1:8081")
    ///     .with_topic_prefix("cqrs");
    /// let stop = tokio_util::sync::CancellationToken::new();
    /// SyncService::new(config).with_state_projection("bank", Balances).run(stop).await?;
    /// # Ok(()) }
    /// ```
    pub fn with_state_projection<P: StateProjection>(
        mut self,
        schema: &str,
        projection: P,
    ) -> Self {
        self.projections
            .add_change(cqrs_projection::state(schema, projection));
        self
    }

    /// Adds a [`StateView`]: one document of `M` per aggregate `A` of service schema
    /// `schema`, rebuilt from the aggregate's state at every command.
    pub fn with_state_view<A, M>(mut self, schema: &str) -> Self
    where
        A: Aggregate,
        M: StateView<A>,
        M::Id: From<String>,
    {
        self.projections
            .add_change(cqrs_projection::state_view::<A, M>(schema));
        self
    }

    /// Adds a projection of the events of an aggregate of service schema `schema` (its
    /// `events` table), upcast and typed.
    pub fn with_event_projection<P: EventProjection>(
        mut self,
        schema: &str,
        projection: P,
    ) -> Self {
        self.projections
            .add_change(cqrs_projection::events(schema, projection));
        self
    }

    /// Adds a projection of another service's integration events (its outbox topic).
    pub fn with_outbox_projection<P: OutboxProjection>(mut self, projection: P) -> Self {
        self.projections
            .add_outbox(cqrs_projection::outbox(projection));
        self
    }

    /// Adds a projection of child table `table` (`schema.table`) whose rows live inside
    /// their parent's document (an order's lines inside the order), each guarded by its own
    /// version: see [`ChildProjection`] and the README's "Child rows". A truncate of the
    /// table removes the children, never the parents.
    ///
    /// ```no_run
    /// # use cqrs_projection::{ChildProjection, ProjectionError};
    /// # #[derive(Debug, serde::Serialize, serde::Deserialize)] struct Order { #[serde(rename = "_id")] id: String }
    /// # impl cqrs_core::ReadModel for Order { type Id = String; const COLLECTION: &'static str = "orders"; fn id(&self) -> String { self.id.clone() } }
    /// # impl cqrs_mongo::MongoReadModel for Order {}
    /// # #[derive(serde::Deserialize)] struct Row { order_id: String, line_no: i32, qty: i32 }
    /// # #[derive(serde::Serialize)] struct Line { qty: i32 }
    /// # struct OrderLines;
    /// # impl ChildProjection for OrderLines {
    /// #     type Model = Order; type Row = Row; type Child = Line;
    /// #     fn name(&self) -> &str { "orders.lines" }
    /// #     fn field(&self) -> &str { "lines" }
    /// #     fn parent(&self, r: &Row) -> Option<String> { Some(r.order_id.clone()) }
    /// #     fn key(&self, r: &Row) -> String { r.line_no.to_string() }
    /// #     fn child(&self, r: &Row) -> Result<Line, ProjectionError> { Ok(Line { qty: r.qty }) }
    /// # }
    /// # async fn demo(config: sync_service::config::SyncConfig) -> Result<(), Box<dyn std::error::Error>> {
    /// use sync_service::SyncService;
    /// let stop = tokio_util::sync::CancellationToken::new();
    /// SyncService::new(config)
    ///     .with_child_projection("shop.order_lines", OrderLines)
    ///     .run(stop)
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn with_child_projection<P: ChildProjection>(mut self, table: &str, projection: P) -> Self
    where
        <P::Model as ReadModel>::Id: PartialEq,
    {
        let target = match <P::Model as MongoReadModel>::DATABASE {
            Some(db) => Target::in_database(db, <P::Model as ReadModel>::COLLECTION),
            None => Target::collection(<P::Model as ReadModel>::COLLECTION),
        };
        let scope = crate::map::children_scope(&target, projection.field());
        self.projections
            .add_child_change(cqrs_projection::children(table, projection), scope);
        self
    }

    /// Adds a raw Rust projection fed by `tables` (`schema.table`): BSON rows of any
    /// captured table in, writes built by hand out.
    pub fn with_projection<P>(mut self, projection: P, tables: &[&str]) -> Self
    where
        P: Projection<Input = Change, Write = MongoWrite> + 'static,
    {
        self.projections.add(projection, tables);
        self
    }

    /// Re-processes pending dead letters (after a fix) through this service's projections.
    pub async fn replay_dead_letters(
        self,
        selection: &crate::dead_letter::admin::Selection,
    ) -> Result<crate::dead_letter::admin::ReplayReport, ServiceError> {
        crate::dead_letter::admin::replay(&self.config, self.projections, selection).await
    }

    /// Runs until `shutdown` is cancelled, then settles the batches in hand and commits
    /// (see [`runtime`](crate::runtime)).
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), ServiceError> {
        let topics = subscription(&self.config, &self.projections);
        crate::runtime::run(
            self.config,
            self.projections,
            self.metrics,
            topics,
            shutdown,
        )
        .await
    }
}

/// The topics to subscribe to besides the configured ones: under `kafka.topic_prefix`,
/// those of every table a projection reads, and the outbox topics of outbox projections.
fn subscription(config: &SyncConfig, projections: &Projections) -> Vec<String> {
    let mut topics: Vec<String> = projections
        .outbox_topics()
        .into_iter()
        .map(str::to_owned)
        .collect();
    if let Some(prefix) = config
        .kafka
        .topic_prefix
        .as_deref()
        .filter(|p| !p.is_empty())
    {
        topics.extend(
            projections
                .tables()
                .into_iter()
                .map(|t| format!("{prefix}.{t}")),
        );
    }
    topics.sort();
    topics.dedup();
    topics
}
