//! The dashboard's read models: typed documents projected by the sync-service from the
//! three services' own tables (the state of orders and warehouses, the events of invoices),
//! and the queries that read them.
//!
//! | read model | collection | fed by |
//! |---|---|---|
//! | [`OrderSummary`]: status, lines, invoice, payment | `order_summaries` | the `Order` state (scope `orders`), the rows of `orders.order_lines` (embedded children `lines`), the `Invoice` events (scopes `invoice`, `payment`) |
//! | [`StockLevel`] per product | `stock_levels` | the `Warehouse` state |
//! | [`SaleFact`] per order, summed per hour at query time | `sales_by_hour` | the `Order` state |
//! | [`Receivable`] per invoice, bucketed by days past due at query time | `receivables` | the `Invoice` events (scopes `issued`, `paid`) |
//!
//! The order summary is one document fed by two services: each writes its own fields with
//! a scoped patch guarded by its own version, so changes consumed from different topics, in
//! any relative order, never make each other stale; and each write records the aggregate
//! version it reflects, so a caller waits for an invoice's or an order's command on the same
//! document (`Repository::wait_for_in`).
//!
//! Its lines are the rows of the orders service's child table `orders.order_lines`,
//! embedded in the summary (`cqrs_mongo::children`): one child per row under `lines.<line_no>`,
//! each guarded by the row's own version, so a line arriving before its order (another
//! topic) is kept until the order shows, and a removed line leaves the summary.

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use cqrs_mongo::bson::{self, doc};
use cqrs_mongo::{Filter, MongoClient, Patch, Query, ReadModel, Repository, Sort};
use cqrs_projection::{
    ChildProjection, EventChange, EventProjection, ProjectionError, StateChange, StateProjection,
    Write,
};
use serde::{Deserialize, Serialize};

use crate::billing::{Invoice, InvoiceEvent};
use crate::inventory::Warehouse;
use crate::orders::{Order, Status};

/// One order as the dashboard shows it. The orders service writes everything but
/// `invoice` and `payment` (skipped when `None`, so its patch leaves them alone), billing
/// writes those two.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ReadModel)]
#[read_model(collection = "order_summaries")]
pub struct OrderSummary {
    /// Order id.
    #[serde(rename = "_id")]
    pub id: String,
    /// Version of the order aggregate it reflects.
    #[serde(default)]
    pub order_version: u64,
    /// Lifecycle.
    #[serde(default)]
    pub status: Option<Status>,
    /// Customer.
    #[serde(default)]
    pub customer: Option<String>,
    /// Warehouse that ships it.
    #[serde(default)]
    pub warehouse: Option<String>,
    /// Lines, by line number: the rows of `orders.order_lines` embedded in the summary
    /// (stored as a map keyed by line number, written one by one by [`OrderLines`], never
    /// by the summary's own writes).
    #[serde(
        default,
        skip_serializing,
        deserialize_with = "cqrs_mongo::children::deserialize_vec"
    )]
    pub lines: Vec<SummaryLine>,
    /// Total.
    #[serde(default)]
    pub total_cents: Option<i64>,
    /// When it was placed.
    #[serde(default)]
    pub placed_at: Option<bson::DateTime>,
    /// Payment that completed it.
    #[serde(default)]
    pub payment_id: Option<String>,
    /// Why it was cancelled.
    #[serde(default)]
    pub cancel_reason: Option<String>,
    /// Invoice, once billing issued it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invoice: Option<InvoiceSection>,
    /// Payment, once billing received it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment: Option<PaymentSection>,
}

/// One line of an order summary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SummaryLine {
    /// Position in the order, from 1.
    pub line_no: u32,
    /// Product.
    pub sku: String,
    /// Quantity.
    pub qty: u32,
    /// Unit price in cents.
    pub unit_price_cents: i64,
}

/// The invoice section of an order summary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InvoiceSection {
    /// Invoice.
    pub invoice_id: String,
    /// Amount.
    pub amount_cents: i64,
    /// Issued.
    pub issued_at: bson::DateTime,
    /// Due date.
    pub due_at: bson::DateTime,
}

/// The payment section of an order summary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PaymentSection {
    /// Payment.
    pub payment_id: String,
    /// Amount.
    pub amount_cents: i64,
    /// When.
    pub paid_at: bson::DateTime,
}

/// Stock of one product in one warehouse.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ReadModel)]
#[read_model(collection = "stock_levels")]
pub struct StockLevel {
    /// `<warehouse>/<sku>`.
    #[serde(rename = "_id")]
    pub id: String,
    /// Warehouse.
    pub warehouse: String,
    /// Product.
    pub sku: String,
    /// On hand.
    pub on_hand: i64,
    /// Reserved.
    pub reserved: i64,
    /// Available.
    pub available: i64,
}

