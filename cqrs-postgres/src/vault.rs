//! Leased credentials from Vault/OpenBao (feature `vault`).
//!
//! [`VaultPgPool`] opens a [`PgPool`] whose logins come from a
//! [`DatabaseLease`](cqrs_vault::DatabaseLease) on `database/creds/<role>`. When the lease
//! manager obtains a new credential (before the maximum TTL, after a re-login, after a
//! revocation from outside), new connections use the new user at once and the connections
//! opened with the old one are recycled: idle ones are closed, busy ones are closed when
//! they come back to the pool. The old lease is revoked only after
//! [`LeaseOptions::revoke_grace`](cqrs_vault::LeaseOptions::revoke_grace), so the commands
//! running on old connections finish normally.

use std::fmt;
use std::sync::Arc;

use cqrs_vault::{DatabaseLease, DbCredentials, LeaseOptions, VaultClient, VaultError};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::PostgresConfig;
use crate::credentials::{Credentials, SwappableCredentials};
use crate::error::PostgresError;
use crate::pool::PgPool;

/// Why [`VaultPgPool::connect`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VaultPgError {
    /// No credential could be obtained from Vault.
    #[error("vault: {0}")]
    Vault(#[from] VaultError),
    /// The pool could not be built or the first connection failed.
    #[error("postgres: {0}")]
    Postgres(#[from] PostgresError),
}

/// A [`PgPool`] logging in with leased, rotating credentials.
///
/// Give [`VaultPgPool::pool`] to [`PostgresStore`](crate::PostgresStore) and the rest of the
/// crate as usual. The pool reacts to a dead credential (the lease was revoked from
/// outside: a refused login, a session whose role was dropped, a connection terminated
/// under it): it has the lease looked up at once, waits for the replacement credential and
/// runs the store operation once more on a fresh connection, so commands do not fail
/// (see [`PgPool::on_stale_credentials`]). Statements you run yourself on a connection
/// from [`VaultPgPool::get`] are not retried: pass their errors to
/// [`VaultPgPool::report_error`].
///
/// ```no_run
/// use cqrs_postgres::{PostgresConfig, TlsConfig, vault::VaultPgPool};
/// use cqrs_vault::{Auth, LeaseOptions, VaultClient, VaultConfig};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let vault = VaultClient::connect(VaultConfig::new(
///     "http://127.0.0.1:8200",
///     Auth::approle_files("/work/main/.stack/vault/approle/orders"),
/// ))
/// .await?;
/// let config = PostgresConfig::new("127.0.0.1", 5432, "cqrs", "orders")?.with_tls(TlsConfig::Disable);
/// let pg = VaultPgPool::connect(config, &vault, "orders", LeaseOptions::default()).await?;
/// pg.pool().migrate().await?;
/// // ... PostgresStore::new(pg.pool(), mode) ...
/// pg.shutdown().await?; // closes the pool, revokes the lease
/// # Ok(()) }
/// ```
pub struct VaultPgPool {
    pool: PgPool,
    lease: DatabaseLease,
    credentials: Arc<SwappableCredentials>,
    follower: JoinHandle<()>,
}

impl fmt::Debug for VaultPgPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VaultPgPool")
            .field("pool", &self.pool)
            .field("lease", &self.lease)
            .finish()
    }
}

fn to_credentials(creds: &DbCredentials) -> Credentials {
    Credentials::new(creds.username.clone(), Some(creds.password.clone()))
}

impl VaultPgPool {
    /// Obtains a credential for `role`, builds the pool from `config` (its own login is
    /// replaced) and checks a first connection.
    ///
    /// # Errors
    /// [`VaultPgError::Vault`] when no credential could be obtained,
    /// [`VaultPgError::Postgres`] when the pool cannot be built or the check fails (the
    /// lease is revoked then).
    ///
    /// ```no_run
    /// # async fn run(vault: cqrs_vault::VaultClient, config: cqrs_postgres::PostgresConfig) -> Result<(), cqrs_postgres::vault::VaultPgError> {
    /// let pg = cqrs_postgres::vault::VaultPgPool::connect(config, &vault, "orders", Default::default()).await?;
    /// # Ok(()) }
    /// ```
    pub async fn connect(
        config: PostgresConfig,
        vault: &VaultClient,
        role: &str,
        options: LeaseOptions,
    ) -> Result<Self, VaultPgError> {
        let lease = DatabaseLease::start(vault, role, options).await?;
        let credentials = Arc::new(SwappableCredentials::new(to_credentials(&lease.current())));
        let check = lease.checker();
        let pool = match PgPool::new(&config.with_credentials(Arc::clone(&credentials))) {
            Ok(pool) => pool.on_stale_credentials(move || check.request()),
            Err(e) => {
                let _ = lease.shutdown().await;
                return Err(e.into());
            }
        };
        if let Err(e) = pool.check().await {
            let _ = lease.shutdown().await;
            return Err(e.into());
        }
        let follower = tokio::spawn(follow(
            lease.subscribe(),
            Arc::clone(&credentials),
            pool.clone(),
        ));
        Ok(VaultPgPool {
            pool,
            lease,
            credentials,
            follower,
        })
    }

