//! Semantic checks of a parsed configuration; every error names its key.

use std::collections::HashSet;
use std::net::SocketAddr;

use cqrs_mongo::model::DELETED_FIELD;

use super::{ConfigError, SyncConfig};

/// Checks a SQL-side identifier (schema, table, column) taken from configuration:
/// 1-63 characters of letters, digits and `_`, not starting with a digit.
///
/// ```
/// use sync_service::config::validate_identifier;
/// assert!(validate_identifier("order_lines").is_ok());
/// assert!(validate_identifier("orders; drop").is_err());
/// ```
pub fn validate_identifier(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{name:?} must be 1-63 letters, digits or '_', not starting with a digit"
        ))
    }
}

fn database_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 63 || name.contains(['/', '\\', '.', ' ', '"', '$', '\0']) {
        return Err(format!("{name:?} is not a valid MongoDB database name"));
    }
    Ok(())
}

fn collection_name(name: &str) -> Result<(), String> {
    if name.is_empty()
        || name.len() > 120
        || name.contains(['$', '\0'])
        || name.starts_with("system.")
    {
        return Err(format!("{name:?} is not a valid MongoDB collection name"));
    }
    Ok(())
}

fn field_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.starts_with('$') || name.contains(['.', '\0']) {
        return Err(format!("{name:?} is not a valid document field name"));
    }
    Ok(())
}

fn topic_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 249
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(format!("{name:?} is not a valid Kafka topic name"))
    }
}

