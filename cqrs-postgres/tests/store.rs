//! PostgresStore against the real PostgreSQL: concurrency, idempotency, snapshots,
//! upcasting, atomicity, state-stored mode and the outbox layout.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::TestDb;
use cqrs_core::{
    Aggregate, AggregateStore, CommandError, CommandHandler, CommandMetadata, Commit,
    PersistenceMode, RetryPolicy, StoreError, TraceContext, Upcasters,
};
use cqrs_postgres::PostgresStore;
use cqrs_test_support::account::{Account, AccountCommand, AccountError, AccountEvent};
use serde_json::json;
use uuid::Uuid;

fn es_store(db: &TestDb) -> PostgresStore<Account> {
    PostgresStore::new(&db.pool, PersistenceMode::event_sourced()).unwrap()
}

/// Hundreds of events on one aggregate: snapshots keep each load short.
fn hot_store(db: &TestDb) -> PostgresStore<Account> {
    PostgresStore::new(
        &db.pool,
        PersistenceMode::event_sourced().with_snapshots_every(25),
    )
    .unwrap()
}

/// Checks the stream of one aggregate: sequences 1..=n, each exactly once.
async fn assert_stream_contiguous(db: &TestDb, aggregate_id: &str, expected: i64) {
    let client = db.pool.get().await.unwrap();
    let row = client
        .query_one(
            &db.sql(
                "SELECT count(*), count(DISTINCT sequence), COALESCE(min(sequence), 0), COALESCE(max(sequence), 0)
                 FROM {{schema}}.events WHERE aggregate_type = 'Account' AND aggregate_id = $1",
            ),
            &[&aggregate_id],
        )
        .await
        .unwrap();
    let (count, distinct, min, max): (i64, i64, i64, i64) =
        (row.get(0), row.get(1), row.get(2), row.get(3));
    assert_eq!(count, expected, "events stored");
    assert_eq!(distinct, expected, "no duplicate sequence");
    if expected > 0 {
        assert_eq!((min, max), (1, expected), "no gap in the sequence");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_without_retry_surface_every_conflict() {
    const TASKS: usize = 32;
    const COMMANDS: usize = 20;
    let db = TestDb::migrated().await;
    let handler =
        Arc::new(CommandHandler::new(hot_store(&db)).with_retry_policy(RetryPolicy::no_retry()));
    let mut tasks = Vec::new();
    for _ in 0..TASKS {
        let handler = Arc::clone(&handler);
        tasks.push(tokio::spawn(async move {
            let (mut ok, mut conflicts) = (0i64, 0i64);
            for _ in 0..COMMANDS {
                match handler
                    .execute("hot", &AccountCommand::Deposit(1), CommandMetadata::new())
                    .await
                {
                    Ok(Ok(outcome)) => {
                        assert_eq!(outcome.attempts, 1);
                        ok += 1;
                    }
                    Err(CommandError::Conflict { attempts, .. }) => {
                        assert_eq!(attempts, 1);
                        conflicts += 1;
                    }
                    other => panic!("unexpected result: {other:?}"),
                }
            }
            (ok, conflicts)
        }));
    }
    let (mut ok, mut conflicts) = (0, 0);
    for task in tasks {
        let (o, c) = task.await.unwrap();
        ok += o;
        conflicts += c;
    }
    assert_eq!(
        ok + conflicts,
        (TASKS * COMMANDS) as i64,
        "every command accounted for"
    );
    assert!(
        conflicts > 0,
        "32 concurrent writers on one aggregate must conflict"
    );
    assert_stream_contiguous(&db, "hot", ok).await;
    assert_eq!(db.count("outbox").await, ok);
    assert_eq!(db.count("processed_commands").await, ok);
    let loaded = handler.store().load("hot").await.unwrap();
    assert_eq!(loaded.version, ok as u64);
    assert_eq!(loaded.state.balance_cents, ok, "no lost event");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_with_retry_all_succeed() {
    const TASKS: usize = 32;
    const COMMANDS: usize = 20;
    let db = TestDb::migrated().await;
    let retry = RetryPolicy::default()
        .with_max_attempts(500)
        .with_backoff(Duration::from_millis(1), Duration::from_millis(20));
    let handler = Arc::new(CommandHandler::new(hot_store(&db)).with_retry_policy(retry));
    let mut tasks = Vec::new();
    for task in 0..TASKS {
        let handler = Arc::clone(&handler);
        tasks.push(tokio::spawn(async move {
            let mut attempts = 0u32;
            for i in 0..COMMANDS {
                // Two events per command now and then, to exercise the batch insert.
                let command = if (task + i) % 5 == 0 {
                    AccountCommand::DepositMany(vec![1, 1])
                } else {
                    AccountCommand::Deposit(1)
                };
                let outcome = handler
                    .execute("hot", &command, CommandMetadata::new())
                    .await
                    .expect("retries absorb every conflict")
                    .unwrap();
                attempts += outcome.attempts;
            }
            attempts
        }));
    }
    let mut attempts = 0;
    for task in tasks {
        attempts += task.await.unwrap();
    }
    let commands = (TASKS * COMMANDS) as i64;
    let doubles = (0..TASKS)
        .flat_map(|t| (0..COMMANDS).map(move |i| (t + i) % 5 == 0))
        .filter(|d| *d)
        .count() as i64;
    let events = commands + doubles;
    assert!(
        attempts as i64 > commands,
        "conflicts happened and were retried"
    );
    assert_stream_contiguous(&db, "hot", events).await;
    assert_eq!(db.count("processed_commands").await, commands);
    assert_eq!(db.count("outbox").await, events);
    let loaded = handler.store().load("hot").await.unwrap();
    assert_eq!(loaded.version, events as u64);
    assert_eq!(loaded.state.balance_cents, events);
}

#[tokio::test]
async fn same_command_id_twice_is_applied_once() {
    let db = TestDb::migrated().await;
    let handler = CommandHandler::new(es_store(&db));
    let meta = CommandMetadata::new();
    let first = handler
        .execute("acc-1", &AccountCommand::Deposit(5), meta.clone())
        .await
        .unwrap()
        .unwrap();
    assert!(!first.deduplicated);
    let second = handler
        .execute("acc-1", &AccountCommand::Deposit(5), meta.clone())
        .await
        .unwrap()
        .unwrap();
    assert!(second.deduplicated);
    assert_eq!(
        second.receipt, first.receipt,
        "the first receipt, as committed"
    );
    assert_eq!(db.count("events").await, 1);

    // At the store level, a second commit of the same command id is a DuplicateCommand.
    let store = handler.store();
    let loaded = store.load("acc-1").await.unwrap();
    let mut state = loaded.state;
    let events = vec![cqrs_core::NewEvent {
        metadata: cqrs_core::EventMetadata::for_command(
            &meta,
            "Account",
            "acc-1",
            2,
            "MoneyDeposited",
            2,
        ),
        payload: json!({"Deposited": {"amount_cents": 5}}),
    }];
    state.apply(&AccountEvent::Deposited { amount_cents: 5 });
    let err = store
        .commit(Commit {
            aggregate_id: "acc-1",
            expected_version: 1,
            events: &events,
            state: &state,
            receipt: &first.receipt,
        })
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::DuplicateCommand { command_id } if command_id == meta.command_id),
        "{err:?}"
    );
    assert_eq!(
        db.count("events").await,
        1,
        "nothing of the duplicate stayed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn same_command_id_concurrently_is_applied_once() {
    let db = TestDb::migrated().await;
    let handler = Arc::new(CommandHandler::new(es_store(&db)));
    // Once on a new aggregate (racing INSERTs), once on an existing one (racing UPDATEs).
    for (aggregate, existing) in [("fresh", false), ("existing", true)] {
        if existing {
            handler
                .execute(
                    aggregate,
                    &AccountCommand::Deposit(1),
                    CommandMetadata::new(),
                )
                .await
                .unwrap()
                .unwrap();
        }
        let meta = CommandMetadata::new();
        let mut tasks = Vec::new();
        for _ in 0..16 {
            let handler = Arc::clone(&handler);
            let meta = meta.clone();
            tasks.push(tokio::spawn(async move {
                handler
                    .execute(aggregate, &AccountCommand::Deposit(7), meta)
                    .await
                    .unwrap()
                    .unwrap()
            }));
        }
        let mut outcomes = Vec::new();
        for task in tasks {
            outcomes.push(task.await.unwrap());
        }
        let applied: Vec<_> = outcomes.iter().filter(|o| !o.deduplicated).collect();
        assert_eq!(applied.len(), 1, "exactly one submission ran the command");
        for outcome in &outcomes {
            assert_eq!(
                outcome.receipt, applied[0].receipt,
                "all see the first receipt"
            );
        }
        let base = i64::from(existing);
        assert_stream_contiguous(&db, aggregate, base + 1).await;
        let loaded = handler.store().load(aggregate).await.unwrap();
        assert_eq!(loaded.state.balance_cents, base + 7);
    }
}

#[tokio::test]
async fn snapshot_plus_replay_equals_full_replay() {
    let db = TestDb::migrated().await;
    let snapshots = PostgresStore::<Account>::new(
        &db.pool,
        PersistenceMode::event_sourced().with_snapshots_every(5),
    )
    .unwrap();
    let handler = CommandHandler::new(snapshots.clone());
    let mut expected_version = 0;
    for i in 1..=17i64 {
        let command = if i % 4 == 0 {
            AccountCommand::DepositMany(vec![i, i + 1, i + 2])
        } else if i % 7 == 0 {
            AccountCommand::Withdraw(3)
        } else {
            AccountCommand::Deposit(i)
        };
        let outcome = handler
            .execute("acc-snap", &command, CommandMetadata::new())
            .await
            .unwrap()
            .unwrap();
        expected_version = outcome.version();
    }
    // Make sure the head is past the last snapshot, so that the load replays a tail.
    while expected_version % 5 == 0 {
        expected_version = handler
            .execute(
                "acc-snap",
                &AccountCommand::Deposit(1),
                CommandMetadata::new(),
            )
            .await
            .unwrap()
            .unwrap()
            .version();
    }
    // A snapshot was taken, and it is not at the head (so the load replays a tail).
    let client = db.pool.get().await.unwrap();
    let row = client
        .query_one(
            &db.sql("SELECT snapshot_version, version FROM {{schema}}.aggregates WHERE aggregate_id = 'acc-snap'"),
            &[],
        )
        .await
        .unwrap();
    let (snapshot_version, version): (Option<i64>, i64) = (row.get(0), row.get(1));
    assert_eq!(version as u64, expected_version);
    let snapshot_version = snapshot_version.expect("a snapshot was written");
    assert!(
        snapshot_version >= 5 && snapshot_version < version,
        "{snapshot_version} / {version}"
    );

    let via_snapshot = snapshots.load("acc-snap").await.unwrap();
    let mut full = Account::default();
    let events = snapshots.load_events("acc-snap", 0).await.unwrap();
    assert_eq!(events.len() as u64, expected_version);
    for event in &events {
        full.apply(&event.payload);
    }
    assert_eq!(via_snapshot.version, expected_version);
    assert_eq!(via_snapshot.state, full, "snapshot + tail == full replay");

    // The tail alone, after the snapshot, is what the store replays.
    let tail = snapshots
        .load_events("acc-snap", snapshot_version as u64)
        .await
        .unwrap();
    assert_eq!(tail.len() as i64, version - snapshot_version);
    assert_eq!(tail[0].metadata.sequence, snapshot_version as u64 + 1);
}

#[tokio::test]
async fn old_event_version_in_the_table_is_upcast_on_load() {
    let db = TestDb::migrated().await;
    // An event written by an older release: v1, amount in whole euros, plus its row.
    db.exec(&db.sql(
        r#"INSERT INTO {{schema}}.events
               (aggregate_type, aggregate_id, sequence, event_id, event_type, event_version, payload, metadata, occurred_at)
           VALUES ('Account', 'legacy', 1, gen_random_uuid(), 'MoneyDeposited', 1,
                   '{"Deposited": {"amount": 5}}', '{"correlation_id": "0191b5a4-0000-7000-8000-000000000001"}', now());
           INSERT INTO {{schema}}.aggregates (aggregate_type, aggregate_id, version) VALUES ('Account', 'legacy', 1);"#,
    ))
    .await;
    let upcasters = Upcasters::new().register_fn("MoneyDeposited", 1, |mut payload| {
        let euros = payload["Deposited"]["amount"]
            .as_i64()
            .ok_or("amount missing")?;
        payload["Deposited"] = json!({ "amount_cents": euros * 100 });
        Ok(payload)
    });
    let store = es_store(&db).with_upcasters(upcasters);

    let events = store.load_events("legacy", 0).await.unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].metadata.event_version, 2, "decoded as v2");
    assert_eq!(
        events[0].payload,
        AccountEvent::Deposited { amount_cents: 500 }
    );
    assert_eq!(
        events[0].metadata.correlation_id.to_string(),
        "0191b5a4-0000-7000-8000-000000000001"
    );

    let loaded = store.load("legacy").await.unwrap();
    assert_eq!(loaded.version, 1);
    assert_eq!(loaded.state.balance_cents, 500);

    // New commands go on top of the legacy stream; the table keeps the v1 row as it was.
    let handler = CommandHandler::new(store.clone());
    let outcome = handler
        .execute(
            "legacy",
            &AccountCommand::Deposit(1),
            CommandMetadata::new(),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(outcome.version(), 2);
    assert_eq!(
        db.scalar(&db.sql("SELECT event_version::int8 FROM {{schema}}.events WHERE aggregate_id = 'legacy' AND sequence = 1")).await,
        1
    );
    assert_eq!(store.load("legacy").await.unwrap().state.balance_cents, 501);

    // Without the upcaster the v1 payload cannot be decoded: a typed error, no panic.
    let err = es_store(&db).load("legacy").await.unwrap_err();
    assert!(matches!(err, StoreError::Deserialize { .. }), "{err:?}");
}

#[tokio::test]
async fn failure_after_the_event_insert_leaves_nothing_behind() {
    let db = TestDb::migrated().await;
    let handler = CommandHandler::new(es_store(&db));
    handler
        .execute(
            "acc-ok",
            &AccountCommand::Deposit(1),
            CommandMetadata::new(),
        )
        .await
        .unwrap()
        .unwrap();
    let before = (
        db.count("events").await,
        db.count("aggregates").await,
        db.count("processed_commands").await,
        db.count("outbox").await,
    );
    assert_eq!(before, (1, 1, 1, 1));

    // From now on the outbox insert — the last write of a commit, after the events —
    // fails. NOT VALID keeps the existing row; new rows are checked.
    db.exec(&db.sql(
        "ALTER TABLE {{schema}}.outbox ADD CONSTRAINT test_reject_all CHECK (false) NOT VALID",
    ))
    .await;

    for (aggregate, command) in [
        ("acc-new", AccountCommand::DepositMany(vec![1, 2, 3])),
        ("acc-ok", AccountCommand::Deposit(2)),
    ] {
        let err = handler
            .execute(aggregate, &command, CommandMetadata::new())
            .await
            .unwrap_err();
        match err {
            CommandError::Store(StoreError::Backend {
                transient, message, ..
            }) => {
                assert!(!transient);
                assert!(message.contains("23514"), "{message}");
            }
            other => panic!("expected a backend error, got {other:?}"),
        }
    }
    let after = (
        db.count("events").await,
        db.count("aggregates").await,
        db.count("processed_commands").await,
        db.count("outbox").await,
    );
    assert_eq!(after, before, "the failed commits left nothing behind");
    assert_eq!(
        handler.store().load("acc-ok").await.unwrap().version,
        1,
        "the existing aggregate was not moved"
    );
    assert_eq!(handler.store().load("acc-new").await.unwrap().version, 0);
}

#[tokio::test]
async fn state_stored_writes_state_and_outbox_but_no_events() {
    let db = TestDb::migrated().await;
    let store = PostgresStore::<Account>::new(&db.pool, PersistenceMode::StateStored).unwrap();
    let handler = CommandHandler::new(store.clone());
    handler
        .execute(
            "acc-s",
            &AccountCommand::Deposit(10),
            CommandMetadata::new(),
        )
        .await
        .unwrap()
        .unwrap();
    let outcome = handler
        .execute(
            "acc-s",
            &AccountCommand::DepositMany(vec![1, 2]),
            CommandMetadata::new(),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(outcome.version(), 3);
    assert_eq!(db.count("events").await, 0, "state-stored keeps no events");
    assert_eq!(db.count("outbox").await, 3, "but publishes them");
    assert_eq!(db.count("processed_commands").await, 2);

    let client = db.pool.get().await.unwrap();
    let row = client
        .query_one(
            &db.sql("SELECT version, state, snapshot_version FROM {{schema}}.aggregates WHERE aggregate_id = 'acc-s'"),
            &[],
        )
        .await
        .unwrap();
    let (version, state, at): (i64, serde_json::Value, Option<i64>) =
        (row.get(0), row.get(1), row.get(2));
    assert_eq!(version, 3);
    assert_eq!(at, Some(3));
    assert_eq!(state["balance_cents"], 13);

    let loaded = store.load("acc-s").await.unwrap();
    assert_eq!((loaded.version, loaded.state.balance_cents), (3, 13));
    assert!(matches!(
        store.load_events("acc-s", 0).await,
        Err(StoreError::Unsupported(_))
    ));

    // Domain errors are not infrastructure errors, and write nothing.
    let refused = handler
        .execute(
            "acc-s",
            &AccountCommand::Withdraw(1000),
            CommandMetadata::new(),
        )
        .await
        .unwrap();
    assert_eq!(refused.unwrap_err(), AccountError::InsufficientFunds);
    assert_eq!(db.count("processed_commands").await, 2);

    // Outbox off: state only.
    let quiet = PostgresStore::<Account>::new(&db.pool, PersistenceMode::StateStored)
        .unwrap()
        .with_outbox(false);
    CommandHandler::new(quiet)
        .execute(
            "acc-quiet",
            &AccountCommand::Deposit(1),
            CommandMetadata::new(),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(db.count("outbox").await, 3);
    assert_eq!(db.count("aggregates").await, 2);
}

#[tokio::test]
async fn outbox_rows_have_the_debezium_router_layout() {
    let db = TestDb::migrated().await;
    // Column names and types the outbox event router reads.
    let client = db.pool.get().await.unwrap();
    let rows = client
        .query(
            "SELECT column_name::text, data_type::text, is_nullable::text FROM information_schema.columns
             WHERE table_schema = $1 AND table_name = 'outbox'",
            &[&db.schema.as_str()],
        )
        .await
        .unwrap();
    let columns: std::collections::HashMap<String, (String, String)> = rows
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2))))
        .collect();
    for (name, ty, nullable) in [
        ("id", "uuid", "NO"),
        ("aggregatetype", "text", "NO"),
        ("aggregateid", "text", "NO"),
        ("type", "text", "NO"),
        ("payload", "jsonb", "NO"),
        ("tracingspancontext", "text", "YES"),
    ] {
        assert_eq!(
            columns.get(name),
            Some(&(ty.to_owned(), nullable.to_owned())),
            "column {name}"
        );
    }
    let pk: String = client
        .query_one(
            "SELECT string_agg(a.attname, ',') FROM pg_index i
             JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
             WHERE i.indrelid = ($1 || '.outbox')::regclass AND i.indisprimary",
            &[&db.schema.quoted()],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(pk, "id");

    let trace = TraceContext::parse(
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        Some("vendor=abc"),
    )
    .unwrap();
    let meta = CommandMetadata::new()
        .with_tenant_id("acme")
        .with_trace_context(trace)
        .caused_by(Uuid::now_v7());
    let outcome = CommandHandler::new(es_store(&db))
        .execute(
            "acc-o",
            &AccountCommand::DepositMany(vec![4, 5]),
            meta.clone(),
        )
        .await
        .unwrap()
        .unwrap();
    let rows = client
        .query(
            &db.sql(
                "SELECT id, aggregatetype, aggregateid, type, payload, tracingspancontext, sequence,
                        event_version, correlation_id, causation_id, tenant_id
                 FROM {{schema}}.outbox ORDER BY sequence",
            ),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 2);
    for (row, (event, amount)) in rows.iter().zip(outcome.events.iter().zip([4, 5])) {
        assert_eq!(row.get::<_, Uuid>("id"), event.metadata.event_id);
        assert_eq!(row.get::<_, String>("aggregatetype"), "Account");
        assert_eq!(row.get::<_, String>("aggregateid"), "acc-o");
        assert_eq!(row.get::<_, String>("type"), "MoneyDeposited");
        assert_eq!(
            row.get::<_, serde_json::Value>("payload"),
            json!({"Deposited": {"amount_cents": amount}})
        );
        assert_eq!(
            row.get::<_, Option<String>>("tracingspancontext")
                .as_deref(),
            Some(
                "traceparent=00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\ntracestate=vendor=abc\n"
            )
        );
        assert_eq!(
            row.get::<_, i64>("sequence") as u64,
            event.metadata.sequence
        );
        assert_eq!(row.get::<_, i32>("event_version"), 2);
        assert_eq!(row.get::<_, Uuid>("correlation_id"), meta.correlation_id);
        assert_eq!(row.get::<_, Uuid>("causation_id"), meta.command_id);
        assert_eq!(
            row.get::<_, Option<String>>("tenant_id").as_deref(),
            Some("acme")
        );
    }

    // The events table keeps the same metadata, and it round-trips.
    let events = es_store(&db).load_events("acc-o", 0).await.unwrap();
    assert_eq!(
        events[0].metadata,
        outcome.events[0].metadata_with_precision()
    );
}

