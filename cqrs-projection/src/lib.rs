#![doc = include_str!("../README.md")]

mod change;
mod children;
mod error;
mod event;
mod outbox;
mod projection;
mod row;
mod state;
mod write;

pub use change::{Change, Op, Snapshot, Source, TransactionInfo};
pub use children::{ChildProjection, children};
pub use error::ProjectionError;
pub use event::{EVENTS_TABLE, EventChange};
pub use outbox::OutboxChange;
pub use projection::{
    ChangeProjection, EventProjection, OutboxHandler, OutboxProjection, StateProjection, StateView,
    events, outbox, raw, state, state_view,
};
pub use row::to_json;
pub use state::{AGGREGATES_TABLE, StateChange};
pub use write::Write;

pub use cqrs_mongo::{GuardedWrite, MongoWrite, Patch};
