#![doc = include_str!("../README.md")]

pub mod account;
pub mod env;
pub mod net;
pub mod vault;
