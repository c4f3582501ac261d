//! Configuration: a TOML file, `${VAR}` expansion, `SYNC__SECTION__KEY` environment
//! overrides, and validation whose errors name the offending key.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

mod embed;
mod env;
mod rebuild;
mod validate;
#[cfg(feature = "vault")]
pub mod vault;

pub use embed::EmbedMapping;
pub use rebuild::RebuildConfig;
pub use validate::validate_identifier;

/// A configuration problem, naming the key it is about.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {message}")]
    Read {
        /// Path of the file.
        path: String,
        /// Why.
        message: String,
    },
    /// The file is not valid TOML.
    #[error("config is not valid TOML: {0}")]
    Syntax(String),
    /// A key has a wrong type, is unknown or is missing.
    #[error("config key `{key}`: {message}")]
    Key {
        /// Dotted key, e.g. `kafka.group_id` or `projection[1].collection`.
        key: String,
        /// What is wrong.
        message: String,
    },
}

impl ConfigError {
    pub(crate) fn key(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError::Key {
            key: key.into(),
            message: message.into(),
        }
    }
}

/// The whole sync-service configuration.
///
/// ```
/// let config = sync_service::config::SyncConfig::from_toml_str(r#"
///     [kafka]
///     bootstrap_servers = "127.0.0.1:9092"
///     group_id = "sync"
///     topics = ["cqrs.orders.orders"]
///
///     [mongodb]
///     uri = "mongodb://127.0.0.1:27017"
///     database = "read"
///
///     [[projection]]
///     table = "orders.orders"
///     collection = "orders"
/// "#).unwrap();
/// assert_eq!(config.projections[0].name(), "orders.orders");
/// assert_eq!(config.batch.max_size, 500);
/// ```
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncConfig {
    /// Kafka consumer.
    pub kafka: KafkaConfig,
    /// Confluent Schema Registry (needed for Avro topics).
    #[serde(default)]
    pub schema_registry: Option<RegistryConfig>,
    /// MongoDB read store.
    pub mongodb: MongoConfig,
    /// Write batching.
    #[serde(default)]
    pub batch: BatchConfig,
    /// Retry of transient failures.
    #[serde(default)]
    pub retry: RetryConfig,
    /// Where undecodable or unmappable messages go.
    #[serde(default)]
    pub dead_letter: DeadLetterConfig,
    /// Health and metrics endpoints.
    #[serde(default)]
    pub http: HttpConfig,
    /// Declarative table-to-collection mappings.
    #[serde(default, rename = "projection")]
    pub projections: Vec<TableMapping>,
    /// Rebuilds of read models from incremental snapshots.
    #[serde(default)]
    pub rebuild: RebuildConfig,
    /// MongoDB settings and credentials from Vault (feature `vault`).
    #[cfg(feature = "vault")]
    #[serde(default)]
    pub vault: Option<vault::VaultSection>,
}

/// `[kafka]`.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// `bootstrap.servers`.
    pub bootstrap_servers: String,
    /// Consumer group id.
    pub group_id: String,
    /// Topics to consume.
    #[serde(default)]
    pub topics: Vec<String>,
    /// Or a regular expression of topics (librdkafka syntax, without the leading `^`).
    #[serde(default)]
    pub topic_regex: Option<String>,
    /// Or Debezium's `topic.prefix`: the service then subscribes to
    /// `<prefix>.<schema>.<table>` for every table its projections read (and to the outbox
    /// topics of its outbox projections), so registering a projection is enough.
    #[serde(default)]
    pub topic_prefix: Option<String>,
    /// Message format: `auto` (sniff), `avro` (Confluent wire format), `json`.
    #[serde(default = "default_format")]
    pub format: String,
    /// Session timeout of the consumer group.
    #[serde(default = "default_session_timeout_ms")]
    pub session_timeout_ms: u64,
    /// How long a partition revocation waits for the in-flight work to settle before the
    /// partitions move on (what is left is replayed by the next owner, harmlessly).
    #[serde(default = "default_revoke_flush_timeout_ms")]
    pub revoke_flush_timeout_ms: u64,
    /// Any librdkafka property (TLS, SASL, ...), passed through as is.
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
}

/// `[schema_registry]`.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryConfig {
    /// Base URL, e.g. `http://127.0.0.1:8081`.
    pub url: String,
    /// Basic-auth user.
    #[serde(default)]
    pub username: Option<String>,
    /// Basic-auth password.
    #[serde(default)]
    pub password: Option<String>,
}

