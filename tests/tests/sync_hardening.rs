//! Defects found by an outside test on an unseen schema (issue 12), each reproduced end to
//! end through PostgreSQL, Debezium, Kafka, the registry, the embedded sync-service and
//! MongoDB: TRUNCATE racing inserts of other partitions, unchanged TOASTed values of every
//! type, change events over 1 MB, dead-letter replay racing live traffic, `behind` across
//! batches, and JSON numbers beyond a double.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use bson::{Bson, Document, doc};
use futures::StreamExt;
use rdkafka::message::{Headers, Message};
use support::picky::Picky;
use support::{Running, Scenario, until};
use sync_service::SyncService;
use sync_service::dead_letter::admin::{self, Selection};
use sync_service::dead_letter::{DeadLetter, Stage, headers};

const WAIT: Duration = Duration::from_secs(90);

/// Waits until `topic` had `n` messages consumed and the live documents of `collection`
/// are exactly `expected` (ids and `v`), then checks they stay so for a moment.
async fn settle(s: &Scenario, running: &Running, topic: &str, n: u64, expected: &[(i32, i32)]) {
    until("the truncated collection", WAIT, || async {
        let consumed = running.consumed(topic);
        let live: Vec<(i32, i32)> = s
            .live_docs("t")
            .await
            .iter()
            .map(|d| (d.get_i32("_id").unwrap(), d.get_i32("v").unwrap()))
            .collect();
        if consumed >= n && live == expected {
            Ok(())
        } else {
            let head: Vec<_> = live.iter().take(5).collect();
            Err(format!(
                "consumed {consumed} of {n}; {} live documents, first {head:?}",
                live.len()
            ))
        }
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let live = s.live_docs("t").await.len();
    assert_eq!(live, expected.len(), "documents came back after settling");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn truncate_makes_every_older_change_of_the_table_a_no_op() {
    let s = Scenario::new("truncate").await;
    let _cleanup = s.cleanup_guard();
    s.sql("CREATE TABLE {s}.t (id int PRIMARY KEY, v int NOT NULL);")
        .await;
    let running = Running::start(SyncService::new(s.config(
        r#"[[projection]]
           table = "{s}.t"
           collection = "t""#,
    )));
    let topic = s.topic("t");

    // The outside test's repro: the truncate sits in one partition, the 5,000 inserts in
    // all of them; inserts consumed after the truncate must not come back.
    s.sql(
        "INSERT INTO {s}.t SELECT g, g FROM generate_series(1, 5000) g;
         TRUNCATE {s}.t;
         INSERT INTO {s}.t VALUES (1, -1);",
    )
    .await;
    settle(&s, &running, &topic, 5002, &[(1, -1)]).await;

    // Insert, truncate and insert in one transaction.
    s.sql(
        "BEGIN;
         INSERT INTO {s}.t SELECT g, g FROM generate_series(2, 51) g;
         TRUNCATE {s}.t;
         INSERT INTO {s}.t VALUES (7, 7);
         COMMIT;",
    )
    .await;
    settle(&s, &running, &topic, 5002 + 52, &[(7, 7)]).await;

    // Rows after the truncate flow as usual, updates and deletes included.
    s.sql(
        "INSERT INTO {s}.t VALUES (8, 8), (9, 9);
         UPDATE {s}.t SET v = 70 WHERE id = 7;
         DELETE FROM {s}.t WHERE id = 8;",
    )
    .await;
    settle(&s, &running, &topic, 5002 + 52 + 4, &[(7, 70), (9, 9)]).await;
    running.stop().await;
    s.cleanup().await;
}

/// Every column of `t` but the version fields and `counter`.
fn without_volatile(mut d: Document) -> Document {
    for f in ["_version", "_version_index", "counter"] {
        d.remove(f);
    }
    d
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unchanged_toasted_values_of_every_type_keep_their_stored_value() {
    let s = Scenario::new("toast").await;
    let _cleanup = s.cleanup_guard();
    // Large values of every type Debezium shapes a placeholder for (see
    // sync_service::types::is_unavailable), REPLICA IDENTITY DEFAULT.
    s.sql(
        "CREATE TABLE {s}.t (id int PRIMARY KEY, counter int,
            j jsonb, js json, ia int[], ba bigint[], ta text[], ua uuid[], da date[],
            byt bytea, bya bytea[], ja jsonb[], t text, vc varchar, x xml);
         INSERT INTO {s}.t SELECT 1, 1,
            (SELECT jsonb_object_agg('k' || g, md5(g::text)) FROM generate_series(1, 4000) g),
            (SELECT json_object_agg('k' || g, md5(g::text)) FROM generate_series(1, 4000) g),
            (SELECT array_agg(g * 7919 % 1000003) FROM generate_series(1, 5000) g),
            (SELECT array_agg(g::bigint * 1000000007) FROM generate_series(1, 5000) g),
            (SELECT array_agg(md5(g::text)) FROM generate_series(1, 5000) g),
            (SELECT array_agg(md5(g::text)::uuid) FROM generate_series(1, 5000) g),
            (SELECT array_agg(date '2000-01-01' + g) FROM generate_series(1, 5000) g),
            (SELECT string_agg(md5(g::text), '')::bytea FROM generate_series(1, 5000) g),
            (SELECT array_agg(md5(g::text)::bytea) FROM generate_series(1, 5000) g),
            (SELECT array_agg(jsonb_build_object('a', md5(g::text))) FROM generate_series(1, 5000) g),
            (SELECT string_agg(md5(g::text), '') FROM generate_series(1, 5000) g),
            (SELECT string_agg(md5(g::text), '') FROM generate_series(1, 5000) g),
            (SELECT xmlelement(name r, string_agg(md5(g::text), '')) FROM generate_series(1, 5000) g);",
    )
    .await;
    let running = Running::start(SyncService::new(s.config(
        r#"[[projection]]
           table = "{s}.t"
           collection = "t""#,
    )));
    let doc_at = |counter: i32| {
        let s = &s;
        async move {
            until("the row", WAIT, || async {
                match s.live_docs("t").await.pop() {
                    Some(d) if d.get_i32("counter") == Ok(counter) => Ok(d),
                    other => Err(format!("{:?}", other.map(|d| d.get("counter").cloned()))),
                }
            })
            .await
        }
    };
    let first = doc_at(1).await;
    assert_eq!(first.get_array("ia").unwrap().len(), 5000);
    assert_eq!(first.get_document("j").unwrap().len(), 4000);

    // Only `counter` changes: every TOASTed column arrives as Debezium's placeholder.
    s.sql("UPDATE {s}.t SET counter = 2 WHERE id = 1;").await;
    let second = doc_at(2).await;
    assert_eq!(
        without_volatile(second),
        without_volatile(first.clone()),
        "a column lost its stored value"
    );

    // A changed large column still replaces its value.
    s.sql("UPDATE {s}.t SET counter = 3, j = '{\"small\": 1}' WHERE id = 1;")
        .await;
    let third = doc_at(3).await;
    assert_eq!(third.get_document("j").unwrap(), &doc! { "small": 1 });
    assert_eq!(
        third.get_array("ta").unwrap(),
        first.get_array("ta").unwrap()
    );

    let pending = admin::list(&s.config(""), &Selection::default())
        .await
        .unwrap();
    assert!(pending.is_empty(), "dead letters: {pending:?}");
    running.stop().await;
    s.cleanup().await;
}

fn picky(s: &Scenario, fixed: bool, refresh_ms: u64) -> SyncService {
    let mut config = s.config("");
    config.dead_letter.refresh_interval_ms = refresh_ms;
    SyncService::new(config).with_projection(Picky::new(fixed), &[&format!("{}.items", s.schema)])
}

async fn item(s: &Scenario, id: i32) -> Option<Document> {
    s.live_docs("items")
        .await
        .into_iter()
        .find(|d| d.get_i32("_id") == Ok(id))
}

async fn wait_item(s: &Scenario, id: i32, name: &str) -> Document {
    until(&format!("item {id} named {name}"), WAIT, || async {
        match item(s, id).await {
            Some(d) if d.get_str("name") == Ok(name) => Ok(d),
            other => Err(format!("{other:?}")),
        }
    })
    .await
}

async fn pending(s: &Scenario) -> Vec<DeadLetter> {
    admin::list(&s.config(""), &Selection::default())
        .await
        .unwrap()
}

/// The dead-letter topic's messages: (`source offset`, headers) of each.
async fn dlq_headers(s: &Scenario, at_least: usize) -> Vec<(i64, Vec<(String, String)>, usize)> {
    let reader = s.reader(&s.dlq_topic, "dlq-headers");
    let mut stream = reader.stream();
    let mut found = Vec::new();
    while found.len() < at_least {
        let message = tokio::time::timeout(WAIT, stream.next())
            .await
            .expect("dead-letter topic message")
            .unwrap()
            .unwrap();
        let headers: Vec<(String, String)> = message
            .headers()
            .map(|h| {
                h.iter()
                    .map(|h| {
                        (
                            h.key.to_owned(),
                            String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        let offset = headers
            .iter()
            .find(|(k, _)| k == headers::OFFSET)
            .map(|(_, v)| v.parse().unwrap())
            .unwrap_or(-1);
        found.push((offset, headers, message.payload().map_or(0, <[u8]>::len)));
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_released_key_stays_released_and_held_back_records_name_their_blocker() {
    let s = Scenario::new("release").await;
    let _cleanup = s.cleanup_guard();
    s.sql(
        "CREATE TABLE {s}.items (id int PRIMARY KEY, name text NOT NULL, body text);
         INSERT INTO {s}.items SELECT i, 'v1', '' FROM generate_series(1, 3) i;",
    )
    .await;
    // A parked-keys reload far away: a released key must flow without waiting for it.
    let running = Running::start(picky(&s, false, 600_000));
    wait_item(&s, 2, "v1").await;

    s.sql("UPDATE {s}.items SET name = 'poison' WHERE id = 2;")
        .await;
    let poison = until("the poison dead letter", WAIT, || async {
        match pending(&s).await.as_slice() {
            [one] if one.stage == Stage::Map => Ok(one.clone()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;

    // Held back in a later batch: the record and the header name the poison message.
    s.sql("UPDATE {s}.items SET name = 'v2' WHERE id = 2;")
        .await;
    let held = until("the held-back dead letter", WAIT, || async {
        match pending(&s).await.as_slice() {
            [_, held] => Ok(held.clone()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert_eq!(held.stage, Stage::HeldBack);
    assert_eq!(held.behind.as_deref(), Some(poison.id.as_str()), "{held:?}");
    let messages = dlq_headers(&s, 2).await;
    let held_headers = &messages
        .iter()
        .find(|(offset, _, _)| *offset == held.offset)
        .expect("held-back message in the dead-letter topic")
        .1;
    assert!(
        held_headers
            .iter()
            .any(|(k, v)| k == headers::BEHIND && *v == poison.id),
        "{held_headers:?}"
    );

    // The operator drops the poison message and replays the held-back one, from another
    // process; an update made right after must flow, not be held back again.
    let config = s.config("");
    let skipped = admin::skip(
        &config,
        &Selection {
            ids: vec![poison.id.clone()],
            topic: None,
        },
    )
    .await
    .unwrap();
    assert_eq!(skipped, 1);
    let report = picky(&s, false, 600_000)
        .replay_dead_letters(&Selection::default())
        .await
        .unwrap();
    assert_eq!(
        (report.replayed, report.still_failing),
        (1, 0),
        "{report:?}"
    );
    wait_item(&s, 2, "v2").await;
    s.sql("UPDATE {s}.items SET name = 'v3' WHERE id = 2;")
        .await;
    wait_item(&s, 2, "v3").await;
    s.sql("UPDATE {s}.items SET name = 'v4' WHERE id = 2;")
        .await;
    wait_item(&s, 2, "v4").await;
    let left = pending(&s).await;
    assert!(left.is_empty(), "pending after the release: {left:?}");

    running.stop().await;
    s.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn change_events_over_one_megabyte_flow_and_can_be_dead_lettered() {
    let s = Scenario::new("large").await;
    let _cleanup = s.cleanup_guard();
    // ~2.6 MB of hex text per row: the change event is over Kafka's 1 MB default.
    let body = "(SELECT string_agg(md5(random()::text || g), '') FROM generate_series(1, 80000) g)";
    s.sql(&format!(
        "CREATE TABLE {{s}}.items (id int PRIMARY KEY, name text NOT NULL, body text);
         INSERT INTO {{s}}.items VALUES (1, 'big', {body});
         INSERT INTO {{s}}.items VALUES (2, 'poison', {body});
         INSERT INTO {{s}}.items VALUES (3, 'small', 'x');"
    ))
    .await;
    let running = Running::start(picky(&s, false, 2_000));
    let big = wait_item(&s, 1, "big").await;
    assert_eq!(big.get_i64("body_len").unwrap(), 80_000 * 32);
    wait_item(&s, 3, "small").await;

    // The large poison message reaches the dead-letter topic whole.
    let messages = dlq_headers(&s, 1).await;
    assert!(
        messages[0].2 > 2_000_000,
        "dead letter of {} bytes",
        messages[0].2
    );
    let left = pending(&s).await;
    assert_eq!(left.len(), 1, "{left:?}");

    // CDC kept running: later changes, of this and other schemas, still flow.
    s.sql("UPDATE {s}.items SET name = 'later' WHERE id = 3;")
        .await;
    wait_item(&s, 3, "later").await;
    support::require_connector(&s.contract).await;
    running.stop().await;
    s.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn json_numbers_keep_every_digit() {
    let s = Scenario::new("jsondigits").await;
    let _cleanup = s.cleanup_guard();
    s.sql(
        r#"CREATE TABLE {s}.t (id int PRIMARY KEY, j jsonb, js json);
           INSERT INTO {s}.t VALUES (1,
             '{"big": 123456789012345678901234567890, "i64": 9223372036854775807,
               "neg": -2147483649, "small": 7, "tenth": 0.1, "exp": 1e-7,
               "long": 1.2345678901234567890, "huge": 1234567890123456789012345678901234567,
               "nested": [0.30000000000000004, 2.50]}',
             '{"keep": 1.10, "big": -98765432109876543210}');"#,
    )
    .await;
    let running = Running::start(SyncService::new(s.config(
        r#"[[projection]]
           table = "{s}.t"
           collection = "t""#,
    )));
    let d = until("the row", WAIT, || async {
        s.live_docs("t").await.pop().ok_or_else(String::new)
    })
    .await;
    let dec = |t: &str| Bson::Decimal128(t.parse().unwrap());
    assert_eq!(
        d.get_document("j").unwrap(),
        &doc! {
            // jsonb orders keys by length, then bytes
            "exp": 1e-7, "big": dec("123456789012345678901234567890"), "i64": i64::MAX,
            "neg": -2_147_483_649_i64, "huge": "1234567890123456789012345678901234567",
            "long": dec("1.2345678901234567890"), "small": 7, "tenth": 0.1,
            "nested": [0.30000000000000004, 2.5],
        }
    );
    assert_eq!(
        d.get_document("js").unwrap(),
        &doc! { "keep": 1.1, "big": dec("-98765432109876543210") }
    );
    running.stop().await;
    s.cleanup().await;
}
