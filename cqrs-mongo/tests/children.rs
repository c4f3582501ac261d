//! Child rows embedded in their parent's document, against the real server: each child
//! guarded by its own version, any order relative to the parent converges, a child before
//! its parent is kept hidden, a parent delete hides the document and keeps the children,
//! deleted children stay deleted, fills only add, truncates sweep parents and children
//! apart. One write at a time and through the bulk writer (both strategies).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;

use common::TestDb;
use cqrs_core::{ChildChange, ReadModelWrite, SourceVersion, Target};
use cqrs_mongo::{
    BulkOptions, BulkStrategy, GuardedWrite, MongoWrite, VersionFields, WriteOutcome,
    bson::{Bson, Document, doc},
    children::array_view,
};
use futures::TryStreamExt;
use rand::{Rng, SeedableRng, seq::SliceRandom};

const ORDERS: &str = "orders";

fn parent(id: i32, v: u64, status: &str) -> MongoWrite {
    ReadModelWrite::Replace {
        target: Target::collection(ORDERS),
        id: Bson::Int32(id),
        version: SourceVersion::new(v),
        document: doc! { "id": id, "status": status },
    }
}

fn parent_delete(id: i32, v: u64) -> MongoWrite {
    ReadModelWrite::Delete {
        target: Target::collection(ORDERS),
        id: Bson::Int32(id),
        version: SourceVersion::new(v),
    }
}

fn line(id: i32, key: i32, v: u64, qty: i32) -> MongoWrite {
    ReadModelWrite::Child {
        target: Target::collection(ORDERS),
        id: Bson::Int32(id),
        field: "lines".into(),
        key: key.to_string(),
        version: SourceVersion::new(v),
        change: ChildChange::Replace(doc! { "line_no": key, "qty": qty }),
    }
}

fn line_delete(id: i32, key: i32, v: u64) -> MongoWrite {
    ReadModelWrite::Child {
        target: Target::collection(ORDERS),
        id: Bson::Int32(id),
        field: "lines".into(),
        key: key.to_string(),
        version: SourceVersion::new(v),
        change: ChildChange::Delete,
    }
}

/// The stored document, hidden or not (the physical collection).
async fn stored(db: &TestDb, id: i32) -> Option<Document> {
    let live = db.mongo.layout(None, ORDERS).await.unwrap().live;
    db.mongo
        .database(None)
        .collection::<Document>(&live)
        .find_one(doc! { "_id": id })
        .await
        .unwrap()
}

/// What readers of the view see.
async fn visible(db: &TestDb, id: i32) -> Option<Document> {
    db.mongo
        .database(None)
        .collection::<Document>(ORDERS)
        .find_one(doc! { "_id": id })
        .await
        .unwrap()
}

/// The quantities of the live lines of a stored document, by key.
fn lines(d: &Document) -> BTreeMap<String, i32> {
    d.get_document("lines")
        .map(|l| {
            l.iter()
                .map(|(k, v)| (k.clone(), v.as_document().unwrap().get_i32("qty").unwrap()))
                .collect()
        })
        .unwrap_or_default()
}

fn qty(pairs: &[(i32, i32)]) -> BTreeMap<String, i32> {
    pairs.iter().map(|(k, q)| (k.to_string(), *q)).collect()
}

