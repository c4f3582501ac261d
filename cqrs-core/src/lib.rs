//! # cqrs-core
//!
//! The storage-independent heart of a CQRS service: aggregates that decide events from
//! commands, domain events with metadata, a command handler with optimistic concurrency,
//! idempotent command ids and consistency tokens, upcasting of old event versions, an
//! in-memory store, a given/when/then test kit, and the read-model and projection traits
//! the read side implements.
//!
//! No I/O happens here. `cqrs-postgres` stores aggregates in PostgreSQL, `cqrs-mongo`
//! keeps read models in MongoDB, and the `sync-service` projects Debezium change events
//! between them.
//!
//! ```
//! use cqrs_core::{Aggregate, CommandHandler, CommandMetadata, DomainEvent, InMemoryStore, PersistenceMode};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Debug, Default, Serialize, Deserialize)]
//! struct Account { open: bool, balance: i64 }
//!
//! enum AccountCommand { Open, Deposit(i64) }
//!
//! #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
//! enum AccountEvent { Opened, Deposited { amount: i64 } }
//!
//! impl DomainEvent for AccountEvent {
//!     fn event_type(&self) -> &'static str {
//!         match self { AccountEvent::Opened => "AccountOpened", AccountEvent::Deposited { .. } => "MoneyDeposited" }
//!     }
//! }
//!
//! #[derive(Debug, PartialEq, thiserror::Error)]
//! enum AccountError {
//!     #[error("account is not open")] NotOpen,
//!     #[error("amount must be positive")] NotPositive,
//! }
//!
//! impl Aggregate for Account {
//!     const TYPE: &'static str = "Account";
//!     type Command = AccountCommand;
//!     type Event = AccountEvent;
//!     type Error = AccountError;
//!
//!     fn handle(&self, command: &AccountCommand) -> Result<Vec<AccountEvent>, AccountError> {
//!         match command {
//!             AccountCommand::Open => Ok(vec![AccountEvent::Opened]),
//!             AccountCommand::Deposit(_) if !self.open => Err(AccountError::NotOpen),
//!             AccountCommand::Deposit(n) if *n <= 0 => Err(AccountError::NotPositive),
//!             AccountCommand::Deposit(n) => Ok(vec![AccountEvent::Deposited { amount: *n }]),
//!         }
//!     }
//!
//!     fn apply(&mut self, event: &AccountEvent) {
//!         match event {
//!             AccountEvent::Opened => self.open = true,
//!             AccountEvent::Deposited { amount } => self.balance += amount,
//!         }
//!     }
//! }
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let handler = CommandHandler::new(InMemoryStore::<Account>::new(PersistenceMode::event_sourced()));
//! handler.execute("acc-1", &AccountCommand::Open, CommandMetadata::new()).await.unwrap().unwrap();
//! let outcome = handler.execute("acc-1", &AccountCommand::Deposit(10), CommandMetadata::new()).await.unwrap().unwrap();
//! assert_eq!(outcome.version(), 2);
//! assert_eq!(outcome.consistency_token().to_string(), "Account:2:acc-1");
//! # });
//! ```

mod aggregate;
pub mod backoff;
mod command;
mod consistency;
mod event;
mod handler;
mod memory;
pub mod outbox;
mod read_model;
mod secret;
mod store;
mod testing;
mod trace;
mod upcast;

pub use aggregate::{Aggregate, Rejected};
pub use command::CommandMetadata;
pub use consistency::{ConsistencyToken, InvalidToken, SourceVersion};
/// `#[derive(DomainEvent)]`: see [`cqrs_derive::DomainEvent`](derive@cqrs_derive::DomainEvent).
pub use cqrs_derive::DomainEvent;
pub use event::{DomainEvent, EventEnvelope, EventMetadata, NewEvent, StoredMetadata};
pub use handler::{CommandError, CommandHandler, CommandOutcome, CommandResult, RetryPolicy};
pub use memory::InMemoryStore;
pub use read_model::{ChildChange, Projection, ReadModel, ReadModelWrite, Target};
pub use secret::Secret;
pub use store::{
    AggregateStore, CommandReceipt, Commit, ForCommand, Loaded, OutboxMessage, PersistenceMode,
    StoreError,
};
pub use testing::{Given, TestFramework, Then};
pub use trace::{InvalidTraceContext, TraceContext};
pub use upcast::{RawEvent, UpcastError, Upcaster, Upcasters};

/// Validation helpers shared with the storage crates.
pub mod validate {
    /// Checks an aggregate type name: 1-64 characters of `[A-Za-z0-9_-]`.
    ///
    /// ```
    /// assert!(cqrs_core::validate::aggregate_type("Order").is_ok());
    /// assert!(cqrs_core::validate::aggregate_type("Order; DROP").is_err());
    /// ```
    pub fn aggregate_type(name: &str) -> Result<(), String> {
        crate::aggregate::validate_type_name(name)
    }

    /// Checks an aggregate id: 1-256 bytes, no control characters.
    ///
    /// ```
    /// assert!(cqrs_core::validate::aggregate_id("order-1").is_ok());
    /// assert!(cqrs_core::validate::aggregate_id("").is_err());
    /// ```
    pub fn aggregate_id(id: &str) -> Result<(), String> {
        crate::aggregate::validate_aggregate_id(id)
    }
}
