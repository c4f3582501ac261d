//! Scoped patches: a document fed by several sources, each guarded by its own version,
//! so changes of different sources arriving in any relative order never block each other.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use bson::{Bson, Document, doc};
use cqrs_core::{ReadModelWrite, SourceVersion, Target};
use cqrs_mongo::{ItemOutcome, WriteOutcome};

fn scoped(scope: &str, position: u64, set: Document) -> ReadModelWrite<Bson, Document> {
    ReadModelWrite::ScopedPatch {
        target: Target::collection("summaries"),
        id: Bson::from("o-1"),
        scope: scope.into(),
        version: SourceVersion::new(position),
        set,
        unset: vec![],
    }
}

/// The stored document, tombstone included (the physical collection).
async fn stored(db: &common::TestDb) -> Document {
    let live = db.mongo.layout(None, "summaries").await.unwrap().live;
    db.mongo
        .default_database()
        .collection::<Document>(&live)
        .find_one(doc! { "_id": "o-1" })
        .await
        .unwrap()
        .expect("document")
}

#[tokio::test]
async fn sources_apply_in_any_order_and_each_guards_itself() {
    let db = common::TestDb::new().await;
    let writer = db.mongo.bulk_writer();
    // The invoice (LSN 200) arrives before the order (LSN 100): both apply.
    assert_eq!(
        writer
            .apply(&scoped("invoices", 200, doc! { "invoice": "paid" }))
            .await
            .unwrap(),
        WriteOutcome::Applied
    );
    assert_eq!(
        writer
            .apply(&scoped("orders", 100, doc! { "status": "placed" }))
            .await
            .unwrap(),
        WriteOutcome::Applied
    );
    // Within one source, older changes are stale and the same change twice is a no-op.
    assert_eq!(
        writer
            .apply(&scoped("orders", 90, doc! { "status": "draft" }))
            .await
            .unwrap(),
        WriteOutcome::Stale
    );
    assert_eq!(
        writer
            .apply(&scoped("orders", 100, doc! { "status": "placed" }))
            .await
            .unwrap(),
        WriteOutcome::Stale
    );
    assert_eq!(
        writer
            .apply(&scoped("orders", 150, doc! { "status": "shipped" }))
            .await
            .unwrap(),
        WriteOutcome::Applied
    );

    let doc = stored(&db).await;
    assert_eq!(doc.get_str("status").unwrap(), "shipped");
    assert_eq!(doc.get_str("invoice").unwrap(), "paid");
    assert_eq!(
        doc.get_i64("_version").unwrap(),
        200,
        "the document version is the newest source's"
    );
}

#[tokio::test]
async fn a_delete_is_not_undone_by_older_scoped_patches() {
    let db = common::TestDb::new().await;
    let writer = db.mongo.bulk_writer();
    writer
        .apply(&scoped("orders", 100, doc! { "status": "placed" }))
        .await
        .unwrap();
    let delete = ReadModelWrite::Delete {
        target: Target::collection("summaries"),
        id: Bson::from("o-1"),
        version: SourceVersion::new(300),
    };
    assert_eq!(writer.apply(&delete).await.unwrap(), WriteOutcome::Applied);
    // A late change of another source, older than the delete: stays deleted.
    assert_eq!(
        writer
            .apply(&scoped("invoices", 250, doc! { "invoice": "paid" }))
            .await
            .unwrap(),
        WriteOutcome::Stale
    );
    assert!(stored(&db).await.get_bool("_deleted").unwrap());
    // A change newer than the delete applies.
    assert_eq!(
        writer
            .apply(&scoped("invoices", 400, doc! { "invoice": "refunded" }))
            .await
            .unwrap(),
        WriteOutcome::Applied
    );
    let doc = stored(&db).await;
    assert!(doc.get("_deleted").is_none());
    assert_eq!(doc.get_str("invoice").unwrap(), "refunded");
}

#[tokio::test]
async fn scoped_patches_in_one_bulk_report_per_item() {
    let db = common::TestDb::new().await;
    let writes = vec![
        scoped("lines", 20, doc! { "lines": 2 }),
        scoped("orders", 10, doc! { "status": "placed" }),
        scoped("lines", 15, doc! { "lines": 1 }),
        scoped("orders", 30, doc! { "status": "paid" }),
    ];
    let result = db.mongo.bulk_writer().write(writes, vec![]).await.unwrap();
    assert_eq!(
        result.items,
        vec![
            ItemOutcome::Applied,
            ItemOutcome::Applied,
            ItemOutcome::Stale,
            ItemOutcome::Applied
        ]
    );
    let doc = stored(&db).await;
    assert_eq!(
        (
            doc.get_i32("lines").unwrap(),
            doc.get_str("status").unwrap()
        ),
        (2, "paid")
    );
    // Scopes are validated; a failed write holds back the document's later writes of the
    // same batch.
    let bad = db
        .mongo
        .bulk_writer()
        .write(
            vec![
                scoped("no.dots", 1, doc! {}),
                scoped("x", 1, doc! { "_scopes": 1 }),
            ],
            vec![],
        )
        .await
        .unwrap();
    assert!(bad.items[0].is_failed());
    assert!(
        matches!(&bad.items[1], ItemOutcome::Failed(e) if e.message.contains("held back")),
        "{:?}",
        bad.items[1]
    );
    // Reserved fields cannot be written through a patch: they are dropped.
    let reserved = db
        .mongo
        .bulk_writer()
        .write(vec![scoped("x", 1, doc! { "_scopes": 1 })], vec![])
        .await
        .unwrap();
    assert_eq!(
        reserved.items[0],
        ItemOutcome::Applied,
        "reserved fields are dropped, not written"
    );
    assert!(
        stored(&db)
            .await
            .get_document("_scopes")
            .unwrap()
            .get("x")
            .is_some()
    );
}
