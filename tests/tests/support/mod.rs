//! Shared pieces of the sync-service end-to-end tests: a throw-away PostgreSQL schema
//! captured by the stack's Debezium connector, a throw-away MongoDB database, and an
//! embedded sync-service consuming the schema's topics.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod picky;
pub mod process;

use std::future::Future;
use std::time::{Duration, Instant};

use bson::{Document, doc};
use cqrs_e2e::Contract;
use futures::TryStreamExt;
use sync_service::SyncService;
use sync_service::config::SyncConfig;
use sync_service::metrics::{Metrics, TopicLabel};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Confluent wire-format bytes claiming a schema id no registry knows: undecodable.
pub const CORRUPT: &[u8] = &[0, 0x7f, 0xff, 0xff, 0xf0, 1, 2, 3];

/// A free TCP port on 127.0.0.1.
pub use cqrs_test_support::net::free_port;

/// A random lowercase suffix for names.
pub fn suffix() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..10].to_owned()
}

/// Connects to the stack's PostgreSQL as the admin; panics loudly when it is not up.
pub async fn postgres(contract: &Contract) -> tokio_postgres::Client {
    let url = contract.require("DATABASE_URL");
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "PostgreSQL of the stack is not reachable ({}): {e}; run `make infrastructure-up`",
                contract.describe("DATABASE_URL")
            )
        });
    tokio::spawn(connection);
    client
}

/// Connects to the stack's MongoDB; panics loudly when it is not up.
pub async fn mongo(contract: &Contract) -> mongodb::Client {
    let uri = contract.require("MONGODB_URI");
    let client = mongodb::Client::with_uri_str(uri)
        .await
        .expect("MongoDB URI");
    client
        .database("admin")
        .run_command(doc! { "ping": 1 })
        .await
        .unwrap_or_else(|e| {
            panic!(
                "MongoDB of the stack is not reachable ({}): {e}; run `make infrastructure-up`",
                contract.describe("MONGODB_URI")
            )
        });
    client
}

/// Panics unless Kafka Connect runs the stack's Debezium connector.
pub async fn require_connector(contract: &Contract) {
    let url = format!(
        "{}/connectors?expand=status",
        contract.require("KAFKA_CONNECT_URL")
    );
    let body: serde_json::Value = match reqwest::get(&url).await {
        Ok(r) => r.json().await.unwrap_or_default(),
        Err(e) => {
            panic!("Kafka Connect is not reachable at {url}: {e}; run `make infrastructure-up`")
        }
    };
    let running = body
        .as_object()
        .map(|o| {
            o.values().any(|c| {
                c["status"]["connector"]["state"] == "RUNNING"
                    && c["status"]["tasks"]
                        .as_array()
                        .is_some_and(|t| t.iter().all(|t| t["state"] == "RUNNING"))
            })
        })
        .unwrap_or(false);
    assert!(
        running,
        "no RUNNING Debezium connector in Kafka Connect ({url}): {body}"
    );
}

/// Polls `check` until it returns `Some` or the timeout passes.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    until(what, timeout, || {
        let next = check();
        async move { next.await.ok_or_else(String::new) }
    })
    .await
}

