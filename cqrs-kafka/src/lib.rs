#![doc = include_str!("../README.md")]

mod consumer;
mod context;
mod dispatch;
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
