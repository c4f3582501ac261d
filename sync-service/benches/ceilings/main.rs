//! The sync-service against the ceilings of the same machine, in one run (issue 17).
//!
//! ```text
//! make infrastructure-up
//! cargo bench -p cqrs-toolkit-sync --bench ceilings
//! ```
//!
//! For three loads (snapshot-heavy inserts, update-heavy, delete-heavy) captured by the
//! stack's Debezium connector into Avro topics, it prints side by side:
//!
//! * **the server's ceiling**: the same changes applied to the same MongoDB server as plain,
//!   unguarded bulk operations of the same batch size from the same number of parallel
//!   writers (`insert_many` for the inserts, `update` with replacement upserts for the
//!   updates, `delete` for the deletes), documents shaped like the sync-service's;
//! * **the sync-service**: the release binary (a child process), 4 workers, batches of
//!   500, consuming the load's topic from the beginning; CPU time (user + sys) per change
//!   and peak RSS from `/proc`;
//! * **Debezium's MongoDB sink** (`io.debezium.connector.mongodb.MongoDbSinkConnector`),
//!   `batch.size` 500, `tasks.max` 4, `delete.enabled`, in the stack's Kafka Connect; its
//!   documents are checked after the run (its failures are silent) and the Connect JVM's CPU
//!   time per change is read from `/proc` (that JVM also runs the stack's source connectors,
//!   idle meanwhile);
//! * **the upstream ceilings**: Debezium's rate into the broker (message count over the
//!   spread of the messages' timestamps) and a bare librdkafka consumer draining the topic.
//!
//! "changes/s" counts every change event of the topic (tombstones aside) over the time from
//! the first document visible to the final state visible, polled every 100 ms. The ceilings
//! run twice (before and after the contenders) and the median of the slices is printed with
//! every slice, so a figure always has its ceiling measured in the same run beside it.
//!
//! Then: throughput of the insert load with 1, 2 and 4 workers and with two instances in
//! one consumer group; end-to-end latency (PostgreSQL commit to the document seen by a
//! change stream) at 500 and 2,000 commits/s, split at the message's broker timestamp into
//! Debezium's part and ours.
//!
//! Knobs: `BENCH_INSERTS` (50000), `BENCH_UPDATE_KEYS` (1000), `BENCH_UPDATE_ROUNDS` (40),
//! `BENCH_DELETE_ROWS` (20000, inserted and deleted in chunks of 500), `BENCH_SINK_SECS`
//! (60, the sink's cap per load), `BENCH_LATENCY_SECS` (15), `BENCH_SKIP_SINK=1`,
//! `BENCH_SKIP_SCALE=1`, `BENCH_SKIP_LATENCY=1`, `SYNC_SERVICE_BIN` (a prebuilt binary);
//! to iterate: `BENCH_LOADS=ins,upd,del` (a subset), `BENCH_REPEATS` (2, runs of ours per
//! load), `BENCH_KAFKA_PROPS="key=value,..."` (consumer properties for the binary),
//! `BENCH_SYNC_LOG` (its `RUST_LOG`; its log folder is kept).
//!
//! Needs the stack. Not a test: under `cargo test` it only says how to run it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bson::{Bson, Document, doc};
use futures::StreamExt;
use rdkafka::Message;
use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};

mod ceiling;
mod latency;
mod load;
mod machine;
mod ours;
mod sink;
mod topics;

use ceiling::*;
use latency::*;
use load::*;
use machine::*;
use ours::*;
use sink::*;
use topics::*;

const BATCH: usize = 500;
const WORKERS: usize = 4;
const DELETE_CHUNK: u64 = 500;

// ---------------------------------------------------------------------------------------
// Environment.

/// The stack's endpoints: environment, then `.env.local`, then `.env` (`require` panics
/// naming them when a key is missing).
type Env = cqrs_test_support::env::StackEnv;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn flag(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| v == "1")
}

fn short_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..8].to_owned()
}

fn median(values: &[f64]) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (sorted.len() as f64 - 1.0)).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// The 1-minute load average (other agents share the machine).
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

// ---------------------------------------------------------------------------------------

async fn postgres(env: &Env) -> tokio_postgres::Client {
    let (client, connection) =
        tokio_postgres::connect(env.require("DATABASE_URL"), tokio_postgres::NoTls)
            .await
            .expect("PostgreSQL of the stack (run `make infrastructure-up`)");
    tokio::spawn(connection);
    client
}

