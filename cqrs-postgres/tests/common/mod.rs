//! Shared test support: a real PostgreSQL (`DATABASE_URL` of the environment, `.env.local`
//! or `.env`), one random schema per test dropped at the end. The test aggregate is
//! `cqrs_test_support::account::Account`.
//!
//! A missing server FAILS the test with a clear message: these tests never skip.
#![allow(dead_code)]
#![allow(clippy::unwrap_used, clippy::expect_used)] // test support: a panic is a failure

use std::sync::Mutex;
use std::time::Duration;

use cqrs_postgres::{PgPool, PoolConfig, PostgresConfig, SchemaName};
use uuid::Uuid;

/// The admin URL of the development database (panics naming .env, .env.local and the
/// environment when none of them sets it).
pub fn database_url() -> String {
    cqrs_test_support::env::require("DATABASE_URL")
}

/// `host:port` of the URL, for messages (never the credentials).
pub fn server_address(url: &str) -> String {
    let after_scheme = url.split_once("://").map_or(url, |(_, rest)| rest);
    let after_creds = after_scheme
        .rsplit_once('@')
        .map_or(after_scheme, |(_, rest)| rest);
    after_creds
        .split(['/', '?'])
        .next()
        .unwrap_or("?")
        .to_owned()
}

pub fn random_name(prefix: &str) -> String {
    format!("{prefix}_{}", &Uuid::new_v4().simple().to_string()[..12])
}

/// A random schema on the real server, dropped (with the roles registered here) when the
/// value is dropped, also when the test panics.
pub struct TestDb {
    pub url: String,
    pub schema: SchemaName,
    pub pool: PgPool,
    extra_schemas: Mutex<Vec<String>>,
    roles: Mutex<Vec<String>>,
}

impl TestDb {
    /// A pool on a fresh random schema, not migrated. Panics (fails the test) if the
    /// server is not reachable.
    pub async fn new() -> TestDb {
        Self::with_pool_size(16).await
    }

    pub async fn with_pool_size(size: usize) -> TestDb {
        let url = database_url();
        let schema = random_name("t");
        // Generous timeouts: CI machines are small and busy (TLS + SCRAM per new
        // connection), and a slow connect must not be mistaken for a store failure.
        let config = PostgresConfig::from_url(&url, &schema)
            .expect("DATABASE_URL must be a valid PostgreSQL URL")
            .with_pool(PoolConfig {
                max_size: size,
                wait_timeout: Some(Duration::from_secs(60)),
                create_timeout: Some(Duration::from_secs(30)),
                recycle_timeout: Some(Duration::from_secs(30)),
            })
            .with_connect_timeout(Duration::from_secs(30));
        let pool = PgPool::new(&config).expect("the pool must build");
        if let Err(e) = pool.check().await {
            panic!(
                "\n\nPostgreSQL is NOT reachable at {} (DATABASE_URL from the {}): {e}\n\
                 These tests need the real server and never skip. Start the stack with \
                 `make infrastructure-up` (docker/stack.sh up) and run them again.\n\n",
                server_address(&url),
                cqrs_test_support::env::stack()
                    .source("DATABASE_URL")
                    .map_or_else(|| "?".to_owned(), |source| source.to_string())
            );
        }
        TestDb {
            url,
            schema: pool.schema().clone(),
            pool,
            extra_schemas: Mutex::default(),
            roles: Mutex::default(),
        }
    }

    /// A fresh random schema, migrated.
    pub async fn migrated() -> TestDb {
        let db = Self::new().await;
        db.pool.migrate().await.expect("migrations must apply");
        db
    }

    /// Another pool on another random schema of the same server, dropped with this one.
    pub fn other_schema_pool(&self) -> PgPool {
        let name = random_name("t");
        self.extra_schemas.lock().unwrap().push(name.clone());
        let config = PostgresConfig::from_url(&self.url, &name).unwrap();
        PgPool::new(&config).unwrap()
    }

    /// Registers a role to drop at the end.
    pub fn drop_role_later(&self, role: &str) {
        self.roles.lock().unwrap().push(role.to_owned());
    }

    pub async fn count(&self, table: &str) -> i64 {
        self.scalar(&format!(
            "SELECT count(*) FROM {}.{table}",
            self.schema.quoted()
        ))
        .await
    }

    pub async fn scalar(&self, sql: &str) -> i64 {
        let client = self.pool.get().await.unwrap();
        client.query_one(sql, &[]).await.unwrap().get(0)
    }

    pub async fn exec(&self, sql: &str) {
        let client = self.pool.get().await.unwrap();
        client.batch_execute(sql).await.unwrap();
    }

    /// `sql` with `{{schema}}` replaced by this test's quoted schema.
    pub fn sql(&self, sql: &str) -> String {
        sql.replace("{{schema}}", &self.schema.quoted())
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let url = self.url.clone();
        let mut schemas = vec![self.schema.as_str().to_owned()];
        schemas.extend(self.extra_schemas.lock().unwrap().drain(..));
        let roles: Vec<String> = self.roles.lock().unwrap().drain(..).collect();
        // Drop may run inside a runtime: do the cleanup on a thread with its own.
        let cleanup = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let Ok((client, connection)) = url
                    .parse::<tokio_postgres::Config>()
                    .unwrap()
                    .connect(tokio_postgres::NoTls)
                    .await
                else {
                    return;
                };
                tokio::spawn(connection);
                for schema in schemas {
                    let _ = client
                        .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
                        .await;
                }
                for role in roles {
                    let _ = client
                        .batch_execute(&format!(
                            "DROP OWNED BY \"{role}\"; DROP ROLE IF EXISTS \"{role}\""
                        ))
                        .await;
                }
            });
        });
        let _ = cleanup.join();
    }
}
