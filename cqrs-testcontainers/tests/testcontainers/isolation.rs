//! Two tests of one binary, in parallel on the shared stack, the same table and collection
//! names in each: neither sees the other's rows. A barrier makes them overlap (it fails,
//! loudly, when the harness runs them one after the other: `--test-threads=1`).

use std::sync::LazyLock;
use std::time::Duration;

use bson::{Document, doc};
use futures::TryStreamExt;
use sync_service::SyncService;
use sync_service::config::TableMapping;
use tokio::sync::Barrier;

use crate::support::{self, until};

static BOTH_RUNNING: LazyLock<Barrier> = LazyLock::new(|| Barrier::new(2));

/// Writes `rows` named after `side` into its scope's `items` table, synced by an embedded
/// sync-service, and checks its database holds exactly those.
async fn isolated(side: &str) {
    let stack = support::stack().await;
    let scope = stack.scope(side).await.unwrap();
    let s = scope.schema();
    let pg = support::pg(&stack).await;
    pg.batch_execute(&format!(
        "CREATE SCHEMA {s}; CREATE TABLE {s}.items (id bigint PRIMARY KEY, side text NOT NULL);"
    ))
    .await
    .unwrap();
    let mut config = scope.sync_config();
    let mapping: TableMapping = serde_json::from_value(
        serde_json::json!({ "table": format!("{s}.items"), "collection": "items" }),
    )
    .unwrap();
    config.projections.push(mapping);
    let sync = SyncService::new(config).spawn();

    tokio::time::timeout(Duration::from_secs(180), BOTH_RUNNING.wait())
        .await
        .expect("the other test of the pair never ran at the same time (--test-threads=1?)");
    pg.execute(
        &format!("INSERT INTO {s}.items SELECT g, $1 FROM generate_series(1, 20) g"),
        &[&side],
    )
    .await
    .unwrap();

    let items = scope
        .mongo_client()
        .await
        .unwrap()
        .client()
        .database(scope.database())
        .collection::<Document>("items");
    let docs = until(
        "the rows in the read model",
        Duration::from_secs(90),
        || {
            let items = items.clone();
            async move {
                let docs: Vec<Document> = items
                    .find(doc! {})
                    .await
                    .map_err(|e| e.to_string())?
                    .try_collect()
                    .await
                    .map_err(|e| e.to_string())?;
                if docs.len() >= 20 {
                    Ok(docs)
                } else {
                    Err(format!("{} of 20", docs.len()))
                }
            }
        },
    )
    .await;
    sync.stop().await.unwrap();
    assert_eq!(docs.len(), 20, "exactly this test's rows");
    assert!(
        docs.iter().all(|d| d.get_str("side") == Ok(side)),
        "{docs:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_left() {
    isolated("left").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_right() {
    isolated("right").await;
}
