//! Where Vault is and how to log in.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::{Result, VaultError};
use cqrs_core::Secret;

/// A secret given directly or read from a file (trailing whitespace trimmed) each time it
/// is needed, so a file rotated on disk is picked up at the next login.
///
/// ```
/// use cqrs_vault::SecretSource;
///
/// let from_file = SecretSource::file("/run/secrets/secret_id");
/// let inline = SecretSource::value("s.abc");
/// assert!(!format!("{inline:?}").contains("s.abc"));
/// # let _ = from_file;
/// ```
#[derive(Clone)]
pub enum SecretSource {
    /// The value itself.
    Value(Secret),
    /// A file holding the value.
    File(PathBuf),
}

impl SecretSource {
    /// A value.
    pub fn value(value: impl Into<Secret>) -> Self {
        SecretSource::Value(value.into())
    }

    /// A file.
    pub fn file(path: impl Into<PathBuf>) -> Self {
        SecretSource::File(path.into())
    }

    /// Reads the secret (from the file, if it is one).
    ///
    /// # Errors
    /// [`VaultError::ReadFile`] when the file cannot be read, [`VaultError::Config`] when
    /// it is empty.
    ///
    /// ```
    /// let s = cqrs_vault::SecretSource::value("x").load("token").unwrap();
    /// assert_eq!(s.expose(), "x");
    /// ```
    pub fn load(&self, what: &'static str) -> Result<Secret> {
        match self {
            SecretSource::Value(v) => Ok(v.clone()),
            SecretSource::File(path) => {
                let text =
                    std::fs::read_to_string(path).map_err(|source| VaultError::ReadFile {
                        what,
                        path: path.clone(),
                        source,
                    })?;
                let trimmed = text.trim();
                if trimmed.is_empty() {
                    return Err(VaultError::Config(format!(
                        "the {what} file {} is empty",
                        path.display()
                    )));
                }
                Ok(Secret::new(trimmed))
            }
        }
    }
}

impl fmt::Debug for SecretSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretSource::Value(_) => f.write_str("Value(<redacted>)"),
            SecretSource::File(path) => f.debug_tuple("File").field(path).finish(),
        }
    }
}

/// How the client logs in.
///
/// ```
/// use cqrs_vault::{Auth, SecretSource};
///
/// let approle = Auth::approle_files("/work/main/.stack/vault/approle/orders");
/// let token = Auth::Token(SecretSource::value("dev-root-token"));
/// assert!(!format!("{token:?}").contains("dev-root-token"));
/// # let _ = approle;
/// ```
#[derive(Clone, Debug)]
pub enum Auth {
    /// A token given to the process. Renewed when renewable; cannot be replaced when it
    /// reaches its maximum TTL.
    Token(SecretSource),
    /// AppRole login (role id + secret id); the client logs in again before its token
    /// reaches its maximum TTL.
    AppRole {
        /// Role id.
        role_id: SecretSource,
        /// Secret id.
        secret_id: SecretSource,
        /// Mount path of the AppRole auth method (`approle`).
        mount: String,
    },
}

impl Auth {
    /// AppRole with `role_id` and `secret_id` files in `dir` (the layout the stack's
    /// bootstrap writes: `$CQRS_STATE_DIR/vault/approle/<service>/`), mount `approle`.
    pub fn approle_files(dir: impl AsRef<Path>) -> Self {
        let dir = dir.as_ref();
        Auth::AppRole {
            role_id: SecretSource::file(dir.join("role_id")),
            secret_id: SecretSource::file(dir.join("secret_id")),
            mount: "approle".into(),
        }
    }

    /// AppRole with values, mount `approle`.
    pub fn approle(role_id: impl Into<Secret>, secret_id: impl Into<Secret>) -> Self {
        Auth::AppRole {
            role_id: SecretSource::Value(role_id.into()),
            secret_id: SecretSource::Value(secret_id.into()),
            mount: "approle".into(),
        }
    }
}