pub(super) fn check(c: &SyncConfig) -> Result<(), ConfigError> {
    fn at(key: &str) -> impl FnOnce(String) -> ConfigError + '_ {
        move |message| ConfigError::key(key, message)
    }
    if c.kafka.bootstrap_servers.trim().is_empty() {
        return Err(ConfigError::key(
            "kafka.bootstrap_servers",
            "must not be empty",
        ));
    }
    if c.kafka.group_id.trim().is_empty() {
        return Err(ConfigError::key("kafka.group_id", "must not be empty"));
    }
    if c.kafka.topics.is_empty()
        && c.kafka.topic_regex.as_deref().is_none_or(str::is_empty)
        && c.kafka.topic_prefix.as_deref().is_none_or(str::is_empty)
    {
        return Err(ConfigError::key(
            "kafka.topics",
            "give `topics`, `topic_regex` or `topic_prefix`",
        ));
    }
    if let Some(prefix) = c.kafka.topic_prefix.as_deref().filter(|p| !p.is_empty()) {
        topic_name(prefix).map_err(at("kafka.topic_prefix"))?;
    }
    for (i, topic) in c.kafka.topics.iter().enumerate() {
        topic_name(topic).map_err(at(&format!("kafka.topics[{i}]")))?;
    }
    if !["auto", "avro", "json"].contains(&c.kafka.format.as_str()) {
        return Err(ConfigError::key(
            "kafka.format",
            format!("{:?} is not one of auto, avro, json", c.kafka.format),
        ));
    }
    if !(1000..=300_000).contains(&c.kafka.session_timeout_ms) {
        return Err(ConfigError::key(
            "kafka.session_timeout_ms",
            "must be between 1000 and 300000",
        ));
    }
    // The group waits for a member's rebalance callback up to max.poll.interval.ms (300 s).
    if c.kafka.revoke_flush_timeout_ms > 120_000 {
        return Err(ConfigError::key(
            "kafka.revoke_flush_timeout_ms",
            "must be at most 120000",
        ));
    }
    for reserved in ["group.id", "bootstrap.servers", "enable.auto.offset.store"] {
        if c.kafka.properties.contains_key(reserved) {
            return Err(ConfigError::key(
                format!("kafka.properties.{reserved}"),
                "is managed by the sync-service; use the dedicated key",
            ));
        }
    }
    if let Some(registry) = &c.schema_registry
        && !(registry.url.starts_with("http://") || registry.url.starts_with("https://"))
    {
        return Err(ConfigError::key(
            "schema_registry.url",
            "must start with http:// or https://",
        ));
    }
    if c.kafka.format == "avro" && c.schema_registry.is_none() {
        return Err(ConfigError::key(
            "schema_registry",
            "is required when kafka.format = \"avro\"",
        ));
    }
    if !(c.mongodb.uri.starts_with("mongodb://") || c.mongodb.uri.starts_with("mongodb+srv://")) {
        return Err(ConfigError::key(
            "mongodb.uri",
            "must start with mongodb:// or mongodb+srv://",
        ));
    }
    database_name(&c.mongodb.database).map_err(at("mongodb.database"))?;
    collection_name(&c.mongodb.checkpoint_collection)
        .map_err(at("mongodb.checkpoint_collection"))?;
    collection_name(&c.mongodb.dead_letter_collection)
        .map_err(at("mongodb.dead_letter_collection"))?;
    collection_name(&c.mongodb.truncate_collection).map_err(at("mongodb.truncate_collection"))?;
    if c.mongodb.tombstone_retention_secs == 0 {
        return Err(ConfigError::key(
            "mongodb.tombstone_retention_secs",
            "must be positive",
        ));
    }
    if !(1..=100_000).contains(&c.batch.max_size) {
        return Err(ConfigError::key(
            "batch.max_size",
            "must be between 1 and 100000",
        ));
    }
    if c.batch.max_wait_ms > 60_000 {
        return Err(ConfigError::key(
            "batch.max_wait_ms",
            "must be at most 60000",
        ));
    }
    if !(1..=256).contains(&c.batch.workers) {
        return Err(ConfigError::key(
            "batch.workers",
            "must be between 1 and 256",
        ));
    }
    if c.retry.initial_backoff_ms == 0 || c.retry.initial_backoff_ms > c.retry.max_backoff_ms {
        return Err(ConfigError::key(
            "retry.initial_backoff_ms",
            "must be positive and at most retry.max_backoff_ms",
        ));
    }
    topic_name(&c.dead_letter.topic).map_err(at("dead_letter.topic"))?;
    c.rebuild
        .signal_table_parts()
        .map_err(at("rebuild.signal_table"))?;
    topic_name(&c.rebuild.notification_topic).map_err(at("rebuild.notification_topic"))?;
    collection_name(&c.rebuild.collection).map_err(at("rebuild.collection"))?;
    if let Some(url) = c.rebuild.signal_url()
        && !(url.starts_with("postgres://") || url.starts_with("postgresql://"))
    {
        return Err(ConfigError::key(
            "rebuild.signal_database_url",
            "must start with postgres:// or postgresql://",
        ));
    }
    if !(100..=600_000).contains(&c.rebuild.settle_ms) {
        return Err(ConfigError::key(
            "rebuild.settle_ms",
            "must be between 100 and 600000",
        ));
    }
    if !(100..=600_000).contains(&c.rebuild.poll_interval_ms) {
        return Err(ConfigError::key(
            "rebuild.poll_interval_ms",
            "must be between 100 and 600000",
        ));
    }
    if !(100..=600_000).contains(&c.dead_letter.refresh_interval_ms) {
        return Err(ConfigError::key(
            "dead_letter.refresh_interval_ms",
            "must be between 100 and 600000",
        ));
    }
    if !c.http.listen.is_empty() && c.http.listen.parse::<SocketAddr>().is_err() {
        return Err(ConfigError::key(
            "http.listen",
            format!("{:?} is not an ip:port address", c.http.listen),
        ));
    }
    let mut names = HashSet::new();
    for (i, p) in c.projections.iter().enumerate() {
        let key = |k: &str| format!("projection[{i}].{k}");
        let (schema, table) = p.table.split_once('.').ok_or_else(|| {
            ConfigError::key(
                key("table"),
                format!("{:?} must be `schema.table`", p.table),
            )
        })?;
        validate_identifier(schema).map_err(at(&key("table")))?;
        validate_identifier(table).map_err(at(&key("table")))?;
        if let Some(db) = &p.database {
            database_name(db).map_err(at(&key("database")))?;
        }
        collection_name(&p.collection).map_err(at(&key("collection")))?;
        for f in p.id_fields.iter().chain(&p.include).chain(&p.exclude) {
            field_name(f).map_err(at(&key("id_fields/include/exclude")))?;
        }
        for (column, field) in &p.rename {
            field_name(column).map_err(at(&key(&format!("rename.{column}"))))?;
            field_name(field).map_err(at(&key(&format!("rename.{column}"))))?;
            if field == "_id" || field.starts_with("_version") || field == DELETED_FIELD {
                return Err(ConfigError::key(
                    key(&format!("rename.{column}")),
                    format!("{field:?} is reserved"),
                ));
            }
        }
        if let Some(both) = p.include.iter().find(|f| p.exclude.contains(f)) {
            return Err(ConfigError::key(
                key("exclude"),
                format!("{both:?} is also included"),
            ));
        }
        super::embed::check(p, i, field_name)?;
        if !names.insert(p.name().to_owned()) {
            return Err(ConfigError::key(
                key("name"),
                format!("projection name {:?} is used twice", p.name()),
            ));
        }
    }
    Ok(())
}
