//! The insert-first path of bulk writes gives the same outcomes as the guarded upserts.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use bson::{Bson, Document, doc};
use cqrs_core::{ReadModelWrite, SourceVersion, Target};
use cqrs_mongo::{BulkOptions, ItemOutcome};

fn replace(id: i32, position: u64, value: &str) -> ReadModelWrite<Bson, Document> {
    ReadModelWrite::Replace {
        target: Target::collection("docs"),
        id: Bson::Int32(id),
        version: SourceVersion::new(position),
        document: doc! { "value": value },
    }
}

fn delete(id: i32, position: u64) -> ReadModelWrite<Bson, Document> {
    ReadModelWrite::Delete {
        target: Target::collection("docs"),
        id: Bson::Int32(id),
        version: SourceVersion::new(position),
    }
}

#[tokio::test]
async fn insert_first_and_guarded_paths_agree_item_by_item() {
    for insert_first in [true, false] {
        let db = common::TestDb::new().await;
        let writer = db.mongo.bulk_writer().with_options(BulkOptions {
            insert_first,
            ..BulkOptions::default()
        });
        // New documents, one of them written twice in the batch (second write goes to round 1).
        let result = writer
            .write(
                (0..50)
                    .map(|i| replace(i, 10, "a"))
                    .chain([replace(7, 11, "b")])
                    .collect(),
                vec![],
            )
            .await
            .unwrap();
        assert!(
            result.items.iter().all(|o| *o == ItemOutcome::Applied),
            "{insert_first}: {result:?}"
        );

        // Redelivery: all stale. Newer versions and tombstones: applied. Older than a tombstone: stale.
        let again = writer
            .write((0..50).map(|i| replace(i, 10, "a")).collect(), vec![])
            .await
            .unwrap();
        assert!(
            again.items.iter().all(|o| *o == ItemOutcome::Stale),
            "{insert_first}: {again:?}"
        );
        let mixed = writer
            .write(
                vec![
                    replace(1, 20, "newer"),
                    delete(2, 20),
                    replace(3, 5, "older"),
                    replace(100, 1, "new"),
                ],
                vec![],
            )
            .await
            .unwrap();
        assert_eq!(
            mixed.items,
            vec![
                ItemOutcome::Applied,
                ItemOutcome::Applied,
                ItemOutcome::Stale,
                ItemOutcome::Applied
            ],
            "{insert_first}"
        );
        let late = writer
            .write(vec![replace(2, 15, "resurrect?")], vec![])
            .await
            .unwrap();
        assert_eq!(
            late.items,
            vec![ItemOutcome::Stale],
            "{insert_first}: a tombstone is not undone"
        );

        // The physical collection: tombstones included (the view `docs` hides them).
        let live = db.mongo.layout(None, "docs").await.unwrap().live;
        let coll = db.mongo.default_database().collection::<Document>(&live);
        let seven = coll.find_one(doc! { "_id": 7 }).await.unwrap().unwrap();
        assert_eq!(
            (
                seven.get_str("value").unwrap(),
                seven.get_i64("_version").unwrap()
            ),
            ("b", 11)
        );
        let one = coll.find_one(doc! { "_id": 1 }).await.unwrap().unwrap();
        assert_eq!(one.get_str("value").unwrap(), "newer");
        let two = coll.find_one(doc! { "_id": 2 }).await.unwrap().unwrap();
        assert!(two.get_bool("_deleted").unwrap());
        assert_eq!(coll.count_documents(doc! {}).await.unwrap(), 51);
    }
}
