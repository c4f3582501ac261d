//! A small stand-in for the Confluent Schema Registry.
//!
//! It serves exactly the REST endpoints the real clients of this project call (the Java
//! `AvroConverter` inside Kafka Connect and Rust's `schema_registry_converter`), with the same
//! request and response shapes, the same error bodies and the same status codes, and keeps
//! its schemas in a JSON data file so that ids survive a restart. It does **not** check
//! compatibility between versions; see the crate README for the full list of what is and is
//! not implemented.
//!
//! The crate is a library plus the `schema-registry-standin` binary so that its pieces can be
//! documented and unit tested; the binary only parses its arguments and calls [`http::serve`].

pub mod error;
pub mod http;
pub mod schema;
pub mod store;

pub use error::{RegistryError, StoreError};
pub use store::Store;