/// `[mongodb]`.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MongoConfig {
    /// Connection URI (may hold credentials: never logged).
    pub uri: String,
    /// Default database of the projections.
    pub database: String,
    /// Collection of the projection checkpoints.
    #[serde(default = "default_checkpoints")]
    pub checkpoint_collection: String,
    /// Collection recording dead-lettered messages and the keys they hold back.
    #[serde(default = "default_dead_letters")]
    pub dead_letter_collection: String,
    /// Collection of the truncate floors (see [`truncate`](crate::truncate)).
    #[serde(default = "default_truncates")]
    pub truncate_collection: String,
    /// How long a deleted row's tombstone is kept, in seconds (7 days by default). Keep it
    /// longer than a change can be replayed (the topics' retention, a group reset), or a
    /// replayed change older than a purged tombstone brings its row back.
    #[serde(default = "default_tombstone_retention_secs")]
    pub tombstone_retention_secs: u64,
}

impl MongoConfig {
    /// `tombstone_retention_secs` as a duration.
    pub fn tombstone_retention(&self) -> Duration {
        Duration::from_secs(self.tombstone_retention_secs)
    }
}

/// `[batch]`: a batch is written when it holds `max_size` messages or its first message
/// waited `max_wait_ms`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchConfig {
    /// Messages per batch.
    #[serde(default = "default_batch_size")]
    pub max_size: usize,
    /// Longest wait before a partial batch is written, in milliseconds.
    #[serde(default = "default_batch_wait_ms")]
    pub max_wait_ms: u64,
    /// Parallel partition workers (each owns a subset of the partitions).
    #[serde(default = "default_workers")]
    pub workers: usize,
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            max_size: default_batch_size(),
            max_wait_ms: default_batch_wait_ms(),
            workers: default_workers(),
        }
    }
}

impl KafkaConfig {
    /// `revoke_flush_timeout_ms` as a duration.
    ///
    /// ```
    /// # use sync_service::config::SyncConfig;
    /// let config = SyncConfig::from_toml_str(r#"
    /// [kafka]
    /// bootstrap_servers = "127.0.0.1:9092"
    /// group_id = "sync"
    /// topics = ["cqrs.orders.orders"]
    /// revoke_flush_timeout_ms = 5000
    /// [mongodb]
    /// uri = "mongodb://127.0.0.1:27017"
    /// database = "read"
    /// "#).unwrap();
    /// assert_eq!(config.kafka.revoke_flush_timeout().as_secs(), 5);
    /// ```
    pub fn revoke_flush_timeout(&self) -> Duration {
        Duration::from_millis(self.revoke_flush_timeout_ms)
    }
}

impl BatchConfig {
    /// `max_wait_ms` as a duration.
    pub fn max_wait(&self) -> Duration {
        Duration::from_millis(self.max_wait_ms)
    }
}

/// `[retry]`: exponential backoff for transient MongoDB, registry and Kafka failures.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    /// First delay, in milliseconds.
    #[serde(default = "default_initial_backoff_ms")]
    pub initial_backoff_ms: u64,
    /// Largest delay, in milliseconds.
    #[serde(default = "default_max_backoff_ms")]
    pub max_backoff_ms: u64,
}

impl RetryConfig {
    /// The backoff policy: `initial_backoff_ms` doubling up to `max_backoff_ms`.
    ///
    /// ```
    /// let retry = sync_service::config::RetryConfig::default();
    /// assert_eq!(retry.backoff().initial().as_millis(), 100);
    /// ```
    pub fn backoff(&self) -> cqrs_core::backoff::Backoff {
        cqrs_core::backoff::Backoff::exponential(
            Duration::from_millis(self.initial_backoff_ms),
            Duration::from_millis(self.max_backoff_ms),
        )
    }
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            initial_backoff_ms: default_initial_backoff_ms(),
            max_backoff_ms: default_max_backoff_ms(),
        }
    }
}

/// `[dead_letter]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeadLetterConfig {
    /// Topic receiving the original bytes and headers of failed messages.
    #[serde(default = "default_dlq_topic")]
    pub topic: String,
    /// How often the parked keys are reloaded from the records, in milliseconds. A key an
    /// operator released is seen at once by the next message of that key in any case
    /// (it asks the records again); the reload catches up with everything else.
    #[serde(default = "default_dlq_refresh_ms")]
    pub refresh_interval_ms: u64,
}

impl Default for DeadLetterConfig {
    fn default() -> Self {
        DeadLetterConfig {
            topic: default_dlq_topic(),
            refresh_interval_ms: default_dlq_refresh_ms(),
        }
    }
}