#[tokio::test]
async fn a_child_before_its_parent_is_kept_hidden_until_the_parent_comes() {
    let db = TestDb::new().await;
    let w = db.mongo.bulk_writer();
    assert_eq!(
        w.apply(line(1, 1, 20, 5)).await.unwrap(),
        WriteOutcome::Applied
    );
    assert_eq!(
        w.apply(line(1, 2, 21, 6)).await.unwrap(),
        WriteOutcome::Applied
    );
    assert!(visible(&db, 1).await.is_none(), "no parent yet: hidden");
    let hidden = stored(&db, 1).await.expect("kept");
    assert_eq!(lines(&hidden), qty(&[(1, 5), (2, 6)]));
    assert!(!hidden.contains_key("_version"), "no parent version");

    // The parent (older than its children: another table) makes it visible, with them.
    assert_eq!(
        w.apply(parent(1, 10, "placed")).await.unwrap(),
        WriteOutcome::Applied
    );
    let d = visible(&db, 1).await.expect("visible");
    assert_eq!(d.get_str("status").unwrap(), "placed");
    assert_eq!(lines(&d), qty(&[(1, 5), (2, 6)]));
    assert!(!d.contains_key("_deleted_at"));

    // A parent update keeps the children; a stale one changes nothing.
    assert_eq!(
        w.apply(parent(1, 30, "paid")).await.unwrap(),
        WriteOutcome::Applied
    );
    assert_eq!(
        w.apply(parent(1, 25, "old")).await.unwrap(),
        WriteOutcome::Stale
    );
    let d = visible(&db, 1).await.unwrap();
    assert_eq!(
        (d.get_str("status").unwrap(), d.get_i64("_version").unwrap()),
        ("paid", 30)
    );
    assert_eq!(lines(&d), qty(&[(1, 5), (2, 6)]));

    // Typed reads drop the bookkeeping; the array view lists the children.
    #[derive(serde::Deserialize)]
    struct Order {
        status: String,
        #[serde(default, deserialize_with = "cqrs_mongo::children::deserialize_vec")]
        lines: Vec<Document>,
    }
    let typed: cqrs_mongo::Versioned<Order> =
        cqrs_mongo::model::decode(d, ORDERS, &VersionFields::new("_version")).unwrap();
    assert_eq!(
        (typed.document.status.as_str(), typed.document.lines.len()),
        ("paid", 2)
    );
    let rows: Vec<Document> = db
        .mongo
        .database(None)
        .collection::<Document>(ORDERS)
        .aggregate(vec![doc! { "$match": { "_id": 1 } }, array_view("lines")])
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(rows[0].get_array("lines").unwrap().len(), 2);
}

#[tokio::test]
async fn each_child_is_guarded_by_its_own_version_and_deleted_children_stay_deleted() {
    let db = TestDb::new().await;
    let w = db.mongo.bulk_writer();
    w.apply(parent(1, 100, "placed")).await.unwrap();
    // Children older than the parent apply: their versions are their own.
    assert_eq!(
        w.apply(line(1, 1, 50, 1)).await.unwrap(),
        WriteOutcome::Applied
    );
    assert_eq!(
        w.apply(line(1, 2, 60, 2)).await.unwrap(),
        WriteOutcome::Applied
    );
    // Per child: older and repeated changes are stale, newer ones apply.
    assert_eq!(
        w.apply(line(1, 1, 40, 9)).await.unwrap(),
        WriteOutcome::Stale
    );
    assert_eq!(
        w.apply(line(1, 1, 50, 1)).await.unwrap(),
        WriteOutcome::Stale
    );
    assert_eq!(
        w.apply(line(1, 1, 70, 3)).await.unwrap(),
        WriteOutcome::Applied
    );
    // A deleted child leaves the map; its older update (late, or replayed) is stale.
    assert_eq!(
        w.apply(line_delete(1, 2, 80)).await.unwrap(),
        WriteOutcome::Applied
    );
    assert_eq!(
        w.apply(line(1, 2, 65, 7)).await.unwrap(),
        WriteOutcome::Stale
    );
    let d = visible(&db, 1).await.unwrap();
    assert_eq!(lines(&d), qty(&[(1, 3)]));
    let entry = d
        .get_document("_children")
        .unwrap()
        .get_document("lines")
        .unwrap()
        .get_document("2")
        .unwrap();
    assert_eq!(
        (
            entry.get_i64("_version").unwrap(),
            entry.get_bool("_deleted").unwrap()
        ),
        (80, true)
    );
    // Re-inserted later at the source: back.
    assert_eq!(
        w.apply(line(1, 2, 90, 4)).await.unwrap(),
        WriteOutcome::Applied
    );
    assert_eq!(
        lines(&visible(&db, 1).await.unwrap()),
        qty(&[(1, 3), (2, 4)])
    );
    // A patch of one child sets only its fields.
    let patch = ReadModelWrite::Child {
        target: Target::collection(ORDERS),
        id: Bson::Int32(1),
        field: "lines".into(),
        key: "2".into(),
        version: SourceVersion::new(95),
        change: ChildChange::Patch(doc! { "qty": 8 }),
    };
    assert_eq!(w.apply(patch).await.unwrap(), WriteOutcome::Applied);
    let d = visible(&db, 1).await.unwrap();
    assert_eq!(
        d.get_document("lines").unwrap().get_document("2").unwrap(),
        &doc! { "line_no": 2, "qty": 8 }
    );
    assert_eq!(
        d.get_i64("_version").unwrap(),
        100,
        "the parent's version is its own"
    );
}

