//! The whole CDC stack of the cqrs toolkit in containers, in one call from a Rust test:
//! PostgreSQL with logical replication, Kafka, the Schema Registry, Kafka Connect with the
//! Debezium connectors RUNNING, MongoDB as a replica set and, when asked, Vault, on one
//! private Docker network, every container healthy, with ready configurations for the
//! toolkit's crates.
//!
//! ```no_run
//! use cqrs_testcontainers::CqrsStack;
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let stack = CqrsStack::shared().await?; // one per test binary, removed when it exits
//! let scope = stack.scope("orders").await?; // this test's schema, group and database
//! let pool = cqrs_postgres::PgPool::new(&scope.postgres_config()?)?;
//! pool.migrate().await?;
//! let sync = sync_service::SyncService::new(scope.sync_config()); // + your projections
//! let mongo = scope.mongo_client().await?;
//! # Ok(()) }
//! ```
//!
//! The crate's README has a complete test to paste, the images and their overrides, how
//! tests run in parallel and how the containers go away.

mod builder;
mod container;
mod endpoints;
mod error;
mod images;
mod reaper;
mod recipes;
mod runtime;
mod scope;
mod service;
mod setup;
mod stack;
mod start;
mod vault;

pub use builder::StackBuilder;
pub use container::SESSION_LABEL;
pub use endpoints::Endpoints;
pub use error::StackError;
pub use images::{Flavor, IMAGES_COMMAND_VARIABLE, ImageOrigin, ResolvedImage};
pub use reaper::{DISABLED_VARIABLE, PRIVILEGED_VARIABLE, REAPER_LABEL, SOCKET_VARIABLE};
pub use scope::{SyncServiceContainer, TestScope};
pub use service::Service;
pub use stack::CqrsStack;
pub use vault::VaultSettings;
