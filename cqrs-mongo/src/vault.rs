//! MongoDB credentials from a Vault/OpenBao KV v2 secret (feature `vault`).
//!
//! OpenBao has no MongoDB database plugin, so the credentials live in a KV v2 secret
//! (`secret/cqrs/<service>/mongodb` in the stack: `username`, `password`, `uri`,
//! `database`). [`VaultMongo`] builds a [`MongoClient`] from the current version and
//! rebuilds it whenever a new version appears: the new driver client is pinged first and
//! swapped in only then, operations already running finish on the old one, so reads and
//! writes keep succeeding across the change.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use cqrs_vault::{KvOptions, KvSecret, KvVersion, VaultClient, VaultError};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::client::{MongoClient, MongoConfig, MongoCredentials};

/// Why [`VaultMongo::connect`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VaultMongoError {
    /// The secret could not be read.
    #[error("vault: {0}")]
    Vault(#[from] VaultError),
    /// The client could not be built from it.
    #[error("mongodb: {0}")]
    Mongo(#[from] crate::error::MongoError),
}

/// Which fields of the secret are used.
///
/// ```
/// use cqrs_mongo::vault::MongoVaultOptions;
///
/// // A server without authentication (the local stack): only watch the URI/database.
/// let options = MongoVaultOptions { use_credentials: false, ..MongoVaultOptions::default() };
/// assert!(options.use_uri);
/// ```
#[derive(Debug, Clone)]
pub struct MongoVaultOptions {
    /// Mount and polling interval of the KV v2 secret.
    pub kv: KvOptions,
    /// Log in with the secret's `username` / `password` (default true). Turn it off for a
    /// server running without authentication.
    pub use_credentials: bool,
    /// Connect to the secret's `uri` when it has one, instead of the base configuration's
    /// (default true).
    pub use_uri: bool,
    /// Authentication database (`admin` when `None`, or the secret's `auth_source`).
    pub auth_source: Option<String>,
    /// Delay between attempts when a rebuild fails (the old client stays in use).
    pub retry_delay: Duration,
}

impl Default for MongoVaultOptions {
    fn default() -> Self {
        MongoVaultOptions {
            kv: KvOptions::default(),
            use_credentials: true,
            use_uri: true,
            auth_source: None,
            retry_delay: Duration::from_secs(5),
        }
    }
}

/// A [`MongoClient`] whose settings come from a KV v2 secret and follow its new versions.
///
/// ```no_run
/// use cqrs_mongo::{MongoConfig, vault::{MongoVaultOptions, VaultMongo}};
/// use cqrs_vault::{Auth, VaultClient, VaultConfig};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let vault = VaultClient::connect(VaultConfig::new(
///     "http://127.0.0.1:8200",
///     Auth::approle_files("/work/main/.stack/vault/approle/orders"),
/// ))
/// .await?;
/// let base = MongoConfig::new("mongodb://127.0.0.1:27017/?directConnection=true");
/// let mongo = VaultMongo::connect(base, &vault, "cqrs/orders/mongodb", MongoVaultOptions::default()).await?;
/// let repo_client = mongo.client().clone(); // hand this to repositories, bulk writers...
/// # let _ = repo_client;
/// # Ok(()) }
/// ```
pub struct VaultMongo {
    client: MongoClient,
    secret: KvSecret,
    follower: JoinHandle<()>,
}

impl fmt::Debug for VaultMongo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VaultMongo")
            .field("client", &self.client)
            .field("secret", &self.secret)
            .finish()
    }
}

