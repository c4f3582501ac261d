#![doc = include_str!("../README.md")]
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
