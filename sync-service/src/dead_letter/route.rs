//! The pipeline's side of dead letters: a failed message's bytes go to a
//! [`DeadLetterSink`], its record to a [`LetterStore`], and [`DeadLetters`] parks its key
//! over both.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use async_trait::async_trait;
use base64::Engine;
use cqrs_kafka::Record;
use serde::{Deserialize, Serialize};

use super::parked::{self, Blocker, Parked};
use super::{DeadLetter, DeadLetterError, Stage, Status};

/// Identity of a key for sequencing: the topic and the raw key bytes (base64).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct KeyRef {
    /// Source topic.
    pub topic: String,
    /// Base64 of the raw key bytes; empty for a null key.
    pub key: String,
}

impl KeyRef {
    /// The key of a record.
    ///
    /// ```
    /// use sync_service::dead_letter::KeyRef;
    /// let key = KeyRef::of(&cqrs_kafka::Record::new("t", 0, 0).with_key(b"k".to_vec()));
    /// assert_eq!((key.topic.as_str(), key.key.as_str()), ("t", "aw=="));
    /// ```
    pub fn of(record: &Record) -> Self {
        KeyRef {
            topic: record.topic.clone(),
            key: record
                .key()
                .map(|k| base64::engine::general_purpose::STANDARD.encode(k))
                .unwrap_or_default(),
        }
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

/// Where the original bytes of a dead letter go (the dead-letter topic).
///
/// ```
/// use sync_service::dead_letter::{DeadLetterError, DeadLetterSink, Failure};
///
/// /// Drops dead letters on the floor (a test double).
/// struct Nowhere;
/// #[async_trait::async_trait]
/// impl DeadLetterSink for Nowhere {
///     async fn publish(&self, _: &cqrs_kafka::Record, _: &Failure) -> Result<(), DeadLetterError> {
///         Ok(())
///     }
/// }
/// ```
#[async_trait]
pub trait DeadLetterSink: Send + Sync + 'static {
    /// Publishes `record` with headers describing `failure`. Idempotent enough: a
    /// redelivered record is published again, and an operator replays each id once.
    async fn publish(&self, record: &Record, failure: &Failure) -> Result<(), DeadLetterError>;
}

/// The records of dead letters, which park their keys (MongoDB: [`MongoLetters`]).
///
/// ```no_run
/// # async fn demo(store: std::sync::Arc<dyn sync_service::dead_letter::LetterStore>) -> Result<(), sync_service::dead_letter::DeadLetterError> {
/// let pending = store.pending_of(None).await?;
/// println!("{} dead letters park their keys", pending.len());
/// # Ok(()) }
/// ```
#[async_trait]
pub trait LetterStore: Send + Sync + 'static {
    /// Stores `letter`, replacing a record of the same id (a redelivered record).
    async fn save(&self, letter: &DeadLetter) -> Result<(), DeadLetterError>;
    /// The pending records, of `keys` only when given.
    async fn pending_of(&self, keys: Option<&[KeyRef]>)
    -> Result<Vec<DeadLetter>, DeadLetterError>;
    /// Of `ids`, those still pending.
    async fn still_pending(&self, ids: &[String]) -> Result<HashSet<String>, DeadLetterError>;
    /// Marks the pending records among `ids` resolved; returns how many changed.
    async fn resolve(&self, ids: &[String], status: Status) -> Result<u64, DeadLetterError>;
    /// One cheap request (the readiness probe).
    async fn probe(&self) -> Result<(), DeadLetterError>;
}