    /// The pool (clones share it).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The lease behind the pool.
    pub fn lease(&self) -> &DatabaseLease {
        &self.lease
    }

    /// The user new connections log in as.
    ///
    /// ```no_run
    /// # fn f(pg: &cqrs_postgres::vault::VaultPgPool) { println!("{}", pg.current_user()); }
    /// ```
    pub fn current_user(&self) -> String {
        use crate::credentials::CredentialProvider;
        self.credentials.credentials().user
    }

    /// A connection: [`PgPool::get`] of the pool, which, when the login is refused
    /// because the lease is gone, has the lease looked up, waits (up to
    /// [`CREDENTIAL_WAIT`](crate::CREDENTIAL_WAIT)) for the replacement and tries
    /// again.
    ///
    /// # Errors
    /// As [`PgPool::get`].
    ///
    /// ```no_run
    /// # async fn run(pg: cqrs_postgres::vault::VaultPgPool) -> Result<(), cqrs_postgres::PostgresError> {
    /// let client = pg.get().await?;
    /// client.simple_query("SELECT 1").await.ok();
    /// # Ok(()) }
    /// ```
    pub async fn get(&self) -> Result<deadpool_postgres::Object, PostgresError> {
        self.pool.get().await
    }

    /// Tells the lease manager about a database error: when it says the login or the
    /// session's role is gone, the lease is looked up (and replaced if revoked).
    /// Returns whether the error was such an error.
    ///
    /// ```no_run
    /// # fn f(pg: &cqrs_postgres::vault::VaultPgPool, err: &cqrs_postgres::PostgresError) {
    /// pg.report_error(err);
    /// # }
    /// ```
    pub fn report_error(&self, err: &PostgresError) -> bool {
        let credential = is_credential_error(err);
        if credential {
            self.lease.request_check();
        }
        credential
    }

    /// Closes the pool and revokes the lease.
    ///
    /// # Errors
    /// [`VaultError::Stopped`] when the lease manager had already stopped.
    ///
    /// ```no_run
    /// # async fn run(pg: cqrs_postgres::vault::VaultPgPool) -> Result<(), cqrs_vault::VaultError> {
    /// pg.shutdown().await?;
    /// # Ok(()) }
    /// ```
    pub async fn shutdown(self) -> Result<(), VaultError> {
        self.follower.abort();
        self.pool.inner().close();
        self.lease.shutdown().await
    }
}

/// True for errors caused by a credential that is no longer valid: a refused login
/// (SQLSTATE class 28) or a session whose role was dropped.
///
/// ```
/// use cqrs_postgres::{PostgresError, vault::is_credential_error};
/// assert!(!is_credential_error(&PostgresError::Config("x".into())));
/// ```
pub fn is_credential_error(err: &PostgresError) -> bool {
    match err {
        PostgresError::Database { code, message, .. } => {
            code.as_deref().is_some_and(|c| c.starts_with("28"))
                || message.contains("invalid role OID")
                || message.contains("password authentication failed")
        }
        _ => false,
    }
}

async fn follow(
    mut changes: watch::Receiver<Arc<DbCredentials>>,
    credentials: Arc<SwappableCredentials>,
    pool: PgPool,
) {
    while changes.changed().await.is_ok() {
        let creds = changes.borrow_and_update().clone();
        credentials.replace(to_credentials(&creds));
        pool.retire_connections();
        let status = pool.inner().status();
        tracing::info!(
            target: "cqrs_postgres",
            schema = %pool.schema(),
            username = %creds.username,
            serial = creds.serial,
            open_connections = status.size,
            "switched the pool to new database credentials; recycling the old connections"
        );
    }
}
