//! Dead letters: messages that cannot be decoded, parsed, mapped or written go to a
//! dead-letter topic with their original bytes and headers describing the failure, and
//! are recorded in MongoDB. Their key is *parked*: later messages of the same key are
//! held back behind them (dead-lettered too, in order) until an operator replays or skips
//! them (`sync-service dlq ...`), so a projection never applies an update on top of a
//! missing one.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use base64::Engine;
use bson::{Document, doc};
use cqrs_mongo::MongoClient;
use futures::TryStreamExt;
use mongodb::Collection;
use rdkafka::message::{Header, Headers, Message, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde::{Deserialize, Serialize};

/// Pipeline stage a message failed in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// Bytes into a datum (wire format, registry, Avro, JSON).
    Decode,
    /// Datum into a Debezium event.
    Envelope,
    /// Event into read-model writes.
    Map,
    /// Writes into MongoDB.
    Write,
    /// Not failed itself: held back behind an earlier dead letter of its key.
    HeldBack,
}

impl Stage {
    /// Every stage, in pipeline order.
    ///
    /// ```
    /// assert_eq!(sync_service::dead_letter::Stage::ALL.len(), 5);
    /// ```
    pub const ALL: [Stage; 5] = [
        Stage::Decode,
        Stage::Envelope,
        Stage::Map,
        Stage::Write,
        Stage::HeldBack,
    ];

    /// The stage name used in headers and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Decode => "decode",
            Stage::Envelope => "envelope",
            Stage::Map => "map",
            Stage::Write => "write",
            Stage::HeldBack => "held_back",
        }
    }
}

/// Identity of a key for sequencing: the topic and the raw key bytes (base64).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct KeyRef {
    /// Source topic.
    pub topic: String,
    /// Base64 of the raw key bytes; empty for a null key.
    pub key: String,
}

impl KeyRef {
    /// The key of a message.
    pub fn of(message: &OwnedMessage) -> Self {
        KeyRef {
            topic: message.topic().to_owned(),
            key: message
                .key()
                .map(|k| base64::engine::general_purpose::STANDARD.encode(k))
                .unwrap_or_default(),
        }
    }
}

/// Status of a dead letter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Waiting for an operator; parks its key.
    Pending,
    /// Re-processed successfully.
    Replayed,
    /// Dropped by an operator.
    Skipped,
}

/// The MongoDB record of a dead letter (the bytes are in the dead-letter topic).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// `topic/partition/offset` of the original message.
    #[serde(rename = "_id")]
    pub id: String,
    /// Original topic.
    pub topic: String,
    /// Original partition.
    pub partition: i32,
    /// Original offset.
    pub offset: i64,
    /// Key identity (topic + base64 key).
    pub key: String,
    /// Failing stage.
    pub stage: Stage,
    /// What failed.
    pub error: String,
    /// For held-back messages: the dead letter they wait behind.
    #[serde(default)]
    pub behind: Option<String>,
    /// Status.
    pub status: Status,
    /// When it was dead-lettered.
    pub created_at: bson::DateTime,
    /// When it was replayed or skipped.
    #[serde(default)]
    pub resolved_at: Option<bson::DateTime>,
}

impl DeadLetter {
    /// The `_id` of a message's dead letter.
    pub fn id_of(topic: &str, partition: i32, offset: i64) -> String {
        format!("{topic}/{partition}/{offset}")
    }
}

/// Headers added to a dead-lettered message.
pub mod headers {
    /// Failing stage.
    pub const STAGE: &str = "sync.dlq.stage";
    /// Error text.
    pub const ERROR: &str = "sync.dlq.error";
    /// Original topic.
    pub const TOPIC: &str = "sync.dlq.source.topic";
    /// Original partition.
    pub const PARTITION: &str = "sync.dlq.source.partition";
    /// Original offset.
    pub const OFFSET: &str = "sync.dlq.source.offset";
    /// The dead letter a held-back message waits behind.
    pub const BEHIND: &str = "sync.dlq.behind";
}

