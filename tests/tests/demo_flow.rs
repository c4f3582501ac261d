//! The demo's order-to-dashboard flow end to end through the real stack (the same code
//! `make demo` runs), with run-unique names: three services in their own schemas and
//! login roles, reacting through the outbox topics, projected into MongoDB by the
//! embedded sync-service. Asserts the final read models and the compensation path.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use cqrs_examples::app::{DemoNames, Stack, run_flow};
use cqrs_examples::env::Env;
use cqrs_examples::orders::Status;
use cqrs_examples::read_models::{self, Receivable, SaleFact, StockLevel};
use cqrs_mongo::{MongoClient, MongoReadModel};

/// The typed document `id` of read model `M`, which must exist.
async fn one<M: MongoReadModel<Id = String>>(mongo: &MongoClient, id: &str) -> M {
    mongo
        .repository::<M>()
        .get(&id.to_owned())
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("{}/{id} missing", M::COLLECTION))
        .document
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn order_to_dashboard_with_compensation() {
    let run = uuid::Uuid::new_v4().simple().to_string()[..10].to_owned();
    let names = DemoNames::unique(&run);
    let stack = Stack::start(&Env::load(), &names)
        .await
        .unwrap_or_else(|e| panic!("demo stack did not start (make infrastructure-up?): {e}"));
    let warehouse = format!("wh-{run}");
    let skus = [
        format!("widget-{run}"),
        format!("gadget-{run}"),
        format!("gizmo-{run}"),
    ];
    let report = run_flow(
        &stack,
        &run,
        &warehouse,
        [skus[0].as_str(), skus[1].as_str(), skus[2].as_str()],
    )
    .await
    .unwrap();
    println!(
        "order -> dashboard {:?}, -> invoice {:?}, payment -> completed {:?}, order -> cancelled {:?}",
        report.order_to_dashboard,
        report.order_to_invoice,
        report.payment_to_completed,
        report.order_to_cancelled
    );

    // The order that went through: one document joining orders and billing.
    let done = &report.completed;
    assert_eq!(done.status, Some(Status::Completed));
    // Its lines: the rows of orders.order_lines embedded in the summary, by line number.
    let lines: Vec<(u32, &str, u32, i64)> = done
        .lines
        .iter()
        .map(|l| (l.line_no, l.sku.as_str(), l.qty, l.unit_price_cents))
        .collect();
    assert_eq!(
        lines,
        vec![
            (1, skus[0].as_str(), 2, 1250),
            (2, skus[1].as_str(), 1, 4999)
        ]
    );
    let raw = stack
        .db()
        .collection::<cqrs_mongo::bson::Document>("order_summaries")
        .find_one(cqrs_mongo::bson::doc! { "_id": &done.id })
        .await
        .unwrap()
        .expect("the summary in the view");
    let stored = raw.get_document("lines").expect("a map of lines by number");
    // A map keyed by line number: its field order is the order the lines arrived in.
    let mut numbers: Vec<&String> = stored.keys().collect();
    numbers.sort();
    assert_eq!(numbers, ["1", "2"]);
    assert!(raw.get_document("_children").is_ok(), "each line's version");
    assert_eq!(done.total_cents, Some(2 * 1250 + 4999));
    let invoice = done.invoice.as_ref().expect("invoice section");
    assert_eq!(invoice.invoice_id, format!("inv-order-{run}-1"));
    assert_eq!(invoice.amount_cents, 7499);
    assert_eq!(
        done.payment.as_ref().expect("payment section").payment_id,
        format!("pay-{run}-1")
    );

    // The compensation: stock rejected -> order cancelled, never invoiced.
    let cancelled = &report.cancelled;
    assert_eq!(cancelled.status, Some(Status::Cancelled));
    assert!(
        cancelled
            .cancel_reason
            .as_deref()
            .is_some_and(|r| r.contains("1000 wanted, 1 available")),
        "{cancelled:?}"
    );
    assert!(cancelled.invoice.is_none() && cancelled.payment.is_none());
    assert_eq!(cancelled.lines.len(), 1);

    // Stock levels per product.
    let mongo = &stack.mongo;
    let widget: StockLevel = one(mongo, &format!("{warehouse}/{}", skus[0])).await;
    assert_eq!(
        (widget.on_hand, widget.reserved, widget.available),
        (10, 2, 8)
    );
    let gizmo: StockLevel = one(mongo, &format!("{warehouse}/{}", skus[2])).await;
    assert_eq!(gizmo.reserved, 0, "a rejected order reserves nothing");

    // Sales per hour: the completed order counts, the cancelled one does not.
    let sale: SaleFact = one(mongo, &format!("order-{run}-1")).await;
    assert_eq!(sale.status, Status::Completed);
    let lost: SaleFact = one(mongo, &format!("order-{run}-2")).await;
    assert_eq!(lost.status, Status::Cancelled);
    let hours = read_models::sales_per_hour(mongo, 2).await.unwrap();
    assert!(
        hours
            .iter()
            .any(|h| h.orders >= 1 && h.revenue_cents >= 7499),
        "{hours:?}"
    );

    // Receivables: the invoice is paid, so it ages no more.
    let receivable = eventually_paid(mongo, &invoice.invoice_id).await;
    assert_eq!(receivable.customer.as_deref(), Some("ada"));

    // The reaction loops: orders compensated once on StockRejected.
    let compensated: u64 = stack
        .runners
        .iter()
        .filter(|(name, _)| *name == "orders")
        .map(|(_, s)| s.compensated())
        .sum();
    assert!(compensated >= 1);
    assert!(
        report.order_to_dashboard < Duration::from_secs(10),
        "order -> dashboard took {:?}",
        report.order_to_dashboard
    );
    let db = stack.db();
    stack.stop().await;
    let _ = db.drop().await;
}

async fn eventually_paid(mongo: &MongoClient, invoice_id: &str) -> Receivable {
    for _ in 0..300 {
        let r: Receivable = one(mongo, invoice_id).await;
        if r.paid {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("receivable {invoice_id} never marked paid");
}
