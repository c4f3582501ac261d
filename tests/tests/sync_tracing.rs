//! One trace from the command to the read-model write: a change whose row carries a W3C
//! trace context (the outbox's `tracingspancontext` column) is applied in a span of that
//! very trace, and the batch span links to it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use opentelemetry::trace::{SpanId, TraceId, TracerProvider as _};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
use support::{Running, Scenario, eventually};
use sync_service::SyncService;
use tracing_subscriber::layer::SubscriberExt;

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT: &str = "00f067aa0ba902b7";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_change_is_applied_inside_the_trace_of_the_command_that_made_it() {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_subscriber::filter::LevelFilter::INFO)
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
    tracing::subscriber::set_global_default(subscriber).unwrap();

    let s = Scenario::new("trace").await;
    // Drops the schema and database even when an assertion fails.
    let _cleanup = s.cleanup_guard();
    s.sql(&format!(
        "CREATE TABLE {{s}}.outbox_like (id int PRIMARY KEY, status text,
                                          tracingspancontext text);
         INSERT INTO {{s}}.outbox_like VALUES
           (1, 'placed', 'traceparent=00-{TRACE}-{PARENT}-01\n'),
           (2, 'untraced', NULL);"
    ))
    .await;
    let running = Running::start(SyncService::new(s.config(
        r#"
        [[projection]]
        table = "{s}.outbox_like"
        collection = "orders"
        "#,
    )));
    eventually("both rows projected", Duration::from_secs(60), || async {
        (s.live_docs("orders").await.len() == 2).then_some(())
    })
    .await;
    running.stop().await;
    provider.force_flush().unwrap();

    let spans = exporter.get_finished_spans().unwrap();
    let trace = TraceId::from_hex(TRACE).unwrap();
    let apply: Vec<_> = spans.iter().filter(|s| s.name == "sync.apply").collect();
    assert_eq!(
        apply.len(),
        1,
        "only the traced row gets an apply span: {apply:?}"
    );
    assert_eq!(
        apply[0].span_context.trace_id(),
        trace,
        "the apply span is in the command's trace"
    );
    assert_eq!(apply[0].parent_span_id, SpanId::from_hex(PARENT).unwrap());
    let batch = spans
        .iter()
        .find(|s| {
            s.name == "sync.batch" && s.links.iter().any(|l| l.span_context.trace_id() == trace)
        })
        .expect("a batch span linked to the command's trace");
    assert_ne!(
        batch.span_context.trace_id(),
        trace,
        "the batch has its own trace"
    );
    assert!(spans.iter().any(|s| s.name == "sync.write"));
    assert!(spans.iter().any(|s| s.name == "sync.projection"));
    s.cleanup().await;
}