/// A failure on its way to the dead-letter topic.
#[derive(Debug, Clone)]
pub struct Failure {
    /// Stage.
    pub stage: Stage,
    /// Error text (no secrets: errors of this crate never carry any).
    pub error: String,
    /// For held-back messages.
    pub behind: Option<String>,
}

/// Errors of the dead-letter path; all transient from the pipeline's point of view.
#[derive(Debug, thiserror::Error)]
pub enum DeadLetterError {
    /// The dead-letter topic did not take the message.
    #[error("dead-letter topic {topic}: {message}")]
    Produce {
        /// Topic.
        topic: String,
        /// Error.
        message: String,
    },
    /// MongoDB did not take the record.
    #[error("dead-letter records: {0}")]
    Mongo(#[from] mongodb::error::Error),
}

/// The dead-letter topic, the records collection and the set of parked keys.
///
/// The records live in a collection of the MongoDB client's default database, looked up
/// from the [`MongoClient`] handle at every operation: when the client is rebuilt (new
/// credentials from Vault, see the `[vault]` section), the records follow the new client
/// like every other write, instead of staying on the driver client of the start.
#[derive(Clone)]
pub struct DeadLetters {
    producer: FutureProducer,
    topic: String,
    mongo: MongoClient,
    collection: String,
    parked: Arc<RwLock<Parked>>,
}

/// Keys held back, each with the dead letter its next messages wait behind (the latest
/// pending one of the key), as the records say plus what this process parked and no
/// refresh has read back yet: a refresh whose query ran before (or did not yet see) a
/// record written here must not release its key, or the key's next change would be applied
/// on top of the dead-lettered one.
#[derive(Default)]
struct Parked {
    keys: HashMap<KeyRef, Blocker>,
    unconfirmed: HashMap<KeyRef, (Blocker, Instant)>,
}

/// The dead letter a parked key waits behind: its id and where it sits in its partition.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Blocker {
    id: String,
    offset: i64,
}

impl Blocker {
    /// Keeps the later of two blockers (messages of one key share a partition).
    fn latest(self, other: Blocker) -> Blocker {
        if other.offset > self.offset {
            other
        } else {
            self
        }
    }
}

/// How long a key parked here stays parked without a refresh reading its record back
/// (after that the records decide alone, so that a dead letter resolved before any refresh
/// saw it cannot hold its key forever).
const UNCONFIRMED_FOR: Duration = Duration::from_secs(60);

impl DeadLetters {
    /// Connects the pieces with no key parked: the dead-letter `topic` written by
    /// `producer`, the records in `collection` of `mongo`'s default database.
    /// [`DeadLetters::refresh`] loads the parked keys from the records (the service does
    /// at start and then every few seconds; a replay does not, so that it can re-process
    /// the messages it releases).
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
    /// use rdkafka::producer::FutureProducer;
    /// use sync_service::dead_letter::DeadLetters;
    ///
    /// let producer: FutureProducer = rdkafka::ClientConfig::new()
    ///     .set("bootstrap.servers", "127.0.0.1:9092")
    ///     .create()?;
    /// let mongo = cqrs_mongo::MongoClient::from_uri("mongodb://127.0.0.1:27017/sync").await?;
    /// let dead_letters = DeadLetters::new(producer, "sync-dlq".into(), mongo, "_sync_dead_letters");
    /// dead_letters.ensure_indexes().await?;
    /// # Ok(()) }
    /// ```
    pub fn new(
        producer: FutureProducer,
        topic: String,
        mongo: MongoClient,
        collection: impl Into<String>,
    ) -> Self {
        DeadLetters {
            producer,
            topic,
            mongo,
            collection: collection.into(),
            parked: Arc::default(),
        }
    }

    /// The records collection, on the client current now (do not keep it across a
    /// credential rotation: ask again).
    ///
    /// ```no_run
    /// # async fn demo(dead_letters: sync_service::dead_letter::DeadLetters) -> mongodb::error::Result<()> {
    /// let pending = dead_letters.records().count_documents(bson::doc! { "status": "pending" }).await?;
    /// # Ok(()) }
    /// ```
    pub fn records(&self) -> Collection<DeadLetter> {
        self.mongo.default_database().collection(&self.collection)
    }

