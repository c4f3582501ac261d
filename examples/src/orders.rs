//! The orders service (schema `orders`): places orders, completes them when billing
//! reports the payment, cancels them when inventory rejects the stock (compensation).
//! State-stored: the order row is the truth; its events leave through the outbox.

use chrono::{DateTime, Utc};
use cqrs_core::{Aggregate, CommandHandler, DomainEvent, PersistenceMode};
use cqrs_postgres::{PgPool, PostgresConfig, PostgresError, PostgresStore};
use cqrs_saga::{Command, Saga, SagaHandler};
use serde::{Deserialize, Serialize};

/// One order line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Line {
    /// Product.
    pub sku: String,
    /// Quantity.
    pub qty: u32,
    /// Unit price in cents.
    pub unit_price_cents: i64,
}

/// Lifecycle of an order.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Not placed yet.
    #[default]
    New,
    /// Placed; stock and payment pending.
    Placed,
    /// Paid and complete.
    Completed,
    /// Cancelled (stock rejected).
    Cancelled,
}

impl Status {
    /// The name stored in documents (`placed`, `completed`, ...).
    ///
    /// ```
    /// assert_eq!(cqrs_examples::orders::Status::Completed.as_str(), "completed");
    /// ```
    pub fn as_str(self) -> &'static str {
        match self {
            Status::New => "new",
            Status::Placed => "placed",
            Status::Completed => "completed",
            Status::Cancelled => "cancelled",
        }
    }
}

/// The order aggregate.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Order {
    /// Status.
    pub status: Status,
    /// Customer.
    pub customer: String,
    /// Warehouse that ships it.
    pub warehouse: String,
    /// Lines.
    pub lines: Vec<Line>,
    /// Sum of the lines.
    pub total_cents: i64,
    /// When it was placed.
    pub placed_at: Option<DateTime<Utc>>,
    /// Payment that completed it.
    pub payment_id: Option<String>,
    /// Why it was cancelled.
    pub cancel_reason: Option<String>,
}

/// Commands of an order.
#[derive(Debug, Clone, PartialEq)]
pub enum OrderCommand {
    /// Place the order.
    Place {
        /// Customer.
        customer: String,
        /// Warehouse that ships it.
        warehouse: String,
        /// Lines.
        lines: Vec<Line>,
    },
    /// Billing received the payment.
    Complete {
        /// Payment id.
        payment_id: String,
    },
    /// Inventory could not reserve the stock.
    Cancel {
        /// Why.
        reason: String,
    },
}

/// Events of an order (the outbox payloads other services read).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum OrderEvent {
    /// `OrderPlaced`.
    Placed(OrderPlaced),
    /// `OrderCompleted`.
    Completed {
        /// Order.
        order_id: String,
        /// Payment.
        payment_id: String,
    },
    /// `OrderCancelled`.
    Cancelled {
        /// Order.
        order_id: String,
        /// Why.
        reason: String,
    },
}

/// Payload of `OrderPlaced`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderPlaced {
    /// Order.
    pub order_id: String,
    /// Customer.
    pub customer: String,
    /// Warehouse.
    pub warehouse: String,
    /// Lines.
    pub lines: Vec<Line>,
    /// Total.
    pub total_cents: i64,
    /// When.
    pub placed_at: DateTime<Utc>,
}

impl DomainEvent for OrderEvent {
    fn event_type(&self) -> &'static str {
        match self {
            OrderEvent::Placed(_) => "OrderPlaced",
            OrderEvent::Completed { .. } => "OrderCompleted",
            OrderEvent::Cancelled { .. } => "OrderCancelled",
        }
    }
}

/// Rules of an order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OrderError {
    /// Placing twice.
    #[error("the order is already placed")]
    AlreadyPlaced,
    /// No lines, or a line without quantity.
    #[error("an order needs lines with a positive quantity")]
    Empty,
    /// Completing or cancelling an order that is not open.
    #[error("the order is {0:?}, not placed")]
    NotPlaced(Status),
}

/// The command: the order id travels with it so events can name it.
pub type OrderCmd = (String, OrderCommand);