impl VaultMongo {
    /// Reads the secret at `path` (relative to the KV mount), connects with it (the driver
    /// connects lazily: call [`MongoClient::ping`] to fail early) and follows its new
    /// versions.
    ///
    /// # Errors
    /// [`VaultMongoError::Vault`] when the secret cannot be read,
    /// [`VaultMongoError::Mongo`] when the settings are unusable.
    ///
    /// ```no_run
    /// # async fn run(vault: cqrs_vault::VaultClient) -> Result<(), cqrs_mongo::vault::VaultMongoError> {
    /// let base = cqrs_mongo::MongoConfig::new("mongodb://127.0.0.1:27017");
    /// let mongo = cqrs_mongo::vault::VaultMongo::connect(base, &vault, "cqrs/orders/mongodb", Default::default()).await?;
    /// # Ok(()) }
    /// ```
    pub async fn connect(
        base: MongoConfig,
        vault: &VaultClient,
        path: &str,
        options: MongoVaultOptions,
    ) -> Result<Self, VaultMongoError> {
        let secret = KvSecret::start(vault, path, options.kv.clone()).await?;
        let mut versions = secret.subscribe();
        let current = versions.borrow_and_update().clone();
        let client = MongoClient::connect(config_from(&base, &current, &options)).await?;
        let follower = tokio::spawn(follow(versions, client.clone(), base, options));
        Ok(VaultMongo {
            client,
            secret,
            follower,
        })
    }

    /// The client (clones follow the rebuilds).
    pub fn client(&self) -> &MongoClient {
        &self.client
    }

    /// The version of the secret seen last (the client may still be rebuilding).
    pub fn secret_version(&self) -> u64 {
        self.secret.current().version
    }

    /// Stops following the secret (the client keeps its current settings).
    ///
    /// ```no_run
    /// # async fn run(mongo: cqrs_mongo::vault::VaultMongo) { mongo.stop().await; }
    /// ```
    pub async fn stop(self) {
        self.follower.abort();
        self.secret.stop().await;
    }
}

/// The client settings for one version of the secret.
///
/// ```
/// use cqrs_mongo::{MongoConfig, vault::{MongoVaultOptions, config_from}};
/// use cqrs_vault::KvVersion;
///
/// let secret = KvVersion::from_pairs(2, [
///     ("username", "svc_orders"), ("password", "pw"),
///     ("uri", "mongodb://db:27017/?directConnection=true"), ("database", "orders"),
/// ]);
/// let config = config_from(&MongoConfig::new("mongodb://localhost"), &secret, &MongoVaultOptions::default());
/// assert_eq!(config.uri, "mongodb://db:27017/?directConnection=true");
/// assert_eq!(config.credentials.as_ref().map(|c| c.username.as_str()), Some("svc_orders"));
/// assert_eq!(config.default_database.as_deref(), Some("orders"));
/// ```
pub fn config_from(
    base: &MongoConfig,
    secret: &KvVersion,
    options: &MongoVaultOptions,
) -> MongoConfig {
    let mut config = base.clone();
    let get = |k: &str| secret.get(k).map(|v| v.expose().to_owned());
    if options.use_uri
        && let Some(uri) = get("uri").filter(|u| !u.is_empty())
    {
        config.uri = uri;
    }
    if config.default_database.is_none()
        && let Some(db) = get("database").filter(|d| !d.is_empty())
    {
        config.default_database = Some(db);
    }
    if options.use_credentials
        && let (Some(user), Some(password)) = (get("username"), get("password"))
    {
        let mut creds = MongoCredentials::new(user, password);
        if let Some(source) = options.auth_source.clone().or_else(|| get("auth_source")) {
            creds = creds.with_source(source);
        }
        config.credentials = Some(creds);
    }
    config
}

async fn follow(
    mut versions: watch::Receiver<Arc<KvVersion>>,
    client: MongoClient,
    base: MongoConfig,
    options: MongoVaultOptions,
) {
    while versions.changed().await.is_ok() {
        loop {
            let version = versions.borrow_and_update().clone();
            match client.rebuild(config_from(&base, &version, &options)).await {
                Ok(()) => {
                    tracing::info!(
                        target: "cqrs_mongo",
                        version = version.version,
                        generation = client.generation(),
                        "MongoDB client rebuilt from a new Vault secret version"
                    );
                    break;
                }
                Err(e) => {
                    tracing::warn!(
                        target: "cqrs_mongo",
                        version = version.version,
                        error = %e,
                        "cannot rebuild the MongoDB client from the new secret version; keeping the current client"
                    );
                    // Retry, unless a newer version arrives first.
                    tokio::select! {
                        _ = tokio::time::sleep(options.retry_delay) => {}
                        changed = versions.changed() => if changed.is_err() { return; },
                    }
                }
            }
        }
    }
}
