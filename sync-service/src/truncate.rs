//! Truncate floors: a `TRUNCATE` at position P makes every older change of its table a
//! no-op, whichever partition it comes from and whenever it arrives.
//!
//! Debezium sends a truncate as one message without a key, so it lands in one partition
//! while the table's rows are spread over all of them; an insert older than the truncate,
//! consumed later from another partition, would bring its row back. Deleting what exists
//! when the truncate is applied is not enough: the read model needs a *floor*.
//!
//! * A floor is stored per target read model (`{_id: "<db>.<collection>", position,
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
//!
//! The decisions (which writes are below a floor, which floors moved meanwhile) are made
//! by the write stage ([`Writer`](crate::write::Writer)) over a [`FloorCache`]; the
//! storage side is [`ReadStore`](crate::write::ReadStore)'s floor methods, on MongoDB
//! [`MongoFloors`].

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

use bson::{Document, doc};
use cqrs_core::{SourceVersion, Target};
use cqrs_mongo::{MongoClient, VersionFields};
use futures::TryStreamExt;

use crate::write::StoreError;

/// The floors this process knows, by namespace (`database.collection`). They only move
/// forward.
///
/// ```
/// use cqrs_core::SourceVersion;
/// use sync_service::truncate::FloorCache;
///
/// let floors = FloorCache::default();
/// floors.learn([("read.orders".to_string(), SourceVersion::new(10))]);
/// floors.learn([("read.orders".to_string(), SourceVersion::new(4))]);
/// assert_eq!(floors.floor("read.orders"), Some(SourceVersion::new(10)));
/// ```
#[derive(Debug, Clone, Default)]
pub struct FloorCache {
    known: Arc<RwLock<HashMap<String, SourceVersion>>>,
}

impl FloorCache {
    /// The floor known for a namespace, if any.
    ///
    /// ```
    /// let floors = sync_service::truncate::FloorCache::default();
    /// assert_eq!(floors.floor("read.orders"), None);
    /// ```
    pub fn floor(&self, namespace: &str) -> Option<SourceVersion> {
        self.known
            .read()
            .ok()
            .and_then(|k| k.get(namespace).copied())
    }

    /// Learns floors (keeping the newer of what is known and what is given).
    ///
    /// ```
    /// let floors = sync_service::truncate::FloorCache::default();
    /// floors.learn([("read.orders".to_string(), cqrs_core::SourceVersion::new(7))]);
    /// assert!(floors.floor("read.orders").is_some());
    /// ```
    pub fn learn(&self, floors: impl IntoIterator<Item = (String, SourceVersion)>) {
        if let Ok(mut known) = self.known.write() {
            for (ns, floor) in floors {
                let entry = known.entry(ns).or_default();
                *entry = (*entry).max(floor);
            }
        }
    }

    /// Of the stored floors `found`, those newer than the floor each namespace was filtered
    /// with (`used`): a truncate was recorded meanwhile. Learns them all.
    ///
    /// ```
    /// # use std::collections::BTreeMap;
    /// # use cqrs_core::SourceVersion;
    /// let floors = sync_service::truncate::FloorCache::default();
    /// let used = BTreeMap::from([("read.a".to_string(), None), ("read.b".to_string(), Some(SourceVersion::new(5)))]);
    /// let found = vec![("read.a".to_string(), SourceVersion::new(3)), ("read.b".to_string(), SourceVersion::new(5))];
    /// assert_eq!(floors.newer(&used, found), vec![("read.a".to_string(), SourceVersion::new(3))]);
    /// ```
    pub fn newer(
        &self,
        used: &BTreeMap<String, Option<SourceVersion>>,
        found: Vec<(String, SourceVersion)>,
    ) -> Vec<(String, SourceVersion)> {
        let newer = found
            .iter()
            .filter(|(ns, floor)| used.get(ns).copied().flatten() < Some(*floor))
            .cloned()
            .collect();
        self.learn(found);
        newer
    }
}

/// The floors in MongoDB: `{_id: "<db>.<collection>", position, index, updated_at}` in a
/// collection of the client's default database.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let mongo = cqrs_mongo::MongoClient::from_uri("mongodb://127.0.0.1:27017/app").await?;
/// let floors = sync_service::truncate::MongoFloors::new(mongo, "_sync_truncates");
/// let all = floors.read(None).await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct MongoFloors {
    mongo: MongoClient,
    collection: String,
}

impl std::fmt::Debug for MongoFloors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MongoFloors")
            .field("collection", &self.collection)
            .finish_non_exhaustive()
    }
}