/// One order's contribution to the sales per hour.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ReadModel)]
#[read_model(collection = "sales_by_hour")]
pub struct SaleFact {
    /// Order id.
    #[serde(rename = "_id")]
    pub id: String,
    /// Start of the hour it was placed in.
    pub hour: bson::DateTime,
    /// Lifecycle.
    pub status: Status,
    /// Amount.
    pub amount_cents: i64,
}

/// One invoice, for the receivables ageing. `issued` and `paid` parts come from two events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ReadModel)]
#[read_model(collection = "receivables")]
pub struct Receivable {
    /// Invoice id.
    #[serde(rename = "_id")]
    pub id: String,
    /// Order.
    #[serde(default)]
    pub order_id: Option<String>,
    /// Customer.
    #[serde(default)]
    pub customer: Option<String>,
    /// Amount.
    #[serde(default)]
    pub amount_cents: i64,
    /// Issued.
    #[serde(default)]
    pub issued_at: Option<bson::DateTime>,
    /// Due date.
    #[serde(default)]
    pub due_at: Option<bson::DateTime>,
    /// Paid yet.
    #[serde(default)]
    pub paid: bool,
    /// When.
    #[serde(default)]
    pub paid_at: Option<bson::DateTime>,
}

fn date(t: DateTime<Utc>) -> bson::DateTime {
    bson::DateTime::from_chrono(t)
}

/// The orders service's part of the summaries (scope `orders`).
#[derive(Debug, Clone, Copy, Default)]
pub struct OrderSummaries;

impl StateProjection for OrderSummaries {
    type Aggregate = Order;
    type Model = OrderSummary;

    fn name(&self) -> &str {
        "order_summaries.orders"
    }

    fn project(&self, c: &StateChange<Order>) -> Result<Vec<Write<OrderSummary>>, ProjectionError> {
        let o = &c.state;
        let summary = OrderSummary {
            id: c.aggregate_id.clone(),
            order_version: c.version,
            status: Some(o.status),
            customer: Some(o.customer.clone()),
            warehouse: Some(o.warehouse.clone()),
            // Lines come from `orders.order_lines` (see `OrderLines`).
            lines: Vec::new(),
            total_cents: Some(o.total_cents),
            placed_at: o.placed_at.map(date),
            payment_id: o.payment_id.clone(),
            cancel_reason: o.cancel_reason.clone(),
            invoice: None,
            payment: None,
        };
        let patch = Patch::new().set_all(&summary);
        Ok(vec![Write::scoped_patch(summary.id, "orders", patch)])
    }
}

/// A row of `orders.order_lines` (primary key `(order_id, line_no)`).
#[derive(Debug, Clone, Deserialize)]
pub struct OrderLineRow {
    /// The order.
    pub order_id: String,
    /// Position in the order.
    pub line_no: i32,
    /// Product.
    pub sku: String,
    /// Quantity.
    pub qty: i32,
    /// Unit price in cents.
    pub unit_price_cents: i64,
}

/// The lines of the summaries: each row of `orders.order_lines` embedded in its order's
/// summary under `lines.<line_no>`. The order and the line number are the table's primary
/// key, so a delete names its line whatever the table's replica identity.
#[derive(Debug, Clone, Copy, Default)]
pub struct OrderLines;

impl ChildProjection for OrderLines {
    type Model = OrderSummary;
    type Row = OrderLineRow;
    type Child = SummaryLine;

    fn name(&self) -> &str {
        "order_summaries.lines"
    }

    fn field(&self) -> &str {
        "lines"
    }

    fn parent(&self, row: &OrderLineRow) -> Option<String> {
        Some(row.order_id.clone())
    }

    fn key(&self, row: &OrderLineRow) -> String {
        row.line_no.to_string()
    }

    fn child(&self, row: &OrderLineRow) -> Result<SummaryLine, ProjectionError> {
        let count = |what: &str, v: i32| {
            u32::try_from(v).map_err(|_| ProjectionError::custom(format!("{what} {v} < 0")))
        };
        Ok(SummaryLine {
            line_no: count("line_no", row.line_no)?,
            sku: row.sku.clone(),
            qty: count("qty", row.qty)?,
            unit_price_cents: row.unit_price_cents,
        })
    }
}

/// Billing's part of the summaries (scopes `invoice` and `payment`).
#[derive(Debug, Clone, Copy, Default)]
pub struct OrderBilling;

