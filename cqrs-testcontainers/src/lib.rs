//! The whole CDC stack of the cqrs toolkit in containers, in one call from a Rust test.
//!
//! See the crate's README for a test to paste, the images and their overrides, and how
//! the containers go away.

mod container;
mod error;
mod images;
mod reaper;
mod recipes;
mod runtime;
mod scope;
mod service;
mod setup;
mod stack;
mod start;
mod vault;

pub use container::SESSION_LABEL;
pub use error::StackError;
pub use images::{Flavor, IMAGES_COMMAND_VARIABLE, ImageOrigin, ResolvedImage};
pub use reaper::{DISABLED_VARIABLE, PRIVILEGED_VARIABLE, REAPER_LABEL, SOCKET_VARIABLE};
pub use scope::{SyncServiceContainer, TestScope};
pub use service::Service;
pub use stack::{CqrsStack, Endpoints, StackBuilder};
pub use vault::VaultSettings;
