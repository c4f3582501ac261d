//! The sync-service against the ceilings of the same machine, in one run (issue 17).
//!
//! ```text
//! make infrastructure-up
//! cargo bench -p sync-service --bench ceilings
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
//! `BENCH_SKIP_SCALE=1`, `BENCH_SKIP_LATENCY=1`, `SYNC_SERVICE_BIN` (a prebuilt binary).
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
// /proc: CPU time and memory of a process.

fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces): state is field 3.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 (1-based), i.e. 11 and 12 after the name.
    let ticks: u64 = fields
        .get(11)
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0)
        + fields
            .get(12)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
    ticks as f64 / 100.0
}

fn memory_kb(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Busy and total CPU ticks of the whole machine, all cores (`/proc/stat`).
fn machine_ticks() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let values: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    let total: u64 = values.iter().sum();
    // idle and iowait
    let idle = values.get(3).copied().unwrap_or(0) + values.get(4).copied().unwrap_or(0);
    (total - idle, total)
}

/// The stack's servers whose CPU time a run reports beside ours: the MongoDB server and
/// the broker, found by their command names.
fn server_pids() -> Vec<(String, u32)> {
    let mut found = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        let comm = comm.trim();
        if ["mongod", "secantusd-rs", "tansu"].contains(&comm) {
            found.push((comm.to_owned(), pid));
        }
    }
    found.sort();
    found
}

/// CPU used by the machine and by the stack's servers between two readings.
struct CpuWindow {
    machine: (u64, u64),
    servers: Vec<(String, u32, f64)>,
}

impl CpuWindow {
    fn start() -> Self {
        CpuWindow {
            machine: machine_ticks(),
            servers: server_pids()
                .into_iter()
                .map(|(name, pid)| (name, pid, cpu_secs(pid)))
                .collect(),
        }
    }

    /// "machine 93% busy; secantusd-rs 1.2 s, tansu 0.4 s".
    fn report(&self) -> String {
        let (busy, total) = machine_ticks();
        let busy_share = (busy - self.machine.0) as f64 / (total - self.machine.1).max(1) as f64;
        let servers: Vec<String> = self
            .servers
            .iter()
            .map(|(name, pid, before)| format!("{name} {:.1} s", cpu_secs(*pid) - before))
            .collect();
        format!(
            "machine {:.0}% busy; {}",
            busy_share * 100.0,
            servers.join(", ")
        )
    }
}

/// The pid of the stack's Kafka Connect JVM, the one listening on the REST port of `url`
/// (read only: its CPU time). Other Connect JVMs may run on the machine (Compose tests).
fn connect_pid(url: &str) -> Option<u32> {
    let port = url.rsplit(':').next()?.trim_end_matches('/');
    let out = Command::new("ss")
        .args(["-ltnpH", &format!("sport = :{port}")])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let pid = text.split("pid=").nth(1)?.split(',').next()?;
    pid.parse().ok()
}

// ---------------------------------------------------------------------------------------
// The loads.

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Shape {
    /// `rows` inserts.
    Inserts { rows: u64 },
    /// `keys` inserts, then `rounds` updates of every key; round r sets `qty = r`.
    Updates { keys: u64, rounds: u64 },
    /// `rows` rows inserted in chunks of 500, each chunk deleted after the next one is in.
    Deletes { rows: u64 },
}

#[derive(Clone)]
struct Load {
    name: &'static str,
    table: &'static str,
    shape: Shape,
}

impl Load {
    /// Change events with a value (tombstones aside).
    fn events(&self) -> u64 {
        match self.shape {
            Shape::Inserts { rows } => rows,
            Shape::Updates { keys, rounds } => keys * (1 + rounds),
            Shape::Deletes { rows } => 2 * rows,
        }
    }