impl EventProjection for OrderBilling {
    type Aggregate = Invoice;
    type Model = OrderSummary;

    fn name(&self) -> &str {
        "order_summaries.billing"
    }

    fn project(
        &self,
        e: &EventChange<InvoiceEvent>,
    ) -> Result<Vec<Write<OrderSummary>>, ProjectionError> {
        Ok(vec![match e.payload().clone() {
            InvoiceEvent::Issued {
                invoice_id,
                order_id,
                amount_cents,
                issued_at,
                due_at,
                ..
            } => {
                let section = InvoiceSection {
                    invoice_id,
                    amount_cents,
                    issued_at: date(issued_at),
                    due_at: date(due_at),
                };
                Write::scoped_patch(order_id, "invoice", Patch::new().set("invoice", section))
            }
            InvoiceEvent::Paid {
                order_id,
                payment_id,
                amount_cents,
                paid_at,
                ..
            } => {
                let section = PaymentSection {
                    payment_id,
                    amount_cents,
                    paid_at: date(paid_at),
                };
                Write::scoped_patch(order_id, "payment", Patch::new().set("payment", section))
            }
        }])
    }
}

/// One stock level per product of a warehouse.
#[derive(Debug, Clone, Copy, Default)]
pub struct StockLevels;

impl StateProjection for StockLevels {
    type Aggregate = Warehouse;
    type Model = StockLevel;

    fn project(
        &self,
        c: &StateChange<Warehouse>,
    ) -> Result<Vec<Write<StockLevel>>, ProjectionError> {
        let warehouse = &c.aggregate_id;
        Ok(c.state
            .stock
            .iter()
            .map(|(sku, stock)| {
                Write::upsert(StockLevel {
                    id: format!("{warehouse}/{sku}"),
                    warehouse: warehouse.clone(),
                    sku: sku.clone(),
                    on_hand: i64::from(stock.on_hand),
                    reserved: i64::from(stock.reserved),
                    available: i64::from(stock.available()),
                })
            })
            .collect())
    }
}

/// One sale fact per placed order.
#[derive(Debug, Clone, Copy, Default)]
pub struct SalesByHour;

impl StateProjection for SalesByHour {
    type Aggregate = Order;
    type Model = SaleFact;

    fn project(&self, c: &StateChange<Order>) -> Result<Vec<Write<SaleFact>>, ProjectionError> {
        let Some(placed) = c.state.placed_at else {
            return Ok(vec![]);
        };
        let hour = placed
            .duration_trunc(TimeDelta::hours(1))
            .map_err(|e| ProjectionError::custom(format!("placed_at {placed}: {e}")))?;
        Ok(vec![Write::upsert(SaleFact {
            id: c.aggregate_id.clone(),
            hour: date(hour),
            status: c.state.status,
            amount_cents: c.state.total_cents,
        })])
    }
}

/// The parts of a receivable, one per invoice event (scopes `issued` and `paid`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Receivables;

/// The issued part of a receivable.
#[derive(Serialize)]
struct Issued<'a> {
    order_id: &'a str,
    customer: &'a str,
    amount_cents: i64,
    issued_at: bson::DateTime,
    due_at: bson::DateTime,
}

impl EventProjection for Receivables {
    type Aggregate = Invoice;
    type Model = Receivable;

    fn project(
        &self,
        e: &EventChange<InvoiceEvent>,
    ) -> Result<Vec<Write<Receivable>>, ProjectionError> {
        Ok(vec![match e.payload() {
            InvoiceEvent::Issued {
                invoice_id,
                order_id,
                customer,
                amount_cents,
                issued_at,
                due_at,
            } => {
                let issued = Issued {
                    order_id,
                    customer,
                    amount_cents: *amount_cents,
                    issued_at: date(*issued_at),
                    due_at: date(*due_at),
                };
                Write::scoped_patch(invoice_id.clone(), "issued", Patch::new().set_all(&issued))
            }
            InvoiceEvent::Paid {
                invoice_id,
                paid_at,
                ..
            } => {
                let paid = Patch::new()
                    .set("paid", true)
                    .set("paid_at", date(*paid_at));
                Write::scoped_patch(invoice_id.clone(), "paid", paid)
            }
        }])
    }
}

/// Registers the read models on a sync-service (the `orders`, `inventory` and `billing`
/// service schemas).
pub fn register(service: sync_service::SyncService) -> sync_service::SyncService {
    service
        .with_state_projection("orders", OrderSummaries)
        .with_child_projection("orders.order_lines", OrderLines)
        .with_event_projection("billing", OrderBilling)
        .with_state_projection("inventory", StockLevels)
        .with_state_projection("orders", SalesByHour)
        .with_event_projection("billing", Receivables)
}

