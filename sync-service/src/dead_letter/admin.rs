//! Operator commands on dead letters: list, replay (after a fix), skip.

use std::collections::HashSet;
use std::time::Duration;

use bson::doc;
use cqrs_kafka::Record;
use futures::StreamExt;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message, OwnedMessage};
use rdkafka::{Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use super::{DeadLetter, DeadLetterError, LetterStore, MongoLetters, Status, headers};
use crate::config::SyncConfig;
use crate::map::Projections;
use crate::runtime::{assemble, connect_mongo};
use crate::service::ServiceError;

/// Which dead letters a command acts on.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// Only these ids (`topic/partition/offset`); all pending when empty.
    pub ids: Vec<String>,
    /// Only dead letters of this source topic.
    pub topic: Option<String>,
}

impl Selection {
    fn filter(&self) -> bson::Document {
        let mut filter = doc! {};
        if !self.ids.is_empty() {
            filter.insert("_id", doc! { "$in": &self.ids });
        }
        if let Some(topic) = &self.topic {
            filter.insert("topic", topic);
        }
        filter
    }
}

/// Result of a replay.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReplayReport {
    /// Dead letters applied and resolved.
    pub replayed: usize,
    /// Dead letters that failed again (still pending).
    pub still_failing: usize,
    /// Selected dead letters whose bytes were not found in the dead-letter topic.
    pub missing: usize,
}

/// The records of `config` (through Vault with the `[vault]` section), and what must live
/// as long as they are used.
async fn letters(
    config: &SyncConfig,
) -> Result<(MongoLetters, crate::runtime::KeepAlive), ServiceError> {
    let (mongo, keep_alive) = connect_mongo(config).await?;
    let letters = MongoLetters::new(mongo, config.mongodb.dead_letter_collection.clone());
    Ok((letters, keep_alive))
}

/// Pending dead letters matching `selection`, oldest first.
pub async fn list(
    config: &SyncConfig,
    selection: &Selection,
) -> Result<Vec<DeadLetter>, ServiceError> {
    let (letters, _keep_alive) = letters(config).await?;
    Ok(letters.pending(selection.filter()).await?)
}

/// Marks the selected pending dead letters skipped: their keys flow again.
pub async fn skip(config: &SyncConfig, selection: &Selection) -> Result<u64, ServiceError> {
    let (letters, _keep_alive) = letters(config).await?;
    let ids: Vec<String> = letters
        .pending(selection.filter())
        .await?
        .into_iter()
        .map(|d| d.id)
        .collect();
    if ids.is_empty() {
        return Ok(0);
    }
    Ok(letters.resolve(&ids, Status::Skipped).await?)
}

/// Re-processes the selected dead letters in their original order through `projections`
/// (see [`SyncService::replay_dead_letters`](crate::SyncService::replay_dead_letters)). Dead letters applied are marked
/// replayed; those failing again stay pending. Repeats while the running service keeps
/// holding back new messages of the same keys.
pub async fn replay(
    config: &SyncConfig,
    projections: Projections,
    selection: &Selection,
) -> Result<ReplayReport, ServiceError> {
    let (mongo, keep_alive) = connect_mongo(config).await?;
    let letters = MongoLetters::new(mongo.clone(), config.mongodb.dead_letter_collection.clone());
    let pipeline = assemble(config, projections, mongo, keep_alive).await?;
    if let Some(registry) = pipeline.decoder.registry() {
        // A fix usually means the registry learnt a schema: ask again at once.
        registry.forget_failures();
    }
    let mut report = ReplayReport::default();
    let mut selection = selection.clone();
    for _round in 0..5 {
        let pending = letters.pending(selection.filter()).await?;
        if pending.is_empty() {
            break;
        }
        let wanted: HashSet<String> = pending.iter().map(|d| d.id.clone()).collect();
        let messages = read_dead_letters(config, &wanted).await?;
        report.missing = wanted.len().saturating_sub(messages.len());
        let started = bson::DateTime::now();
        let shutdown = CancellationToken::new();
        if pipeline.process(&messages, &shutdown).await.is_err() {
            break;
        }
        let ids: Vec<String> = messages.iter().map(Record::id).collect();
        // Those dead-lettered again got a fresh record; the others are resolved.
        let resolved = letters
            .records()
            .update_many(
                doc! { "_id": { "$in": &ids }, "status": "pending", "created_at": { "$lt": started } },
                doc! { "$set": { "status": "replayed", "resolved_at": bson::DateTime::now() } },
            )
            .await
            .map_err(DeadLetterError::from)?;
        report.replayed += resolved.modified_count as usize;
        report.still_failing = ids.len() - resolved.modified_count as usize;
        if report.still_failing > 0 {
            break;
        }
        // Messages the service held back meanwhile, for the same keys.
        let keys: Vec<String> = pending.iter().map(|d| d.key.clone()).collect();
        selection = Selection {
            ids: Vec::new(),
            topic: None,
        };
        let more = letters.pending(doc! { "key": { "$in": keys } }).await?;
        if more.is_empty() {
            break;
        }
        selection.ids = more.into_iter().map(|d| d.id).collect();
    }
    Ok(report)
}

