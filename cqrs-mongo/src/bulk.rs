//! Batched guarded writes across collections and databases, with checkpoints in the same
//! request: the sync-service's entry point.
//!
//! [`BulkWriter::write`] takes projection writes ([`ReadModelWrite<Bson, Document>`]) and
//! checkpoint updates, and returns one [`ItemOutcome`] per write and per checkpoint:
//! applied, stale or failed.
//!
//! * **Order per document**: the writes of one document (same database, collection and
//!   id) apply in the order given. A batch where every document appears once is a single
//!   unordered bulk request; the *n*-th write of a document goes into the *n*-th request.
//! * **Unordered across documents**: one failing item never stops the others.
//! * **A failed write holds back the rest of its document**: once a write of a document
//!   fails (refused by the server, or not buildable), its later writes in the batch are not
//!   sent and fail as held back, so nothing is applied on top of a missing change.
//! * **Stale**: a duplicate key on `_id` (code 11000) is the guard saying "stored version
//!   is as new or newer": [`ItemOutcome::Stale`], confirmed once by a retry of just those
//!   items (see [`guard`] for why) unless [`BulkOptions::confirm_stale`] is
//!   off.
//! * **Whole-request failures** (network, authentication, write concern) are an `Err`:
//!   nothing is known about any item, and resending the whole batch is safe because
//!   every write is idempotent.

use std::{collections::HashMap, fmt, sync::Arc};

use bson::{Bson, Document, doc};
use cqrs_core::{ReadModelWrite, SourceVersion};
use mongodb::{
    Namespace,
    error::ErrorKind,
    options::{ReplaceOneModel, UpdateOneModel, WriteModel},
};
use tokio::sync::OnceCell;

use crate::{
    checkpoint::{CheckpointStore, CheckpointUpdate},
    client::MongoClient,
    error::{DuplicateOn, MongoError, Result, classify_duplicate, display_id},
    guard::{self, GuardedOp, OpBody, WriteOutcome},
    model::{GuardedWrite, VersionFields},
};

/// How bulk requests are sent.
///
/// ```
/// assert_eq!(cqrs_mongo::BulkStrategy::default(), cqrs_mongo::BulkStrategy::Auto);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum BulkStrategy {
    /// [`ClientBulkWrite`](BulkStrategy::ClientBulkWrite) when the server supports it
    /// (MongoDB 8.0+, wire version 25), else [`PerCollection`](BulkStrategy::PerCollection).
    #[default]
    Auto,
    /// One client-level `bulkWrite` command spanning every namespace (checkpoints
    /// included).
    ClientBulkWrite,
    /// One `update` command per namespace, sent concurrently; checkpoints follow the data
    /// in their own command.
    PerCollection,
}

/// Options of a [`BulkWriter`].
///
/// ```
/// let o = cqrs_mongo::BulkOptions::default();
/// assert!(o.confirm_stale);
/// assert_eq!(o.version_field, "_version");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BulkOptions {
    /// Request shape.
    pub strategy: BulkStrategy,
    /// Retry items that met a duplicate key once before calling them stale (protects
    /// against two writers racing to create the same document). Turn off only when a
    /// single writer owns each id.
    pub confirm_stale: bool,
    /// Version field of the targeted collections (`_version` by default, as
    /// [`cqrs_core::ReadModel::VERSION_FIELD`]).
    pub version_field: String,
    /// Largest number of statements in one `update` command
    /// ([`BulkStrategy::PerCollection`]; the client-level command is split by the driver).
    pub max_statements: usize,
    /// Insert new documents first: the first full replace (or tombstone) of each document
    /// in a batch is sent as an unordered `insert_many`, and only the duplicate keys go
    /// through the guarded upsert. Inserting where no document exists is exactly what the
    /// guarded upsert would do, at insert speed (snapshots, bulk loads). When most inserts
    /// meet existing documents (update-heavy loads) the writer stops trying for a while.
    pub insert_first: bool,
}

impl Default for BulkOptions {
    fn default() -> Self {
        BulkOptions {
            strategy: BulkStrategy::Auto,
            confirm_stale: true,
            version_field: "_version".to_string(),
            max_statements: 10_000,
            insert_first: true,
        }
    }
}

