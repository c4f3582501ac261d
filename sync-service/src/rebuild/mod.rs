//! Rebuilds: a new version of a read model built from a Debezium incremental snapshot
//! while the live version keeps serving and keeps being updated, then switched to in one
//! step (see the README's "Rebuilds").
//!
//! 1. **settling**: cqrs-mongo begins the new version (`orders__v2` next to the live
//!    `orders__v1`); every write from now on goes to both. The snapshot waits
//!    `[rebuild] settle_ms` so that every service instance has learnt of it (they re-read
//!    the layouts every `poll_interval_ms`).
//! 2. **snapshotting**: an `execute-snapshot` signal asks the connector for an incremental
//!    snapshot of the tables the read model is projected from. Their rows arrive on the
//!    change topics among live changes and are written as *fills*
//!    ([`cqrs_mongo::GuardedWrite::fill`]): they create what the new version lacks and
//!    never overwrite a newer change. The connector's notifications say how far it is.
//! 3. **completed** then **catching up**: once the connector reports the snapshot complete
//!    (and `settle_ms` later, its last rows being in the topics), the topics are read to
//!    their ends; when the service's checkpoints pass those ends, every snapshot row and
//!    every change before them is in the new version.
//! 4. **switched**: the read model's view shows the new version
//!    ([`cqrs_mongo::MongoClient::switch_rebuild`]); the previous one stays until
//!    [`Rebuilds::drop_previous`].
//!
//! Each step is a conditional update of the rebuild's record ([`RebuildRecord`]): the
//! `sync-service rebuild` command and every running service advance it, whoever comes
//! first; a restart of either resumes where the record says. [`Rebuilds::cancel`] stops
//! the snapshot and drops the new version; the live one is never touched.

mod notifications;
mod record;
mod signal;
mod topics;
mod tracker;

use std::collections::BTreeMap;
use std::time::Duration;

use bson::{DateTime, Document, doc};
use cqrs_mongo::{Layout, MongoClient};
use futures::TryStreamExt;
use mongodb::Collection;
use mongodb::options::ReturnDocument;

pub use notifications::{Notification, SnapshotReport};
pub use record::{PartitionEnd, RebuildRecord, RebuildState};
pub use signal::{SignalError, Signaller};
pub use topics::TopicError;
pub use tracker::SnapshotRows;

use crate::config::{SyncConfig, validate_identifier};
use crate::decode::{Decoder, RawRecord};

/// How long reading a topic to its end may take.
const READ_TIMEOUT: Duration = Duration::from_secs(60);

/// What to rebuild: a read model and the tables it is projected from.
///
/// ```
/// use sync_service::rebuild::RebuildPlan;
///
/// let plan = RebuildPlan::new("orders").table("orders.orders").table("orders.order_lines");
/// assert_eq!(plan.topics("cqrs"), ["cqrs.orders.orders", "cqrs.orders.order_lines"]);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RebuildPlan {
    /// The read model (its view's name).
    pub read_model: String,
    /// Its database (`mongodb.database` when `None`).
    pub database: Option<String>,
    /// Source tables, `schema.table`.
    pub tables: Vec<String>,
}

impl RebuildPlan {
    /// A plan for read model `name`; add its tables with [`RebuildPlan::table`].
    pub fn new(read_model: impl Into<String>) -> Self {
        RebuildPlan {
            read_model: read_model.into(),
            database: None,
            tables: Vec::new(),
        }
    }

    /// In another database than the service's.
    pub fn in_database(mut self, database: impl Into<String>) -> Self {
        self.database = Some(database.into());
        self
    }

    /// Adds a source table (`schema.table`).
    pub fn table(mut self, table: impl Into<String>) -> Self {
        let table = table.into();
        if !self.tables.contains(&table) {
            self.tables.push(table);
        }
        self
    }

