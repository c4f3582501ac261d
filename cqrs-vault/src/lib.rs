#![doc = include_str!("../README.md")]

mod backoff;
mod client;
mod config;
mod error;
mod kv;
mod lease;
mod metrics;

pub use client::{TokenInfo, VaultClient};
pub use config::{Auth, RetryOptions, SecretSource, VaultConfig};
pub use cqrs_core::Secret;
pub use error::{Result, VaultError};
pub use kv::{KvOptions, KvSecret, KvVersion};
pub use lease::{DatabaseLease, DbCredentials, LeaseCheck, LeaseOptions};
pub use metrics::VaultMetrics;