/// Why one item failed.
///
/// ```
/// let e = cqrs_mongo::ItemError {
///     namespace: "db.orders".into(), id: "o-1".into(), code: Some(2), message: "bad".into(),
/// };
/// assert!(e.to_string().contains("db.orders"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemError {
    /// `database.collection`.
    pub namespace: String,
    /// Document id (or `projection/partition` for a checkpoint).
    pub id: String,
    /// Server error code, when the server refused the item.
    pub code: Option<i32>,
    /// What went wrong.
    pub message: String,
}

impl fmt::Display for ItemError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (id {}): ", self.namespace, self.id)?;
        if let Some(code) = self.code {
            write!(f, "code {code}: ")?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for ItemError {}

/// The fate of one item of a bulk.
///
/// ```
/// use cqrs_mongo::{ItemOutcome, WriteOutcome};
/// assert_eq!(ItemOutcome::Stale.outcome(), Some(WriteOutcome::Stale));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ItemOutcome {
    /// Applied.
    Applied,
    /// Stale: the stored version was as new or newer; nothing changed.
    Stale,
    /// Refused (invalid write, version out of range, another unique index...).
    Failed(ItemError),
}

impl ItemOutcome {
    /// The write outcome, `None` for a failure.
    pub fn outcome(&self) -> Option<WriteOutcome> {
        match self {
            ItemOutcome::Applied => Some(WriteOutcome::Applied),
            ItemOutcome::Stale => Some(WriteOutcome::Stale),
            ItemOutcome::Failed(_) => None,
        }
    }

    /// True for [`ItemOutcome::Failed`].
    pub fn is_failed(&self) -> bool {
        matches!(self, ItemOutcome::Failed(_))
    }
}

/// Per-item results of [`BulkWriter::write`], in input order.
///
/// ```
/// use cqrs_mongo::{BulkResult, ItemOutcome};
/// let r = BulkResult { items: vec![ItemOutcome::Applied, ItemOutcome::Stale], checkpoints: vec![], requests: 1 };
/// assert_eq!((r.applied(), r.stale(), r.failed()), (1, 1, 0));
/// assert!(r.is_complete());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BulkResult {
    /// One outcome per write.
    pub items: Vec<ItemOutcome>,
    /// One outcome per checkpoint (stale = the stored checkpoint was already there or
    /// further).
    pub checkpoints: Vec<ItemOutcome>,
    /// Requests sent to the server (1 in the common case).
    pub requests: usize,
}

impl BulkResult {
    /// Writes applied.
    pub fn applied(&self) -> usize {
        self.items
            .iter()
            .filter(|o| **o == ItemOutcome::Applied)
            .count()
    }

    /// Writes found stale.
    pub fn stale(&self) -> usize {
        self.items
            .iter()
            .filter(|o| **o == ItemOutcome::Stale)
            .count()
    }

    /// Writes (not checkpoints) that failed.
    pub fn failed(&self) -> usize {
        self.items.iter().filter(|o| o.is_failed()).count()
    }

    /// True when no write and no checkpoint failed.
    pub fn is_complete(&self) -> bool {
        !self
            .items
            .iter()
            .chain(&self.checkpoints)
            .any(ItemOutcome::is_failed)
    }
}

#[derive(Debug, Clone, Copy)]
enum Slot {
    Item(usize),
    Checkpoint(usize),
    /// The copy of an item's write for the version of its read model being rebuilt: its
    /// outcome is not the item's (the live version decides), a failure is logged.
    Shadow(usize),
}

#[derive(Debug, Clone)]
struct Unit {
    /// Where it is sent: a physical collection (see `layout`).
    ns: Namespace,
    /// The read model it writes, as errors name it.
    model: Namespace,
    id: String,
    filter: Document,
    body: OpBody,
    /// Sent as this update pipeline instead of `body` (a replacement keeping the
    /// children of a document that holds some: see `children::keep_form`).
    pipeline: Option<Vec<Document>>,
    slot: Slot,
}

/// Units settled by the insert-first pass.
#[derive(Debug, Default)]
struct Inserted {
    settled: Vec<(Slot, ItemOutcome)>,
    requests: usize,
}

/// Raw result of one unit in one request.
#[derive(Debug, Clone)]
enum Raw {
    Ok,
    DuplicateId,
    Failed(Option<i32>, String),
}