    /// The plan of read model `name` from the `[[projection]]` mappings writing it.
    ///
    /// ```
    /// let config = sync_service::config::SyncConfig::from_toml_str(r#"
    ///     [kafka]
    ///     bootstrap_servers = "k:9092"
    ///     group_id = "g"
    ///     topic_prefix = "cqrs"
    ///     [mongodb]
    ///     uri = "mongodb://m"
    ///     database = "read"
    ///     [[projection]]
    ///     table = "shop.orders"
    ///     collection = "orders"
    /// "#).unwrap();
    /// let plan = sync_service::rebuild::RebuildPlan::from_config(&config, "orders", None).unwrap();
    /// assert_eq!(plan.tables, ["shop.orders"]);
    /// assert!(sync_service::rebuild::RebuildPlan::from_config(&config, "nope", None).is_err());
    /// ```
    pub fn from_config(
        config: &SyncConfig,
        read_model: &str,
        database: Option<&str>,
    ) -> Result<Self, RebuildError> {
        let mut plan = RebuildPlan::new(read_model);
        plan.database = database.map(str::to_owned);
        for mapping in &config.projections {
            let same_db = mapping.database.as_deref().or(database) == database;
            if mapping.collection == read_model && same_db {
                plan = plan.table(mapping.table.clone());
            }
        }
        if plan.tables.is_empty() {
            return Err(RebuildError::Plan(format!(
                "no [[projection]] writes read model {read_model:?}: name a collection of the \
                 configuration, or give the tables of a Rust projection with RebuildPlan::table"
            )));
        }
        Ok(plan)
    }

    /// The change topics of the tables: `<prefix>.<schema>.<table>`.
    pub fn topics(&self, prefix: &str) -> Vec<String> {
        self.tables
            .iter()
            .map(|t| format!("{prefix}.{t}"))
            .collect()
    }

    fn check(&self) -> Result<(), RebuildError> {
        if self.tables.is_empty() {
            return Err(RebuildError::Plan(
                "a rebuild needs its source tables".into(),
            ));
        }
        for table in &self.tables {
            let (schema, name) = table.split_once('.').ok_or_else(|| {
                RebuildError::Plan(format!("table {table:?} must be schema.table"))
            })?;
            validate_identifier(schema)
                .and_then(|()| validate_identifier(name))
                .map_err(|e| RebuildError::Plan(format!("table {table:?}: {e}")))?;
        }
        Ok(())
    }
}

