//! Connection and pool configuration: where the server is, who to log in as, TLS, pool
//! size and timeouts, and the service's schema.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio_postgres::config::Host;

use crate::credentials::{CredentialProvider, Credentials, Secret, StaticCredentials};
use crate::error::PostgresError;
use crate::schema::SchemaName;
use crate::tls::TlsConfig;

/// Size and timeouts of the connection pool.
///
/// ```
/// use cqrs_postgres::PoolConfig;
/// use std::time::Duration;
///
/// let options = PoolConfig { max_size: 32, ..PoolConfig::default() };
/// assert_eq!(options.wait_timeout, Some(Duration::from_secs(5)));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolConfig {
    /// Most connections open at once.
    pub max_size: usize,
    /// How long a caller waits for a free connection before a (transient) error.
    pub wait_timeout: Option<Duration>,
    /// How long opening a new connection may take.
    pub create_timeout: Option<Duration>,
    /// How long the health check of an idle connection may take.
    pub recycle_timeout: Option<Duration>,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            max_size: 16,
            wait_timeout: Some(Duration::from_secs(5)),
            create_timeout: Some(Duration::from_secs(5)),
            recycle_timeout: Some(Duration::from_secs(5)),
        }
    }
}

/// Everything needed to open the pool of one service: server, credentials, TLS, pool
/// options and the service's schema.
///
/// Build it from a URL or from parts. The password is kept in the
/// [`CredentialProvider`], never printed: `Debug` shows `<redacted>`.
///
/// ```
/// use cqrs_postgres::{PostgresConfig, TlsConfig};
///
/// let config = PostgresConfig::from_url(
///     "postgres://svc_orders:s3cret@db.internal:5432/cqrs?sslmode=verify-full&sslrootcert=/etc/ssl/pg-ca.pem",
///     "orders",
/// )?
/// .with_max_connections(32);
///
/// assert_eq!(config.schema().as_str(), "orders");
/// assert_eq!(config.tls(), &TlsConfig::VerifyFull { ca_file: Some("/etc/ssl/pg-ca.pem".into()) });
/// assert!(!format!("{config:?}").contains("s3cret"));
/// # Ok::<(), cqrs_postgres::PostgresError>(())
/// ```
#[derive(Clone)]
pub struct PostgresConfig {
    /// Server, database and session settings; never holds user or password.
    connection: tokio_postgres::Config,
    credentials: Arc<dyn CredentialProvider>,
    tls: TlsConfig,
    schema: SchemaName,
    pool: PoolConfig,
}

impl PostgresConfig {
    /// The connection of `DATABASE_URL` (the environment variable services and the stack's
    /// `.env` use) for service schema `schema`.
    ///
    /// # Errors
    /// [`PostgresError::Config`] when `DATABASE_URL` is unset or unparsable, and as
    /// [`PostgresConfig::from_url`].
    ///
    /// ```no_run
    /// let config = cqrs_postgres::PostgresConfig::from_env("billing")?;
    /// # Ok::<(), cqrs_postgres::PostgresError>(())
    /// ```
    pub fn from_env(schema: &str) -> Result<Self, PostgresError> {
        let url = std::env::var("DATABASE_URL")
            .map_err(|_| PostgresError::Config("DATABASE_URL is not set".into()))?;
        Self::from_url(&url, schema)
    }

