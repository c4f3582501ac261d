//! # cqrs-vault
//!
//! Credentials from Vault or OpenBao for the services of the cqrs toolkit, instead of
//! passwords in URLs:
//!
//! * [`VaultClient`]: address, TLS CA file and namespace configurable; login by AppRole
//!   (role id + secret id, as values or files) or by token; the token is renewed ahead of
//!   expiry and an AppRole client logs in again before it reaches its maximum TTL.
//! * [`DatabaseLease`]: dynamic database credentials (`database/creds/<role>`), renewed
//!   ahead of expiry, replaced before their maximum TTL, revoked when replaced (after a
//!   grace period) and on shutdown.
//! * [`KvSecret`]: a KV v2 secret polled for new versions.
//!
//! When Vault is unreachable, everything keeps working on the current credentials until
//! they expire, retries with backoff, logs a warning and counts the failure in
//! [`VaultMetrics`]. Nothing secret is logged, put in an error or shown by `Debug`
//! ([`Secret`]).
//!
//! The cqrs-postgres and cqrs-mongo crates use this crate behind their `vault` feature.
//!
//! ```no_run
//! use cqrs_vault::{Auth, DatabaseLease, KvOptions, KvSecret, LeaseOptions, VaultClient, VaultConfig};
//!
//! # async fn run() -> Result<(), cqrs_vault::VaultError> {
//! let vault = VaultClient::connect(VaultConfig::new(
//!     "http://127.0.0.1:8200",
//!     Auth::approle_files("/work/main/.stack/vault/approle/orders"),
//! ))
//! .await?;
//! let postgres = DatabaseLease::start(&vault, "orders", LeaseOptions::default()).await?;
//! let mongo = KvSecret::start(&vault, "cqrs/orders/mongodb", KvOptions::default()).await?;
//! println!("PostgreSQL user {}, MongoDB secret v{}", postgres.current().username, mongo.current().version);
//! postgres.shutdown().await?;
//! # Ok(()) }
//! ```

mod backoff;
mod client;
mod config;
mod error;
mod kv;
mod lease;
mod metrics;
#[cfg(feature = "testkit")]
pub mod testkit;

pub use client::{TokenInfo, VaultClient};
pub use config::{Auth, RetryOptions, SecretSource, VaultConfig};
pub use cqrs_core::Secret;
pub use error::{Result, VaultError};
pub use kv::{KvOptions, KvSecret, KvVersion};
pub use lease::{DatabaseLease, DbCredentials, LeaseCheck, LeaseOptions};
pub use metrics::VaultMetrics;