impl Aggregate for Order {
    const TYPE: &'static str = "Order";
    type Command = OrderCmd;
    type Event = OrderEvent;
    type Error = OrderError;

    fn handle(&self, (id, command): &OrderCmd) -> Result<Vec<OrderEvent>, OrderError> {
        let order_id = id.clone();
        match command {
            OrderCommand::Place { .. } if self.status != Status::New => {
                Err(OrderError::AlreadyPlaced)
            }
            OrderCommand::Place { lines, .. }
                if lines.is_empty() || lines.iter().any(|l| l.qty == 0) =>
            {
                Err(OrderError::Empty)
            }
            OrderCommand::Place {
                customer,
                warehouse,
                lines,
            } => Ok(vec![OrderEvent::Placed(OrderPlaced {
                order_id,
                customer: customer.clone(),
                warehouse: warehouse.clone(),
                total_cents: lines
                    .iter()
                    .map(|l| l.unit_price_cents * i64::from(l.qty))
                    .sum(),
                lines: lines.clone(),
                placed_at: Utc::now(),
            })]),
            // Reactions are idempotent on the state too: a second completion is a no-op.
            OrderCommand::Complete { .. } if self.status == Status::Completed => Ok(vec![]),
            OrderCommand::Cancel { .. } if self.status == Status::Cancelled => Ok(vec![]),
            OrderCommand::Complete { .. } | OrderCommand::Cancel { .. }
                if self.status != Status::Placed =>
            {
                Err(OrderError::NotPlaced(self.status))
            }
            OrderCommand::Complete { payment_id } => Ok(vec![OrderEvent::Completed {
                order_id,
                payment_id: payment_id.clone(),
            }]),
            OrderCommand::Cancel { reason } => Ok(vec![OrderEvent::Cancelled {
                order_id,
                reason: reason.clone(),
            }]),
        }
    }

    fn apply(&mut self, event: &OrderEvent) {
        match event {
            OrderEvent::Placed(p) => {
                self.status = Status::Placed;
                self.customer = p.customer.clone();
                self.warehouse = p.warehouse.clone();
                self.lines = p.lines.clone();
                self.total_cents = p.total_cents;
                self.placed_at = Some(p.placed_at);
            }
            OrderEvent::Completed { payment_id, .. } => {
                self.status = Status::Completed;
                self.payment_id = Some(payment_id.clone());
            }
            OrderEvent::Cancelled { reason, .. } => {
                self.status = Status::Cancelled;
                self.cancel_reason = Some(reason.clone());
            }
        }
    }
}

/// The orders' lines, relational: `orders.order_lines`, primary key `(order_id,
/// line_no)`, kept from each order's state by a trigger on `orders.aggregates`, in the
/// command's own transaction (a line's row changes only when the line does). Debezium
/// captures it like any table; the dashboard embeds its rows in the order summaries
/// (`read_models::OrderLines`), each guarded by its own version.
const LINES_DDL: &str = r#"
SELECT pg_advisory_xact_lock(hashtext('cqrs-examples.order_lines'));
CREATE TABLE IF NOT EXISTS orders.order_lines (
    order_id         text    NOT NULL,
    line_no          integer NOT NULL,
    sku              text    NOT NULL,
    qty              integer NOT NULL,
    unit_price_cents bigint  NOT NULL,
    PRIMARY KEY (order_id, line_no)
);
CREATE OR REPLACE FUNCTION orders.order_lines_from_state() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.aggregate_type <> 'Order' OR NEW.state IS NULL THEN
        RETURN NEW;
    END IF;
    DELETE FROM orders.order_lines l
     WHERE l.order_id = NEW.aggregate_id
       AND l.line_no > jsonb_array_length(COALESCE(NEW.state->'lines', '[]'::jsonb));
    INSERT INTO orders.order_lines AS l (order_id, line_no, sku, qty, unit_price_cents)
    SELECT NEW.aggregate_id, t.n::integer, t.line->>'sku', (t.line->>'qty')::integer,
           (t.line->>'unit_price_cents')::bigint
      FROM jsonb_array_elements(COALESCE(NEW.state->'lines', '[]'::jsonb))
           WITH ORDINALITY AS t(line, n)
    ON CONFLICT (order_id, line_no) DO UPDATE
       SET sku = EXCLUDED.sku, qty = EXCLUDED.qty, unit_price_cents = EXCLUDED.unit_price_cents
     WHERE (l.sku, l.qty, l.unit_price_cents)
           IS DISTINCT FROM (EXCLUDED.sku, EXCLUDED.qty, EXCLUDED.unit_price_cents);
    RETURN NEW;