    /// Parses a `postgres://user:password@host:port/db?params` URL (or libpq's
    /// `key=value` form).
    ///
    /// `sslmode` accepts `disable`, `prefer` (the default), `require` and `verify-full`;
    /// `sslrootcert` names the CA file for `verify-full`. Other parameters are those of
    /// `tokio-postgres` (`connect_timeout`, `application_name`, `options`, ...).
    ///
    /// # Errors
    /// [`PostgresError::Config`] for an unparsable URL (the message never repeats the
    /// URL), [`PostgresError::InvalidIdentifier`] for a bad schema name.
    ///
    /// ```
    /// use cqrs_postgres::PostgresConfig;
    ///
    /// let config = PostgresConfig::from_url("postgres://app@localhost/cqrs", "billing").unwrap();
    /// assert_eq!(config.schema().as_str(), "billing");
    /// assert!(PostgresConfig::from_url("postgres://app@localhost/cqrs", "Billing!").is_err());
    /// ```
    pub fn from_url(url: &str, schema: &str) -> Result<Self, PostgresError> {
        let schema = SchemaName::new(schema)?;
        let (rest, tls) = extract_tls(url)?;
        let parsed: tokio_postgres::Config = rest.parse().map_err(|e: tokio_postgres::Error| {
            // tokio-postgres names the offending option, never its value.
            PostgresError::Config(format!("cannot parse the database URL: {e}"))
        })?;
        let tls = match tls {
            Some(tls) => tls,
            None => match parsed.get_ssl_mode() {
                tokio_postgres::config::SslMode::Disable => TlsConfig::Disable,
                tokio_postgres::config::SslMode::Require => TlsConfig::Require,
                _ => TlsConfig::Prefer,
            },
        };
        let user = parsed
            .get_user()
            .ok_or_else(|| PostgresError::Config("the database URL names no user".into()))?
            .to_owned();
        let password = parsed
            .get_password()
            .map(|p| {
                String::from_utf8(p.to_vec())
                    .map(Secret::new)
                    .map_err(|_| PostgresError::Config("the password is not valid UTF-8".into()))
            })
            .transpose()?;
        let connection = without_credentials(&parsed);
        let mut config = PostgresConfig {
            connection,
            credentials: Arc::new(StaticCredentials::new(Credentials::new(user, password))),
            tls,
            schema,
            pool: PoolConfig::default(),
        };
        if config.connection.get_connect_timeout().is_none() {
            config.connection.connect_timeout(Duration::from_secs(5));
        }
        Ok(config)
    }

    /// Configuration from parts: host, port, database and schema. Set the login with
    /// [`PostgresConfig::with_user`] or [`PostgresConfig::with_credentials`].
    ///
    /// # Errors
    /// [`PostgresError::InvalidIdentifier`] for a bad schema name.
    ///
    /// ```
    /// use cqrs_postgres::{PostgresConfig, TlsConfig};
    ///
    /// let config = PostgresConfig::new("127.0.0.1", 5432, "cqrs", "orders")?
    ///     .with_user("svc_orders", Some("s3cret".into()))
    ///     .with_tls(TlsConfig::Disable);
    /// assert_eq!(config.tls(), &TlsConfig::Disable);
    /// # Ok::<(), cqrs_postgres::PostgresError>(())
    /// ```
    pub fn new(host: &str, port: u16, dbname: &str, schema: &str) -> Result<Self, PostgresError> {
        let schema = SchemaName::new(schema)?;
        let mut connection = tokio_postgres::Config::new();
        connection
            .host(host)
            .port(port)
            .dbname(dbname)
            .connect_timeout(Duration::from_secs(5));
        Ok(PostgresConfig {
            connection,
            credentials: Arc::new(StaticCredentials::new(Credentials::new("postgres", None))),
            tls: TlsConfig::default(),
            schema,
            pool: PoolConfig::default(),
        })
    }

    /// Logs in as `user` with a fixed password.
    ///
    /// ```
    /// # use cqrs_postgres::*;
    /// let config = PostgresConfig::new("localhost", 5432, "cqrs", "orders")?
    ///     .with_user("svc_orders", Some(Secret::new("s3cret")));
    /// # Ok::<(), cqrs_postgres::PostgresError>(())
    /// ```
    pub fn with_user(self, user: impl Into<String>, password: Option<Secret>) -> Self {
        self.with_credentials(StaticCredentials::new(Credentials::new(user, password)))
    }

    /// Takes the login from `provider`, asked each time a connection is opened (for
    /// credentials that rotate, see [`SwappableCredentials`](crate::SwappableCredentials)).
    ///
    /// ```
    /// use std::sync::Arc;
    /// use cqrs_postgres::{Credentials, PostgresConfig, SwappableCredentials};
    ///
    /// let creds = Arc::new(SwappableCredentials::new(Credentials::new("v-1", Some("p".into()))));
    /// let config = PostgresConfig::new("localhost", 5432, "cqrs", "orders")?
    ///     .with_credentials(Arc::clone(&creds));
    /// // Later, when the lease is renewed: new connections log in as v-2.
    /// creds.replace(Credentials::new("v-2", Some("q".into())));
    /// # Ok::<(), cqrs_postgres::PostgresError>(())
    /// ```
    pub fn with_credentials(mut self, provider: impl CredentialProvider) -> Self {
        self.credentials = Arc::new(provider);
        self
    }