/// Polls `check` until it returns `Ok` or the timeout passes; the panic shows the last
/// `Err` (what was seen instead).
pub async fn until<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        match check().await {
            Ok(value) => return value,
            Err(seen) if Instant::now() >= deadline => {
                panic!("timed out after {timeout:?} waiting for {what}; last seen: {seen}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// A test's schema (captured by the stack's connector: `cdc_*`) and read database.
pub struct Scenario {
    pub contract: Contract,
    pub pg: tokio_postgres::Client,
    pub mongo: mongodb::Client,
    pub schema: String,
    pub database: String,
    pub group: String,
    pub dlq_topic: String,
}

impl Scenario {
    /// Sends raw bytes to `topic`, as a misbehaving or re-sending producer would; returns
    /// the partition and offset they landed at.
    pub async fn send_raw(&self, topic: &str, key: &[u8], value: &[u8]) -> (i32, i64) {
        let producer: rdkafka::producer::FutureProducer = rdkafka::ClientConfig::new()
            .set(
                "bootstrap.servers",
                self.contract.require("KAFKA_BOOTSTRAP_SERVERS"),
            )
            .create()
            .unwrap();
        let delivery = producer
            .send(
                rdkafka::producer::FutureRecord::to(topic)
                    .key(key)
                    .payload(value),
                Duration::from_secs(10),
            )
            .await
            .unwrap();
        (delivery.partition, delivery.offset)
    }

    /// A consumer of `topic` from its beginning, in a throw-away group of its own
    /// (`<group>-<name>`) that commits nothing.
    pub fn reader(&self, topic: &str, name: &str) -> rdkafka::consumer::StreamConsumer {
        use rdkafka::consumer::Consumer;
        let consumer: rdkafka::consumer::StreamConsumer = rdkafka::ClientConfig::new()
            .set(
                "bootstrap.servers",
                self.contract.require("KAFKA_BOOTSTRAP_SERVERS"),
            )
            .set("group.id", format!("{}-{name}", self.group))
            .set("auto.offset.reset", "earliest")
            .set("enable.auto.commit", "false")
            .set("session.timeout.ms", "6000")
            .create()
            .unwrap();
        consumer.subscribe(&[topic]).unwrap();
        consumer
    }

    pub async fn new(name: &str) -> Self {
        let contract = Contract::load();
        let pg = postgres(&contract).await;
        let mongo = mongo(&contract).await;
        require_connector(&contract).await;
        let id = suffix();
        let schema = format!("cdc_{name}_{id}");
        pg.batch_execute(&format!("CREATE SCHEMA {schema}"))
            .await
            .unwrap();
        Scenario {
            contract,
            pg,
            mongo,
            database: format!("sync_{name}_{id}"),
            group: format!("sync-{name}-{id}"),
            dlq_topic: format!("sync-dlq-{name}-{id}"),
            schema,
        }
    }

    /// Runs SQL with `{s}` standing for the schema.
    pub async fn sql(&self, sql: &str) {
        self.pg
            .batch_execute(&sql.replace("{s}", &self.schema))
            .await
            .unwrap_or_else(|e| panic!("SQL failed: {e}\n{sql}"));
    }

    /// The topic Debezium writes `table` to.
    pub fn topic(&self, table: &str) -> String {
        format!("cqrs.{}.{table}", self.schema)
    }

    /// A sync config consuming this schema's topics into this database, with the given
    /// `[[projection]]` sections (`{s}` stands for the schema).
    pub fn config(&self, projections: &str) -> SyncConfig {
        self.config_with_group(&self.group, projections)
    }

    pub fn config_with_group(&self, group: &str, projections: &str) -> SyncConfig {
        self.config_for_topics(&format!(r"cqrs\.{}\..*", self.schema), group, projections)
    }

    /// A sync config consuming the topics matching `topic_regex` (librdkafka syntax,
    /// without the leading `^`) with consumer group `group` into this database, with the
    /// given `[[projection]]` sections (`{s}` stands for the schema).
    pub fn config_for_topics(
        &self,
        topic_regex: &str,
        group: &str,
        projections: &str,
    ) -> SyncConfig {
        let text = self.sync_toml(
            topic_regex,
            group,
            "max_size = 200\nmax_wait_ms = 20",
            "",
            projections,
        );
        SyncConfig::from_toml_str(&text).unwrap_or_else(|e| panic!("test config invalid: {e}"))
    }

    /// The `sync.toml` of a sync-service process ([`process::SyncProcess::start`] fills in
    /// `{listen}`): this schema's topics, consumer group `group`, 4 workers, batches
    /// of 500, and the given `[[projection]]` sections (`{s}` stands for the schema).
    pub fn process_config_text(&self, group: &str, projections: &str) -> String {
        self.sync_toml(
            &format!(r"cqrs\.{}\..*", self.schema),
            group,
            "max_size = 500\nmax_wait_ms = 20\nworkers = 4",
            "{listen}",
            projections,
        )
    }

    /// The one `sync.toml` text of the tests: this scenario's stack, database and
    /// dead-letter topic, the topics matching `topic_regex` (librdkafka syntax, without the
    /// leading `^`), consumer group `group`, the `[batch]` lines `batch`, the HTTP address
    /// `listen` and the `[[projection]]` sections (`{s}` stands for the schema).
    fn sync_toml(
        &self,
        topic_regex: &str,
        group: &str,
        batch: &str,
        listen: &str,
        projections: &str,
    ) -> String {
        format!(
            r#"
[kafka]
bootstrap_servers = "{kafka}"
group_id = "{group}"
topic_regex = "{topic_regex}"
session_timeout_ms = 6000
[kafka.properties]
"topic.metadata.refresh.interval.ms" = "500"
[schema_registry]
url = "{registry}"
[mongodb]
uri = "{mongo}"
database = "{database}"
[batch]
{batch}
[retry]
initial_backoff_ms = 50
max_backoff_ms = 1000
[dead_letter]
topic = "{dlq}"
[http]
listen = "{listen}"
{projections}
"#,
            kafka = self.contract.require("KAFKA_BOOTSTRAP_SERVERS"),
            registry = self.contract.require("SCHEMA_REGISTRY_URL"),
            mongo = self.contract.require("MONGODB_URI"),
            topic_regex = topic_regex.replace('\\', "\\\\"),
            database = self.database,
            dlq = self.dlq_topic,
            projections = projections.replace("{s}", &self.schema),
        )
    }

    /// Every document of a collection (tombstones included), by `_id`.
    ///
    /// A read model is a view hiding tombstones over its live version (cqrs_mongo::layout):
    /// this reads the live version itself, tombstones included.
    pub async fn all_docs(&self, collection: &str) -> Vec<Document> {
        let database = self.mongo.database(&self.database);
        let physical = database
            .collection::<Document>("_read_models")
            .find_one(doc! { "_id": collection })
            .await
            .unwrap()
            .and_then(|layout| layout.get_str("live").ok().map(str::to_owned))
            .unwrap_or_else(|| collection.to_owned());
        database
            .collection::<Document>(&physical)
            .find(doc! {})
            .sort(doc! { "_id": 1 })
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap()
    }

    /// Live documents (no tombstones) of a collection, by `_id`.
    pub async fn live_docs(&self, collection: &str) -> Vec<Document> {
        self.all_docs(collection)
            .await
            .into_iter()
            .filter(|d| !d.get_bool("_deleted").unwrap_or(false))
            .collect()
    }

    /// What a plain `find({})` on the read model's name returns (its view), by `_id`.
    pub async fn view_docs(&self, collection: &str) -> Vec<Document> {
        self.mongo
            .database(&self.database)
            .collection::<Document>(collection)
            .find(doc! {})
            .sort(doc! { "_id": 1 })
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap()
    }

    pub async fn cleanup(&self) {
        let _ = self
            .pg
            .batch_execute(&format!("DROP SCHEMA IF EXISTS {} CASCADE", self.schema))
            .await;
        let _ = self.mongo.database(&self.database).drop().await;
    }
}

/// An embedded sync-service running on its own task.
pub struct Running {
    pub shutdown: CancellationToken,
    pub metrics: Metrics,
    handle: JoinHandle<Result<(), sync_service::ServiceError>>,
}

impl Running {
    pub fn start(service: SyncService) -> Self {
        let shutdown = CancellationToken::new();
        let metrics = service.metrics();
        let token = shutdown.clone();
        let handle = tokio::spawn(async move { service.run(token).await });
        Running {
            shutdown,
            metrics,
            handle,
        }
    }

    /// Messages consumed from `topic` so far.
    pub fn consumed(&self, topic: &str) -> u64 {
        self.metrics
            .consumed
            .get_or_create(&TopicLabel {
                topic: topic.to_owned(),
            })
            .get()
    }

    /// Stops it gracefully; panics if it failed.
    pub async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(30), self.handle)
            .await
            .expect("sync-service did not stop within 30 s")
            .expect("sync-service task panicked")
            .expect("sync-service returned an error");
    }
}

/// Drops a scenario's schema and MongoDB database when dropped, also when the test panics
/// (on a thread of its own: `Drop` cannot await). Disarmed by [`CleanupGuard::disarm`].
pub struct CleanupGuard {
    database_url: String,
    mongo_uri: String,
    schema: String,
    database: String,
    armed: bool,
}

impl Scenario {
    /// A guard that removes this scenario's schema and database even if the test fails.
    pub fn cleanup_guard(&self) -> CleanupGuard {
        CleanupGuard {
            database_url: self.contract.require("DATABASE_URL").to_owned(),
            mongo_uri: self.contract.require("MONGODB_URI").to_owned(),
            schema: self.schema.clone(),
            database: self.database.clone(),
            armed: true,
        }
    }
}

impl CleanupGuard {
    /// Nothing to do any more (the test cleaned up itself).
    pub fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for CleanupGuard {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let (url, uri) = (self.database_url.clone(), self.mongo_uri.clone());
        let (schema, database) = (self.schema.clone(), self.database.clone());
        let cleanup = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                if let Ok((pg, conn)) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await {
                    tokio::spawn(conn);
                    if let Err(e) = pg
                        .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
                        .await
                    {
                        eprintln!("cleanup: dropping schema {schema} failed: {e}");
                    }
                }
                if let Ok(client) = mongodb::Client::with_uri_str(&uri).await {
                    let _ = client.database(&database).drop().await;
                }
            });
        });
        let _ = cleanup.join();
    }
}
