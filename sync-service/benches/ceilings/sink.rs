//! Debezium's MongoDB sink, in the stack's Kafka Connect.

use super::*;

pub(crate) struct Sink {
    pub(crate) url: String,
    pub(crate) name: String,
}

impl Sink {
    pub(crate) async fn register(
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

    pub(crate) async fn failed(&self) -> Option<String> {
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
pub(crate) fn java_uri(uri: &str) -> String {
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

pub(crate) struct SinkRun {
    pub(crate) rate: Rate,
    pub(crate) cpu: Option<f64>,
    /// What the documents say after the run, against what the load leaves.
    pub(crate) check: String,
}

pub(crate) async fn run_sink(
    env: &Env,
    mongo: &mongodb::Client,
    topic: &str,
    load: &Load,
) -> SinkRun {
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
    let rate = match load.shape {
        // Its documents come and go: time it on its consumer group's commits instead.
        Shape::Deletes { .. } => {
            polls = 1;
            measure_by_commits(env, &format!("connect-{}", sink.name), topic, load, cap).await
        }
        _ => measure(&coll, load, cap, |_| polls += 1).await,
    };
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

/// The sink's rate from its consumer group's committed offsets, polled every 100 ms (one
/// client, on a blocking thread): from the first commit to the commit of the topic's end.
/// Commits come every second, so the figure is good to about a second of the run's length
/// (the first second is not counted).
async fn measure_by_commits(
    env: &Env,
    group: &str,
    topic: &str,
    load: &Load,
    cap: Duration,
) -> Rate {
    let progress = GroupProgress::new(env, group, topic);
    let events = load.events();
    tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let mut first: Option<Instant> = None;
        loop {
            let read = progress.as_ref().and_then(GroupProgress::read);
            let now = Instant::now();
            if let Some((done, end)) = read {
                if done > 0 && first.is_none() {
                    first = Some(now);
                }
                if end > 0 && done >= end {
                    return Rate {
                        events,
                        complete: true,
                        steady: now - first.unwrap_or(now),
                    };
                }
            }
            if started.elapsed() > cap {
                return Rate {
                    events: 0,
                    complete: false,
                    steady: now - first.unwrap_or(now),
                };
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    })
    .await
    .unwrap()
}