    /// The dead-letter topic.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The dead letter (`topic/partition/offset`) that holds the later messages of `key`
    /// back, if a pending one does.
    pub fn parked(&self, key: &KeyRef) -> Option<String> {
        self.parked
            .read()
            .ok()
            .and_then(|p| p.keys.get(key).map(|b| b.id.clone()))
    }

    /// Pending records by key, the latest of each key.
    async fn pending_by_key(
        &self,
        filter: Document,
    ) -> Result<HashMap<KeyRef, Blocker>, DeadLetterError> {
        let mut query = doc! { "status": "pending" };
        query.extend(filter);
        let mut keys: HashMap<KeyRef, Blocker> = HashMap::new();
        let mut cursor = self.records().find(query).await?;
        while let Some(record) = cursor.try_next().await? {
            let blocker = Blocker {
                id: record.id,
                offset: record.offset,
            };
            let key = KeyRef {
                topic: record.topic,
                key: record.key,
            };
            let merged = match keys.remove(&key) {
                Some(known) => known.latest(blocker),
                None => blocker,
            };
            keys.insert(key, merged);
        }
        Ok(keys)
    }

    /// Reloads the parked keys from the records (an operator may have resolved some).
    pub async fn refresh(&self) -> Result<usize, DeadLetterError> {
        let mut keys = self.pending_by_key(doc! {}).await?;
        if let Ok(mut parked) = self.parked.write() {
            parked
                .unconfirmed
                .retain(|key, (_, at)| !keys.contains_key(key) && at.elapsed() < UNCONFIRMED_FOR);
            for (key, (blocker, _)) in &parked.unconfirmed {
                let merged = match keys.remove(key) {
                    Some(known) => known.latest(blocker.clone()),
                    None => blocker.clone(),
                };
                keys.insert(key.clone(), merged);
            }
            parked.keys = keys;
            return Ok(parked.keys.len());
        }
        Ok(keys.len())
    }

