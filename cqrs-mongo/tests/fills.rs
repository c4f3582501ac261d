//! Fill writes (incremental snapshot rows) against the real server: they add what is
//! missing, never change what is there, never revive a tombstone and never block a later
//! change. Both paths: one write at a time and the bulk writer (insert first, then the
//! update pipeline).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::TestDb;
use cqrs_core::{ReadModelWrite, SourceVersion, Target};
use cqrs_mongo::{
    GuardedWrite, ItemOutcome, MongoWrite, WriteOutcome,
    bson::{Bson, Document, doc},
};

fn replace(id: &str, version: u64, document: Document) -> MongoWrite {
    ReadModelWrite::Replace {
        target: Target::collection("orders"),
        id: Bson::from(id),
        version: SourceVersion::new(version),
        document,
    }
}

fn fill(id: &str, document: Document) -> GuardedWrite {
    GuardedWrite::new(replace(id, 0, document)).fill()
}

async fn stored(db: &TestDb, id: &str) -> Document {
    let layout = db.mongo.layout(None, "orders").await.unwrap();
    db.mongo
        .database(None)
        .collection::<Document>(&layout.live)
        .find_one(doc! { "_id": id })
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("{id} is stored"))
}

#[tokio::test]
async fn a_fill_adds_and_never_overwrites_revives_or_blocks() {
    let db = TestDb::new().await;
    let writer = db.mongo.bulk_writer();

    // Missing: created, with the fill's (lowest) version.
    assert_eq!(
        writer
            .apply(fill("new", doc! { "status": "$paid", "total": 5 }))
            .await
            .unwrap(),
        WriteOutcome::Applied
    );
    let new = stored(&db, "new").await;
    assert_eq!(
        new.get_str("status"),
        Ok("$paid"),
        "a $-string stays a string"
    );
    assert_eq!(new.get_i64("_version"), Ok(0));

    // Present: its fields and version win, missing fields are added.
    writer
        .apply(replace("kept", 40, doc! { "status": "shipped" }))
        .await
        .unwrap();
    assert_eq!(
        writer
            .apply(fill("kept", doc! { "status": "new", "total": 7 }))
            .await
            .unwrap(),
        WriteOutcome::Applied
    );
    let kept = stored(&db, "kept").await;
    assert_eq!(kept.get_str("status"), Ok("shipped"));
    assert_eq!(kept.get_i32("total"), Ok(7));
    assert_eq!(kept.get_i64("_version"), Ok(40));

    // A tombstone stays a tombstone.
    writer
        .apply(ReadModelWrite::Delete {
            target: Target::collection("orders"),
            id: Bson::from("gone"),
            version: SourceVersion::new(30),
        })
        .await
        .unwrap();
    assert_eq!(
        writer
            .apply(fill("gone", doc! { "status": "new" }))
            .await
            .unwrap(),
        WriteOutcome::Stale
    );
    let gone = stored(&db, "gone").await;
    assert_eq!(gone.get_bool("_deleted"), Ok(true));
    assert!(gone.get("status").is_none(), "{gone}");

    // A change that follows the fill applies whatever its position.
    assert_eq!(
        writer
            .apply(replace("new", 1, doc! { "status": "cancelled" }))
            .await
            .unwrap(),
        WriteOutcome::Applied
    );
    assert_eq!(stored(&db, "new").await.get_str("status"), Ok("cancelled"));
}

#[tokio::test]
async fn bulk_fills_insert_the_missing_and_merge_under_the_present() {
    let db = TestDb::new().await;
    let writer = db.mongo.bulk_writer();
    writer
        .write(
            vec![
                GuardedWrite::new(replace("b", 9, doc! { "status": "paid" })),
                GuardedWrite::new(ReadModelWrite::Delete {
                    target: Target::collection("orders"),
                    id: Bson::from("c"),
                    version: SourceVersion::new(9),
                }),
            ],
            vec![],
        )
        .await
        .unwrap();
    let result = writer
        .write(
            vec![
                fill("a", doc! { "status": "new", "n": 1 }),
                fill("b", doc! { "status": "new", "n": 2 }),
                fill("c", doc! { "status": "new", "n": 3 }),
            ],
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(
        result.items,
        vec![
            ItemOutcome::Applied,
            ItemOutcome::Applied,
            ItemOutcome::Stale
        ]
    );
    assert_eq!(stored(&db, "a").await.get_i32("n"), Ok(1));
    let b = stored(&db, "b").await;
    assert_eq!((b.get_str("status"), b.get_i32("n")), (Ok("paid"), Ok(2)));
    assert_eq!(b.get_i64("_version"), Ok(9));
    assert_eq!(stored(&db, "c").await.get_bool("_deleted"), Ok(true));
}
