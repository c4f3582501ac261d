//! Where a read model lives: versioned collections behind a stable view.
//!
//! A read model named `orders` is stored in a **physical collection** `orders__v1` (then
//! `orders__v2` after a rebuild, ...), and readers read the **view** `orders`, defined as
//! `{$match: {_deleted: {$ne: true}}}` over the live version:
//!
//! * tombstones stay in the physical collection, next to the documents they guard, so a
//!   late or replayed change still meets them atomically (one guarded upsert), but a plain
//!   `find({})` on `orders` (a BI tool, `mongosh`) never returns a deleted row;
//! * tombstones go after a retention ([`DEFAULT_TOMBSTONE_RETENTION`], a TTL index on
//!   `_deleted_at` of each physical collection), which must exceed the replay horizon of
//!   the source (a change older than a purged tombstone could bring its row back);
//! * a rebuild writes a new version next to the live one and switches the view when it has
//!   caught up: readers of `orders` move atomically, the previous version stays until
//!   dropped ([`MongoClient::begin_rebuild`], [`MongoClient::switch_rebuild`]).
//!
//! The registry (`_read_models` in each database: `{_id: name, live, version, building,
//! previous}`) says which physical collection is live. Writers resolve it
//! ([`MongoClient::layout`], cached): a write goes to the live version and to the one being
//! built. A view is read-only, so nothing writes to `orders` by mistake.
//!
//! An existing plain collection `orders` (written before versions existed) is migrated the
//! first time it is resolved: renamed to `orders__v1`, then the view is created. Readers
//! that query it in that instant find no collection for a few milliseconds.

use std::time::Duration;

use bson::{Bson, Document, doc};
use futures::TryStreamExt;
use mongodb::{Database, IndexModel};

use crate::client::MongoClient;
use crate::error::{MongoError, Result, error_code};
use crate::indexes::TOMBSTONE_INDEX;
use crate::model::DELETED_FIELD;

/// The registry collection of each database.
pub const READ_MODELS_COLLECTION: &str = "_read_models";

/// How long tombstones are kept unless configured otherwise
/// ([`MongoConfig::with_tombstone_retention`](crate::MongoConfig::with_tombstone_retention)).
pub const DEFAULT_TOMBSTONE_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

/// Where one read model lives.
///
/// ```
/// let layout = cqrs_mongo::Layout::first("shop", "orders");
/// assert_eq!(layout.live, "orders__v1");
/// assert_eq!(layout.write_targets(), vec!["orders__v1"]);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// Database.
    pub database: String,
    /// The stable name readers use (a view).
    pub name: String,
    /// The physical collection the view shows.
    pub live: String,
    /// Its version number.
    pub version: u32,
    /// The version being rebuilt, written along with the live one.
    pub building: Option<String>,
    /// The version the last rebuild replaced, kept until dropped.
    pub previous: Option<String>,
}

impl Layout {
    /// The layout of a read model that has only its first version.
    pub fn first(database: impl Into<String>, name: impl Into<String>) -> Self {
        let name = name.into();
        Layout {
            database: database.into(),
            live: physical_name(&name, 1),
            name,
            version: 1,
            building: None,
            previous: None,
        }
    }

    /// The physical collections a write goes to: the live version, and the one being built.
    pub fn write_targets(&self) -> Vec<&str> {
        let mut out = vec![self.live.as_str()];
        out.extend(self.building.as_deref());
        out
    }

    fn from_record(database: &str, d: &Document) -> Option<Layout> {
        Some(Layout {
            database: database.to_owned(),
            name: d.get_str("_id").ok()?.to_owned(),
            live: d.get_str("live").ok()?.to_owned(),
            version: u32::try_from(d.get_i64("version").ok()?).ok()?,
            building: d.get_str("building").ok().map(str::to_owned),
            previous: d.get_str("previous").ok().map(str::to_owned),
        })
    }
}

/// `orders`, 2 -> `orders__v2`.
///
/// ```
/// assert_eq!(cqrs_mongo::layout::physical_name("orders", 2), "orders__v2");
/// ```
pub fn physical_name(name: &str, version: u32) -> String {
    format!("{name}__v{version}")
}

/// The view's pipeline: live documents only. One `$match` stage, nothing else, so that a
/// reader's filter and indexes apply to the physical collection.
fn view_pipeline() -> Vec<Document> {
    vec![doc! { "$match": { DELETED_FIELD: { "$ne": true } } }]
}

