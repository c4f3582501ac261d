#![doc = include_str!("../README.md")]

mod builder;
mod container;
mod endpoints;
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

pub use builder::StackBuilder;
pub use container::SESSION_LABEL;
pub use endpoints::Endpoints;
pub use error::StackError;
pub use images::{Flavor, IMAGES_COMMAND_VARIABLE, ImageOrigin, ResolvedImage};
pub use reaper::{DISABLED_VARIABLE, PRIVILEGED_VARIABLE, REAPER_LABEL, SOCKET_VARIABLE};
pub use scope::{SyncServiceContainer, TestScope};
pub use service::Service;
pub use stack::CqrsStack;
pub use vault::VaultSettings;
