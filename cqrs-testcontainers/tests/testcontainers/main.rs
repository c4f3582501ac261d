//! The crate's tests: one binary, so one stack (`support::stack`, Vault included) shared by
//! every test, each in its own scope, as a user's test binary would. Needs a Docker engine
//! (`make docker-engine`); fails, never skips, without one.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod cleanup;
mod components;
mod errors;
mod isolation;
mod support;
mod sync_container;