/// The TTL index purging tombstones after `retention`.
fn tombstone_ttl_index(retention: Duration) -> IndexModel {
    crate::indexes::tombstone_index(Some(retention))
}

impl MongoClient {
    /// Where read model `name` of `database` (the default one for `None`) lives, from the
    /// cache; resolved and, the first time, created or migrated
    /// ([`MongoClient::ensure_layout`]).
    ///
    /// ```no_run
    /// # async fn demo(mongo: cqrs_mongo::MongoClient) -> cqrs_mongo::Result<()> {
    /// let layout = mongo.layout(None, "orders").await?;
    /// println!("orders are stored in {}", layout.live);
    /// # Ok(()) }
    /// ```
    pub async fn layout(&self, database: Option<&str>, name: &str) -> Result<Layout> {
        let db = database.map_or_else(|| self.default_database_name(), str::to_owned);
        if let Some(layout) = self.cached_layout(&db, name) {
            return Ok(layout);
        }
        self.ensure_layout(Some(&db), name).await
    }

    /// Reads the registry again for every read model this client resolved (another process
    /// began, switched or cancelled a rebuild): writers call it every few seconds.
    ///
    /// ```no_run
    /// # async fn demo(mongo: cqrs_mongo::MongoClient) -> cqrs_mongo::Result<()> {
    /// mongo.refresh_layouts().await?;
    /// # Ok(()) }
    /// ```
    pub async fn refresh_layouts(&self) -> Result<()> {
        for (db, name) in self.cached_layout_keys() {
            if let Some(layout) = self.read_layout(&db, &name).await? {
                self.cache_layout(layout);
            }
        }
        Ok(())
    }

    async fn read_layout(&self, db: &str, name: &str) -> Result<Option<Layout>> {
        let found = self
            .registry(db)
            .find_one(doc! { "_id": name, "state": "ready" })
            .await
            .map_err(|e| MongoError::mongo("find", READ_MODELS_COLLECTION, Some(name.into()), e))?;
        Ok(found.and_then(|d| Layout::from_record(db, &d)))
    }

    fn registry(&self, db: &str) -> mongodb::Collection<Document> {
        self.database(Some(db)).collection(READ_MODELS_COLLECTION)
    }

    /// Makes sure read model `name` has a registry entry, a live physical collection with
    /// the tombstone TTL index, and its view: creates them for a new read model, migrates a
    /// plain collection of that name (renamed to version 1). Idempotent and safe to run
    /// from several processes at once (the registry entry is the lock).
    ///
    /// ```no_run
    /// # async fn demo(mongo: cqrs_mongo::MongoClient) -> cqrs_mongo::Result<()> {
    /// let layout = mongo.ensure_layout(Some("shop"), "orders").await?;
    /// assert!(layout.live.starts_with("orders__v"));
    /// # Ok(()) }
    /// ```
    pub async fn ensure_layout(&self, database: Option<&str>, name: &str) -> Result<Layout> {
        let db_name = database.map_or_else(|| self.default_database_name(), str::to_owned);
        if let Some(layout) = self.read_layout(&db_name, name).await? {
            // The retention may have been configured otherwise since the versions were made.
            let db = self.database(Some(&db_name));
            for physical in layout.write_targets() {
                self.ensure_retention(&db, physical, self.tombstone_retention())
                    .await?;
            }
            self.cache_layout(layout.clone());
            return Ok(layout);
        }
        let layout = Layout::first(&db_name, name);
        let claim = doc! {
            "_id": name, "live": &layout.live, "version": 1_i64, "state": "creating",
            "created_at": bson::DateTime::now(),
        };
        match self.registry(&db_name).insert_one(claim).await {
            Ok(_) => {}
            // Another process is creating it: wait for it to be ready.
            Err(e) if error_code(&e) == Some(11000) => {
                return self.await_layout(&db_name, name).await;
            }
            Err(e) => {
                return Err(MongoError::mongo(
                    "insert",
                    READ_MODELS_COLLECTION,
                    Some(name.into()),
                    e,
                ));
            }
        }
        let db = self.database(Some(&db_name));
        self.create_physical(&db, name, &layout.live).await?;
        create_view(&db, name, &layout.live).await?;
        self.registry(&db_name)
            .update_one(doc! { "_id": name }, doc! { "$set": { "state": "ready" } })
            .await
            .map_err(|e| {
                MongoError::mongo("update", READ_MODELS_COLLECTION, Some(name.into()), e)
            })?;
        tracing::info!(database = %db_name, read_model = name, live = %layout.live, "read model laid out");
        self.cache_layout(layout.clone());
        Ok(layout)
    }

