//! Migrations against the real PostgreSQL: first run, re-run, concurrent runs, checksum
//! mismatch.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure

mod common;

use common::TestDb;
use cqrs_postgres::{Migration, Migrator, PostgresError};

#[tokio::test]
async fn first_run_applies_everything_and_rerun_is_a_no_op() {
    let db = TestDb::new().await;
    let first = db.pool.migrate().await.unwrap();
    assert_eq!(first.applied, vec![1, 2, 3, 4]);
    assert!(first.already_applied.is_empty());

    let again = db.pool.migrate().await.unwrap();
    assert!(again.applied.is_empty());
    assert_eq!(again.already_applied, vec![1, 2, 3, 4]);
    assert!(again.unknown_applied.is_empty());

    assert_eq!(db.count("cqrs_migrations").await, 4);
    for table in ["events", "aggregates", "outbox", "processed_commands"] {
        assert_eq!(db.count(table).await, 0, "{table} exists and is empty");
    }
    // Checksums are recorded as hex SHA-256 of the embedded files.
    let migrator = Migrator::embedded(db.schema.clone()).unwrap();
    let client = db.pool.get().await.unwrap();
    for m in migrator.migrations() {
        let recorded: String = client
            .query_one(
                &db.sql("SELECT checksum FROM {{schema}}.cqrs_migrations WHERE version = $1"),
                &[&m.version()],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(recorded, m.checksum());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_runs_apply_each_migration_once() {
    let db = TestDb::new().await;
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let pool = db.pool.clone();
        tasks.push(tokio::spawn(async move { pool.migrate().await }));
    }
    let mut applied_runs = 0;
    for task in tasks {
        let report = task.await.unwrap().expect("every concurrent run succeeds");
        if !report.applied.is_empty() {
            assert_eq!(report.applied, vec![1, 2, 3, 4]);
            applied_runs += 1;
        } else {
            assert_eq!(report.already_applied, vec![1, 2, 3, 4]);
        }
    }
    assert_eq!(applied_runs, 1, "exactly one run applied the migrations");
    assert_eq!(db.count("cqrs_migrations").await, 4);
}

#[tokio::test]
async fn changed_migration_is_a_checksum_mismatch() {
    let db = TestDb::new().await;
    db.pool.migrate().await.unwrap();

    // 1. The recorded checksum differs from the embedded file (as if the file had been
    //    edited after it was applied).
    db.exec(
        &db.sql(
            "UPDATE {{schema}}.cqrs_migrations SET checksum = repeat('0', 64) WHERE version = 2",
        ),
    )
    .await;
    match db.pool.migrate().await {
        Err(PostgresError::ChecksumMismatch {
            version,
            name,
            recorded,
            embedded,
            ..
        }) => {
            assert_eq!(version, 2);
            assert_eq!(name, "aggregates");
            assert_eq!(recorded, "0".repeat(64));
            assert_ne!(embedded, recorded);
        }
        other => panic!("expected a checksum mismatch, got {other:?}"),
    }

    // 2. A service's own migration applied, then its SQL changed in a new build.
    let db2 = TestDb::new().await;
    let mut migrations = Migrator::embedded(db2.schema.clone())
        .unwrap()
        .migrations()
        .to_vec();
    migrations.push(
        Migration::parse(
            "V100__notes.sql",
            "CREATE TABLE {{schema}}.notes (id bigint PRIMARY KEY)",
        )
        .unwrap(),
    );
    let report = Migrator::with_migrations(db2.schema.clone(), migrations.clone())
        .unwrap()
        .run(&db2.pool)
        .await
        .unwrap();
    assert_eq!(report.applied, vec![1, 2, 3, 4, 100]);

    let mut edited = migrations;
    edited.pop();
    edited.push(
        Migration::parse(
            "V100__notes.sql",
            "CREATE TABLE {{schema}}.notes (id bigint PRIMARY KEY, body text)",
        )
        .unwrap(),
    );
    let err = Migrator::with_migrations(db2.schema.clone(), edited)
        .unwrap()
        .run(&db2.pool)
        .await
        .unwrap_err();
    assert!(
        matches!(err, PostgresError::ChecksumMismatch { version: 100, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("V100 notes"), "{err}");

    // 3. An older binary that does not know V100 keeps working and reports it.
    let older = db2.pool.migrate().await.unwrap();
    assert_eq!(older.unknown_applied, vec![100]);
}

#[tokio::test]
async fn a_failing_migration_rolls_back_the_whole_run() {
    let db = TestDb::new().await;
    let mut migrations = Migrator::embedded(db.schema.clone())
        .unwrap()
        .migrations()
        .to_vec();
    migrations.push(Migration::parse("V050__broken.sql", "CREATE TABLE {{schema}}.x (").unwrap());
    let err = Migrator::with_migrations(db.schema.clone(), migrations)
        .unwrap()
        .run(&db.pool)
        .await
        .unwrap_err();
    assert_eq!(err.sqlstate(), Some("42601"), "{err:?}");
    // Nothing stayed: not even V001..V004, which ran before it in the same transaction.
    let client = db.pool.get().await.unwrap();
    let exists: bool = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)",
            &[&db.schema.as_str()],
        )
        .await
        .unwrap()
        .get(0);
    assert!(!exists, "the schema itself was rolled back");
}