impl DeadLetterConfig {
    /// `refresh_interval_ms` as a duration.
    pub fn refresh_interval(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.refresh_interval_ms)
    }
}

fn default_dlq_refresh_ms() -> u64 {
    2_000
}

/// `[http]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Listen address of `/healthz`, `/readyz` and `/metrics`; empty disables.
    #[serde(default = "default_listen")]
    pub listen: String,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: default_listen(),
        }
    }
}

/// `[[projection]]`: one table into one collection.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableMapping {
    /// Name of the projection (checkpoints, metrics); defaults to the table.
    #[serde(default)]
    pub name: Option<String>,
    /// Source table as `schema.table`.
    pub table: String,
    /// Target database; defaults to `[mongodb].database`.
    #[serde(default)]
    pub database: Option<String>,
    /// Target collection.
    pub collection: String,
    /// Fields forming `_id`, in order; defaults to the key fields of the message. One field
    /// gives a scalar `_id`, several a sub-document.
    #[serde(default)]
    pub id_fields: Vec<String>,
    /// Only these columns are copied (all when empty).
    #[serde(default)]
    pub include: Vec<String>,
    /// These columns are left out.
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Column renames: `column = "field"`.
    #[serde(default)]
    pub rename: BTreeMap<String, String>,
    /// The table is a child table: its rows go into their parent's document in
    /// `collection` (see [`EmbedMapping`]).
    #[serde(default)]
    pub embed: Option<EmbedMapping>,
}

impl TableMapping {
    /// The projection name.
    pub fn name(&self) -> &str {
        self.name.as_deref().unwrap_or(&self.table)
    }
}

impl SyncConfig {
    /// Reads a file, applies `${VAR}` expansion and `SYNC__*` environment overrides, and
    /// validates.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        Self::from_toml_with_env(&text, std::env::vars())
    }

    /// Parses and validates TOML text without looking at the environment.
    pub fn from_toml_str(text: &str) -> Result<Self, ConfigError> {
        Self::from_toml_with_env(text, std::iter::empty())
    }

    /// Parses TOML text, expanding `${VAR}` / `${VAR:-default}` and applying
    /// `SYNC__SECTION__KEY=value` overrides from `vars`, then validates.
    pub fn from_toml_with_env(
        text: &str,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let vars: BTreeMap<String, String> = vars.into_iter().collect();
        let mut value: toml::Value =
            toml::from_str(text).map_err(|e| ConfigError::Syntax(e.message().to_owned()))?;
        env::expand(&mut value, &vars, "")?;
        env::apply_overrides(&mut value, &vars)?;
        let config: SyncConfig = serde_path_to_error::deserialize(value).map_err(|e| {
            let key = e.path().to_string();
            ConfigError::key(
                if key == "." { "(root)".to_owned() } else { key },
                e.into_inner().to_string(),
            )
        })?;
        config.validate()?;
        Ok(config)
    }

    /// A configuration made in code, with the defaults of a file holding only these keys
    /// (and no HTTP endpoint: embedded services usually have their own). Chain the `with_*`
    /// methods; it is validated when the service starts.
    ///
    /// ```
    /// use sync_service::config::SyncConfig;
    ///
    /// let config = SyncConfig::new("127.0.0.1:9092", "billing-read-side", "mongodb://127.0.0.1:27017", "billing")
    ///     .with_schema_registry("http://127.0.0.1:8081")
    ///     .with_topic_prefix("cqrs");
    /// assert_eq!(config.batch.max_size, 500);
    /// assert!(config.validate().is_ok());
    /// ```
    pub fn new(
        bootstrap_servers: impl Into<String>,
        group_id: impl Into<String>,
        mongodb_uri: impl Into<String>,
        database: impl Into<String>,
    ) -> Self {
        let mut kafka = toml::Table::new();
        kafka.insert("bootstrap_servers".into(), bootstrap_servers.into().into());
        kafka.insert("group_id".into(), group_id.into().into());
        let mut mongodb = toml::Table::new();
        mongodb.insert("uri".into(), mongodb_uri.into().into());
        mongodb.insert("database".into(), database.into().into());
        let mut http = toml::Table::new();
        http.insert("listen".into(), String::new().into());
        let mut root = toml::Table::new();
        root.insert("kafka".into(), kafka.into());
        root.insert("mongodb".into(), mongodb.into());
        root.insert("http".into(), http.into());
        // The keys above are exactly the required ones, with string values: deserializing
        // them cannot fail (tested below), every other key takes the file's default.
        #[allow(clippy::expect_used)]
        toml::Value::Table(root)
            .try_into()
            .expect("the required keys of a config deserialize")
    }

    /// [`SyncConfig::new`] from the environment variables services and the stack's `.env`
    /// use: `KAFKA_BOOTSTRAP_SERVERS` and `MONGODB_URI` (required), `SCHEMA_REGISTRY_URL`
    /// and `DEBEZIUM_TOPIC_PREFIX` (optional).
    ///
    /// ```no_run
    /// let config = sync_service::config::SyncConfig::from_env("billing-read-side", "billing")?;
    /// # Ok::<(), sync_service::config::ConfigError>(())
    /// ```
    pub fn from_env(
        group_id: impl Into<String>,
        database: impl Into<String>,
    ) -> Result<Self, ConfigError> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let required = |name: &str| {
            var(name).ok_or_else(|| ConfigError::key(name, "the environment variable is not set"))
        };
        let mut config = SyncConfig::new(
            required("KAFKA_BOOTSTRAP_SERVERS")?,
            group_id,
            required("MONGODB_URI")?,
            database,
        );
        if let Some(url) = var("SCHEMA_REGISTRY_URL") {
            config = config.with_schema_registry(url);
        }
        if let Some(prefix) = var("DEBEZIUM_TOPIC_PREFIX") {
            config = config.with_topic_prefix(prefix);
        }
        Ok(config)
    }

    /// Decodes Avro through the Schema Registry at `url`.
    pub fn with_schema_registry(mut self, url: impl Into<String>) -> Self {
        self.schema_registry = Some(RegistryConfig {
            url: url.into(),
            username: None,
            password: None,
        });
        self
    }

    /// Subscribes to the topics of the projections' tables under Debezium's `topic.prefix`.
    pub fn with_topic_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.kafka.topic_prefix = Some(prefix.into());
        self
    }

    /// Serves `/healthz`, `/readyz` and `/metrics` on `listen` (`ip:port`).
    pub fn with_http(mut self, listen: impl Into<String>) -> Self {
        self.http.listen = listen.into();
        self
    }

    /// Sets a librdkafka property of the consumer (TLS, SASL, ...).
    pub fn with_kafka_property(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.kafka.properties.insert(key.into(), value.into());
        self
    }

    /// Checks every key, naming the first bad one.
    pub fn validate(&self) -> Result<(), ConfigError> {
        validate::check(self)?;
        #[cfg(feature = "vault")]
        if let Some(vault) = &self.vault {
            vault.validate()?;
        }
        Ok(())
    }

    /// The projection names, for logs.
    pub fn projection_names(&self) -> Vec<&str> {
        self.projections.iter().map(TableMapping::name).collect()
    }
}

