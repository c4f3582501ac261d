//! The sync-service end to end through the real stack: rows written in PostgreSQL reach
//! MongoDB through Debezium, Kafka, the Avro converter and the registry; inserts, updates,
//! deletes, composite keys, renames and exclusions, truncate, and re-consuming from the
//! beginning changes nothing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use bson::{Bson, Document, doc};
use support::{Running, Scenario, eventually, until};
use sync_service::SyncService;

const WAIT: Duration = Duration::from_secs(60);

const PROJECTIONS: &str = r#"
    [[projection]]
    table = "{s}.items"
    collection = "items"
    exclude = ["secret"]
    rename = { qty = "quantity" }

    [[projection]]
    name = "lines"
    table = "{s}.lines"
    collection = "lines"
"#;

/// What MongoDB must hold for the current `items` rows, built from PostgreSQL.
async fn expected_items(s: &Scenario) -> Vec<Document> {
    let rows = s
        .pg
        .query(
            &format!(
                "SELECT id, name, qty, price::text, floor(extract(epoch FROM updated_at) * 1000)::bigint \
                 FROM {}.items ORDER BY id",
                s.schema
            ),
            &[],
        )
        .await
        .unwrap();
    rows.iter()
        .map(|r| {
            let id: i32 = r.get(0);
            let name: Option<String> = r.get(1);
            let price: String = r.get(3);
            doc! {
                "_id": id,
                "id": id,
                "name": name.map(Bson::String).unwrap_or(Bson::Null),
                "quantity": r.get::<_, i32>(2),
                "price": Bson::Decimal128(sync_service::types::decimal128_from_str(&price).unwrap()),
                "updated_at": bson::DateTime::from_millis(r.get(4)),
            }
        })
        .collect()
}

/// The documents without the version fields the guard keeps.
fn without_versions(docs: Vec<Document>) -> Vec<Document> {
    docs.into_iter()
        .map(|d| {
            d.into_iter()
                .filter(|(k, _)| !k.starts_with("_version"))
                .collect()
        })
        .collect()
}

async fn wait_for_items(s: &Scenario) {
    let expected = expected_items(s).await;
    until(
        "items in MongoDB to equal the PostgreSQL rows",
        WAIT,
        || async {
            let actual = without_versions(s.live_docs("items").await);
            if actual == expected {
                Ok(())
            } else {
                Err(format!("{actual:?}\nexpected {expected:?}"))
            }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rows_flow_into_read_models_and_reconsuming_changes_nothing() {
    let s = Scenario::new("pipe").await;
    // Drops the schema and database even when an assertion fails.
    let _cleanup = s.cleanup_guard();
    s.sql(
        "CREATE TABLE {s}.items (id int PRIMARY KEY, name text, qty int NOT NULL, price numeric(10,2) NOT NULL,
                                 updated_at timestamptz NOT NULL, secret text);
         ALTER TABLE {s}.items REPLICA IDENTITY FULL;
         CREATE TABLE {s}.lines (order_id int, line_no int, sku text NOT NULL, PRIMARY KEY (order_id, line_no));
         INSERT INTO {s}.items VALUES
            (1, 'apple', 3, 1.50, '2026-01-01 10:00:00.123+00', 'x'),
            (2, 'pear', 5, 2.25, '2026-01-02 10:00:00+00', 'y'),
            (3, NULL, 0, 0.00, '1969-12-31 23:59:59.5+00', NULL);
         INSERT INTO {s}.lines VALUES (10, 1, 'A'), (10, 2, 'B'), (11, 1, 'C');",
    )
    .await;

    let service = Running::start(SyncService::new(s.config(PROJECTIONS)));
    wait_for_items(&s).await;

    // Updates, a delete, an insert, composite keys.
    s.sql(
        "UPDATE {s}.items SET qty = qty + 1, price = price * 2, name = 'green apple' WHERE id = 1;
         DELETE FROM {s}.items WHERE id = 2;
         INSERT INTO {s}.items VALUES (4, 'plum', 7, 99999999.99, now(), 'z');
         UPDATE {s}.items SET qty = 42 WHERE id = 4;
         UPDATE {s}.lines SET sku = 'B2' WHERE order_id = 10 AND line_no = 2;
         DELETE FROM {s}.lines WHERE order_id = 11 AND line_no = 1;",
    )
    .await;
    wait_for_items(&s).await;
    let lines = eventually("lines to reflect the update and delete", WAIT, || async {
        let lines = without_versions(s.live_docs("lines").await);
        (lines.len() == 2 && lines[1].get_str("sku") == Ok("B2")).then_some(lines)
    })
    .await;
    assert_eq!(
        lines,
        vec![
            doc! { "_id": { "order_id": 10, "line_no": 1 }, "order_id": 10, "line_no": 1, "sku": "A" },
            doc! { "_id": { "order_id": 10, "line_no": 2 }, "order_id": 10, "line_no": 2, "sku": "B2" },
        ]
    );

    // The delete left a tombstone that is newer than every change of the row.
    let all = s.all_docs("items").await;
    let tombstone = all
        .iter()
        .find(|d| d.get_i32("_id") == Ok(2))
        .expect("tombstone of item 2");
    assert_eq!(tombstone.get_bool("_deleted"), Ok(true));
    assert!(
        tombstone.get("name").is_none(),
        "a tombstone keeps no data: {tombstone}"
    );
    assert!(
        all.iter().all(|d| d.get("secret").is_none()),
        "excluded column leaked"
    );

    // Truncate empties the collection.
    s.sql("TRUNCATE {s}.lines").await;
    eventually("lines to be truncated", WAIT, || async {
        s.live_docs("lines").await.is_empty().then_some(())
    })
    .await;

    let topics = [s.topic("items"), s.topic("lines")];
    let consumed: u64 = topics.iter().map(|t| service.consumed(t)).sum();
    service.stop().await;

    // A new consumer group reads both topics from the beginning: nothing changes.
    let before_items = s.all_docs("items").await;
    let before_lines = s.all_docs("lines").await;
    let replay = Running::start(SyncService::new(
        s.config_with_group(&format!("{}-again", s.group), PROJECTIONS),
    ));
    eventually(
        "the second group to re-read every message",
        WAIT,
        || async {
            (topics.iter().map(|t| replay.consumed(t)).sum::<u64>() >= consumed).then_some(())
        },
    )
    .await;
    // Give the last batch time to be written.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let applied: u64 = [format!("{}.items", s.schema), "lines".to_owned()]
        .into_iter()
        .map(|projection| {
            replay
                .metrics
                .applied
                .get_or_create(&sync_service::metrics::ProjectionLabel { projection })
                .get()
        })
        .sum();
    replay.stop().await;
    assert_eq!(
        s.all_docs("items").await,
        before_items,
        "re-consuming changed items"
    );
    assert_eq!(
        s.all_docs("lines").await,
        before_lines,
        "re-consuming changed lines"
    );
    assert_eq!(
        applied, 0,
        "a replay of old changes must find every write stale"
    );

    s.cleanup().await;
}
