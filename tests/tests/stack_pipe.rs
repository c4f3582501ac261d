//! The pipe below the sync-service, against the real running stack.
//!
//! A row of a table in a captured schema (`cdc_.*` is in the Debezium connector's
//! `schema.include.list`) is inserted, updated and deleted in PostgreSQL. Debezium (in Kafka
//! Connect) turns each change into a change event, the real Confluent `AvroConverter` registers
//! its key and value schemas in the Schema Registry and encodes the event, and the event lands
//! in the Kafka topic `cqrs.<schema>.<table>`. This test consumes that topic with rdkafka and
//! decodes key and value with `schema_registry_converter`, then checks: a create (`c`) whose
//! `after` is the inserted row, an update (`u`) with the new values, a delete (`d`) whose
//! `before` is the updated row, and a tombstone (null value) for the key.
//!
//! It needs the stack (`make infrastructure-up`). When any endpoint of the `.env` contract
//! does not answer, it fails at once with a message naming each missing endpoint: it never
//! skips.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use apache_avro::types::Value as Avro;
use cqrs_e2e::{Contract, check_tcp, url_host_port};
use futures::FutureExt;
use rdkafka::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::types::RDKafkaErrorCode;
use schema_registry_converter::async_impl::avro::AvroDecoder;
use schema_registry_converter::async_impl::schema_registry::SrSettings;
use serde_json::Value as Json;

/// How long the events may take to arrive, from the first statement on.
const DEADLINE: Duration = Duration::from_secs(60);
/// Timeout of each preflight probe.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
const TABLE: &str = "items";

/// The endpoints of the stack, as the contract names them.
struct Stack {
    contract: Contract,
    bootstrap: String,
    registry_url: String,
    connect_url: String,
    http: reqwest::Client,
}

/// One row of the test table, as written and as expected back.
#[derive(Debug, Clone, PartialEq)]
struct Row {
    id: i64,
    name: String,
    quantity: i32,
    total: i64,
    active: bool,
    /// numeric(10,2), as its decimal text.
    price: String,
    /// timestamptz, as Debezium's `io.debezium.time.ZonedTimestamp` renders it (UTC).
    created_at: String,
    reference: uuid::Uuid,
    note: Option<String>,
}

/// A decoded Debezium change event.
#[derive(Debug)]
struct Change {
    key: Avro,
    op: String,
    before: Option<Row>,
    after: Option<Row>,
    source_schema: String,
    source_table: String,
    value_schema_id: u32,
}

/// A decoded change event or tombstone.
#[derive(Debug)]
enum Event {
    Change(Box<Change>),
    Tombstone { key: Avro },
}

