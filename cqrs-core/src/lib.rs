#![doc = include_str!("../README.md")]

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

#[cfg(test)]
mod readme {
    /// The README's later examples include doc/readme_account.rs: it must stay the
    /// aggregate the README shows in section 1.
    #[test]
    fn the_shared_aggregate_is_the_one_of_section_1() {
        let readme = include_str!("../README.md");
        let section = &readme[readme.find("## 1. Write an aggregate").expect("section 1")..];
        let start = section.find("```rust\n").expect("a rust block") + "```rust\n".len();
        let block = &section[start..start + section[start..].find("```\n").expect("its end")];
        let shared: String = include_str!("../doc/readme_account.rs")
            .lines()
            .skip_while(|l| l.starts_with("//"))
            .map(|l| format!("{l}\n"))
            .collect();
        assert_eq!(
            shared, block,
            "doc/readme_account.rs differs from README.md section 1"
        );
    }
}
