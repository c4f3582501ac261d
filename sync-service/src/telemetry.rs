//! Logs and traces: structured JSON logs carrying trace ids, and OpenTelemetry traces
//! exported over OTLP when `OTEL_EXPORTER_OTLP_ENDPOINT` is set. A batch gets a span
//! linked to the traces of its messages; each message that carries a W3C trace context
//! (Kafka `traceparent` headers, or the outbox's `tracingspancontext` column) gets an
//! `apply` span in that very trace, so one trace runs from the command to the read-model
//! write.

use std::collections::HashMap;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{SpanContext, TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Installed telemetry; [`Telemetry::shutdown`] flushes pending spans.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Installs the global subscriber: JSON logs filtered by `RUST_LOG` (default `info`),
    /// plus OTLP trace export when `OTEL_EXPORTER_OTLP_ENDPOINT` is set (service name from
    /// `OTEL_SERVICE_NAME`, default `sync-service`).
    pub fn init() -> Telemetry {
        let filter = EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| EnvFilter::new("info,rdkafka=warn"));
        let fmt = tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(true)
            .with_span_list(false);
        let endpoint = std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT")
            .ok()
            .filter(|e| !e.is_empty());
        let provider = endpoint.and_then(|endpoint| match tracer_provider(&endpoint) {
            Ok(provider) => Some(provider),
            Err(e) => {
                eprintln!("OpenTelemetry export disabled: {e}");
                None
            }
        });
        let otel = provider
            .as_ref()
            .map(|p| tracing_opentelemetry::layer().with_tracer(p.tracer("sync-service")));
        let installed = tracing_subscriber::registry()
            .with(filter)
            .with(fmt)
            .with(otel)
            .try_init();
        if installed.is_err() {
            eprintln!("a tracing subscriber was already installed");
        }
        Telemetry { provider }
    }

    /// Flushes and stops the trace exporter.
    pub fn shutdown(self) {
        if let Some(provider) = self.provider
            && let Err(e) = provider.shutdown()
        {
            eprintln!("OpenTelemetry shutdown: {e}");
        }
    }
}

fn tracer_provider(
    endpoint: &str,
) -> Result<SdkTracerProvider, opentelemetry_otlp::ExporterBuildError> {
    use opentelemetry_otlp::WithExportConfig;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .build()?;
    let service = std::env::var("OTEL_SERVICE_NAME").unwrap_or_else(|_| "sync-service".into());
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name(service)
                .build(),
        )
        .build())
}

/// The W3C trace context a message carries, if any: `traceparent`/`tracestate` headers,
/// else a `java.util.Properties` text (`traceparent=...`) or a bare `traceparent` in the
/// row's `tracingspancontext` or `trace_context` column.
///
/// ```
/// use sync_service::telemetry::upstream_context;
///
/// let headers = [("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")];
/// let ctx = upstream_context(headers.iter().map(|(k, v)| (*k, v.as_bytes())), None).unwrap();
/// assert_eq!(ctx.trace_id().to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
///
/// let row = bson::doc! { "tracingspancontext": "traceparent=00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\n" };
/// assert!(upstream_context(std::iter::empty(), Some(&row)).is_some());
/// assert!(upstream_context(std::iter::empty(), None).is_none());
/// ```
pub fn upstream_context<'a>(
    headers: impl Iterator<Item = (&'a str, &'a [u8])>,
    row: Option<&bson::Document>,
) -> Option<SpanContext> {
    let mut carrier: HashMap<String, String> = HashMap::new();
    for (key, value) in headers {
        let key = key.to_ascii_lowercase();
        if (key == "traceparent" || key == "tracestate")
            && let Ok(text) = std::str::from_utf8(value)
        {
            carrier.insert(key, text.to_owned());
        }
    }
    if !carrier.contains_key("traceparent")
        && let Some(text) = row.and_then(|r| {
            ["tracingspancontext", "trace_context"]
                .iter()
                .find_map(|c| r.get_str(c).ok())
        })
    {
        if text.contains("traceparent=") {
            for line in text.lines() {
                if let Some((k, v)) = line.split_once('=') {
                    carrier.insert(k.trim().to_ascii_lowercase(), v.trim().replace('\\', ""));
                }
            }
        } else {
            carrier.insert("traceparent".into(), text.trim().to_owned());
        }
    }
    carrier.get("traceparent")?;
    let context = TraceContextPropagator::new().extract(&carrier);
    let span = context.span().span_context().clone();
    span.is_valid().then_some(span)
}
