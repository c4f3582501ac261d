//! The read-model store on MongoDB: cqrs-mongo's guarded bulk writer with checkpoints in
//! the same request, and the truncate floors of [`crate::truncate`].

use async_trait::async_trait;
use cqrs_core::{SourceVersion, Target};
use cqrs_mongo::bson::Bson;
use cqrs_mongo::{
    BulkWriter, Checkpoint, CheckpointStore, CheckpointUpdate, GuardedWrite, ItemOutcome,
    MongoClient,
};

use super::{ReadStore, StoreError};
use crate::truncate::MongoFloors;

/// MongoDB as the [`ReadStore`]: data and checkpoints through one bulk writer, floors in
/// their own collection, all through the [`MongoClient`] handle (which follows credential
/// rotations).
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let mongo = cqrs_mongo::MongoClient::from_uri("mongodb://127.0.0.1:27017/read").await?;
/// let store = sync_service::write::MongoStore::new(mongo)
///     .with_checkpoint_collection("_sync_checkpoints")
///     .with_truncate_collection("_sync_truncates");
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct MongoStore {
    mongo: MongoClient,
    bulk: BulkWriter,
    checkpoints: CheckpointStore,
    floors: MongoFloors,
}

impl MongoStore {
    /// Checkpoints in `_sync_checkpoints` and floors in `_sync_truncates` of `mongo`'s
    /// default database (the defaults of `[mongodb]`).
    ///
    /// ```no_run
    /// # fn demo(mongo: cqrs_mongo::MongoClient) {
    /// let store = sync_service::write::MongoStore::new(mongo);
    /// # }
    /// ```
    pub fn new(mongo: MongoClient) -> Self {
        let store = MongoStore {
            bulk: mongo.bulk_writer(),
            checkpoints: mongo.checkpoints(),
            floors: MongoFloors::new(mongo.clone(), "_sync_truncates"),
            mongo,
        };
        store.with_checkpoint_collection("_sync_checkpoints")
    }

    /// Keeps the checkpoints in `collection` of the default database.
    ///
    /// ```no_run
    /// # fn demo(mongo: cqrs_mongo::MongoClient) {
    /// let store = sync_service::write::MongoStore::new(mongo).with_checkpoint_collection("progress");
    /// # }
    /// ```
    pub fn with_checkpoint_collection(mut self, collection: &str) -> Self {
        self.checkpoints = self.mongo.checkpoints().in_collection(None, collection);
        self.bulk = self
            .mongo
            .bulk_writer()
            .with_checkpoint_store(self.checkpoints.clone());
        self
    }

    /// Keeps the truncate floors in `collection` of the default database.
    ///
    /// ```no_run
    /// # fn demo(mongo: cqrs_mongo::MongoClient) {
    /// let store = sync_service::write::MongoStore::new(mongo).with_truncate_collection("floors");
    /// # }
    /// ```
    pub fn with_truncate_collection(mut self, collection: &str) -> Self {
        self.floors = MongoFloors::new(self.mongo.clone(), collection);
        self
    }
}

#[async_trait]
impl ReadStore for MongoStore {
    async fn bulk(
        &self,
        writes: Vec<GuardedWrite>,
        checkpoints: Vec<CheckpointUpdate>,
    ) -> Result<Vec<ItemOutcome>, StoreError> {
        Ok(self.bulk.write(writes, checkpoints).await?.items)
    }

    async fn record_floor(
        &self,
        namespace: &str,
        floor: SourceVersion,
    ) -> Result<bool, StoreError> {
        Ok(self.floors.record(namespace, floor).await?)
    }

    async fn floors(
        &self,
        namespaces: Option<&[String]>,
    ) -> Result<Vec<(String, SourceVersion)>, StoreError> {
        Ok(self.floors.read(namespaces).await?)
    }

    async fn sweep(&self, target: &Target, floor: SourceVersion) -> Result<u64, StoreError> {
        Ok(self.floors.sweep(target, floor).await?)
    }

    async fn live_versions(
        &self,
        target: &Target,
        ids: &[Bson],
    ) -> Result<Vec<(Bson, SourceVersion)>, StoreError> {
        let Some((parents, field)) = crate::map::split_children_scope(target) else {
            return Ok(self.bulk.live_versions(target, ids).await?);
        };
        let children: Vec<(Bson, String)> = ids
            .iter()
            .filter_map(crate::map::split_versioned_id)
            .collect();
        let found = self
            .bulk
            .live_child_versions(&parents, &field, &children)
            .await?;
        Ok(found
            .into_iter()
            .map(|(id, key, version)| (crate::map::versioned_child_id(id, key), version))
            .collect())
    }

    async fn checkpoints(&self, projection: &str) -> Result<Vec<Checkpoint>, StoreError> {
        Ok(self.checkpoints.load_all(projection).await?)
    }

    async fn probe(&self) -> Result<(), StoreError> {
        Ok(self.mongo.ping().await?)
    }

    fn namespace(&self, target: &Target) -> String {
        self.floors.namespace(target)
    }

    fn generation(&self) -> u64 {
        self.mongo.generation()
    }
}
