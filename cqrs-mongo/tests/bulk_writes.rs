//! Batched guarded writes with per-item results and checkpoints, against the real server.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::TestDb;
use cqrs_core::{ReadModelWrite, SourceVersion, Target};
use cqrs_mongo::{
    BulkOptions, BulkStrategy, CheckpointUpdate, IndexModel, ItemOutcome, MongoWrite,
    bson::{Bson, Document, doc},
    mongodb::options::IndexOptions,
};
use rand::seq::SliceRandom;

fn replace(
    db: Option<&str>,
    coll: &str,
    id: impl Into<Bson>,
    v: SourceVersion,
    d: Document,
) -> MongoWrite {
    ReadModelWrite::Replace {
        target: Target {
            database: db.map(str::to_string),
            collection: coll.into(),
        },
        id: id.into(),
        version: v,
        document: d,
    }
}

fn patch(coll: &str, id: &str, v: SourceVersion, set: Document, unset: &[&str]) -> MongoWrite {
    ReadModelWrite::Patch {
        target: Target::collection(coll),
        id: id.into(),
        version: v,
        set,
        unset: unset.iter().map(|s| s.to_string()).collect(),
    }
}

fn delete(coll: &str, id: &str, v: SourceVersion) -> MongoWrite {
    ReadModelWrite::Delete {
        target: Target::collection(coll),
        id: id.into(),
        version: v,
    }
}

