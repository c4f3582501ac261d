//! sync-service: Debezium change topics (Avro or Kafka Connect JSON) from Kafka into
//! MongoDB projections.
//!
//! The pipeline is a chain of stages, each in its own module:
//!
//! 1. [`source`]: the Kafka consumer group, run by the toolkit's consumer loop
//!    (`cqrs-kafka`, shared with `cqrs-saga`); offsets are stored only once a batch's
//!    writes are acknowledged (or its messages dead-lettered) and committed on a timer,
//!    at shutdown and before a revocation,
//! 2. [`decode`]: a record's key and value bytes into a [`decode::Datum`] plus, when the
//!    format carries one, its Kafka Connect schema ([`decode::ConnectSchema`]). Confluent
//!    wire-format Avro against the Schema Registry, Kafka Connect JSON with or without
//!    embedded schemas, plain strings; a null value is a tombstone.
//! 3. [`envelope`]: the decoded record into an [`envelope::Event`]: a Debezium PostgreSQL
//!    [`envelope::Change`] (with its [`cqrs_core::SourceVersion`] from the LSN), a tombstone,
//!    a heartbeat, a schema change, a transaction boundary, or an outbox event.
//! 4. [`types`]: Debezium's semantic types into natural BSON values (used by the envelope
//!    stage for the row images and keys).
//! 5. [`map`]: a change into read-model writes, by declarative table mappings or Rust
//!    projections ([`cqrs_core::Projection`]),
//! 6. [`write`](mod@crate::write): guarded bulk writes through `cqrs-mongo`, checkpoints in the same request,
//!    retried with backoff while MongoDB is away,
//! 7. commit: once [`pipeline`] settled a batch, the loop stores its offsets.
//!
//! Failures go to the [`dead_letter`] topic and park their key; [`dead_letter::admin`]
//! holds the operator commands. [`progress`] follows each projection's checkpoints. [`SyncService`] runs it
//! all ([`runtime`]); [`config`] reads `sync.toml`.
//!
//! The stages behind the loop take records in and give writes out through small
//! interfaces ([`write::ReadStore`], [`dead_letter::DeadLetterSink`],
//! [`dead_letter::LetterStore`]), so the pipeline's decisions are unit-tested with
//! in-memory implementations; the end-to-end tests run it against the real stack.
//!
//! ```
//! use sync_service::decode::{Decoder, Format, RawRecord};
//! use sync_service::envelope::{EnvelopeParser, Event};
//!
//! # tokio_test_block_on(async {
//! let decoder = Decoder::without_registry().with_default_format(Format::Auto);
//! let record = RawRecord::new("cqrs.app.orders")
//!     .with_key(br#"{"id":1}"#)
//!     .with_value(br#"{"op":"c","before":null,"after":{"id":1,"total":5},
//!         "source":{"connector":"postgresql","name":"cqrs","db":"cqrs","schema":"app",
//!         "table":"orders","lsn":1234,"txId":7,"ts_ms":1700000000000,"snapshot":"false"},
//!         "ts_ms":1700000000001}"#);
//! let decoded = decoder.decode(&record).await.unwrap();
//! let Event::Change(change) = EnvelopeParser::default().parse(&decoded).unwrap() else {
//!     panic!("expected a change")
//! };
//! assert_eq!(change.version.position, 1234);
//! assert_eq!(change.after.unwrap().get_i32("total").unwrap(), 5);
//! # });
//! # fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
//! #     tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
//! # }
//! ```

// Without `internals`, what the stages export for the toolkit's own tests is unused here;
// the builds with it (tests, clippy --all-targets) still report real dead code.
#![cfg_attr(not(feature = "internals"), allow(unused_imports, dead_code))]

// What embedding needs: the service and its configuration, registration (on
// `SyncService`), dead-letter replay, rebuilds, metrics and telemetry.
pub mod config;
pub mod dead_letter;
pub mod metrics;
pub mod rebuild;
pub mod service;
pub mod telemetry;

/// The pipeline's stages: crate-private, public only with the `internals` feature (the
/// toolkit's own tests and benchmarks; no stability promise).
macro_rules! internal_modules {
    ($($(#[$attr:meta])* $name:ident;)*) => {$(
        $(#[$attr])*
        #[cfg(feature = "internals")]
        #[doc(hidden)]
        pub mod $name;
        $(#[$attr])*
        #[cfg(not(feature = "internals"))]
        mod $name;
    )*};
}

internal_modules! {
    decode;
    envelope;
    map;
    pipeline;
    progress;
    runtime;
    source;
    truncate;
    types;
    write;
}

mod embedded;
mod http;
#[cfg(test)]
mod testing;

pub use dead_letter::{DeadLetter, DeadLetterError, Stage, Status};
// The sources of `ServiceError::{Format, Registry}`.
pub use decode::{RegistryConfigError, UnknownFormat};
pub use embedded::RunningService;
pub use service::{ServiceError, SyncService};
pub use write::StoreError;
