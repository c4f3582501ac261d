//! The dashboard's read models, projected by the sync-service from the three services'
//! tables (Debezium CDC topics `cqrs.<schema>.<table>`), and the queries that read them.
//!
//! | read model | collection | fed by |
//! |---|---|---|
//! | order summary: status, lines, invoice, payment | `order_summaries` | `orders.aggregates` (scope `orders`), `billing.events` (scopes `invoice`, `payment`) |
//! | stock levels per product | `stock_levels` | `inventory.aggregates` |
//! | sales per hour | `sales_by_hour` (one fact per order, summed per hour at query time) | `orders.aggregates` |
//! | receivables ageing | `receivables` (one per invoice, bucketed by days past due at query time) | `billing.events` (scopes `issued`, `paid`) |
//!
//! The order summary is one document fed by two services' tables: each source writes its
//! own fields with a scoped patch guarded by its own version, so changes consumed from
//! different topics, in any relative order, never make each other stale.

use bson::{Bson, Document, doc};
use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use cqrs_core::{Projection, ReadModel, ReadModelWrite, SourceVersion, Target};
use cqrs_mongo::MongoReadModel;
use futures::TryStreamExt;
use serde::{Deserialize, Serialize};
use sync_service::envelope::{Change, Op};
use sync_service::map::MongoWrite;

/// Collection of the order summaries.
pub const ORDER_SUMMARIES: &str = "order_summaries";
/// Collection of the stock levels.
pub const STOCK_LEVELS: &str = "stock_levels";
/// Collection of the sales facts.
pub const SALES_BY_HOUR: &str = "sales_by_hour";
/// Collection of the receivables.
pub const RECEIVABLES: &str = "receivables";

/// A change the projections cannot read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{table}: {message}")]
pub struct ProjectionError {
    /// Source table.
    pub table: String,
    /// What is wrong.
    pub message: String,
}

fn table_of(change: &Change) -> String {
    format!(
        "{}.{}",
        change.source.schema.as_deref().unwrap_or("?"),
        change.source.table.as_deref().unwrap_or("?")
    )
}

fn error(change: &Change, message: impl Into<String>) -> ProjectionError {
    ProjectionError {
        table: table_of(change),
        message: message.into(),
    }
}

/// The row of an insert, update or snapshot read; `None` for deletes and the rest.
fn row(change: &Change) -> Option<&Document> {
    match change.op {
        Op::Create | Op::Update | Op::Read => change.after.as_ref(),
        _ => None,
    }
}

/// `(aggregate_id, version, state)` of an `aggregates` row of `aggregate_type`.
fn aggregate_state<'c>(
    change: &'c Change,
    aggregate_type: &str,
) -> Result<Option<(&'c str, i64, &'c Document)>, ProjectionError> {
    let Some(row) = row(change) else {
        return Ok(None);
    };
    if row.get_str("aggregate_type") != Ok(aggregate_type) {
        return Ok(None);
    }
    let id = row
        .get_str("aggregate_id")
        .map_err(|e| error(change, format!("aggregate_id: {e}")))?;
    let version = row
        .get_i64("version")
        .map_err(|e| error(change, format!("version: {e}")))?;
    match row.get("state") {
        Some(Bson::Document(state)) => Ok(Some((id, version, state))),
        _ => Ok(None),
    }
}

/// `(event_type, payload)` of an `events` row.
fn event(change: &Change) -> Result<Option<(&str, &Document)>, ProjectionError> {
    let Some(row) = row(change) else {
        return Ok(None);
    };
    let event_type = row
        .get_str("event_type")
        .map_err(|e| error(change, format!("event_type: {e}")))?;
    let payload = row
        .get_document("payload")
        .map_err(|e| error(change, format!("payload: {e}")))?;
    Ok(Some((event_type, payload)))
}

/// An RFC 3339 text (chrono's serde form) as a BSON date.
fn date(change: &Change, value: Option<&Bson>) -> Result<Bson, ProjectionError> {
    match value {
        Some(Bson::String(s)) => DateTime::parse_from_rfc3339(s)
            .map(|t| Bson::DateTime(bson::DateTime::from_chrono(t.with_timezone(&Utc))))
            .map_err(|e| error(change, format!("date {s:?}: {e}"))),
        Some(Bson::DateTime(d)) => Ok(Bson::DateTime(*d)),
        _ => Ok(Bson::Null),
    }
}

fn str_of<'d>(change: &Change, d: &'d Document, key: &str) -> Result<&'d str, ProjectionError> {
    d.get_str(key)
        .map_err(|e| error(change, format!("{key}: {e}")))
}