/// Timestamps come back from PostgreSQL with microsecond precision.
trait MetadataPrecision {
    fn metadata_with_precision(&self) -> cqrs_core::EventMetadata;
}

impl<E> MetadataPrecision for cqrs_core::EventEnvelope<E> {
    fn metadata_with_precision(&self) -> cqrs_core::EventMetadata {
        let mut m = self.metadata.clone();
        let micros = m.occurred_at.timestamp_micros();
        m.occurred_at = chrono::DateTime::from_timestamp_micros(micros).unwrap();
        m
    }
}

#[tokio::test]
async fn events_table_is_append_only_and_inputs_are_checked() {
    let db = TestDb::migrated().await;
    let handler = CommandHandler::new(es_store(&db));
    handler
        .execute("acc-a", &AccountCommand::Deposit(1), CommandMetadata::new())
        .await
        .unwrap()
        .unwrap();
    let client = db.pool.get().await.unwrap();
    let err = client
        .execute(&db.sql("UPDATE {{schema}}.events SET payload = '{}'"), &[])
        .await
        .unwrap_err();
    assert_eq!(err.code().unwrap().code(), "23001");
    let err = client
        .execute(&db.sql("DELETE FROM {{schema}}.events"), &[])
        .await
        .unwrap_err();
    assert_eq!(err.code().unwrap().code(), "23001");

    // Invalid ids are refused before any SQL.
    let store = es_store(&db);
    assert!(matches!(
        store.load("").await,
        Err(StoreError::InvalidInput(_))
    ));
    assert!(matches!(
        store.load(&"x".repeat(300)).await,
        Err(StoreError::InvalidInput(_))
    ));
    assert!(matches!(
        store.load("a\u{0}b").await,
        Err(StoreError::InvalidInput(_))
    ));
    // Odd but valid ids are stored verbatim: they are bound, never spliced.
    let odd = "o'brien\"; DROP TABLE x; --";
    let outcome = handler
        .execute(odd, &AccountCommand::Deposit(3), CommandMetadata::new())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(outcome.consistency_token().aggregate_id, odd);
    assert_eq!(store.load(odd).await.unwrap().state.balance_cents, 3);
}
