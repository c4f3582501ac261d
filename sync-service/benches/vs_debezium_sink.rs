//! The sync-service against Debezium's own MongoDB sink connector
//! (`io.debezium.connector.mongodb.MongoDbSinkConnector`), in one run, on the same Debezium
//! Avro topics and the same MongoDB server, plus end-to-end latency at a steady commit rate
//! and the peak RSS of the binary.
//!
//! ```text
//! docker/stack.sh up
//! cargo bench -p sync-service --bench vs_debezium_sink
//! ```
//!
//! What it does:
//! 1. a throw-away `cdc_bench_*` schema (captured by the stack's Debezium connector) gets a
//!    snapshot-heavy load (`BENCH_INSERTS` inserts, default 50,000, set-based SQL) and an
//!    update-heavy load (10,000 keys inserted, then `BENCH_UPDATE_ROUNDS` updates of each,
//!    default 8); the bench waits until the topics hold every event;
//! 2. each load's topic is consumed from the beginning by the sync-service (embedded, 4
//!    workers) into one database, then by the Debezium sink (registered through the Connect
//!    REST API with the AvroConverter and the stack's registry, `tasks.max` 4, removed
//!    afterwards) into another; "changes/s" counts every event of the topic over the time
//!    from the first document visible to the last change visible (both polled the same
//!    way), which leaves out JVM task start and group joins;
//! 3. the release binary (`cargo build --release -p sync-service`, run as a child process)
//!    consumes both topics from the beginning at full throughput, then a steady load of 500
//!    single-row commits/s (`BENCH_LATENCY_SECS`, default 20 s): latency is PostgreSQL
//!    commit (client side, after COMMIT returned) to the document seen by a MongoDB change
//!    stream; peak RSS is the binary's `VmHWM`.
//!
//! Needs the stack (`docker/stack.sh up`). Not a test: under `cargo test` it only says how
//! to run it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bson::{Document, doc};
use futures::StreamExt;
use mongodb::options::FullDocumentType;
use rdkafka::consumer::{Consumer, StreamConsumer};
use sync_service::SyncService;
use sync_service::config::SyncConfig;
use tokio_util::sync::CancellationToken;

const UPDATE_KEYS: i64 = 10_000;

// ---------------------------------------------------------------------------------------
// Environment.

struct Env {
    values: HashMap<String, String>,
}

impl Env {
    fn load() -> Self {
        let root = workspace_root();
        let mut values = HashMap::new();
        for file in [".env", ".env.local"] {
            if let Ok(text) = std::fs::read_to_string(root.join(file)) {
                for line in text.lines() {
                    let line = line.trim();
                    if line.starts_with('#') {
                        continue;
                    }
                    if let Some((k, v)) = line.split_once('=') {
                        values.insert(k.trim().to_owned(), v.trim().trim_matches('"').to_owned());
                    }
                }
            }
        }
        for (k, v) in values.iter_mut() {
            if let Ok(env) = std::env::var(k) {
                *v = env;
            }
        }
        Env { values }
    }

    fn get(&self, key: &str) -> &str {
        self.values
            .get(key)
            .unwrap_or_else(|| panic!("{key} missing from .env and the environment"))
    }
}

fn workspace_root() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

// ---------------------------------------------------------------------------------------
// Kafka Connect: the Debezium MongoDB sink.

/// A sink connector registered through the REST API; deleted when dropped.
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
        let url = env.get("KAFKA_CONNECT_URL").to_owned();
        let registry = env.get("SCHEMA_REGISTRY_URL");
        let config = serde_json::json!({
            "name": name,
            "config": {
                "connector.class": "io.debezium.connector.mongodb.MongoDbSinkConnector",
                "tasks.max": "4",
                "topics": topic,
                "mongodb.connection.string": java_uri(env.get("MONGODB_URI")),
                "sink.database": database,
                "collection.name.format": collection,
                "key.converter": "io.confluent.connect.avro.AvroConverter",
                "key.converter.schema.registry.url": registry,
                "value.converter": "io.confluent.connect.avro.AvroConverter",
                "value.converter.schema.registry.url": registry,
                "consumer.override.auto.offset.reset": "earliest",
                "consumer.override.session.timeout.ms": "6000",
                "errors.tolerance": "none",
                "errors.log.enable": "true",
            }
        });
        let response = reqwest::Client::new()
            .post(format!("{url}/connectors"))
            .json(&config)
            .send()
            .await
            .unwrap_or_else(|e| panic!("Kafka Connect at {url}: {e}; run `docker/stack.sh up`"));
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        assert!(status.is_success(), "registering {name}: {status} {body}");
        Sink {
            url,
            name: name.to_owned(),
        }
    }

    /// Panics when the connector or a task failed.
    async fn check(&self) {
        let status: serde_json::Value =
            reqwest::get(format!("{}/connectors/{}/status", self.url, self.name))
                .await
                .unwrap()
                .json()
                .await
                .unwrap_or_default();
        let failed = status["connector"]["state"] == "FAILED"
            || status["tasks"]
                .as_array()
                .is_some_and(|t| t.iter().any(|t| t["state"] == "FAILED"));
        assert!(!failed, "the Debezium sink failed: {status}");
    }
}

