//! Connection: settings (URI, run-time credentials, TLS, pool) and a swappable client handle.
//!
//! [`MongoClient`] is a cheap, clonable handle. Every repository, bulk writer and
//! checkpoint store built from it asks the handle for the current driver client at each
//! operation, so [`MongoClient::rotate_credentials`] (for example when a Vault lease is
//! renewed with a new user) takes effect everywhere without rebuilding anything.

use std::{
    collections::HashMap,
    fmt,
    path::PathBuf,
    sync::{Arc, RwLock},
    time::Duration,
};

use bson::doc;
use mongodb::{
    Client, Database,
    options::{ClientOptions, Credential, Tls, TlsOptions},
};

use crate::{
    bulk::BulkWriter,
    checkpoint::CheckpointStore,
    error::{MongoError, Result},
    layout::{DEFAULT_TOMBSTONE_RETENTION, Layout},
    model::MongoReadModel,
    repository::Repository,
};

pub use cqrs_core::Secret;

/// Database used when neither the URI nor the settings name one.
pub const DEFAULT_DATABASE: &str = "cqrs";

/// A MongoDB login supplied at run time (from the environment, Vault...): user name,
/// password and the database it authenticates against.
///
/// They override any user info in the URI. Not `cqrs_postgres::Credentials`: a MongoDB
/// login always has a password and an authentication database.
///
/// ```
/// use cqrs_mongo::MongoCredentials;
///
/// let c = MongoCredentials::new("reader", "s3cret").with_source("admin");
/// assert!(!format!("{c:?}").contains("s3cret"));
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct MongoCredentials {
    /// User name.
    pub username: String,
    /// Password.
    pub password: Secret,
    /// Authentication database (`admin` when `None`).
    pub source: Option<String>,
}

impl MongoCredentials {
    /// User and password, authenticating against `admin`.
    pub fn new(username: impl Into<String>, password: impl Into<Secret>) -> Self {
        MongoCredentials {
            username: username.into(),
            password: password.into(),
            source: None,
        }
    }

    /// Authenticates against another database.
    pub fn with_source(mut self, source: impl Into<String>) -> Self {
        self.source = Some(source.into());
        self
    }
}

impl fmt::Debug for MongoCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MongoCredentials")
            .field("username", &self.username)
            .field("password", &self.password)
            .field("source", &self.source)
            .finish()
    }
}

/// TLS settings. `None` in [`MongoConfig::tls`] leaves the URI's choice (`tls=true`...).
///
/// ```
/// use cqrs_mongo::TlsConfig;
///
/// let tls = TlsConfig::enabled().with_ca_file("/etc/ssl/mongo-ca.pem");
/// assert!(tls.enabled);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsConfig {
    /// Use TLS.
    pub enabled: bool,
    /// CA bundle (PEM) to trust instead of the system roots.
    pub ca_file: Option<PathBuf>,
    /// Client certificate and key (one PEM file) for mutual TLS.
    pub cert_key_file: Option<PathBuf>,
    /// Accept any server certificate. For development only.
    pub allow_invalid_certificates: bool,
}

impl TlsConfig {
    /// TLS on, system roots.
    pub fn enabled() -> Self {
        TlsConfig {
            enabled: true,
            ..TlsConfig::default()
        }
    }

    /// TLS off, whatever the URI says.
    pub fn disabled() -> Self {
        TlsConfig::default()
    }

    /// Trusts this CA bundle.
    pub fn with_ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.ca_file = Some(path.into());
        self
    }

    /// Presents this client certificate (PEM with the key).
    pub fn with_cert_key_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.cert_key_file = Some(path.into());
        self
    }
}

/// Connection pool and timeout settings.
///
/// The defaults suit a service: up to 32 connections per server, one kept warm, idle
/// connections closed after 5 minutes, 10 s to connect or select a server.
///
/// ```
/// use cqrs_mongo::PoolConfig;
///
/// let pool = PoolConfig { max_size: 64, ..PoolConfig::default() };
/// assert_eq!(pool.min_size, 1);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolConfig {
    /// Maximum connections per server.
    pub max_size: u32,
    /// Connections kept open even when idle.
    pub min_size: u32,
    /// Idle connections are closed after this long.
    pub max_idle_time: Duration,
    /// Timeout for opening a connection.
    pub connect_timeout: Duration,
    /// Timeout for finding a suitable server (how long an operation waits when the
    /// server is down before failing).
    pub server_selection_timeout: Duration,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            max_size: 32,
            min_size: 1,
            max_idle_time: Duration::from_secs(300),
            connect_timeout: Duration::from_secs(10),
            server_selection_timeout: Duration::from_secs(10),
        }
    }
}