/// The dead-letter path and the parked keys: what the pipeline asks before and after
/// each batch.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use std::sync::Arc;
/// use rdkafka::producer::FutureProducer;
/// use sync_service::dead_letter::{DeadLetters, KafkaSink, MongoLetters};
///
/// let producer: FutureProducer = rdkafka::ClientConfig::new()
///     .set("bootstrap.servers", "127.0.0.1:9092")
///     .create()?;
/// let mongo = cqrs_mongo::MongoClient::from_uri("mongodb://127.0.0.1:27017/sync").await?;
/// let dead_letters = DeadLetters::new(
///     Arc::new(KafkaSink::new(producer, "sync-dlq")),
///     Arc::new(MongoLetters::new(mongo, "_sync_dead_letters")),
/// );
/// dead_letters.refresh().await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct DeadLetters {
    sink: Arc<dyn DeadLetterSink>,
    store: Arc<dyn LetterStore>,
    parked: Arc<RwLock<Parked>>,
}

impl DeadLetters {
    /// The path with no key parked: [`DeadLetters::refresh`] loads the parked keys from the
    /// records (the service does at start and then every few seconds; a replay does not,
    /// so that it can re-process the messages it releases).
    ///
    /// ```no_run
    /// # fn demo(sink: std::sync::Arc<sync_service::dead_letter::KafkaSink>, letters: std::sync::Arc<sync_service::dead_letter::MongoLetters>) {
    /// let dead_letters = sync_service::dead_letter::DeadLetters::new(sink, letters);
    /// # }
    /// ```
    pub fn new(sink: Arc<dyn DeadLetterSink>, store: Arc<dyn LetterStore>) -> Self {
        DeadLetters {
            sink,
            store,
            parked: Arc::default(),
        }
    }

    /// The records.
    ///
    /// ```no_run
    /// # async fn demo(dead_letters: sync_service::dead_letter::DeadLetters) -> Result<(), sync_service::dead_letter::DeadLetterError> {
    /// dead_letters.store().probe().await?;
    /// # Ok(()) }
    /// ```
    pub fn store(&self) -> &Arc<dyn LetterStore> {
        &self.store
    }

    /// The dead letter (`topic/partition/offset`) that holds the later messages of `key`
    /// back, if a pending one does.
    ///
    /// ```no_run
    /// # async fn demo(dead_letters: sync_service::dead_letter::DeadLetters) -> Result<(), sync_service::dead_letter::DeadLetterError> {
    /// let key = sync_service::dead_letter::KeyRef::of(&cqrs_kafka::Record::new("t", 0, 0));
    /// println!("{:?}", dead_letters.parked(&key));
    /// # Ok(()) }
    /// ```
    pub fn parked(&self, key: &KeyRef) -> Option<String> {
        self.parked
            .read()
            .ok()
            .and_then(|p| p.blocker(key).map(|b| b.id.clone()))
    }

    /// Pending records by key, the latest of each key.
    async fn pending_by_key(
        &self,
        keys: Option<&[KeyRef]>,
    ) -> Result<HashMap<KeyRef, Blocker>, DeadLetterError> {
        let mut found: HashMap<KeyRef, Blocker> = HashMap::new();
        for record in self.store.pending_of(keys).await? {
            let key = KeyRef {
                topic: record.topic,
                key: record.key,
            };
            let blocker = Blocker {
                id: record.id,
                offset: record.offset,
            };
            parked::merge(&mut found, key, blocker);
        }
        Ok(found)
    }

    /// Reloads the parked keys from the records (an operator may have resolved some).
    /// Returns how many keys are parked.
    ///
    /// ```no_run
    /// # async fn demo(dead_letters: sync_service::dead_letter::DeadLetters) -> Result<(), sync_service::dead_letter::DeadLetterError> {
    /// let parked = dead_letters.refresh().await?;
    /// # Ok(()) }
    /// ```
    pub async fn refresh(&self) -> Result<usize, DeadLetterError> {
        let found = self.pending_by_key(None).await?;
        let mut parked = self.write();
        parked.refreshed(found, Instant::now());
        Ok(parked.len())
    }

