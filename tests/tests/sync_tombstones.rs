//! Tombstones through Debezium: readers of a read model never see a deleted row, a deleted
//! row stays deleted when every change is replayed from the start of the topic (late
//! updates of the same keys), the configured retention reaches the TTL index, and a plain
//! collection of an earlier release migrates to a version behind a view at start, without
//! a rebuild.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use bson::{Bson, Document, doc};
use futures::TryStreamExt;
use support::{Running, Scenario, until};
use sync_service::SyncService;

const WAIT: Duration = Duration::from_secs(90);

const ITEMS: &str = r#"
    [[projection]]
    table = "{s}.items"
    collection = "items"
"#;

async fn pg_ids(s: &Scenario) -> Vec<i32> {
    s.pg.query(
        &format!("SELECT id FROM {}.items ORDER BY id", s.schema),
        &[],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect()
}

fn ids(docs: &[Document]) -> Vec<i32> {
    let mut ids: Vec<i32> = docs
        .iter()
        .map(|d| match d.get("_id") {
            Some(Bson::Int32(i)) => *i,
            Some(Bson::Document(k)) => k.get_i32("id").unwrap(),
            other => panic!("unexpected _id {other:?}"),
        })
        .collect();
    ids.sort_unstable();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deleted_rows_stay_deleted_through_a_full_replay_and_out_of_readers_sight() {
    let s = Scenario::new("tomb").await;
    let guard = s.cleanup_guard();
    s.sql(
        "CREATE TABLE {s}.items (id int PRIMARY KEY, v int NOT NULL);
         INSERT INTO {s}.items SELECT g, 0 FROM generate_series(1, 50) g;
         UPDATE {s}.items SET v = 1;
         UPDATE {s}.items SET v = 2 WHERE id <= 30;
         DELETE FROM {s}.items WHERE id <= 20;",
    )
    .await;
    let expected = pg_ids(&s).await;
    assert_eq!(expected.len(), 30);
    let mut config = s.config(ITEMS);
    config.mongodb.tombstone_retention_secs = 3600;
    let first = Running::start(SyncService::new(config.clone()));
    until("the deletes to reach the read model", WAIT, || async {
        let seen = ids(&s.view_docs("items").await);
        if seen == expected {
            Ok(())
        } else {
            Err(format!("{} documents", seen.len()))
        }
    })
    .await;
    first.stop().await;
    assert_eq!(
        s.all_docs("items").await.len(),
        50,
        "20 tombstones beside 30 rows"
    );

    // Every change again, from the start of the topic: the inserts and updates of the
    // deleted keys come after their tombstones.
    let topic = s.topic("items");
    let mut replay_config = s.config_with_group(&format!("{}-replay", s.group), ITEMS);
    replay_config.mongodb.tombstone_retention_secs = 3600;
    let replay = Running::start(SyncService::new(replay_config));
    until("the replay to consume the topic", WAIT, || async {
        let n = replay.consumed(&topic);
        // 50 inserts, 80 updates, 20 deletes and their 20 Kafka tombstones
        if n >= 170 {
            Ok(())
        } else {
            Err(format!("{n} consumed"))
        }
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    replay.stop().await;
    assert_eq!(
        ids(&s.view_docs("items").await),
        expected,
        "no deleted row came back"
    );
    let all = s.all_docs("items").await;
    let tombstones = all
        .iter()
        .filter(|d| d.get_bool("_deleted") == Ok(true))
        .count();
    assert_eq!(tombstones, 20);
    assert!(
        s.view_docs("items")
            .await
            .iter()
            .all(|d| d.get("_deleted").is_none()),
        "a plain find on the read model's name returned a tombstone"
    );

    // The configured retention is the TTL of the live version's tombstones.
    let live = s
        .mongo
        .database(&s.database)
        .collection::<Document>("_read_models")
        .find_one(doc! { "_id": "items" })
        .await
        .unwrap()
        .unwrap();
    let indexes: Vec<Document> = s
        .mongo
        .database(&s.database)
        .collection::<Document>(live.get_str("live").unwrap())
        .list_indexes()
        .await
        .unwrap()
        .map_ok(|i| bson::to_document(&i).unwrap())
        .try_collect()
        .await
        .unwrap();
    let ttl = indexes
        .iter()
        .find_map(|i| i.get("expireAfterSeconds").cloned())
        .unwrap_or_else(|| panic!("no TTL index in {indexes:?}"));
    assert_eq!(
        ttl.as_i64().or(ttl.as_i32().map(i64::from)),
        Some(3600),
        "{indexes:?}"
    );
    guard.disarm();
    s.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_plain_collection_of_an_earlier_release_migrates_at_start() {
    let s = Scenario::new("migr").await;
    let guard = s.cleanup_guard();
    s.sql(
        "CREATE TABLE {s}.items (id int PRIMARY KEY, v int NOT NULL);
         INSERT INTO {s}.items VALUES (1, 1), (2, 2);",
    )
    .await;
    // What an earlier release left: a plain collection, a live document and a tombstone.
    let db = s.mongo.database(&s.database);
    db.collection::<Document>("items")
        .insert_many([
            doc! { "_id": 1, "id": 1, "v": 1, "_version": 1_i64, "_version_index": 0_i64 },
            doc! { "_id": 9, "_version": 1_i64, "_version_index": 0_i64, "_deleted": true,
            "_deleted_at": bson::DateTime::now() },
        ])
        .await
        .unwrap();
    let service = Running::start(SyncService::new(s.config(ITEMS)));
    until("the read model to match PostgreSQL", WAIT, || async {
        let seen = ids(&s.view_docs("items").await);
        if seen == [1, 2] {
            Ok(())
        } else {
            Err(format!("{seen:?}"))
        }
    })
    .await;
    let layout = db
        .collection::<Document>("_read_models")
        .find_one(doc! { "_id": "items" })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(layout.get_str("live"), Ok("items__v1"), "{layout}");
    let physical = s.all_docs("items").await;
    assert!(
        physical
            .iter()
            .any(|d| d.get("_id") == Some(&Bson::Int32(9))),
        "the tombstone moved with its collection: {physical:?}"
    );
    s.sql("UPDATE {s}.items SET v = 5 WHERE id = 1").await;
    until("a change after the migration to apply", WAIT, || async {
        let docs = s.view_docs("items").await;
        let one = docs.iter().find(|d| d.get("_id") == Some(&Bson::Int32(1)));
        match one.map(|d| d.get_i32("v")) {
            Some(Ok(5)) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    service.stop().await;
    guard.disarm();
    s.cleanup().await;
}
