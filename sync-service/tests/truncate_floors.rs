//! Truncate floors on a real MongoDB: a truncate makes every older write to its collection
//! stale, also for a writer (another worker or instance) that had not heard of it yet.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use bson::{Bson, Document, doc};
use cqrs_core::{ReadModelWrite, SourceVersion, Target};
use cqrs_mongo::{ItemOutcome, MongoClient, MongoConfig};
use futures::TryStreamExt;
use sync_service::config::RetryConfig;
use sync_service::map::Planned;
use sync_service::write::{MongoStore, Writer};
use tokio_util::sync::CancellationToken;

fn mongo_uri() -> String {
    cqrs_test_support::env::require("MONGODB_URI")
}

async fn writer(database: &str) -> (Writer, MongoClient) {
    let config = MongoConfig::new(mongo_uri()).with_default_database(database);
    let mongo = MongoClient::connect(config).await.unwrap_or_else(|e| {
        panic!("MongoDB of the stack is not reachable: {e}; run `make infrastructure-up`")
    });
    let retry: RetryConfig = toml::from_str("").unwrap();
    let store = MongoStore::new(mongo.clone());
    (Writer::new(Arc::new(store), retry.backoff()), mongo)
}

fn insert(id: i32, position: u64) -> Planned {
    Planned::Write {
        projection: Arc::from("t"),
        write: ReadModelWrite::Replace {
            target: Target::collection("t"),
            id: Bson::Int32(id),
            version: SourceVersion::new(position),
            document: doc! { "v": id },
        }
        .into(),
    }
}

fn truncate(position: u64) -> Planned {
    Planned::Truncate {
        projection: Arc::from("t"),
        target: Target::collection("t"),
        version: SourceVersion::new(position),
    }
}

async fn ids(mongo: &MongoClient) -> Vec<i32> {
    let docs: Vec<Document> = mongo
        .default_database()
        .collection::<Document>("t")
        .find(doc! {})
        .sort(doc! { "_id": 1 })
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    docs.iter().map(|d| d.get_i32("_id").unwrap()).collect()
}

#[tokio::test]
async fn a_truncate_keeps_every_older_write_out_whoever_makes_it() {
    let database = format!("sync_floors_{}", uuid::Uuid::new_v4().simple());
    let stop = CancellationToken::new();
    let (a, mongo) = writer(&database).await;
    let (b, _) = writer(&database).await;
    assert_eq!(a.load_floors().await.unwrap(), 0);
    assert_eq!(b.load_floors().await.unwrap(), 0);

    a.write(&[insert(1, 100), insert(2, 200)], vec![], &stop)
        .await
        .unwrap();
    let done = a.write(&[truncate(150)], vec![], &stop).await.unwrap();
    assert_eq!(done.outcomes, vec![ItemOutcome::Applied]);
    assert_eq!(
        ids(&mongo).await,
        vec![2],
        "the truncate deletes what is older"
    );

    // B has not heard of the truncate: its older insert lands, then its floor check after
    // the write finds the floor and deletes it again; its newer insert stays.
    let done = b
        .write(&[insert(3, 120), insert(4, 300)], vec![], &stop)
        .await
        .unwrap();
    assert_eq!(done.outcomes.len(), 2);
    assert_eq!(ids(&mongo).await, vec![2, 4]);
    assert_eq!(
        b.floors().floor(&format!("{database}.t")),
        Some(SourceVersion::new(150))
    );

    // Now both know the floor: older writes are stale without reaching MongoDB.
    let done = a.write(&[insert(5, 140)], vec![], &stop).await.unwrap();
    assert_eq!(done.outcomes, vec![ItemOutcome::Stale]);
    let done = b.write(&[insert(6, 149)], vec![], &stop).await.unwrap();
    assert_eq!(done.outcomes, vec![ItemOutcome::Stale]);
    assert_eq!(ids(&mongo).await, vec![2, 4]);

    // A replayed truncate changes nothing; an older one does not lower the floor.
    let done = a.write(&[truncate(150)], vec![], &stop).await.unwrap();
    assert_eq!(done.outcomes, vec![ItemOutcome::Stale]);
    let done = b.write(&[truncate(110)], vec![], &stop).await.unwrap();
    assert_eq!(done.outcomes, vec![ItemOutcome::Stale]);

    // Inside one batch: the truncate applies after the writes, keeping what is newer.
    let done = a
        .write(
            &[
                insert(7, 400),
                truncate(350),
                insert(8, 500),
                insert(9, 320),
            ],
            vec![],
            &stop,
        )
        .await
        .unwrap();
    assert_eq!(done.outcomes[1], ItemOutcome::Applied);
    assert_eq!(ids(&mongo).await, vec![7, 8]);

    // A writer started later loads the floor.
    let (c, _) = writer(&database).await;
    assert_eq!(c.load_floors().await.unwrap(), 1);
    let done = c.write(&[insert(10, 349)], vec![], &stop).await.unwrap();
    assert_eq!(done.outcomes, vec![ItemOutcome::Stale]);
    assert_eq!(ids(&mongo).await, vec![7, 8]);

    mongo.default_database().drop().await.unwrap();
}