/// Drops the bench schema and its topics when dropped (also on panic).
struct Cleanup {
    url: String,
    schema: String,
    kafka: String,
    topics: Vec<String>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let (url, schema) = (self.url.clone(), self.schema.clone());
        let (kafka, topics) = (self.kafka.clone(), self.topics.clone());
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                if let Ok((pg, conn)) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await {
                    tokio::spawn(conn);
                    let _ = pg
                        .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
                        .await;
                }
                let admin: Result<AdminClient<DefaultClientContext>, _> =
                    rdkafka::ClientConfig::new()
                        .set("bootstrap.servers", &kafka)
                        .create();
                if let Ok(admin) = admin {
                    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
                    let _ = admin.delete_topics(&names, &AdminOptions::new()).await;
                }
            });
        })
        .join();
    }
}

fn verdict(ok: bool) -> &'static str {
    if ok { "met" } else { "MISSED" }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!(
            "ceilings: a benchmark against the stack; run `cargo bench -p cqrs-toolkit-sync --bench ceilings`"
        );
        return;
    }
    let env = Env::load();
    let binary = release_binary();
    let pg = postgres(&env).await;
    let mongo = mongodb::Client::with_uri_str(env.require("MONGODB_URI"))
        .await
        .unwrap();
    mongo
        .database("admin")
        .run_command(doc! { "ping": 1 })
        .await
        .expect("MongoDB of the stack (run `make infrastructure-up`)");
    let schema = format!("cdc_bench_{}", short_id());
    let _cleanup = Cleanup {
        url: env.require("DATABASE_URL").to_owned(),
        schema: schema.clone(),
        kafka: env.require("KAFKA_BOOTSTRAP_SERVERS").to_owned(),
        topics: ["ins", "upd", "del", "lat"]
            .iter()
            .map(|t| format!("cqrs.{schema}.{t}"))
            .collect(),
    };
    println!("load average at start: {}", loadavg());
    let loads = [
        Load {
            name: "snapshot-heavy",
            table: "ins",
            shape: Shape::Inserts {
                rows: env_u64("BENCH_INSERTS", 50_000),
            },
        },
        Load {
            name: "update-heavy",
            table: "upd",
            shape: Shape::Updates {
                keys: env_u64("BENCH_UPDATE_KEYS", 1_000),
                rounds: env_u64("BENCH_UPDATE_ROUNDS", 40),
            },
        },
        Load {
            name: "delete-heavy",
            table: "del",
            shape: Shape::Deletes {
                rows: env_u64("BENCH_DELETE_ROWS", 20_000),
            },
        },
    ];
    // `BENCH_LOADS=ins,upd` runs a subset (by table name).
    let only = std::env::var("BENCH_LOADS").ok();
    let loads: Vec<Load> = loads
        .into_iter()
        .filter(|l| {
            only.as_deref()
                .is_none_or(|o| o.split(',').any(|t| t == l.table))
        })
        .collect();
    pg.batch_execute(&format!(
        "CREATE SCHEMA {schema};
         CREATE TABLE {schema}.lat (id int PRIMARY KEY, note text NOT NULL, committed_at timestamptz NOT NULL);"
    ))
    .await
    .unwrap();
    for load in &loads {
        load.create(&pg, &schema).await;
    }
    println!("schema {schema}; loading");
    let loading = Instant::now();
    for load in &loads {
        load.run(&pg, &schema).await;
        println!("  {}: {}", load.name, load.describe());
    }
    pg.batch_execute(&format!(
        "INSERT INTO {schema}.lat VALUES (0, 'warm-up', now())"
    ))
    .await
    .unwrap();
    println!(
        "committed in {:.1} s; waiting for Debezium",
        loading.elapsed().as_secs_f64()
    );
    let topic = |t: &str| format!("cqrs.{schema}.{t}");
    let mut drains = Vec::new();
    for load in &loads {
        drains.push(wait_and_drain(&env, &topic(load.table), load.events()).await);
    }

    // Throughput: ceiling, ours, sink, ceiling again.
    struct Row {
        ceilings: Vec<Ceiling>,
        ours: Vec<Ours>,
        sink: Option<SinkRun>,
    }
    // Slices: ceiling, ours, ceiling, ours, ... ceiling (BENCH_REPEATS of ours), the sink
    // once after the first of ours.
    let repeats = env_u64("BENCH_REPEATS", 2).max(1);
    let mut rows = Vec::new();
    for load in &loads {
        println!("{} load: {}", load.name, load.describe());
        let mut row = Row {
            ceilings: Vec::new(),
            ours: Vec::new(),
            sink: None,
        };
        for slice in 0..repeats {
            let c = ceiling(&mongo, load).await;
            println!("  server ceiling: {:.0} changes/s ({})", c.per_sec, c.parts);
            row.ceilings.push(c);
            let ours = run_ours(&env, &mongo, &binary, &schema, load, WORKERS, 1).await;
            println!(
                "  sync-service: {:.0} changes/s over {:.1} s, CPU {:.1} s ({:.1} µs/change), VmHWM {:.1} MB; {}",
                ours.rate.per_sec(),
                ours.rate.steady.as_secs_f64(),
                ours.cpu,
                ours.cpu / load.events() as f64 * 1e6,
                ours.hwm_mb,
                ours.around
            );
            row.ours.push(ours);
            if slice == 0 && !flag("BENCH_SKIP_SINK") {
                let s = run_sink(&env, &mongo, &topic(load.table), load).await;
                println!(
                    "  Debezium sink: {}{:.0} changes/s over {:.1} s, JVM CPU {}; after the run: {}",
                    if s.rate.complete {
                        ""
                    } else {
                        "(stopped at the cap) "
                    },
                    s.rate.per_sec(),
                    s.rate.steady.as_secs_f64(),
                    s.cpu.map_or("n/a".into(), |c| format!("{c:.1} s")),
                    s.check
                );
                row.sink = Some(s);
            }
        }
        let c = ceiling(&mongo, load).await;
        println!("  server ceiling: {:.0} changes/s ({})", c.per_sec, c.parts);
        row.ceilings.push(c);
        rows.push(row);
    }

    // Scale: the insert load with 1, 2, 4 workers and two instances of 4.
    let mut scale = Vec::new();
    if !flag("BENCH_SKIP_SCALE") {
        for (workers, instances) in [(1, 1), (2, 1), (4, 1), (4, 2)] {
            let c = ceiling(&mongo, &loads[0]).await;
            let o = run_ours(
                &env, &mongo, &binary, &schema, &loads[0], workers, instances,
            )
            .await;
            println!(
                "  scale: {instances} instance(s) x {workers} worker(s): {:.0} changes/s, CPU {:.1} s; ceiling {:.0}",
                o.rate.per_sec(),
                o.cpu,
                c.per_sec
            );
            scale.push((workers, instances, o, c));
        }
    }

    // Latency at 500 and 2,000 commits/s.
    let mut latencies = Vec::new();
    if !flag("BENCH_SKIP_LATENCY") {
        let id = short_id();
        let database = format!("bench_lat_{id}");
        let child = Instance {
            env: &env,
            binary: &binary,
            group: format!("bench-lat-{id}"),
            database: database.clone(),
            workers: WORKERS,
        }
        .start(&schema, &["lat"]);
        let lat = mongo.database(&database).collection::<Document>("lat");
        let warm = Instant::now();
        while lat.count_documents(doc! { "_id": 0 }).await.unwrap_or(0) == 0 {
            assert!(
                warm.elapsed() < Duration::from_secs(60),
                "the lat table never reached MongoDB"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let seconds = env_u64("BENCH_LATENCY_SECS", 15);
        let mut first_id = 1;
        for per_sec in [500, 2_000] {
            let l = latency(
                &env, &mongo, &database, &schema, "lat", first_id, per_sec, seconds,
            )
            .await;
            first_id += (per_sec * seconds) as i32;
            println!(
                "  latency at {:.0} commits/s: total p50 {:.0} / p99 {:.0} / max {:.0} ms; Debezium p50 {:.0} / p99 {:.0}; ours p50 {:.0} / p99 {:.0} / max {:.0} ms{}",
                l.rate,
                percentile(&l.total, 50.0),
                percentile(&l.total, 99.0),
                l.total.last().copied().unwrap_or(f64::NAN),
                percentile(&l.debezium, 50.0),
                percentile(&l.debezium, 99.0),
                percentile(&l.ours, 50.0),
                percentile(&l.ours, 99.0),
                l.ours.last().copied().unwrap_or(f64::NAN),
                if l.missing > 0 {
                    format!(", {} never seen", l.missing)
                } else {
                    String::new()
                }
            );
            latencies.push((per_sec, l));
        }
        println!(
            "  latency run: VmHWM {:.1} MB",
            memory_kb(child.pid(), "VmHWM:") as f64 / 1024.0
        );
        drop(child);
        let _ = mongo.database(&database).drop().await;
    }

    // Report.
    println!();
    println!(
        "== results: same topics, same MongoDB server, one run (load average now {}) ==",
        loadavg()
    );
    println!(
        "{:<15} {:>9} {:>9} {:>7} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "load",
        "ceiling",
        "ours",
        "of ceil",
        "sink",
        "ours/sink",
        "Debezium",
        "ours/Dbz",
        "consumer",
        "us/change"
    );
    let mut targets = Vec::new();
    for ((load, row), drain) in loads.iter().zip(&rows).zip(&drains) {
        let ceil = median(&row.ceilings.iter().map(|c| c.per_sec).collect::<Vec<_>>());
        let ours = median(
            &row.ours
                .iter()
                .map(|o| o.rate.per_sec())
                .collect::<Vec<_>>(),
        );
        let cpu = median(&row.ours.iter().map(|o| o.cpu).collect::<Vec<_>>());
        let sink = row.sink.as_ref().map_or(f64::NAN, |s| s.rate.per_sec());
        println!(
            "{:<15} {:>9.0} {:>9.0} {:>6.0}% {:>9.0} {:>8.1}x {:>9.0} {:>8.2}x {:>9.0} {:>9.1}",
            load.name,
            ceil,
            ours,
            ours / ceil * 100.0,
            sink,
            ours / sink,
            drain.debezium_per_sec,
            ours / drain.debezium_per_sec,
            drain.consumer_per_sec,
            cpu / load.events() as f64 * 1e6,
        );
        println!(
            "{:<15} ceiling slices {}; ours {}; sink CPU {} µs/change; sink documents after the run: {}; {} events in the topic",
            "",
            row.ceilings
                .iter()
                .map(|c| format!("{:.0}", c.per_sec))
                .collect::<Vec<_>>()
                .join(" / "),
            row.ours
                .iter()
                .map(|o| format!("{:.0}", o.rate.per_sec()))
                .collect::<Vec<_>>()
                .join(" / "),
            row.sink
                .as_ref()
                .and_then(|s| s
                    .cpu
                    .map(|c| format!("{:.0}", c / s.rate.events.max(1) as f64 * 1e6)))
                .unwrap_or_else(|| "n/a".into()),
            row.sink.as_ref().map_or("n/a".into(), |s| s.check.clone()),
            drain.events,
        );
        let need = if matches!(load.shape, Shape::Inserts { .. }) {
            0.8
        } else {
            1.0
        };
        targets.push(format!(
            "{} >= {:.0}% of the ceiling: {}; >= 1.5x Debezium's rate: {}",
            load.name,
            need * 100.0,
            verdict(ours / ceil >= need),
            verdict(ours / drain.debezium_per_sec >= 1.5)
        ));
    }
    let hwm = rows
        .iter()
        .flat_map(|r| r.ours.iter().map(|o| o.hwm_mb))
        .fold(0.0, f64::max);
    targets.push(format!(
        "peak RSS {hwm:.1} MB < 64 MB: {}",
        verdict(hwm < 64.0)
    ));
    if !scale.is_empty() {
        println!(
            "scale (insert load): instances x workers: changes/s (CPU s, ceiling in the same slot)"
        );
        for (workers, instances, o, c) in &scale {
            println!(
                "  {instances} x {workers}: {:.0} changes/s ({:.1} s CPU, {:.1} µs/change; ceiling {:.0})",
                o.rate.per_sec(),
                o.cpu,
                o.cpu / loads[0].events() as f64 * 1e6,
                c.per_sec
            );
        }
    }
    for (per_sec, l) in &latencies {
        let limit = if *per_sec == 500 { 150.0 } else { 300.0 };
        targets.push(format!(
            "{per_sec}/s: p99 {:.0} ms < {limit:.0} ms: {}; our part p99 {:.0} ms < 20 ms: {}",
            percentile(&l.total, 99.0),
            verdict(percentile(&l.total, 99.0) < limit && l.missing == 0),
            percentile(&l.ours, 99.0),
            verdict(percentile(&l.ours, 99.0) < 20.0)
        ));
    }
    println!("targets:");
    for t in targets {
        println!("  {t}");
    }
}