/// Secrets stay out of `Debug` output.
impl fmt::Debug for SyncConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SyncConfig")
            .field("kafka.bootstrap_servers", &self.kafka.bootstrap_servers)
            .field("kafka.group_id", &self.kafka.group_id)
            .field("kafka.topics", &self.kafka.topics)
            .field("kafka.topic_regex", &self.kafka.topic_regex)
            .field("kafka.topic_prefix", &self.kafka.topic_prefix)
            .field(
                "kafka.properties",
                &self.kafka.properties.keys().collect::<Vec<_>>(),
            )
            .field(
                "schema_registry.url",
                &self.schema_registry.as_ref().map(|r| &r.url),
            )
            .field("mongodb.uri", &"<redacted>")
            .field("mongodb.database", &self.mongodb.database)
            .field("batch", &self.batch)
            .field("projections", &self.projection_names())
            .finish_non_exhaustive()
    }
}

fn default_format() -> String {
    "auto".into()
}
fn default_session_timeout_ms() -> u64 {
    6000
}
fn default_revoke_flush_timeout_ms() -> u64 {
    10_000
}
fn default_truncates() -> String {
    "_sync_truncates".into()
}

fn default_tombstone_retention_secs() -> u64 {
    cqrs_mongo::layout::DEFAULT_TOMBSTONE_RETENTION.as_secs()
}

fn default_checkpoints() -> String {
    "_sync_checkpoints".into()
}
fn default_dead_letters() -> String {
    "_sync_dead_letters".into()
}
fn default_batch_size() -> usize {
    500
}
fn default_batch_wait_ms() -> u64 {
    20
}
fn default_workers() -> usize {
    4
}
fn default_initial_backoff_ms() -> u64 {
    100
}
fn default_max_backoff_ms() -> u64 {
    10_000
}
fn default_dlq_topic() -> String {
    "sync-service.dlq".into()
}
fn default_listen() -> String {
    "127.0.0.1:9464".into()
}