/// Sends guarded writes in bulk.
///
/// ```no_run
/// # async fn demo(mongo: cqrs_mongo::MongoClient) -> cqrs_mongo::Result<()> {
/// use cqrs_core::{ReadModelWrite, SourceVersion, Target};
/// use cqrs_mongo::{bson::{doc, Bson}, CheckpointUpdate, ItemOutcome};
///
/// let writer = mongo.bulk_writer();
/// let writes = vec![
///     ReadModelWrite::Replace {
///         target: Target::in_database("shop", "orders"),
///         id: Bson::from("o-1"),
///         version: SourceVersion::with_index(0x1A2B3C, 0),
///         document: doc! { "status": "paid", "total": 42 },
///     },
///     ReadModelWrite::Delete {
///         target: Target::collection("carts"),
///         id: Bson::from("c-9"),
///         version: SourceVersion::with_index(0x1A2B3C, 1),
///     },
/// ];
/// let result = writer
///     .write(writes, vec![CheckpointUpdate::new("shop", "cdc.public.orders/0", 1234)])
///     .await?;
/// for (i, outcome) in result.items.iter().enumerate() {
///     if let ItemOutcome::Failed(e) = outcome {
///         eprintln!("write {i} failed: {e}");
///     }
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct BulkWriter {
    client: MongoClient,
    checkpoints: CheckpointStore,
    options: BulkOptions,
    fields: VersionFields,
    resolved: Arc<OnceCell<BulkStrategy>>,
    /// Batches left before insert-first is tried again after a mostly-duplicate attempt.
    insert_first_pause: Arc<std::sync::atomic::AtomicU32>,
}

impl BulkWriter {
    pub(crate) fn client(&self) -> &MongoClient {
        &self.client
    }

    pub(crate) fn version_fields(&self) -> &VersionFields {
        &self.fields
    }
}

/// Batches to skip insert-first after an attempt where most inserts met existing documents.
const INSERT_FIRST_PAUSE: u32 = 16;

impl BulkWriter {
    /// A writer with default options, checkpoints in the default store.
    pub fn new(client: MongoClient) -> Self {
        let options = BulkOptions::default();
        BulkWriter {
            checkpoints: CheckpointStore::new(client.clone()),
            fields: VersionFields::new(&options.version_field),
            client,
            options,
            resolved: Arc::new(OnceCell::new()),
            insert_first_pause: Arc::default(),
        }
    }

    /// Uses these options.
    ///
    /// ```no_run
    /// # fn demo(mongo: cqrs_mongo::MongoClient) {
    /// use cqrs_mongo::{BulkOptions, BulkStrategy};
    /// let writer = mongo.bulk_writer().with_options(BulkOptions {
    ///     strategy: BulkStrategy::PerCollection,
    ///     ..BulkOptions::default()
    /// });
    /// # }
    /// ```
    pub fn with_options(mut self, options: BulkOptions) -> Self {
        self.fields = VersionFields::new(&options.version_field);
        self.resolved = Arc::new(match options.strategy {
            BulkStrategy::Auto => OnceCell::new(),
            fixed => OnceCell::new_with(Some(fixed)),
        });
        self.options = options;
        self
    }

    /// Saves checkpoints in this store.
    ///
    /// ```no_run
    /// # fn demo(mongo: cqrs_mongo::MongoClient) {
    /// let store = mongo.checkpoints().in_collection(None, "sync_checkpoints");
    /// let writer = mongo.bulk_writer().with_checkpoint_store(store);
    /// # }
    /// ```
    pub fn with_checkpoint_store(mut self, store: CheckpointStore) -> Self {
        self.checkpoints = store;
        self
    }

    /// The strategy in use (resolving [`BulkStrategy::Auto`] by asking the server once).
    ///
    /// ```no_run
    /// # async fn demo(mongo: cqrs_mongo::MongoClient) -> cqrs_mongo::Result<()> {
    /// println!("{:?}", mongo.bulk_writer().strategy().await?);
    /// # Ok(()) }
    /// ```
    pub async fn strategy(&self) -> Result<BulkStrategy> {
        self.resolved
            .get_or_try_init(|| async {
                let hello = self
                    .client
                    .database(Some("admin"))
                    .run_command(doc! { "hello": 1 })
                    .await
                    .map_err(|e| MongoError::mongo("hello", "admin", None, e))?;
                let wire = match hello.get("maxWireVersion") {
                    Some(Bson::Int32(v)) => i64::from(*v),
                    Some(Bson::Int64(v)) => *v,
                    _ => 0,
                };
                Ok(if wire >= 25 {
                    BulkStrategy::ClientBulkWrite
                } else {
                    BulkStrategy::PerCollection
                })
            })
            .await
            .copied()
    }

