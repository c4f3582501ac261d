//! Configuration, validation and connection handling against the real PostgreSQL.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::TestDb;
use cqrs_core::{AggregateStore, PersistenceMode, StoreError};
use cqrs_postgres::{
    Credentials, PgPool, PoolConfig, PostgresConfig, PostgresError, PostgresStore, RoleName,
    SchemaName, Secret, SwappableCredentials,
};
use cqrs_test_support::account::Account;

#[tokio::test]
async fn invalid_schema_names_are_rejected_before_any_sql() {
    // The server must be up, so that a rejection is not mistaken for a connection error.
    let db = TestDb::new().await;

    for bad in [
        "",
        "Orders",
        "orders; DROP SCHEMA public CASCADE; --",
        "x\" CASCADE; --",
        "pg_catalog",
        "pg_toast",
        "information_schema",
        "public",
        "ümlaut",
        "1abc",
        &"a".repeat(64),
    ] {
        for err in [
            PostgresConfig::from_url(&db.url, bad).unwrap_err(),
            SchemaName::new(bad).unwrap_err(),
            RoleName::new(bad).unwrap_err(),
        ] {
            assert!(
                matches!(err, PostgresError::InvalidIdentifier { .. }),
                "{bad:?}: {err:?}"
            );
        }
    }
    // Rejected without touching the network: even with a server that does not exist.
    let err = PostgresConfig::from_url("postgres://u:p@192.0.2.1:1/db", "bad name").unwrap_err();
    assert!(matches!(err, PostgresError::InvalidIdentifier { .. }));
    // Nothing named like the bad inputs exists.
    let client = db.pool.get().await.unwrap();
    let n: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'orders;%' OR nspname LIKE 'x\"%'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
}

#[tokio::test]
async fn unreachable_server_is_a_transient_backend_error() {
    // Port 1 on loopback: connection refused at once.
    let config = PostgresConfig::from_url("postgres://u:secret-pw@127.0.0.1:1/db", "svc")
        .unwrap()
        .with_pool(PoolConfig {
            max_size: 1,
            wait_timeout: Some(Duration::from_secs(2)),
            create_timeout: Some(Duration::from_secs(2)),
            recycle_timeout: Some(Duration::from_secs(1)),
        });
    let pool = PgPool::new(&config).unwrap();
    let store = PostgresStore::<Account>::new(&pool, PersistenceMode::event_sourced()).unwrap();
    match store.load("a").await {
        Err(StoreError::Backend {
            transient: true,
            message,
            ..
        }) => assert!(!message.contains("secret-pw"), "{message}"),
        other => panic!("expected a transient backend error, got {other:?}"),
    }
    let err = pool.check().await.unwrap_err();
    assert!(err.is_transient(), "{err:?}");
    assert!(!format!("{err} {err:?} {pool:?} {config:?}").contains("secret-pw"));
}

#[tokio::test]
async fn credentials_can_be_swapped_at_run_time() {
    let db = TestDb::migrated().await;
    let good = PostgresConfig::from_url(&db.url, db.schema.as_str()).unwrap();
    let good_debug = format!("{good:?}");
    // The admin credentials from the URL, taken back out through a provider.
    let user = db
        .url
        .split_once("://")
        .and_then(|(_, rest)| rest.split_once(':'))
        .map(|(user, _)| user.to_owned())
        .unwrap();
    let password = db
        .url
        .split_once("://")
        .and_then(|(_, rest)| rest.rsplit_once('@'))
        .and_then(|(creds, _)| creds.split_once(':'))
        .map(|(_, pw)| pw.to_owned())
        .unwrap();
    assert!(!good_debug.contains(&password));

    let creds = Arc::new(SwappableCredentials::new(Credentials::new(
        user.clone(),
        Some(Secret::new("wrong-password")),
    )));
    let config = good
        .with_credentials(Arc::clone(&creds))
        .with_max_connections(2);
    let pool = PgPool::new(&config).unwrap();
    let err = pool.check().await.unwrap_err();
    assert_eq!(err.sqlstate(), Some("28P01"), "{err:?}");
    assert!(!err.is_transient());

    // Rotation: new connections use the new credentials without rebuilding the pool.
    creds.replace(Credentials::new(user, Some(Secret::new(password))));
    pool.check().await.expect("new credentials are used");
    let store = PostgresStore::<Account>::new(&pool, PersistenceMode::event_sourced()).unwrap();
    assert_eq!(store.load("x").await.unwrap().version, 0);

    // Retiring closes the connections opened before; the next checkout opens a new one.
    let pid_before: i32 = pool
        .get()
        .await
        .unwrap()
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    pool.retire_connections();
    let pid_after: i32 = pool
        .get()
        .await
        .unwrap()
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    assert_ne!(pid_before, pid_after, "a fresh connection after retiring");
}