    fn describe(&self) -> String {
        match self.shape {
            Shape::Inserts { rows } => format!("{rows} inserts (one statement)"),
            Shape::Updates { keys, rounds } => format!(
                "{keys} keys inserted, then {rounds} rounds updating each ({} events)",
                self.events()
            ),
            Shape::Deletes { rows } => format!(
                "{rows} rows inserted in chunks of {DELETE_CHUNK}, each chunk deleted after the next ({} events)",
                self.events()
            ),
        }
    }

    async fn create(&self, pg: &tokio_postgres::Client, schema: &str) {
        pg.batch_execute(&format!(
            "CREATE TABLE {schema}.{} (id int PRIMARY KEY, name text NOT NULL, qty int NOT NULL,
              price numeric(10,2) NOT NULL, note text, updated_at timestamptz NOT NULL)",
            self.table
        ))
        .await
        .unwrap();
    }

    async fn run(&self, pg: &tokio_postgres::Client, schema: &str) {
        let t = format!("{schema}.{}", self.table);
        let insert = |from: u64, to: u64| {
            format!(
                "INSERT INTO {t} SELECT g, 'item-' || g, 0, (g % 1000) * 0.25, 'note ' || g, now()
                 FROM generate_series({from}, {to}) g"
            )
        };
        match self.shape {
            Shape::Inserts { rows } => pg.batch_execute(&insert(1, rows)).await.unwrap(),
            Shape::Updates { keys, rounds } => {
                pg.batch_execute(&insert(1, keys)).await.unwrap();
                for r in 1..=rounds {
                    pg.batch_execute(&format!(
                        "UPDATE {t} SET qty = {r}, price = price + 0.5, note = 'round {r}', updated_at = now()"
                    ))
                    .await
                    .unwrap();
                }
            }
            Shape::Deletes { rows } => {
                let chunks = rows.div_ceil(DELETE_CHUNK);
                for c in 0..chunks {
                    let from = c * DELETE_CHUNK + 1;
                    pg.batch_execute(&insert(from, (from + DELETE_CHUNK - 1).min(rows)))
                        .await
                        .unwrap();
                    if c > 0 {
                        pg.batch_execute(&format!(
                            "DELETE FROM {t} WHERE id < {from} AND id >= {}",
                            from - DELETE_CHUNK
                        ))
                        .await
                        .unwrap();
                    }
                }
                pg.batch_execute(&format!("DELETE FROM {t}")).await.unwrap();
            }
        }
    }
}

/// How far a contender got: (started, events applied so far, done).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Writer {
    /// The sync-service: a delete leaves a tombstone (`_deleted: true`).
    Ours,
    /// The sink: a delete removes the document.
    Sink,
}

async fn progress(
    coll: &mongodb::Collection<Document>,
    load: &Load,
    who: Writer,
    seen_any: &mut bool,
) -> (bool, u64, bool) {
    let count = coll.estimated_document_count().await.unwrap_or(0);
    *seen_any |= count > 0;
    match load.shape {
        Shape::Inserts { rows } => (count > 0, count, count >= rows),
        Shape::Updates { keys, rounds } => {
            if count == 0 {
                return (false, 0, false);
            }
            let sum = sum_qty(coll).await;
            (true, count + sum, count >= keys && sum >= keys * rounds)
        }
        Shape::Deletes { rows } => match who {
            Writer::Ours => {
                let deleted = coll
                    .count_documents(doc! { "_deleted": true })
                    .await
                    .unwrap_or(0);
                (count > 0, count + deleted, deleted >= rows)
            }
            // Documents come and go: only the end is observable (none left after some).
            Writer::Sink => (*seen_any, 0, *seen_any && count == 0),
        },
    }
}

async fn sum_qty(coll: &mongodb::Collection<Document>) -> u64 {
    let Ok(mut cursor) = coll
        .aggregate([doc! { "$group": { "_id": null, "n": { "$sum": "$qty" } } }])
        .await
    else {
        return 0;
    };
    match cursor.next().await {
        Some(Ok(d)) => d
            .get_i64("n")
            .or_else(|_| d.get_i32("n").map(i64::from))
            .unwrap_or(0)
            .max(0) as u64,
        _ => 0,
    }
}

