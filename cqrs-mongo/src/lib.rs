#![doc = include_str!("../README.md")]

pub mod bulk;
pub mod checkpoint;
pub mod children;
pub mod client;
pub mod error;
mod fill;
pub mod guard;
pub mod indexes;
pub mod layout;
pub mod model;
pub mod repository;
#[cfg(feature = "vault")]
pub mod vault;
pub mod wait;

pub use bson;
/// `#[derive(ReadModel)]`: implements `cqrs_core::ReadModel` and [`MongoReadModel`] for a
/// document struct; see [`cqrs_derive::ReadModel`](derive@cqrs_derive::ReadModel).
pub use cqrs_derive::ReadModel;
pub use mongodb;
pub use mongodb::IndexModel;

pub use bulk::{BulkOptions, BulkResult, BulkStrategy, BulkWriter, ItemError, ItemOutcome};
pub use checkpoint::{Checkpoint, CheckpointStore, CheckpointUpdate};
pub use client::{MongoClient, MongoConfig, MongoCredentials, PoolConfig, Secret, TlsConfig};
pub use error::{MongoError, Result};
pub use guard::WriteOutcome;
pub use layout::Layout;
pub use model::{GuardedWrite, MongoReadModel, VersionFields, Versioned};
pub use repository::{Field, Filter, Page, PageCursor, Patch, Query, Repository, Sort};
pub use wait::Waited;

/// The write type the sync-service hands to [`BulkWriter::write`].
///
/// ```
/// use cqrs_core::{SourceVersion, Target};
/// use cqrs_mongo::{bson::Bson, MongoWrite};
/// let w: MongoWrite = cqrs_core::ReadModelWrite::Delete {
///     target: Target::collection("c"), id: Bson::from(1), version: SourceVersion::new(1),
/// };
/// ```
pub type MongoWrite = cqrs_core::ReadModelWrite<bson::Bson, bson::Document>;