    /// Asks the records again about `keys` (parked here as of the last refresh) and
    /// releases those no pending dead letter holds any more: an operator resolved them
    /// since (`dlq skip`, `dlq replay`), and their next messages must flow at once, not
    /// after the next refresh. Returns the keys released.
    pub async fn recheck(&self, keys: &[KeyRef]) -> Result<Vec<KeyRef>, DeadLetterError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let or: Vec<Document> = keys
            .iter()
            .map(|k| doc! { "topic": &k.topic, "key": &k.key })
            .collect();
        let still = self.pending_by_key(doc! { "$or": or }).await?;
        let mut released = Vec::new();
        if let Ok(mut parked) = self.parked.write() {
            for key in keys {
                match still.get(key) {
                    Some(blocker) => {
                        parked.keys.insert(key.clone(), blocker.clone());
                    }
                    None => {
                        parked.keys.remove(key);
                        parked.unconfirmed.remove(key);
                        released.push(key.clone());
                    }
                }
            }
        }
        Ok(released)
    }

    /// Of the dead letters `ids`, those still pending.
    pub async fn still_pending(&self, ids: &[String]) -> Result<HashSet<String>, DeadLetterError> {
        if ids.is_empty() {
            return Ok(HashSet::new());
        }
        let mut found = HashSet::new();
        let mut cursor = self
            .records()
            .find(doc! { "_id": { "$in": ids }, "status": "pending" })
            .projection(doc! { "_id": 1 })
            .await?;
        while let Some(record) = cursor.try_next().await? {
            found.insert(record.id);
        }
        Ok(found)
    }

    /// Releases `key` here (its records were resolved by this process).
    pub fn release(&self, key: &KeyRef) {
        if let Ok(mut parked) = self.parked.write() {
            parked.keys.remove(key);
            parked.unconfirmed.remove(key);
        }
    }

    /// One cheap request to the records' database (the readiness probe).
    pub async fn probe(&self) -> Result<(), DeadLetterError> {
        self.mongo
            .default_database()
            .run_command(doc! { "ping": 1 })
            .await?;
        Ok(())
    }

    /// Creates the indexes the records need.
    pub async fn ensure_indexes(&self) -> Result<(), DeadLetterError> {
        let index = mongodb::IndexModel::builder()
            .keys(doc! { "status": 1, "topic": 1, "key": 1 })
            .build();
        self.records().create_index(index).await?;
        Ok(())
    }

    /// Sends a message to the dead-letter topic and records it as pending, parking its
    /// key. Idempotent: a redelivered message overwrites its own record.
    pub async fn send(
        &self,
        message: &OwnedMessage,
        failure: &Failure,
    ) -> Result<(), DeadLetterError> {
        let offset = message.offset().to_string();
        let partition = message.partition().to_string();
        let mut out = OwnedHeaders::new();
        if let Some(original) = message.headers() {
            for h in original.iter() {
                out = out.insert(Header {
                    key: h.key,
                    value: h.value,
                });
            }
        }
        let mut added = vec![
            (headers::STAGE, failure.stage.as_str()),
            (headers::ERROR, failure.error.as_str()),
            (headers::TOPIC, message.topic()),
            (headers::PARTITION, partition.as_str()),
            (headers::OFFSET, offset.as_str()),
        ];
        if let Some(behind) = &failure.behind {
            added.push((headers::BEHIND, behind.as_str()));
        }
        for (key, value) in added {
            out = out.insert(Header {
                key,
                value: Some(value),
            });
        }
        let mut record = FutureRecord::<[u8], [u8]>::to(&self.topic).headers(out);
        if let Some(key) = message.key() {
            record = record.key(key);
        }
        if let Some(payload) = message.payload() {
            record = record.payload(payload);
        }
        self.producer
            .send(record, Duration::from_secs(30))
            .await
            .map_err(|(e, _)| DeadLetterError::Produce {
                topic: self.topic.clone(),
                message: e.to_string(),
            })?;

        let key = KeyRef::of(message);
        let id = DeadLetter::id_of(message.topic(), message.partition(), message.offset());
        let record = DeadLetter {
            id: id.clone(),
            topic: key.topic.clone(),
            partition: message.partition(),
            offset: message.offset(),
            key: key.key.clone(),
            stage: failure.stage,
            error: failure.error.clone(),
            behind: failure.behind.clone(),
            status: Status::Pending,
            created_at: bson::DateTime::now(),
            resolved_at: None,
        };
        self.records()
            .replace_one(doc! { "_id": &id }, &record)
            .upsert(true)
            .await?;
        if let Ok(mut parked) = self.parked.write() {
            let blocker = Blocker {
                id,
                offset: message.offset(),
            };
            let merged = match parked.keys.remove(&key) {
                Some(known) => known.latest(blocker),
                None => blocker,
            };
            parked
                .unconfirmed
                .insert(key.clone(), (merged.clone(), Instant::now()));
            parked.keys.insert(key, merged);
        }
        Ok(())
    }

    /// Marks records resolved.
    pub async fn resolve(&self, ids: &[String], status: Status) -> Result<u64, DeadLetterError> {
        let update = doc! { "$set": { "status": bson::to_bson(&status).unwrap_or_default(), "resolved_at": bson::DateTime::now() } };
        let result = self
            .records()
            .update_many(doc! { "_id": { "$in": ids }, "status": "pending" }, update)
            .await?;
        Ok(result.modified_count)
    }

    /// Pending records, oldest first, optionally of one topic.
    pub async fn pending(&self, filter: Document) -> Result<Vec<DeadLetter>, DeadLetterError> {
        let mut query = doc! { "status": "pending" };
        query.extend(filter);
        let cursor = self
            .records()
            .find(query)
            .sort(doc! { "created_at": 1, "topic": 1, "partition": 1, "offset": 1 })
            .await?;
        Ok(cursor.try_collect().await?)
    }
}