impl MongoFloors {
    /// Floors kept in `collection` of `mongo`'s default database (see the example above).
    pub fn new(mongo: MongoClient, collection: impl Into<String>) -> Self {
        MongoFloors {
            mongo,
            collection: collection.into(),
        }
    }

    fn records(&self) -> mongodb::Collection<Document> {
        self.mongo.default_database().collection(&self.collection)
    }

    /// `database.collection` of a write target (the default database when it names none).
    ///
    /// ```no_run
    /// # async fn demo(floors: sync_service::truncate::MongoFloors) -> Result<(), Box<dyn std::error::Error>> {
    /// assert_eq!(floors.namespace(&cqrs_core::Target::in_database("shop", "orders")), "shop.orders");
    /// # Ok(()) }
    /// ```
    pub fn namespace(&self, target: &Target) -> String {
        let db = target
            .database
            .clone()
            .unwrap_or_else(|| self.mongo.default_database_name());
        format!("{db}.{}", target.collection)
    }

    /// The stored floors of `namespaces` (every floor when `None`).
    ///
    /// ```no_run
    /// # async fn demo(floors: sync_service::truncate::MongoFloors) -> Result<(), Box<dyn std::error::Error>> {
    /// let of_orders = floors.read(Some(&["shop.orders".to_string()])).await?;
    /// # Ok(()) }
    /// ```
    pub async fn read(
        &self,
        namespaces: Option<&[String]>,
    ) -> mongodb::error::Result<Vec<(String, SourceVersion)>> {
        let filter = match namespaces {
            None => doc! {},
            Some(ids) => doc! { "_id": { "$in": ids } },
        };
        let docs: Vec<Document> = self.records().find(filter).await?.try_collect().await?;
        Ok(docs.iter().filter_map(parse).collect())
    }

    /// Records the floor of `namespace` at `version` (it only moves forward); true when
    /// it moved.
    ///
    /// ```no_run
    /// # async fn demo(floors: sync_service::truncate::MongoFloors) -> Result<(), Box<dyn std::error::Error>> {
    /// let moved = floors.record("shop.orders", cqrs_core::SourceVersion::new(1200)).await?;
    /// # Ok(()) }
    /// ```
    pub async fn record(
        &self,
        namespace: &str,
        version: SourceVersion,
    ) -> mongodb::error::Result<bool> {
        let position = i64::try_from(version.position).unwrap_or(i64::MAX);
        let index = i64::from(version.index);
        // $max on both fields is exact here: truncates carry index 0.
        let before = self
            .records()
            .find_one_and_update(
                doc! { "_id": namespace },
                doc! {
                    "$max": { "position": position, "index": index },
                    "$set": { "updated_at": bson::DateTime::now() },
                },
            )
            .upsert(true)
            .await?;
        Ok(before.as_ref().and_then(parse).map(|(_, v)| v) < Some(version))
    }

    /// Removes what is older than `floor` from `target`: documents older than it (those
    /// holding children are hidden and keep them), or, for the children scope of a child
    /// table (`map::children_scope`), the children older than it (parents stay).
    ///
    /// ```no_run
    /// # async fn demo(floors: sync_service::truncate::MongoFloors) -> Result<(), Box<dyn std::error::Error>> {
    /// let deleted = floors.sweep(&cqrs_core::Target::collection("orders"), cqrs_core::SourceVersion::new(1200)).await?;
    /// # Ok(()) }
    /// ```
    pub async fn sweep(&self, target: &Target, floor: SourceVersion) -> Result<u64, StoreError> {
        let fields = VersionFields::new("_version");
        // The read model is a view over versioned collections (cqrs_mongo::layout): cqrs-mongo
        // sweeps the physical ones a write goes to (the live version and one being rebuilt).
        let (swept, what) = match crate::map::split_children_scope(target) {
            Some((parents, field)) => (
                self.mongo
                    .sweep_children(&parents, &field, floor, &fields)
                    .await?,
                "documents lost the children older than the child table's truncate",
            ),
            None => (
                self.mongo.sweep_older(target, floor, &fields).await?,
                "documents older than the table's truncate removed",
            ),
        };
        if swept > 0 {
            tracing::info!(collection = %target.collection, floor = %floor, swept, "{what}");
        }
        Ok(swept)
    }
}

fn parse(d: &Document) -> Option<(String, SourceVersion)> {
    let ns = d.get_str("_id").ok()?.to_owned();
    let position = u64::try_from(d.get_i64("position").ok()?).ok()?;
    let index = u32::try_from(d.get_i64("index").unwrap_or(0)).unwrap_or(0);
    Some((ns, SourceVersion::with_index(position, index)))
}