    /// Asks the records again about `keys` (parked here as of the last refresh) and
    /// releases those no pending dead letter holds any more: an operator resolved them
    /// since (`dlq skip`, `dlq replay`), and their next messages must flow at once, not
    /// after the next refresh. Returns the keys released.
    ///
    /// ```no_run
    /// # async fn demo(dead_letters: sync_service::dead_letter::DeadLetters) -> Result<(), sync_service::dead_letter::DeadLetterError> {
    /// let key = sync_service::dead_letter::KeyRef::of(&cqrs_kafka::Record::new("t", 0, 0));
    /// let released = dead_letters.recheck(&[key]).await?;
    /// # Ok(()) }
    /// ```
    pub async fn recheck(&self, keys: &[KeyRef]) -> Result<Vec<KeyRef>, DeadLetterError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let still = self.pending_by_key(Some(keys)).await?;
        Ok(self.write().rechecked(keys, &still))
    }

    /// Of the dead letters `ids`, those still pending.
    ///
    /// ```no_run
    /// # async fn demo(dead_letters: sync_service::dead_letter::DeadLetters) -> Result<(), sync_service::dead_letter::DeadLetterError> {
    /// let pending = dead_letters.still_pending(&["t/0/5".to_string()]).await?;
    /// # Ok(()) }
    /// ```
    pub async fn still_pending(&self, ids: &[String]) -> Result<HashSet<String>, DeadLetterError> {
        if ids.is_empty() {
            return Ok(HashSet::new());
        }
        self.store.still_pending(ids).await
    }

    /// Releases `key` here (its records were resolved by this process).
    ///
    /// ```no_run
    /// # async fn demo(dead_letters: sync_service::dead_letter::DeadLetters) -> Result<(), sync_service::dead_letter::DeadLetterError> {
    /// dead_letters.release(&sync_service::dead_letter::KeyRef::of(&cqrs_kafka::Record::new("t", 0, 0)));
    /// # Ok(()) }
    /// ```
    pub fn release(&self, key: &KeyRef) {
        self.write().release(key);
    }

    /// One cheap request to the records (the readiness probe).
    ///
    /// ```no_run
    /// # async fn demo(dead_letters: sync_service::dead_letter::DeadLetters) -> Result<(), sync_service::dead_letter::DeadLetterError> {
    /// dead_letters.probe().await?;
    /// # Ok(()) }
    /// ```
    pub async fn probe(&self) -> Result<(), DeadLetterError> {
        self.store.probe().await
    }

    /// Publishes a record to the dead-letter topic and records it as pending, parking its
    /// key. Idempotent: a redelivered record overwrites its own record.
    ///
    /// ```no_run
    /// # async fn demo(dead_letters: sync_service::dead_letter::DeadLetters) -> Result<(), sync_service::dead_letter::DeadLetterError> {
    /// use sync_service::dead_letter::{Failure, Stage};
    /// let failure = Failure { stage: Stage::Decode, error: "corrupt".into(), behind: None };
    /// dead_letters.send(&cqrs_kafka::Record::new("t", 0, 5), &failure).await?;
    /// # Ok(()) }
    /// ```
    pub async fn send(&self, record: &Record, failure: &Failure) -> Result<(), DeadLetterError> {
        self.sink.publish(record, failure).await?;
        self.store
            .save(&DeadLetter::pending(record, failure))
            .await?;
        let blocker = Blocker {
            id: record.id(),
            offset: record.offset,
        };
        self.write()
            .park(KeyRef::of(record), blocker, Instant::now());
        Ok(())
    }

    /// Marks records resolved.
    ///
    /// ```no_run
    /// # async fn demo(dead_letters: sync_service::dead_letter::DeadLetters) -> Result<(), sync_service::dead_letter::DeadLetterError> {
    /// dead_letters.resolve(&["t/0/5".to_string()], sync_service::dead_letter::Status::Skipped).await?;
    /// # Ok(()) }
    /// ```
    pub async fn resolve(&self, ids: &[String], status: Status) -> Result<u64, DeadLetterError> {
        if ids.is_empty() {
            return Ok(0);
        }
        self.store.resolve(ids, status).await
    }

    /// The parked keys, for writing. A poisoned lock (a panic while holding it) still holds
    /// consistent state: every mutation is a few map operations.
    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Parked> {
        self.parked
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