    /// Applies one guarded write (one round trip; see [`guard`]).
    ///
    /// ```no_run
    /// # async fn demo(mongo: cqrs_mongo::MongoClient) -> cqrs_mongo::Result<()> {
    /// use cqrs_core::{ReadModelWrite, SourceVersion, Target};
    /// use cqrs_mongo::bson::{doc, Bson};
    /// let outcome = mongo.bulk_writer().apply(&ReadModelWrite::Patch {
    ///     target: Target::collection("orders"),
    ///     id: Bson::from("o-1"),
    ///     version: SourceVersion::new(8),
    ///     set: doc! { "status": "shipped" },
    ///     unset: vec!["eta".into()],
    /// }).await?;
    /// # Ok(()) }
    /// ```
    pub async fn apply(&self, write: impl Into<GuardedWrite>) -> Result<WriteOutcome> {
        let op = guard::build(&write.into(), &self.fields, bson::DateTime::now())?;
        guard::execute_resolved(&self.client, &op, self.options.confirm_stale).await
    }

    /// Applies many guarded writes and saves checkpoints, returning one outcome per item.
    ///
    /// Writes go to `target.database` (the client's default database when `None`) and
    /// `target.collection`. Checkpoints travel in the same request as the last writes
    /// ([`BulkStrategy::ClientBulkWrite`]), or right after them
    /// ([`BulkStrategy::PerCollection`]). A checkpoint only moves forward. It is written
    /// even if some items of the batch failed (their failures are in the result, for the
    /// caller to retry or dead-letter); a caller that wants the checkpoint only after a
    /// complete batch passes no checkpoint here and calls
    /// [`CheckpointStore::save`] when [`BulkResult::is_complete`].
    ///
    /// An `Err` means the request as a whole failed: resend the batch (it is idempotent).
    pub async fn write<W: Into<GuardedWrite>>(
        &self,
        writes: Vec<W>,
        checkpoints: Vec<CheckpointUpdate>,
    ) -> Result<BulkResult> {
        let writes: Vec<GuardedWrite> = writes.into_iter().map(Into::into).collect();
        let mut items: Vec<Option<ItemOutcome>> = vec![None; writes.len()];
        // Documents with a failed write: their later writes are held back.
        let mut failed_docs: std::collections::HashSet<String> = Default::default();
        let mut cp_out: Vec<Option<ItemOutcome>> = vec![None; checkpoints.len()];
        let default_db = self.client.default_database_name();
        let now = bson::DateTime::now();

        // Which document each write goes to: numbers its writes into rounds and holds them
        // back after a failure.
        let doc_keys: Vec<String> = writes
            .iter()
            .map(|w| doc_key(&w.write, &default_db))
            .collect();

        // Build the units, numbering each document's writes into rounds.
        let mut seen: HashMap<&str, usize> = HashMap::new();
        let mut rounds: Vec<Vec<Unit>> = Vec::new();
        for (i, guarded) in writes.iter().enumerate() {
            let write = &guarded.write;
            let op: GuardedOp = match guard::build(guarded, &self.fields, now) {
                Ok(op) => op,
                Err(e) => {
                    failed_docs.insert(doc_keys[i].clone());
                    items[i] = Some(ItemOutcome::Failed(ItemError {
                        namespace: ns_of(
                            write.target().database.as_deref(),
                            &default_db,
                            &write.target().collection,
                        ),
                        id: display_id(write.id()),
                        code: None,
                        message: e.to_string(),
                    }));
                    continue;
                }
            };
            let db = op.database.clone().unwrap_or_else(|| default_db.clone());
            let round = seen.entry(&doc_keys[i]).or_insert(0);
            if rounds.len() <= *round {
                rounds.push(Vec::new());
            }
            rounds[*round].push(Unit {
                ns: Namespace::new(db.clone(), op.collection.clone()),
                model: Namespace::new(db, op.collection.clone()),
                id: display_id(&op.id),
                filter: op.filter,
                body: op.body,
                pipeline: None,
                slot: Slot::Item(i),
            });
            *round += 1;
        }

        let cp_ns = self.checkpoints.namespace();
        let mut cp_units = Vec::new();
        for (j, cp) in checkpoints.iter().enumerate() {
            let id = format!("{}/{}", cp.projection, cp.partition);
            match cp.guarded(&cp_ns.coll) {
                Ok((filter, update)) => cp_units.push(Unit {
                    ns: cp_ns.clone(),
                    model: cp_ns.clone(),
                    id,
                    filter,
                    body: OpBody::Update(update),
                    pipeline: None,
                    slot: Slot::Checkpoint(j),
                }),
                Err(e) => {
                    cp_out[j] = Some(ItemOutcome::Failed(ItemError {
                        namespace: cp_ns.to_string(),
                        id,
                        code: None,
                        message: e.to_string(),
                    }))
                }
            }
        }

        // Read models live in versioned collections (see `layout`): writes go to the live
        // version, and a copy to the version being rebuilt, if any.
        self.resolve_physical(&mut rounds).await?;

        let strategy = if rounds.is_empty() && cp_units.is_empty() {
            BulkStrategy::PerCollection
        } else {
            self.strategy().await?
        };
        if !cp_units.is_empty() {
            if strategy == BulkStrategy::ClientBulkWrite && !rounds.is_empty() {
                if let Some(last) = rounds.last_mut() {
                    last.append(&mut cp_units);
                }
            } else {
                rounds.push(std::mem::take(&mut cp_units));
            }
        }

        let mut requests = 0;
        for (n, mut round) in rounds.into_iter().enumerate() {
            round.retain(|unit| match unit.slot {
                Slot::Shadow(i) if failed_docs.contains(&doc_keys[i]) => false,
                Slot::Item(i) if failed_docs.contains(&doc_keys[i]) => {
                    items[i] = Some(ItemOutcome::Failed(ItemError {
                        namespace: unit.model.to_string(),
                        id: unit.id.clone(),
                        code: None,
                        message: "held back: an earlier write of this document in the batch \
                                  failed"
                            .into(),
                    }));
                    false
                }
                _ => true,
            });
            let mut settled: Vec<(Slot, ItemOutcome)> = Vec::new();
            // Only a document's first write of the batch may be an insert.
            if n == 0 && self.use_insert_first() {
                let inserted = self.insert_first(&mut round).await?;
                requests += inserted.requests;
                settled.extend(inserted.settled);
            }
            let (outcomes, sent) = self.run_round(strategy, &round).await?;
            requests += sent;
            settled.extend(round.iter().map(|unit| unit.slot).zip(outcomes));
            for (slot, outcome) in settled {
                match slot {
                    Slot::Item(i) => {
                        if matches!(outcome, ItemOutcome::Failed(_)) {
                            failed_docs.insert(doc_keys[i].clone());
                        }
                        items[i] = Some(outcome);
                    }
                    Slot::Checkpoint(j) => cp_out[j] = Some(outcome),
                    Slot::Shadow(i) => {
                        if let ItemOutcome::Failed(e) = outcome {
                            tracing::warn!(item = i, error = %e, "write to the version being rebuilt failed");
                        }
                    }
                }
            }
        }

        let unfinished = |ns: String| {
            ItemOutcome::Failed(ItemError {
                namespace: ns,
                id: String::new(),
                code: None,
                message: "not executed".into(),
            })
        };
        Ok(BulkResult {
            items: items
                .into_iter()
                .map(|o| o.unwrap_or_else(|| unfinished(default_db.clone())))
                .collect(),
            checkpoints: cp_out
                .into_iter()
                .map(|o| o.unwrap_or_else(|| unfinished(cp_ns.to_string())))
                .collect(),
            requests,
        })
    }