async fn per_item_results(strategy: BulkStrategy) {
    let db = TestDb::new().await;
    let writer = db.mongo.bulk_writer().with_options(BulkOptions {
        strategy,
        ..BulkOptions::default()
    });
    assert_eq!(writer.strategy().await.unwrap(), strategy);
    let users = db.mongo.default_database().collection::<Document>("users");
    users
        .create_index(
            IndexModel::builder()
                .keys(doc! { "email": 1 })
                .options(IndexOptions::builder().unique(true).build())
                .build(),
        )
        .await
        .unwrap();
    let other = db.other_db();
    // Seed: "old" at version 10, user u1 with an email.
    let seed = writer
        .write(
            vec![
                replace(
                    None,
                    "orders",
                    "old",
                    SourceVersion::new(10),
                    doc! { "s": "ten" },
                ),
                replace(
                    None,
                    "users",
                    "u1",
                    SourceVersion::new(1),
                    doc! { "email": "a@x" },
                ),
            ],
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(seed.items, vec![ItemOutcome::Applied, ItemOutcome::Applied]);

    let writes = vec![
        /* 0 */
        replace(
            None,
            "orders",
            "o1",
            SourceVersion::new(1),
            doc! { "s": "new" },
        ),
        /* 1 */
        replace(
            None,
            "orders",
            "old",
            SourceVersion::new(9),
            doc! { "s": "nine" },
        ),
        /* 2 */
        replace(
            Some(&other),
            "archive",
            7,
            SourceVersion::new(3),
            doc! { "s": "other db" },
        ),
        /* 3 */
        patch(
            "orders",
            "bad",
            SourceVersion::new(1),
            doc! { "a": 1 },
            &["a"],
        ),
        /* 4 */
        replace(
            None,
            "users",
            "u2",
            SourceVersion::new(1),
            doc! { "email": "a@x" },
        ),
        // Three writes to one document: applied in this order.
        /* 5 */
        replace(
            None,
            "orders",
            "seq",
            SourceVersion::new(1),
            doc! { "a": 1, "b": 1 },
        ),
        /* 6 */
        patch(
            "orders",
            "seq",
            SourceVersion::new(2),
            doc! { "b": 2, "c": 2 },
            &["a"],
        ),
        /* 7 */
        patch(
            "orders",
            "seq",
            SourceVersion::with_index(2, 1),
            doc! { "d": 3 },
            &[],
        ),
        /* 8 */ delete("orders", "old", SourceVersion::new(11)),
        /* 9 */
        replace(
            None,
            "orders",
            "old",
            SourceVersion::new(10),
            doc! { "s": "late" },
        ),
        /* 10 */
        replace(
            None,
            "orders",
            "huge",
            SourceVersion::new(u64::MAX),
            doc! {},
        ),
    ];
    let result = writer
        .write(
            writes,
            vec![
                CheckpointUpdate::new("proj", "topic/0", 41),
                CheckpointUpdate::new("proj", "topic/1", 7),
            ],
        )
        .await
        .unwrap();
    let kinds: Vec<&str> = result
        .items
        .iter()
        .map(|o| match o {
            ItemOutcome::Applied => "applied",
            ItemOutcome::Stale => "stale",
            ItemOutcome::Failed(_) => "failed",
        })
        .collect();
    assert_eq!(
        kinds,
        vec![
            "applied", "stale", "applied", "failed", "failed", "applied", "applied", "applied",
            "applied", "stale", "failed"
        ]
    );
    match &result.items[4] {
        ItemOutcome::Failed(e) => {
            assert_eq!(e.code, Some(11000), "{e}");
            assert_eq!(e.id, "u2");
            assert!(e.namespace.ends_with(".users"), "{e}");
        }
        other => panic!("{other:?}"),
    }
    match &result.items[3] {
        ItemOutcome::Failed(e) => assert!(e.message.contains("both set and unset"), "{e}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        result.checkpoints,
        vec![ItemOutcome::Applied, ItemOutcome::Applied]
    );
    assert_eq!(
        (result.applied(), result.stale(), result.failed()),
        (6, 2, 3)
    );

    let orders = db.mongo.default_database().collection::<Document>("orders");
    let seq = orders.find_one(doc! {"_id": "seq"}).await.unwrap().unwrap();
    assert_eq!(seq.get("a"), None);
    assert_eq!(seq.get_i32("b").unwrap(), 2);
    assert_eq!(seq.get_i32("c").unwrap(), 2);
    assert_eq!(seq.get_i32("d").unwrap(), 3);
    assert_eq!(seq.get_i64("_version").unwrap(), 2);
    assert_eq!(seq.get_i64("_version_index").unwrap(), 1);
    // Deleted: readers of the read model (its view) do not see it, the tombstone is in the
    // physical collection.
    assert!(
        orders
            .find_one(doc! {"_id": "old"})
            .await
            .unwrap()
            .is_none()
    );
    let live = db.mongo.layout(None, "orders").await.unwrap().live;
    let physical = db.mongo.default_database().collection::<Document>(&live);
    let old = physical
        .find_one(doc! {"_id": "old"})
        .await
        .unwrap()
        .unwrap();
    assert!(old.get_bool("_deleted").unwrap());
    let archived = db
        .mongo
        .database(Some(&other))
        .collection::<Document>("archive")
        .find_one(doc! {"_id": 7})
        .await
        .unwrap()
        .unwrap();
    assert_eq!(archived.get_str("s").unwrap(), "other db");
    // The checkpoints went in with the data and read back.
    let store = db.mongo.checkpoints();
    let cps = store.load_all("proj").await.unwrap();
    assert_eq!(
        cps.iter()
            .map(|c| (c.partition.as_str(), c.position))
            .collect::<Vec<_>>(),
        vec![("topic/0", 41), ("topic/1", 7)]
    );
    // Re-sending the whole batch changes nothing: every write is stale or fails the same.
    let before: Vec<Document> = {
        use futures::TryStreamExt;
        orders
            .find(doc! {})
            .sort(doc! {"_id": 1})
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap()
    };
    let again = writer
        .write(
            vec![
                replace(
                    None,
                    "orders",
                    "o1",
                    SourceVersion::new(1),
                    doc! { "s": "new" },
                ),
                replace(
                    None,
                    "orders",
                    "seq",
                    SourceVersion::new(1),
                    doc! { "a": 1, "b": 1 },
                ),
                patch(
                    "orders",
                    "seq",
                    SourceVersion::new(2),
                    doc! { "b": 2, "c": 2 },
                    &["a"],
                ),
                delete("orders", "old", SourceVersion::new(11)),
            ],
            vec![CheckpointUpdate::new("proj", "topic/0", 40)],
        )
        .await
        .unwrap();
    assert_eq!(again.stale(), 4);
    assert_eq!(again.checkpoints, vec![ItemOutcome::Stale]);
    let after: Vec<Document> = {
        use futures::TryStreamExt;
        orders
            .find(doc! {})
            .sort(doc! {"_id": 1})
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap()
    };
    assert_eq!(before.len(), after.len());
    for (b, a) in before.iter().zip(&after) {
        let strip = |d: &Document| {
            let mut d = d.clone();
            d.remove("_deleted_at");
            d
        };
        assert_eq!(strip(b), strip(a));
    }
    assert_eq!(
        store
            .load("proj", "topic/0")
            .await
            .unwrap()
            .unwrap()
            .position,
        41
    );
}

#[tokio::test]
async fn bulk_results_item_by_item_client_bulk_write() {
    per_item_results(BulkStrategy::ClientBulkWrite).await;
}

#[tokio::test]
async fn bulk_results_item_by_item_per_collection() {
    per_item_results(BulkStrategy::PerCollection).await;
}

async fn shuffled_batches(strategy: BulkStrategy) {
    let db = TestDb::new().await;
    let writer = db.mongo.bulk_writer().with_options(BulkOptions {
        strategy,
        ..BulkOptions::default()
    });
    let mut writes = Vec::new();
    for d in 0..100 {
        for p in 1..=8u64 {
            let v = SourceVersion::with_index(p, (d % 3) as u32);
            writes.push(if p == 8 && d % 5 == 0 {
                delete("things", &format!("t{d}"), v)
            } else {
                replace(None, "things", format!("t{d}"), v, doc! { "p": p as i64 })
            });
        }
    }
    // Every write twice (redelivery), all in random order, in random-size batches.
    let mut all: Vec<MongoWrite> = writes
        .iter()
        .cloned()
        .chain(writes.iter().cloned())
        .collect();
    all.shuffle(&mut rand::rng());
    let mut applied = 0;
    let mut rest = all.as_slice();
    while !rest.is_empty() {
        let n = rand::random_range(1..=300).min(rest.len());
        let result = writer.write(rest[..n].to_vec(), vec![]).await.unwrap();
        assert!(result.is_complete(), "{result:?}");
        applied += result.applied();
        rest = &rest[n..];
    }
    assert!(applied >= 100);
    // Tombstones are in the physical collection (the view `things` shows live documents).
    let live = db.mongo.layout(None, "things").await.unwrap().live;
    let coll = db.mongo.default_database().collection::<Document>(&live);
    for d in 0..100 {
        let doc = coll
            .find_one(doc! {"_id": format!("t{d}")})
            .await
            .unwrap()
            .unwrap();
        assert_eq!(doc.get_i64("_version").unwrap(), 8);
        if d % 5 == 0 {
            assert!(doc.get_bool("_deleted").unwrap());
        } else {
            assert_eq!(doc.get_i64("p").unwrap(), 8);
        }
    }
}

#[tokio::test]
async fn shuffled_redelivered_batches_end_in_newest_state_client_bulk_write() {
    shuffled_batches(BulkStrategy::ClientBulkWrite).await;
}

#[tokio::test]
async fn shuffled_redelivered_batches_end_in_newest_state_per_collection() {
    shuffled_batches(BulkStrategy::PerCollection).await;
}

#[tokio::test]
async fn checkpoints_alone_and_monotonic() {
    let db = TestDb::new().await;
    let writer = db.mongo.bulk_writer();
    let r = writer
        .write(
            Vec::<cqrs_mongo::GuardedWrite>::new(),
            vec![CheckpointUpdate::new("p", "t/0", 5)],
        )
        .await
        .unwrap();
    assert_eq!(r.checkpoints, vec![ItemOutcome::Applied]);
    let store = db.mongo.checkpoints();
    let first = store.load("p", "t/0").await.unwrap().unwrap();
    assert_eq!(first.position, 5);
    assert!(
        store
            .save(&CheckpointUpdate::new("p", "t/0", 4))
            .await
            .unwrap()
            .is_stale()
    );
    assert!(
        store
            .save(&CheckpointUpdate::new("p", "t/0", 6))
            .await
            .unwrap()
            .is_applied()
    );
    store
        .reset(&CheckpointUpdate::new("p", "t/0", 1))
        .await
        .unwrap();
    let cp = store.load("p", "t/0").await.unwrap().unwrap();
    assert_eq!(cp.position, 1);
    assert!(cp.updated_at >= first.updated_at);
    assert!(store.load("p", "t/9").await.unwrap().is_none());
    let empty = writer
        .write(Vec::<cqrs_mongo::GuardedWrite>::new(), vec![])
        .await
        .unwrap();
    assert_eq!(empty.requests, 0);
}

/// A document's write refused by the server (a unique index) holds back its later writes in
/// the same batch: the later, valid write is not applied on top of the missing one. Other
/// documents are unaffected.
async fn failed_write_holds_back_its_document(strategy: BulkStrategy) {
    let db = TestDb::new().await;
    let writer = db.mongo.bulk_writer().with_options(BulkOptions {
        strategy,
        ..BulkOptions::default()
    });
    let users = db.mongo.default_database().collection::<Document>("users");
    users
        .create_index(
            IndexModel::builder()
                .keys(doc! { "email": 1 })
                .options(IndexOptions::builder().unique(true).build())
                .build(),
        )
        .await
        .unwrap();
    let v = SourceVersion::new;
    let seed = writer
        .write(
            vec![
                replace(None, "users", "a", v(1), doc! { "email": "a@x" }),
                replace(None, "users", "b", v(2), doc! { "email": "b@x" }),
            ],
            vec![],
        )
        .await
        .unwrap();
    assert!(
        seed.items.iter().all(|o| matches!(o, ItemOutcome::Applied)),
        "{:?}",
        seed.items
    );

    let result = writer
        .write(
            vec![
                // Refused: a@x belongs to "a".
                replace(None, "users", "b", v(3), doc! { "email": "a@x" }),
                replace(None, "users", "c", v(4), doc! { "email": "c@x" }),
                // Valid on its own, but it follows the refused write of "b".
                replace(None, "users", "b", v(5), doc! { "email": "b2@x" }),
                patch("users", "b", v(6), doc! { "seen": true }, &[]),
            ],
            vec![],
        )
        .await
        .unwrap();
    match &result.items[0] {
        ItemOutcome::Failed(e) => assert_eq!(e.id, "b", "{e}"),
        other => panic!("the unique index should refuse the first write: {other:?}"),
    }
    assert!(
        matches!(result.items[1], ItemOutcome::Applied),
        "{:?}",
        result.items[1]
    );
    for held in &result.items[2..] {
        match held {
            ItemOutcome::Failed(e) => assert!(e.message.contains("held back"), "{e}"),
            other => panic!("a later write of b was not held back: {other:?}"),
        }
    }
    let b = users.find_one(doc! { "_id": "b" }).await.unwrap().unwrap();
    assert_eq!(b.get_str("email").unwrap(), "b@x", "{b}");
    assert!(b.get("seen").is_none(), "{b}");
    assert_eq!(b.get_i64("_version").unwrap(), 2, "{b}");
    assert!(users.find_one(doc! { "_id": "c" }).await.unwrap().is_some());
}

#[tokio::test]
async fn failed_write_holds_back_its_document_client_bulk_write() {
    failed_write_holds_back_its_document(BulkStrategy::ClientBulkWrite).await;
}

#[tokio::test]
async fn failed_write_holds_back_its_document_per_collection() {
    failed_write_holds_back_its_document(BulkStrategy::PerCollection).await;
}
