//! The billing service (schema `billing`): issues an invoice when inventory reserved an
//! order's stock, and records the payment that settles it. Event-sourced.

use chrono::{DateTime, Duration, Utc};
use cqrs_core::{Aggregate, CommandHandler, DomainEvent, PersistenceMode};
use cqrs_postgres::{PgPool, PostgresError, PostgresStore};
use cqrs_saga::{Command, Saga, SagaHandler};
use serde::{Deserialize, Serialize};

/// Payment terms of the demo.
pub const PAYMENT_TERMS_DAYS: i64 = 30;

/// The invoice id of an order.
///
/// ```
/// assert_eq!(cqrs_examples::billing::invoice_id("o-1"), "inv-o-1");
/// ```
pub fn invoice_id(order_id: &str) -> String {
    format!("inv-{order_id}")
}

/// An invoice.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Invoice {
    /// Issued yet.
    pub issued: bool,
    /// Order it bills.
    pub order_id: String,
    /// Amount due.
    pub amount_cents: i64,
    /// Paid yet.
    pub paid: bool,
}

/// Commands of an invoice.
#[derive(Debug, Clone, PartialEq)]
pub enum InvoiceCommand {
    /// Issue it.
    Issue {
        /// Order.
        order_id: String,
        /// Customer.
        customer: String,
        /// Amount.
        amount_cents: i64,
    },
    /// Record a payment.
    Pay {
        /// Payment id (from the payment provider).
        payment_id: String,
        /// Amount paid.
        amount_cents: i64,
    },
}

/// Events of an invoice.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum InvoiceEvent {
    /// `PaymentReceived`.
    Paid {
        /// Invoice.
        invoice_id: String,
        /// Order.
        order_id: String,
        /// Payment.
        payment_id: String,
        /// Amount.
        amount_cents: i64,
        /// When.
        paid_at: DateTime<Utc>,
    },
    /// `InvoiceIssued`.
    Issued {
        /// Invoice.
        invoice_id: String,
        /// Order.
        order_id: String,
        /// Customer.
        customer: String,
        /// Amount.
        amount_cents: i64,
        /// When.
        issued_at: DateTime<Utc>,
        /// Due date.
        due_at: DateTime<Utc>,
    },
}

impl DomainEvent for InvoiceEvent {
    fn event_type(&self) -> &'static str {
        match self {
            InvoiceEvent::Issued { .. } => "InvoiceIssued",
            InvoiceEvent::Paid { .. } => "PaymentReceived",
        }
    }
}

/// Rules of an invoice.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvoiceError {
    /// Paying an invoice that does not exist.
    #[error("the invoice is not issued")]
    NotIssued,
    /// Paying twice.
    #[error("the invoice is already paid")]
    AlreadyPaid,
    /// Paying another amount.
    #[error("{paid} cents paid, {due} cents due")]
    WrongAmount {
        /// Paid.
        paid: i64,
        /// Due.
        due: i64,
    },
}

/// The command: the invoice id travels with it so events can name it.
pub type InvoiceCmd = (String, InvoiceCommand);

impl Aggregate for Invoice {
    const TYPE: &'static str = "Invoice";
    type Command = InvoiceCmd;
    type Event = InvoiceEvent;
    type Error = InvoiceError;

    fn handle(&self, (id, command): &InvoiceCmd) -> Result<Vec<InvoiceEvent>, InvoiceError> {
        match command {
            InvoiceCommand::Issue { .. } if self.issued => Ok(vec![]),
            InvoiceCommand::Issue {
                order_id,
                customer,
                amount_cents,
            } => {
                let issued_at = Utc::now();
                Ok(vec![InvoiceEvent::Issued {
                    invoice_id: id.clone(),
                    order_id: order_id.clone(),
                    customer: customer.clone(),
                    amount_cents: *amount_cents,
                    issued_at,
                    due_at: issued_at + Duration::days(PAYMENT_TERMS_DAYS),
                }])
            }
            InvoiceCommand::Pay { .. } if !self.issued => Err(InvoiceError::NotIssued),
            InvoiceCommand::Pay { .. } if self.paid => Err(InvoiceError::AlreadyPaid),
            InvoiceCommand::Pay { amount_cents, .. } if *amount_cents != self.amount_cents => {
                Err(InvoiceError::WrongAmount {
                    paid: *amount_cents,
                    due: self.amount_cents,
                })
            }
            InvoiceCommand::Pay {
                payment_id,
                amount_cents,
            } => Ok(vec![InvoiceEvent::Paid {
                invoice_id: id.clone(),
                order_id: self.order_id.clone(),
                payment_id: payment_id.clone(),
                amount_cents: *amount_cents,
                paid_at: Utc::now(),
            }]),
        }
    }

    fn apply(&mut self, event: &InvoiceEvent) {
        match event {
            InvoiceEvent::Issued {
                order_id,
                amount_cents,
                ..
            } => {
                self.issued = true;
                self.order_id = order_id.clone();
                self.amount_cents = *amount_cents;
            }
            InvoiceEvent::Paid { .. } => self.paid = true,
        }
    }
}

/// The command handler of the billing service.
pub type Billing = CommandHandler<Invoice, PostgresStore<Invoice>>;

/// Invoices on `pool` (schema `billing`), event-sourced with a snapshot every 50 events.
pub fn handler(pool: &PgPool) -> Result<Billing, PostgresError> {
    Ok(CommandHandler::new(PostgresStore::new(
        pool,
        PersistenceMode::event_sourced().with_snapshots_every(50),
    )?))
}

#[derive(Deserialize)]
struct StockReserved {
    order_id: String,
    customer: String,
    total_cents: i64,
}

/// The billing saga: `StockReserved` issues the order's invoice.
pub fn saga(billing: Billing) -> SagaHandler<Invoice, PostgresStore<Invoice>> {
    let saga = Saga::<Invoice>::new("billing").step("Warehouse", "StockReserved", |e| {
        let r: StockReserved = e.payload_as()?;
        let id = invoice_id(&r.order_id);
        Ok(Some(Command::new(
            id.clone(),
            (
                id,
                InvoiceCommand::Issue {
                    order_id: r.order_id,
                    customer: r.customer,
                    amount_cents: r.total_cents,
                },
            ),
        )))
    });
    SagaHandler::new(saga, billing)
}
