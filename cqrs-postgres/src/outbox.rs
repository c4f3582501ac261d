//! The transactional outbox: rows written in the command's transaction, turned into Kafka
//! messages by Debezium's outbox event router.
//!
//! Each event of a command becomes one row of `<schema>.outbox` (see
//! `sql/migrations/V003__outbox.sql`): `id` = event id, `aggregatetype`, `aggregateid`
//! (the message key), `type` = event type, `payload` = event JSON, `tracingspancontext` =
//! the W3C trace context in the `java.util.Properties` text form Debezium's tracing
//! integration reads, plus `sequence`, `event_version`, `occurred_at`, `correlation_id`,
//! `causation_id` and `tenant_id`. [`debezium_router_config`] gives the matching
//! connector settings.
//!
//! ```
//! use cqrs_postgres::{SchemaName, outbox};
//!
//! let settings = outbox::debezium_router_config(&SchemaName::new("orders").unwrap());
//! assert_eq!(settings["transforms.outbox.route.by.field"], "aggregatetype");
//! ```

use chrono::{DateTime, Utc};
use cqrs_core::TraceContext;
use serde_json::{Value, json};

use crate::error::PostgresError;
use crate::pool::PgPool;
use crate::schema::render;

const PRUNE: &str = include_str!("../sql/store/prune_outbox.sql");

/// The trace context as the `tracingspancontext` column holds it: `java.util.Properties`
/// text with `traceparent` and, when present, `tracestate`, which is what Debezium's
/// `ActivateTracingSpan` / outbox router read back through OpenTelemetry's W3C propagator.
///
/// ```
/// use cqrs_core::TraceContext;
/// use cqrs_postgres::outbox::span_context_properties;
///
/// let ctx = TraceContext::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", Some("k=v")).unwrap();
/// assert_eq!(
///     span_context_properties(&ctx),
///     "traceparent=00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\ntracestate=k=v\n"
/// );
/// ```
pub fn span_context_properties(trace: &TraceContext) -> String {
    let mut out = format!("traceparent={}\n", escape_property(trace.traceparent()));
    if let Some(state) = trace.tracestate() {
        out.push_str("tracestate=");
        out.push_str(&escape_property(state));
        out.push('\n');
    }
    out
}

/// Escapes a `java.util.Properties` value: backslashes, and a leading space (which the
/// parser would otherwise drop). The values are printable ASCII (checked by
/// [`TraceContext::parse`]), so nothing else needs escaping.
fn escape_property(value: &str) -> String {
    let escaped = value.replace('\\', "\\\\");
    match escaped.strip_prefix(' ') {
        Some(rest) => format!("\\ {rest}"),
        None => escaped,
    }
}

/// Settings of a Debezium PostgreSQL connector that routes `<schema>.outbox` with the
/// outbox event router: topic `outbox.event.<aggregatetype>`, key `aggregateid`, value
/// the expanded JSON payload, and the other columns as headers.
///
/// Merge them into the connector configuration (next to the connection settings).
///
/// ```
/// use cqrs_postgres::{SchemaName, outbox::debezium_router_config};
///
/// let config = debezium_router_config(&SchemaName::new("orders").unwrap());
/// assert_eq!(config["table.include.list"], "orders.outbox");
/// assert_eq!(config["transforms.outbox.type"], "io.debezium.transforms.outbox.EventRouter");
/// ```
pub fn debezium_router_config(schema: &crate::SchemaName) -> Value {
    json!({
        "table.include.list": format!("{}.outbox", schema.as_str()),
        "transforms": "outbox",
        "transforms.outbox.type": "io.debezium.transforms.outbox.EventRouter",
        "transforms.outbox.table.field.event.id": "id",
        "transforms.outbox.table.field.event.key": "aggregateid",
        "transforms.outbox.table.field.event.type": "type",
        "transforms.outbox.table.field.event.payload": "payload",
        "transforms.outbox.route.by.field": "aggregatetype",
        "transforms.outbox.tracing.span.context.field": "tracingspancontext",
        "transforms.outbox.table.expand.json.payload": "true",
        "transforms.outbox.table.fields.additional.placement":
            "type:header:eventType,event_version:header:eventVersion,sequence:header:sequence,\
             correlation_id:header:correlationId,causation_id:header:causationId,\
             tenant_id:header:tenantId,occurred_at:header:occurredAt"
    })
}

/// Deletes outbox rows created before `before` and returns how many. Debezium reads the
/// rows from the WAL at commit time, so the table itself only needs to keep them as long
/// as you want them for inspection; the router ignores the resulting delete events.
///
/// ```no_run
/// # async fn run(pool: cqrs_postgres::PgPool) -> Result<(), cqrs_postgres::PostgresError> {
/// let week_ago = chrono::Utc::now() - chrono::Duration::days(7);
/// let deleted = cqrs_postgres::outbox::prune(&pool, week_ago).await?;
/// # Ok(()) }
/// ```
pub async fn prune(pool: &PgPool, before: DateTime<Utc>) -> Result<u64, PostgresError> {
    let client = pool.get().await?;
    client
        .execute(&render(PRUNE, pool.schema()), &[&before])
        .await
        .map_err(|e| PostgresError::db("pruning the outbox", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_properties() {
        assert_eq!(escape_property("a\\b"), "a\\\\b");
        assert_eq!(escape_property(" x"), "\\ x");
        assert_eq!(escape_property("k=v,k2=v2"), "k=v,k2=v2");
    }
}
