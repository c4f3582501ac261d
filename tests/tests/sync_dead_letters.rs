//! Poison messages through the real stack: an undecodable message and an unmappable
//! change land in the dead-letter topic with their original bytes and failure headers,
//! later changes of the same key are held back behind them while other keys keep
//! flowing, and a replay after the fix applies them in order.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use bson::{Document, doc};
use futures::StreamExt;
use rdkafka::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use support::picky::Picky;
use support::{Running, Scenario, until};
use sync_service::SyncService;
use sync_service::dead_letter::admin::{self, Selection};
use sync_service::dead_letter::{Stage, headers};

const WAIT: Duration = Duration::from_secs(60);

fn service(s: &Scenario, fixed: bool) -> SyncService {
    let items = format!("{}.items", s.schema);
    SyncService::new(s.config("")).with_projection(Picky::new(fixed), &[&items])
}

async fn names(s: &Scenario) -> Vec<(i32, String)> {
    s.live_docs("items")
        .await
        .iter()
        .map(|d: &Document| {
            (
                d.get_i32("_id").unwrap(),
                d.get_str("name").unwrap_or("").to_owned(),
            )
        })
        .collect()
}

async fn wait_names(s: &Scenario, expected: &[(i32, &str)]) {
    let expected: Vec<(i32, String)> = expected
        .iter()
        .map(|(i, n)| (*i, (*n).to_owned()))
        .collect();
    until("item names", WAIT, || async {
        let seen = names(s).await;
        if seen == expected {
            Ok(())
        } else {
            Err(format!("{seen:?}"))
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn poison_messages_are_dead_lettered_held_back_and_replayed_in_order() {
    let s = Scenario::new("dlq").await;
    // Drops the schema and database even when an assertion fails.
    let _cleanup = s.cleanup_guard();
    s.sql(
        "CREATE TABLE {s}.items (id int PRIMARY KEY, name text NOT NULL);
         INSERT INTO {s}.items SELECT i, 'v1' FROM generate_series(1, 5) i;",
    )
    .await;
    let running = Running::start(service(&s, false));
    wait_names(&s, &[(1, "v1"), (2, "v1"), (3, "v1"), (4, "v1"), (5, "v1")]).await;

    // Corrupt bytes claiming an unknown schema id, straight into the topic.
    let corrupt = support::CORRUPT;
    let (corrupt_partition, corrupt_offset) = s
        .send_raw(&s.topic("items"), br#"{"id":99}"#, corrupt)
        .await;

    // Row 3 is poisoned, then updated again; rows 1 and 5 move on.
    s.sql(
        "UPDATE {s}.items SET name = 'poison' WHERE id = 3;
         UPDATE {s}.items SET name = 'after' WHERE id = 3;
         UPDATE {s}.items SET name = 'v2' WHERE id IN (1, 5);",
    )
    .await;
    wait_names(&s, &[(1, "v2"), (2, "v1"), (3, "v1"), (4, "v1"), (5, "v2")]).await;
    let config = s.config("");
    let pending = until("three pending dead letters", WAIT, || async {
        let pending = admin::list(&config, &Selection::default()).await.unwrap();
        if pending.len() == 3 {
            Ok(pending)
        } else {
            Err(format!("{pending:?}"))
        }
    })
    .await;
    running.stop().await;

    let corrupt_id = format!("{}/{corrupt_partition}/{corrupt_offset}", s.topic("items"));
    let by_stage = |stage| {
        pending
            .iter()
            .filter(move |d| d.stage == stage)
            .collect::<Vec<_>>()
    };
    assert_eq!(by_stage(Stage::Decode).len(), 1);
    assert_eq!(by_stage(Stage::Decode)[0].id, corrupt_id);
    assert!(
        by_stage(Stage::Decode)[0].error.contains("2147483632"),
        "{:?}",
        by_stage(Stage::Decode)[0]
    );
    let poisoned = by_stage(Stage::Map);
    assert_eq!(poisoned.len(), 1);
    assert!(poisoned[0].error.contains("cannot project a poisoned row"));
    let held = by_stage(Stage::HeldBack);
    assert_eq!(held.len(), 1);
    assert_eq!(
        held[0].key, poisoned[0].key,
        "the held-back change is of the poisoned key"
    );
    assert_eq!(held[0].behind.as_deref(), Some(poisoned[0].id.as_str()));
    assert!(held[0].offset > poisoned[0].offset);

    // The dead-letter topic has the original bytes and the failure headers.
    let consumer: StreamConsumer = ClientConfig::new()
        .set(
            "bootstrap.servers",
            s.contract.require("KAFKA_BOOTSTRAP_SERVERS"),
        )
        .set("group.id", format!("{}-inspect", s.group))
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "6000")
        .create()
        .unwrap();
    consumer.subscribe(&[&s.dlq_topic]).unwrap();
    let mut stream = consumer.stream();
    let mut found = false;
    for _ in 0..3 {
        let message = tokio::time::timeout(WAIT, stream.next())
            .await
            .expect("dead-letter topic message")
            .unwrap()
            .unwrap();
        let header = |name: &str| {
            message
                .headers()
                .and_then(|h| h.iter().find(|x| x.key == name).and_then(|x| x.value))
                .map(|v| String::from_utf8_lossy(v).into_owned())
        };
        if header(headers::STAGE).as_deref() == Some("decode") {
            assert_eq!(message.payload(), Some(corrupt));
            assert_eq!(message.key(), Some(&br#"{"id":99}"#[..]));
            assert_eq!(header(headers::TOPIC), Some(s.topic("items")));
            assert_eq!(
                header(headers::PARTITION),
                Some(corrupt_partition.to_string())
            );
            assert_eq!(header(headers::OFFSET), Some(corrupt_offset.to_string()));
            assert!(header(headers::ERROR).is_some_and(|e| e.contains("schema")));
            found = true;
        }
    }
    assert!(found, "the corrupt message is in the dead-letter topic");
    drop(stream);

    // After the fix, a replay applies the poisoned change and the one held back, in order;
    // the corrupt message fails again and stays pending until skipped.
    let report = service(&s, true)
        .replay_dead_letters(&Selection {
            ids: vec![],
            topic: Some(s.topic("items")),
        })
        .await
        .unwrap();
    assert_eq!(
        (report.replayed, report.still_failing, report.missing),
        (2, 1, 0),
        "{report:?}"
    );
    wait_names(
        &s,
        &[(1, "v2"), (2, "v1"), (3, "after"), (4, "v1"), (5, "v2")],
    )
    .await;
    assert_eq!(
        admin::skip(
            &config,
            &Selection {
                ids: vec![corrupt_id],
                topic: None
            }
        )
        .await
        .unwrap(),
        1
    );
    assert!(
        admin::list(&config, &Selection::default())
            .await
            .unwrap()
            .is_empty()
    );

    // The key flows again.
    let running = Running::start(service(&s, false));
    s.sql("UPDATE {s}.items SET name = 'final' WHERE id = 3")
        .await;
    wait_names(
        &s,
        &[(1, "v2"), (2, "v1"), (3, "final"), (4, "v1"), (5, "v2")],
    )
    .await;
    running.stop().await;
    s.cleanup().await;
}

/// MongoDB refuses one write (a unique index of the read model) of a row changed twice in
/// one transaction: the refused change is dead-lettered at the write stage, the later change
/// of the same row is held back behind it (whether it was in the same batch or not) and the
/// document stays as it was; other rows keep flowing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_write_refused_by_mongodb_holds_back_the_later_changes_of_its_row() {
    let s = Scenario::new("refused").await;
    let guard = s.cleanup_guard();
    s.sql(
        "CREATE TABLE {s}.users (id int PRIMARY KEY, email text NOT NULL, name text);
         INSERT INTO {s}.users VALUES (1, 'a@x', 'one'), (2, 'b@x', 'two');",
    )
    .await;
    let users = support::mongo(&s.contract)
        .await
        .database(&s.database)
        .collection::<Document>("users");
    users
        .create_index(
            mongodb::IndexModel::builder()
                .keys(doc! { "email": 1 })
                .options(
                    mongodb::options::IndexOptions::builder()
                        .unique(true)
                        .build(),
                )
                .build(),
        )
        .await
        .unwrap();
    let config = s.config(
        r#"
        [[projection]]
        table = "{s}.users"
        collection = "users"
        "#,
    );
    let running = Running::start(SyncService::new(config.clone()));
    let emails = || async {
        let mut seen: Vec<(i32, String)> = s
            .live_docs("users")
            .await
            .iter()
            .map(|d| {
                (
                    d.get_i32("_id").unwrap(),
                    d.get_str("email").unwrap_or("").to_owned(),
                )
            })
            .collect();
        seen.sort();
        seen
    };
    until("both users projected", WAIT, || async {
        let seen = emails().await;
        (seen.len() == 2).then_some(()).ok_or(format!("{seen:?}"))
    })
    .await;

    // The first update takes a@x (refused by the index: user 1 keeps it). It is applied
    // alone: two changes of one row in one batch are written as their final state, which
    // would not conflict.
    s.sql("UPDATE {s}.users SET email = 'a@x' WHERE id = 2;")
        .await;
    until("the refused write dead-lettered", WAIT, || async {
        let pending = admin::list(&config, &Selection::default()).await.unwrap();
        (pending.len() == 1)
            .then_some(())
            .ok_or(format!("{pending:?}"))
    })
    .await;
    // The next change of user 2 would succeed on its own: it waits behind the refused one.
    // User 1 changes too, on a column the index does not cover (its key may sit in another
    // partition, consumed in any relative order).
    s.sql(
        "UPDATE {s}.users SET email = 'c@x' WHERE id = 2;
         UPDATE {s}.users SET name = 'uno' WHERE id = 1;",
    )
    .await;
    until("user 1 updated", WAIT, || async {
        let docs = s.live_docs("users").await;
        docs.iter()
            .any(|d| d.get_i32("_id") == Ok(1) && d.get_str("name") == Ok("uno"))
            .then_some(())
            .ok_or(format!("{docs:?}"))
    })
    .await;
    let pending = until("two pending dead letters", WAIT, || async {
        let pending = admin::list(&config, &Selection::default()).await.unwrap();
        if pending.len() == 2 {
            Ok(pending)
        } else {
            Err(format!("{pending:?}"))
        }
    })
    .await;
    running.stop().await;
    assert_eq!(
        emails().await,
        [(1, "a@x".to_owned()), (2, "b@x".to_owned())],
        "the change after the refused one was applied on top of it"
    );
    let refused: Vec<_> = pending.iter().filter(|d| d.stage == Stage::Write).collect();
    let held: Vec<_> = pending
        .iter()
        .filter(|d| d.stage == Stage::HeldBack)
        .collect();
    assert_eq!(refused.len(), 1, "{pending:?}");
    assert_eq!(held.len(), 1, "{pending:?}");
    assert_eq!(held[0].behind.as_deref(), Some(refused[0].id.as_str()));
    assert!(
        refused[0].error.contains("E11000") || refused[0].error.contains("duplicate"),
        "{:?}",
        refused[0]
    );
    s.cleanup().await;
    guard.disarm();
}