/// Exponential backoff between retries when Vault is unreachable.
///
/// ```
/// use cqrs_vault::RetryOptions;
/// use std::time::Duration;
///
/// let retry = RetryOptions { initial: Duration::from_millis(200), max: Duration::from_secs(5) };
/// assert!(retry.initial < retry.max);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryOptions {
    /// First delay.
    pub initial: Duration,
    /// Longest delay.
    pub max: Duration,
}

impl Default for RetryOptions {
    fn default() -> Self {
        RetryOptions {
            initial: Duration::from_millis(500),
            max: Duration::from_secs(30),
        }
    }
}

/// Everything needed to talk to Vault/OpenBao.
///
/// ```
/// use cqrs_vault::{Auth, VaultConfig};
/// use std::time::Duration;
///
/// let config = VaultConfig::new("https://vault.internal:8200", Auth::approle_files("/etc/orders/vault"))
///     .ca_file("/etc/ssl/vault-ca.pem")
///     .namespace("team-a")
///     .request_timeout(Duration::from_secs(3));
/// assert_eq!(config.address(), "https://vault.internal:8200");
/// ```
#[derive(Clone, Debug)]
pub struct VaultConfig {
    pub(crate) address: String,
    pub(crate) auth: Auth,
    pub(crate) ca_file: Option<PathBuf>,
    pub(crate) namespace: Option<String>,
    pub(crate) request_timeout: Duration,
    pub(crate) retry: RetryOptions,
    pub(crate) renew_fraction: f64,
}

impl VaultConfig {
    /// Server address (`http(s)://host:port`) and login.
    pub fn new(address: impl Into<String>, auth: Auth) -> Self {
        VaultConfig {
            address: address.into().trim_end_matches('/').to_owned(),
            auth,
            ca_file: None,
            namespace: None,
            request_timeout: Duration::from_secs(5),
            retry: RetryOptions::default(),
            renew_fraction: 2.0 / 3.0,
        }
    }

    /// From the environment variables Vault's own CLI reads: `VAULT_ADDR` (or `BAO_ADDR`),
    /// `VAULT_CACERT`, `VAULT_NAMESPACE`; AppRole when `VAULT_ROLE_ID` or
    /// `VAULT_ROLE_ID_FILE` is set (with `VAULT_SECRET_ID` / `VAULT_SECRET_ID_FILE`,
    /// `VAULT_APPROLE_MOUNT`), else `VAULT_TOKEN` (or `BAO_TOKEN`, `VAULT_TOKEN_FILE`).
    ///
    /// # Errors
    /// [`VaultError::Config`] naming the missing variable.
    ///
    /// ```no_run
    /// let config = cqrs_vault::VaultConfig::from_env()?;
    /// # Ok::<(), cqrs_vault::VaultError>(())
    /// ```
    pub fn from_env() -> Result<Self> {
        Self::from_lookup(|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
    }

    /// Like [`VaultConfig::from_env`] with another source of variables.
    ///
    /// ```
    /// use std::collections::HashMap;
    /// let vars = HashMap::from([("VAULT_ADDR", "http://127.0.0.1:8200"), ("VAULT_TOKEN", "t")]);
    /// let config = cqrs_vault::VaultConfig::from_lookup(|k| vars.get(k).map(|v| v.to_string()))?;
    /// assert_eq!(config.address(), "http://127.0.0.1:8200");
    /// # Ok::<(), cqrs_vault::VaultError>(())
    /// ```
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let address = get("VAULT_ADDR")
            .or_else(|| get("BAO_ADDR"))
            .ok_or_else(|| VaultError::Config("VAULT_ADDR is not set".into()))?;
        let source = |value: &str, file: &str| {
            get(value)
                .map(SecretSource::value)
                .or_else(|| get(file).map(SecretSource::file))
        };
        let auth = if let Some(role_id) = source("VAULT_ROLE_ID", "VAULT_ROLE_ID_FILE") {
            let secret_id = source("VAULT_SECRET_ID", "VAULT_SECRET_ID_FILE").ok_or_else(|| {
                VaultError::Config(
                    "VAULT_ROLE_ID is set but neither VAULT_SECRET_ID nor VAULT_SECRET_ID_FILE"
                        .into(),
                )
            })?;
            Auth::AppRole {
                role_id,
                secret_id,
                mount: get("VAULT_APPROLE_MOUNT").unwrap_or_else(|| "approle".into()),
            }
        } else if let Some(token) = source("VAULT_TOKEN", "VAULT_TOKEN_FILE")
            .or_else(|| get("BAO_TOKEN").map(SecretSource::value))
        {
            Auth::Token(token)
        } else {
            return Err(VaultError::Config(
                "neither VAULT_ROLE_ID(_FILE) nor VAULT_TOKEN(_FILE) is set".into(),
            ));
        };
        let mut config = VaultConfig::new(address, auth);
        if let Some(ca) = get("VAULT_CACERT") {
            config = config.ca_file(ca);
        }
        if let Some(ns) = get("VAULT_NAMESPACE") {
            config = config.namespace(ns);
        }
        Ok(config)
    }

