//! `[vault]` (feature `vault`): the MongoDB settings and credentials of the sync-service
//! from a Vault/OpenBao KV v2 secret, followed across new versions.
//!
//! ```toml
//! [vault]
//! address = "${VAULT_ADDR}"
//! # AppRole (files as written by the stack's bootstrap), or `token = "${VAULT_TOKEN}"`
//! role_id_file = "${CQRS_STATE_DIR}/vault/approle/orders/role_id"
//! secret_id_file = "${CQRS_STATE_DIR}/vault/approle/orders/secret_id"
//! mongodb_secret = "cqrs/orders/mongodb"   # under the KV v2 mount `kv_mount`
//! # ca_file = "/etc/ssl/vault-ca.pem"
//! # namespace = "team-a"
//! # poll_interval_ms = 30000
//! # use_credentials = false                # a MongoDB server without authentication
//! ```

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use cqrs_mongo::MongoClient;
use cqrs_mongo::vault::{MongoVaultOptions, VaultMongo, VaultMongoError};
use cqrs_vault::{Auth, KvOptions, Secret, SecretSource, VaultClient, VaultConfig, VaultError};
use serde::Deserialize;

use super::ConfigError;

/// The `[vault]` section.
///
/// ```
/// # #[cfg(feature = "vault")] {
/// use sync_service::config::vault::VaultSection;
///
/// let section: VaultSection = toml::from_str(r#"
///     address = "http://127.0.0.1:8200"
///     role_id_file = "/run/approle/role_id"
///     secret_id_file = "/run/approle/secret_id"
///     mongodb_secret = "cqrs/orders/mongodb"
/// "#).unwrap();
/// section.validate().unwrap();
/// # }
/// ```
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VaultSection {
    /// Server address (`http(s)://host:port`).
    pub address: String,
    /// CA certificates (PEM) to verify the server with.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Namespace (`X-Vault-Namespace`).
    #[serde(default)]
    pub namespace: Option<String>,
    /// A token (instead of AppRole).
    #[serde(default)]
    pub token: Option<Secret>,
    /// A file holding the token.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// AppRole role id.
    #[serde(default)]
    pub role_id: Option<Secret>,
    /// A file holding the role id.
    #[serde(default)]
    pub role_id_file: Option<PathBuf>,
    /// AppRole secret id.
    #[serde(default)]
    pub secret_id: Option<Secret>,
    /// A file holding the secret id.
    #[serde(default)]
    pub secret_id_file: Option<PathBuf>,
    /// Mount of the AppRole auth method.
    #[serde(default = "default_approle_mount")]
    pub approle_mount: String,
    /// Path of the MongoDB secret under the KV v2 mount (`username`, `password`, `uri`,
    /// `database`).
    pub mongodb_secret: String,
    /// Mount of the KV v2 engine.
    #[serde(default = "default_kv_mount")]
    pub kv_mount: String,
    /// How often the secret is checked for a new version, in milliseconds.
    #[serde(default = "default_poll_ms")]
    pub poll_interval_ms: u64,
    /// Log in to MongoDB with the secret's `username`/`password` (false for a server
    /// without authentication, like the local stack's).
    #[serde(default = "default_true")]
    pub use_credentials: bool,
    /// Timeout of one request to Vault, in milliseconds.
    #[serde(default = "default_timeout_ms")]
    pub request_timeout_ms: u64,
}

fn default_approle_mount() -> String {
    "approle".into()
}
fn default_kv_mount() -> String {
    "secret".into()
}
fn default_poll_ms() -> u64 {
    30_000
}
fn default_true() -> bool {
    true
}
fn default_timeout_ms() -> u64 {
    5_000
}

impl fmt::Debug for VaultSection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VaultSection")
            .field("address", &self.address)
            .field("ca_file", &self.ca_file)
            .field("namespace", &self.namespace)
            .field("auth", &self.auth().ok())
            .field("mongodb_secret", &self.mongodb_secret)
            .field("kv_mount", &self.kv_mount)
            .field("poll_interval_ms", &self.poll_interval_ms)
            .field("use_credentials", &self.use_credentials)
            .finish()
    }
}

