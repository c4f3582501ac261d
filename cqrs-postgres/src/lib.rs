//! # cqrs-postgres
//!
//! The write side of a CQRS service on PostgreSQL, behind cqrs-core's
//! [`AggregateStore`](cqrs_core::AggregateStore) trait:
//!
//! * [`PostgresConfig`] and [`PgPool`]: a deadpool-postgres pool with TLS (rustls) and
//!   credentials read from a [`CredentialProvider`] each time a connection opens, so that
//!   leased credentials can rotate at run time.
//! * One schema per service ([`SchemaName`], validated before it reaches SQL, always
//!   quoted), created and upgraded by embedded, versioned, checksummed migrations
//!   ([`Migrator`]) that are safe to run concurrently and repeatedly.
//! * [`ServiceRole`]: a least-privilege role per service schema.
//! * [`PostgresStore`]: event-sourced (with snapshots) or state-stored aggregates,
//!   optimistic concurrency, idempotent commands and a transactional outbox in the layout
//!   Debezium's outbox event router expects ([`outbox`]), one transaction per command.
//!
//! The SQL lives in the crate's `sql/` directory and is compiled in.
//!
//! ```no_run
//! use cqrs_core::{CommandHandler, CommandMetadata, PersistenceMode};
//! use cqrs_postgres::{PgPool, PostgresConfig, PostgresStore};
//! # use cqrs_core::{Aggregate, DomainEvent};
//! # use serde::{Deserialize, Serialize};
//! # #[derive(Debug, Default, Serialize, Deserialize)]
//! # struct Account { balance: i64 }
//! # enum AccountCommand { Deposit(i64) }
//! # #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
//! # enum AccountEvent { Deposited { amount: i64 } }
//! # impl DomainEvent for AccountEvent { fn event_type(&self) -> &'static str { "MoneyDeposited" } }
//! # #[derive(Debug, PartialEq, thiserror::Error)]
//! # enum AccountError { #[error("amount must be positive")] NotPositive }
//! # impl Aggregate for Account {
//! #     const TYPE: &'static str = "Account";
//! #     type Command = AccountCommand; type Event = AccountEvent; type Error = AccountError;
//! #     fn handle(&self, c: &AccountCommand) -> Result<Vec<AccountEvent>, AccountError> {
//! #         match c { AccountCommand::Deposit(n) if *n <= 0 => Err(AccountError::NotPositive), AccountCommand::Deposit(n) => Ok(vec![AccountEvent::Deposited { amount: *n }]) }
//! #     }
//! #     fn apply(&mut self, e: &AccountEvent) { match e { AccountEvent::Deposited { amount } => self.balance += amount } }
//! # }
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let config = PostgresConfig::from_url(&std::env::var("DATABASE_URL")?, "accounts")?;
//! let pool = PgPool::new(&config)?;
//! pool.migrate().await?;
//!
//! let store = PostgresStore::<Account>::new(&pool, PersistenceMode::event_sourced().with_snapshots_every(50))?;
//! let handler = CommandHandler::new(store);
//! let outcome = handler
//!     .execute("acc-1", &AccountCommand::Deposit(10), CommandMetadata::new())
//!     .await?  // infrastructure error (conflicts exhausted, database down)
//!     ?;       // domain error (the command was refused)
//! assert_eq!(outcome.consistency_token().to_string(), format!("Account:{}:acc-1", outcome.version()));
//! # Ok(()) }
//! ```

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

pub use config::{PoolOptions, PostgresConfig};
pub use credentials::{
    CredentialProvider, Credentials, Secret, StaticCredentials, SwappableCredentials,
};
pub use error::PostgresError;
pub use migrations::{Migration, MigrationReport, Migrator};
pub use pool::{CREDENTIAL_WAIT, PgPool};
pub use roles::{RoleOutcome, ServiceRole};
pub use schema::{RoleName, SchemaName};
pub use store::PostgresStore;
pub use tls::TlsMode;

/// Re-exported so that users can name the pooled connection type without depending on
/// deadpool-postgres themselves.
pub use deadpool_postgres;
/// Re-exported for the same reason as [`deadpool_postgres`].
pub use tokio_postgres;