/// Everything needed to connect.
///
/// `Debug` hides the password of the URI and of the credentials.
///
/// ```
/// use cqrs_mongo::{MongoCredentials, MongoConfig};
///
/// let config = MongoConfig::new("mongodb://app:pw@db.example:27017/?directConnection=true")
///     .with_credentials(MongoCredentials::new("app", "rotated"))
///     .with_default_database("orders");
/// let shown = format!("{config:?}");
/// assert!(!shown.contains("pw@") && !shown.contains("rotated"));
/// ```
#[derive(Clone)]
pub struct MongoConfig {
    /// Connection string (`mongodb://` or `mongodb+srv://`).
    pub uri: String,
    /// Credentials overriding the URI's user info.
    pub credentials: Option<MongoCredentials>,
    /// TLS settings overriding the URI's.
    pub tls: Option<TlsConfig>,
    /// Pool and timeouts.
    pub pool: PoolConfig,
    /// Default database; else the URI's path; else [`DEFAULT_DATABASE`].
    pub default_database: Option<String>,
    /// Application name reported to the server.
    pub app_name: String,
    /// How long tombstones of deleted documents are kept (a TTL index on every read model's
    /// physical collection): longer than any replay of the source, since a change older
    /// than a purged tombstone could bring its document back. 7 days by default.
    pub tombstone_retention: Duration,
}

impl MongoConfig {
    /// Settings from a connection string, with default pool settings.
    pub fn new(uri: impl Into<String>) -> Self {
        MongoConfig {
            uri: uri.into(),
            credentials: None,
            tls: None,
            pool: PoolConfig::default(),
            default_database: None,
            app_name: "cqrs-mongo".to_string(),
            tombstone_retention: DEFAULT_TOMBSTONE_RETENTION,
        }
    }

    /// Keeps tombstones this long (7 days by default).
    ///
    /// ```
    /// use std::time::Duration;
    /// let c = cqrs_mongo::MongoConfig::new("mongodb://h").with_tombstone_retention(Duration::from_secs(3600));
    /// assert_eq!(c.tombstone_retention, Duration::from_secs(3600));
    /// ```
    pub fn with_tombstone_retention(mut self, retention: Duration) -> Self {
        self.tombstone_retention = retention;
        self
    }

    /// Uses these credentials.
    pub fn with_credentials(mut self, credentials: MongoCredentials) -> Self {
        self.credentials = Some(credentials);
        self
    }

    /// Uses these TLS settings.
    pub fn with_tls(mut self, tls: TlsConfig) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Uses these pool settings.
    pub fn with_pool(mut self, pool: PoolConfig) -> Self {
        self.pool = pool;
        self
    }

    /// The server of `MONGODB_URI` (the environment variable services and the stack's
    /// `.env` use), with `database` as the default database.
    ///
    /// # Errors
    /// [`MongoError::Config`] when `MONGODB_URI` is unset.
    ///
    /// ```no_run
    /// let config = cqrs_mongo::MongoConfig::from_env("billing")?;
    /// # Ok::<(), cqrs_mongo::MongoError>(())
    /// ```
    pub fn from_env(database: impl Into<String>) -> Result<Self> {
        let uri = std::env::var("MONGODB_URI").map_err(|_| MongoError::Config {
            message: "MONGODB_URI is not set".into(),
        })?;
        Ok(Self::new(uri).with_default_database(database))
    }

    /// Uses this default database.
    pub fn with_default_database(mut self, name: impl Into<String>) -> Self {
        self.default_database = Some(name.into());
        self
    }

