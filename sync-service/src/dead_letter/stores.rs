//! The production dead-letter path: the original bytes go to a Kafka topic
//! ([`KafkaSink`]), the records that park keys to a MongoDB collection
//! ([`MongoLetters`]).

use std::collections::HashSet;
use std::time::Duration;

use async_trait::async_trait;
use bson::{Document, doc};
use cqrs_kafka::Record;
use cqrs_mongo::MongoClient;
use futures::TryStreamExt;
use mongodb::Collection;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};

use super::{
    DeadLetter, DeadLetterError, DeadLetterSink, Failure, KeyRef, LetterStore, Status, headers,
};

/// The dead-letter topic: each failed record with its key, value and headers plus the
/// `sync.dlq.*` headers describing the failure.
///
/// ```no_run
/// # fn demo() -> Result<(), rdkafka::error::KafkaError> {
/// use rdkafka::producer::FutureProducer;
/// let producer: FutureProducer = rdkafka::ClientConfig::new()
///     .set("bootstrap.servers", "127.0.0.1:9092")
///     .create()?;
/// let sink = sync_service::dead_letter::KafkaSink::new(producer, "sync-dlq");
/// assert_eq!(sink.topic(), "sync-dlq");
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct KafkaSink {
    producer: FutureProducer,
    topic: String,
}

impl KafkaSink {
    /// Sends dead letters to `topic` through `producer` (see the example above).
    pub fn new(producer: FutureProducer, topic: impl Into<String>) -> Self {
        KafkaSink {
            producer,
            topic: topic.into(),
        }
    }

    /// The dead-letter topic (see the example above).
    pub fn topic(&self) -> &str {
        &self.topic
    }
}

#[async_trait]
impl DeadLetterSink for KafkaSink {
    async fn publish(&self, record: &Record, failure: &Failure) -> Result<(), DeadLetterError> {
        let offset = record.offset.to_string();
        let partition = record.partition.to_string();
        let mut out = OwnedHeaders::new();
        for (key, value) in record.headers_iter() {
            out = out.insert(Header { key, value });
        }
        let mut added = vec![
            (headers::STAGE, failure.stage.as_str()),
            (headers::ERROR, failure.error.as_str()),
            (headers::TOPIC, record.topic.as_str()),
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
        let mut message = FutureRecord::<[u8], [u8]>::to(&self.topic).headers(out);
        if let Some(key) = record.key() {
            message = message.key(key);
        }
        if let Some(value) = record.value() {
            message = message.payload(value);
        }
        self.producer
            .send(message, Duration::from_secs(30))
            .await
            .map_err(|(e, _)| DeadLetterError::Produce {
                topic: self.topic.clone(),
                message: e.to_string(),
            })?;
        Ok(())
    }
}

/// The dead-letter records in a collection of the MongoDB client's default database,
/// looked up from the [`MongoClient`] handle at every operation: when the client is
/// rebuilt (new credentials from Vault, see the `[vault]` section), the records follow
/// the new client like every other write.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let mongo = cqrs_mongo::MongoClient::from_uri("mongodb://127.0.0.1:27017/sync").await?;
/// let letters = sync_service::dead_letter::MongoLetters::new(mongo, "_sync_dead_letters");
/// letters.ensure_indexes().await?;
/// let pending = letters.pending(bson::doc! {}).await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct MongoLetters {
    mongo: MongoClient,
    collection: String,
}

impl MongoLetters {
    /// Records in `collection` of `mongo`'s default database (see the example above).
    pub fn new(mongo: MongoClient, collection: impl Into<String>) -> Self {
        MongoLetters {
            mongo,
            collection: collection.into(),
        }
    }

    /// The records collection, on the client current now (do not keep it across a
    /// credential rotation: ask again).
    ///
    /// ```no_run
    /// # async fn demo(letters: sync_service::dead_letter::MongoLetters) -> mongodb::error::Result<()> {
    /// let pending = letters.records().count_documents(bson::doc! { "status": "pending" }).await?;
    /// # Ok(()) }
    /// ```
    pub fn records(&self) -> Collection<DeadLetter> {
        self.mongo.default_database().collection(&self.collection)
    }

    /// Creates the indexes the records need.
    ///
    /// ```no_run
    /// # async fn demo(letters: sync_service::dead_letter::MongoLetters) -> Result<(), sync_service::dead_letter::DeadLetterError> {
    /// letters.ensure_indexes().await?;
    /// # Ok(()) }
    /// ```
    pub async fn ensure_indexes(&self) -> Result<(), DeadLetterError> {
        let index = mongodb::IndexModel::builder()
            .keys(doc! { "status": 1, "topic": 1, "key": 1 })
            .build();
        self.records().create_index(index).await?;
        Ok(())
    }

    /// Pending records matching `filter`, oldest first.
    ///
    /// ```no_run
    /// # async fn demo(letters: sync_service::dead_letter::MongoLetters) -> Result<(), sync_service::dead_letter::DeadLetterError> {
    /// let of_orders = letters.pending(bson::doc! { "topic": "cqrs.shop.orders" }).await?;
    /// # Ok(()) }
    /// ```
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

#[async_trait]
impl LetterStore for MongoLetters {
    async fn save(&self, letter: &DeadLetter) -> Result<(), DeadLetterError> {
        self.records()
            .replace_one(doc! { "_id": &letter.id }, letter)
            .upsert(true)
            .await?;
        Ok(())
    }

    async fn pending_of(
        &self,
        keys: Option<&[KeyRef]>,
    ) -> Result<Vec<DeadLetter>, DeadLetterError> {
        let filter = match keys {
            None => doc! {},
            Some(keys) => {
                let or: Vec<Document> = keys
                    .iter()
                    .map(|k| doc! { "topic": &k.topic, "key": &k.key })
                    .collect();
                doc! { "$or": or }
            }
        };
        let mut query = doc! { "status": "pending" };
        query.extend(filter);
        Ok(self.records().find(query).await?.try_collect().await?)
    }

    async fn still_pending(&self, ids: &[String]) -> Result<HashSet<String>, DeadLetterError> {
        // Only the ids come back: read them as plain documents (a `DeadLetter` needs every
        // field).
        let mut found = HashSet::new();
        let mut cursor = self
            .records()
            .clone_with_type::<Document>()
            .find(doc! { "_id": { "$in": ids }, "status": "pending" })
            .projection(doc! { "_id": 1 })
            .await?;
        while let Some(record) = cursor.try_next().await? {
            if let Ok(id) = record.get_str("_id") {
                found.insert(id.to_owned());
            }
        }
        Ok(found)
    }

    async fn resolve(&self, ids: &[String], status: Status) -> Result<u64, DeadLetterError> {
        let update = doc! { "$set": {
            "status": status.as_str(),
            "resolved_at": bson::DateTime::now(),
        } };
        let result = self
            .records()
            .update_many(doc! { "_id": { "$in": ids }, "status": "pending" }, update)
            .await?;
        Ok(result.modified_count)
    }

    async fn probe(&self) -> Result<(), DeadLetterError> {
        Ok(self.mongo.ping().await?)
    }
}