/// The MongoDB URI for the Java driver: its streaming server monitor (awaitable `hello`)
/// gets replies with a wrong `responseTo` from SecantusDB, marks the server unknown and
/// stalls every write for seconds, so the connector polls instead (`serverMonitoringMode=poll`,
/// what the driver does on FaaS platforms). Without it the sink runs at ~100 changes/s here.
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

// ---------------------------------------------------------------------------------------
// Loads and topics.

async fn postgres(env: &Env) -> tokio_postgres::Client {
    let (client, connection) =
        tokio_postgres::connect(env.get("DATABASE_URL"), tokio_postgres::NoTls)
            .await
            .expect("PostgreSQL of the stack (run `docker/stack.sh up`)");
    tokio::spawn(connection);
    client
}

/// Waits until `topic` holds `expected` messages with a value (tombstones aside).
async fn wait_topic(env: &Env, topic: &str, expected: u64) {
    let started = Instant::now();
    let consumer: StreamConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", env.get("KAFKA_BOOTSTRAP_SERVERS"))
        .set(
            "group.id",
            format!("bench-count-{}", uuid::Uuid::new_v4().simple()),
        )
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("session.timeout.ms", "6000")
        .set("topic.metadata.refresh.interval.ms", "500")
        .create()
        .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    let mut count = 0;
    while count < expected {
        match tokio::time::timeout(Duration::from_secs(1), consumer.recv()).await {
            Ok(Ok(m)) => {
                if rdkafka::Message::payload(&m).is_some() {
                    count += 1;
                }
            }
            // The topic may not exist yet (Debezium has not reached the table).
            Ok(Err(e)) => {
                eprintln!("  reading {topic}: {e}");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(_) => {}
        }
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "{topic} holds only {count} of {expected} events after 300 s"
        );
    }
    println!(
        "  topic {topic}: {count} events ready ({:.1} s)",
        started.elapsed().as_secs_f64()
    );
}

