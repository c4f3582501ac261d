//! Dead letters: messages that cannot be decoded, parsed, mapped or written go to a
//! dead-letter topic with their original bytes and headers describing the failure, and
//! are recorded in MongoDB. Their key is *parked*: later messages of the same key are
//! held back behind them (dead-lettered too, in order) until an operator replays or skips
//! them (`sync-service dlq ...`, [`admin`]), so a projection never applies an update on
//! top of a missing one.
//!
//! Two small interfaces carry the I/O: a [`DeadLetterSink`] takes the original bytes (the
//! Kafka topic, [`KafkaSink`]) and a [`LetterStore`] keeps the records that park keys
//! (MongoDB, [`MongoLetters`]). [`DeadLetters`] holds the parked keys over them; its
//! decisions are unit-tested with in-memory implementations.
//!
//! Public: the records ([`DeadLetter`], [`Stage`], [`Status`]), [`DeadLetterError`] and the
//! operator commands ([`admin`]). The pipeline's side (the two interfaces, [`DeadLetters`],
//! [`KeyRef`], [`Failure`], [`headers`]) is public with the `internals` feature only.

pub mod admin;
mod parked;
mod route;
mod stores;

use cqrs_kafka::Record;
use serde::{Deserialize, Serialize};

#[cfg(feature = "internals")]
pub use route::{DeadLetterSink, DeadLetters, Failure, KeyRef, LetterStore, headers};
#[cfg(not(feature = "internals"))]
pub(crate) use route::{DeadLetterSink, DeadLetters, Failure, KeyRef, LetterStore, headers};
#[cfg(feature = "internals")]
pub use stores::{KafkaSink, MongoLetters};
#[cfg(not(feature = "internals"))]
pub(crate) use stores::{KafkaSink, MongoLetters};

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

impl Status {
    /// The name stored in the records.
    ///
    /// ```
    /// assert_eq!(sync_service::dead_letter::Status::Replayed.as_str(), "replayed");
    /// ```
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Replayed => "replayed",
            Status::Skipped => "skipped",
        }
    }
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
    /// The `_id` of a message's dead letter (the record's [`Record::id`]).
    ///
    /// ```
    /// assert_eq!(sync_service::dead_letter::DeadLetter::id_of("t", 1, 2), "t/1/2");
    /// ```
    pub fn id_of(topic: &str, partition: i32, offset: i64) -> String {
        format!("{topic}/{partition}/{offset}")
    }

    /// The pending record of `record`, failed as `failure`.
    ///
    /// ```
    /// use sync_service::dead_letter::{DeadLetter, Failure, Stage, Status};
    /// let failure = Failure { stage: Stage::Decode, error: "bad bytes".into(), behind: None };
    /// let letter = DeadLetter::pending(&cqrs_kafka::Record::new("t", 0, 9), &failure);
    /// assert_eq!((letter.id.as_str(), letter.status), ("t/0/9", Status::Pending));
    /// ```
    pub fn pending(record: &Record, failure: &Failure) -> Self {
        let key = KeyRef::of(record);
        DeadLetter {
            id: record.id(),
            topic: key.topic,
            partition: record.partition,
            offset: record.offset,
            key: key.key,
            stage: failure.stage,
            error: failure.error.clone(),
            behind: failure.behind.clone(),
            status: Status::Pending,
            created_at: bson::DateTime::now(),
            resolved_at: None,
        }
    }
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
    /// MongoDB did not answer.
    #[error("dead-letter records: {0}")]
    Client(#[from] cqrs_mongo::MongoError),
    /// Another store did not answer.
    #[error("dead-letter records unavailable: {0}")]
    Unavailable(String),
}

#[cfg(test)]
mod tests;
