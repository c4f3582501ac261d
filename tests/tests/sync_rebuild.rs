//! Rebuild of a read model through Debezium: a changed projection (a new field) is rebuilt
//! from an incremental snapshot while a steady write load runs and readers read the live
//! version; the service is restarted mid-rebuild; readers switch to a version equal to
//! PostgreSQL field by field, without a failed read or a document going back in version.
//! Also: an incremental snapshot signalled outside any rebuild repairs missing documents
//! of the live version and never brings back a deleted row.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bson::{Bson, Document, doc};
use futures::TryStreamExt;
use rand::Rng;
use support::{Running, Scenario, until};
use sync_service::SyncService;
use sync_service::config::SyncConfig;
use sync_service::rebuild::{RebuildPlan, RebuildRecord, RebuildState, Rebuilds};

const WAIT: Duration = Duration::from_secs(120);

/// `items` as projected: v1 leaves `qty` out, v2 (the "fixed" projection) carries it.
const V1: &str = r#"
    [[projection]]
    table = "{s}.items"
    collection = "items"
    exclude = ["qty"]
"#;
const V2: &str = r#"
    [[projection]]
    table = "{s}.items"
    collection = "items"
"#;

/// One incremental snapshot at a time. The stack's connector runs a single incremental
/// snapshot context for every table: seen in a CI run, the cancel test's stop signal for
/// its own table ended the rebuild test's snapshot, which then never completed.
static SNAPSHOTS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn config(s: &Scenario, projections: &str) -> SyncConfig {
    let mut config = s.config(projections);
    config.rebuild.signal_database_url = Some(s.contract.require("SIGNAL_DATABASE_URL").into());
    config.rebuild.settle_ms = 1_500;
    config.rebuild.poll_interval_ms = 500;
    config
}

/// The document id of a row: `_id` itself or its `id` field.
fn id_of(d: &Document) -> i64 {
    match d.get("_id") {
        Some(Bson::Document(key)) => key.get("id").and_then(Bson::as_i32).map(i64::from),
        Some(Bson::Int32(i)) => Some(i64::from(*i)),
        Some(Bson::Int64(i)) => Some(*i),
        _ => None,
    }
    .unwrap_or_else(|| panic!("no id in {d}"))
}

/// `id -> (name, qty)` in PostgreSQL.
async fn rows(s: &Scenario) -> BTreeMap<i64, (String, i32)> {
    s.pg.query(
        &format!("SELECT id, name, qty FROM {}.items", s.schema),
        &[],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| (i64::from(r.get::<_, i32>(0)), (r.get(1), r.get(2))))
    .collect()
}

/// What readers of the read model's name see.
async fn view(s: &Scenario) -> Result<Vec<Document>, String> {
    s.mongo
        .database(&s.database)
        .collection::<Document>("items")
        .find(doc! {})
        .await
        .map_err(|e| e.to_string())?
        .try_collect()
        .await
        .map_err(|e| e.to_string())
}

/// Differences between the view and PostgreSQL; `with_qty` for the v2 shape.
async fn differences(s: &Scenario, with_qty: bool) -> Vec<String> {
    let expected = rows(s).await;
    let docs = view(s).await.unwrap_or_default();
    let mut seen = BTreeMap::new();
    for d in &docs {
        seen.insert(id_of(d), d.clone());
    }
    let mut problems = Vec::new();
    for (id, (name, qty)) in &expected {
        match seen.get(id) {
            None => problems.push(format!("{id}: missing")),
            Some(d) => {
                if d.get_str("name") != Ok(name.as_str()) {
                    problems.push(format!("{id}: name {:?} != {name:?}", d.get("name")));
                }
                match (with_qty, d.get("qty")) {
                    (true, Some(Bson::Int32(q))) if q == qty => {}
                    (false, None) => {}
                    (_, other) => problems.push(format!("{id}: qty {other:?}, want {qty}")),
                }
            }
        }
    }
    for id in seen.keys() {
        if !expected.contains_key(id) {
            problems.push(format!("{id}: deleted in PostgreSQL, still read"));
        }
    }
    problems
}

