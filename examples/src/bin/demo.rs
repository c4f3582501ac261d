//! `make demo`: the order-to-dashboard flow across the orders, inventory and billing
//! services, with the dashboard read models printed before and after.

use std::process::ExitCode;
use std::time::Duration;

use chrono::Utc;
use cqrs_examples::app::{DemoError, DemoNames, FlowReport, Stack, place_orders, restock};
use cqrs_examples::env::Env;
use cqrs_examples::read_models::{self, euros};

const WAREHOUSE: &str = "demo-warehouse";
const SKUS: [&str; 3] = ["widget", "gadget", "gizmo"];
const TARGET: Duration = Duration::from_secs(2);

async fn dashboard(stack: &Stack, title: &str) -> Result<(), DemoError> {
    let mongo = &stack.mongo;
    println!("\n=== dashboard {title} ===");
    let statuses = read_models::orders_by_status(mongo).await?;
    let statuses: Vec<String> = statuses
        .iter()
        .map(|(s, n)| format!("{n} {}", s.as_str()))
        .collect();
    println!(
        "orders          : {}",
        if statuses.is_empty() {
            "none".into()
        } else {
            statuses.join(", ")
        }
    );
    println!("stock levels    : {WAREHOUSE}");
    for s in read_models::stock_levels(mongo, WAREHOUSE).await? {
        println!(
            "  {:<8} on hand {:>4}  reserved {:>4}  available {:>4}",
            s.sku, s.on_hand, s.reserved, s.available
        );
    }
    println!("sales per hour  : (last 3 h, cancelled orders excluded)");
    for h in read_models::sales_per_hour(mongo, 3).await? {
        println!(
            "  {}  {:>4} orders  {:>12}",
            h.hour.to_chrono().format("%Y-%m-%d %H:00Z"),
            h.orders,
            euros(h.revenue_cents)
        );
    }
    let a = read_models::receivables_ageing(mongo, Utc::now()).await?;
    println!(
        "receivables     : {} open invoices, {} | current {} | 1-30 d {} | 31-60 d {} | 61-90 d {} | >90 d {}",
        a.open_invoices,
        euros(a.total_cents()),
        euros(a.current_cents),
        euros(a.d1_30_cents),
        euros(a.d31_60_cents),
        euros(a.d61_90_cents),
        euros(a.over_90_cents)
    );
    Ok(())
}

fn report(r: &FlowReport) {
    let ms = |d: Duration| format!("{} ms", d.as_millis());
    for s in [&r.completed, &r.cancelled] {
        let lines: Vec<String> = s
            .lines
            .iter()
            .map(|l| format!("{}x{}", l.qty, l.sku))
            .collect();
        println!(
            "order {:<24} {:<10} {:<22} total {:>9}  invoice {:<28} payment {}{}",
            s.id,
            s.status.map_or("?", |s| s.as_str()),
            lines.join(","),
            euros(s.total_cents.unwrap_or(0)),
            s.invoice.as_ref().map_or("-".into(), |i| format!(
                "{} {}",
                i.invoice_id,
                euros(i.amount_cents)
            )),
            s.payment
                .as_ref()
                .map_or("-".into(), |p| p.payment_id.clone()),
            s.cancel_reason
                .as_ref()
                .map_or(String::new(), |c| format!("  (cancelled: {c})")),
        );
    }
    let verdict = if r.order_to_dashboard < TARGET {
        "within"
    } else {
        "MISSED"
    };
    println!("\n=== timings ===");
    println!(
        "PlaceOrder -> order on the dashboard            : {:>8}  ({verdict} the 2 s target)",
        ms(r.order_to_dashboard)
    );
    println!(
        "PlaceOrder -> invoice on the dashboard          : {:>8}  (orders -> Kafka -> inventory -> Kafka -> billing)",
        ms(r.order_to_invoice)
    );
    println!(
        "Payment    -> order completed on the dashboard  : {:>8}  (billing -> Kafka -> orders)",
        ms(r.payment_to_completed)
    );
    println!(
        "PlaceOrder -> cancellation on the dashboard     : {:>8}  (stock rejected -> order cancelled, compensation)",
        ms(r.order_to_cancelled)
    );
}

async fn demo() -> Result<(), DemoError> {
    let env = Env::load();
    let run = format!(
        "{}-{}",
        Utc::now().format("%Y%m%dT%H%M%S"),
        &uuid::Uuid::new_v4().simple().to_string()[..6]
    );
    println!(
        "cqrs-toolkit demo, run {run}: starting the orders, inventory and billing services and the sync-service"
    );
    let stack = Stack::start(&env, &DemoNames::demo()).await?;
    // Restocking first also waits until the read side is live (the dashboard shows it).
    let report_result = match restock(&stack, WAREHOUSE, SKUS).await {
        Ok(()) => {
            dashboard(&stack, "before (after this run's restock)").await?;
            place_orders(&stack, &run, WAREHOUSE, SKUS).await
        }
        Err(e) => Err(e),
    };
    let result = match report_result {
        Ok(r) => {
            dashboard(&stack, "after").await?;
            println!();
            report(&r);
            Ok(())
        }
        Err(e) => Err(e),
    };
    stack.stop().await;
    result
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    match demo().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("demo failed: {e}");
            ExitCode::FAILURE
        }
    }
}