    /// Points every unit at the live physical collection of its read model and adds a
    /// shadow copy for the version being rebuilt.
    async fn resolve_physical(&self, rounds: &mut [Vec<Unit>]) -> Result<()> {
        let mut layouts: HashMap<Namespace, crate::Layout> = HashMap::new();
        for unit in rounds.iter().flatten() {
            if !layouts.contains_key(&unit.ns) {
                let layout = self.client.layout(Some(&unit.ns.db), &unit.ns.coll).await?;
                layouts.insert(unit.ns.clone(), layout);
            }
        }
        for round in rounds.iter_mut() {
            let mut shadows = Vec::new();
            for unit in round.iter_mut() {
                let Some(layout) = layouts.get(&unit.ns) else {
                    continue;
                };
                if let (Some(building), Slot::Item(i)) = (&layout.building, unit.slot) {
                    let mut shadow = unit.clone();
                    shadow.ns = Namespace::new(unit.ns.db.clone(), building.clone());
                    shadow.slot = Slot::Shadow(i);
                    shadows.push(shadow);
                }
                unit.ns = Namespace::new(unit.ns.db.clone(), layout.live.clone());
            }
            round.extend(shadows);
        }
        Ok(())
    }

    fn use_insert_first(&self) -> bool {
        use std::sync::atomic::Ordering;
        if !self.options.insert_first {
            return false;
        }
        let paused = self.insert_first_pause.load(Ordering::Relaxed);
        if paused > 0 {
            self.insert_first_pause.store(paused - 1, Ordering::Relaxed);
            return false;
        }
        true
    }

