//! Read models in versioned collections behind a view: tombstones out of readers' sight and
//! purged after a retention, existing plain collections migrated in place, rebuilds into a
//! new version written along with the live one and switched atomically.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{Item, TestDb};
use cqrs_core::SourceVersion;
use cqrs_mongo::bson::{Document, doc};
use cqrs_mongo::{Filter, MongoClient, MongoConfig, Query};
use futures::TryStreamExt;

async fn all(db: &TestDb, collection: &str) -> Vec<Document> {
    db.mongo
        .default_database()
        .collection::<Document>(collection)
        .find(doc! {})
        .sort(doc! { "_id": 1 })
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap()
}

fn item(id: &str, value: i64) -> Item {
    Item {
        id: id.into(),
        value,
        note: None,
    }
}

#[tokio::test]
async fn readers_of_the_view_never_see_a_deleted_row() {
    let db = TestDb::new().await;
    let repo = db.mongo.repository::<Item>();
    repo.replace(&item("a", 1), SourceVersion::new(1))
        .await
        .unwrap();
    repo.replace(&item("b", 2), SourceVersion::new(1))
        .await
        .unwrap();
    repo.delete("a", SourceVersion::new(2)).await.unwrap();

    // A raw reader (a BI tool, mongosh) of the read model's name.
    let seen = all(&db, "items").await;
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].get_str("_id").unwrap(), "b");
    // The tombstone still guards its row: an older change stays out.
    assert!(
        repo.replace(&item("a", 9), SourceVersion::new(1))
            .await
            .unwrap()
            .is_stale()
    );
    let layout = db.mongo.layout(None, "items").await.unwrap();
    let physical = all(&db, &layout.live).await;
    assert_eq!(physical.len(), 2);
    assert!(physical[0].get_bool("_deleted").unwrap());
    // Writes to the view are refused: nothing bypasses the guard by the read model's name.
    let refused = db
        .mongo
        .default_database()
        .collection::<Document>("items")
        .insert_one(doc! { "_id": "c" })
        .await;
    assert!(refused.is_err());
    assert_eq!(repo.count(&Filter::all()).await.unwrap(), 1);
}

