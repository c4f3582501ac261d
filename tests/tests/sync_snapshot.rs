//! The initial snapshot of tables that already held rows, end to end through the real
//! stack. The stack's connector snapshotted only at its first start, so this test registers
//! a second, temporary Debezium connector (the stack's template with its own slot, topic
//! prefix and `schema.include.list`, `snapshot.mode=initial`) through the Kafka Connect REST
//! API, runs the embedded sync-service on that prefix's topics, and checks that the MongoDB
//! documents equal the pre-existing rows (delivered as op `r` snapshot reads), then that
//! changes made after the snapshot arrive too. The connector is deleted and its replication
//! slot dropped at the end, also when the test fails (a guard's `Drop`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bson::spec::BinarySubtype;
use bson::{Binary, Bson, DateTime, Document, doc};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use support::{Running, Scenario, until};
use sync_service::SyncService;
use sync_service::decode::{Decoder, Format, RawRecord, RegistryDecoder};
use sync_service::envelope::{Change, EnvelopeParser, Event, Op};

const WAIT: Duration = Duration::from_secs(45);

const PROJECTIONS: &str = r#"
    [[projection]]
    table = "{s}.items"
    collection = "items"

    [[projection]]
    table = "{s}.lines"
    collection = "lines"

    [[projection]]
    table = "{s}.accounts"
    collection = "accounts"
"#;

const TABLES: [&str; 3] = ["items", "lines", "accounts"];

/// Rows that exist before any connector of this test runs, with history (updates and
/// deletes) the snapshot must not show.
const BEFORE_SNAPSHOT: &str = r#"
CREATE TABLE {s}.items (id integer PRIMARY KEY, name text, price numeric(10,2) NOT NULL,
                        tags text[] NOT NULL, created_at timestamptz NOT NULL);
CREATE TABLE {s}.lines (order_id bigint, line_no integer, sku text NOT NULL, qty integer NOT NULL,
                        PRIMARY KEY (order_id, line_no));
CREATE TABLE {s}.accounts (id uuid PRIMARY KEY, balance money, opened date);
INSERT INTO {s}.items
    SELECT g, 'item ' || g, g * 1.25, ARRAY['t' || g % 3, ''],
           timestamptz '1969-12-31 00:00:00.000500+00' + g * interval '1 hour 1.5 ms'
    FROM generate_series(1, 300) g;
UPDATE {s}.items SET name = NULL WHERE id % 7 = 0;
DELETE FROM {s}.items WHERE id % 10 = 0;
INSERT INTO {s}.lines
    SELECT o, l, 'SKU-' || o || '-' || l, l FROM generate_series(1, 40) o, generate_series(1, 5) l;
DELETE FROM {s}.lines WHERE line_no = 5 AND order_id % 2 = 0;
INSERT INTO {s}.accounts
    SELECT gen_random_uuid(), (g * 10.01)::numeric::money, date '1960-01-01' + g * 400
    FROM generate_series(1, 20) g;
INSERT INTO {s}.accounts VALUES ('00000000-0000-0000-0000-000000000000', NULL, NULL);
"#;

const AFTER_SNAPSHOT: &str = r#"
INSERT INTO {s}.items VALUES (1000, 'new', 0.01, ARRAY[]::text[], now());
UPDATE {s}.items SET price = price + 1, name = 'renamed' WHERE id = 1;
DELETE FROM {s}.items WHERE id = 2;
UPDATE {s}.lines SET qty = 99 WHERE order_id = 1 AND line_no = 1;
DELETE FROM {s}.lines WHERE order_id = 2 AND line_no = 3;
INSERT INTO {s}.lines VALUES (41, 1, 'late', 1);
UPDATE {s}.lines SET line_no = 6 WHERE order_id = 3 AND line_no = 1;
UPDATE {s}.accounts SET balance = -1.5, opened = NULL WHERE id = '00000000-0000-0000-0000-000000000000';
"#;

/// A temporary Debezium connector with its own replication slot. Deleted (after its offsets)
/// and its slot dropped when the guard is finished or dropped, also on a panic.
struct TempConnector {
    connect_url: String,
    database_url: String,
    name: String,
    slot: String,
    done: bool,
}