    async fn client_options(&self) -> Result<(ClientOptions, String)> {
        let mut options =
            ClientOptions::parse(&self.uri)
                .await
                .map_err(|e| MongoError::Config {
                    message: format!(
                        "cannot parse connection string {}: {}",
                        redact_uri(&self.uri),
                        redact_message(&e.to_string(), &self.uri)
                    ),
                })?;
        if let Some(c) = &self.credentials {
            options.credential = Some(
                Credential::builder()
                    .username(c.username.clone())
                    .password(c.password.expose().to_string())
                    .source(c.source.clone())
                    .build(),
            );
        }
        if let Some(tls) = &self.tls {
            options.tls = Some(if tls.enabled {
                let mut t = TlsOptions::default();
                t.ca_file_path = tls.ca_file.clone();
                t.cert_key_file_path = tls.cert_key_file.clone();
                t.allow_invalid_certificates = Some(tls.allow_invalid_certificates);
                Tls::Enabled(t)
            } else {
                Tls::Disabled
            });
        }
        options.max_pool_size = Some(self.pool.max_size);
        options.min_pool_size = Some(self.pool.min_size);
        options.max_idle_time = Some(self.pool.max_idle_time);
        options.connect_timeout = Some(self.pool.connect_timeout);
        options.server_selection_timeout = Some(self.pool.server_selection_timeout);
        options.app_name = Some(self.app_name.clone());
        let db = self
            .default_database
            .clone()
            .or_else(|| options.default_database.clone())
            .unwrap_or_else(|| DEFAULT_DATABASE.to_string());
        Ok((options, db))
    }
}

impl fmt::Debug for MongoConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MongoConfig")
            .field("uri", &redact_uri(&self.uri))
            .field("credentials", &self.credentials)
            .field("tls", &self.tls)
            .field("pool", &self.pool)
            .field("default_database", &self.default_database)
            .field("app_name", &self.app_name)
            .finish()
    }
}

/// The URI with the password of its user info replaced by `***`.
///
/// ```
/// assert_eq!(
///     cqrs_mongo::client::redact_uri("mongodb://u:p@h:1/db"),
///     "mongodb://u:***@h:1/db"
/// );
/// assert_eq!(cqrs_mongo::client::redact_uri("mongodb://h"), "mongodb://h");
/// ```
pub fn redact_uri(uri: &str) -> String {
    let Some((scheme, rest)) = uri.split_once("://") else {
        return "<unparseable uri>".to_string();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rfind('@') {
        Some(at) => {
            let userinfo = &authority[..at];
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{scheme}://{user}:***@{}{tail}", &authority[at + 1..])
        }
        None => uri.to_string(),
    }
}

fn redact_message(message: &str, uri: &str) -> String {
    let mut out = message.replace(uri, &redact_uri(uri));
    if let Some((_, rest)) = uri.split_once("://")
        && let Some(at) = rest[..rest.find(['/', '?']).unwrap_or(rest.len())].rfind('@')
        && let Some((_, password)) = rest[..at].split_once(':')
        && !password.is_empty()
    {
        out = out.replace(password, "***");
    }
    out
}

struct Current {
    client: Client,
    default_database: String,
    generation: u64,
}

struct Shared {
    config: RwLock<MongoConfig>,
    current: RwLock<Arc<Current>>,
    /// Where read models live, by (database, name): see [`crate::layout`].
    layouts: RwLock<HashMap<(String, String), Layout>>,
}

/// A handle on a MongoDB deployment: clonable, swappable.
///
/// Building one does not contact the server (the driver connects lazily): call
/// [`MongoClient::ping`] at start-up to fail early.
///
/// ```no_run
/// # async fn demo() -> cqrs_mongo::Result<()> {
/// use cqrs_mongo::{MongoCredentials, MongoClient, MongoConfig};
///
/// let mongo = MongoClient::connect(
///     MongoConfig::new("mongodb://127.0.0.1:27017/?directConnection=true")
///         .with_credentials(MongoCredentials::new("app", "from-vault")),
/// )
/// .await?;
/// mongo.ping().await?;
/// // later, when Vault hands out a new user:
/// mongo.rotate_credentials(MongoCredentials::new("app-2", "new-secret")).await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct MongoClient {
    shared: Arc<Shared>,
}