/// Polls `progress` (documents visible, events applied) every 50 ms until `events` are
/// applied or `cap` passed; returns the events applied, the time from the first document
/// seen to the last poll, and the total time from `started`.
async fn measure(
    started: Instant,
    events: u64,
    cap: Duration,
    sink: Option<&Sink>,
    mut progress: impl AsyncFnMut() -> (u64, u64),
) -> Rate {
    let mut first: Option<Instant> = None;
    let mut polls = 0u32;
    loop {
        let (visible, applied) = progress().await;
        let now = Instant::now();
        if visible > 0 && first.is_none() {
            first = Some(now);
        }
        if applied >= events || started.elapsed() > cap {
            let first = first.unwrap_or(now);
            return Rate {
                events: applied,
                complete: applied >= events,
                steady: now - first,
                total: now - started,
            };
        }
        polls += 1;
        if polls.is_multiple_of(40)
            && let Some(sink) = sink
        {
            sink.check().await;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---------------------------------------------------------------------------------------
// The contenders.

fn sync_config(
    env: &Env,
    group: &str,
    topics: &[String],
    database: &str,
    projections: &str,
    listen: &str,
) -> String {
    let topics: Vec<String> = topics.iter().map(|t| format!("\"{t}\"")).collect();
    format!(
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
max_size = 500
max_wait_ms = 20
workers = 4

[dead_letter]
topic = "{group}.dlq"

[http]
listen = "{listen}"
{projections}
"#,
        kafka = env.get("KAFKA_BOOTSTRAP_SERVERS"),
        registry = env.get("SCHEMA_REGISTRY_URL"),
        mongo = env.get("MONGODB_URI"),
        topics = topics.join(", "),
        properties = kafka_properties(),
    )
}

/// `BENCH_KAFKA_PROPERTIES="key=value,key=value"`: librdkafka properties for tuning runs.
fn kafka_properties() -> String {
    let Ok(list) = std::env::var("BENCH_KAFKA_PROPERTIES") else {
        return String::new();
    };
    let mut section = String::from("[kafka.properties]\n");
    for pair in list.split(',').filter(|p| !p.is_empty()) {
        let (key, value) = pair
            .split_once('=')
            .expect("BENCH_KAFKA_PROPERTIES: key=value");
        section.push_str(&format!("{key:?} = {value:?}\n"));
    }
    section
}

fn projection(schema: &str, table: &str) -> String {
    format!("[[projection]]\ntable = \"{schema}.{table}\"\ncollection = \"{table}\"\n")
}

/// A load's collection. Events applied = documents (their insert) + the sum of `qty` for
/// the update load, where the n-th update of a key sets `qty = n` (updates of a key apply in
/// order), so partial progress is exact too.
#[derive(Clone)]
struct Goal {
    collection: &'static str,
    updates: bool,
}

async fn progress(mongo: &mongodb::Client, database: &str, goal: &Goal) -> (u64, u64) {
    let coll = mongo
        .database(database)
        .collection::<Document>(goal.collection);
    let visible = coll.estimated_document_count().await.unwrap_or(0);
    if !goal.updates || visible == 0 {
        return (visible, visible);
    }
    let mut cursor = match coll
        .aggregate([doc! { "$group": { "_id": null, "n": { "$sum": "$qty" } } }])
        .await
    {
        Ok(c) => c,
        Err(_) => return (visible, visible),
    };
    let updates = match cursor.next().await {
        Some(Ok(d)) => d
            .get_i64("n")
            .or_else(|_| d.get_i32("n").map(i64::from))
            .unwrap_or(0),
        _ => 0,
    };
    (visible, visible + updates.max(0) as u64)
}

struct Rate {
    events: u64,
    complete: bool,
    steady: Duration,
    total: Duration,
}

impl Rate {
    fn per_sec(&self) -> f64 {
        self.events as f64 / self.steady.as_secs_f64()
    }
}

async fn run_sync(
    env: &Env,
    mongo: &mongodb::Client,
    schema: &str,
    table: &str,
    topic: &str,
    events: u64,
    goal: &Goal,
) -> Rate {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let database = format!("bench_sync_{}", &id[..8]);
    let group = format!("bench-sync-{}", &id[..8]);
    let text = sync_config(
        env,
        &group,
        &[topic.to_owned()],
        &database,
        &projection(schema, table),
        "",
    );
    let config = SyncConfig::from_toml_str(&text).expect("bench config");
    let shutdown = CancellationToken::new();
    let started = Instant::now();
    let task = tokio::spawn(SyncService::new(config).run(shutdown.clone()));
    let rate = measure(
        started,
        events,
        Duration::from_secs(600),
        None,
        async || progress(mongo, &database, goal).await,
    )
    .await;
    shutdown.cancel();
    task.await.unwrap().expect("sync-service failed");
    let _ = mongo.database(&database).drop().await;
    assert!(
        rate.complete,
        "the sync-service did not finish within 600 s"
    );
    rate
}

async fn run_debezium(
    env: &Env,
    mongo: &mongodb::Client,
    topic: &str,
    events: u64,
    goal: &Goal,
) -> Rate {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let database = format!("bench_dbz_{}", &id[..8]);
    let started = Instant::now();
    let sink = Sink::register(
        env,
        &format!("bench-sink-{}", &id[..8]),
        topic,
        &database,
        goal.collection,
    )
    .await;
    let cap = Duration::from_secs(env_u64("BENCH_SINK_SECS", 60));
    let rate = measure(started, events, cap, Some(&sink), async || {
        progress(mongo, &database, goal).await
    })
    .await;
    drop(sink);
    // Tasks still flushing their last batch would re-create the database after the drop.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let _ = mongo.database(&database).drop().await;
    rate
}

// ---------------------------------------------------------------------------------------
// The binary: full throughput, RSS, latency.

/// `target/release/sync-service`, built now (the bench runs in the release profile too).
fn release_binary() -> PathBuf {
    if let Some(bin) = std::env::var_os("SYNC_SERVICE_BIN") {
        return PathBuf::from(bin);
    }
    println!(
        "building the release binary: cargo build --release -p sync-service --bin sync-service"
    );
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args([
            "build",
            "--release",
            "-p",
            "sync-service",
            "--bin",
            "sync-service",
        ])
        .current_dir(workspace_root())
        .status()
        .expect("cargo");
    assert!(status.success(), "building the release binary failed");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"));
    target.join("release").join("sync-service")
}

struct ChildGuard {
    child: Child,
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn memory_kb(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (sorted.len() as f64 - 1.0)).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

// ---------------------------------------------------------------------------------------

#[tokio::main(flavor = "multi_thread", worker_threads = 4)]
async fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!(
            "vs_debezium_sink: a benchmark against the stack; run `cargo bench -p sync-service --bench vs_debezium_sink`"
        );
        return;
    }
    let env = Env::load();
    let inserts = env_u64("BENCH_INSERTS", 50_000);
    let rounds = env_u64("BENCH_UPDATE_ROUNDS", 8);
    let latency_secs = env_u64("BENCH_LATENCY_SECS", 20);
    let rate = env_u64("BENCH_COMMITS_PER_SEC", 500);

    let binary = release_binary();
    let pg = postgres(&env).await;
    let mongo = mongodb::Client::with_uri_str(env.get("MONGODB_URI"))
        .await
        .unwrap();
    mongo
        .database("admin")
        .run_command(doc! { "ping": 1 })
        .await
        .expect("MongoDB of the stack (run `docker/stack.sh up`)");
    let id = uuid::Uuid::new_v4().simple().to_string();
    let schema = format!("cdc_bench_{}", &id[..8]);
    let cleanup = Cleanup {
        url: env.get("DATABASE_URL").to_owned(),
        schema: schema.clone(),
    };
    pg.batch_execute(&format!(
        "CREATE SCHEMA {schema};
         CREATE TABLE {schema}.ins (id int PRIMARY KEY, name text NOT NULL, qty int NOT NULL,
                                    price numeric(10,2) NOT NULL, note text, updated_at timestamptz NOT NULL);
         CREATE TABLE {schema}.upd (id int PRIMARY KEY, name text NOT NULL, qty int NOT NULL,
                                    price numeric(10,2) NOT NULL, note text, updated_at timestamptz NOT NULL);
         CREATE TABLE {schema}.lat (id int PRIMARY KEY, note text NOT NULL, committed_at timestamptz NOT NULL);"
    ))
    .await
    .unwrap();
    let topic = |t: &str| format!("cqrs.{schema}.{t}");
    println!("sync-service vs Debezium MongoDB sink, schema {schema}");

    // 1. The topic data.
    let loading = Instant::now();
    pg.batch_execute(&format!(
        "INSERT INTO {schema}.ins SELECT g, 'item-' || g, g % 100, (g % 1000) * 0.25, 'note ' || g, now()
         FROM generate_series(1, {inserts}) g"
    ))
    .await
    .unwrap();
    pg.batch_execute(&format!(
        "INSERT INTO {schema}.upd SELECT g, 'item-' || g, 0, 1.00, NULL, now()
         FROM generate_series(1, {UPDATE_KEYS}) g"
    ))
    .await
    .unwrap();
    for r in 1..=rounds {
        pg.batch_execute(&format!(
            "UPDATE {schema}.upd SET qty = {r}, price = price + 0.5, note = 'round {r}', updated_at = now()"
        ))
        .await
        .unwrap();
    }
    pg.batch_execute(&format!(
        "INSERT INTO {schema}.lat VALUES (0, 'warm-up', now())"
    ))
    .await
    .unwrap();
    let update_events = UPDATE_KEYS as u64 * (1 + rounds);
    println!(
        "loads committed in {:.1} s; waiting for Debezium",
        loading.elapsed().as_secs_f64()
    );
    wait_topic(&env, &topic("ins"), inserts).await;
    wait_topic(&env, &topic("upd"), update_events).await;

    // 2. Throughput, same topic, same server.
    let insert_goal = Goal {
        collection: "ins",
        updates: false,
    };
    let update_goal = Goal {
        collection: "upd",
        updates: true,
    };
    // BENCH_SKIP_SINK=1 measures the binary only (latency and RSS), for tuning runs.
    let comparisons = if std::env::var("BENCH_SKIP_SINK").is_ok_and(|v| v == "1") {
        println!("BENCH_SKIP_SINK=1: throughput comparison skipped");
        Vec::new()
    } else {
        println!("snapshot-heavy load: {inserts} inserts");
        let sync_ins = run_sync(
            &env,
            &mongo,
            &schema,
            "ins",
            &topic("ins"),
            inserts,
            &insert_goal,
        )
        .await;
        report("  sync-service", &sync_ins);
        let dbz_ins = run_debezium(&env, &mongo, &topic("ins"), inserts, &insert_goal).await;
        report("  Debezium sink", &dbz_ins);
        println!(
            "update-heavy load: {UPDATE_KEYS} keys, {rounds} updates each ({update_events} events)"
        );
        let sync_upd = run_sync(
            &env,
            &mongo,
            &schema,
            "upd",
            &topic("upd"),
            update_events,
            &update_goal,
        )
        .await;
        report("  sync-service", &sync_upd);
        let dbz_upd = run_debezium(&env, &mongo, &topic("upd"), update_events, &update_goal).await;
        report("  Debezium sink", &dbz_upd);
        vec![
            ("snapshot-heavy (inserts)", sync_ins, dbz_ins),
            ("update-heavy (10k keys)", sync_upd, dbz_upd),
        ]
    };

    // 3. The binary: full throughput (RSS), then steady commits (latency).
    let bin_id = &uuid::Uuid::new_v4().simple().to_string()[..8];
    let database = format!("bench_bin_{bin_id}");
    let listen = format!(
        "127.0.0.1:{}",
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    );
    let dir = tempdir();
    let config_path = dir.join("sync.toml");
    std::fs::write(
        &config_path,
        sync_config(
            &env,
            &format!("bench-bin-{bin_id}"),
            &[topic("ins"), topic("upd"), topic("lat")],
            &database,
            &format!(
                "{}{}{}",
                projection(&schema, "ins"),
                projection(&schema, "upd"),
                projection(&schema, "lat")
            ),
            &listen,
        ),
    )
    .unwrap();
    let log = std::fs::File::create(dir.join("sync.log")).unwrap();
    let child = ChildGuard {
        child: Command::new(&binary)
            .args(["run", "--config"])
            .arg(&config_path)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap_or_else(|e| panic!("{}: {e}", binary.display())),
    };
    let pid = child.child.id();
    let started = Instant::now();
    let mut rss_max = 0;
    let all_events = inserts + update_events;
    let bin = measure(
        started,
        all_events,
        Duration::from_secs(900),
        None,
        async || {
            rss_max = rss_max.max(memory_kb(pid, "VmRSS:"));
            let a = progress(&mongo, &database, &insert_goal).await;
            let b = progress(&mongo, &database, &update_goal).await;
            (a.0 + b.0, a.1 + b.1)
        },
    )
    .await;
    let bin_steady = bin.steady;
    let hwm_full = memory_kb(pid, "VmHWM:");
    println!(
        "binary at full throughput: {all_events} events in {:.1} s ({:.0} changes/s), VmHWM {:.1} MB",
        bin_steady.as_secs_f64(),
        all_events as f64 / bin_steady.as_secs_f64(),
        hwm_full as f64 / 1024.0
    );

    // Latency: a change stream sees each document; the writer commits at a steady rate.
    let lat = mongo.database(&database).collection::<Document>("lat");
    let warm = Instant::now();
    while lat.count_documents(doc! { "_id": 0 }).await.unwrap_or(0) == 0 {
        assert!(
            warm.elapsed() < Duration::from_secs(60),
            "the lat table never reached MongoDB"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut stream = lat
        .watch()
        .full_document(FullDocumentType::UpdateLookup)
        .await
        .expect("change stream on MongoDB");
    let seen: Arc<std::sync::Mutex<HashMap<i32, SystemTime>>> = Arc::default();
    let watcher = {
        let seen = Arc::clone(&seen);
        tokio::spawn(async move {
            while let Some(Ok(event)) = stream.next().await {
                let now = SystemTime::now();
                if let Some(id) = event
                    .document_key
                    .as_ref()
                    .and_then(|k| k.get_i32("_id").ok())
                {
                    seen.lock().unwrap().entry(id).or_insert(now);
                }
            }
        })
    };
    let commits = rate * latency_secs;
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let mut committed: HashMap<i32, SystemTime> = HashMap::with_capacity(commits as usize);
    let load_start = tokio::time::Instant::now();
    let insert = pg
        .prepare(&format!(
            "INSERT INTO {schema}.lat VALUES ($1, 'steady', now())"
        ))
        .await
        .unwrap();
    for i in 1..=commits as i32 {
        tokio::time::sleep_until(load_start + interval * (i as u32 - 1)).await;
        pg.execute(&insert, &[&i]).await.unwrap();
        committed.insert(i, SystemTime::now());
        if i % (rate as i32) == 0 {
            rss_max = rss_max.max(memory_kb(pid, "VmRSS:"));
        }
    }
    let achieved = commits as f64 / load_start.elapsed().as_secs_f64();
    let wait = Instant::now();
    while seen.lock().unwrap().len() < committed.len() && wait.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    watcher.abort();
    let seen = seen.lock().unwrap().clone();
    let mut latencies: Vec<f64> = committed
        .iter()
        .filter_map(|(id, at)| {
            Some(
                seen.get(id)?
                    .duration_since(*at)
                    .unwrap_or_default()
                    .as_secs_f64()
                    * 1000.0,
            )
        })
        .collect();
    latencies.sort_by(f64::total_cmp);
    let missing = committed.len() - latencies.len();
    let hwm = memory_kb(pid, "VmHWM:");
    drop(child);
    let _ = mongo.database(&database).drop().await;

    // Report.
    println!();
    println!("== results (same topics, same MongoDB server) ==");
    println!(
        "{:<28} {:>14} {:>14} {:>8}",
        "changes/s (steady)", "sync-service", "Debezium sink", "ratio"
    );
    for (name, s, d) in &comparisons {
        println!(
            "{:<28} {:>14.0} {:>14.0} {:>7.2}x   (totals with start-up: {:.1} s vs {:.1} s)",
            name,
            s.per_sec(),
            d.per_sec(),
            s.per_sec() / d.per_sec(),
            s.total.as_secs_f64(),
            d.total.as_secs_f64()
        );
    }
    println!(
        "latency commit -> visible at {achieved:.0} commits/s ({} commits): p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms{}",
        latencies.len(),
        percentile(&latencies, 50.0),
        percentile(&latencies, 99.0),
        latencies.last().copied().unwrap_or(f64::NAN),
        if missing > 0 {
            format!(", {missing} never seen")
        } else {
            String::new()
        }
    );
    println!(
        "sync-service binary peak RSS: VmHWM {:.1} MB at full throughput ({:.1} MB over the whole run, max sampled VmRSS {:.1} MB)",
        hwm_full as f64 / 1024.0,
        hwm as f64 / 1024.0,
        rss_max as f64 / 1024.0
    );
    println!(
        "targets: sync-service >= 2x the sink ({}), p99 < 300 ms ({}), RSS < 100 MB ({})",
        if comparisons.is_empty() {
            "skipped"
        } else {
            verdict(
                comparisons
                    .iter()
                    .all(|(_, s, d)| s.per_sec() / d.per_sec() >= 2.0),
            )
        },
        verdict(percentile(&latencies, 99.0) < 300.0 && missing == 0),
        verdict((hwm as f64 / 1024.0) < 100.0)
    );
    drop(cleanup);
}

fn verdict(ok: bool) -> &'static str {
    if ok { "met" } else { "MISSED" }
}

fn report(name: &str, r: &Rate) {
    println!(
        "{name}: {} events{}, {:.1} s from the first document to the last change ({:.0} changes/s), {:.1} s with start-up",
        r.events,
        if r.complete {
            ""
        } else {
            " (stopped at the time cap: BENCH_SINK_SECS)"
        },
        r.steady.as_secs_f64(),
        r.per_sec(),
        r.total.as_secs_f64()
    );
}

fn tempdir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("bench-sync-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Drops the bench schema when dropped (also on panic).
struct Cleanup {
    url: String,
    schema: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let (url, schema) = (self.url.clone(), self.schema.clone());
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
            });
        })
        .join();
    }
}
