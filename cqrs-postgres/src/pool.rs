//! The connection pool of one service: deadpool-postgres, with connections opened from
//! the current credentials of a [`CredentialProvider`](crate::CredentialProvider).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use deadpool_postgres::{
    Connect, Hook, HookError, Manager, ManagerConfig, Pool, RecyclingMethod, Runtime,
};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_postgres::{Client, NoTls};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::config::PostgresConfig;
use crate::credentials::CredentialProvider;
use crate::error::{PostgresError, Stale, stale_kind};
use crate::migrations::{MigrationReport, Migrator};
use crate::schema::SchemaName;

type ConnectFuture<'a> = Pin<
    Box<dyn Future<Output = Result<(Client, JoinHandle<()>), tokio_postgres::Error>> + Send + 'a>,
>;

/// Opens connections with the credentials the provider holds *now*.
struct ProviderConnect {
    connection: tokio_postgres::Config,
    credentials: Arc<dyn CredentialProvider>,
    tls: Option<MakeRustlsConnect>,
}

impl Connect for ProviderConnect {
    fn connect(&self, _ignored: &tokio_postgres::Config) -> ConnectFuture<'_> {
        let mut config = self.connection.clone();
        let credentials = self.credentials.credentials();
        config.user(&credentials.user);
        if let Some(password) = &credentials.password {
            config.password(password.expose());
        }
        let tls = self.tls.clone();
        Box::pin(async move {
            let spawn_conn = |fut| tokio::spawn(fut);
            match tls {
                None => {
                    let (client, connection) = config.connect(NoTls).await?;
                    Ok((client, spawn_conn(drive(connection))))
                }
                Some(tls) => {
                    let (client, connection) = config.connect(tls).await?;
                    Ok((client, spawn_conn(drive(connection))))
                }
            }
        })
    }
}

fn drive<F>(connection: F) -> Pin<Box<dyn Future<Output = ()> + Send>>
where
    F: Future<Output = Result<(), tokio_postgres::Error>> + Send + 'static,
{
    Box::pin(async move {
        if let Err(e) = connection.await {
            tracing::warn!(target: "cqrs_postgres", error = %e, "PostgreSQL connection ended with an error");
        }
    })
}

/// The pool of connections of one service, bound to the service's schema.
///
/// Creating it opens no connection; the first [`PgPool::get`] does. Clones share the
/// same pool.
///
/// ```no_run
/// use cqrs_postgres::{PgPool, PostgresConfig};
///
/// # async fn run() -> Result<(), cqrs_postgres::PostgresError> {
/// let config = PostgresConfig::from_url(&std::env::var("DATABASE_URL").unwrap(), "orders")?;
/// let pool = PgPool::new(&config)?;
/// pool.check().await?;          // fails now, not on the first command, if the server is away
/// pool.migrate().await?;        // creates or upgrades the schema's tables
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct PgPool {
    pool: Pool,
    schema: SchemaName,
    retire_before: Arc<Mutex<Option<Instant>>>,
    /// Bumped by every [`PgPool::retire_connections`] (a credential switch).
    generation: Arc<watch::Sender<u64>>,
    /// Told when a login or session turned out dead (see [`PgPool::on_stale_credentials`]).
    stale_hook: Option<Arc<dyn Fn() + Send + Sync>>,
}

/// How long an operation whose login was refused or whose session lost its role waits for
/// the credential to be replaced before it is tried again (or fails).
///
/// ```
/// assert_eq!(cqrs_postgres::CREDENTIAL_WAIT.as_secs(), 5);
/// ```
pub const CREDENTIAL_WAIT: Duration = Duration::from_secs(5);