#[tokio::test]
async fn a_parent_delete_hides_the_document_and_children_cannot_bring_it_back() {
    let db = TestDb::new().await;
    let w = db.mongo.bulk_writer();
    w.apply(parent(1, 10, "placed")).await.unwrap();
    w.apply(line(1, 1, 11, 1)).await.unwrap();
    w.apply(line(1, 2, 12, 2)).await.unwrap();
    assert_eq!(
        w.apply(parent_delete(1, 20)).await.unwrap(),
        WriteOutcome::Applied
    );
    assert!(visible(&db, 1).await.is_none(), "deleted parent: hidden");
    let t = stored(&db, 1).await.unwrap();
    assert!(t.get_bool("_deleted").unwrap());
    assert!(!t.contains_key("status"), "the parent's fields are gone");
    assert_eq!(
        lines(&t),
        qty(&[(1, 1), (2, 2)]),
        "its children are rows of their own"
    );

    // Older parent changes are stale; child changes, old or new, never make it visible.
    assert_eq!(
        w.apply(parent(1, 15, "late")).await.unwrap(),
        WriteOutcome::Stale
    );
    assert_eq!(
        w.apply(line(1, 3, 13, 3)).await.unwrap(),
        WriteOutcome::Applied
    );
    assert_eq!(
        w.apply(line(1, 1, 25, 9)).await.unwrap(),
        WriteOutcome::Applied
    );
    assert_eq!(
        w.apply(line_delete(1, 2, 21)).await.unwrap(),
        WriteOutcome::Applied
    );
    assert!(visible(&db, 1).await.is_none());

    // Re-created at the source: visible again with the children the join would show.
    assert_eq!(
        w.apply(parent(1, 30, "again")).await.unwrap(),
        WriteOutcome::Applied
    );
    let d = visible(&db, 1).await.unwrap();
    assert_eq!(d.get_str("status").unwrap(), "again");
    assert_eq!(lines(&d), qty(&[(1, 9), (3, 3)]));
    // A tombstone of a document without children stays a plain replacement.
    w.apply(parent(2, 10, "x")).await.unwrap();
    w.apply(parent_delete(2, 11)).await.unwrap();
    let t = stored(&db, 2).await.unwrap();
    assert!(!t.contains_key("_children") && !t.contains_key("lines"));
}

#[tokio::test]
async fn a_child_moved_between_parents_ends_under_the_new_one_in_any_order() {
    let db = TestDb::new().await;
    let w = db.mongo.bulk_writer();
    for id in [1, 2] {
        w.apply(parent(id, 10, "placed")).await.unwrap();
    }
    w.apply(line(1, 7, 20, 1)).await.unwrap();
    // The move: a delete under parent 1 and a create under parent 2 at the same position
    // (an update with a before image), arriving create first.
    w.apply(line(2, 7, 30, 1)).await.unwrap();
    w.apply(line_delete(1, 7, 30)).await.unwrap();
    // A replay of the original insert under parent 1 cannot bring it back there.
    assert_eq!(
        w.apply(line(1, 7, 20, 1)).await.unwrap(),
        WriteOutcome::Stale
    );
    assert_eq!(lines(&visible(&db, 1).await.unwrap()), qty(&[]));
    assert_eq!(lines(&visible(&db, 2).await.unwrap()), qty(&[(7, 1)]));
}

/// One change of the source: the parent (`key` None) or a child.
#[derive(Debug, Clone)]
struct Change {
    id: i32,
    key: Option<i32>,
    version: u64,
    value: Option<i32>,
}

impl Change {
    fn write(&self) -> MongoWrite {
        match (self.key, self.value) {
            (None, Some(v)) => parent(self.id, self.version, &format!("s{v}")),
            (None, None) => parent_delete(self.id, self.version),
            (Some(k), Some(v)) => line(self.id, k, self.version, v),
            (Some(k), None) => line_delete(self.id, k, self.version),
        }
    }
}