/// The CDC topics the read models are fed from (for creating them up front).
pub const TOPICS: [&str; 4] = [
    "cqrs.orders.aggregates",
    "cqrs.orders.order_lines",
    "cqrs.inventory.aggregates",
    "cqrs.billing.events",
];

// ---- reading ----------------------------------------------------------------------------

/// Sales of one hour (orders not cancelled).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct HourlySales {
    /// Start of the hour.
    #[serde(rename = "_id")]
    pub hour: bson::DateTime,
    /// Orders.
    pub orders: i64,
    /// Revenue.
    pub revenue_cents: i64,
}

/// Open receivables by days past due.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Ageing {
    /// Open invoices.
    pub open_invoices: i64,
    /// Not yet due.
    pub current_cents: i64,
    /// 1-30 days past due.
    pub d1_30_cents: i64,
    /// 31-60 days.
    pub d31_60_cents: i64,
    /// 61-90 days.
    pub d61_90_cents: i64,
    /// Over 90 days.
    pub over_90_cents: i64,
}

impl Ageing {
    /// Total open.
    pub fn total_cents(&self) -> i64 {
        self.current_cents
            + self.d1_30_cents
            + self.d31_60_cents
            + self.d61_90_cents
            + self.over_90_cents
    }
}

/// Sales per hour over the last `hours` hours (orders not cancelled).
pub async fn sales_per_hour(
    mongo: &MongoClient,
    hours: i64,
) -> cqrs_mongo::Result<Vec<HourlySales>> {
    let since = date(Utc::now() - TimeDelta::hours(hours));
    let cancelled = bson::to_bson(&Status::Cancelled).unwrap_or_default();
    let facts: Repository<SaleFact> = mongo.repository();
    facts
        .aggregate(vec![
            doc! { "$match": { "hour": { "$gte": since }, "status": { "$ne": cancelled } } },
            doc! { "$group": {
                "_id": "$hour",
                "orders": { "$sum": 1_i64 },
                "revenue_cents": { "$sum": "$amount_cents" },
            } },
            doc! { "$sort": { "_id": 1 } },
        ])
        .await
}

/// Open receivables bucketed by days past due, as of `now`.
pub async fn receivables_ageing(
    mongo: &MongoClient,
    now: DateTime<Utc>,
) -> cqrs_mongo::Result<Ageing> {
    let open = Filter::ne("paid", true).and(Filter::exists("due_at", true));
    let mut ageing = Ageing::default();
    for r in mongo
        .repository::<Receivable>()
        .find(&Query::new(open))
        .await?
    {
        let Some(due) = r.document.due_at else {
            continue;
        };
        let amount = r.document.amount_cents;
        ageing.open_invoices += 1;
        match (now - due.to_chrono()).num_days() {
            ..=0 => ageing.current_cents += amount,
            1..=30 => ageing.d1_30_cents += amount,
            31..=60 => ageing.d31_60_cents += amount,
            61..=90 => ageing.d61_90_cents += amount,
            _ => ageing.over_90_cents += amount,
        }
    }
    Ok(ageing)
}

/// Stock levels of one warehouse, by product.
pub async fn stock_levels(
    mongo: &MongoClient,
    warehouse: &str,
) -> cqrs_mongo::Result<Vec<StockLevel>> {
    let query = Query::new(Filter::eq("warehouse", warehouse)).sort(Sort::asc("sku"));
    let found = mongo.repository::<StockLevel>().find(&query).await?;
    Ok(found.into_iter().map(|v| v.document).collect())
}

/// Orders per status.
pub async fn orders_by_status(mongo: &MongoClient) -> cqrs_mongo::Result<Vec<(Status, i64)>> {
    #[derive(Deserialize)]
    struct Row {
        #[serde(rename = "_id")]
        status: Status,
        n: i64,
    }
    let rows: Vec<Row> = mongo
        .repository::<OrderSummary>()
        .aggregate(vec![
            doc! { "$match": { "status": { "$type": "string" } } },
            doc! { "$group": { "_id": "$status", "n": { "$sum": 1_i64 } } },
            doc! { "$sort": { "_id": 1 } },
        ])
        .await?;
    Ok(rows.into_iter().map(|r| (r.status, r.n)).collect())
}

/// Euros from cents, for printing.
///
/// ```
/// assert_eq!(cqrs_examples::read_models::euros(12345), "€123.45");
/// ```
pub fn euros(cents: i64) -> String {
    format!("€{}.{:02}", cents / 100, (cents % 100).abs())
}
