#![doc = include_str!("../README.md")]

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