impl TempConnector {
    /// The stack's connector template with this test's name, slot, prefix and schema.
    fn config(s: &Scenario, prefix: &str, slot: &str) -> serde_json::Value {
        let path = cqrs_e2e::workspace_root().join("docker/debezium/cqrs-postgres.json.tmpl");
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!("cannot read the connector template {}: {e}", path.display())
        });
        let mut config: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("connector template {} is not JSON: {e}", path.display()));
        let c = &s.contract;
        let vars = [
            ("${DBZ_PG_HOST}", c.require("POSTGRES_HOST")),
            ("${DBZ_PG_PORT}", c.require("POSTGRES_PORT")),
            ("${POSTGRES_DB}", c.require("POSTGRES_DB")),
            ("${DEBEZIUM_PG_USER}", c.require("DEBEZIUM_PG_USER")),
            ("${DEBEZIUM_PG_PASSWORD}", c.require("DEBEZIUM_PG_PASSWORD")),
            (
                "${DBZ_SCHEMA_REGISTRY_URL}",
                c.require("SCHEMA_REGISTRY_URL"),
            ),
        ];
        for value in config.values_mut() {
            if let serde_json::Value::String(v) = value {
                for (var, replacement) in vars {
                    *v = v.replace(var, replacement);
                }
            }
        }
        for (key, value) in [
            ("topic.prefix", prefix),
            ("slot.name", slot),
            ("schema.include.list", s.schema.as_str()),
            ("snapshot.mode", "initial"),
            ("publication.name", "cqrs_cdc"),
            ("publication.autocreate.mode", "disabled"),
            // Debezium drops the slot itself when the task stops; the guard checks anyway.
            ("slot.drop.on.stop", "true"),
        ] {
            config.insert(key.into(), value.into());
        }
        serde_json::Value::Object(config)
    }

    /// Registers the connector; the guard exists before Connect answers, so a failed
    /// registration is cleaned up too.
    async fn register(s: &Scenario, name: &str, prefix: &str, slot: &str) -> Self {
        let guard = TempConnector {
            connect_url: s
                .contract
                .require("KAFKA_CONNECT_URL")
                .trim_end_matches('/')
                .to_owned(),
            database_url: s.contract.require("DATABASE_URL").to_owned(),
            name: name.to_owned(),
            slot: slot.to_owned(),
            done: false,
        };
        let url = format!("{}/connectors", guard.connect_url);
        let body = serde_json::json!({ "name": name, "config": Self::config(s, prefix, slot) });
        let response = reqwest::Client::new()
            .post(&url)
            .json(&body)
            .timeout(Duration::from_secs(60))
            .send()
            .await
            .unwrap_or_else(|e| panic!("Kafka Connect is not reachable at {url}: {e}"));
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        assert!(
            status.is_success(),
            "POST {url} (connector {name}) answered {status}: {text}"
        );
        guard
    }

    async fn wait_running(&self) {
        let url = format!("{}/connectors/{}/status", self.connect_url, self.name);
        until(
            &format!("connector {} to be RUNNING", self.name),
            WAIT,
            || async {
                let status: serde_json::Value = reqwest::get(&url)
                    .await
                    .map_err(|e| e.to_string())?
                    .json()
                    .await
                    .map_err(|e| e.to_string())?;
                let tasks = status["tasks"].as_array().cloned().unwrap_or_default();
                if tasks.iter().any(|t| t["state"] == "FAILED")
                    || status["connector"]["state"] == "FAILED"
                {
                    panic!("connector {} FAILED: {status}", self.name);
                }
                if status["connector"]["state"] == "RUNNING"
                    && !tasks.is_empty()
                    && tasks.iter().all(|t| t["state"] == "RUNNING")
                {
                    Ok(())
                } else {
                    Err(status.to_string())
                }
            },
        )
        .await;
    }

    /// Stops and deletes the connector (and its offsets), then makes sure its slot is gone.
    /// Runs on its own thread and runtime, so it works from `Drop` too.
    fn teardown_blocking(&self) -> Result<(), String> {
        let (connect, db, name, slot) = (
            self.connect_url.clone(),
            self.database_url.clone(),
            self.name.clone(),
            self.slot.clone(),
        );
        std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?
                .block_on(teardown(&connect, &db, &name, &slot))
        })
        .join()
        .unwrap_or_else(|_| Err("the teardown thread panicked".into()))
    }

    /// Tears down now and reports what went wrong.
    fn finish(mut self) -> Result<(), String> {
        self.done = true;
        self.teardown_blocking()
    }
}

impl Drop for TempConnector {
    fn drop(&mut self) {
        if !self.done
            && let Err(e) = self.teardown_blocking()
        {
            eprintln!(
                "cleanup of connector {} / slot {}: {e}",
                self.name, self.slot
            );
        }
    }
}

