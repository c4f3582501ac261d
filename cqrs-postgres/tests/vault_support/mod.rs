//! Shared set-up of the Vault tests of cqrs-postgres: a throw-away schema and group role in
//! PostgreSQL, a short-lived database role and an AppRole in the stack's OpenBao, and a
//! steady command load through CommandHandler + PostgresStore.
#![allow(dead_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use cqrs_core::{CommandHandler, CommandMetadata, PersistenceMode};
use cqrs_postgres::vault::VaultPgPool;
use cqrs_postgres::{PostgresConfig, PostgresStore, TlsConfig};
use cqrs_test_support::vault::{LogCapture, PgAdmin, TEST_CONNECTION, VaultAdmin};
use cqrs_vault::{Auth, LeaseOptions, RetryOptions, VaultClient, VaultConfig};
use tokio::sync::Mutex;

use cqrs_test_support::account::{Account, AccountCommand};

pub struct Env {
    pub logs: LogCapture,
    pub admin: VaultAdmin,
    pub pg: tokio_postgres::Client,
    pub vault: VaultClient,
    pub role: String,
    pub schema: String,
    pub secret_id: String,
    _dir: TempDir,
}

/// A directory removed on drop.
pub struct TempDir(pub std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub async fn pg_admin() -> tokio_postgres::Client {
    let a = PgAdmin::from_stack();
    let mut config = tokio_postgres::Config::new();
    config
        .host(&a.host)
        .port(a.port)
        .dbname(&a.database)
        .user(&a.user)
        .password(a.password.expose());
    let (client, conn) = config
        .connect(tokio_postgres::NoTls)
        .await
        .expect("the stack's PostgreSQL must be up (docker/stack.sh up)");
    tokio::spawn(conn);
    client
}

/// Schema `vault_it_<name>` owned by group role `svc_vault_it_<name>`, database role
/// `vault_it_<name>` (TTLs as given) and AppRole `vault-it-<name>`.
pub async fn setup(name: &str, ttl: &str, max_ttl: &str, token_ttl: &str, token_max: &str) -> Env {
    let logs = LogCapture::install();
    let admin = VaultAdmin::for_tests().await;
    let pg = pg_admin().await;
    let schema = format!("vault_it_{name}");
    let group = format!("svc_{schema}");
    pg.batch_execute(&format!(
        "DO $$ BEGIN CREATE ROLE \"{group}\" NOLOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$;
         DROP SCHEMA IF EXISTS \"{schema}\" CASCADE;
         CREATE SCHEMA \"{schema}\" AUTHORIZATION \"{group}\";"
    ))
    .await
    .expect("schema and group role");
    admin
        .create_postgres_role(TEST_CONNECTION, &schema, &group, &schema, ttl, max_ttl)
        .await
        .expect("database role");
    let dir =
        TempDir(std::env::temp_dir().join(format!("cqrs-vault-it-{name}-{}", std::process::id())));
    let files = admin
        .create_approle(
            &format!("vault-it-{name}"),
            &["vault-it"],
            token_ttl,
            token_max,
            &dir.0,
        )
        .await
        .expect("approle");
    let vault = VaultClient::connect(
        VaultConfig::new(admin.address(), Auth::approle_files(&files.dir))
            .request_timeout(Duration::from_secs(2))
            .retry(RetryOptions {
                initial: Duration::from_millis(250),
                max: Duration::from_secs(2),
            }),
    )
    .await
    .expect("AppRole login");
    Env {
        logs,
        admin,
        pg,
        vault,
        role: schema.clone(),
        schema,
        secret_id: files.secret_id.expose().to_owned(),
        _dir: dir,
    }
}

impl Env {
    pub async fn pool(&self, options: LeaseOptions, max_connections: usize) -> VaultPgPool {
        let a = PgAdmin::from_stack();
        let config = PostgresConfig::new(&a.host, a.port, &a.database, &self.schema)
            .unwrap()
            .with_tls(TlsConfig::Disable)
            .with_max_connections(max_connections)
            .with_application_name("cqrs-vault-it");
        VaultPgPool::connect(config, &self.vault, &self.role, options)
            .await
            .expect("pool on leased credentials")
    }

    /// Names of the roles that still exist among `users`.
    pub async fn existing_roles(&self, users: &[String]) -> Vec<String> {
        let rows = self
            .pg
            .query(
                "SELECT rolname FROM pg_roles WHERE rolname = ANY($1) ORDER BY rolname",
                &[&users],
            )
            .await
            .unwrap();
        rows.iter().map(|r| r.get(0)).collect()
    }
}

/// Results of a load run.
#[derive(Debug, Default)]
pub struct LoadReport {
    pub ok: u64,
    pub failed: u64,
    pub errors: Vec<String>,
    pub session_users: Vec<String>,
}

/// Runs commands (`workers` tasks through CommandHandler + PostgresStore, one more task
/// with plain statements through `VaultPgPool::get`) until `stop` is set.
pub async fn run_load(
    pool: Arc<VaultPgPool>,
    workers: usize,
    pause: Duration,
    stop: Arc<AtomicBool>,
) -> LoadReport {
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(Mutex::new(Vec::<String>::new()));
    let users = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut tasks = Vec::new();
    for w in 0..workers {
        let store =
            PostgresStore::<Account>::new(pool.pool(), PersistenceMode::event_sourced()).unwrap();
        let handler = CommandHandler::new(store);
        let (ok, failed, errors, stop) = (ok.clone(), failed.clone(), errors.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::SeqCst) {
                i += 1;
                let id = format!("acc-{w}-{}", i % 20);
                match handler
                    .execute(&id, &AccountCommand::Deposit(1), CommandMetadata::new())
                    .await
                {
                    Ok(Ok(_)) => {
                        ok.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(Err(e)) => {
                        failed.fetch_add(1, Ordering::SeqCst);
                        errors.lock().await.push(format!("domain: {e}"));
                    }
                    Err(e) => {
                        failed.fetch_add(1, Ordering::SeqCst);
                        errors.lock().await.push(format!("command: {e}"));
                    }
                }
                tokio::time::sleep(pause).await;
            }
        }));
    }
    {
        let (ok, failed, errors, users, stop, pool) = (
            ok.clone(),
            failed.clone(),
            errors.clone(),
            users.clone(),
            stop.clone(),
            pool.clone(),
        );
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                let result = async {
                    let client = pool.get().await.map_err(|e| e.to_string())?;
                    let row = client
                        .query_one("SELECT session_user::text, count(*) FROM events", &[])
                        .await
                        .map_err(|e| e.to_string())?;
                    Ok::<String, String>(row.get(0))
                }
                .await;
                match result {
                    Ok(user) => {
                        ok.fetch_add(1, Ordering::SeqCst);
                        let mut users = users.lock().await;
                        if !users.contains(&user) {
                            users.push(user);
                        }
                    }
                    Err(e) => {
                        failed.fetch_add(1, Ordering::SeqCst);
                        errors.lock().await.push(format!("statement: {e}"));
                    }
                }
                tokio::time::sleep(pause).await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let errors = std::mem::take(&mut *errors.lock().await);
    let session_users = std::mem::take(&mut *users.lock().await);
    LoadReport {
        ok: ok.load(Ordering::SeqCst),
        failed: failed.load(Ordering::SeqCst),
        errors,
        session_users,
    }
}