    /// Sets the TLS mode.
    ///
    /// ```
    /// # use cqrs_postgres::*;
    /// let config = PostgresConfig::new("localhost", 5432, "cqrs", "orders")?.with_tls(TlsConfig::Require);
    /// assert_eq!(config.tls(), &TlsConfig::Require);
    /// # Ok::<(), cqrs_postgres::PostgresError>(())
    /// ```
    pub fn with_tls(mut self, tls: TlsConfig) -> Self {
        self.tls = tls;
        self
    }

    /// Verifies the server against the CA certificates in `ca_file` (PEM):
    /// [`TlsConfig::VerifyFull`].
    ///
    /// ```
    /// # use cqrs_postgres::*;
    /// let config = PostgresConfig::new("localhost", 5432, "cqrs", "orders")?.with_tls_ca_file("/etc/ssl/pg-ca.pem");
    /// assert!(matches!(config.tls(), TlsConfig::VerifyFull { ca_file: Some(_) }));
    /// # Ok::<(), cqrs_postgres::PostgresError>(())
    /// ```
    pub fn with_tls_ca_file(self, ca_file: impl Into<PathBuf>) -> Self {
        self.with_tls(TlsConfig::VerifyFull {
            ca_file: Some(ca_file.into()),
        })
    }

    /// Most connections the pool opens at once (at least 1).
    ///
    /// ```
    /// # use cqrs_postgres::*;
    /// let config = PostgresConfig::new("localhost", 5432, "cqrs", "orders")?.with_max_connections(32);
    /// assert_eq!(config.pool().max_size, 32);
    /// # Ok::<(), cqrs_postgres::PostgresError>(())
    /// ```
    pub fn with_max_connections(mut self, max: usize) -> Self {
        self.pool.max_size = max.max(1);
        self
    }

    /// Replaces the whole pool configuration.
    ///
    /// ```
    /// # use cqrs_postgres::*;
    /// let config = PostgresConfig::new("localhost", 5432, "cqrs", "orders")?.with_pool(PoolConfig { max_size: 8, ..PoolConfig::default() });
    /// assert_eq!(config.pool().max_size, 8);
    /// # Ok::<(), cqrs_postgres::PostgresError>(())
    /// ```
    pub fn with_pool(mut self, pool: PoolConfig) -> Self {
        self.pool = pool;
        self.pool.max_size = self.pool.max_size.max(1);
        self
    }