    /// Trusts the CA certificates of this PEM file for the server's TLS certificate.
    pub fn ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.ca_file = Some(path.into());
        self
    }

    /// Sends every request in this namespace (`X-Vault-Namespace`).
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        let ns = namespace.into();
        self.namespace = (!ns.is_empty()).then_some(ns);
        self
    }

    /// Timeout of one HTTP request (default 5 s).
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Backoff between retries when Vault is unreachable (default 0.5 s doubling to 30 s).
    pub fn retry(mut self, retry: RetryOptions) -> Self {
        self.retry = retry;
        self
    }

    /// Fraction of a token's TTL after which it is renewed (default 2/3, clamped to
    /// 0.1..=0.9).
    pub fn renew_fraction(mut self, fraction: f64) -> Self {
        self.renew_fraction = fraction.clamp(0.1, 0.9);
        self
    }

    /// The server address.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// The login method.
    pub fn auth(&self) -> &Auth {
        &self.auth
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn env_approle_and_token() {
        let vars = HashMap::from([
            ("VAULT_ADDR", "http://v:8200/"),
            ("VAULT_ROLE_ID", "rid-secret"),
            ("VAULT_SECRET_ID_FILE", "/x/secret_id"),
            ("VAULT_TOKEN", "tok-secret"),
            ("VAULT_NAMESPACE", "ns1"),
        ]);
        let c = VaultConfig::from_lookup(|k| vars.get(k).map(|v| v.to_string())).unwrap();
        assert_eq!(c.address(), "http://v:8200");
        assert!(matches!(c.auth(), Auth::AppRole { .. }));
        assert_eq!(c.namespace.as_deref(), Some("ns1"));
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("rid-secret") && !shown.contains("tok-secret"),
            "{shown}"
        );

        let vars = HashMap::from([("BAO_ADDR", "http://v"), ("BAO_TOKEN", "tok")]);
        let c = VaultConfig::from_lookup(|k| vars.get(k).map(|v| v.to_string())).unwrap();
        assert!(matches!(c.auth(), Auth::Token(_)));

        let vars = HashMap::from([("VAULT_ADDR", "http://v"), ("VAULT_ROLE_ID", "r")]);
        let err = VaultConfig::from_lookup(|k| vars.get(k).map(|v| v.to_string())).unwrap_err();
        assert!(err.to_string().contains("VAULT_SECRET_ID"));
    }

    #[test]
    fn file_source_trims_and_reports_path() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("secret_id");
        std::fs::write(&p, "abc\n").unwrap();
        assert_eq!(
            SecretSource::file(&p).load("secret id").unwrap().expose(),
            "abc"
        );
        std::fs::write(&p, "  \n").unwrap();
        assert!(SecretSource::file(&p).load("secret id").is_err());
        let err = SecretSource::file(dir.path().join("nope"))
            .load("secret id")
            .unwrap_err();
        assert!(err.to_string().contains("secret id"), "{err}");
    }
}
