//! Runnable examples of the cqrs toolkit.
//!
//! * `examples/quickstart.rs`: one aggregate and one read model, the first thing to read.
//! * The order-to-dashboard demo (`make demo`, `src/bin/demo.rs`): three services, each
//!   owning its PostgreSQL schema and login role, reacting to each other's outbox events
//!   through Kafka with [`cqrs_saga`], and a dashboard of MongoDB read models projected by
//!   the embedded sync-service.
//!
//! | module | what |
//! |---|---|
//! | [`orders`] | `Order` (state-stored): place, complete on `PaymentReceived`, cancel on `StockRejected` |
//! | [`inventory`] | `Warehouse` (state-stored): restock, reserve on `OrderPlaced` -> `StockReserved` / `StockRejected` |
//! | [`billing`] | `Invoice` (event-sourced): issue on `StockReserved`, pay -> `PaymentReceived` |
//! | [`read_models`] | the sync-service projections and dashboard queries |
//! | [`app`] | everything wired together, and the flow the demo and the test run |
//! | [`service`] | schema migration and least-privilege login role per service |
//! | [`env`] | the stack's endpoints (`.env`) |

pub mod app;
pub mod billing;
pub mod env;
pub mod inventory;
pub mod orders;
pub mod read_models;
pub mod service;