    /// How long opening one connection may take.
    ///
    /// ```
    /// # use cqrs_postgres::*;
    /// let config = PostgresConfig::new("localhost", 5432, "cqrs", "orders")?.with_connect_timeout(std::time::Duration::from_secs(2));
    /// # Ok::<(), cqrs_postgres::PostgresError>(())
    /// ```
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connection.connect_timeout(timeout);
        self.pool.create_timeout = Some(timeout);
        self
    }

    /// Server-side `statement_timeout` of every session (a timed-out statement is a
    /// transient error).
    ///
    /// ```
    /// # use cqrs_postgres::*;
    /// let config = PostgresConfig::new("localhost", 5432, "cqrs", "orders")?.with_statement_timeout(std::time::Duration::from_secs(10));
    /// # Ok::<(), cqrs_postgres::PostgresError>(())
    /// ```
    pub fn with_statement_timeout(mut self, timeout: Duration) -> Self {
        let setting = format!("-c statement_timeout={}", timeout.as_millis());
        let options = match self.connection.get_options() {
            Some(existing) if !existing.is_empty() => format!("{existing} {setting}"),
            _ => setting,
        };
        self.connection.options(options);
        self
    }

    /// `application_name` of the sessions, shown in `pg_stat_activity`.
    ///
    /// ```
    /// # use cqrs_postgres::*;
    /// let config = PostgresConfig::new("localhost", 5432, "cqrs", "orders")?.with_application_name("orders-service");
    /// # Ok::<(), cqrs_postgres::PostgresError>(())
    /// ```
    pub fn with_application_name(mut self, name: &str) -> Self {
        self.connection.application_name(name);
        self
    }

    /// The service's schema.
    ///
    /// ```
    /// # use cqrs_postgres::*;
    /// let config = PostgresConfig::new("localhost", 5432, "cqrs", "orders")?;
    /// assert_eq!(config.schema().as_str(), "orders");
    /// # Ok::<(), cqrs_postgres::PostgresError>(())
    /// ```
    pub fn schema(&self) -> &SchemaName {
        &self.schema
    }

    /// Uses another schema (same server and login).
    ///
    /// ```
    /// # use cqrs_postgres::*;
    /// let config = PostgresConfig::new("localhost", 5432, "cqrs", "orders")?.with_schema(SchemaName::new("billing")?);
    /// assert_eq!(config.schema().as_str(), "billing");
    /// # Ok::<(), cqrs_postgres::PostgresError>(())
    /// ```
    pub fn with_schema(mut self, schema: SchemaName) -> Self {
        self.schema = schema;
        self
    }

    /// The TLS mode.
    ///
    /// ```
    /// # use cqrs_postgres::*;
    /// let config = PostgresConfig::new("localhost", 5432, "cqrs", "orders")?;
    /// assert_eq!(config.tls(), &TlsConfig::Prefer);
    /// # Ok::<(), cqrs_postgres::PostgresError>(())
    /// ```
    pub fn tls(&self) -> &TlsConfig {
        &self.tls
    }

    /// The pool configuration.
    ///
    /// ```
    /// # use cqrs_postgres::*;
    /// let config = PostgresConfig::new("localhost", 5432, "cqrs", "orders")?;
    /// assert_eq!(config.pool().max_size, 16);
    /// # Ok::<(), cqrs_postgres::PostgresError>(())
    /// ```
    pub fn pool(&self) -> &PoolConfig {
        &self.pool
    }

    pub(crate) fn connection(&self) -> &tokio_postgres::Config {
        &self.connection
    }

    pub(crate) fn credential_provider(&self) -> Arc<dyn CredentialProvider> {
        Arc::clone(&self.credentials)
    }
}

impl fmt::Debug for PostgresConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hosts: Vec<String> = self
            .connection
            .get_hosts()
            .iter()
            .map(|h| match h {
                Host::Tcp(name) => name.clone(),
                Host::Unix(path) => path.display().to_string(),
            })
            .collect();
        // The provider's Debug is its own business; credentials are shown through
        // `Credentials`' Debug, which redacts the password.
        let credentials = self.credentials.credentials();
        f.debug_struct("PostgresConfig")
            .field("hosts", &hosts)
            .field("ports", &self.connection.get_ports())
            .field("dbname", &self.connection.get_dbname())
            .field("user", &credentials.user)
            .field(
                "password",
                &credentials.password.as_ref().map(|_| "<redacted>"),
            )
            .field("tls", &self.tls)
            .field("schema", &self.schema.as_str())
            .field("pool", &self.pool)
            .finish()
    }
}

/// Takes `sslmode` and `sslrootcert` out of a URL's query: tokio-postgres knows neither
/// `verify-full` nor `sslrootcert`.
fn extract_tls(url: &str) -> Result<(String, Option<TlsConfig>), PostgresError> {
    let is_url = url.starts_with("postgres://") || url.starts_with("postgresql://");
    let Some((base, query)) = url.split_once('?').filter(|_| is_url) else {
        return Ok((url.to_owned(), None));
    };
    let mut mode: Option<TlsConfig> = None;
    let mut root_cert: Option<PathBuf> = None;
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "sslmode" => mode = Some(percent_decode(value)?.parse()?),
            "sslrootcert" => root_cert = Some(PathBuf::from(percent_decode(value)?)),
            _ => kept.push(pair),
        }
    }
    let mode = match (mode, root_cert) {
        (Some(TlsConfig::VerifyFull { .. }), ca_file) => Some(TlsConfig::VerifyFull { ca_file }),
        (None, Some(ca_file)) => Some(TlsConfig::VerifyFull {
            ca_file: Some(ca_file),
        }),
        (Some(_), Some(_)) => {
            return Err(PostgresError::Config(
                "sslrootcert is only used with sslmode=verify-full".into(),
            ));
        }
        (mode, None) => mode,
    };
    let rest = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Ok((rest, mode))
}