#[derive(Clone, Copy, Default)]
struct Rate {
    events: u64,
    complete: bool,
    steady: Duration,
}

impl Rate {
    fn per_sec(&self) -> f64 {
        self.events as f64 / self.steady.as_secs_f64()
    }
}

/// Polls until done or `cap`; the rate counts from the first document seen.
async fn measure(
    coll: &mongodb::Collection<Document>,
    load: &Load,
    who: Writer,
    cap: Duration,
    mut tick: impl FnMut(bool),
) -> Rate {
    let started = Instant::now();
    let mut first: Option<Instant> = None;
    let mut seen_any = false;
    loop {
        let (visible, applied, done) = progress(coll, load, who, &mut seen_any).await;
        tick(visible);
        let now = Instant::now();
        if visible && first.is_none() {
            first = Some(now);
        }
        if done || started.elapsed() > cap {
            let events = if done { load.events() } else { applied };
            return Rate {
                events,
                complete: done,
                steady: now - first.unwrap_or(now),
            };
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// ---------------------------------------------------------------------------------------
// The topics: waiting for them, draining them bare, Debezium's rate.

struct Drain {
    /// Messages with a value.
    events: u64,
    /// Bare consumer: messages/s from the first message to the last.
    consumer_per_sec: f64,
    /// Debezium: messages over the spread of their broker timestamps.
    debezium_per_sec: f64,
}

/// Waits until `topic` holds `expected` events (reading it), then drains it again with a
/// fresh bare consumer, timed.
async fn wait_and_drain(env: &Env, topic: &str, expected: u64) -> Drain {
    let started = Instant::now();
    let consumer: StreamConsumer = kafka_consumer(env).create().unwrap();
    consumer.subscribe(&[topic]).unwrap();
    let (mut count, mut first_ts, mut last_ts) = (0u64, i64::MAX, i64::MIN);
    while count < expected {
        match tokio::time::timeout(Duration::from_secs(1), consumer.recv()).await {
            Ok(Ok(m)) => {
                if m.payload().is_some() {
                    count += 1;
                    if let Some(ts) = m.timestamp().to_millis() {
                        first_ts = first_ts.min(ts);
                        last_ts = last_ts.max(ts);
                    }
                }
            }
            Ok(Err(_)) => tokio::time::sleep(Duration::from_millis(500)).await,
            Err(_) => {}
        }
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "{topic} holds only {count} of {expected} events after 600 s"
        );
    }
    drop(consumer);
    let debezium_per_sec = count as f64 / ((last_ts - first_ts).max(1) as f64 / 1000.0);
    // The bare drain, on a thread of its own (librdkafka's poll loop, nothing else).
    let config = kafka_consumer(env);
    let topic_owned = topic.to_owned();
    let consumer_per_sec = tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = config.create().unwrap();
        consumer.subscribe(&[&topic_owned]).unwrap();
        let mut n = 0u64;
        let mut first: Option<Instant> = None;
        let deadline = Instant::now() + Duration::from_secs(300);
        while n < expected && Instant::now() < deadline {
            if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
                first.get_or_insert_with(Instant::now);
                if m.payload().is_some() {
                    n += 1;
                }
            }
        }
        n as f64 / first.map_or(f64::NAN, |f| f.elapsed().as_secs_f64())
    })
    .await
    .unwrap();
    println!(
        "  topic {topic}: {count} events ({:.1} s); Debezium {debezium_per_sec:.0}/s into the broker, bare consumer {consumer_per_sec:.0}/s",
        started.elapsed().as_secs_f64()
    );
    Drain {
        events: count,
        consumer_per_sec,
        debezium_per_sec,
    }
}

fn kafka_consumer(env: &Env) -> rdkafka::ClientConfig {
    let mut config = rdkafka::ClientConfig::new();
    config
        .set("bootstrap.servers", env.require("KAFKA_BOOTSTRAP_SERVERS"))
        .set("group.id", format!("bench-drain-{}", short_id()))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("session.timeout.ms", "6000")
        .set("fetch.wait.max.ms", "25")
        .set("topic.metadata.refresh.interval.ms", "500");
    config
}