#[tokio::test]
async fn tombstones_are_purged_after_the_retention() {
    let uri = common::mongo_uri();
    let db = TestDb::new().await;
    let short = MongoClient::connect(
        MongoConfig::new(uri)
            .with_default_database(&db.name)
            .with_tombstone_retention(Duration::from_secs(1)),
    )
    .await
    .unwrap();
    let repo = short.repository::<Item>();
    repo.replace(&item("a", 1), SourceVersion::new(1))
        .await
        .unwrap();
    repo.delete("a", SourceVersion::new(2)).await.unwrap();
    let layout = short.layout(None, "items").await.unwrap();
    let ttl: Vec<Document> = short
        .default_database()
        .collection::<Document>(&layout.live)
        .list_indexes()
        .await
        .unwrap()
        .map_ok(|i| doc! { "name": i.options.and_then(|o| o.name), "keys": i.keys })
        .try_collect()
        .await
        .unwrap();
    assert!(
        ttl.iter()
            .any(|i| i.get_str("name") == Ok("cqrs_tombstones")),
        "{ttl:?}"
    );
    // The server's TTL monitor runs every few seconds.
    let mut gone = false;
    for _ in 0..90 {
        if all(&db, &layout.live).await.is_empty() {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert!(gone, "the tombstone outlived its retention by a minute");
}

#[tokio::test]
async fn a_plain_collection_is_migrated_without_a_rebuild() {
    let db = TestDb::new().await;
    // Written before versions existed: documents and tombstones in `items` itself.
    db.mongo
        .default_database()
        .collection::<Document>("items")
        .insert_many([
            doc! { "_id": "a", "value": 1_i64, "_version": 3_i64 },
            doc! { "_id": "gone", "_version": 4_i64, "_deleted": true },
        ])
        .await
        .unwrap();
    let repo = db.mongo.repository::<Item>();
    // At start-up (the sync-service does it for every read model it writes).
    repo.ensure_indexes().await.unwrap();
    let a = repo.get("a").await.unwrap().unwrap();
    assert_eq!((a.document.value, a.version), (1, SourceVersion::new(3)));
    assert_eq!(
        all(&db, "items").await.len(),
        1,
        "the view hides the old tombstone"
    );
    assert_eq!(all(&db, "items__v1").await.len(), 2);
    // The old tombstone still guards.
    assert!(
        repo.replace(&item("gone", 5), SourceVersion::new(2))
            .await
            .unwrap()
            .is_stale()
    );
}

#[tokio::test]
async fn a_rebuild_is_written_along_and_switched_in_one_step() {
    let db = TestDb::new().await;
    let repo = db.mongo.repository::<Item>();
    repo.ensure_indexes().await.unwrap();
    repo.replace(&item("a", 1), SourceVersion::new(1))
        .await
        .unwrap();
    let started = db.mongo.begin_rebuild(None, "items").await.unwrap();
    assert_eq!(started.building.as_deref(), Some("items__v2"));
    // Begun twice: the same rebuild.
    assert_eq!(
        db.mongo.begin_rebuild(None, "items").await.unwrap(),
        started
    );

    // Live changes go to both versions; readers still read version 1.
    repo.replace(&item("b", 2), SourceVersion::new(2))
        .await
        .unwrap();
    let writer = db.mongo.bulk_writer();
    writer
        .write(
            vec![cqrs_core::ReadModelWrite::Delete {
                target: repo.target(),
                id: "a".into(),
                version: SourceVersion::new(3),
            }],
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(all(&db, "items__v2").await.len(), 2, "b and a's tombstone");
    assert_eq!(repo.find(&Query::all()).await.unwrap().len(), 1);
    // The new version has the live one's indexes.
    let indexes: Vec<String> = db
        .mongo
        .default_database()
        .collection::<Document>("items__v2")
        .list_index_names()
        .await
        .unwrap();
    assert!(
        indexes.iter().any(|n| n == "cqrs_tombstones"),
        "{indexes:?}"
    );

    // The rebuild's own data (a snapshot of the source) lands in the new version only.
    db.mongo
        .default_database()
        .collection::<Document>("items__v2")
        .insert_one(doc! { "_id": "c", "value": 3_i64, "_version": 1_i64 })
        .await
        .unwrap();
    let switched = db.mongo.switch_rebuild(None, "items").await.unwrap();
    assert_eq!(
        (
            switched.live.as_str(),
            switched.previous.as_deref(),
            switched.building
        ),
        ("items__v2", Some("items__v1"), None)
    );
    let ids: Vec<String> = repo
        .find(&Query::all())
        .await
        .unwrap()
        .into_iter()
        .map(|v| v.document.id)
        .collect();
    assert_eq!(ids, ["b", "c"]);
    assert_eq!(all(&db, "items").await.len(), 2, "raw readers moved too");

    // Another process's cached layout follows after a refresh.
    let other =
        MongoClient::connect(MongoConfig::new(common::mongo_uri()).with_default_database(&db.name))
            .await
            .unwrap();
    other.refresh_layouts().await.unwrap();
    assert_eq!(other.layout(None, "items").await.unwrap().live, "items__v2");

    // A cancelled rebuild leaves the live version alone; the previous one can be dropped.
    db.mongo.begin_rebuild(None, "items").await.unwrap();
    let cancelled = db.mongo.cancel_rebuild(None, "items").await.unwrap();
    assert_eq!(
        (cancelled.live.as_str(), cancelled.building),
        ("items__v2", None)
    );
    assert_eq!(repo.find(&Query::all()).await.unwrap().len(), 2);
    let dropped = db.mongo.drop_previous(None, "items").await.unwrap();
    assert_eq!(dropped.previous, None);
    let names = db
        .mongo
        .default_database()
        .list_collection_names()
        .await
        .unwrap();
    assert!(
        !names.iter().any(|n| n == "items__v1" || n == "items__v3"),
        "{names:?}"
    );
}
