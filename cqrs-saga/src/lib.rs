//! # cqrs-saga
//!
//! Process managers and sagas for the cqrs toolkit: a service reacts to the integration
//! events other services publish through their transactional outbox (`cqrs-postgres`
//! writes the outbox rows, Debezium's outbox event router publishes them to
//! `outbox.event.<AggregateType>`), by running its own commands.
//!
//! * [`IntegrationEvent`]: an outbox record decoded (key = aggregate id, value = JSON
//!   payload, headers = event id, type, version, sequence, correlation, trace context).
//! * [`EventHandler`]: the reaction contract; [`command_id`] / [`reaction_metadata`]
//!   derive each command's idempotency key from the event id and the handler name, so a
//!   redelivered event runs nothing twice.
//! * [`Saga`] + [`SagaHandler`]: the common case, declared: steps (event -> command),
//!   compensations (a later step failed elsewhere -> undo here) and local compensation
//!   when a step's command is refused by the domain.
//! * [`SagaRunner`]: the Kafka consumer loop (`cqrs-kafka`'s, shared with the
//!   sync-service): one worker per partition set, events of a partition (hence of an
//!   aggregate) handled in order, transient failures retried before moving on, offsets
//!   stored only after the commands committed and committed before a revocation.
//!
//! ```no_run
//! use cqrs_core::{Aggregate, CommandHandler, DomainEvent, PersistenceMode};
//! use cqrs_postgres::{PgPool, PostgresConfig, PostgresStore};
//! use cqrs_saga::{Command, RunnerConfig, Saga, SagaHandler, SagaRunner};
//! use serde::{Deserialize, Serialize};
//! use tokio_util::sync::CancellationToken;
//! # #[derive(Debug, Default, Serialize, Deserialize)] struct Order;
//! # #[derive(Debug, Clone, PartialEq)] enum OrderCommand { Cancel }
//! # #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)] struct OrderEvent;
//! # impl DomainEvent for OrderEvent { fn event_type(&self) -> &'static str { "OrderCancelled" } }
//! # #[derive(Debug, thiserror::Error)] #[error("refused")] struct OrderError;
//! # impl Aggregate for Order {
//! #     const TYPE: &'static str = "Order";
//! #     type Command = OrderCommand; type Event = OrderEvent; type Error = OrderError;
//! #     fn handle(&self, _: &OrderCommand) -> Result<Vec<OrderEvent>, OrderError> { Ok(vec![OrderEvent]) }
//! #     fn apply(&mut self, _: &OrderEvent) {}
//! # }
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let pool = PgPool::new(&PostgresConfig::from_url(&std::env::var("DATABASE_URL")?, "orders")?)?;
//! let orders = CommandHandler::new(PostgresStore::<Order>::new(&pool, PersistenceMode::StateStored)?);
//!
//! // Stock rejected elsewhere -> cancel the order here (compensation).
//! let saga = Saga::<Order>::new("orders").compensate("Warehouse", "StockRejected", |e| {
//!     let order_id = e.payload["order_id"].as_str().unwrap_or_default().to_owned();
//!     Ok(Some(Command::new(order_id, OrderCommand::Cancel)))
//! });
//!
//! SagaRunner::new(RunnerConfig::new("127.0.0.1:9092", "orders-reactions"))
//!     .with_handler(SagaHandler::new(saga, orders))
//!     .run(CancellationToken::new())
//!     .await?;
//! # Ok(()) }
//! ```

mod handler;
mod reactions;
mod runner;
mod saga;

/// Integration events are decoded by `cqrs-core`'s outbox decoder, shared with the
/// sync-service: one definition of the outbox format next to the writer's.
pub use cqrs_core::outbox::{DecodeError, IntegrationEvent, Position, TOPIC_PREFIX, outbox_topic};
pub use handler::{
    COMMAND_ID_NAMESPACE, EventHandler, Handled, HandlerError, command_id, reaction_metadata,
};
pub use runner::{PoisonPolicy, RunnerConfig, RunnerError, RunnerStats, SagaRunner};
pub use saga::{Command, Saga, SagaError, SagaHandler};