/// Random source histories applied in random orders, with duplicates, in random batches,
/// through both bulk strategies: every document ends as the last change of its parent and
/// of each of its children say.
#[tokio::test]
async fn any_delivery_order_converges_to_the_source() {
    let db = TestDb::new().await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5EED);
    for (round, strategy) in [BulkStrategy::ClientBulkWrite, BulkStrategy::PerCollection]
        .into_iter()
        .enumerate()
    {
        let writer = db.mongo.bulk_writer().with_options(BulkOptions {
            strategy,
            confirm_stale: round == 0,
            ..BulkOptions::default()
        });
        let base = 1000 * round as i32;
        let mut history: Vec<Change> = Vec::new();
        for version in 1..=600 {
            let id = base + rng.random_range(0..8);
            let key = rng.random_bool(0.7).then(|| rng.random_range(0..5));
            let value = rng.random_bool(0.75).then(|| rng.random_range(0..100));
            history.push(Change {
                id,
                key,
                version,
                value,
            });
        }
        // The source's final state: the last change of every parent and child.
        let mut parents: BTreeMap<i32, Option<i32>> = BTreeMap::new();
        let mut children: BTreeMap<i32, BTreeMap<String, i32>> = BTreeMap::new();
        for c in &history {
            match c.key {
                None => {
                    parents.insert(c.id, c.value);
                }
                Some(k) => {
                    let map = children.entry(c.id).or_default();
                    match c.value {
                        Some(v) => map.insert(k.to_string(), v),
                        None => map.remove(&k.to_string()),
                    };
                }
            }
        }
        let mut delivery: Vec<Change> = history.clone();
        delivery.extend(history.iter().filter(|_| rng.random_bool(0.2)).cloned());
        delivery.shuffle(&mut rng);
        for batch in delivery.chunks(37) {
            let writes: Vec<GuardedWrite> = batch.iter().map(|c| c.write().into()).collect();
            let result = writer.write(writes, vec![]).await.unwrap();
            assert_eq!(result.failed(), 0, "{result:?}");
        }
        let ids: std::collections::BTreeSet<i32> = history.iter().map(|c| c.id).collect();
        for id in ids {
            let want_lines = children.get(&id).cloned().unwrap_or_default();
            let d = stored(&db, id)
                .await
                .expect("every touched parent is stored");
            assert_eq!(lines(&d), want_lines, "children of {id} ({strategy:?})");
            match parents.get(&id).copied().flatten() {
                Some(v) => {
                    let shown = visible(&db, id)
                        .await
                        .unwrap_or_else(|| panic!("{id} visible"));
                    assert_eq!(shown.get_str("status").unwrap(), format!("s{v}"));
                }
                None => assert!(visible(&db, id).await.is_none(), "{id} hidden"),
            }
        }
    }
}

