//! Projection progress: one checkpoint per projection and source partition.
//!
//! A checkpoint document is
//! `{_id: {projection, partition}, projection, partition, position: Int64, updated_at: Date}`
//! in the collection [`CHECKPOINTS_COLLECTION`] of the default database. Saving is guarded
//! like any read-model write: a checkpoint only moves forward (saving an older or equal
//! position is [`WriteOutcome::Stale`]); [`CheckpointStore::reset`] moves it anywhere.
//! [`BulkWriter::write`](crate::BulkWriter::write) saves checkpoints in the same bulk
//! request as the data.

use bson::{Bson, Document, doc};
use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use mongodb::{Collection, Namespace};

use crate::{
    client::MongoClient,
    error::{DuplicateOn, MongoError, Result, duplicate_in},
    guard::WriteOutcome,
};

/// Default collection of checkpoints.
pub const CHECKPOINTS_COLLECTION: &str = "cqrs_checkpoints";

/// A checkpoint to save: the projection has processed `partition` up to `position`.
///
/// ```
/// let cp = cqrs_mongo::CheckpointUpdate::new("orders", "cdc.public.orders/0", 42);
/// assert_eq!(cp.position, 42);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CheckpointUpdate {
    /// Projection name ([`cqrs_core::Projection::name`]).
    pub projection: String,
    /// Source partition (for Kafka: `topic/partition`).
    pub partition: String,
    /// Position reached (Kafka offset, LSN...), at most `i64::MAX`.
    pub position: u64,
}

impl CheckpointUpdate {
    /// Builds an update.
    pub fn new(projection: impl Into<String>, partition: impl Into<String>, position: u64) -> Self {
        CheckpointUpdate {
            projection: projection.into(),
            partition: partition.into(),
            position,
        }
    }

    fn key(&self) -> Document {
        key(&self.projection, &self.partition)
    }

    /// The guarded upsert: `(filter, update)`.
    pub(crate) fn guarded(&self, collection: &str) -> Result<(Document, Document)> {
        let position = i64::try_from(self.position).map_err(|_| MongoError::VersionOutOfRange {
            collection: collection.to_string(),
            id: Some(format!("{}/{}", self.projection, self.partition)),
            version: cqrs_core::SourceVersion::new(self.position),
        })?;
        let filter = doc! { "_id": self.key(), "position": { "$not": { "$gte": position } } };
        let update = doc! { "$set": {
            "projection": &self.projection,
            "partition": &self.partition,
            "position": position,
            "updated_at": bson::DateTime::now(),
        } };
        Ok((filter, update))
    }
}

fn key(projection: &str, partition: &str) -> Document {
    doc! { "projection": projection, "partition": partition }
}

/// A stored checkpoint.
///
/// ```
/// # use chrono::Utc;
/// let cp = cqrs_mongo::Checkpoint {
///     projection: "orders".into(), partition: "t/0".into(), position: 7, updated_at: Utc::now(),
/// };
/// assert_eq!(cp.position, 7);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// Projection name.
    pub projection: String,
    /// Source partition.
    pub partition: String,
    /// Position reached.
    pub position: u64,
    /// When it was last saved.
    pub updated_at: DateTime<Utc>,
}

/// Reads and writes checkpoints.
///
/// ```no_run
/// # async fn demo(mongo: cqrs_mongo::MongoClient) -> cqrs_mongo::Result<()> {
/// use cqrs_mongo::CheckpointUpdate;
///
/// let store = mongo.checkpoints();
/// store.save(&CheckpointUpdate::new("orders", "cdc.orders/0", 1200)).await?;
/// let cp = store.load("orders", "cdc.orders/0").await?.expect("saved");
/// assert_eq!(cp.position, 1200);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct CheckpointStore {
    client: MongoClient,
    database: Option<String>,
    collection: String,
}

impl CheckpointStore {
    /// The store in the default database, collection [`CHECKPOINTS_COLLECTION`].
    pub fn new(client: MongoClient) -> Self {
        CheckpointStore {
            client,
            database: None,
            collection: CHECKPOINTS_COLLECTION.to_string(),
        }
    }

    /// Uses another database and collection.
    ///
    /// ```no_run
    /// # fn demo(mongo: cqrs_mongo::MongoClient) {
    /// let store = mongo.checkpoints().in_collection(Some("ops"), "progress");
    /// # }
    /// ```
    pub fn in_collection(mut self, database: Option<&str>, collection: &str) -> Self {
        self.database = database.map(str::to_string);
        self.collection = collection.to_string();
        self
    }

    /// The namespace checkpoints live in.
    ///
    /// ```no_run
    /// # fn demo(mongo: cqrs_mongo::MongoClient) {
    /// println!("{}", mongo.checkpoints().namespace());
    /// # }
    /// ```
    pub fn namespace(&self) -> Namespace {
        let db = self
            .database
            .clone()
            .unwrap_or_else(|| self.client.default_database_name());
        Namespace::new(db, self.collection.clone())
    }