// ---------------------------------------------------------------------------------------
// The server's ceiling: plain bulk operations, same batch size, same parallel writers.

/// A document as the sync-service writes the row (types as its type table says).
fn row_doc(id: u64, qty: u64, note: &str) -> Document {
    let cents = ((id % 1000) * 25 + qty * 50) as i64;
    doc! {
        "_id": id as i32,
        "id": id as i32,
        "name": format!("item-{id}"),
        "qty": qty as i32,
        "price": Bson::Decimal128(format!("{}.{:02}", cents / 100, cents % 100).parse().unwrap()),
        "note": note,
        "updated_at": bson::DateTime::now(),
    }
}

#[derive(Clone, Copy)]
enum Op {
    Insert,
    Upsert,
    Delete,
}

/// Applies `docs` (by writer) with `op`, `BATCH` per request, one task per writer; returns
/// the seconds taken.
async fn apply(
    coll: &mongodb::Collection<Document>,
    per_writer: Vec<Vec<Document>>,
    op: Op,
) -> f64 {
    let started = Instant::now();
    let tasks: Vec<_> = per_writer
        .into_iter()
        .map(|docs| {
            let coll = coll.clone();
            tokio::spawn(async move {
                for chunk in docs.chunks(BATCH) {
                    match op {
                        Op::Insert => {
                            coll.insert_many(chunk.to_vec()).ordered(false).await.unwrap();
                        }
                        Op::Upsert => {
                            let updates: Vec<Document> = chunk
                                .iter()
                                .map(|d| doc! { "q": { "_id": d.get("_id").unwrap() }, "u": d, "upsert": true })
                                .collect();
                            run(&coll, doc! { "update": coll.name(), "updates": updates, "ordered": true }).await;
                        }
                        Op::Delete => {
                            let deletes: Vec<Document> = chunk
                                .iter()
                                .map(|d| doc! { "q": { "_id": d.get("_id").unwrap() }, "limit": 1 })
                                .collect();
                            run(&coll, doc! { "delete": coll.name(), "deletes": deletes, "ordered": false }).await;
                        }
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    started.elapsed().as_secs_f64()
}

async fn run(coll: &mongodb::Collection<Document>, command: Document) {
    let reply = coll
        .client()
        .database(coll.namespace().db.as_str())
        .run_command(command)
        .await
        .unwrap();
    assert!(
        reply.get("writeErrors").is_none(),
        "ceiling write errors: {reply}"
    );
}

/// Splits ids among the writers like partitions do (same key, same writer).
fn by_writer(ids: impl Iterator<Item = u64>, make: impl Fn(u64) -> Document) -> Vec<Vec<Document>> {
    let mut out = vec![Vec::new(); WORKERS];
    for id in ids {
        out[(id % WORKERS as u64) as usize].push(make(id));
    }
    out
}

struct Ceiling {
    /// Changes/s of the load as plain operations.
    per_sec: f64,
    /// What each operation ran at (docs/s).
    parts: String,
}

async fn ceiling(mongo: &mongodb::Client, load: &Load) -> Ceiling {
    let database = format!("bench_ceiling_{}", short_id());
    let coll = mongo.database(&database).collection::<Document>(load.table);
    let (seconds, parts) = match load.shape {
        Shape::Inserts { rows } => {
            let s = apply(
                &coll,
                by_writer(1..=rows, |id| row_doc(id, 0, "note")),
                Op::Insert,
            )
            .await;
            (s, format!("insert_many {:.0} docs/s", rows as f64 / s))
        }
        Shape::Updates { keys, rounds } => {
            let a = apply(
                &coll,
                by_writer(1..=keys, |id| row_doc(id, 0, "note")),
                Op::Insert,
            )
            .await;
            let mut per_writer = vec![Vec::new(); WORKERS];
            for r in 1..=rounds {
                for (w, docs) in by_writer(1..=keys, |id| row_doc(id, r, "round"))
                    .into_iter()
                    .enumerate()
                {
                    per_writer[w].extend(docs);
                }
            }
            let b = apply(&coll, per_writer, Op::Upsert).await;
            (
                a + b,
                format!(
                    "insert_many {:.0} docs/s, upserts {:.0} docs/s",
                    keys as f64 / a,
                    (keys * rounds) as f64 / b
                ),
            )
        }
        Shape::Deletes { rows } => {
            let a = apply(
                &coll,
                by_writer(1..=rows, |id| row_doc(id, 0, "note")),
                Op::Insert,
            )
            .await;
            let b = apply(
                &coll,
                by_writer(1..=rows, |id| doc! { "_id": id as i32 }),
                Op::Delete,
            )
            .await;
            (
                a + b,
                format!(
                    "insert_many {:.0} docs/s, deletes {:.0} docs/s",
                    rows as f64 / a,
                    rows as f64 / b
                ),
            )
        }
    };
    let _ = mongo.database(&database).drop().await;
    Ceiling {
        per_sec: load.events() as f64 / seconds,
        parts,
    }
}

// ---------------------------------------------------------------------------------------
// The sync-service binary.

/// The binary cargo built with this bench (`SYNC_SERVICE_BIN` for another one).
fn release_binary() -> PathBuf {
    std::env::var_os("SYNC_SERVICE_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_sync-service")))
}

struct ChildGuard {
    child: Child,
    dir: PathBuf,
}

impl ChildGuard {
    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // `BENCH_SYNC_LOG` (a RUST_LOG filter for the binary) keeps its log to read.
        if std::env::var_os("BENCH_SYNC_LOG").is_some() {
            println!(
                "  sync-service log kept: {}",
                self.dir.join("sync.log").display()
            );
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

struct Instance<'a> {
    env: &'a Env,
    binary: &'a PathBuf,
    group: String,
    database: String,
    workers: usize,
}

impl Instance<'_> {
    fn start(&self, schema: &str, tables: &[&str]) -> ChildGuard {
        let topics: Vec<String> = tables
            .iter()
            .map(|t| format!("\"cqrs.{schema}.{t}\""))
            .collect();
        let projections: String = tables
            .iter()
            .map(|t| format!("[[projection]]\ntable = \"{schema}.{t}\"\ncollection = \"{t}\"\n"))
            .collect();
        let config = format!(
            r#"
[kafka]
bootstrap_servers = "{kafka}"
group_id = "{group}"
topics = [{topics}]
format = "avro"
session_timeout_ms = 6000

{properties}
[schema_registry]
url = "{registry}"

[mongodb]
uri = "{mongo}"
database = "{database}"

[batch]
max_size = {BATCH}
max_wait_ms = 20
workers = {workers}

[dead_letter]
topic = "{group}.dlq"

[http]
listen = ""
{projections}
"#,
            kafka = self.env.require("KAFKA_BOOTSTRAP_SERVERS"),
            registry = self.env.require("SCHEMA_REGISTRY_URL"),
            mongo = self.env.require("MONGODB_URI"),
            group = self.group,
            database = self.database,
            workers = self.workers,
            topics = topics.join(", "),
            properties = kafka_properties(),
        );
        let dir = std::env::temp_dir().join(format!("bench-ceilings-{}", short_id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("sync.toml"), config).unwrap();
        let log = std::fs::File::create(dir.join("sync.log")).unwrap();
        let child = Command::new(self.binary)
            .args(["run", "--config"])
            .arg(dir.join("sync.toml"))
            .env(
                "RUST_LOG",
                std::env::var("BENCH_SYNC_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap_or_else(|e| panic!("{}: {e}", self.binary.display()));
        ChildGuard { child, dir }
    }
}

/// `BENCH_KAFKA_PROPS="fetch.wait.max.ms=100,..."`: librdkafka properties for the
/// binary's consumer, to try settings without a rebuild.
fn kafka_properties() -> String {
    let Ok(props) = std::env::var("BENCH_KAFKA_PROPS") else {
        return String::new();
    };
    let lines: Vec<String> = props
        .split(',')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| format!("\"{}\" = \"{}\"", k.trim(), v.trim()))
        .collect();
    format!("[kafka.properties]\n{}\n", lines.join("\n"))
}

struct Ours {
    rate: Rate,
    cpu: f64,
    hwm_mb: f64,
    /// The machine and the servers over the run.
    around: String,
}

/// `instances` binaries in one group, `workers` each, on `load`'s topic.
async fn run_ours(
    env: &Env,
    mongo: &mongodb::Client,
    binary: &PathBuf,
    schema: &str,
    load: &Load,
    workers: usize,
    instances: usize,
) -> Ours {
    let id = short_id();
    let database = format!("bench_sync_{id}");
    let group = format!("bench-sync-{id}");
    let children: Vec<ChildGuard> = (0..instances)
        .map(|_| {
            Instance {
                env,
                binary,
                group: group.clone(),
                database: database.clone(),
                workers,
            }
            .start(schema, &[load.table])
        })
        .collect();
    let pids: Vec<u32> = children.iter().map(ChildGuard::pid).collect();
    // The physical collection behind the read model's view (tombstones included).
    let coll = mongo
        .database(&database)
        .collection::<Document>(&format!("{}__v1", load.table));
    let mut rss_peak = 0u64;
    // From the first document seen, as the rate.
    let mut window: Option<CpuWindow> = None;
    let rate = measure(
        &coll,
        load,
        Writer::Ours,
        Duration::from_secs(600),
        |visible| {
            if visible && window.is_none() {
                window = Some(CpuWindow::start());
            }
            for pid in &pids {
                rss_peak = rss_peak.max(memory_kb(*pid, "VmHWM:"));
            }
        },
    )
    .await;
    let around = window.map_or_else(String::new, |w| w.report());
    let cpu: f64 = pids.iter().map(|p| cpu_secs(*p)).sum();
    let hwm = pids
        .iter()
        .map(|p| memory_kb(*p, "VmHWM:"))
        .max()
        .unwrap_or(0)
        .max(rss_peak);
    drop(children);
    let _ = mongo.database(&database).drop().await;
    assert!(
        rate.complete,
        "the sync-service did not finish {} within 600 s",
        load.name
    );
    Ours {
        rate,
        cpu,
        hwm_mb: hwm as f64 / 1024.0,
        around,
    }
}

// ---------------------------------------------------------------------------------------
// Debezium's MongoDB sink.

struct Sink {
    url: String,
    name: String,
}

impl Sink {
    async fn register(
        env: &Env,
        name: &str,
        topic: &str,
        database: &str,
        collection: &str,
    ) -> Self {
        let url = env.require("KAFKA_CONNECT_URL").to_owned();
        let registry = env.require("SCHEMA_REGISTRY_URL");
        let config = serde_json::json!({
            "name": name,
            "config": {
                "connector.class": "io.debezium.connector.mongodb.MongoDbSinkConnector",
                "tasks.max": WORKERS.to_string(),
                "batch.size": BATCH.to_string(),
                "delete.enabled": "true",
                "topics": topic,
                "mongodb.connection.string": java_uri(env.require("MONGODB_URI")),
                "sink.database": database,
                "collection.name.format": collection,
                "key.converter": "io.confluent.connect.avro.AvroConverter",
                "key.converter.schema.registry.url": registry,
                "value.converter": "io.confluent.connect.avro.AvroConverter",
                "value.converter.schema.registry.url": registry,
                "consumer.override.auto.offset.reset": "earliest",
                "consumer.override.session.timeout.ms": "6000",
                "consumer.override.max.poll.records": BATCH.to_string(),
                "errors.tolerance": "none",
                "errors.log.enable": "true",
            }
        });
        let response = reqwest::Client::new()
            .post(format!("{url}/connectors"))
            .json(&config)
            .send()
            .await
            .unwrap_or_else(|e| panic!("Kafka Connect at {url}: {e}"));
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        assert!(status.is_success(), "registering {name}: {status} {body}");
        Sink {
            url,
            name: name.to_owned(),
        }
    }

    async fn failed(&self) -> Option<String> {
        let status: serde_json::Value =
            reqwest::get(format!("{}/connectors/{}/status", self.url, self.name))
                .await
                .ok()?
                .json()
                .await
                .ok()?;
        let failed = status["connector"]["state"] == "FAILED"
            || status["tasks"]
                .as_array()
                .is_some_and(|t| t.iter().any(|t| t["state"] == "FAILED"));
        failed.then(|| status.to_string())
    }
}

/// The Java driver's streaming monitor stalls against SecantusDB: poll instead.
fn java_uri(uri: &str) -> String {
    let sep = if uri.contains('?') { '&' } else { '?' };
    format!("{uri}{sep}serverMonitoringMode=poll")
}

impl Drop for Sink {
    fn drop(&mut self) {
        let _ = Command::new("curl")
            .args(["-fsS", "-X", "DELETE", "--max-time", "10"])
            .arg(format!("{}/connectors/{}", self.url, self.name))
            .stdout(Stdio::null())
            .status();
    }
}

struct SinkRun {
    rate: Rate,
    cpu: Option<f64>,
    /// What the documents say after the run, against what the load leaves.
    check: String,
}

async fn run_sink(env: &Env, mongo: &mongodb::Client, topic: &str, load: &Load) -> SinkRun {
    let id = short_id();
    let database = format!("bench_dbz_{id}");
    let coll = mongo.database(&database).collection::<Document>(load.table);
    let jvm = connect_pid(env.require("KAFKA_CONNECT_URL"));
    let cpu_before = jvm.map(cpu_secs);
    let sink = Sink::register(
        env,
        &format!("bench-sink-{id}"),
        topic,
        &database,
        load.table,
    )
    .await;
    let cap = Duration::from_secs(env_u64("BENCH_SINK_SECS", 60));
    let mut polls = 0u32;
    let mut failure: Option<String> = None;
    let rate = measure(&coll, load, Writer::Sink, cap, |_| polls += 1).await;
    if polls > 0 {
        failure = sink.failed().await;
    }
    let cpu = jvm
        .zip(cpu_before)
        .map(|(pid, before)| cpu_secs(pid) - before);
    drop(sink);
    // Tasks still flushing would re-create the database after the drop.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let count = coll.count_documents(doc! {}).await.unwrap_or(0);
    let check = match load.shape {
        Shape::Inserts { rows } => format!("{count} of {rows} documents"),
        Shape::Updates { keys, rounds } => {
            format!(
                "{count} of {keys} documents, sum(qty) {} of {}",
                sum_qty(&coll).await,
                keys * rounds
            )
        }
        Shape::Deletes { .. } => format!("{count} documents left (0 expected)"),
    };
    let check = match failure {
        Some(f) => format!("{check}; FAILED: {f}"),
        None => check,
    };
    let _ = mongo.database(&database).drop().await;
    SinkRun { rate, cpu, check }
}

// ---------------------------------------------------------------------------------------
// Latency.

struct Latency {
    rate: f64,
    total: Vec<f64>,
    debezium: Vec<f64>,
    ours: Vec<f64>,
    missing: usize,
}

/// The `id` of a Debezium Avro key `{id: int}`: magic byte, schema id, zig-zag varint.
fn key_id(key: &[u8]) -> Option<i32> {
    let mut value: u64 = 0;
    for (i, b) in key.get(5..)?.iter().enumerate() {
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            let n = ((value >> 1) as i64) ^ -((value & 1) as i64);
            return i32::try_from(n).ok();
        }
    }
    None
}

fn now_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
        * 1000.0
}

#[allow(clippy::too_many_arguments)]
async fn latency(
    env: &Env,
    mongo: &mongodb::Client,
    database: &str,
    schema: &str,
    table: &str,
    first_id: i32,
    per_sec: u64,
    seconds: u64,
) -> Latency {
    // The change stream watches the physical collection behind the read model's view.
    let coll = mongo
        .database(database)
        .collection::<Document>(&format!("{table}__v1"));
    let seen: Arc<Mutex<HashMap<i32, f64>>> = Arc::default();
    let mut stream = coll.watch().await.expect("change stream");
    let watcher = {
        let seen = Arc::clone(&seen);
        tokio::spawn(async move {
            while let Some(Ok(event)) = stream.next().await {
                let at = now_ms();
                if let Some(id) = event
                    .document_key
                    .as_ref()
                    .and_then(|k| k.get_i32("_id").ok())
                {
                    seen.lock().unwrap().entry(id).or_insert(at);
                }
            }
        })
    };
    // The broker timestamps of the messages, by id.
    let stamped: Arc<Mutex<HashMap<i32, f64>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (stamped, stop) = (Arc::clone(&stamped), Arc::clone(&stop));
        let config = kafka_consumer(env);
        let topic = format!("cqrs.{schema}.{table}");
        tokio::task::spawn_blocking(move || {
            let consumer: BaseConsumer = config.create().unwrap();
            consumer.subscribe(&[&topic]).unwrap();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100))
                    && let (Some(id), Some(ts)) =
                        (m.key().and_then(key_id), m.timestamp().to_millis())
                {
                    stamped.lock().unwrap().insert(id, ts as f64);
                }
            }
        })
    };
    // Writers: 4 connections, each committing every 4th id on schedule.
    let commits = (per_sec * seconds) as i32;
    let interval = Duration::from_secs_f64(4.0 / per_sec as f64);
    let committed: Arc<Mutex<HashMap<i32, f64>>> = Arc::default();
    let start = tokio::time::Instant::now() + Duration::from_millis(200);
    let mut tasks = Vec::new();
    for lane in 0..4 {
        let pg = postgres(env).await;
        let committed = Arc::clone(&committed);
        let insert = pg
            .prepare(&format!(
                "INSERT INTO {schema}.{table} VALUES ($1, 'steady', now())"
            ))
            .await
            .unwrap();
        tasks.push(tokio::spawn(async move {
            let mut k = 0u32;
            loop {
                let id = first_id + (k as i32) * 4 + lane;
                if id >= first_id + commits {
                    break;
                }
                tokio::time::sleep_until(start + interval * k + interval * (lane as u32) / 4).await;
                pg.execute(&insert, &[&id]).await.unwrap();
                committed.lock().unwrap().insert(id, now_ms());
                k += 1;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let achieved = commits as f64 / start.elapsed().as_secs_f64();
    let wait = Instant::now();
    while seen.lock().unwrap().len() < commits as usize && wait.elapsed() < Duration::from_secs(60)
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    watcher.abort();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    reader.await.unwrap();
    let (committed, seen, stamped) = (
        committed.lock().unwrap().clone(),
        seen.lock().unwrap().clone(),
        stamped.lock().unwrap().clone(),
    );
    let mut out = Latency {
        rate: achieved,
        total: Vec::new(),
        debezium: Vec::new(),
        ours: Vec::new(),
        missing: 0,
    };
    for (id, at) in &committed {
        let Some(visible) = seen.get(id) else {
            out.missing += 1;
            continue;
        };
        out.total.push(visible - at);
        if let Some(ts) = stamped.get(id) {
            out.debezium.push(ts - at);
            out.ours.push(visible - ts);
        }
    }
    for v in [&mut out.total, &mut out.debezium, &mut out.ours] {
        v.sort_by(f64::total_cmp);
    }
    out
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
            "ceilings: a benchmark against the stack; run `cargo bench -p sync-service --bench ceilings`"
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