fn percent_decode(value: &str) -> Result<String, PostgresError> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| PostgresError::Config("bad percent-encoding in the URL".into()))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out)
        .map_err(|_| PostgresError::Config("URL parameter is not valid UTF-8".into()))
}

/// A copy of `config` with everything but the credentials.
fn without_credentials(config: &tokio_postgres::Config) -> tokio_postgres::Config {
    let mut out = tokio_postgres::Config::new();
    for host in config.get_hosts() {
        match host {
            Host::Tcp(name) => {
                out.host(name);
            }
            Host::Unix(path) => {
                out.host_path(path);
            }
        }
    }
    for addr in config.get_hostaddrs() {
        out.hostaddr(*addr);
    }
    for port in config.get_ports() {
        out.port(*port);
    }
    if let Some(db) = config.get_dbname() {
        out.dbname(db);
    }
    if let Some(options) = config.get_options() {
        out.options(options);
    }
    if let Some(name) = config.get_application_name() {
        out.application_name(name);
    }
    if let Some(timeout) = config.get_connect_timeout() {
        out.connect_timeout(*timeout);
    }
    if let Some(timeout) = config.get_tcp_user_timeout() {
        out.tcp_user_timeout(*timeout);
    }
    out.keepalives(config.get_keepalives())
        .keepalives_idle(config.get_keepalives_idle())
        .target_session_attrs(config.get_target_session_attrs())
        .channel_binding(config.get_channel_binding())
        .load_balance_hosts(config.get_load_balance_hosts());
    if let Some(interval) = config.get_keepalives_interval() {
        out.keepalives_interval(interval);
    }
    if let Some(retries) = config.get_keepalives_retries() {
        out.keepalives_retries(retries);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_url_and_redacts_password() {
        let config = PostgresConfig::from_url(
            "postgres://cqrs_admin:very-secret-pw@127.0.0.1:5432/cqrs?application_name=x",
            "orders",
        )
        .unwrap();
        let debug = format!("{config:?}");
        assert!(!debug.contains("very-secret-pw"), "{debug}");
        assert!(debug.contains("<redacted>"), "{debug}");
        assert!(debug.contains("cqrs_admin"), "{debug}");
        assert!(!format!("{:?}", config.connection()).contains("very-secret-pw"));
        assert_eq!(config.connection().get_password(), None);
        assert_eq!(config.tls(), &TlsConfig::Prefer);
        assert_eq!(config.connection().get_application_name(), Some("x"));
    }

    #[test]
    fn tls_modes_from_url() {
        let url = |q: &str| format!("postgres://u:p@h/db?{q}");
        let mode = |q: &str| {
            PostgresConfig::from_url(&url(q), "s")
                .unwrap()
                .tls()
                .clone()
        };
        assert_eq!(mode("sslmode=disable"), TlsConfig::Disable);
        assert_eq!(mode("sslmode=require"), TlsConfig::Require);
        assert_eq!(
            mode("sslmode=verify-full"),
            TlsConfig::VerifyFull { ca_file: None }
        );
        assert_eq!(
            mode("sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem&connect_timeout=3"),
            TlsConfig::VerifyFull {
                ca_file: Some("/etc/ca.pem".into())
            }
        );
        assert!(PostgresConfig::from_url(&url("sslmode=verify-ca"), "s").is_err());
        assert!(PostgresConfig::from_url(&url("sslmode=bogus"), "s").is_err());
    }

    #[test]
    fn bad_url_error_does_not_echo_secrets() {
        for bad in [
            "postgres://u:topsecret@h:notaport/db",
            "postgres://u:topsecret@h/db?bogus_option=topsecret",
            "postgres://u:topsecret@h/db?sslmode=topsecret",
        ] {
            let err = PostgresConfig::from_url(bad, "orders").unwrap_err();
            assert!(!err.to_string().contains("topsecret"), "{err}");
            assert!(!format!("{err:?}").contains("topsecret"), "{err:?}");
        }
    }

    #[test]
    fn statement_timeout_goes_to_options() {
        let config = PostgresConfig::new("h", 5432, "db", "s")
            .unwrap()
            .with_statement_timeout(Duration::from_secs(2));
        assert_eq!(
            config.connection().get_options(),
            Some("-c statement_timeout=2000")
        );
    }
}