    /// Inserts the full replacements of `round` that create new documents; removes the
    /// settled units from `round` and returns their outcomes. Duplicate keys stay in
    /// `round` for the guarded path.
    async fn insert_first(&self, round: &mut Vec<Unit>) -> Result<Inserted> {
        let mut by_ns: HashMap<Namespace, Vec<usize>> = HashMap::new();
        for (i, unit) in round.iter().enumerate() {
            // A fill of a missing document is its insert too.
            if matches!(unit.slot, Slot::Item(_))
                && matches!(unit.body, OpBody::Replace(_) | OpBody::Fill(_))
            {
                by_ns.entry(unit.ns.clone()).or_default().push(i);
            }
        }
        let candidates: usize = by_ns.values().map(Vec::len).sum();
        if candidates == 0 {
            return Ok(Inserted::default());
        }
        let mut settled: HashMap<usize, ItemOutcome> = HashMap::new();
        let mut requests = 0;
        let mut duplicates = 0;
        for (ns, indexes) in by_ns {
            let docs: Vec<Document> = indexes
                .iter()
                .filter_map(|&i| match &round[i].body {
                    OpBody::Replace(d) | OpBody::Fill(d) => Some(d.clone()),
                    OpBody::Update(_) => None,
                })
                .collect();
            let coll = self
                .client
                .database(Some(&ns.db))
                .collection::<Document>(&ns.coll);
            requests += 1;
            let failures: Vec<(usize, i32, String)> =
                match coll.insert_many(docs).ordered(false).await {
                    Ok(_) => Vec::new(),
                    Err(e) => match *e.kind {
                        ErrorKind::InsertMany(ref many) if many.write_concern_error.is_none() => {
                            many.write_errors
                                .iter()
                                .flatten()
                                .map(|w| (w.index, w.code, w.message.clone()))
                                .collect()
                        }
                        // Nothing is known about any document: the guarded path decides all.
                        _ => indexes
                            .iter()
                            .enumerate()
                            .map(|(k, _)| (k, -1, String::new()))
                            .collect(),
                    },
                };
            let mut failed_at: HashMap<usize, (i32, String)> = HashMap::new();
            for (k, code, message) in failures {
                failed_at.insert(k, (code, message));
            }
            for (k, &i) in indexes.iter().enumerate() {
                match failed_at.get(&k) {
                    None => {
                        settled.insert(i, ItemOutcome::Applied);
                    }
                    // An existing document (or an unknown fate): the guarded upsert decides.
                    Some((code, message))
                        if *code == -1
                            || classify_duplicate(*code, message) == Some(DuplicateOn::Id) =>
                    {
                        duplicates += 1;
                    }
                    Some((code, message)) => {
                        settled.insert(
                            i,
                            ItemOutcome::Failed(ItemError {
                                namespace: round[i].model.to_string(),
                                id: round[i].id.clone(),
                                code: Some(*code),
                                message: message.clone(),
                            }),
                        );
                    }
                }
            }
        }
        if duplicates * 2 > candidates {
            self.insert_first_pause
                .store(INSERT_FIRST_PAUSE, std::sync::atomic::Ordering::Relaxed);
        }
        let mut out = Inserted {
            settled: Vec::with_capacity(settled.len()),
            requests,
        };
        let mut kept = Vec::with_capacity(round.len() - settled.len());
        for (i, unit) in std::mem::take(round).into_iter().enumerate() {
            match settled.remove(&i) {
                Some(outcome) => out.settled.push((unit.slot, outcome)),
                None => kept.push(unit),
            }
        }
        *round = kept;
        Ok(out)
    }

