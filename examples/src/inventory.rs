//! The inventory service (schema `inventory`): keeps stock per warehouse and reserves it
//! for placed orders. A reservation that cannot be served is not an error: it is the
//! domain outcome `StockRejected`, which the orders service compensates on.
//! State-stored.

use std::collections::BTreeMap;

use cqrs_core::{Aggregate, CommandHandler, DomainEvent, PersistenceMode};
use cqrs_postgres::{PgPool, PostgresError, PostgresStore};
use cqrs_saga::{Command, Saga, SagaHandler};
use serde::{Deserialize, Serialize};

use crate::orders::{Line, OrderPlaced};

/// Stock of one product.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stock {
    /// Physically there.
    pub on_hand: u32,
    /// Promised to placed orders.
    pub reserved: u32,
}

impl Stock {
    /// What can still be promised.
    pub fn available(&self) -> u32 {
        self.on_hand.saturating_sub(self.reserved)
    }
}

/// A warehouse: stock per product.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Warehouse {
    /// Stock by SKU.
    pub stock: BTreeMap<String, Stock>,
}

/// Commands of a warehouse.
#[derive(Debug, Clone, PartialEq)]
pub enum WarehouseCommand {
    /// Goods arrived.
    Restock {
        /// Product.
        sku: String,
        /// Quantity.
        qty: u32,
    },
    /// Reserve an order's lines (all or nothing).
    Reserve(OrderPlaced),
}

/// Events of a warehouse.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum WarehouseEvent {
    /// `StockReserved`: carries what billing needs to invoice.
    Reserved {
        /// Order.
        order_id: String,
        /// Customer.
        customer: String,
        /// Lines.
        lines: Vec<Line>,
        /// Amount to invoice.
        total_cents: i64,
    },
    /// `StockRejected`.
    Rejected {
        /// Order.
        order_id: String,
        /// Product short of stock.
        sku: String,
        /// Why.
        reason: String,
    },
    /// `StockAdded`.
    Added {
        /// Product.
        sku: String,
        /// Quantity added.
        qty: u32,
    },
}

impl DomainEvent for WarehouseEvent {
    fn event_type(&self) -> &'static str {
        match self {
            WarehouseEvent::Reserved { .. } => "StockReserved",
            WarehouseEvent::Rejected { .. } => "StockRejected",
            WarehouseEvent::Added { .. } => "StockAdded",
        }
    }
}

/// Rules of a warehouse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WarehouseError {
    /// Restocking nothing.
    #[error("restock quantity must be positive")]
    NothingToRestock,
}

impl Aggregate for Warehouse {
    const TYPE: &'static str = "Warehouse";
    type Command = WarehouseCommand;
    type Event = WarehouseEvent;
    type Error = WarehouseError;

    fn handle(&self, command: &WarehouseCommand) -> Result<Vec<WarehouseEvent>, WarehouseError> {
        match command {
            WarehouseCommand::Restock { qty: 0, .. } => Err(WarehouseError::NothingToRestock),
            WarehouseCommand::Restock { sku, qty } => Ok(vec![WarehouseEvent::Added {
                sku: sku.clone(),
                qty: *qty,
            }]),
            WarehouseCommand::Reserve(order) => {
                let mut wanted: BTreeMap<&str, u32> = BTreeMap::new();
                for line in &order.lines {
                    *wanted.entry(line.sku.as_str()).or_default() += line.qty;
                }
                for (sku, qty) in wanted {
                    let available = self.stock.get(sku).map(Stock::available).unwrap_or(0);
                    if available < qty {
                        return Ok(vec![WarehouseEvent::Rejected {
                            order_id: order.order_id.clone(),
                            sku: sku.to_owned(),
                            reason: format!("{sku}: {qty} wanted, {available} available"),
                        }]);
                    }
                }
                Ok(vec![WarehouseEvent::Reserved {
                    order_id: order.order_id.clone(),
                    customer: order.customer.clone(),
                    lines: order.lines.clone(),
                    total_cents: order.total_cents,
                }])
            }
        }
    }

    fn apply(&mut self, event: &WarehouseEvent) {
        match event {
            WarehouseEvent::Added { sku, qty } => {
                let s = self.stock.entry(sku.clone()).or_default();
                s.on_hand = s.on_hand.saturating_add(*qty);
            }
            WarehouseEvent::Reserved { lines, .. } => {
                for line in lines {
                    let s = self.stock.entry(line.sku.clone()).or_default();
                    s.reserved = s.reserved.saturating_add(line.qty);
                }
            }
            WarehouseEvent::Rejected { .. } => {}
        }
    }
}

/// The command handler of the inventory service.
pub type Inventory = CommandHandler<Warehouse, PostgresStore<Warehouse>>;

/// Warehouses on `pool` (schema `inventory`), state-stored.
pub fn handler(pool: &PgPool) -> Result<Inventory, PostgresError> {
    Ok(CommandHandler::new(PostgresStore::new(
        pool,
        PersistenceMode::StateStored,
    )?))
}

/// The inventory saga: `OrderPlaced` reserves the order's stock in its warehouse.
pub fn saga(inventory: Inventory) -> SagaHandler<Warehouse, PostgresStore<Warehouse>> {
    let saga = Saga::<Warehouse>::new("inventory").step("Order", "OrderPlaced", |e| {
        let order: OrderPlaced = e.payload_as()?;
        Ok(Some(Command::new(
            order.warehouse.clone(),
            WarehouseCommand::Reserve(order),
        )))
    });
    SagaHandler::new(saga, inventory)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cqrs_core::TestFramework;

    fn order(qty: u32) -> OrderPlaced {
        OrderPlaced {
            order_id: "o-1".into(),
            customer: "c".into(),
            warehouse: "w".into(),
            lines: vec![Line {
                sku: "a".into(),
                qty,
                unit_price_cents: 100,
            }],
            total_cents: 100 * i64::from(qty),
            placed_at: chrono::Utc::now(),
        }
    }

    #[test]
    fn reserves_or_rejects() {
        let added = WarehouseEvent::Added {
            sku: "a".into(),
            qty: 5,
        };
        let o = order(6);
        TestFramework::<Warehouse>::new()
            .given(vec![added.clone()])
            .when(WarehouseCommand::Reserve(o))
            .then_expect_events(vec![WarehouseEvent::Rejected {
                order_id: "o-1".into(),
                sku: "a".into(),
                reason: "a: 6 wanted, 5 available".into(),
            }]);
        let o = order(5);
        TestFramework::<Warehouse>::new()
            .given(vec![added])
            .when(WarehouseCommand::Reserve(o.clone()))
            .then_expect_events(vec![WarehouseEvent::Reserved {
                order_id: "o-1".into(),
                customer: "c".into(),
                lines: o.lines,
                total_cents: 500,
            }]);
    }
}