    fn collection(&self) -> Collection<Document> {
        self.client
            .database(self.database.as_deref())
            .collection(&self.collection)
    }

    /// Saves a checkpoint if it moves forward.
    ///
    /// ```no_run
    /// # async fn demo(store: cqrs_mongo::CheckpointStore) -> cqrs_mongo::Result<()> {
    /// let outcome = store.save(&cqrs_mongo::CheckpointUpdate::new("p", "t/0", 10)).await?;
    /// # Ok(()) }
    /// ```
    pub async fn save(&self, update: &CheckpointUpdate) -> Result<WriteOutcome> {
        let coll = self.collection();
        let (filter, upd) = update.guarded(coll.name())?;
        for attempt in 0..2 {
            match coll
                .update_one(filter.clone(), upd.clone())
                .upsert(true)
                .await
            {
                Ok(_) => return Ok(WriteOutcome::Applied),
                Err(e) if duplicate_in(&e) == Some(DuplicateOn::Id) => {
                    if attempt == 1 {
                        return Ok(WriteOutcome::Stale);
                    }
                }
                Err(e) => {
                    return Err(MongoError::mongo(
                        "save checkpoint",
                        coll.namespace().to_string(),
                        Some(format!("{}/{}", update.projection, update.partition)),
                        e,
                    ));
                }
            }
        }
        Ok(WriteOutcome::Stale)
    }

    /// Sets a checkpoint to any position, backwards included (to replay a partition).
    ///
    /// ```no_run
    /// # async fn demo(store: cqrs_mongo::CheckpointStore) -> cqrs_mongo::Result<()> {
    /// store.reset(&cqrs_mongo::CheckpointUpdate::new("p", "t/0", 0)).await?;
    /// # Ok(()) }
    /// ```
    pub async fn reset(&self, update: &CheckpointUpdate) -> Result<()> {
        let coll = self.collection();
        let (_, upd) = update.guarded(coll.name())?;
        coll.update_one(doc! { "_id": update.key() }, upd)
            .upsert(true)
            .await
            .map(|_| ())
            .map_err(|e| {
                MongoError::mongo(
                    "reset checkpoint",
                    coll.namespace().to_string(),
                    Some(format!("{}/{}", update.projection, update.partition)),
                    e,
                )
            })
    }

    /// The checkpoint of one partition.
    ///
    /// ```no_run
    /// # async fn demo(store: cqrs_mongo::CheckpointStore) -> cqrs_mongo::Result<()> {
    /// if let Some(cp) = store.load("orders", "t/0").await? {
    ///     println!("resume after {}", cp.position);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn load(&self, projection: &str, partition: &str) -> Result<Option<Checkpoint>> {
        let coll = self.collection();
        let found = coll
            .find_one(doc! { "_id": key(projection, partition) })
            .await
            .map_err(|e| {
                MongoError::mongo(
                    "load checkpoint",
                    coll.namespace().to_string(),
                    Some(format!("{projection}/{partition}")),
                    e,
                )
            })?;
        found.map(|d| parse(&d, coll.name())).transpose()
    }

    /// All checkpoints of a projection, by partition.
    ///
    /// ```no_run
    /// # async fn demo(store: cqrs_mongo::CheckpointStore) -> cqrs_mongo::Result<()> {
    /// for cp in store.load_all("orders").await? {
    ///     println!("{} at {}", cp.partition, cp.position);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn load_all(&self, projection: &str) -> Result<Vec<Checkpoint>> {
        let coll = self.collection();
        let wrap = |e| MongoError::mongo("load checkpoints", coll.namespace().to_string(), None, e);
        let docs: Vec<Document> = coll
            .find(doc! { "projection": projection })
            .sort(doc! { "partition": 1 })
            .await
            .map_err(wrap)?
            .try_collect()
            .await
            .map_err(wrap)?;
        docs.iter().map(|d| parse(d, coll.name())).collect()
    }
}

fn parse(d: &Document, collection: &str) -> Result<Checkpoint> {
    let bad = |field: &str, message: &str| MongoError::Decode {
        collection: collection.to_string(),
        id: d.get("_id").map(|v| v.to_string()),
        field: field.to_string(),
        message: message.to_string(),
    };
    let text = |field: &str| match d.get(field) {
        Some(Bson::String(s)) => Ok(s.clone()),
        _ => Err(bad(field, "expected a string")),
    };
    let position = match d.get("position") {
        Some(Bson::Int64(v)) => u64::try_from(*v).map_err(|_| bad("position", "negative"))?,
        Some(Bson::Int32(v)) => u64::try_from(*v).map_err(|_| bad("position", "negative"))?,
        _ => return Err(bad("position", "expected an integer")),
    };
    let updated_at = match d.get("updated_at") {
        Some(Bson::DateTime(t)) => t.to_chrono(),
        _ => return Err(bad("updated_at", "expected a date")),
    };
    Ok(Checkpoint {
        projection: text("projection")?,
        partition: text("partition")?,
        position,
        updated_at,
    })
}