    async fn await_layout(&self, db: &str, name: &str) -> Result<Layout> {
        for _ in 0..100 {
            if let Some(layout) = self.read_layout(db, name).await? {
                self.cache_layout(layout.clone());
                return Ok(layout);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(MongoError::Config {
            message: format!(
                "read model {db}.{name}: another process claimed its creation and did not finish \
                 within 5 s (remove its `_read_models` entry if that process died)"
            ),
        })
    }

    /// Creates (or, for a plain collection of the read model's name, migrates into)
    /// physical collection `physical`, with the tombstone TTL index.
    async fn create_physical(&self, db: &Database, name: &str, physical: &str) -> Result<()> {
        match collection_kind(db, name).await? {
            Some(Kind::Collection) => {
                let admin = self.database(Some("admin"));
                let from = format!("{}.{name}", db.name());
                let to = format!("{}.{physical}", db.name());
                admin
                    .run_command(doc! { "renameCollection": &from, "to": &to })
                    .await
                    .map_err(|e| MongoError::mongo("renameCollection", from.clone(), None, e))?;
                tracing::info!(
                    from,
                    to,
                    "plain read-model collection migrated to a version"
                );
            }
            Some(Kind::View) => {
                // A view without a registry entry (the entry was removed): keep its data.
                db.collection::<Document>(name)
                    .drop()
                    .await
                    .map_err(|e| MongoError::mongo("drop view", name, None, e))?;
            }
            None => {}
        }
        if collection_kind(db, physical).await?.is_none() {
            match db.create_collection(physical).await {
                Ok(()) => {}
                // Created meanwhile by a write: fine.
                Err(e) if error_code(&e) == Some(48) => {}
                Err(e) => return Err(MongoError::mongo("create", physical, None, e)),
            }
        }
        self.ensure_retention(db, physical, self.tombstone_retention())
            .await
    }

    /// The tombstone TTL index of a physical collection, purging after `retention`
    /// (recreated when it has another one).
    pub(crate) async fn ensure_retention(
        &self,
        db: &Database,
        physical: &str,
        retention: Duration,
    ) -> Result<()> {
        let coll = db.collection::<Document>(physical);
        let existing: Vec<IndexModel> = coll
            .list_indexes()
            .await
            .map_err(|e| MongoError::mongo("listIndexes", physical, None, e))?
            .try_collect()
            .await
            .map_err(|e| MongoError::mongo("listIndexes", physical, None, e))?;
        let current = existing
            .iter()
            .find(|i| i.options.as_ref().and_then(|o| o.name.as_deref()) == Some(TOMBSTONE_INDEX));
        match current
            .and_then(|i| i.options.as_ref())
            .map(|o| o.expire_after)
        {
            Some(Some(ttl)) if ttl == retention => return Ok(()),
            Some(_) => {
                coll.drop_index(TOMBSTONE_INDEX)
                    .await
                    .map_err(|e| MongoError::mongo("dropIndex", physical, None, e))?;
            }
            None => {}
        }
        match coll.create_index(tombstone_ttl_index(retention)).await {
            Ok(_) => Ok(()),
            // Another index on `_deleted_at` (with other options) is in the way.
            Err(e) if matches!(error_code(&e), Some(85 | 86)) => Err(MongoError::IndexConflict {
                collection: format!("{}.{physical}", db.name()),
                name: TOMBSTONE_INDEX.into(),
                reason: format!("the server refused the tombstone TTL index: {e}"),
                existing: Box::default(),
                declared: Box::new(doc! { "key": { "_deleted_at": 1 } }),
            }),
            Err(e) => Err(MongoError::mongo("createIndex", physical, None, e)),
        }
    }

    /// Begins a rebuild of read model `name`: a new, empty physical version with the live
    /// version's indexes, written along with the live one from now on. Readers keep reading
    /// the live version. A rebuild already under way is returned as it is.
    ///
    /// ```no_run
    /// # async fn demo(mongo: cqrs_mongo::MongoClient) -> cqrs_mongo::Result<()> {
    /// let layout = mongo.begin_rebuild(None, "orders").await?;
    /// println!("building {}", layout.building.unwrap());
    /// # Ok(()) }
    /// ```
    pub async fn begin_rebuild(&self, database: Option<&str>, name: &str) -> Result<Layout> {
        let layout = self.ensure_layout(database, name).await?;
        if layout.building.is_some() {
            return Ok(layout);
        }
        let db = self.database(Some(&layout.database));
        let next = physical_name(name, layout.version + 1);
        // A cancelled attempt may have left it behind.
        let _ = db.collection::<Document>(&next).drop().await;
        self.create_physical(&db, &next, &next).await?;
        copy_indexes(&db, &layout.live, &next).await?;
        let updated = self
            .registry(&layout.database)
            .update_one(
                doc! { "_id": name, "live": &layout.live, "building": Bson::Null },
                doc! { "$set": { "building": &next, "building_since": bson::DateTime::now() } },
            )
            .await
            .map_err(|e| {
                MongoError::mongo("update", READ_MODELS_COLLECTION, Some(name.into()), e)
            })?;
        if updated.matched_count == 0 {
            // The entry has no `building` field yet: set it the first time.
            self.registry(&layout.database)
                .update_one(
                    doc! { "_id": name, "live": &layout.live, "building": { "$exists": false } },
                    doc! { "$set": { "building": &next, "building_since": bson::DateTime::now() } },
                )
                .await
                .map_err(|e| {
                    MongoError::mongo("update", READ_MODELS_COLLECTION, Some(name.into()), e)
                })?;
        }
        self.reload_layout(&layout.database, name).await
    }

    /// Ends a rebuild: the version built becomes the live one (the view moves to it in one
    /// step), the replaced version is kept as `previous` until
    /// [`MongoClient::drop_previous`].
    pub async fn switch_rebuild(&self, database: Option<&str>, name: &str) -> Result<Layout> {
        let layout = self.ensure_layout(database, name).await?;
        let Some(building) = layout.building.clone() else {
            return Err(MongoError::Config {
                message: format!("read model {name}: no rebuild under way"),
            });
        };
        let db = self.database(Some(&layout.database));
        db.run_command(doc! { "collMod": name, "viewOn": &building, "pipeline": view_pipeline() })
            .await
            .map_err(|e| MongoError::mongo("collMod", name, None, e))?;
        self.registry(&layout.database)
            .update_one(
                doc! { "_id": name },
                doc! {
                    "$set": {
                        "live": &building,
                        "version": i64::from(layout.version + 1),
                        "previous": &layout.live,
                        "switched_at": bson::DateTime::now(),
                    },
                    "$unset": { "building": "", "building_since": "" },
                },
            )
            .await
            .map_err(|e| {
                MongoError::mongo("update", READ_MODELS_COLLECTION, Some(name.into()), e)
            })?;
        tracing::info!(read_model = name, live = %building, previous = %layout.live, "read model switched to its rebuilt version");
        self.reload_layout(&layout.database, name).await
    }

    /// Abandons a rebuild: the version being built is dropped, the live one is untouched.
    pub async fn cancel_rebuild(&self, database: Option<&str>, name: &str) -> Result<Layout> {
        let layout = self.ensure_layout(database, name).await?;
        let Some(building) = layout.building.clone() else {
            return Ok(layout);
        };
        self.registry(&layout.database)
            .update_one(
                doc! { "_id": name },
                doc! { "$unset": { "building": "", "building_since": "" } },
            )
            .await
            .map_err(|e| {
                MongoError::mongo("update", READ_MODELS_COLLECTION, Some(name.into()), e)
            })?;
        self.database(Some(&layout.database))
            .collection::<Document>(&building)
            .drop()
            .await
            .map_err(|e| MongoError::mongo("drop", building.clone(), None, e))?;
        self.reload_layout(&layout.database, name).await
    }

    /// Drops `collection`, a version of read model `name` that a cancelled rebuild left,
    /// unless it is the live version or a rebuild under way builds it again; tells whether
    /// it dropped it. Writers that had not re-read the layout when the rebuild was cancelled
    /// write to that version once more, and MongoDB creates it again on their first write:
    /// called once they all have re-read it, this removes what they wrote.
    ///
    /// ```no_run
    /// # async fn demo(mongo: cqrs_mongo::MongoClient) -> cqrs_mongo::Result<()> {
    /// let cancelled = mongo.layout(None, "orders").await?.building;
    /// mongo.cancel_rebuild(None, "orders").await?;
    /// // ... once every writer has re-read the layout:
    /// if let Some(version) = cancelled {
    ///     mongo.drop_abandoned(None, "orders", &version).await?;
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn drop_abandoned(
        &self,
        database: Option<&str>,
        name: &str,
        collection: &str,
    ) -> Result<bool> {
        let layout = self.ensure_layout(database, name).await?;
        if layout.live == collection || layout.building.as_deref() == Some(collection) {
            return Ok(false);
        }
        self.database(Some(&layout.database))
            .collection::<Document>(collection)
            .drop()
            .await
            .map_err(|e| MongoError::mongo("drop", collection, None, e))?;
        Ok(true)
    }

    /// Drops the version the last rebuild replaced.
    pub async fn drop_previous(&self, database: Option<&str>, name: &str) -> Result<Layout> {
        let layout = self.ensure_layout(database, name).await?;
        let Some(previous) = layout.previous.clone() else {
            return Ok(layout);
        };
        self.database(Some(&layout.database))
            .collection::<Document>(&previous)
            .drop()
            .await
            .map_err(|e| MongoError::mongo("drop", previous.clone(), None, e))?;
        self.registry(&layout.database)
            .update_one(doc! { "_id": name }, doc! { "$unset": { "previous": "" } })
            .await
            .map_err(|e| {
                MongoError::mongo("update", READ_MODELS_COLLECTION, Some(name.into()), e)
            })?;
        self.reload_layout(&layout.database, name).await
    }

    async fn reload_layout(&self, db: &str, name: &str) -> Result<Layout> {
        let layout = self
            .read_layout(db, name)
            .await?
            .ok_or_else(|| MongoError::Config {
                message: format!("read model {db}.{name}: its registry entry disappeared"),
            })?;
        self.cache_layout(layout.clone());
        Ok(layout)
    }
}

enum Kind {
    Collection,
    View,
}

async fn collection_kind(db: &Database, name: &str) -> Result<Option<Kind>> {
    let specs: Vec<Document> = db
        .run_command(doc! { "listCollections": 1, "filter": { "name": name }, "nameOnly": false })
        .await
        .map_err(|e| MongoError::mongo("listCollections", name, None, e))?
        .get_document("cursor")
        .ok()
        .and_then(|c| c.get_array("firstBatch").ok())
        .map(|b| b.iter().filter_map(|d| d.as_document().cloned()).collect())
        .unwrap_or_default();
    Ok(specs.first().map(|s| match s.get_str("type") {
        Ok("view") => Kind::View,
        _ => Kind::Collection,
    }))
}

async fn create_view(db: &Database, name: &str, physical: &str) -> Result<()> {
    if let Some(Kind::View) = collection_kind(db, name).await? {
        return db
            .run_command(doc! { "collMod": name, "viewOn": physical, "pipeline": view_pipeline() })
            .await
            .map(|_| ())
            .map_err(|e| MongoError::mongo("collMod", name, None, e));
    }
    match db
        .run_command(doc! { "create": name, "viewOn": physical, "pipeline": view_pipeline() })
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if error_code(&e) == Some(48) => Ok(()),
        Err(e) => Err(MongoError::mongo("create view", name, None, e)),
    }
}

/// Creates on `to` the indexes `from` has (but `_id_` and the tombstone index).
async fn copy_indexes(db: &Database, from: &str, to: &str) -> Result<()> {
    let indexes: Vec<IndexModel> = db
        .collection::<Document>(from)
        .list_indexes()
        .await
        .map_err(|e| MongoError::mongo("listIndexes", from, None, e))?
        .try_collect()
        .await
        .map_err(|e| MongoError::mongo("listIndexes", from, None, e))?;
    let copies: Vec<IndexModel> = indexes
        .into_iter()
        .filter(|i| {
            let name = i.options.as_ref().and_then(|o| o.name.as_deref());
            name != Some("_id_") && name != Some(TOMBSTONE_INDEX)
        })
        .map(|i| {
            let mut options = i.options.unwrap_or_default();
            // Server-side fields of a listed index that a create refuses.
            options.version = None;
            IndexModel::builder().keys(i.keys).options(options).build()
        })
        .collect();
    if copies.is_empty() {
        return Ok(());
    }
    db.collection::<Document>(to)
        .create_indexes(copies)
        .await
        .map(|_| ())
        .map_err(|e| MongoError::mongo("createIndexes", to, None, e))
}