async fn wait_equal(s: &Scenario, with_qty: bool, what: &str) {
    until(what, WAIT, || async {
        let problems = differences(s, with_qty).await;
        if problems.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "{} difference(s), first: {:?}",
                problems.len(),
                &problems[..problems.len().min(5)]
            ))
        }
    })
    .await;
}

/// Advances the rebuild of `items` (as a running service does) until it has switched.
async fn wait_switched(rebuilds: &Rebuilds, what: &str) -> RebuildRecord {
    until(what, Duration::from_secs(240), || async {
        let r = rebuilds
            .advance(&rebuilds.get("items", None).await.unwrap().unwrap())
            .await
            .unwrap();
        match r.state {
            RebuildState::Switched => Ok(r),
            RebuildState::Failed | RebuildState::Cancelled => panic!("rebuild ended: {r:?}"),
            _ => Err(format!("{:?}, {} rows", r.state, r.rows)),
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_changed_projection_is_rebuilt_under_load_and_switched_without_readers_noticing() {
    let _one_snapshot_at_a_time = SNAPSHOTS.lock().await;
    let s = Arc::new(Scenario::new("rebuild").await);
    let guard = s.cleanup_guard();
    s.sql(
        "CREATE TABLE {s}.items (id int PRIMARY KEY, name text NOT NULL, qty int NOT NULL);
         INSERT INTO {s}.items SELECT g, 'n' || g, g % 7 FROM generate_series(1, 3000) g;
         ANALYZE {s}.items;",
    )
    .await;
    let service = Running::start(SyncService::new(config(&s, V1)));
    wait_equal(&s, false, "v1 to match PostgreSQL").await;
    service.stop().await;
    // The fixed projection is deployed: new changes carry qty, old documents do not.
    let mut service = Running::start(SyncService::new(config(&s, V2)));

    // A steady write load, and readers checking every read.
    let stop = Arc::new(AtomicBool::new(false));
    let load = tokio::spawn({
        let (s, stop) = (Arc::clone(&s), Arc::clone(&stop));
        async move {
            let mut next_id = 3001;
            let mut writes = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let (op, id, qty) = {
                    let mut rng = rand::rng();
                    (
                        rng.random_range(0..10),
                        rng.random_range(1..next_id),
                        rng.random_range(0..1000),
                    )
                };
                let sql = match op {
                    0..=6 => format!(
                        "UPDATE {}.items SET qty = {qty}, name = 'u{qty}' WHERE id = {id}",
                        s.schema
                    ),
                    7 | 8 => {
                        next_id += 1;
                        format!(
                            "INSERT INTO {}.items VALUES ({next_id}, 'i{qty}', {qty})",
                            s.schema
                        )
                    }
                    _ => format!("DELETE FROM {}.items WHERE id = {id}", s.schema),
                };
                s.pg.batch_execute(&sql).await.unwrap();
                writes += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            writes
        }
    });
    let reads = Arc::new(AtomicU64::new(0));
    let readers = tokio::spawn({
        let (s, stop, reads) = (Arc::clone(&s), Arc::clone(&stop), Arc::clone(&reads));
        async move {
            let mut newest: BTreeMap<i64, i64> = BTreeMap::new();
            let mut problems = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                match view(&s).await {
                    Ok(docs) => {
                        for d in docs {
                            let (id, v) = (id_of(&d), d.get_i64("_version").unwrap_or(-1));
                            let seen = newest.entry(id).or_insert(v);
                            if v < *seen {
                                problems.push(format!("{id} went back from version {seen} to {v}"));
                            }
                            *seen = (*seen).max(v);
                        }
                    }
                    Err(e) => problems.push(format!("a read failed: {e}")),
                }
                reads.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            problems
        }
    });

    // The rebuild, as `sync-service rebuild items` starts it.
    let admin = config(&s, V2);
    let rebuilds = Rebuilds::connect(&admin).await.unwrap();
    let plan = RebuildPlan::from_config(&admin, "items", None).unwrap();
    let started = rebuilds.start(&plan).await.unwrap();
    assert_eq!(started.building, "items__v2");
    assert_eq!(started.state, RebuildState::Settling);
    assert_eq!(
        rebuilds.start(&plan).await.unwrap().signal_id,
        started.signal_id,
        "starting again resumes"
    );

    // Restart the service once snapshot rows flow.
    let record = until("snapshot rows to flow", WAIT, || async {
        let r = rebuilds
            .advance(&rebuilds.get("items", None).await.unwrap().unwrap())
            .await
            .unwrap();
        if r.rows > 0 {
            Ok(r)
        } else {
            Err(format!("{:?}, {} rows", r.state, r.rows))
        }
    })
    .await;
    assert!(record.estimate.is_some_and(|e| e >= 2_900), "{record:?}");
    service.stop().await;
    service = Running::start(SyncService::new(config(&s, V2)));

    let switched = wait_switched(&rebuilds, "the rebuild to switch").await;
    assert!(switched.rows >= 2_500, "{switched:?}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    let writes = load.await.unwrap();
    let problems = readers.await.unwrap();
    assert!(writes > 100, "the load wrote {writes} rows only");
    assert!(reads.load(Ordering::Relaxed) > 20, "too few reads");
    assert!(
        problems.is_empty(),
        "readers noticed {} problem(s), first: {:?}",
        problems.len(),
        &problems[..problems.len().min(10)]
    );

    // The new version is the live one and equals PostgreSQL, qty included.
    wait_equal(
        &s,
        true,
        "the rebuilt version to match PostgreSQL field by field",
    )
    .await;
    let layout = s
        .mongo
        .database(&s.database)
        .collection::<Document>("_read_models")
        .find_one(doc! { "_id": "items" })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(layout.get_str("live"), Ok("items__v2"), "{layout}");
    assert_eq!(layout.get_str("previous"), Ok("items__v1"), "{layout}");
    rebuilds.drop_previous("items", None).await.unwrap();
    let names = s
        .mongo
        .database(&s.database)
        .list_collection_names()
        .await
        .unwrap();
    assert!(!names.contains(&"items__v1".to_string()), "{names:?}");
    service.stop().await;
    guard.disarm();
    s.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_signalled_snapshot_restores_lost_documents_and_never_revives_deleted_rows() {
    let _one_snapshot_at_a_time = SNAPSHOTS.lock().await;
    let s = Scenario::new("resnap").await;
    let guard = s.cleanup_guard();
    s.sql(
        "CREATE TABLE {s}.items (id int PRIMARY KEY, name text NOT NULL, qty int NOT NULL);
         INSERT INTO {s}.items SELECT g, 'n' || g, g FROM generate_series(1, 500) g;",
    )
    .await;
    let service = Running::start(SyncService::new(config(&s, V2)));
    wait_equal(&s, true, "the read model to match PostgreSQL").await;
    // Documents lost on the read side (restored from a stale backup, say) ...
    let physical = s.all_docs("items").await;
    assert_eq!(physical.len(), 500);
    let live = s
        .mongo
        .database(&s.database)
        .collection::<Document>("_read_models")
        .find_one(doc! { "_id": "items" })
        .await
        .unwrap()
        .unwrap();
    let live = live.get_str("live").unwrap().to_owned();
    s.mongo
        .database(&s.database)
        .collection::<Document>(&live)
        .delete_many(doc! { "_id": { "$lte": 100 } })
        .await
        .unwrap();
    // ... and rows deleted in PostgreSQL: their tombstones must hold.
    s.sql("DELETE FROM {s}.items WHERE id > 450").await;
    until("the deletes to arrive", WAIT, || async {
        let n = view(&s).await.unwrap().len();
        if n == 400 {
            Ok(())
        } else {
            Err(format!("{n} documents"))
        }
    })
    .await;
    s.sql(&format!(
        "INSERT INTO debezium.signal VALUES ('resnap-{0}', 'execute-snapshot', \
         '{{\"data-collections\": [\"{0}.items\"], \"type\": \"incremental\"}}')",
        s.schema
    ))
    .await;
    wait_equal(&s, true, "the snapshot to restore the lost documents").await;
    // Rows the live version still had kept their versions; the tombstones are still there.
    let after = s.all_docs("items").await;
    for d in &after {
        let (id, version) = (id_of(d), d.get_i64("_version").unwrap());
        match id {
            ..=100 => {}
            101..=450 => assert!(version > 0, "{d}"),
            _ => assert_eq!(d.get_bool("_deleted"), Ok(true), "{d}"),
        }
    }
    service.stop().await;
    guard.disarm();
    s.cleanup().await;
}

/// A rebuild cancelled while it runs drops the version being built, for good: the running
/// service stops writing to it (no orphan comes back), the live version keeps serving and
/// following PostgreSQL, and the rebuild started again completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cancelled_rebuild_leaves_the_live_version_alone_and_starts_again() {
    let _one_snapshot_at_a_time = SNAPSHOTS.lock().await;
    let s = Scenario::new("rbcancel").await;
    let guard = s.cleanup_guard();
    s.sql(
        "CREATE TABLE {s}.items (id int PRIMARY KEY, name text NOT NULL, qty int NOT NULL);
         INSERT INTO {s}.items SELECT g, 'n' || g, g % 7 FROM generate_series(1, 2000) g;
         ANALYZE {s}.items;",
    )
    .await;
    let service = Running::start(SyncService::new(config(&s, V1)));
    wait_equal(&s, false, "v1 to match PostgreSQL").await;

    let admin = config(&s, V1);
    let rebuilds = Rebuilds::connect(&admin).await.unwrap();
    let plan = RebuildPlan::from_config(&admin, "items", None).unwrap();
    let first = rebuilds.start(&plan).await.unwrap();
    // Live changes go to both versions meanwhile.
    s.sql("UPDATE {s}.items SET name = 'during' WHERE id <= 50")
        .await;
    until("the snapshot to be signalled", WAIT, || async {
        let r = rebuilds
            .advance(&rebuilds.get("items", None).await.unwrap().unwrap())
            .await
            .unwrap();
        match r.state {
            RebuildState::Settling => Err(format!("{:?}", r.state)),
            RebuildState::Switched => panic!("switched before the cancel: {r:?}"),
            _ => Ok(()),
        }
    })
    .await;
    let cancelled = rebuilds.cancel("items", None).await.unwrap().unwrap();
    assert_eq!(cancelled.state, RebuildState::Cancelled, "{cancelled:?}");

    // More live changes after the cancel: they reach the live version only.
    s.sql("UPDATE {s}.items SET name = 'after' WHERE id > 1950")
        .await;
    wait_equal(
        &s,
        false,
        "the live version to follow PostgreSQL after the cancel",
    )
    .await;
    let registry = s
        .mongo
        .database(&s.database)
        .collection::<Document>("_read_models");
    let layout = registry
        .find_one(doc! { "_id": "items" })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(layout.get_str("live"), Ok("items__v1"), "{layout}");
    assert!(layout.get("building").is_none(), "{layout}");
    let names = s
        .mongo
        .database(&s.database)
        .list_collection_names()
        .await
        .unwrap();
    assert!(
        !names.contains(&first.building),
        "the cancelled version {} came back: {names:?}",
        first.building
    );

    // Started again, it completes and the view switches to it.
    let again = rebuilds.start(&plan).await.unwrap();
    assert_ne!(
        again.signal_id, first.signal_id,
        "a new attempt, not the cancelled one"
    );
    let switched = wait_switched(&rebuilds, "the new attempt to switch").await;
    wait_equal(&s, false, "the rebuilt version to match PostgreSQL").await;
    let layout = registry
        .find_one(doc! { "_id": "items" })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        layout.get_str("live"),
        Ok(switched.building.as_str()),
        "{layout}"
    );
    service.stop().await;
    guard.disarm();
    s.cleanup().await;
}
