//! The command handler against the in-memory store: concurrency, idempotency,
//! snapshots, upcasting, state-stored aggregates and input validation.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use common::{Account, AccountCommand, AccountError, AccountEvent};
use cqrs_core::{
    AggregateStore, CommandError, CommandHandler, CommandMetadata, EventMetadata, InMemoryStore,
    PersistenceMode, RetryPolicy, TraceContext, Upcasters,
};
use serde_json::json;

type Handler = CommandHandler<Account, InMemoryStore<Account>>;

fn handler(mode: PersistenceMode) -> Handler {
    CommandHandler::new(InMemoryStore::new(mode))
}

async fn open(handler: &Handler, id: &str) {
    handler
        .execute(id, &AccountCommand::Open, CommandMetadata::new())
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_lose_no_event_and_never_duplicate_a_sequence() {
    let handler = Arc::new(
        handler(PersistenceMode::event_sourced())
            .with_retry_policy(RetryPolicy::default().with_max_attempts(1000)),
    );
    open(&handler, "acc").await;

    let tasks: Vec<_> = (0..32)
        .map(|_| {
            let handler = Arc::clone(&handler);
            tokio::spawn(async move {
                for _ in 0..20 {
                    handler
                        .execute("acc", &AccountCommand::Deposit(1), CommandMetadata::new())
                        .await
                        .unwrap()
                        .unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }

    let loaded = handler.store().load("acc").await.unwrap();
    assert_eq!(loaded.version, 641);
    assert_eq!(loaded.state.balance, 640);
    let sequences: Vec<u64> = handler
        .store()
        .stored_events("acc")
        .iter()
        .map(|(m, _)| m.sequence)
        .collect();
    assert_eq!(sequences, (1..=641).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_retries_every_conflict_is_surfaced() {
    let handler = Arc::new(
        handler(PersistenceMode::event_sourced()).with_retry_policy(RetryPolicy::no_retry()),
    );
    open(&handler, "acc").await;

    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let handler = Arc::clone(&handler);
            tokio::spawn(async move {
                let mut applied = 0u64;
                let mut conflicts = 0u64;
                for _ in 0..50 {
                    match handler
                        .execute("acc", &AccountCommand::Deposit(1), CommandMetadata::new())
                        .await
                    {
                        Ok(Ok(_)) => applied += 1,
                        Err(CommandError::Conflict { attempts: 1, .. }) => conflicts += 1,
                        other => panic!("unexpected result {other:?}"),
                    }
                    tokio::task::yield_now().await;
                }
                (applied, conflicts)
            })
        })
        .collect();
    let mut applied = 0;
    let mut conflicts = 0;
    for task in tasks {
        let (a, c) = task.await.unwrap();
        applied += a;
        conflicts += c;
    }
    assert_eq!(applied + conflicts, 800);
    let loaded = handler.store().load("acc").await.unwrap();
    assert_eq!(
        loaded.version,
        applied + 1,
        "every applied command is stored, no conflicting one is"
    );
    assert_eq!(loaded.state.balance as u64, applied);
}

#[tokio::test]
async fn a_command_id_is_applied_once_and_returns_the_first_result() {
    let handler = handler(PersistenceMode::event_sourced());
    open(&handler, "acc").await;
    let meta = CommandMetadata::new();

    let first = handler
        .execute("acc", &AccountCommand::Deposit(5), meta.clone())
        .await
        .unwrap()
        .unwrap();
    let second = handler
        .execute("acc", &AccountCommand::Deposit(5), meta)
        .await
        .unwrap()
        .unwrap();

    assert!(!first.deduplicated);
    assert!(second.deduplicated);
    assert_eq!(second.receipt, first.receipt);
    assert!(second.events.is_empty());
    assert_eq!(handler.store().load("acc").await.unwrap().state.balance, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_submissions_of_one_command_apply_it_once() {
    let handler = Arc::new(handler(PersistenceMode::event_sourced()));
    open(&handler, "acc").await;
    let meta = CommandMetadata::new();

    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let handler = Arc::clone(&handler);
            let meta = meta.clone();
            tokio::spawn(async move {
                handler
                    .execute("acc", &AccountCommand::Deposit(7), meta)
                    .await
                    .unwrap()
                    .unwrap()
            })
        })
        .collect();
    let mut receipts = Vec::new();
    for task in tasks {
        receipts.push(task.await.unwrap().receipt);
    }
    assert!(
        receipts.windows(2).all(|w| w[0] == w[1]),
        "every caller sees the same result"
    );
    assert_eq!(handler.store().load("acc").await.unwrap().state.balance, 7);
}

#[tokio::test]
async fn domain_errors_write_nothing() {
    let handler = handler(PersistenceMode::event_sourced());
    let result = handler
        .execute("acc", &AccountCommand::Deposit(5), CommandMetadata::new())
        .await
        .unwrap();
    assert_eq!(result.unwrap_err(), AccountError::NotOpen);
    assert_eq!(handler.store().load("acc").await.unwrap().version, 0);
    assert!(handler.store().outbox().is_empty());
}

#[tokio::test]
async fn snapshot_plus_replay_equals_full_replay() {
    let with_snapshots = handler(PersistenceMode::event_sourced().with_snapshots_every(3));
    let without = handler(PersistenceMode::event_sourced());
    for handler in [&with_snapshots, &without] {
        open(handler, "acc").await;
        for n in 1..=10 {
            handler
                .execute("acc", &AccountCommand::Deposit(n), CommandMetadata::new())
                .await
                .unwrap()
                .unwrap();
        }
        handler
            .execute("acc", &AccountCommand::Withdraw(4), CommandMetadata::new())
            .await
            .unwrap()
            .unwrap();
    }
    let a = with_snapshots.store().load("acc").await.unwrap();
    let b = without.store().load("acc").await.unwrap();
    assert_eq!(a.version, 12);
    assert_eq!((a.version, &a.state), (b.version, &b.state));
    assert_eq!(a.state.balance, 51);
}

#[tokio::test]
async fn old_event_versions_are_upcast_on_load() {
    let upcasters = Upcasters::new().register_fn("MoneyDeposited", 1, |payload| {
        let euros = payload["data"]["euros"]
            .as_i64()
            .ok_or("v1 payload without euros")?;
        Ok(json!({"type": "Deposited", "data": {"cents": euros * 100}}))
    });
    let store =
        InMemoryStore::<Account>::new(PersistenceMode::event_sourced()).with_upcasters(upcasters);
    let command = CommandMetadata::new();
    let meta = |seq, ty: &str, version| {
        EventMetadata::for_command(&command, "Account", "acc", seq, ty, version)
    };
    store
        .insert_stored_event(meta(1, "AccountOpened", 1), json!({"type": "Opened"}))
        .unwrap();
    store
        .insert_stored_event(
            meta(2, "MoneyDeposited", 1),
            json!({"type": "Deposited", "data": {"euros": 3}}),
        )
        .unwrap();

    let loaded = store.load("acc").await.unwrap();
    assert_eq!(loaded.state.balance, 300);

    let events = store.load_events("acc", 0).await.unwrap();
    assert_eq!(events[1].payload, AccountEvent::Deposited { cents: 300 });
    assert_eq!(events[1].metadata.event_version, 2);

    // The handler keeps working on top of upcast history.
    let handler = CommandHandler::new(store.clone());
    let outcome = handler
        .execute("acc", &AccountCommand::Deposit(1), CommandMetadata::new())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(outcome.version(), 3);
}

#[tokio::test]
async fn a_failing_upcaster_is_a_typed_store_error() {
    let upcasters = Upcasters::new().register_fn("MoneyDeposited", 1, |_| Err("no euros".into()));
    let store =
        InMemoryStore::<Account>::new(PersistenceMode::event_sourced()).with_upcasters(upcasters);
    let command = CommandMetadata::new();
    store
        .insert_stored_event(
            EventMetadata::for_command(&command, "Account", "acc", 1, "MoneyDeposited", 1),
            json!({}),
        )
        .unwrap();
    let err = store.load("acc").await.unwrap_err();
    assert!(
        err.to_string()
            .contains("upcasting MoneyDeposited v1 failed: no euros"),
        "{err}"
    );
}

#[tokio::test]
async fn state_stored_aggregates_keep_state_and_publish_through_the_outbox() {
    let handler = handler(PersistenceMode::StateStored);
    let trace = TraceContext::parse(
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        None,
    )
    .unwrap();
    let meta = CommandMetadata::new()
        .with_trace_context(trace.clone())
        .with_tenant_id("t1");
    handler
        .execute("acc", &AccountCommand::Open, meta.clone())
        .await
        .unwrap()
        .unwrap();
    handler
        .execute("acc", &AccountCommand::Deposit(9), CommandMetadata::new())
        .await
        .unwrap()
        .unwrap();

    let loaded = handler.store().load("acc").await.unwrap();
    assert_eq!((loaded.version, loaded.state.balance), (2, 9));
    assert!(handler.store().stored_events("acc").is_empty());
    assert!(handler.store().load_events("acc", 0).await.is_err());

    let outbox = handler.store().outbox();
    assert_eq!(outbox.len(), 2);
    assert_eq!(outbox[0].event_type, "AccountOpened");
    assert_eq!(outbox[0].aggregate_id, "acc");
    assert_eq!(outbox[0].trace_context.as_ref(), Some(&trace));
    assert_eq!(outbox[0].metadata.tenant_id.as_deref(), Some("t1"));
    assert_eq!(outbox[0].metadata.causation_id, meta.command_id);
    assert_eq!(
        outbox[1].payload,
        json!({"type": "Deposited", "data": {"cents": 9}})
    );
}

#[tokio::test]
async fn events_carry_complete_metadata() {
    let handler = handler(PersistenceMode::event_sourced());
    let meta = CommandMetadata::new().with_tenant_id("t1");
    let outcome = handler
        .execute("acc", &AccountCommand::Open, meta.clone())
        .await
        .unwrap()
        .unwrap();
    let m = &outcome.events[0].metadata;
    assert_eq!(m.event_id.get_version_num(), 7);
    assert_eq!(
        (
            m.aggregate_type.as_str(),
            m.aggregate_id.as_str(),
            m.sequence
        ),
        ("Account", "acc", 1)
    );
    assert_eq!(
        (m.event_type.as_str(), m.event_version),
        ("AccountOpened", 1)
    );
    assert_eq!(m.correlation_id, meta.correlation_id);
    assert_eq!(m.causation_id, meta.command_id);
    assert_eq!(outcome.consistency_token().to_string(), "Account:1:acc");
    assert_eq!(outcome.receipt.events, vec![m.clone()]);
}

#[tokio::test]
async fn a_command_deciding_nothing_writes_nothing() {
    let handler = handler(PersistenceMode::event_sourced());
    open(&handler, "acc").await;
    let outcome = handler
        .execute("acc", &AccountCommand::Noop, CommandMetadata::new())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(outcome.version(), 1);
    assert!(outcome.events.is_empty());
    assert_eq!(handler.store().outbox().len(), 1);
}

#[tokio::test]
async fn malformed_commands_are_rejected_before_anything_is_written() {
    let handler = handler(PersistenceMode::event_sourced());
    for id in ["", "bad\nid", &"x".repeat(257)] {
        let err = handler
            .execute(id, &AccountCommand::Open, CommandMetadata::new())
            .await
            .unwrap_err();
        assert!(
            matches!(err, CommandError::InvalidCommand(_)),
            "{id:?}: {err}"
        );
    }
    let err = handler
        .execute(
            "acc",
            &AccountCommand::Open,
            CommandMetadata::new().with_tenant_id(""),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, CommandError::InvalidCommand(_)));
    assert!(handler.store().outbox().is_empty());
}
