//! `[rebuild]`: how a read model is rebuilt from a Debezium incremental snapshot.

use std::fmt;
use std::time::Duration;

use serde::Deserialize;

/// `[rebuild]` (see the README's "Rebuilds").
///
/// ```
/// let config = sync_service::config::SyncConfig::from_toml_str(r#"
///     [kafka]
///     bootstrap_servers = "127.0.0.1:9092"
///     group_id = "read"
///     topic_prefix = "cqrs"
///     [mongodb]
///     uri = "mongodb://127.0.0.1:27017"
///     database = "read"
///     [rebuild]
///     signal_database_url = "postgres://cqrs_signal:secret@127.0.0.1:5432/cqrs"
/// "#).unwrap();
/// assert_eq!(config.rebuild.signal_table, "debezium.signal");
/// assert!(!format!("{:?}", config.rebuild).contains("secret"));
/// ```
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RebuildConfig {
    /// PostgreSQL URL of a role that may insert into the signal table (and nothing else:
    /// the stack's `cqrs_signal`). Needed to start or cancel a rebuild; a service without
    /// it still follows rebuilds others started.
    #[serde(default)]
    pub signal_database_url: Option<String>,
    /// Debezium's signal table (`signal.data.collection` of the connector), `schema.table`.
    #[serde(default = "default_signal_table")]
    pub signal_table: String,
    /// The connector's notification topic (`notification.sink.topic.name`).
    #[serde(default = "default_notification_topic")]
    pub notification_topic: String,
    /// Where rebuilds are recorded (in `mongodb.database`).
    #[serde(default = "default_collection")]
    pub collection: String,
    /// How long a new version is written along before the snapshot is signalled (every
    /// writer must have learnt of it), and how long after the snapshot completed the
    /// topics are read to their end (its last rows must have reached them), in ms.
    #[serde(default = "default_settle_ms")]
    pub settle_ms: u64,
    /// How often a running service advances the rebuilds (notifications, catch-up,
    /// switch), in ms.
    #[serde(default = "default_poll_ms")]
    pub poll_interval_ms: u64,
}

impl RebuildConfig {
    /// The signal connection's URL; an empty value (`"${SIGNAL_DATABASE_URL:-}"` with the
    /// variable unset) means none.
    pub fn signal_url(&self) -> Option<&str> {
        self.signal_database_url
            .as_deref()
            .filter(|url| !url.trim().is_empty())
    }

    /// `settle_ms` as a duration.
    pub fn settle(&self) -> Duration {
        Duration::from_millis(self.settle_ms)
    }

    /// `poll_interval_ms` as a duration.
    pub fn poll_interval(&self) -> Duration {
        Duration::from_millis(self.poll_interval_ms)
    }

    /// The signal table as `(schema, table)`, checked.
    pub fn signal_table_parts(&self) -> Result<(&str, &str), String> {
        let (schema, table) = self
            .signal_table
            .split_once('.')
            .ok_or_else(|| format!("{:?} must be schema.table", self.signal_table))?;
        super::validate_identifier(schema)?;
        super::validate_identifier(table)?;
        Ok((schema, table))
    }
}

impl Default for RebuildConfig {
    fn default() -> Self {
        RebuildConfig {
            signal_database_url: None,
            signal_table: default_signal_table(),
            notification_topic: default_notification_topic(),
            collection: default_collection(),
            settle_ms: default_settle_ms(),
            poll_interval_ms: default_poll_ms(),
        }
    }
}

/// The URL carries a password: never printed.
impl fmt::Debug for RebuildConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RebuildConfig")
            .field(
                "signal_database_url",
                &self.signal_database_url.as_ref().map(|_| "<redacted>"),
            )
            .field("signal_table", &self.signal_table)
            .field("notification_topic", &self.notification_topic)
            .field("collection", &self.collection)
            .field("settle_ms", &self.settle_ms)
            .field("poll_interval_ms", &self.poll_interval_ms)
            .finish()
    }
}

fn default_signal_table() -> String {
    "debezium.signal".into()
}
fn default_notification_topic() -> String {
    "debezium.notifications.cqrs".into()
}
fn default_collection() -> String {
    "_sync_rebuilds".into()
}
fn default_settle_ms() -> u64 {
    5_000
}
fn default_poll_ms() -> u64 {
    2_000
}