/// Reads the dead-letter topic from the beginning and returns the wanted originals, as
/// they were (source topic, partition, offset, key, value, headers), in topic order.
async fn read_dead_letters(
    config: &SyncConfig,
    wanted: &HashSet<String>,
) -> Result<Vec<Record>, ServiceError> {
    let mut kafka = config.kafka.clone();
    kafka.group_id = format!(
        "{}-dlq-replay-{}",
        config.kafka.group_id,
        uuid::Uuid::now_v7()
    );
    let mut client = crate::source::client_config(&kafka);
    client.set("enable.auto.commit", "false");
    let consumer: StreamConsumer = client.create()?;
    let metadata =
        consumer.fetch_metadata(Some(&config.dead_letter.topic), Duration::from_secs(10))?;
    let mut tpl = TopicPartitionList::new();
    for topic in metadata.topics() {
        for partition in topic.partitions() {
            tpl.add_partition_offset(topic.name(), partition.id(), Offset::Beginning)?;
        }
    }
    consumer.assign(&tpl)?;
    let mut found = Vec::new();
    let mut seen = HashSet::new();
    let mut stream = consumer.stream();
    // The broker's end offsets are not reliable here (STACK-NOTES): read until every
    // wanted message is found or the topic stays quiet.
    while seen.len() < wanted.len() {
        let Ok(Some(next)) = tokio::time::timeout(Duration::from_secs(5), stream.next()).await
        else {
            break;
        };
        let message = next?;
        let Some(original) = original_of(&message.detach()) else {
            continue;
        };
        let id = original.id();
        if wanted.contains(&id) && seen.insert(id) {
            found.push(original);
        }
    }
    Ok(found)
}

/// Rebuilds the original record from a dead-letter message.
fn original_of(dead: &OwnedMessage) -> Option<Record> {
    let headers_in = dead.headers()?;
    let mut topic = None;
    let mut partition = None;
    let mut offset = None;
    let mut kept = Vec::new();
    for h in headers_in.iter() {
        let text = h.value.and_then(|v| std::str::from_utf8(v).ok());
        match h.key {
            headers::TOPIC => topic = text.map(str::to_owned),
            headers::PARTITION => partition = text.and_then(|t| t.parse().ok()),
            headers::OFFSET => offset = text.and_then(|t| t.parse().ok()),
            k if k.starts_with("sync.dlq.") => {}
            k => kept.push(cqrs_kafka::Header::new(k, h.value.map(<[u8]>::to_vec))),
        }
    }
    let mut record = Record::new(topic?, partition?, offset?);
    record.key = dead.key().map(<[u8]>::to_vec);
    record.value = dead.payload().map(<[u8]>::to_vec);
    record.headers = kept;
    Some(record)
}
