//! Truncate floors: a `TRUNCATE` at position P makes every older change of its table a
//! no-op, whichever partition it comes from and whenever it arrives.
//!
//! Debezium sends a truncate as one message without a key, so it lands in one partition
//! while the table's rows are spread over all of them; an insert older than the truncate,
//! consumed later from another partition, would bring its row back. Deleting what exists
//! when the truncate is applied is not enough: the read model needs a *floor*.
//!
//! * A floor is stored per target collection (`{_id: "<db>.<collection>", position,
//!   index}` in `[mongodb] truncate_collection`, `_sync_truncates` by default) and only
//!   moves forward. Applying a truncate first records the floor, then deletes every
//!   document older than it.
//! * Every batch drops its writes older than the floors it knows (they are stale), and
//!   after writing reads the floors of the collections it wrote. A floor newer than the
//!   one it filtered with means a truncate was recorded meanwhile (by another worker or
//!   instance), possibly after it had deleted: the batch deletes the older documents
//!   itself.
//!
//! Why that is enough: a truncate records its floor (t1) before its delete (t2); a write
//! made before t2 is deleted by it, a write made after t1 is followed by a floor read that
//! sees the floor. Tombstones are not needed: the floor guards the whole collection.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

use bson::{Document, doc};
use cqrs_core::{SourceVersion, Target};
use cqrs_mongo::MongoClient;
use futures::TryStreamExt;

/// The truncate floors of the collections a service writes.
#[derive(Clone)]
pub struct TruncateFloors {
    mongo: MongoClient,
    collection: String,
    known: Arc<RwLock<HashMap<String, SourceVersion>>>,
}

impl std::fmt::Debug for TruncateFloors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TruncateFloors")
            .field("collection", &self.collection)
            .finish_non_exhaustive()
    }
}

impl TruncateFloors {
    /// Floors kept in `collection` of `mongo`'s default database.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
    /// let mongo = cqrs_mongo::MongoClient::from_uri("mongodb://127.0.0.1:27017/app").await?;
    /// let floors = sync_service::truncate::TruncateFloors::new(mongo, "_sync_truncates");
    /// floors.load().await?;
    /// # Ok(()) }
    /// ```
    pub fn new(mongo: MongoClient, collection: impl Into<String>) -> Self {
        TruncateFloors {
            mongo,
            collection: collection.into(),
            known: Arc::default(),
        }
    }

    fn records(&self) -> mongodb::Collection<Document> {
        self.mongo.default_database().collection(&self.collection)
    }

    /// `database.collection` of a write target (the default database when it names none).
    pub fn namespace(&self, target: &Target) -> String {
        let db = target
            .database
            .clone()
            .unwrap_or_else(|| self.mongo.default_database_name());
        format!("{db}.{}", target.collection)
    }

    /// The floor known for a namespace, if any.
    pub fn floor(&self, namespace: &str) -> Option<SourceVersion> {
        self.known
            .read()
            .ok()
            .and_then(|k| k.get(namespace).copied())
    }

    /// Loads every stored floor (at start).
    pub async fn load(&self) -> mongodb::error::Result<usize> {
        let found = self.read(doc! {}).await?;
        let n = found.len();
        self.learn(found);
        Ok(n)
    }

    /// Reads the stored floors of `namespaces` and returns those newer than the floor each
    /// was filtered with (`used`), learning them.
    pub async fn newer_than(
        &self,
        used: &BTreeMap<String, Option<SourceVersion>>,
    ) -> mongodb::error::Result<Vec<(String, SourceVersion)>> {
        if used.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<&String> = used.keys().collect();
        let found = self.read(doc! { "_id": { "$in": ids } }).await?;
        let newer = found
            .iter()
            .filter(|(ns, floor)| used.get(ns).copied().flatten() < Some(*floor))
            .cloned()
            .collect();
        self.learn(found);
        Ok(newer)
    }

    async fn read(&self, filter: Document) -> mongodb::error::Result<Vec<(String, SourceVersion)>> {
        let docs: Vec<Document> = self.records().find(filter).await?.try_collect().await?;
        Ok(docs.iter().filter_map(parse).collect())
    }

    fn learn(&self, floors: Vec<(String, SourceVersion)>) {
        if let Ok(mut known) = self.known.write() {
            for (ns, floor) in floors {
                let entry = known.entry(ns).or_default();
                *entry = (*entry).max(floor);
            }
        }
    }

    /// Records a truncate of `target` at `version` (the floor only moves forward), then
    /// deletes every document older than the floor. Returns true when the floor moved or
    /// a document was deleted (false: a replayed truncate).
    pub async fn truncate(
        &self,
        target: &Target,
        version: SourceVersion,
    ) -> mongodb::error::Result<bool> {
        let ns = self.namespace(target);
        let position = i64::try_from(version.position).unwrap_or(i64::MAX);
        let index = i64::from(version.index);
        // $max on both fields is exact here: truncates carry index 0.
        let before = self
            .records()
            .find_one_and_update(
                doc! { "_id": &ns },
                doc! {
                    "$max": { "position": position, "index": index },
                    "$set": { "updated_at": bson::DateTime::now() },
                },
            )
            .upsert(true)
            .await?;
        let moved = before.as_ref().and_then(parse).map(|(_, v)| v) < Some(version);
        let floor = self.floor(&ns).unwrap_or_default().max(version);
        self.learn(vec![(ns, floor)]);
        let deleted = self.sweep(target, floor).await?;
        Ok(moved || deleted > 0)
    }

    /// Deletes the documents of `target` older than `floor`.
    pub async fn sweep(
        &self,
        target: &Target,
        floor: SourceVersion,
    ) -> mongodb::error::Result<u64> {
        let position = i64::try_from(floor.position).unwrap_or(i64::MAX);
        let older = if floor.index == 0 {
            doc! { "_version": { "$not": { "$gte": position } } }
        } else {
            doc! { "$nor": [
                { "_version": { "$gt": position } },
                { "_version": position, "_version_index": { "$gte": i64::from(floor.index) } },
            ] }
        };
        let deleted = self
            .mongo
            .database(target.database.as_deref())
            .collection::<Document>(&target.collection)
            .delete_many(older)
            .await?
            .deleted_count;
        if deleted > 0 {
            tracing::info!(
                collection = %target.collection,
                floor = %floor,
                deleted,
                "documents older than the table's truncate deleted"
            );
        }
        Ok(deleted)
    }
}

fn parse(d: &Document) -> Option<(String, SourceVersion)> {
    let ns = d.get_str("_id").ok()?.to_owned();
    let position = u64::try_from(d.get_i64("position").ok()?).ok()?;
    let index = u32::try_from(d.get_i64("index").unwrap_or(0)).unwrap_or(0);
    Some((ns, SourceVersion::with_index(position, index)))
}