/// A rebuild could not take a step.
#[derive(Debug, thiserror::Error)]
pub enum RebuildError {
    /// The plan or the configuration does not allow it.
    #[error("rebuild: {0}")]
    Plan(String),
    /// The read model's versions (cqrs-mongo).
    #[error(transparent)]
    Layout(#[from] cqrs_mongo::MongoError),
    /// The rebuild records or the checkpoints.
    #[error("rebuild records in {collection}: {source}")]
    Records {
        /// Collection.
        collection: String,
        /// Cause.
        #[source]
        source: mongodb::error::Error,
    },
    /// Signalling the connector.
    #[error(transparent)]
    Signal(#[from] SignalError),
    /// Reading the notifications or the change topics.
    #[error(transparent)]
    Topic(#[from] TopicError),
}

/// Starts, advances, cancels and finishes rebuilds.
pub struct Rebuilds {
    config: SyncConfig,
    mongo: MongoClient,
    decoder: Decoder,
    signaller: Option<Signaller>,
    /// The Vault client behind `mongo`, when `[vault]` provides it.
    _keep_alive: crate::runtime::KeepAlive,
}

impl Rebuilds {
    /// Rebuilds with `config`'s `[rebuild]`, `[kafka]` and `[mongodb]` settings. Without
    /// `rebuild.signal_database_url` it can follow rebuilds but not start or cancel them.
    pub fn new(config: &SyncConfig, mongo: MongoClient) -> Result<Self, RebuildError> {
        let signaller = match config.rebuild.signal_url() {
            Some(url) => {
                let (schema, table) = config
                    .rebuild
                    .signal_table_parts()
                    .map_err(RebuildError::Plan)?;
                Some(Signaller::new(url, schema, table)?)
            }
            None => None,
        };
        let decoder =
            crate::runtime::decoder(config).map_err(|e| RebuildError::Plan(e.to_string()))?;
        Ok(Rebuilds {
            config: config.clone(),
            mongo,
            decoder,
            signaller,
            _keep_alive: Vec::new(),
        })
    }

    /// Rebuilds on a MongoDB client of their own (the `rebuild` command), connected as the
    /// service connects (through Vault with a `[vault]` section).
    ///
    /// ```no_run
    /// # async fn demo(config: sync_service::config::SyncConfig) -> Result<(), sync_service::ServiceError> {
    /// let rebuilds = sync_service::rebuild::Rebuilds::connect(&config).await?;
    /// let record = rebuilds
    ///     .start(&sync_service::rebuild::RebuildPlan::from_config(&config, "orders", None)?)
    ///     .await?;
    /// println!("building {}", record.building);
    /// # Ok(()) }
    /// ```
    pub async fn connect(config: &SyncConfig) -> Result<Self, crate::ServiceError> {
        let (mongo, keep_alive) = crate::runtime::connect_mongo(config).await?;
        let mut rebuilds = Rebuilds::new(config, mongo)?;
        rebuilds._keep_alive = keep_alive;
        Ok(rebuilds)
    }

    fn records(&self) -> Collection<RebuildRecord> {
        self.mongo
            .database(None)
            .collection(&self.config.rebuild.collection)
    }

    fn records_failed(&self) -> impl FnOnce(mongodb::error::Error) -> RebuildError + '_ {
        move |source| RebuildError::Records {
            collection: self.config.rebuild.collection.clone(),
            source,
        }
    }

    fn signaller(&self) -> Result<&Signaller, RebuildError> {
        self.signaller.as_ref().ok_or_else(|| {
            RebuildError::Plan(
                "rebuild.signal_database_url is not set: this process cannot signal Debezium"
                    .into(),
            )
        })
    }

    fn database_of(&self, database: Option<&str>) -> String {
        database.map_or_else(|| self.mongo.default_database_name(), str::to_owned)
    }

    /// The record of read model `name`'s last rebuild.
    pub async fn get(
        &self,
        name: &str,
        database: Option<&str>,
    ) -> Result<Option<RebuildRecord>, RebuildError> {
        let key = RebuildRecord::key(&self.database_of(database), name);
        self.records()
            .find_one(doc! { "_id": key })
            .await
            .map_err(self.records_failed())
    }

    /// Every rebuild still running.
    pub async fn active(&self) -> Result<Vec<RebuildRecord>, RebuildError> {
        let states: Vec<&str> = [
            RebuildState::Settling,
            RebuildState::Snapshotting,
            RebuildState::Completed,
            RebuildState::CatchingUp,
        ]
        .iter()
        .map(|s| s.as_str())
        .collect();
        self.records()
            .find(doc! { "state": { "$in": states } })
            .await
            .map_err(self.records_failed())?
            .try_collect()
            .await
            .map_err(self.records_failed())
    }

    /// Starts a rebuild of `plan`, or returns the one already running (a restarted command
    /// resumes it). Needs `rebuild.signal_database_url`.
    pub async fn start(&self, plan: &RebuildPlan) -> Result<RebuildRecord, RebuildError> {
        plan.check()?;
        self.signaller()?;
        let database = self.database_of(plan.database.as_deref());
        if let Some(running) = self.get(&plan.read_model, Some(&database)).await?
            && running.state.is_active()
        {
            return Ok(running);
        }
        let prefix = self.config.kafka.topic_prefix.as_deref().unwrap_or("cqrs");
        let layout = self
            .mongo
            .begin_rebuild(Some(&database), &plan.read_model)
            .await?;
        let building = layout.building.clone().ok_or_else(|| {
            RebuildError::Plan(format!("{}: no version being built", plan.read_model))
        })?;
        let record = RebuildRecord {
            id: RebuildRecord::key(&database, &plan.read_model),
            database,
            read_model: plan.read_model.clone(),
            signal_id: format!("rebuild-{}", uuid::Uuid::now_v7().simple()),
            building,
            tables: plan.tables.clone(),
            topics: plan.topics(prefix),
            state: RebuildState::Settling,
            started_at: DateTime::now(),
            signalled_at: None,
            completed_at: None,
            switched_at: None,
            rows: 0,
            estimate: None,
            scanned: BTreeMap::new(),
            key_fraction: None,
            catch_up: Vec::new(),
            error: None,
        };
        self.records()
            .replace_one(doc! { "_id": &record.id }, &record)
            .upsert(true)
            .await
            .map_err(self.records_failed())?;
        tracing::info!(read_model = %record.id, building = %record.building, tables = ?record.tables, "rebuild started");
        Ok(record)
    }

    /// Moves `from` to `to` with `set`, if no one else did; the record as it is then.
    async fn transition(
        &self,
        record: &RebuildRecord,
        to: RebuildState,
        mut set: Document,
    ) -> Result<RebuildRecord, RebuildError> {
        set.insert("state", to.as_str());
        let moved = self
            .records()
            .find_one_and_update(
                doc! { "_id": &record.id, "state": record.state.as_str() },
                doc! { "$set": set },
            )
            .return_document(ReturnDocument::After)
            .await
            .map_err(self.records_failed())?;
        match moved {
            Some(moved) => {
                tracing::info!(read_model = %moved.id, state = moved.state.as_str(), "rebuild advanced");
                Ok(moved)
            }
            // Someone else moved it: take what they wrote.
            None => Ok(self
                .records()
                .find_one(doc! { "_id": &record.id })
                .await
                .map_err(self.records_failed())?
                .unwrap_or_else(|| record.clone())),
        }
    }

    /// Takes the next step of `record` if it is due; the record as it is then.
    pub async fn advance(&self, record: &RebuildRecord) -> Result<RebuildRecord, RebuildError> {
        let settle = self.config.rebuild.settle();
        match record.state {
            RebuildState::Settling => {
                let Some(signaller) = &self.signaller else {
                    return Ok(record.clone());
                };
                if elapsed(record.started_at) < settle {
                    return Ok(record.clone());
                }
                let estimate = signaller.estimate(&record.tables).await?;
                signaller
                    .execute_snapshot(&record.signal_id, &record.tables)
                    .await?;
                let mut set = doc! { "signalled_at": DateTime::now() };
                if let Some(estimate) = estimate {
                    set.insert("estimate", i64::try_from(estimate).unwrap_or(i64::MAX));
                }
                self.transition(record, RebuildState::Snapshotting, set)
                    .await
            }
            RebuildState::Snapshotting => {
                let report = self.report(&record.signal_id).await?;
                let mut set = doc! {};
                for (table, rows) in &report.scanned {
                    set.insert(
                        format!("scanned.{}", table.replace('.', "/")),
                        i64::try_from(*rows).unwrap_or(i64::MAX),
                    );
                }
                if let Some(fraction) = report.fraction_of_keys() {
                    set.insert("key_fraction", fraction);
                }
                if report.aborted {
                    set.insert("error", "the connector aborted the incremental snapshot");
                    return self.transition(record, RebuildState::Failed, set).await;
                }
                if report.completed {
                    set.insert("completed_at", DateTime::now());
                    return self.transition(record, RebuildState::Completed, set).await;
                }
                if !set.is_empty() {
                    self.records()
                        .update_one(doc! { "_id": &record.id }, doc! { "$set": set })
                        .await
                        .map_err(self.records_failed())?;
                }
                Ok(self
                    .get(&record.read_model, Some(&record.database))
                    .await?
                    .unwrap_or_else(|| record.clone()))
            }
            RebuildState::Completed => {
                if record.completed_at.is_some_and(|at| elapsed(at) < settle) {
                    return Ok(record.clone());
                }
                let ends = self.topic_ends(&record.topics).await?;
                let set = doc! { "catch_up": bson::to_bson(&ends).unwrap_or_default() };
                self.transition(record, RebuildState::CatchingUp, set).await
            }
            RebuildState::CatchingUp => {
                if !self.caught_up(&record.catch_up).await? {
                    return Ok(record.clone());
                }
                self.mongo
                    .switch_rebuild(Some(&record.database), &record.read_model)
                    .await?;
                self.transition(
                    record,
                    RebuildState::Switched,
                    doc! { "switched_at": DateTime::now() },
                )
                .await
            }
            RebuildState::Switched | RebuildState::Cancelled | RebuildState::Failed => {
                Ok(record.clone())
            }
        }
    }

    /// What the connector's notifications say about signal `id`.
    async fn report(&self, id: &str) -> Result<SnapshotReport, RebuildError> {
        let mut payloads = Vec::new();
        let topic = &self.config.rebuild.notification_topic;
        topics::read_to_end(
            &self.config.kafka,
            topic,
            &BTreeMap::new(),
            READ_TIMEOUT,
            |m| payloads.push(topics::payload(m)),
        )
        .await?;
        let mut report = SnapshotReport::default();
        for (key, value) in &payloads {
            let mut raw = RawRecord::new(topic);
            if let Some(key) = key {
                raw = raw.with_key(key);
            }
            let Some(value) = value else { continue };
            raw = raw.with_value(value);
            match self.decoder.decode(&raw).await {
                Ok(decoded) => {
                    if let Some(n) = decoded
                        .value
                        .as_ref()
                        .and_then(|v| Notification::from_datum(&v.datum))
                    {
                        report.add(id, &n);
                    }
                }
                Err(e) => tracing::debug!(error = %e, "undecodable notification skipped"),
            }
        }
        Ok(report)
    }

    /// The next offset of every partition of `topics` now, read from the checkpoints on.
    async fn topic_ends(&self, topics: &[String]) -> Result<Vec<PartitionEnd>, RebuildError> {
        let positions = self.checkpoint_positions().await?;
        let mut ends = Vec::new();
        for topic in topics {
            let start: BTreeMap<i32, i64> = positions
                .iter()
                .filter(|((t, _), _)| t == topic)
                .map(|((_, p), position)| (*p, position + 1))
                .collect();
            let found =
                topics::read_to_end(&self.config.kafka, topic, &start, READ_TIMEOUT, |_| {})
                    .await?;
            for (partition, offset) in found {
                if offset > 0 {
                    ends.push(PartitionEnd {
                        topic: topic.clone(),
                        partition,
                        offset,
                    });
                }
            }
        }
        Ok(ends)
    }

    /// True when some projection's checkpoint reached every end of `ends`.
    async fn caught_up(&self, ends: &[PartitionEnd]) -> Result<bool, RebuildError> {
        let positions = self.checkpoint_positions().await?;
        Ok(ends.iter().all(|end| {
            positions
                .get(&(end.topic.clone(), end.partition))
                .is_some_and(|position| *position >= end.offset - 1)
        }))
    }

    /// The furthest checkpoint of each `(topic, partition)`.
    async fn checkpoint_positions(&self) -> Result<BTreeMap<(String, i32), i64>, RebuildError> {
        let collection = &self.config.mongodb.checkpoint_collection;
        let docs: Vec<Document> = self
            .mongo
            .database(None)
            .collection::<Document>(collection)
            .find(doc! {})
            .await
            .map_err(self.records_failed())?
            .try_collect()
            .await
            .map_err(self.records_failed())?;
        let mut out: BTreeMap<(String, i32), i64> = BTreeMap::new();
        for d in docs {
            let (Ok(partition), Ok(position)) = (d.get_str("partition"), d.get_i64("position"))
            else {
                continue;
            };
            let Some((topic, p)) = partition.rsplit_once('/') else {
                continue;
            };
            let Ok(p) = p.parse::<i32>() else { continue };
            let entry = out.entry((topic.to_owned(), p)).or_insert(position);
            *entry = (*entry).max(position);
        }
        Ok(out)
    }

    /// Stops the snapshot of read model `name`'s running rebuild and drops the version
    /// being built; the live version never changed. Returns after `[rebuild] settle_ms`,
    /// once the running services have stopped writing to the dropped version. Needs
    /// `rebuild.signal_database_url` unless the snapshot was not signalled yet.
    pub async fn cancel(
        &self,
        name: &str,
        database: Option<&str>,
    ) -> Result<Option<RebuildRecord>, RebuildError> {
        let Some(record) = self.get(name, database).await? else {
            return Ok(None);
        };
        if !record.state.is_active() && record.state != RebuildState::Failed {
            return Ok(Some(record));
        }
        if record.state != RebuildState::Settling {
            self.signaller()?
                .stop_snapshot(&record.signal_id, &record.tables)
                .await?;
        }
        self.mongo
            .cancel_rebuild(Some(&record.database), &record.read_model)
            .await?;
        let cancelled = self
            .transition(&record, RebuildState::Cancelled, doc! {})
            .await?;
        // Running services write to the version being built until they re-read the
        // layout, and MongoDB creates it again on their first write: once they all have
        // (`settle_ms`, as when a rebuild begins), drop what they wrote.
        tokio::time::sleep(self.config.rebuild.settle()).await;
        self.mongo
            .drop_abandoned(Some(&record.database), &record.read_model, &record.building)
            .await?;
        Ok(Some(cancelled))
    }

    /// Drops the version a switch replaced.
    pub async fn drop_previous(
        &self,
        name: &str,
        database: Option<&str>,
    ) -> Result<Layout, RebuildError> {
        let database = self.database_of(database);
        Ok(self.mongo.drop_previous(Some(&database), name).await?)
    }

    /// Re-reads the layouts of the read models this process writes (a rebuild begun or
    /// switched by another process).
    pub async fn refresh_layouts(&self) -> Result<(), RebuildError> {
        Ok(self.mongo.refresh_layouts().await?)
    }

    /// Adds the snapshot rows applied since the last call to the running rebuilds reading
    /// their tables (service side).
    pub async fn add_rows(&self, counts: &BTreeMap<String, u64>) -> Result<(), RebuildError> {
        for (table, rows) in counts {
            if *rows == 0 {
                continue;
            }
            self.records()
                .update_many(
                    doc! { "tables": table, "state": { "$in": ["snapshotting", "completed", "catching_up"] } },
                    doc! { "$inc": { "rows": i64::try_from(*rows).unwrap_or(i64::MAX) } },
                )
                .await
                .map_err(self.records_failed())?;
        }
        Ok(())
    }
}

/// Time since `at` (zero if `at` is in the future).
fn elapsed(at: DateTime) -> Duration {
    let ms = DateTime::now().timestamp_millis() - at.timestamp_millis();
    Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}