async fn teardown(connect: &str, database_url: &str, name: &str, slot: &str) -> Result<(), String> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| e.to_string())?;
    let base = format!("{connect}/connectors/{name}");
    // Stop first: the task stops (dropping its slot), and a stopped connector's offsets can
    // be deleted, so no stale offsets are left in the worker. Best effort.
    if http.put(format!("{base}/stop")).send().await.is_ok() {
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            let state = match http.get(format!("{base}/status")).send().await {
                Ok(r) => r.json::<serde_json::Value>().await.unwrap_or_default(),
                Err(_) => break,
            };
            if state["connector"]["state"] == "STOPPED" {
                let _ = http.delete(format!("{base}/offsets")).send().await;
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let mut problems = Vec::new();
    match http.delete(&base).send().await {
        Ok(r) if r.status().is_success() || r.status() == reqwest::StatusCode::NOT_FOUND => {}
        Ok(r) => problems.push(format!("DELETE {base} answered {}", r.status())),
        Err(e) => problems.push(format!("DELETE {base} failed: {e}")),
    }
    // The slot: gone already, or dropped here once inactive (terminating its walsender if
    // it lingers).
    let (pg, conn) = tokio_postgres::connect(database_url, tokio_postgres::NoTls)
        .await
        .map_err(|e| format!("connecting to PostgreSQL to drop slot {slot}: {e}"))?;
    tokio::spawn(conn);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let row = pg
            .query_opt(
                "SELECT active_pid FROM pg_replication_slots WHERE slot_name = $1",
                &[&slot],
            )
            .await
            .map_err(|e| e.to_string())?;
        let Some(row) = row else { break };
        let pid: Option<i32> = row.get(0);
        match pid {
            None => {
                if let Err(e) = pg
                    .execute("SELECT pg_drop_replication_slot($1)", &[&slot])
                    .await
                {
                    problems.push(format!("dropping slot {slot}: {e}"));
                }
            }
            Some(pid) if Instant::now() >= deadline => {
                let _ = pg.execute("SELECT pg_terminate_backend($1)", &[&pid]).await;
            }
            Some(_) => {}
        }
        if Instant::now() >= deadline + Duration::from_secs(10) {
            problems.push(format!("replication slot {slot} still exists"));
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

fn decimal(text: &str) -> Bson {
    Bson::Decimal128(text.parse().unwrap())
}

fn uuid_bson(text: &str) -> Bson {
    Bson::Binary(Binary {
        subtype: BinarySubtype::Uuid,
        bytes: uuid::Uuid::parse_str(text).unwrap().as_bytes().to_vec(),
    })
}

/// What each collection must hold, built from the current PostgreSQL rows.
async fn expected(s: &Scenario) -> BTreeMap<&'static str, Vec<Document>> {
    let q = |sql: &str| {
        let sql = sql.replace("{s}", &s.schema);
        async move {
            s.pg.query(&sql, &[])
                .await
                .unwrap_or_else(|e| panic!("{e}\n{sql}"))
        }
    };
    let items = q(
        "SELECT id, name, price::text, tags, floor(extract(epoch FROM created_at) * 1000)::bigint \
                   FROM {s}.items ORDER BY id",
    )
    .await
    .iter()
    .map(|r| {
        let id: i32 = r.get(0);
        let name: Option<String> = r.get(1);
        let tags: Vec<String> = r.get(3);
        doc! {
            "_id": id, "id": id, "name": name.map_or(Bson::Null, Bson::String),
            "price": decimal(r.get(2)), "tags": tags,
            "created_at": DateTime::from_millis(r.get(4)),
        }
    })
    .collect();
    let lines = q("SELECT order_id, line_no, sku, qty FROM {s}.lines ORDER BY order_id, line_no")
        .await
        .iter()
        .map(|r| {
            let (order_id, line_no): (i64, i32) = (r.get(0), r.get(1));
            doc! {
                "_id": { "order_id": order_id, "line_no": line_no },
                "order_id": order_id, "line_no": line_no,
                "sku": r.get::<_, String>(2), "qty": r.get::<_, i32>(3),
            }
        })
        .collect();
    let accounts = q("SELECT id::text, balance::numeric::text, \
                      (opened - date '1970-01-01')::bigint * 86400000 FROM {s}.accounts ORDER BY id")
    .await
    .iter()
    .map(|r| {
        let id = uuid_bson(r.get(0));
        let balance: Option<String> = r.get(1);
        let opened: Option<i64> = r.get(2);
        doc! {
            "_id": id.clone(), "id": id,
            "balance": balance.map_or(Bson::Null, |b| decimal(&b)),
            "opened": opened.map_or(Bson::Null, |ms| Bson::DateTime(DateTime::from_millis(ms))),
        }
    })
    .collect();
    BTreeMap::from([("items", items), ("lines", lines), ("accounts", accounts)])
}

/// Live documents without the guard's version fields, ordered like the PostgreSQL rows.
async fn actual(s: &Scenario, collection: &str) -> Vec<Document> {
    s.live_docs(collection)
        .await
        .into_iter()
        .map(|d| {
            d.into_iter()
                .filter(|(k, _)| !k.starts_with("_version"))
                .collect()
        })
        .collect()
}

fn differences(collection: &str, actual: &[Document], expected: &[Document]) -> Vec<String> {
    let by_id = |docs: &[Document]| -> BTreeMap<String, Document> {
        docs.iter()
            .map(|d| (format!("{:?}", d.get("_id")), d.clone()))
            .collect()
    };
    let (a, e) = (by_id(actual), by_id(expected));
    let mut out = Vec::new();
    for (id, want) in &e {
        match a.get(id) {
            None => out.push(format!(
                "{collection} {id}: missing in MongoDB, PostgreSQL has {want}"
            )),
            Some(got) => {
                for (k, v) in want {
                    if got.get(k) != Some(v) {
                        out.push(format!(
                            "{collection} {id} field {k}: MongoDB has {:?}, PostgreSQL has {v:?}",
                            got.get(k)
                        ));
                    }
                }
                for k in got.keys().filter(|k| !want.contains_key(*k)) {
                    out.push(format!("{collection} {id}: unexpected field {k}"));
                }
            }
        }
    }
    for id in a.keys().filter(|id| !e.contains_key(*id)) {
        out.push(format!("{collection} {id}: in MongoDB, not in PostgreSQL"));
    }
    out
}

async fn wait_until_equal(s: &Scenario, what: &str) {
    until(what, WAIT, || async {
        let expected = expected(s).await;
        let mut problems = Vec::new();
        for (collection, want) in &expected {
            problems.extend(differences(collection, &actual(s, collection).await, want));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            let n = problems.len();
            problems.truncate(20);
            Err(format!(
                "{n} difference(s), first ones:\n  {}",
                problems.join("\n  ")
            ))
        }
    })
    .await;
}

/// Every change event on `topic` so far, in offset order (all partitions), decoded with the
/// sync-service's own decoder against the registry; waits until at least `at_least`.
async fn changes_on(s: &Scenario, topic: &str, at_least: usize) -> Vec<Change> {
    let bootstrap = s.contract.require("KAFKA_BOOTSTRAP_SERVERS");
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", format!("{}-reader", s.group))
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_uncommitted")
        .create()
        .unwrap_or_else(|e| panic!("Kafka consumer for {bootstrap}: {e}"));
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("metadata of {topic} from {bootstrap}: {e}"));
    let mut assignment = TopicPartitionList::new();
    for p in metadata.topics().iter().flat_map(|t| t.partitions()) {
        assignment
            .add_partition_offset(topic, p.id(), Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&assignment).unwrap();
    let decoder =
        Decoder::new(RegistryDecoder::new(s.contract.require("SCHEMA_REGISTRY_URL")).unwrap())
            .with_default_format(Format::Avro);
    let parser = EnvelopeParser::default();
    let mut out = Vec::new();
    let deadline = Instant::now() + WAIT;
    while out.len() < at_least {
        assert!(
            Instant::now() < deadline,
            "only {} of {at_least} change events on {topic} after {WAIT:?}",
            out.len()
        );
        let Some(message) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let m = message.unwrap_or_else(|e| panic!("consuming {topic}: {e}"));
        let mut record = RawRecord::new(topic).at(m.partition(), m.offset());
        if let Some(k) = m.key() {
            record = record.with_key(k);
        }
        if let Some(v) = m.payload() {
            record = record.with_value(v);
        }
        let decoded = decoder
            .decode(&record)
            .await
            .unwrap_or_else(|e| panic!("{topic}@{}: {e}", m.offset()));
        match parser.parse(&decoded) {
            Ok(Event::Change(c)) => out.push(*c),
            Ok(_) => {}
            Err(e) => panic!("{topic}@{}: {e}", m.offset()),
        }
    }
    out
}

/// `changes` hold exactly `rows` snapshot reads, of distinct keys.
fn check_snapshot_reads(topic: &str, changes: &[Change], rows: usize) {
    let reads: Vec<&Change> = changes.iter().filter(|c| c.op == Op::Read).collect();
    assert_eq!(
        reads.len(),
        rows,
        "{topic}: {} snapshot reads for {rows} pre-existing rows",
        reads.len()
    );
    assert!(
        reads.iter().all(|c| c.source.snapshot.is_snapshot()),
        "{topic}: a read without the snapshot flag"
    );
    let keys: std::collections::BTreeSet<String> =
        reads.iter().map(|c| format!("{:?}", c.key)).collect();
    assert_eq!(
        keys.len(),
        rows,
        "{topic}: snapshot reads of duplicate keys"
    );
    assert!(
        changes.len() > rows || changes.iter().all(|c| c.op == Op::Read),
        "{topic}: events other than snapshot reads before any change: {:?}",
        changes.iter().map(|c| c.op).collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn initial_snapshot_of_existing_rows_then_streaming() {
    let s = Scenario::new("snap").await;
    let cleanup = s.cleanup_guard();
    s.sql(BEFORE_SNAPSHOT).await;
    let snapshot_counts: Vec<usize> = {
        let mut counts = Vec::new();
        for table in TABLES {
            let n: i64 =
                s.pg.query_one(&format!("SELECT count(*) FROM {}.{table}", s.schema), &[])
                    .await
                    .unwrap()
                    .get(0);
            counts.push(usize::try_from(n).unwrap());
        }
        counts
    };

    let id = s.schema.trim_start_matches("cdc_snap_").to_owned();
    let prefix = format!("snap_{id}");
    let connector = TempConnector::register(
        &s,
        &format!("cqrs-snap-{id}"),
        &prefix,
        &format!("snap_{id}"),
    )
    .await;
    connector.wait_running().await;

    let topic_regex = format!(r"{prefix}\.{}\..*", s.schema);
    let service = Running::start(SyncService::new(s.config_for_topics(
        &topic_regex,
        &s.group,
        PROJECTIONS,
    )));

    // The pre-existing rows arrive, exactly as they are now (not as they were inserted).
    wait_until_equal(&s, "the snapshot to equal the pre-existing rows").await;
    // On the topics: one snapshot read (op `r`, snapshot flag set) per pre-existing row and
    // nothing else (topics have several partitions: no order across keys is assumed).
    let topics: Vec<String> = TABLES
        .iter()
        .map(|t| format!("{prefix}.{}.{t}", s.schema))
        .collect();
    for (topic, rows) in topics.iter().zip(&snapshot_counts) {
        check_snapshot_reads(topic, &changes_on(&s, topic, *rows).await, *rows);
    }

    // Changes after the snapshot stream in on top of it.
    s.sql(AFTER_SNAPSHOT).await;
    wait_until_equal(&s, "post-snapshot changes to reach MongoDB").await;
    let items = changes_on(&s, &topics[0], snapshot_counts[0] + 3).await;
    let snapshot_version = items
        .iter()
        .filter(|c| c.op == Op::Read)
        .map(|c| c.version)
        .max()
        .unwrap();
    let mut streamed: Vec<(Op, Option<i32>)> = items
        .iter()
        .filter(|c| c.op != Op::Read)
        .map(|c| {
            assert!(
                !c.source.snapshot.is_snapshot() && c.version > snapshot_version,
                "a streamed change must be newer than the snapshot: {c:?}"
            );
            (c.op, c.key.as_ref().and_then(|k| k.get_i32("id").ok()))
        })
        .collect();
    streamed.sort_by_key(|(_, id)| *id);
    assert_eq!(
        streamed,
        vec![
            (Op::Update, Some(1)),
            (Op::Delete, Some(2)),
            (Op::Create, Some(1000))
        ],
        "the changes after the snapshot on {}",
        topics[0]
    );
    check_snapshot_reads(&topics[0], &items, snapshot_counts[0]);
    let tombstones: Vec<Document> = s
        .all_docs("items")
        .await
        .into_iter()
        .filter(|d| d.get_bool("_deleted") == Ok(true))
        .collect();
    assert_eq!(
        tombstones
            .iter()
            .map(|d| d.get("_id").cloned())
            .collect::<Vec<_>>(),
        vec![Some(Bson::Int32(2))],
        "only the row deleted after the snapshot leaves a tombstone"
    );

    service.stop().await;
    let dead = s.all_docs("_sync_dead_letters").await;
    assert!(dead.is_empty(), "dead-lettered messages: {dead:?}");

    let slot = format!("snap_{id}");
    connector
        .finish()
        .unwrap_or_else(|e| panic!("tearing down the temporary connector: {e}"));
    let left: i64 =
        s.pg.query_one(
            "SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0, "replication slot {slot} was not dropped");
    s.cleanup().await;
    cleanup.disarm();
}