#[tokio::test]
async fn fills_only_add_and_make_a_parent_of_children_visible() {
    let db = TestDb::new().await;
    let w = db.mongo.bulk_writer();
    // Children before their parent, then the parent's snapshot row: visible, filled.
    w.apply(line(1, 1, 20, 5)).await.unwrap();
    let fill = GuardedWrite::new(parent(1, 0, "snap")).fill();
    assert_eq!(w.apply(fill).await.unwrap(), WriteOutcome::Applied);
    let d = visible(&db, 1)
        .await
        .expect("the fill is the parent's first write");
    assert_eq!(
        (d.get_str("status").unwrap(), lines(&d)),
        ("snap", qty(&[(1, 5)]))
    );
    // A child fill adds a child never seen, whatever its version, and nothing else.
    let child_fill = |key, v, q| GuardedWrite::new(line(1, key, v, q)).fill();
    assert_eq!(
        w.apply(child_fill(2, 0, 7)).await.unwrap(),
        WriteOutcome::Applied
    );
    assert_eq!(
        w.apply(child_fill(1, 999, 8)).await.unwrap(),
        WriteOutcome::Stale
    );
    w.apply(line_delete(1, 3, 30)).await.unwrap();
    assert_eq!(
        w.apply(child_fill(3, 999, 9)).await.unwrap(),
        WriteOutcome::Stale,
        "deleted"
    );
    assert_eq!(
        lines(&visible(&db, 1).await.unwrap()),
        qty(&[(1, 5), (2, 7)])
    );
    // Later changes of a filled child still apply.
    assert_eq!(
        w.apply(line(1, 2, 1, 6)).await.unwrap(),
        WriteOutcome::Applied
    );
    // Through the bulk writer (insert first, then the pipelines) too.
    let result = w
        .write(
            vec![
                GuardedWrite::new(line(5, 1, 3, 1)).fill(),
                GuardedWrite::new(parent(5, 0, "snap")).fill(),
                GuardedWrite::new(parent(6, 0, "snap")).fill(),
            ],
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(result.applied(), 3);
    assert_eq!(lines(&visible(&db, 5).await.unwrap()), qty(&[(1, 1)]));
}

#[tokio::test]
async fn truncates_sweep_parents_and_children_by_their_own_versions() {
    let db = TestDb::new().await;
    let w = db.mongo.bulk_writer();
    let fields = VersionFields::new("_version");
    let target = Target::collection(ORDERS);
    w.apply(parent(1, 10, "a")).await.unwrap();
    w.apply(line(1, 1, 11, 1)).await.unwrap();
    w.apply(line(1, 2, 60, 2)).await.unwrap();
    w.apply(parent(2, 12, "b")).await.unwrap();
    w.apply(parent(3, 70, "c")).await.unwrap();
    w.apply(line(3, 1, 71, 7)).await.unwrap(); // newer than the truncates: untouched
    w.apply(line(4, 1, 13, 4)).await.unwrap(); // children whose parent never came

    // The child table truncated at 50: older children go, parents stay.
    let changed = db
        .mongo
        .sweep_children(&target, "lines", SourceVersion::new(50), &fields)
        .await
        .unwrap();
    assert_eq!(changed, 2);
    let d = visible(&db, 1).await.unwrap();
    assert_eq!(lines(&d), qty(&[(2, 2)]));
    assert!(
        !d.get_document("_children")
            .unwrap()
            .get_document("lines")
            .unwrap()
            .contains_key("1")
    );
    assert_eq!(lines(&stored(&db, 4).await.unwrap()), qty(&[]));

    // The parent table truncated at 50: parents without children are deleted, parents
    // with children hidden (children kept), newer parents and parentless children stay.
    w.apply(line(4, 2, 55, 5)).await.unwrap();
    let gone = db
        .mongo
        .sweep_older(&target, SourceVersion::new(50), &fields)
        .await
        .unwrap();
    assert_eq!(gone, 2);
    assert!(stored(&db, 2).await.is_none());
    let t = stored(&db, 1).await.unwrap();
    assert!(t.get_bool("_deleted").unwrap() && !t.contains_key("status"));
    assert_eq!(
        (t.get_i64("_version").unwrap(), lines(&t)),
        (50, qty(&[(2, 2)]))
    );
    let newer = visible(&db, 3).await.expect("newer than the floor");
    assert_eq!(
        (newer.get_i64("_version").unwrap(), lines(&newer)),
        (70, qty(&[(1, 7)]))
    );
    let pending = stored(&db, 4).await.unwrap();
    assert!(!pending.contains_key("_version"));
    assert_eq!(lines(&pending), qty(&[(2, 5)]));
}

#[tokio::test]
async fn live_child_versions_are_the_childrens_own() {
    let db = TestDb::new().await;
    let w = db.mongo.bulk_writer();
    w.apply(parent(1, 500, "a")).await.unwrap();
    w.apply(line(1, 1, 300, 1)).await.unwrap();
    w.apply(line(1, 2, 310, 1)).await.unwrap();
    w.apply(line_delete(1, 2, 320)).await.unwrap();
    w.apply(line(2, 1, 330, 1)).await.unwrap(); // a hidden parent: the child counts
    let wanted = [
        (Bson::Int32(1), "1".to_owned()),
        (Bson::Int32(1), "2".to_owned()),
        (Bson::Int32(1), "9".to_owned()),
        (Bson::Int32(2), "1".to_owned()),
        (Bson::Int32(3), "1".to_owned()),
    ];
    let found = w
        .live_child_versions(&Target::collection(ORDERS), "lines", &wanted)
        .await
        .unwrap();
    assert_eq!(
        found,
        vec![
            (Bson::Int32(1), "1".to_owned(), SourceVersion::new(300)),
            (Bson::Int32(2), "1".to_owned(), SourceVersion::new(330)),
        ]
    );
}