/// Why the MongoDB client could not be set up from Vault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VaultSetupError {
    /// The section is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Vault refused or could not be reached.
    #[error("vault: {0}")]
    Vault(#[from] VaultError),
    /// The secret could not be turned into a client.
    #[error(transparent)]
    Mongo(#[from] VaultMongoError),
}

/// The Vault client and the MongoDB client following the secret; keep it alive as long
/// as the service runs.
#[derive(Debug)]
pub struct VaultMongoHandle {
    /// The Vault client (token renewal runs while it lives).
    pub vault: VaultClient,
    /// The MongoDB client following the secret.
    pub mongo: VaultMongo,
}

impl VaultMongoHandle {
    /// The MongoDB client (clones follow the rebuilds).
    pub fn client(&self) -> &MongoClient {
        self.mongo.client()
    }
}

impl VaultSection {
    fn auth(&self) -> Result<Auth, ConfigError> {
        let source = |value: &Option<Secret>, file: &Option<PathBuf>| match (value, file) {
            (Some(v), None) => Ok(Some(SecretSource::Value(v.clone()))),
            (None, Some(f)) => Ok(Some(SecretSource::File(f.clone()))),
            (None, None) => Ok(None),
            (Some(_), Some(_)) => Err(()),
        };
        let role_id = source(&self.role_id, &self.role_id_file).map_err(|()| {
            ConfigError::key("vault.role_id", "set role_id or role_id_file, not both")
        })?;
        let secret_id = source(&self.secret_id, &self.secret_id_file).map_err(|()| {
            ConfigError::key(
                "vault.secret_id",
                "set secret_id or secret_id_file, not both",
            )
        })?;
        let token = source(&self.token, &self.token_file)
            .map_err(|()| ConfigError::key("vault.token", "set token or token_file, not both"))?;
        match (role_id, secret_id, token) {
            (Some(role_id), Some(secret_id), None) => Ok(Auth::AppRole {
                role_id,
                secret_id,
                mount: self.approle_mount.clone(),
            }),
            (Some(_), None, _) => Err(ConfigError::key(
                "vault.secret_id",
                "AppRole needs secret_id or secret_id_file",
            )),
            (None, Some(_), _) => Err(ConfigError::key(
                "vault.role_id",
                "AppRole needs role_id or role_id_file",
            )),
            (None, None, Some(token)) => Ok(Auth::Token(token)),
            (Some(_), Some(_), Some(_)) => Err(ConfigError::key(
                "vault.token",
                "set either a token or an AppRole, not both",
            )),
            (None, None, None) => Err(ConfigError::key(
                "vault",
                "no login: set role_id(_file) + secret_id(_file), or token(_file)",
            )),
        }
    }

    /// Checks the section; errors name the key.
    ///
    /// # Errors
    /// [`ConfigError::Key`].
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(self.address.starts_with("http://") || self.address.starts_with("https://")) {
            return Err(ConfigError::key(
                "vault.address",
                "must start with http:// or https://",
            ));
        }
        self.auth()?;
        if self.mongodb_secret.trim_matches('/').is_empty() {
            return Err(ConfigError::key(
                "vault.mongodb_secret",
                "must not be empty",
            ));
        }
        if self.poll_interval_ms == 0 {
            return Err(ConfigError::key(
                "vault.poll_interval_ms",
                "must be positive",
            ));
        }
        if self.request_timeout_ms == 0 {
            return Err(ConfigError::key(
                "vault.request_timeout_ms",
                "must be positive",
            ));
        }
        Ok(())
    }

    /// The client configuration.
    ///
    /// # Errors
    /// As [`VaultSection::validate`].
    pub fn client_config(&self) -> Result<VaultConfig, ConfigError> {
        self.validate()?;
        let mut config = VaultConfig::new(&self.address, self.auth()?)
            .request_timeout(Duration::from_millis(self.request_timeout_ms));
        if let Some(ca) = &self.ca_file {
            config = config.ca_file(ca);
        }
        if let Some(ns) = &self.namespace {
            config = config.namespace(ns);
        }
        Ok(config)
    }

    /// Logs in to Vault, reads the MongoDB secret and builds the client from it (`base`
    /// supplies what the secret does not: pool, TLS, the default database when the
    /// secret has none), following new versions of the secret.
    ///
    /// # Errors
    /// [`VaultSetupError`].
    pub async fn connect_mongo(
        &self,
        base: cqrs_mongo::MongoConfig,
    ) -> Result<VaultMongoHandle, VaultSetupError> {
        let vault = VaultClient::connect(self.client_config()?).await?;
        let options = MongoVaultOptions {
            kv: KvOptions {
                mount: self.kv_mount.clone(),
                poll_interval: Duration::from_millis(self.poll_interval_ms),
            },
            use_credentials: self.use_credentials,
            ..MongoVaultOptions::default()
        };
        let mongo = VaultMongo::connect(base, &vault, &self.mongodb_secret, options).await?;
        Ok(VaultMongoHandle { vault, mongo })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> VaultSection {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn approle_files_token_and_errors() {
        let s = parse(
            r#"address = "http://127.0.0.1:8200"
               role_id = "rid-very-secret"
               secret_id = "sid-very-secret"
               mongodb_secret = "cqrs/orders/mongodb""#,
        );
        s.validate().unwrap();
        assert!(matches!(s.auth().unwrap(), Auth::AppRole { .. }));
        let shown = format!("{s:?}");
        assert!(!shown.contains("very-secret"), "{shown}");

        let s = parse(
            r#"address = "http://v" 
               token = "tok-very-secret"
               mongodb_secret = "x""#,
        );
        assert!(matches!(s.auth().unwrap(), Auth::Token(_)));
        assert!(!format!("{s:?}").contains("very-secret"));

        let s = parse(
            r#"address = "http://v" 
               role_id_file = "/r"
               mongodb_secret = "x""#,
        );
        let err = s.validate().unwrap_err();
        assert!(err.to_string().contains("vault.secret_id"), "{err}");

        let s = parse(
            r#"address = "v:8200" 
               token = "t"
               mongodb_secret = "x""#,
        );
        assert!(
            s.validate()
                .unwrap_err()
                .to_string()
                .contains("vault.address")
        );

        let bad: Result<VaultSection, _> = toml::from_str(
            r#"address = "http://v"
               token = "t"
               mongodb_secret = "x"
               unknown_key = 1"#,
        );
        assert!(bad.is_err());
    }
}