impl MongoClient {
    /// Builds a client from settings.
    pub async fn connect(config: MongoConfig) -> Result<Self> {
        let (options, default_database) = config.client_options().await?;
        let client = Client::with_options(options).map_err(|e| MongoError::Config {
            message: redact_message(&e.to_string(), &config.uri),
        })?;
        Ok(MongoClient {
            shared: Arc::new(Shared {
                config: RwLock::new(config),
                current: RwLock::new(Arc::new(Current {
                    client,
                    default_database,
                    generation: 0,
                })),
                layouts: RwLock::default(),
            }),
        })
    }

    /// Builds a client from a connection string with default settings.
    ///
    /// ```no_run
    /// # async fn demo() -> cqrs_mongo::Result<()> {
    /// let mongo = cqrs_mongo::MongoClient::from_uri("mongodb://127.0.0.1:27017/app").await?;
    /// assert_eq!(mongo.default_database_name(), "app");
    /// # Ok(()) }
    /// ```
    pub async fn from_uri(uri: &str) -> Result<Self> {
        Self::connect(MongoConfig::new(uri)).await
    }

    fn current(&self) -> Arc<Current> {
        match self.shared.current.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// The current driver client (cheap to clone). Do not keep it across credential
    /// rotations: ask the handle again.
    ///
    /// ```no_run
    /// # async fn demo(mongo: cqrs_mongo::MongoClient) {
    /// let names = mongo.client().list_database_names().await;
    /// # }
    /// ```
    pub fn client(&self) -> Client {
        self.current().client.clone()
    }

    /// Name of the default database.
    ///
    /// ```no_run
    /// # fn demo(mongo: cqrs_mongo::MongoClient) {
    /// println!("{}", mongo.default_database_name());
    /// # }
    /// ```
    pub fn default_database_name(&self) -> String {
        self.current().default_database.clone()
    }

    /// The default database.
    ///
    /// ```no_run
    /// # fn demo(mongo: cqrs_mongo::MongoClient) {
    /// let db = mongo.default_database();
    /// # }
    /// ```
    pub fn default_database(&self) -> Database {
        let current = self.current();
        current.client.database(&current.default_database)
    }

    /// A database by name, or the default one for `None`.
    ///
    /// ```no_run
    /// # fn demo(mongo: cqrs_mongo::MongoClient) {
    /// let db = mongo.database(Some("reporting"));
    /// # }
    /// ```
    pub fn database(&self, name: Option<&str>) -> Database {
        let current = self.current();
        current
            .client
            .database(name.unwrap_or(&current.default_database))
    }

    /// The cached layout of a read model, if resolved before.
    pub(crate) fn cached_layout(&self, db: &str, name: &str) -> Option<Layout> {
        let layouts = self.shared.layouts.read().ok()?;
        layouts.get(&(db.to_owned(), name.to_owned())).cloned()
    }

    pub(crate) fn cached_layout_keys(&self) -> Vec<(String, String)> {
        self.shared
            .layouts
            .read()
            .map(|l| l.keys().cloned().collect())
            .unwrap_or_default()
    }

    pub(crate) fn cache_layout(&self, layout: Layout) {
        if let Ok(mut layouts) = self.shared.layouts.write() {
            layouts.insert((layout.database.clone(), layout.name.clone()), layout);
        }
    }

    /// How long tombstones are kept ([`MongoConfig::with_tombstone_retention`]).
    pub fn tombstone_retention(&self) -> Duration {
        self.shared
            .config
            .read()
            .map(|c| c.tombstone_retention)
            .unwrap_or(DEFAULT_TOMBSTONE_RETENTION)
    }

    /// How many times the client was rebuilt (0 for the original).
    ///
    /// ```no_run
    /// # fn demo(mongo: cqrs_mongo::MongoClient) {
    /// assert_eq!(mongo.generation(), 0);
    /// # }
    /// ```
    pub fn generation(&self) -> u64 {
        self.current().generation
    }

    /// Checks that the server answers (and that the credentials are accepted).
    ///
    /// ```no_run
    /// # async fn demo(mongo: cqrs_mongo::MongoClient) -> cqrs_mongo::Result<()> {
    /// mongo.ping().await?;
    /// # Ok(()) }
    /// ```
    pub async fn ping(&self) -> Result<()> {
        ping(&self.default_database()).await
    }

    /// Rebuilds the driver client with new credentials and swaps it in, once the new one
    /// has answered a ping. On failure the old client stays in use.
    ///
    /// Operations already running finish on the old client.
    ///
    /// ```no_run
    /// # async fn demo(mongo: cqrs_mongo::MongoClient) -> cqrs_mongo::Result<()> {
    /// mongo.rotate_credentials(cqrs_mongo::MongoCredentials::new("app-v2", "pw")).await?;
    /// # Ok(()) }
    /// ```
    pub async fn rotate_credentials(&self, credentials: MongoCredentials) -> Result<()> {
        let config = {
            let guard = match self.shared.config.read() {
                Ok(g) => g,
                Err(p) => p.into_inner(),
            };
            guard.clone().with_credentials(credentials)
        };
        self.rebuild(config).await
    }

    /// Rebuilds the driver client from new settings (ping first, then swap).
    ///
    /// ```no_run
    /// # async fn demo(mongo: cqrs_mongo::MongoClient) -> cqrs_mongo::Result<()> {
    /// mongo.rebuild(cqrs_mongo::MongoConfig::new("mongodb://other-host:27017")).await?;
    /// # Ok(()) }
    /// ```
    pub async fn rebuild(&self, config: MongoConfig) -> Result<()> {
        let (options, default_database) = config.client_options().await?;
        let client = Client::with_options(options).map_err(|e| MongoError::Config {
            message: redact_message(&e.to_string(), &config.uri),
        })?;
        ping(&client.database(&default_database)).await?;
        let generation = self.generation() + 1;
        {
            let mut current = match self.shared.current.write() {
                Ok(g) => g,
                Err(p) => p.into_inner(),
            };
            *current = Arc::new(Current {
                client,
                default_database,
                generation,
            });
        }
        let mut stored = match self.shared.config.write() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        *stored = config;
        tracing::info!(generation, "MongoDB client rebuilt");
        Ok(())
    }

    /// A repository for a read model (in the model's database, or the default one).
    ///
    /// ```no_run
    /// # use cqrs_mongo::{MongoClient, MongoReadModel};
    /// # fn demo<M: MongoReadModel>(mongo: MongoClient) {
    /// let repo = mongo.repository::<M>();
    /// # }
    /// ```
    pub fn repository<M: MongoReadModel>(&self) -> Repository<M> {
        Repository::new(self.clone())
    }

    /// A bulk writer for untyped guarded writes (the sync-service's entry point).
    ///
    /// ```no_run
    /// # fn demo(mongo: cqrs_mongo::MongoClient) {
    /// let writer = mongo.bulk_writer();
    /// # }
    /// ```
    pub fn bulk_writer(&self) -> BulkWriter {
        BulkWriter::new(self.clone())
    }

    /// The checkpoint store in the default database (collection
    /// [`CHECKPOINTS_COLLECTION`](crate::checkpoint::CHECKPOINTS_COLLECTION)).
    ///
    /// ```no_run
    /// # fn demo(mongo: cqrs_mongo::MongoClient) {
    /// let checkpoints = mongo.checkpoints();
    /// # }
    /// ```
    pub fn checkpoints(&self) -> CheckpointStore {
        CheckpointStore::new(self.clone())
    }
}

impl fmt::Debug for MongoClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let current = self.current();
        f.debug_struct("MongoClient")
            .field("default_database", &current.default_database)
            .field("generation", &current.generation)
            .finish_non_exhaustive()
    }
}

async fn ping(db: &Database) -> Result<()> {
    db.run_command(doc! { "ping": 1 })
        .await
        .map(|_| ())
        .map_err(|e| MongoError::mongo("ping", db.name(), None, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords() {
        assert_eq!(
            redact_uri("mongodb://u:p%40ss@h1:1,h2:2/db?tls=true"),
            "mongodb://u:***@h1:1,h2:2/db?tls=true"
        );
        assert_eq!(redact_uri("nonsense"), "<unparseable uri>");
        assert_eq!(
            redact_message("bad mongodb://u:secret@h x secret", "mongodb://u:secret@h"),
            "bad mongodb://u:***@h x ***"
        );
    }
}