END $$;
DROP TRIGGER IF EXISTS order_lines_from_state ON orders.aggregates;
CREATE TRIGGER order_lines_from_state AFTER INSERT OR UPDATE OF state ON orders.aggregates
    FOR EACH ROW EXECUTE FUNCTION orders.order_lines_from_state();
"#;

/// Creates `orders.order_lines` and its trigger as the admin (`database_url`, the schema
/// migrated by [`provision`](crate::service::provision)); idempotent, safe to run from
/// several processes at once. The orders role reads and writes the table through the
/// schema's default privileges.
pub async fn provision_lines(database_url: &str) -> Result<(), crate::service::SetupError> {
    let sql = |what: &'static str, message: String| crate::service::SetupError::Sql {
        schema: "orders".into(),
        what,
        message,
    };
    let postgres = |e: PostgresError| sql("order_lines", e.to_string());
    let admin = PgPool::new(
        &PostgresConfig::from_url(database_url, "orders")
            .map_err(postgres)?
            .with_max_connections(1)
            .with_application_name("cqrs-examples-setup"),
    )
    .map_err(postgres)?;
    let mut client = admin.get().await.map_err(postgres)?;
    let tx = client
        .transaction()
        .await
        .map_err(|e| sql("order_lines", e.to_string()))?;
    tx.batch_execute(LINES_DDL)
        .await
        .map_err(|e| sql("order_lines", e.to_string()))?;
    tx.commit()
        .await
        .map_err(|e| sql("order_lines", e.to_string()))
}

/// The command handler of the orders service.
pub type Orders = CommandHandler<Order, PostgresStore<Order>>;

/// Orders on `pool` (schema `orders`), state-stored.
pub fn handler(pool: &PgPool) -> Result<Orders, PostgresError> {
    Ok(CommandHandler::new(PostgresStore::new(
        pool,
        PersistenceMode::StateStored,
    )?))
}

#[derive(Deserialize)]
struct PaymentReceived {
    order_id: String,
    payment_id: String,
}

#[derive(Deserialize)]
struct StockRejected {
    order_id: String,
    reason: String,
}

/// The orders saga: `PaymentReceived` (billing) completes the order; `StockRejected`
/// (inventory) cancels it, the compensation of a failed later step.
pub fn saga(orders: Orders) -> SagaHandler<Order, PostgresStore<Order>> {
    let saga = Saga::<Order>::new("orders")
        .step("Invoice", "PaymentReceived", |e| {
            let p: PaymentReceived = e.payload_as()?;
            Ok(Some(Command::new(
                p.order_id.clone(),
                (
                    p.order_id,
                    OrderCommand::Complete {
                        payment_id: p.payment_id,
                    },
                ),
            )))
        })
        .compensate("Warehouse", "StockRejected", |e| {
            let r: StockRejected = e.payload_as()?;
            Ok(Some(Command::new(
                r.order_id.clone(),
                (r.order_id, OrderCommand::Cancel { reason: r.reason }),
            )))
        });
    SagaHandler::new(saga, orders)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cqrs_core::TestFramework;

    fn place() -> OrderCmd {
        (
            "o-1".into(),
            OrderCommand::Place {
                customer: "c".into(),
                warehouse: "w".into(),
                lines: vec![],
            },
        )
    }

    #[test]
    fn rules() {
        TestFramework::<Order>::new()
            .given_no_previous_events()
            .when(place())
            .then_expect_error(OrderError::Empty);
        TestFramework::<Order>::new()
            .given_no_previous_events()
            .when(("o-1".into(), OrderCommand::Cancel { reason: "x".into() }))
            .then_expect_error(OrderError::NotPlaced(Status::New));
    }
}