    /// Sends one round (plus the confirmation of duplicate keys) and classifies.
    async fn run_round(
        &self,
        strategy: BulkStrategy,
        units: &[Unit],
    ) -> Result<(Vec<ItemOutcome>, usize)> {
        let mut raw = self.send(strategy, units).await?;
        let mut requests = 1;
        // Duplicate keys are sent once more: replacements and tombstones that met a
        // document holding children in the form that keeps them (always), the others to
        // confirm they are stale (when asked).
        let mut again: Vec<(usize, Unit)> = Vec::new();
        for (i, r) in raw.iter().enumerate() {
            if !matches!(r, Raw::DuplicateId) {
                continue;
            }
            let unit = &units[i];
            match crate::children::keep_form(&unit.filter, &unit.body) {
                Some((filter, pipeline)) => again.push((
                    i,
                    Unit {
                        filter,
                        pipeline: Some(pipeline),
                        ..unit.clone()
                    },
                )),
                None if self.options.confirm_stale => again.push((i, unit.clone())),
                None => {}
            }
        }
        if !again.is_empty() {
            let (indexes, subset): (Vec<usize>, Vec<Unit>) = again.into_iter().unzip();
            let retried = self.send(strategy, &subset).await?;
            requests += 1;
            for (i, r) in indexes.into_iter().zip(retried) {
                raw[i] = r;
            }
        }
        let outcomes = units
            .iter()
            .zip(raw)
            .map(|(u, r)| match r {
                Raw::Ok => ItemOutcome::Applied,
                Raw::DuplicateId => ItemOutcome::Stale,
                Raw::Failed(code, message) => ItemOutcome::Failed(ItemError {
                    namespace: u.model.to_string(),
                    id: u.id.clone(),
                    code,
                    message,
                }),
            })
            .collect();
        Ok((outcomes, requests))
    }

    async fn send(&self, strategy: BulkStrategy, units: &[Unit]) -> Result<Vec<Raw>> {
        if units.is_empty() {
            return Ok(Vec::new());
        }
        match strategy {
            BulkStrategy::ClientBulkWrite => self.send_client_bulk(units).await,
            _ => self.send_per_collection(units).await,
        }
    }

    async fn send_client_bulk(&self, units: &[Unit]) -> Result<Vec<Raw>> {
        let models: Vec<WriteModel> = units
            .iter()
            .map(|u| match (&u.pipeline, &u.body) {
                (Some(pipeline), _) => UpdateOneModel::builder()
                    .namespace(u.ns.clone())
                    .filter(u.filter.clone())
                    .update(pipeline.clone())
                    .upsert(true)
                    .build()
                    .into(),
                (None, OpBody::Replace(d)) => ReplaceOneModel::builder()
                    .namespace(u.ns.clone())
                    .filter(u.filter.clone())
                    .replacement(d.clone())
                    .upsert(true)
                    .build()
                    .into(),
                (None, OpBody::Update(d)) => UpdateOneModel::builder()
                    .namespace(u.ns.clone())
                    .filter(u.filter.clone())
                    .update(d.clone())
                    .upsert(true)
                    .build()
                    .into(),
                (None, OpBody::Fill(d)) => UpdateOneModel::builder()
                    .namespace(u.ns.clone())
                    .filter(u.filter.clone())
                    .update(crate::fill::pipeline(d))
                    .upsert(true)
                    .build()
                    .into(),
            })
            .collect();
        let mut raw = vec![Raw::Ok; units.len()];
        match self.client.client().bulk_write(models).ordered(false).await {
            Ok(_) => Ok(raw),
            Err(e) => {
                let whole = std::error::Error::source(&e).is_some();
                match &*e.kind {
                    ErrorKind::BulkWrite(b) if !whole && b.write_concern_errors.is_empty() => {
                        for (&i, w) in &b.write_errors {
                            if let Some(slot) = raw.get_mut(i) {
                                *slot = classify(w.code, &w.message);
                            }
                        }
                        Ok(raw)
                    }
                    _ => Err(MongoError::mongo("bulkWrite", namespaces(units), None, e)),
                }
            }
        }
    }

