//! The topics: waiting for them, draining them bare, Debezium's rate.

use super::*;

pub(crate) struct Drain {
    /// Messages with a value.
    pub(crate) events: u64,
    /// Bare consumer: messages/s from the first message to the last.
    pub(crate) consumer_per_sec: f64,
    /// Debezium: messages over the spread of their broker timestamps.
    pub(crate) debezium_per_sec: f64,
}

/// Waits until `topic` holds `expected` events (reading it), then drains it again with a
/// fresh bare consumer, timed.
pub(crate) async fn wait_and_drain(env: &Env, topic: &str, expected: u64) -> Drain {
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

pub(crate) fn kafka_consumer(env: &Env) -> rdkafka::ClientConfig {
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

/// Offsets of a topic committed by a consumer group, summed over its partitions, against
/// the sum of their high watermarks: how far a consumer that only commits (Kafka Connect's
/// sink tasks, every `offset.flush.interval.ms`, 1 s in the stack) has come.
pub(crate) struct GroupProgress {
    consumer: BaseConsumer,
    topic: String,
    partitions: Vec<i32>,
}

impl GroupProgress {
    /// A client of group `group` (it never joins it) and the partitions of `topic`.
    pub(crate) fn new(env: &Env, group: &str, topic: &str) -> Option<Self> {
        let consumer: BaseConsumer = kafka_consumer(env).set("group.id", group).create().ok()?;
        let metadata = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(5))
            .ok()?;
        let partitions = metadata
            .topics()
            .first()?
            .partitions()
            .iter()
            .map(|p| p.id())
            .collect();
        Some(GroupProgress {
            consumer,
            topic: topic.to_owned(),
            partitions,
        })
    }

    /// (committed, end) now.
    pub(crate) fn read(&self) -> Option<(i64, i64)> {
        let timeout = Duration::from_secs(5);
        let mut list = rdkafka::TopicPartitionList::new();
        let mut end = 0;
        for &p in &self.partitions {
            list.add_partition(&self.topic, p);
            end += self
                .consumer
                .fetch_watermarks(&self.topic, p, timeout)
                .ok()?
                .1;
        }
        let committed = self.consumer.committed_offsets(list, timeout).ok()?;
        let done = committed
            .elements()
            .iter()
            .map(|e| match e.offset() {
                rdkafka::Offset::Offset(o) => o,
                _ => 0,
            })
            .sum();
        Some((done, end))
    }
}