fn scoped(
    collection: &str,
    id: &str,
    scope: &str,
    version: SourceVersion,
    set: Document,
) -> MongoWrite {
    ReadModelWrite::ScopedPatch {
        target: Target::collection(collection),
        id: Bson::from(id),
        scope: scope.to_owned(),
        version,
        set,
        unset: Vec::new(),
    }
}

/// `order_summaries`: one document per order.
#[derive(Debug, Clone, Copy, Default)]
pub struct OrderSummaryProjection;

impl Projection for OrderSummaryProjection {
    type Input = Change;
    type Write = MongoWrite;
    type Error = ProjectionError;

    fn name(&self) -> &str {
        "order_summaries"
    }

    fn project(&self, change: &Change) -> Result<Vec<MongoWrite>, ProjectionError> {
        let v = change.version;
        match change.source.schema.as_deref() {
            Some("orders") => {
                let Some((id, version, state)) = aggregate_state(change, "Order")? else {
                    return Ok(vec![]);
                };
                let mut set = doc! {
                    "order_version": version,
                    "status": state.get("status").cloned().unwrap_or(Bson::Null),
                    "customer": state.get("customer").cloned().unwrap_or(Bson::Null),
                    "warehouse": state.get("warehouse").cloned().unwrap_or(Bson::Null),
                    "lines": state.get("lines").cloned().unwrap_or(Bson::Array(vec![])),
                    "total_cents": state.get("total_cents").cloned().unwrap_or(Bson::Null),
                    "placed_at": date(change, state.get("placed_at"))?,
                };
                for key in ["payment_id", "cancel_reason"] {
                    set.insert(key, state.get(key).cloned().unwrap_or(Bson::Null));
                }
                Ok(vec![scoped(ORDER_SUMMARIES, id, "orders", v, set)])
            }
            Some("billing") => match event(change)? {
                Some(("InvoiceIssued", p)) => Ok(vec![scoped(
                    ORDER_SUMMARIES,
                    str_of(change, p, "order_id")?,
                    "invoice",
                    v,
                    doc! { "invoice": {
                        "invoice_id": str_of(change, p, "invoice_id")?,
                        "amount_cents": p.get("amount_cents").cloned().unwrap_or(Bson::Null),
                        "issued_at": date(change, p.get("issued_at"))?,
                        "due_at": date(change, p.get("due_at"))?,
                    }},
                )]),
                Some(("PaymentReceived", p)) => Ok(vec![scoped(
                    ORDER_SUMMARIES,
                    str_of(change, p, "order_id")?,
                    "payment",
                    v,
                    doc! { "payment": {
                        "payment_id": str_of(change, p, "payment_id")?,
                        "amount_cents": p.get("amount_cents").cloned().unwrap_or(Bson::Null),
                        "paid_at": date(change, p.get("paid_at"))?,
                    }},
                )]),
                _ => Ok(vec![]),
            },
            _ => Ok(vec![]),
        }
    }
}

/// `stock_levels`: one document per warehouse and product.
#[derive(Debug, Clone, Copy, Default)]
pub struct StockLevelsProjection;

impl Projection for StockLevelsProjection {
    type Input = Change;
    type Write = MongoWrite;
    type Error = ProjectionError;

    fn name(&self) -> &str {
        "stock_levels"
    }

    fn project(&self, change: &Change) -> Result<Vec<MongoWrite>, ProjectionError> {
        let Some((warehouse, _, state)) = aggregate_state(change, "Warehouse")? else {
            return Ok(vec![]);
        };
        let Ok(stock) = state.get_document("stock") else {
            return Ok(vec![]);
        };
        let mut writes = Vec::with_capacity(stock.len());
        for (index, (sku, s)) in stock.iter().enumerate() {
            let Bson::Document(s) = s else { continue };
            let num = |k: &str| {
                s.get(k)
                    .and_then(Bson::as_i64)
                    .or_else(|| s.get_i32(k).ok().map(i64::from))
                    .unwrap_or(0)
            };
            let (on_hand, reserved) = (num("on_hand"), num("reserved"));
            writes.push(ReadModelWrite::Replace {
                target: Target::collection(STOCK_LEVELS),
                id: Bson::from(format!("{warehouse}/{sku}")),
                version: SourceVersion::with_index(change.version.position, index as u32),
                document: doc! {
                    "warehouse": warehouse,
                    "sku": sku,
                    "on_hand": on_hand,
                    "reserved": reserved,
                    "available": (on_hand - reserved).max(0),
                },
            });
        }
        Ok(writes)
    }
}

/// `sales_by_hour`: one fact per order (hour bucket, amount, status).
#[derive(Debug, Clone, Copy, Default)]
pub struct SalesByHourProjection;

impl Projection for SalesByHourProjection {
    type Input = Change;
    type Write = MongoWrite;
    type Error = ProjectionError;