    async fn send_per_collection(&self, units: &[Unit]) -> Result<Vec<Raw>> {
        // Group unit indexes by namespace, keeping order.
        let mut groups: Vec<(Namespace, Vec<usize>)> = Vec::new();
        for (i, u) in units.iter().enumerate() {
            match groups.iter_mut().find(|(ns, _)| *ns == u.ns) {
                Some((_, v)) => v.push(i),
                None => groups.push((u.ns.clone(), vec![i])),
            }
        }
        // Split into commands within the statement-count and size limits.
        const MAX_BYTES: usize = 12 * 1024 * 1024;
        let mut commands: Vec<(Namespace, Vec<usize>, Vec<Document>)> = Vec::new();
        for (ns, idx) in groups {
            let mut current: (Vec<usize>, Vec<Document>, usize) = (Vec::new(), Vec::new(), 0);
            for i in idx {
                let stmt = match &units[i].pipeline {
                    Some(pipeline) => doc! {
                        "q": units[i].filter.clone(), "u": pipeline.clone(), "upsert": true,
                    },
                    None => GuardedOp {
                        database: None,
                        collection: String::new(),
                        id: Bson::Null,
                        filter: units[i].filter.clone(),
                        body: units[i].body.clone(),
                    }
                    .update_statement(),
                };
                let size = bson::to_vec(&stmt).map(|v| v.len()).unwrap_or(0);
                if !current.0.is_empty()
                    && (current.0.len() >= self.options.max_statements.max(1)
                        || current.2 + size > MAX_BYTES)
                {
                    let full = std::mem::take(&mut current);
                    commands.push((ns.clone(), full.0, full.1));
                }
                current.0.push(i);
                current.1.push(stmt);
                current.2 += size;
            }
            if !current.0.is_empty() {
                commands.push((ns, current.0, current.1));
            }
        }
        let client = self.client.client();
        let futures = commands.into_iter().map(|(ns, idx, stmts)| {
            let db = client.database(&ns.db);
            async move {
                let reply = db
                    .run_command(doc! { "update": &ns.coll, "updates": stmts, "ordered": false })
                    .await
                    .map_err(|e| MongoError::mongo("update", ns.to_string(), None, e))?;
                if let Ok(wce) = reply.get_document("writeConcernError") {
                    return Err(MongoError::WriteConcern {
                        collection: ns.to_string(),
                        message: wce
                            .get_str("errmsg")
                            .unwrap_or("write concern error")
                            .to_string(),
                    });
                }
                let mut out = vec![Raw::Ok; idx.len()];
                if let Ok(errors) = reply.get_array("writeErrors") {
                    for e in errors {
                        let Some(e) = e.as_document() else { continue };
                        let index = match e.get("index") {
                            Some(Bson::Int32(v)) => usize::try_from(*v).ok(),
                            Some(Bson::Int64(v)) => usize::try_from(*v).ok(),
                            _ => None,
                        };
                        let code = match e.get("code") {
                            Some(Bson::Int32(v)) => *v,
                            Some(Bson::Int64(v)) => i32::try_from(*v).unwrap_or(-1),
                            _ => -1,
                        };
                        let message = e.get_str("errmsg").unwrap_or("").to_string();
                        if let Some(slot) = index.and_then(|i| out.get_mut(i)) {
                            *slot = classify(code, &message);
                        }
                    }
                }
                Ok::<_, MongoError>((idx, out))
            }
        });
        let mut raw = vec![Raw::Ok; units.len()];
        for (idx, out) in futures::future::try_join_all(futures).await? {
            for (i, r) in idx.into_iter().zip(out) {
                raw[i] = r;
            }
        }
        Ok(raw)
    }
}

fn classify(code: i32, message: &str) -> Raw {
    match classify_duplicate(code, message) {
        Some(DuplicateOn::Id) => Raw::DuplicateId,
        _ => Raw::Failed(Some(code), message.to_string()),
    }
}

/// Identifies the document a write goes to across the databases of a batch.
fn doc_key(write: &ReadModelWrite<Bson, Document>, default_db: &str) -> String {
    let target = write.target();
    let db = target.database.as_deref().unwrap_or(default_db);
    format!("{db}\u{0}{}\u{0}{:?}", target.collection, write.id())
}

fn ns_of(db: Option<&str>, default_db: &str, coll: &str) -> String {
    format!("{}.{coll}", db.unwrap_or(default_db))
}

fn namespaces(units: &[Unit]) -> String {
    let mut names: Vec<String> = units.iter().map(|u| u.ns.to_string()).collect();
    names.sort();
    names.dedup();
    names.join(", ")
}

/// The version that a write with this [`SourceVersion`] stores, for diagnostics.
///
/// ```
/// use cqrs_core::SourceVersion;
/// assert_eq!(cqrs_mongo::bulk::stored_version(SourceVersion::with_index(9, 2)), Some((9, 2)));
/// assert_eq!(cqrs_mongo::bulk::stored_version(SourceVersion::new(u64::MAX)), None);
/// ```
pub fn stored_version(version: SourceVersion) -> Option<(i64, i64)> {
    Some((
        i64::try_from(version.position).ok()?,
        i64::from(version.index),
    ))
}
