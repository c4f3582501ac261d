//! Typed MongoDB read models for the cqrs-toolkit: version-guarded idempotent writes,
//! tombstones, bulk writes with per-item results, queries with keyset pagination, index
//! management, projection checkpoints and consistency waits.
//!
//! | concept | module |
//! |---|---|
//! | connection, TLS, pool, credential rotation | [`client`] |
//! | typed read model, [`Versioned`] reads, version encoding | [`model`] |
//! | typed queries and writes on one model | [`repository`] |
//! | version-guarded single writes, tombstones | [`guard`] |
//! | child rows embedded in their parent's document | [`children`] |
//! | batched guarded writes across collections (the sync-service's API) | [`bulk`] |
//! | index creation and verification | [`indexes`] |
//! | projection checkpoints | [`checkpoint`] |
//! | consistency waits | [`wait`] |
//! | errors | [`errors`] |
//!
//! ```no_run
//! use cqrs_core::{ReadModel, SourceVersion};
//! use cqrs_mongo::{Filter, MongoClient, MongoReadModel, Query};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Debug, Serialize, Deserialize)]
//! struct Account {
//!     #[serde(rename = "_id")]
//!     id: String,
//!     owner: String,
//!     balance: i64,
//! }
//!
//! impl ReadModel for Account {
//!     type Id = String;
//!     const COLLECTION: &'static str = "accounts";
//!     fn id(&self) -> String { self.id.clone() }
//! }
//! impl MongoReadModel for Account {}
//!
//! # async fn demo() -> cqrs_mongo::Result<()> {
//! let mongo = MongoClient::from_uri("mongodb://127.0.0.1:27017/bank?directConnection=true").await?;
//! let accounts = mongo.repository::<Account>();
//! accounts.ensure_indexes().await?;
//!
//! let acc = Account { id: "a-1".into(), owner: "ann".into(), balance: 10 };
//! accounts.replace(&acc, SourceVersion::new(2)).await?;      // Applied
//! accounts.replace(&acc, SourceVersion::new(1)).await?;      // Stale: older
//! let found = accounts.get("a-1").await?.expect("written");
//! assert_eq!(found.version, SourceVersion::new(2));
//! let rich = accounts.find(&Query::new(Filter::gte("balance", 5))).await?;
//! # Ok(()) }
//! ```

pub mod bulk;
pub mod checkpoint;
pub mod children;
pub mod client;
pub mod errors;
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
pub use client::{Credentials, MongoClient, MongoConfig, PoolConfig, Secret, TlsConfig};
pub use errors::{Error, Result};
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