    fn name(&self) -> &str {
        "sales_by_hour"
    }

    fn project(&self, change: &Change) -> Result<Vec<MongoWrite>, ProjectionError> {
        let Some((id, _, state)) = aggregate_state(change, "Order")? else {
            return Ok(vec![]);
        };
        let Bson::DateTime(placed) = date(change, state.get("placed_at"))? else {
            return Ok(vec![]);
        };
        let hour = placed
            .to_chrono()
            .duration_trunc(TimeDelta::hours(1))
            .map_err(|e| error(change, format!("placed_at: {e}")))?;
        Ok(vec![ReadModelWrite::Replace {
            target: Target::collection(SALES_BY_HOUR),
            id: Bson::from(id),
            version: change.version,
            document: doc! {
                "hour": bson::DateTime::from_chrono(hour),
                "status": state.get("status").cloned().unwrap_or(Bson::Null),
                "amount_cents": state.get("total_cents").cloned().unwrap_or(Bson::Int64(0)),
            },
        }])
    }
}

/// `receivables`: one document per invoice.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReceivablesProjection;

impl Projection for ReceivablesProjection {
    type Input = Change;
    type Write = MongoWrite;
    type Error = ProjectionError;

    fn name(&self) -> &str {
        "receivables"
    }

    fn project(&self, change: &Change) -> Result<Vec<MongoWrite>, ProjectionError> {
        let v = change.version;
        match event(change)? {
            Some(("InvoiceIssued", p)) => Ok(vec![scoped(
                RECEIVABLES,
                str_of(change, p, "invoice_id")?,
                "issued",
                v,
                doc! {
                    "order_id": str_of(change, p, "order_id")?,
                    "customer": str_of(change, p, "customer")?,
                    "amount_cents": p.get("amount_cents").cloned().unwrap_or(Bson::Null),
                    "issued_at": date(change, p.get("issued_at"))?,
                    "due_at": date(change, p.get("due_at"))?,
                },
            )]),
            Some(("PaymentReceived", p)) => Ok(vec![scoped(
                RECEIVABLES,
                str_of(change, p, "invoice_id")?,
                "paid",
                v,
                doc! { "paid": true, "paid_at": date(change, p.get("paid_at"))? },
            )]),
            _ => Ok(vec![]),
        }
    }
}

/// Registers the four projections on a sync-service with the tables that feed them.
pub fn register(service: sync_service::SyncService) -> sync_service::SyncService {
    service
        .with_projection(
            OrderSummaryProjection,
            &["orders.aggregates", "billing.events"],
        )
        .with_projection(StockLevelsProjection, &["inventory.aggregates"])
        .with_projection(SalesByHourProjection, &["orders.aggregates"])
        .with_projection(ReceivablesProjection, &["billing.events"])
}

/// The CDC topics the projections read.
pub const TOPICS: [&str; 3] = [
    "cqrs.orders.aggregates",
    "cqrs.inventory.aggregates",
    "cqrs.billing.events",
];

// ---- reading ----------------------------------------------------------------------------

/// An order line in the summary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SummaryLine {
    /// Product.
    pub sku: String,
    /// Quantity.
    pub qty: i64,
    /// Unit price.
    pub unit_price_cents: i64,
}

/// The invoice section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InvoiceSection {
    /// Invoice.
    pub invoice_id: String,
    /// Amount.
    pub amount_cents: i64,
    /// Due date.
    pub due_at: bson::DateTime,
}

/// The payment section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PaymentSection {
    /// Payment.
    pub payment_id: String,
    /// Amount.
    pub amount_cents: i64,
}

/// One order as the dashboard shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderSummary {
    /// Order id.
    #[serde(rename = "_id")]
    pub id: String,
    /// Version of the order aggregate it reflects.
    #[serde(default)]
    pub order_version: u64,
    /// `placed`, `completed`, `cancelled`.
    #[serde(default)]
    pub status: Option<String>,
    /// Customer.
    #[serde(default)]
    pub customer: Option<String>,
    /// Lines.
    #[serde(default)]
    pub lines: Vec<SummaryLine>,
    /// Total.
    #[serde(default)]
    pub total_cents: Option<i64>,
    /// Why it was cancelled.
    #[serde(default)]
    pub cancel_reason: Option<String>,
    /// Invoice, once billing issued it.
    #[serde(default)]
    pub invoice: Option<InvoiceSection>,
    /// Payment, once billing received it.
    #[serde(default)]
    pub payment: Option<PaymentSection>,
}

impl ReadModel for OrderSummary {
    type Id = String;
    const COLLECTION: &'static str = ORDER_SUMMARIES;
    fn id(&self) -> String {
        self.id.clone()
    }
}