impl Event {
    fn label(&self) -> String {
        match self {
            Event::Change(c) => format!("op={}", c.op),
            Event::Tombstone { .. } => "tombstone".to_owned(),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debezium_events_decode_through_the_registry() {
    let stack = preflight().await;

    let suffix = format!("{:08x}", rand::random::<u32>());
    let schema = format!("cdc_pipe_{suffix}");
    let topic = format!("cqrs.{schema}.{TABLE}");
    let pg = connect_postgres(&stack.contract).await;

    let result = std::panic::AssertUnwindSafe(run_pipe(&stack, &pg, &schema, &topic, &suffix))
        .catch_unwind()
        .await;

    // Leave nothing behind, whether the checks passed or not (DDL is not captured).
    if let Err(e) = pg
        .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
        .await
    {
        eprintln!("warning: could not drop schema {schema}: {e}");
    }
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

async fn run_pipe(
    stack: &Stack,
    pg: &tokio_postgres::Client,
    schema: &str,
    topic: &str,
    suffix: &str,
) {
    let inserted = Row {
        id: 1,
        name: "widget".to_owned(),
        quantity: 3,
        total: 9_000_000_000,
        active: true,
        price: "1234.56".to_owned(),
        created_at: "2024-03-15T10:20:30.123456Z".to_owned(),
        reference: uuid::Uuid::new_v4(),
        note: Some("first".to_owned()),
    };
    let updated = Row {
        id: 1,
        name: "widget v2".to_owned(),
        quantity: -7,
        total: -1,
        active: false,
        price: "-0.05".to_owned(),
        created_at: "2025-12-31T23:59:59.000001Z".to_owned(),
        reference: uuid::Uuid::new_v4(),
        note: None,
    };

    // What is written for created_at: the same instants, the first with another offset.
    let inserted_ts = "2024-03-15T12:20:30.123456+02:00";
    let updated_ts = "2025-12-31T23:59:59.000001+00:00";

    let started = Instant::now();
    let deadline = started + DEADLINE;
    pg.batch_execute(&format!(
        "CREATE SCHEMA {schema};
         CREATE TABLE {schema}.{TABLE} (
             id bigint PRIMARY KEY,
             name text NOT NULL,
             quantity integer NOT NULL,
             total bigint NOT NULL,
             active boolean NOT NULL,
             price numeric(10,2) NOT NULL,
             created_at timestamptz NOT NULL,
             reference uuid NOT NULL,
             note text
         );
         -- full before-images for updates and deletes
         ALTER TABLE {schema}.{TABLE} REPLICA IDENTITY FULL;"
    ))
    .await
    .unwrap_or_else(|e| panic!("creating {schema}.{TABLE} failed: {e}"));

    let n = pg
        .execute(
            &format!(
                "INSERT INTO {schema}.{TABLE}
                   (id, name, quantity, total, active, price, created_at, reference, note)
                 VALUES ($1, $2, $3, $4, $5, ($6::text)::numeric, ($7::text)::timestamptz, $8, $9)"
            ),
            &[
                &inserted.id,
                &inserted.name,
                &inserted.quantity,
                &inserted.total,
                &inserted.active,
                &inserted.price,
                &inserted_ts,
                &inserted.reference,
                &inserted.note,
            ],
        )
        .await
        .unwrap_or_else(|e| panic!("INSERT failed: {e}"));
    assert_eq!(n, 1);
    let n = pg
        .execute(
            &format!(
                "UPDATE {schema}.{TABLE} SET name = $2, quantity = $3, total = $4, active = $5,
                   price = ($6::text)::numeric, created_at = ($7::text)::timestamptz,
                   reference = $8, note = $9
                 WHERE id = $1"
            ),
            &[
                &updated.id,
                &updated.name,
                &updated.quantity,
                &updated.total,
                &updated.active,
                &updated.price,
                &updated_ts,
                &updated.reference,
                &updated.note,
            ],
        )
        .await
        .unwrap_or_else(|e| panic!("UPDATE failed: {e}"));
    assert_eq!(n, 1);
    let n = pg
        .execute(
            &format!("DELETE FROM {schema}.{TABLE} WHERE id = $1"),
            &[&updated.id],
        )
        .await
        .unwrap_or_else(|e| panic!("DELETE failed: {e}"));
    assert_eq!(n, 1);

    let consumer = consumer(&stack.bootstrap, suffix);
    wait_for_topic(&consumer, topic, deadline, &stack.connect_url).await;
    consumer
        .subscribe(&[topic])
        .unwrap_or_else(|e| panic!("subscribing to {topic} failed: {e}"));

    let sr = SrSettings::new_builder(stack.registry_url.clone())
        .no_proxy()
        .set_timeout(PROBE_TIMEOUT)
        .build()
        .unwrap_or_else(|e| panic!("schema registry client settings: {e}"));
    let decoder = AvroDecoder::new(sr);

    let mut events = Vec::new();
    while events.len() < 4 {
        let seen: Vec<String> = events.iter().map(Event::label).collect();
        let remaining = deadline.saturating_duration_since(Instant::now());
        let received = tokio::time::timeout(remaining, consumer.recv()).await;
        let msg = match received {
            Err(_) => panic!(
                "timed out after {DEADLINE:?} waiting for the change events of {schema}.{TABLE} \
                 on topic {topic} (broker {}): saw {seen:?}, expected [op=c, op=u, op=d, tombstone]",
                stack.bootstrap
            ),
            Ok(Err(KafkaError::MessageConsumption(
                code @ (RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::UnknownTopic),
            ))) => {
                eprintln!("consumer: {code:?} (topic not visible yet), retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            Ok(Err(e)) => panic!("consuming {topic} failed: {e} (saw {seen:?})"),
            Ok(Ok(msg)) => msg,
        };
        let key = decoder
            .decode_with_schema(msg.key())
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "decoding the key at offset {} failed: {e} (registry {})",
                    msg.offset(),
                    stack.registry_url
                )
            })
            .unwrap_or_else(|| panic!("the message at offset {} has no key", msg.offset()));
        let event = match msg.payload() {
            None => Event::Tombstone { key: key.value },
            Some(payload) => {
                let value = decoder
                    .decode_with_schema(Some(payload))
                    .await
                    .unwrap_or_else(|e| {
                        panic!(
                            "decoding the value at offset {} failed: {e} (registry {})",
                            msg.offset(),
                            stack.registry_url
                        )
                    })
                    .unwrap_or_else(|| panic!("empty value at offset {}", msg.offset()));
                let raw: Json = serde_json::from_str(&value.schema.raw)
                    .unwrap_or_else(|e| panic!("the value schema is not JSON: {e}"));
                change_event(key.value, &value.value, &raw, value.schema.id)
            }
        };
        eprintln!(
            "offset {}: {} after {:?}",
            msg.offset(),
            event.label(),
            started.elapsed()
        );
        events.push(event);
    }

    let labels: Vec<String> = events.iter().map(Event::label).collect();
    assert_eq!(
        labels,
        ["op=c", "op=u", "op=d", "tombstone"],
        "the events of topic {topic}, in order"
    );
    let expected_key = Avro::Record(vec![("id".to_owned(), Avro::Long(1))]);
    let mut value_schema_ids = Vec::new();
    for (event, (op, before, after)) in events.iter().zip([
        ("c", None, Some(&inserted)),
        ("u", Some(&inserted), Some(&updated)),
        ("d", Some(&updated), None),
    ]) {
        let Event::Change(change) = event else {
            panic!("expected a change event for op {op}, got {event:?}");
        };
        assert_eq!(change.op, op);
        assert_eq!(change.key, expected_key, "key of op {op}");
        assert_eq!(change.before.as_ref(), before, "before of op {op}");
        assert_eq!(change.after.as_ref(), after, "after of op {op}");
        assert_eq!(
            (change.source_schema.as_str(), change.source_table.as_str()),
            (schema, TABLE),
            "source of op {op}"
        );
        value_schema_ids.push(change.value_schema_id);
    }
    match &events[3] {
        Event::Tombstone { key } => assert_eq!(key, &expected_key, "key of the tombstone"),
        other => panic!("expected a tombstone, got {other:?}"),
    }

    // The AvroConverter registered both subjects (TopicNameStrategy) in the registry the
    // test decoded with, and the events carry the id registered for the value subject.
    let subjects: Vec<String> = get_json(&stack.http, &format!("{}/subjects", stack.registry_url))
        .await
        .and_then(|j| serde_json::from_value(j).map_err(|e| e.to_string()))
        .unwrap_or_else(|e| panic!("GET {}/subjects: {e}", stack.registry_url));
    for subject in [format!("{topic}-key"), format!("{topic}-value")] {
        assert!(
            subjects.contains(&subject),
            "subject {subject} is not registered; subjects: {subjects:?}"
        );
    }
    let latest = get_json(
        &stack.http,
        &format!(
            "{}/subjects/{topic}-value/versions/latest",
            stack.registry_url
        ),
    )
    .await
    .unwrap_or_else(|e| panic!("latest value schema of {topic}: {e}"));
    let registered_id = latest["id"].as_u64().unwrap_or_default();
    assert!(
        value_schema_ids
            .iter()
            .all(|id| u64::from(*id) == registered_id),
        "events carry schema ids {value_schema_ids:?}, the registry has {registered_id} for {topic}-value"
    );
    eprintln!(
        "create, update, delete and tombstone of {schema}.{TABLE} decoded in {:?}",
        started.elapsed()
    );
}

/// Checks every endpoint the test needs; panics naming all that do not answer.
async fn preflight() -> Stack {
    let contract = Contract::load();
    let http = reqwest::Client::builder()
        .timeout(PROBE_TIMEOUT)
        .no_proxy()
        .build()
        .unwrap_or_else(|e| panic!("HTTP client: {e}"));
    let bootstrap = contract.require("KAFKA_BOOTSTRAP_SERVERS").to_owned();
    let registry_url = contract
        .require("SCHEMA_REGISTRY_URL")
        .trim_end_matches('/')
        .to_owned();
    let connect_url = contract
        .require("KAFKA_CONNECT_URL")
        .trim_end_matches('/')
        .to_owned();
    let mut missing = Vec::new();

    let pg = format!(
        "{}:{}",
        contract.require("POSTGRES_HOST"),
        contract.require("POSTGRES_PORT")
    );
    if let Err(e) = check_tcp(&pg, PROBE_TIMEOUT) {
        missing.push(format!(
            "PostgreSQL at {pg} ({}, {}): {e}",
            contract.describe("POSTGRES_HOST"),
            contract.describe("POSTGRES_PORT")
        ));
    }
    for server in bootstrap
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        if let Err(e) = check_tcp(server, PROBE_TIMEOUT) {
            missing.push(format!(
                "Kafka broker at {server} ({}): {e}",
                contract.describe("KAFKA_BOOTSTRAP_SERVERS")
            ));
        }
    }
    if let Err(e) = get_json(&http, &format!("{registry_url}/subjects")).await {
        missing.push(format!(
            "Schema Registry at {registry_url} ({}): GET /subjects: {e}",
            contract.describe("SCHEMA_REGISTRY_URL")
        ));
    }
    match get_json(
        &http,
        &format!("{connect_url}/connectors?expand=status&expand=info"),
    )
    .await
    {
        Err(e) => missing.push(format!(
            "Kafka Connect at {connect_url} ({}): GET /connectors: {e}",
            contract.describe("KAFKA_CONNECT_URL")
        )),
        Ok(connectors) => {
            if let Err(e) = running_postgres_connector(&connectors) {
                missing.push(format!(
                    "Debezium PostgreSQL connector in Kafka Connect at {connect_url}: {e}"
                ));
            }
        }
    }
    if !missing.is_empty() {
        panic!(
            "the stack is not up (start it with `make infrastructure-up`); not answering:\n  - {}",
            missing.join("\n  - ")
        );
    }
    if url_host_port(&registry_url).is_none() {
        panic!("SCHEMA_REGISTRY_URL={registry_url} is not an http(s) URL");
    }
    Stack {
        contract,
        bootstrap,
        registry_url,
        connect_url,
        http,
    }
}

/// Finds a RUNNING `PostgresConnector` with a RUNNING task in an expanded `/connectors` reply.
fn running_postgres_connector(connectors: &Json) -> Result<String, String> {
    let map = connectors
        .as_object()
        .ok_or_else(|| format!("unexpected /connectors reply: {connectors}"))?;
    let mut found = Vec::new();
    for (name, c) in map {
        let class = c["info"]["config"]["connector.class"]
            .as_str()
            .unwrap_or_default();
        if !class.ends_with("PostgresConnector") {
            continue;
        }
        let state = c["status"]["connector"]["state"].as_str().unwrap_or("?");
        let tasks: Vec<&str> = c["status"]["tasks"]
            .as_array()
            .map(|ts| {
                ts.iter()
                    .map(|t| t["state"].as_str().unwrap_or("?"))
                    .collect()
            })
            .unwrap_or_default();
        if state == "RUNNING" && !tasks.is_empty() && tasks.iter().all(|t| *t == "RUNNING") {
            let include = c["info"]["config"]["schema.include.list"]
                .as_str()
                .unwrap_or("(all)");
            eprintln!("connector {name}: RUNNING, schema.include.list={include}");
            return Ok(name.clone());
        }
        found.push(format!("{name}: connector {state}, tasks {tasks:?}"));
    }
    if found.is_empty() {
        Err(format!(
            "no PostgresConnector is registered (connectors: {:?})",
            map.keys().collect::<Vec<_>>()
        ))
    } else {
        Err(format!("not RUNNING: {}", found.join("; ")))
    }
}

async fn get_json(http: &reqwest::Client, url: &str) -> Result<Json, String> {
    let resp = http.get(url).send().await.map_err(|e| error_chain(&e))?;
    let status = resp.status();
    let text = resp.text().await.map_err(|e| error_chain(&e))?;
    if !status.is_success() {
        return Err(format!("HTTP {status}: {text}"));
    }
    serde_json::from_str(&text).map_err(|e| format!("not JSON ({e}): {text}"))
}

/// `error: cause: cause...`: reqwest's Display leaves out why a request failed.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

async fn connect_postgres(contract: &Contract) -> tokio_postgres::Client {
    let port: u16 = contract
        .require("POSTGRES_PORT")
        .parse()
        .unwrap_or_else(|e| panic!("{}: {e}", contract.describe("POSTGRES_PORT")));
    let mut config = tokio_postgres::Config::new();
    config
        .host(contract.require("POSTGRES_HOST"))
        .port(port)
        .user(contract.require("POSTGRES_USER"))
        .password(contract.require("POSTGRES_PASSWORD"))
        .dbname(contract.require("POSTGRES_DB"))
        .application_name("cqrs-e2e-stack-pipe")
        .connect_timeout(PROBE_TIMEOUT);
    let (client, connection) = config
        .connect(tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "PostgreSQL: cannot log in as {} to {} ({}): {e}",
                contract.describe("POSTGRES_USER"),
                contract.describe("POSTGRES_DB"),
                contract.describe("POSTGRES_HOST")
            )
        });
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            eprintln!("PostgreSQL connection: {e}");
        }
    });
    client
}

