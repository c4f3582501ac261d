//! Guarded upserts per second, single and batched, against plain unguarded writes of the
//! same documents in the same run.
//!
//! ```text
//! MONGODB_URI=mongodb://127.0.0.1:27017/?directConnection=true \
//!     cargo bench -p cqrs-toolkit-mongo --bench guarded_writes
//! ```
//!
//! Optional: `BENCH_DOCS` (documents per batched scenario, default 20000), `BENCH_SINGLE`
//! (documents per single-write scenario, default 2000).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use cqrs_core::{ReadModelWrite, SourceVersion, Target};
use cqrs_mongo::{
    BulkOptions, BulkStrategy, MongoClient, MongoConfig, MongoWrite,
    bson::{Bson, Document, doc},
    mongodb::{
        Namespace,
        options::{UpdateOneModel, WriteModel},
    },
};

/// MONGODB_URI of the environment, `.env.local` or `.env`, else the stack's default.
fn mongo_uri() -> String {
    cqrs_test_support::env::stack_env("MONGODB_URI")
        .unwrap_or_else(|| "mongodb://127.0.0.1:27017/?directConnection=true".to_string())
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn body(i: usize) -> Document {
    doc! {
        "customer": format!("customer-{}", i % 997),
        "status": if i.is_multiple_of(3) { "open" } else { "paid" },
        "total": (i as i64) * 7 % 10_000,
        "currency": "EUR",
        "lines": [ { "sku": format!("sku-{}", i % 50), "qty": 2 }, { "sku": "x", "qty": 1 } ],
        "address": { "street": "1 Main St", "city": "Lyon", "zip": "69001" },
        "created_at": cqrs_mongo::bson::DateTime::from_millis(1_700_000_000_000 + i as i64),
    }
}

fn write(coll: &str, i: usize, version: u64) -> MongoWrite {
    ReadModelWrite::Replace {
        target: Target::collection(coll),
        id: Bson::String(format!("doc-{i:08}")),
        version: SourceVersion::new(version),
        document: body(i),
    }
}

struct Row {
    name: String,
    docs: usize,
    elapsed: Duration,
}

impl Row {
    fn rate(&self) -> f64 {
        self.docs as f64 / self.elapsed.as_secs_f64()
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let uri = mongo_uri();
    let db_name = format!("cqrs_mongo_bench_{}", std::process::id());
    let mongo = MongoClient::connect(MongoConfig::new(uri.clone()).with_default_database(&db_name))
        .await
        .expect("client");
    if let Err(e) = mongo.ping().await {
        eprintln!("MongoDB is not reachable at {uri}: {e}");
        std::process::exit(1);
    }
    let n = env_usize("BENCH_DOCS", 20_000);
    let single = env_usize("BENCH_SINGLE", 2_000);
    let db = mongo.default_database();
    let client = mongo.client();
    let mut rows: Vec<Row> = Vec::new();
    let started = Instant::now();
    println!(
        "guarded_writes: {n} docs per batched scenario, {single} per single scenario, server {uri}"
    );

    // ---- single writes ----------------------------------------------------------------
    {
        let coll = db.collection::<Document>("single_plain");
        let t = Instant::now();
        for i in 0..single {
            coll.update_one(
                doc! { "_id": format!("doc-{i:08}") },
                doc! { "$set": body(i) },
            )
            .upsert(true)
            .await
            .expect("update_one");
        }
        rows.push(Row {
            name: "single: plain update_one upsert".into(),
            docs: single,
            elapsed: t.elapsed(),
        });

        let writer = mongo.bulk_writer();
        let t = Instant::now();
        for i in 0..single {
            writer
                .apply(&write("single_guarded", i, 1))
                .await
                .expect("guarded");
        }
        rows.push(Row {
            name: "single: guarded upsert (insert)".into(),
            docs: single,
            elapsed: t.elapsed(),
        });
        let t = Instant::now();
        for i in 0..single {
            writer
                .apply(&write("single_guarded", i, 2))
                .await
                .expect("guarded");
        }
        rows.push(Row {
            name: "single: guarded upsert (newer, update)".into(),
            docs: single,
            elapsed: t.elapsed(),
        });
        let t = Instant::now();
        for i in 0..single {
            let o = writer
                .apply(&write("single_guarded", i, 1))
                .await
                .expect("guarded");
            assert!(o.is_stale());
        }
        rows.push(Row {
            name: "single: guarded upsert (stale, confirmed)".into(),
            docs: single,
            elapsed: t.elapsed(),
        });
    }

    // ---- batched ------------------------------------------------------------------------
    for batch in [100usize, 1_000] {
        // Baseline 1: insert_many of the same documents.
        let coll = db.collection::<Document>(&format!("plain_insert_{batch}"));
        let t = Instant::now();
        for start in (0..n).step_by(batch) {
            let docs: Vec<Document> = (start..(start + batch).min(n))
                .map(|i| {
                    let mut d = doc! { "_id": format!("doc-{i:08}") };
                    d.extend(body(i));
                    d
                })
                .collect();
            coll.insert_many(docs)
                .ordered(false)
                .await
                .expect("insert_many");
        }
        let baseline = t.elapsed();
        rows.push(Row {
            name: format!("batch {batch}: plain insert_many"),
            docs: n,
            elapsed: baseline,
        });

        // Baseline 2: unguarded bulk upserts (client bulkWrite, filter {_id}).
        let ns = Namespace::new(&db_name, format!("plain_bulk_{batch}"));
        let t = Instant::now();
        for start in (0..n).step_by(batch) {
            let models: Vec<WriteModel> = (start..(start + batch).min(n))
                .map(|i| {
                    UpdateOneModel::builder()
                        .namespace(ns.clone())
                        .filter(doc! { "_id": format!("doc-{i:08}") })
                        .update(doc! { "$set": body(i) })
                        .upsert(true)
                        .build()
                        .into()
                })
                .collect();
            client
                .bulk_write(models)
                .ordered(false)
                .await
                .expect("bulk");
        }
        rows.push(Row {
            name: format!("batch {batch}: plain bulkWrite upsert"),
            docs: n,
            elapsed: t.elapsed(),
        });

        for strategy in [BulkStrategy::ClientBulkWrite, BulkStrategy::PerCollection] {
            let writer = mongo.bulk_writer().with_options(BulkOptions {
                strategy,
                ..BulkOptions::default()
            });
            let coll = format!("guarded_{batch}_{strategy:?}");
            for (label, version) in [
                ("insert", 1u64),
                ("newer, update", 2),
                ("replay, all stale", 2),
            ] {
                let t = Instant::now();
                for start in (0..n).step_by(batch) {
                    let writes: Vec<MongoWrite> = (start..(start + batch).min(n))
                        .map(|i| write(&coll, i, version))
                        .collect();
                    let r = writer.write(writes, vec![]).await.expect("bulk");
                    assert!(r.is_complete());
                }
                rows.push(Row {
                    name: format!("batch {batch}: guarded {strategy:?} ({label})"),
                    docs: n,
                    elapsed: t.elapsed(),
                });
            }
        }
    }
    let _ = db.drop().await;

    // ---- report ---------------------------------------------------------------------------
    let rate_of = |name: &str| {
        rows.iter()
            .find(|r| r.name == name)
            .map(Row::rate)
            .unwrap_or(f64::NAN)
    };
    println!();
    println!(
        "{:<58} {:>8} {:>10} {:>12} {:>9}",
        "scenario", "docs", "secs", "docs/s", "ratio"
    );
    for r in &rows {
        let base = if r.name.starts_with("single") {
            rate_of("single: plain update_one upsert")
        } else if r.name.starts_with("batch 100:") {
            rate_of("batch 100: plain insert_many")
        } else {
            rate_of("batch 1000: plain insert_many")
        };
        println!(
            "{:<58} {:>8} {:>10.3} {:>12.0} {:>8.0}%",
            r.name,
            r.docs,
            r.elapsed.as_secs_f64(),
            r.rate(),
            100.0 * r.rate() / base
        );
    }
    println!(
        "(ratio: single rows vs plain update_one; batch rows vs plain insert_many of the same batch size)"
    );
    println!("total bench time {:.1}s", started.elapsed().as_secs_f64());
}
