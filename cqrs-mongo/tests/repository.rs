//! Typed models, queries, pagination, indexes, decoding errors, waits, against the real server.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{collections::BTreeSet, sync::Arc, time::Duration};

use common::{Item, TestDb};
use cqrs_core::{ConsistencyToken, ReadModel, SourceVersion};
use cqrs_mongo::{
    Field, Filter, GuardedWrite, IndexModel, MongoError, MongoReadModel, Query, Sort, Waited,
    bson::{self, Decimal128, doc},
    mongodb::options::IndexOptions,
};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Address {
    street: String,
    city: String,
    zip: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Status {
    Open,
    Paid { reference: String },
    Cancelled(String),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Tier {
    Gold,
    Silver,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Line {
    sku: String,
    qty: u32,
    price: Decimal128,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Order {
    #[serde(rename = "_id")]
    id: bson::Uuid,
    customer: String,
    note: Option<String>,
    missing: Option<i32>,
    address: Address,
    lines: Vec<Line>,
    tags: Vec<String>,
    status: Status,
    tier: Tier,
    #[serde(with = "bson::serde_helpers::chrono_datetime_as_bson_datetime")]
    created_at: chrono::DateTime<chrono::Utc>,
    updated: bson::DateTime,
    total: Decimal128,
    external: bson::Uuid,
    #[serde(with = "bson::serde_helpers::uuid_1_as_binary")]
    correlation: uuid::Uuid,
    rank: i64,
}

impl ReadModel for Order {
    type Id = bson::Uuid;
    const COLLECTION: &'static str = "orders";
    fn id(&self) -> bson::Uuid {
        self.id
    }
}

impl MongoReadModel for Order {
    fn indexes() -> Vec<IndexModel> {
        vec![
            IndexModel::builder()
                .keys(doc! { "customer": 1, "rank": -1 })
                .build(),
            IndexModel::builder()
                .keys(doc! { "external": 1 })
                .options(
                    IndexOptions::builder()
                        .unique(true)
                        .name("by_external".to_string())
                        .build(),
                )
                .build(),
        ]
    }
    const TOMBSTONE_TTL: Option<Duration> = Some(Duration::from_secs(7 * 86_400));
}

const CUSTOMER: Field<Order, String> = Field::new("customer");
const RANK: Field<Order, i64> = Field::new("rank");

fn order(rank: i64, customer: &str) -> Order {
    let created = chrono::DateTime::from_timestamp_millis(1_700_000_000_123 + rank).unwrap();
    Order {
        id: bson::Uuid::new(),
        customer: customer.into(),
        note: if rank % 2 == 0 {
            Some(format!("note {rank}"))
        } else {
            None
        },
        missing: None,
        address: Address {
            street: "1 Main St".into(),
            city: "Lyon".into(),
            zip: Some("69001".into()),
        },
        lines: vec![
            Line {
                sku: "A".into(),
                qty: 2,
                price: "19.99".parse().unwrap(),
            },
            Line {
                sku: "B".into(),
                qty: 1,
                price: "0.0000001".parse().unwrap(),
            },
        ],
        tags: vec!["x".into(), "y".into()],
        status: match rank % 3 {
            0 => Status::Open,
            1 => Status::Paid {
                reference: format!("ref-{rank}"),
            },
            _ => Status::Cancelled("changed mind".into()),
        },
        tier: if rank % 2 == 0 {
            Tier::Gold
        } else {
            Tier::Silver
        },
        created_at: created,
        updated: bson::DateTime::from_millis(1_700_000_000_000 + rank),
        total: "12345678901234567890.123456789".parse().unwrap(),
        external: bson::Uuid::new(),
        correlation: uuid::Uuid::new_v4(),
        rank,
    }
}

#[tokio::test]
async fn typed_models_round_trip() {
    let db = TestDb::new().await;
    let repo = db.mongo.repository::<Order>();
    let created = repo.ensure_indexes().await.unwrap();
    // The tombstone TTL index came with the read model's layout.
    assert_eq!(created.len(), 2, "{created:?}");
    for rank in 0..6 {
        let o = order(rank, "c1");
        assert!(
            repo.replace(&o, SourceVersion::new(1))
                .await
                .unwrap()
                .is_applied()
        );
        let got = repo.get(&o.id).await.unwrap().unwrap();
        assert_eq!(got.document, o);
        assert_eq!(got.version, SourceVersion::new(1));
    }
    // Stored as native BSON types.
    let raw = repo
        .physical()
        .await
        .unwrap()
        .find_one(doc! {})
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(
        raw.get("created_at"),
        Some(bson::Bson::DateTime(_))
    ));
    assert!(matches!(raw.get("total"), Some(bson::Bson::Decimal128(_))));
    assert!(
        matches!(raw.get("_id"), Some(bson::Bson::Binary(b)) if b.subtype == bson::spec::BinarySubtype::Uuid)
    );
    assert!(matches!(
        raw.get("correlation"),
        Some(bson::Bson::Binary(_))
    ));
}

#[tokio::test]
async fn find_sort_limit_count_with_typed_filters() {
    let db = TestDb::new().await;
    let repo = db.mongo.repository::<Order>();
    for rank in 0..20 {
        let customer = if rank % 2 == 0 { "even" } else { "odd" };
        repo.replace(&order(rank, customer), SourceVersion::new(1))
            .await
            .unwrap();
    }
    let q = Query::new(CUSTOMER.eq("even").and(RANK.gte(4)))
        .sort(RANK.desc())
        .limit(3);
    let found = repo.find(&q).await.unwrap();
    assert_eq!(
        found.iter().map(|o| o.document.rank).collect::<Vec<_>>(),
        vec![18, 16, 14]
    );
    assert_eq!(repo.count(&CUSTOMER.eq("odd")).await.unwrap(), 10);
    assert_eq!(
        repo.count(&Filter::is_in("rank", [1, 2, 3])).await.unwrap(),
        3
    );
    assert_eq!(
        repo.count(&Filter::eq("tier", Tier::Gold)).await.unwrap(),
        10
    );
    let victim = found[0].document.id;
    repo.delete(&victim, SourceVersion::new(2)).await.unwrap();
    assert_eq!(repo.count(&CUSTOMER.eq("even")).await.unwrap(), 9);
    assert_eq!(repo.find(&q).await.unwrap()[0].document.rank, 16);
}

/// The `items` collection seen with an optional value (some documents hold null).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Row {
    #[serde(rename = "_id")]
    id: String,
    value: Option<i64>,
}

impl ReadModel for Row {
    type Id = String;
    const COLLECTION: &'static str = "items";
    fn id(&self) -> String {
        self.id.clone()
    }
}
impl MongoReadModel for Row {}

#[tokio::test]
async fn pagination_returns_every_document_exactly_once() {
    let db = TestDb::new().await;
    let items = db.mongo.repository::<Item>();
    let repo = Arc::new(db.mongo.repository::<Row>());
    for i in 0..237 {
        let item = Item {
            id: format!("i{i:04}"),
            value: i % 17,
            note: None,
        };
        items.replace(&item, SourceVersion::new(1)).await.unwrap();
    }
    // Null sort values too.
    for i in 0..5 {
        repo.physical()
            .await
            .unwrap()
            .insert_one(doc! { "_id": format!("n{i}"), "value": bson::Bson::Null })
            .await
            .unwrap();
    }
    for sort in [Sort::asc("value"), Sort::desc("value"), Sort::default()] {
        let query = Query::all().sort(sort.clone());
        let mut seen = Vec::new();
        let mut cursor = None;
        let mut pages = 0;
        // Concurrent inserts while paging must not make anything repeat or vanish.
        let mut extra = 0;
        loop {
            let page = match repo.page(&query, cursor.as_ref(), 20).await {
                Ok(p) => p,
                Err(e) => panic!("{sort:?}: {e}"),
            };
            pages += 1;
            seen.extend(page.items.iter().map(|d| d.document.id.clone()));
            items
                .replace(
                    &Item {
                        id: format!("z-{sort:?}-{extra}"),
                        value: extra % 17,
                        note: None,
                    },
                    SourceVersion::new(1),
                )
                .await
                .unwrap();
            extra += 1;
            match page.next {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        let unique: BTreeSet<_> = seen.iter().cloned().collect();
        assert_eq!(unique.len(), seen.len(), "{sort:?}: duplicates");
        for i in 0..237 {
            assert!(
                unique.contains(&format!("i{i:04}")),
                "{sort:?}: i{i:04} missing"
            );
        }
        for i in 0..5 {
            assert!(unique.contains(&format!("n{i}")), "{sort:?}: n{i} missing");
        }
        assert!(pages >= 13);
        // Pages are in sort order.
        let values: Vec<Option<i64>> = {
            let docs = repo.find(&query).await.unwrap();
            let order: Vec<String> = docs.iter().map(|d| d.document.id.clone()).collect();
            let pos = |id: &String| order.iter().position(|x| x == id).unwrap();
            let mut last = 0;
            for id in &seen {
                let p = pos(id);
                assert!(p >= last || id.starts_with("z-"), "{sort:?} out of order");
                if !id.starts_with("z-") {
                    last = p;
                }
            }
            vec![]
        };
        drop(values);
    }
    // Cursors are checked.
    let page = repo
        .page(&Query::all().sort(Sort::asc("value")), None, 5)
        .await
        .unwrap();
    let next = page.next.unwrap();
    let err = repo
        .page(&Query::all().sort(Sort::desc("value")), Some(&next), 5)
        .await
        .unwrap_err();
    assert!(matches!(err, MongoError::InvalidCursor { .. }), "{err}");
    let err = repo
        .page(&Query::all(), Some(&"garbage!".parse().unwrap()), 5)
        .await
        .unwrap_err();
    assert!(matches!(err, MongoError::InvalidCursor { .. }), "{err}");
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Person {
    #[serde(rename = "_id")]
    id: String,
    name: String,
    address: Address,
    lines: Vec<Line>,
}

impl ReadModel for Person {
    type Id = String;
    const COLLECTION: &'static str = "people";
    fn id(&self) -> String {
        self.id.clone()
    }
}
impl MongoReadModel for Person {}

#[tokio::test]
async fn malformed_documents_are_errors_naming_the_field() {
    let db = TestDb::new().await;
    let repo = db.mongo.repository::<Person>();
    let coll = repo.physical().await.unwrap();
    coll.insert_many([
        doc! { "_id": "city", "name": "a", "address": { "street": "s", "city": 42 }, "lines": [] },
        doc! { "_id": "price", "name": "b", "address": { "street": "s", "city": "c" },
               "lines": [ { "sku": "a", "qty": 1, "price": Decimal128::from_bytes([0; 16]) },
                          { "sku": "b", "qty": -3, "price": Decimal128::from_bytes([0; 16]) } ] },
        doc! { "_id": "noname", "address": { "street": "s", "city": "c" }, "lines": [] },
        doc! { "_id": "version", "name": "v", "address": { "street": "s", "city": "c" }, "lines": [], "_version": "x" },
    ])
    .await
    .unwrap();
    let cases = [
        ("city", "address.city"),
        ("price", "lines[1].qty"),
        ("noname", "name"),
        ("version", "_version"),
    ];
    for (id, field) in cases {
        let err = repo.get(id).await.unwrap_err();
        match &err {
            MongoError::Decode {
                collection,
                id: got_id,
                field: got,
                ..
            } => {
                assert_eq!(collection, "people");
                assert_eq!(got_id.as_deref(), Some(id));
                assert!(
                    got == field || (field == "name" && got == "."),
                    "{id}: {got} vs {field}: {err}"
                );
                if field == "name" {
                    assert!(err.to_string().contains("name"), "{err}");
                }
            }
            other => panic!("{id}: {other}"),
        }
    }
    // find reports the first bad document too, without panicking.
    assert!(matches!(
        repo.find(&Query::all()).await,
        Err(MongoError::Decode { .. })
    ));
}

#[tokio::test]
async fn index_conflicts_are_typed_errors() {
    let db = TestDb::new().await;
    let repo = db.mongo.repository::<Order>();
    // Someone created by_external without `unique`.
    repo.physical()
        .await
        .unwrap()
        .create_index(
            IndexModel::builder()
                .keys(doc! { "external": 1 })
                .options(
                    IndexOptions::builder()
                        .name("by_external".to_string())
                        .build(),
                )
                .build(),
        )
        .await
        .unwrap();
    let err = repo.ensure_indexes().await.unwrap_err();
    match &err {
        MongoError::IndexConflict {
            collection, name, ..
        } => {
            // The live physical collection of the read model.
            assert!(collection.ends_with("orders__v1"), "{collection}");
            assert_eq!(name, "by_external");
        }
        other => panic!("{other}"),
    }
    repo.physical()
        .await
        .unwrap()
        .drop_index("by_external")
        .await
        .unwrap();
    assert_eq!(repo.ensure_indexes().await.unwrap().len(), 2);
    // Idempotent.
    assert!(repo.ensure_indexes().await.unwrap().is_empty());
    // Same keys under another name with other options: conflict too.
    let physical = repo.physical().await.unwrap();
    physical.drop_index("customer_1_rank_-1").await.unwrap();
    physical
        .create_index(
            IndexModel::builder()
                .keys(doc! { "customer": 1, "rank": -1 })
                .options(
                    IndexOptions::builder()
                        .name("mine".to_string())
                        .unique(true)
                        .build(),
                )
                .build(),
        )
        .await
        .unwrap();
    assert!(matches!(
        repo.ensure_indexes().await,
        Err(MongoError::IndexConflict { .. })
    ));
}

#[tokio::test]
async fn consistency_wait_returns_when_writer_catches_up_and_times_out_otherwise() {
    let db = TestDb::new().await;
    let repo = db.mongo.repository::<Item>();
    let id = "w".to_string();
    repo.replace(
        &Item {
            id: id.clone(),
            value: 1,
            note: None,
        },
        SourceVersion::new(1),
    )
    .await
    .unwrap();
    let writer = {
        let repo = repo.clone();
        let id = id.clone();
        tokio::spawn(async move {
            for v in 2..=4u64 {
                tokio::time::sleep(Duration::from_millis(60)).await;
                repo.replace(
                    &Item {
                        id: id.clone(),
                        value: v as i64,
                        note: None,
                    },
                    SourceVersion::new(v),
                )
                .await
                .unwrap();
            }
        })
    };
    let started = std::time::Instant::now();
    let got = repo
        .wait_for_version(&id, SourceVersion::new(3), Duration::from_secs(5))
        .await
        .unwrap();
    let doc = got.into_document().unwrap();
    assert!(doc.version >= SourceVersion::new(3));
    assert!(doc.document.value >= 3);
    assert!(started.elapsed() >= Duration::from_millis(100));
    writer.await.unwrap();

    let err = repo
        .wait_for_version(&id, SourceVersion::new(9), Duration::from_millis(300))
        .await
        .unwrap_err();
    match err {
        MongoError::WaitTimeout {
            last_seen,
            wanted,
            id: got,
            ..
        } => {
            assert_eq!(last_seen, Some(SourceVersion::new(4)));
            assert_eq!(wanted, SourceVersion::new(9));
            assert_eq!(got, "w");
        }
        other => panic!("{other}"),
    }
    let err = repo
        .wait_for_version("nobody", SourceVersion::new(1), Duration::from_millis(50))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            MongoError::WaitTimeout {
                last_seen: None,
                ..
            }
        ),
        "{err}"
    );

    repo.delete(&id, SourceVersion::new(5)).await.unwrap();
    assert!(matches!(
        repo.wait_for_version(&id, SourceVersion::new(5), Duration::from_secs(1)).await.unwrap(),
        Waited::Deleted { version } if version == SourceVersion::new(5)
    ));
    let v = repo
        .wait_until("u", Duration::from_secs(2), |d| d.document.value == 7)
        .await;
    assert!(v.is_err());
}

#[tokio::test]
async fn client_rebuilds_and_hides_secrets() {
    let db = TestDb::new().await;
    assert_eq!(db.mongo.generation(), 0);
    db.mongo
        .rebuild(
            cqrs_mongo::MongoConfig::new(common::mongo_uri())
                .with_default_database(db.name.clone()),
        )
        .await
        .unwrap();
    assert_eq!(db.mongo.generation(), 1);
    db.mongo.ping().await.unwrap();
    // A rebuild to an unreachable server fails and keeps the working client.
    let bad =
        cqrs_mongo::MongoConfig::new("mongodb://user:topsecret@127.0.0.1:1/?directConnection=true")
            .with_pool(cqrs_mongo::PoolConfig {
                server_selection_timeout: Duration::from_millis(300),
                connect_timeout: Duration::from_millis(300),
                ..Default::default()
            });
    let err = db.mongo.rebuild(bad.clone()).await.unwrap_err();
    assert!(!err.to_string().contains("topsecret"), "{err}");
    assert!(!format!("{err:?}").contains("topsecret"));
    assert!(!format!("{bad:?}").contains("topsecret"));
    assert_eq!(db.mongo.generation(), 1);
    db.mongo.ping().await.unwrap();
}

/// A write as the typed projections make it: guarded by a source position (a WAL LSN, far
/// above any aggregate version), carrying the aggregate change it reflects.
fn tracked(
    repo: &cqrs_mongo::Repository<Item>,
    id: &str,
    value: i64,
    position: u64,
    origin: ConsistencyToken,
) -> GuardedWrite {
    let write = cqrs_core::ReadModelWrite::Patch {
        target: repo.target(),
        id: id.into(),
        version: SourceVersion::new(position),
        set: cqrs_mongo::bson::doc! { "value": value },
        unset: vec![],
    };
    GuardedWrite::new(write).with_origin(origin)
}

#[tokio::test]
async fn token_waits_follow_aggregate_versions_not_source_positions() {
    let db = TestDb::new().await;
    let repo = db.mongo.repository::<Item>();
    // Commands on aggregate Item/t at versions 1..=3, captured at LSNs 5000, 6000, 7000.
    let writer = {
        let repo = repo.clone();
        tokio::spawn(async move {
            for v in 1..=3u64 {
                tokio::time::sleep(Duration::from_millis(60)).await;
                let origin = ConsistencyToken::new("Item", "t", v);
                repo.apply(tracked(&repo, "t", v as i64, 4000 + 1000 * v, origin))
                    .await
                    .unwrap();
            }
        })
    };
    let token: ConsistencyToken = "Item:3:t".parse().unwrap();
    let doc = repo
        .wait_for(&token, Duration::from_secs(5))
        .await
        .unwrap()
        .into_document()
        .unwrap();
    assert_eq!(doc.document.value, 3);
    assert_eq!(doc.version, SourceVersion::new(7000));
    writer.await.unwrap();

    // Not yet at version 4: the timeout names the last aggregate version seen.
    let later = ConsistencyToken::new("Item", "t", 4);
    match repo.wait_for(&later, Duration::from_millis(200)).await {
        Err(MongoError::WaitTimeout {
            wanted, last_seen, ..
        }) => {
            assert_eq!(wanted, SourceVersion::new(4));
            assert_eq!(last_seen, Some(SourceVersion::new(3)));
        }
        other => panic!("{other:?}"),
    }

    // A document fed by two aggregates: each keeps its own version; a token of the second
    // one is waited for on the first one's document.
    repo.apply(tracked(
        &repo,
        "t",
        30,
        8000,
        ConsistencyToken::new("Invoice", "inv.1", 2),
    ))
    .await
    .unwrap();
    let invoice: ConsistencyToken = "Invoice:2:inv.1".parse().unwrap();
    let doc = repo
        .wait_for_in("t", &invoice, Duration::from_secs(2))
        .await
        .unwrap()
        .into_document()
        .unwrap();
    assert_eq!(doc.document.value, 30);
    assert!(
        repo.wait_for_in("t", &token, Duration::from_secs(1))
            .await
            .is_ok(),
        "the Item entry stays"
    );

    // The deleting command's token sees the tombstone.
    let delete = cqrs_core::ReadModelWrite::Delete {
        target: repo.target(),
        id: "t".into(),
        version: SourceVersion::new(9000),
    };
    repo.apply(GuardedWrite::new(delete).with_origin(ConsistencyToken::new("Item", "t", 5)))
        .await
        .unwrap();
    let deleted = repo
        .wait_for(
            &ConsistencyToken::new("Item", "t", 5),
            Duration::from_secs(2),
        )
        .await
        .unwrap();
    assert!(matches!(deleted, Waited::Deleted { .. }), "{deleted:?}");
    // A replayed older change cannot bring it back, whatever its origin says.
    let replayed = tracked(&repo, "t", 99, 6500, ConsistencyToken::new("Item", "t", 2));
    assert!(repo.apply(replayed).await.unwrap().is_stale());
}
