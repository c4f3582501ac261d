#![doc = include_str!("../README.md")]

mod config;
mod credentials;
mod error;
mod migrations;
pub mod outbox;
mod pool;
mod roles;
mod schema;
mod store;
mod tls;
#[cfg(feature = "vault")]
pub mod vault;

pub use config::{PoolConfig, PostgresConfig};
pub use credentials::{
    CredentialProvider, Credentials, Secret, StaticCredentials, SwappableCredentials,
};
pub use error::PostgresError;
pub use migrations::{Migration, MigrationReport, Migrator};
pub use pool::{CREDENTIAL_WAIT, PgPool};
pub use roles::{RoleOutcome, ServiceRole};
pub use schema::{RoleName, SchemaName};
pub use store::PostgresStore;
pub use tls::TlsConfig;

/// Re-exported so that users can name the pooled connection type without depending on
/// deadpool-postgres themselves.
pub use deadpool_postgres;
/// Re-exported for the same reason as [`deadpool_postgres`].
pub use tokio_postgres;