impl PgPool {
    /// Builds the pool (no I/O).
    ///
    /// # Errors
    /// [`PostgresError::Tls`] when the TLS configuration cannot be built,
    /// [`PostgresError::Config`] when the pool cannot be built.
    ///
    /// ```
    /// use cqrs_postgres::{PgPool, PostgresConfig};
    /// // No connection is opened here.
    /// let pool = PgPool::new(&PostgresConfig::from_url("postgres://app@localhost/cqrs", "orders")?)?;
    /// assert_eq!(pool.schema().as_str(), "orders");
    /// # Ok::<(), cqrs_postgres::PostgresError>(())
    /// ```
    pub fn new(config: &PostgresConfig) -> Result<Self, PostgresError> {
        let tls_mode = config.tls();
        let tls = tls_mode.client_config()?.map(MakeRustlsConnect::new);
        let mut connection = config.connection().clone();
        connection.ssl_mode(tls_mode.ssl_mode());
        let connect = ProviderConnect {
            connection: connection.clone(),
            credentials: config.credential_provider(),
            tls,
        };
        let manager = Manager::from_connect(
            connection,
            connect,
            ManagerConfig {
                // Connections are checked for being closed; a query-based check would
                // cost a round trip on every checkout of the hot path.
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let retire_before: Arc<Mutex<Option<Instant>>> = Arc::default();
        let retire = Arc::clone(&retire_before);
        let options = config.pool();
        let pool = Pool::builder(manager)
            .max_size(options.max_size)
            .wait_timeout(options.wait_timeout)
            .create_timeout(options.create_timeout)
            .recycle_timeout(options.recycle_timeout)
            .runtime(Runtime::Tokio1)
            .pre_recycle(Hook::sync_fn(move |_, metrics| {
                let cutoff = *retire.lock().unwrap_or_else(|p| p.into_inner());
                match cutoff {
                    Some(cutoff) if metrics.created < cutoff => Err(HookError::Message(
                        "connection opened with retired credentials".into(),
                    )),
                    _ => Ok(()),
                }
            }))
            .build()
            .map_err(|e| PostgresError::Config(format!("cannot build the pool: {e}")))?;
        Ok(PgPool {
            pool,
            schema: config.schema().clone(),
            retire_before,
            generation: Arc::new(watch::Sender::new(0)),
            stale_hook: None,
        })
    }

    /// Calls `hook` whenever an operation of this pool finds its credentials dead: a
    /// refused login, a session whose role was dropped, a connection terminated under it.
    /// With a hook, the pool's own operations ([`PgPool::get`], the
    /// [`PostgresStore`](crate::PostgresStore)) then wait (up to [`CREDENTIAL_WAIT`]) for
    /// the credentials to be replaced ([`PgPool::retire_connections`]) and run once more
    /// on a fresh connection. Leased credentials use it
    /// ([`VaultPgPool`](crate::vault::VaultPgPool), feature `vault`): the hook asks for
    /// the lease to be looked up.
    ///
    /// Set it before cloning the pool: clones made earlier keep their own setting.
    ///
    /// ```
    /// use cqrs_postgres::{PgPool, PostgresConfig};
    ///
    /// let pool = PgPool::new(&PostgresConfig::from_url("postgres://app@localhost/cqrs", "orders")?)?
    ///     .on_stale_credentials(|| eprintln!("credentials look dead: fetch new ones"));
    /// # Ok::<(), cqrs_postgres::PostgresError>(())
    /// ```
    pub fn on_stale_credentials(mut self, hook: impl Fn() + Send + Sync + 'static) -> Self {
        self.stale_hook = Some(Arc::new(hook));
        self
    }

    /// How many times the connections were retired (credential switches) so far.
    ///
    /// ```
    /// use cqrs_postgres::{PgPool, PostgresConfig};
    ///
    /// let pool = PgPool::new(&PostgresConfig::from_url("postgres://app@localhost/cqrs", "orders")?)?;
    /// assert_eq!(pool.credentials_generation(), 0);
    /// pool.retire_connections();
    /// assert_eq!(pool.credentials_generation(), 1);
    /// # Ok::<(), cqrs_postgres::PostgresError>(())
    /// ```
    pub fn credentials_generation(&self) -> u64 {
        *self.generation.borrow()
    }

    /// After an operation that began at credentials generation `seen` failed with a stale
    /// connection or login (`kind`): closes the idle connections after a lost one, tells
    /// the hook, and for a dead credential waits until
    /// the credentials were switched since `seen` (at most [`CREDENTIAL_WAIT`]). Returns
    /// whether running the operation once more is worth it.
    pub(crate) async fn recover(&self, seen: u64, kind: Stale) -> bool {
        if kind == Stale::Closed {
            // What killed this connection (a server restart, an operator terminating the
            // sessions of a revoked user) most likely killed its idle siblings too, and
            // the cheap checkout check cannot tell yet: open fresh ones.
            let now = Instant::now();
            let _ = self.pool.retain(|_, metrics| metrics.created >= now);
        }
        let Some(hook) = &self.stale_hook else {
            // Fixed credentials: a fresh connection helps after a lost one, not after a
            // refused login.
            return kind == Stale::Closed;
        };
        hook();
        if kind == Stale::Closed {
            return true;
        }
        let mut generations = self.generation.subscribe();
        let switched =
            tokio::time::timeout(CREDENTIAL_WAIT, generations.wait_for(|g| *g != seen)).await;
        matches!(switched, Ok(Ok(_)))
    }

    /// A connection from the pool (opened if none is idle). It goes back to the pool when
    /// dropped. Use `prepare_cached` on it for statements that run often.
    ///
    /// # Errors
    /// [`PostgresError::Database`], transient when the pool timed out or the server is
    /// unreachable.
    ///
    /// ```no_run
    /// # async fn run(pool: cqrs_postgres::PgPool) -> Result<(), cqrs_postgres::PostgresError> {
    /// let client = pool.get().await?;
    /// let row = client.query_one("SELECT 1::int4", &[]).await.unwrap();
    /// assert_eq!(row.get::<_, i32>(0), 1);
    /// # Ok(()) }
    /// ```
    pub async fn get(&self) -> Result<deadpool_postgres::Object, PostgresError> {
        self.connection()
            .await
            .map_err(|e| PostgresError::pool("getting a connection", e))
    }

    /// A connection; with a stale-credentials hook, a refused login is reported and tried
    /// once more after the credentials were replaced.
    pub(crate) async fn connection(
        &self,
    ) -> Result<deadpool_postgres::Object, deadpool_postgres::PoolError> {
        let seen = self.credentials_generation();
        match self.pool.get().await {
            Err(deadpool_postgres::PoolError::Backend(e))
                if self.stale_hook.is_some() && stale_kind(&e) == Some(Stale::Credential) =>
            {
                tracing::warn!(
                    target: "cqrs_postgres",
                    schema = %self.schema,
                    error = %crate::error::PostgresError::db("opening a connection", e),
                    "login refused; waiting for new credentials"
                );
                self.recover(seen, Stale::Credential).await;
                self.pool.get().await
            }
            other => other,
        }
    }

    /// Opens (or reuses) a connection and runs `SELECT 1`: fails fast with a clear error
    /// when the server is unreachable or refuses the login.
    ///
    /// ```no_run
    /// # async fn run(pool: cqrs_postgres::PgPool) -> Result<(), cqrs_postgres::PostgresError> {
    /// pool.check().await?;
    /// # Ok(()) }
    /// ```
    pub async fn check(&self) -> Result<(), PostgresError> {
        let client = self.get().await?;
        client
            .simple_query("SELECT 1")
            .await
            .map_err(|e| PostgresError::db("checking the connection", e))?;
        Ok(())
    }

    /// Applies the embedded migrations to the pool's schema; see [`Migrator`].
    ///
    /// ```no_run
    /// # async fn run(pool: cqrs_postgres::PgPool) -> Result<(), cqrs_postgres::PostgresError> {
    /// let report = pool.migrate().await?;
    /// println!("applied {:?}", report.applied);
    /// # Ok(()) }
    /// ```
    pub async fn migrate(&self) -> Result<MigrationReport, PostgresError> {
        Migrator::embedded(self.schema.clone())?.run(self).await
    }

    /// The service's schema.
    ///
    /// ```no_run
    /// # fn f(pool: cqrs_postgres::PgPool) { println!("{}", pool.schema()); }
    /// ```
    pub fn schema(&self) -> &SchemaName {
        &self.schema
    }

    /// Closes every connection opened before now, as soon as it is idle: call it after
    /// the [`CredentialProvider`](crate::CredentialProvider) switched to new credentials.
    /// Idle connections close at once; those in use finish their work and are closed
    /// instead of being reused.
    ///
    /// ```no_run
    /// # fn f(pool: cqrs_postgres::PgPool) {
    /// pool.retire_connections();
    /// # }
    /// ```
    pub fn retire_connections(&self) {
        let now = Instant::now();
        *self.retire_before.lock().unwrap_or_else(|p| p.into_inner()) = Some(now);
        let _ = self.pool.retain(|_, metrics| metrics.created >= now);
        self.generation.send_modify(|g| *g += 1);
    }

    /// The underlying deadpool pool, for status and metrics.
    ///
    /// ```no_run
    /// # fn f(pool: cqrs_postgres::PgPool) {
    /// let status = pool.inner().status();
    /// println!("{} of {} connections in use", status.size - status.available, status.max_size);
    /// # }
    /// ```
    pub fn inner(&self) -> &Pool {
        &self.pool
    }
}

impl fmt::Debug for PgPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgPool")
            .field("schema", &self.schema.as_str())
            .field("status", &self.pool.status())
            .finish()
    }
}