impl MongoReadModel for OrderSummary {}

/// Stock of one product in one warehouse.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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

impl ReadModel for StockLevel {
    type Id = String;
    const COLLECTION: &'static str = STOCK_LEVELS;
    fn id(&self) -> String {
        self.id.clone()
    }
}

impl MongoReadModel for StockLevel {}

/// Sales of one hour (orders not cancelled).
#[derive(Debug, Clone, PartialEq)]
pub struct HourlySales {
    /// Start of the hour.
    pub hour: DateTime<Utc>,
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

/// Live documents of a collection matching `filter`.
async fn live(
    db: &mongodb::Database,
    collection: &str,
    filter: Document,
) -> mongodb::error::Result<Vec<Document>> {
    let mut filter = filter;
    filter.insert("_deleted", doc! { "$ne": true });
    db.collection::<Document>(collection)
        .find(filter)
        .sort(doc! { "_id": 1 })
        .await?
        .try_collect()
        .await
}

fn int(d: &Document, key: &str) -> i64 {
    match d.get(key) {
        Some(Bson::Int64(v)) => *v,
        Some(Bson::Int32(v)) => i64::from(*v),
        Some(Bson::Double(v)) => *v as i64,
        _ => 0,
    }
}

/// Sales per hour over the last `hours` hours (orders not cancelled).
pub async fn sales_per_hour(
    db: &mongodb::Database,
    hours: i64,
) -> mongodb::error::Result<Vec<HourlySales>> {
    let since = bson::DateTime::from_chrono(Utc::now() - TimeDelta::hours(hours));
    let pipeline = vec![
        doc! { "$match": { "_deleted": { "$ne": true }, "hour": { "$gte": since }, "status": { "$ne": "cancelled" } } },
        doc! { "$group": { "_id": "$hour", "orders": { "$sum": 1 }, "revenue": { "$sum": "$amount_cents" } } },
        doc! { "$sort": { "_id": 1 } },
    ];
    let rows: Vec<Document> = db
        .collection::<Document>(SALES_BY_HOUR)
        .aggregate(pipeline)
        .await?
        .try_collect()
        .await?;
    Ok(rows
        .iter()
        .filter_map(|r| {
            Some(HourlySales {
                hour: r.get_datetime("_id").ok()?.to_chrono(),
                orders: int(r, "orders"),
                revenue_cents: int(r, "revenue"),
            })
        })
        .collect())
}

/// Open receivables bucketed by days past due, as of `now`.
pub async fn receivables_ageing(
    db: &mongodb::Database,
    now: DateTime<Utc>,
) -> mongodb::error::Result<Ageing> {
    let mut ageing = Ageing::default();
    for r in live(
        db,
        RECEIVABLES,
        doc! { "paid": { "$ne": true }, "due_at": { "$exists": true } },
    )
    .await?
    {
        let Ok(due) = r.get_datetime("due_at") else {
            continue;
        };
        let amount = int(&r, "amount_cents");
        let days = (now - due.to_chrono()).num_days();
        ageing.open_invoices += 1;
        match days {
            ..=0 => ageing.current_cents += amount,
            1..=30 => ageing.d1_30_cents += amount,
            31..=60 => ageing.d31_60_cents += amount,
            61..=90 => ageing.d61_90_cents += amount,
            _ => ageing.over_90_cents += amount,
        }
    }
    Ok(ageing)
}

/// Stock levels of one warehouse.
pub async fn stock_levels(
    db: &mongodb::Database,
    warehouse: &str,
) -> mongodb::error::Result<Vec<Document>> {
    live(db, STOCK_LEVELS, doc! { "warehouse": warehouse }).await
}

/// Orders per status.
pub async fn orders_by_status(
    db: &mongodb::Database,
) -> mongodb::error::Result<Vec<(String, i64)>> {
    let pipeline = vec![
        doc! { "$match": { "_deleted": { "$ne": true }, "status": { "$type": "string" } } },
        doc! { "$group": { "_id": "$status", "n": { "$sum": 1 } } },
        doc! { "$sort": { "_id": 1 } },
    ];
    let rows: Vec<Document> = db
        .collection::<Document>(ORDER_SUMMARIES)
        .aggregate(pipeline)
        .await?
        .try_collect()
        .await?;
    Ok(rows
        .iter()
        .map(|r| (r.get_str("_id").unwrap_or("?").to_owned(), int(r, "n")))
        .collect())
}

/// Euros from cents, for printing.
///
/// ```
/// assert_eq!(cqrs_examples::read_models::euros(12345), "€123.45");
/// ```
pub fn euros(cents: i64) -> String {
    format!("€{}.{:02}", cents / 100, (cents % 100).abs())
}
