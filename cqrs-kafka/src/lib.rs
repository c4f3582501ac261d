//! # cqrs-kafka
//!
//! The Kafka consumer loop of the cqrs toolkit, shared by the `sync-service` (Debezium
//! change topics into MongoDB) and `cqrs-saga` (outbox events into commands):
//!
//! * **order per partition**: every record of a partition goes to the same worker
//!   ([`worker_of`]), which hands them to the [`Handler`] in consecutive batches;
//! * **offsets stored once settled**: a batch's offsets ([`next_offsets`]) are stored only
//!   after the handler returned (a [`Halt`] stores those of the records it settled), and
//!   committed by librdkafka's timer ([`LoopConfig::commit_interval`]) and at shutdown;
//! * **clean hand-offs**: before partitions are revoked, the loop waits (up to
//!   [`LoopConfig::revoke_flush_timeout`]) for the workers to settle what they hold and
//!   commits, so the next owner starts after the last settled record;
//! * **graceful shutdown**: stop fetching, settle what is queued, commit;
//! * **hooks**: an [`Observer`] hears of assignments, revocations and per-partition lag
//!   (librdkafka statistics), and [`LoopStatus`] tells readiness probes whether partitions
//!   are assigned and whether work is stuck.
//!
//! Handlers see [`Record`]s, not `rdkafka` messages: what runs behind the loop is tested
//! with records built in memory.
//!
//! ```no_run
//! use std::sync::Arc;
//! use cqrs_kafka::{ConsumerLoop, Halt, Handler, LoopConfig, Record};
//! use tokio_util::sync::CancellationToken;
//!
//! struct Count(std::sync::atomic::AtomicUsize);
//!
//! impl Handler for Count {
//!     type Error = std::convert::Infallible;
//!     async fn handle(&self, batch: &[Record], _stop: &CancellationToken) -> Result<(), Halt<Self::Error>> {
//!         self.0.fetch_add(batch.len(), std::sync::atomic::Ordering::Relaxed);
//!         Ok(())
//!     }
//! }
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let mut client = rdkafka::ClientConfig::new();
//! client.set("bootstrap.servers", "127.0.0.1:9092").set("group.id", "counter");
//! let shutdown = CancellationToken::new();
//! let consumer = ConsumerLoop::subscribe(client, LoopConfig::new(["orders"]), Arc::new(()), &shutdown)?;
//! consumer.run(Count(Default::default())).await?;
//! # Ok(()) }
//! ```

mod consumer;
mod context;
mod observer;
mod offsets;
mod record;
mod status;
mod worker;

pub use consumer::{ConsumerLoop, LoopConfig, LoopError};
pub use context::is_missing_topic;
pub use observer::{Observer, PartitionLag};
pub use offsets::{Offsets, next_offsets, worker_of};
pub use record::{Header, Record};
pub use status::LoopStatus;
pub use worker::{BatchSettings, Halt, Handler};

#[cfg(test)]
mod tests;