fn consumer(bootstrap: &str, suffix: &str) -> StreamConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", format!("cqrs-e2e-stack-pipe-{suffix}"))
        .set("client.id", "cqrs-e2e-stack-pipe")
        .set("auto.offset.reset", "earliest")
        // a new group waits about half of this before it joins (tansu)
        .set("session.timeout.ms", "6000")
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_uncommitted")
        .set("topic.metadata.refresh.interval.ms", "1000")
        .create()
        .unwrap_or_else(|e| panic!("creating the Kafka consumer for {bootstrap} failed: {e}"))
}

/// Waits until the broker lists `topic` (Debezium creates it with the first event).
async fn wait_for_topic(
    consumer: &StreamConsumer,
    topic: &str,
    deadline: Instant,
    connect_url: &str,
) {
    loop {
        let metadata = tokio::task::block_in_place(|| consumer.fetch_metadata(None, PROBE_TIMEOUT));
        let names: Vec<String> = match &metadata {
            Ok(m) => m.topics().iter().map(|t| t.name().to_owned()).collect(),
            Err(e) => {
                eprintln!("metadata: {e}");
                Vec::new()
            }
        };
        if names.iter().any(|n| n == topic) {
            return;
        }
        if Instant::now() >= deadline {
            let cdc: Vec<&String> = names.iter().filter(|n| n.starts_with("cqrs.")).collect();
            panic!(
                "topic {topic} did not appear within {DEADLINE:?}: Debezium did not capture the \
                 changes (check the connector at {connect_url}, its schema.include.list and the \
                 publication); cqrs.* topics in the broker: {cdc:?}; metadata: {:?}",
                metadata.err()
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Decodes a Debezium envelope: `op`, `before`, `after`, `source`.
fn change_event(key: Avro, value: &Avro, raw: &Json, schema_id: u32) -> Event {
    let fields = record_fields(value);
    let op = match fields.get("op") {
        Some(Avro::String(s)) => s.clone(),
        other => panic!("the envelope has no string op: {other:?}"),
    };
    let row_schema = row_schema(raw);
    let row = |name: &str| match fields.get(name).map(unwrap_union) {
        None | Some(Avro::Null) => None,
        Some(v) => Some(decode_row(v, &row_schema)),
    };
    let source = fields
        .get("source")
        .map(|v| record_fields(unwrap_union(v)))
        .unwrap_or_default();
    let text = |name: &str| match source.get(name).map(unwrap_union) {
        Some(Avro::String(s)) => s.clone(),
        other => panic!("source.{name} is not a string: {other:?}"),
    };
    Event::Change(Box::new(Change {
        key,
        op,
        before: row("before"),
        after: row("after"),
        source_schema: text("schema"),
        source_table: text("table"),
        value_schema_id: schema_id,
    }))
}

/// The field schemas of the row record (`before`/`after`), by column name, from the raw
/// schema: semantic types (`connect.name`) and decimal scales are only there (the Avro
/// parser drops them from primitive types).
fn row_schema(raw: &Json) -> BTreeMap<String, Json> {
    let envelope_fields = raw["fields"]
        .as_array()
        .unwrap_or_else(|| panic!("the value schema is not a record: {raw}"));
    let record = envelope_fields
        .iter()
        .filter(|f| f["name"] == "before" || f["name"] == "after")
        .flat_map(|f| match &f["type"] {
            Json::Array(branches) => branches.clone(),
            other => vec![other.clone()],
        })
        .find(|t| t["type"] == "record")
        .unwrap_or_else(|| panic!("no row record in the value schema: {raw}"));
    record["fields"]
        .as_array()
        .map(|fs| {
            fs.iter()
                .filter_map(|f| Some((f["name"].as_str()?.to_owned(), f["type"].clone())))
                .collect()
        })
        .unwrap_or_default()
}

/// The non-null branch of a field type that may be a `["null", T]` union.
fn non_null_type(t: &Json) -> &Json {
    match t {
        Json::Array(branches) => branches.iter().find(|b| *b != "null").unwrap_or(t),
        other => other,
    }
}

fn decode_row(value: &Avro, schema: &BTreeMap<String, Json>) -> Row {
    let fields = record_fields(value);
    let get = |name: &str| -> &Avro {
        fields
            .get(name)
            .map(unwrap_union)
            .unwrap_or_else(|| panic!("the row has no column {name}: {value:?}"))
    };
    let field_type = |name: &str| -> &Json {
        non_null_type(
            schema
                .get(name)
                .unwrap_or_else(|| panic!("the schema has no column {name}")),
        )
    };
    let connect_name = |name: &str| {
        field_type(name)["connect.name"]
            .as_str()
            .unwrap_or_default()
    };

    // Semantic types come from the raw schema, not from the decoded value.
    assert_eq!(
        connect_name("created_at"),
        "io.debezium.time.ZonedTimestamp",
        "created_at's semantic type"
    );
    assert_eq!(
        connect_name("reference"),
        "io.debezium.data.Uuid",
        "reference's semantic type"
    );
    let price_type = field_type("price");
    let scale = price_type["scale"]
        .as_u64()
        .or_else(|| {
            price_type["connect.parameters"]["scale"]
                .as_str()
                .and_then(|s| s.parse().ok())
        })
        .unwrap_or_else(|| panic!("price has no decimal scale in the schema: {price_type}"));

    Row {
        id: match get("id") {
            Avro::Long(v) => *v,
            other => panic!("id: {other:?}"),
        },
        name: string(get("name"), "name"),
        quantity: match get("quantity") {
            Avro::Int(v) => *v,
            other => panic!("quantity: {other:?}"),
        },
        total: match get("total") {
            Avro::Long(v) => *v,
            other => panic!("total: {other:?}"),
        },
        active: match get("active") {
            Avro::Boolean(v) => *v,
            other => panic!("active: {other:?}"),
        },
        price: decimal_text(get("price"), u32::try_from(scale).unwrap_or(0)),
        created_at: string(get("created_at"), "created_at"),
        reference: string(get("reference"), "reference")
            .parse()
            .unwrap_or_else(|e| panic!("reference is not a UUID: {e}")),
        note: match get("note") {
            Avro::Null => None,
            Avro::String(s) => Some(s.clone()),
            other => panic!("note: {other:?}"),
        },
    }
}

fn string(v: &Avro, what: &str) -> String {
    match v {
        Avro::String(s) => s.clone(),
        Avro::Uuid(u) => u.to_string(),
        other => panic!("{what} is not a string: {other:?}"),
    }
}

/// Renders a decimal column as text: `Value::Decimal` / `Value::Bytes` hold the unscaled
/// big-endian two's-complement integer, the scale comes from the schema.
fn decimal_text(v: &Avro, scale: u32) -> String {
    let bytes: Vec<u8> = match v {
        Avro::Decimal(d) => Vec::<u8>::try_from(d).unwrap_or_else(|e| panic!("decimal bytes: {e}")),
        Avro::Bytes(b) => b.clone(),
        Avro::String(s) => return s.clone(),
        other => panic!("price is not a decimal: {other:?}"),
    };
    assert!(
        !bytes.is_empty() && bytes.len() <= 16,
        "decimal of {} bytes",
        bytes.len()
    );
    let fill = if bytes[0] & 0x80 != 0 { 0xff } else { 0 };
    let mut buf = [fill; 16];
    buf[16 - bytes.len()..].copy_from_slice(&bytes);
    let unscaled = i128::from_be_bytes(buf);
    let digits = unscaled.unsigned_abs().to_string();
    let scale = scale as usize;
    let padded = format!("{digits:0>width$}", width = scale + 1);
    let (int, frac) = padded.split_at(padded.len() - scale);
    let sign = if unscaled < 0 { "-" } else { "" };
    if scale == 0 {
        format!("{sign}{int}")
    } else {
        format!("{sign}{int}.{frac}")
    }
}

fn record_fields(v: &Avro) -> BTreeMap<String, Avro> {
    match unwrap_union(v) {
        Avro::Record(fields) => fields.iter().cloned().collect(),
        other => panic!("expected a record, got {other:?}"),
    }
}

fn unwrap_union(v: &Avro) -> &Avro {
    match v {
        Avro::Union(_, inner) => unwrap_union(inner),
        other => other,
    }
}

#[test]
fn decimal_text_renders_scale_and_sign() {
    let d = |n: i64| Avro::Decimal(apache_avro::Decimal::from(n.to_be_bytes()));
    assert_eq!(decimal_text(&d(123_456), 2), "1234.56");
    assert_eq!(decimal_text(&d(-5), 2), "-0.05");
    assert_eq!(decimal_text(&d(7), 0), "7");
    assert_eq!(decimal_text(&Avro::Bytes(vec![0xff, 0x38]), 1), "-20.0");
}
