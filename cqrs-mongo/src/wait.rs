//! Consistency waits: read your own writes through the asynchronous read side.
//!
//! A command returns a [`ConsistencyToken`] (aggregate type, id and the version the command
//! produced). Documents written with an origin ([`GuardedWrite::origin`](crate::GuardedWrite),
//! as `cqrs-projection`'s typed projections do) keep the version of each aggregate that fed
//! them under `_aggregates`; [`Repository::wait_for`] polls the document until it reflects
//! the token (5 ms, doubling up to 100 ms) or the timeout expires. This works for documents
//! fed by several aggregates (each has its own entry), with tokens handed from one service
//! to another (they are plain strings), and whatever the document's guard version is (a
//! WAL position for documents fed by change data capture).
//!
//! [`Repository::wait_for_version`] waits for the guard version itself (the source
//! position), [`Repository::wait_until`] for any predicate.

use std::{borrow::Borrow, time::Duration};

use bson::{Bson, Document, doc};
use cqrs_core::{ConsistencyToken, SourceVersion};
use serde::Serialize;
use tokio::time::Instant;

use crate::{
    error::{MongoError, Result, display_id},
    model::{AGGREGATES_FIELD, MongoReadModel, Versioned, decode, is_tombstone, origin_key},
    repository::Repository,
};

/// Result of a wait: the document, or the fact that it was deleted at or after the
/// wanted version.
///
/// ```
/// use cqrs_mongo::Waited;
/// let w: Waited<u8> = Waited::Deleted { version: cqrs_core::SourceVersion::new(4) };
/// assert!(w.into_document().is_none());
/// ```
#[derive(Debug, Clone, PartialEq)]
pub enum Waited<T> {
    /// The document at the wanted version or later.
    Document(Versioned<T>),
    /// A tombstone at the wanted version or later.
    Deleted {
        /// Version of the tombstone.
        version: SourceVersion,
    },
}

impl<T> Waited<T> {
    /// The document, `None` if deleted.
    pub fn into_document(self) -> Option<Versioned<T>> {
        match self {
            Waited::Document(d) => Some(d),
            Waited::Deleted { .. } => None,
        }
    }
}

const FIRST_POLL: Duration = Duration::from_millis(5);
const MAX_POLL: Duration = Duration::from_millis(100);

impl<M: MongoReadModel> Repository<M> {
    /// Waits until the document reaches `version` (or is deleted at or after it).
    ///
    /// On timeout: [`MongoError::WaitTimeout`] with the last version seen.
    ///
    /// ```no_run
    /// # use cqrs_mongo::{MongoReadModel, Repository, Waited};
    /// # async fn demo<M: MongoReadModel<Id = String>>(repo: Repository<M>) -> cqrs_mongo::Result<()> {
    /// use std::time::Duration;
    /// use cqrs_core::SourceVersion;
    /// match repo.wait_for_version("o-1", SourceVersion::new(3), Duration::from_secs(2)).await? {
    ///     Waited::Document(doc) => println!("at {}", doc.version),
    ///     Waited::Deleted { .. } => println!("deleted"),
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn wait_for_version<Q>(
        &self,
        id: &Q,
        version: SourceVersion,
        timeout: Duration,
    ) -> Result<Waited<M>>
    where
        M::Id: Borrow<Q>,
        Q: Serialize + std::fmt::Debug + Sync + ?Sized,
    {
        self.wait_inner(id, version, timeout, |_| true).await
    }

    /// Waits until the document whose id is the token's aggregate id reflects the command
    /// that produced `token` (or was deleted by it or later), and returns it. The token's
    /// aggregate id must deserialize from a string into `M::Id`; for a document with another
    /// id (one fed by several aggregates), use [`Repository::wait_for_in`].
    ///
    /// On timeout: [`MongoError::WaitTimeout`] with `wanted` = the token's version and
    /// `last_seen` = the last version of that aggregate the document showed (aggregate
    /// versions here, not source positions).
    ///
    /// ```no_run
    /// # use cqrs_mongo::{MongoReadModel, Repository, Waited};
    /// # async fn demo<M: MongoReadModel>(repo: Repository<M>) -> cqrs_mongo::Result<()> {
    /// let token: cqrs_core::ConsistencyToken = "Order:3:o-1".parse().expect("token");
    /// match repo.wait_for(&token, std::time::Duration::from_secs(2)).await? {
    ///     Waited::Document(order) => println!("order at source version {}", order.version),
    ///     Waited::Deleted { .. } => println!("deleted"),
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn wait_for(&self, token: &ConsistencyToken, timeout: Duration) -> Result<Waited<M>> {
        let id: M::Id = bson::from_bson(Bson::String(token.aggregate_id.clone())).map_err(|e| {
            MongoError::InvalidQuery {
                collection: M::COLLECTION.to_string(),
                reason: format!(
                    "token id {:?} is not a {}: {e}; use wait_for_in with the document id",
                    token.aggregate_id,
                    std::any::type_name::<M::Id>()
                ),
            }
        })?;
        self.wait_for_in(&id, token, timeout).await
    }

    /// Waits until document `id` reflects the command that produced `token` (the aggregate
    /// of the token fed it at the token's version or later): for documents fed by several
    /// aggregates, for example an order summary waited for with an invoice's token.
    ///
    /// ```no_run
    /// # use cqrs_mongo::{MongoReadModel, Repository};
    /// # async fn demo<M: MongoReadModel<Id = String>>(summaries: Repository<M>) -> cqrs_mongo::Result<()> {
    /// let invoice: cqrs_core::ConsistencyToken = "Invoice:1:inv-9".parse().expect("token");
    /// let summary = summaries
    ///     .wait_for_in("o-1", &invoice, std::time::Duration::from_secs(2))
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub async fn wait_for_in<Q>(
        &self,
        id: &Q,
        token: &ConsistencyToken,
        timeout: Duration,
    ) -> Result<Waited<M>>
    where
        M::Id: Borrow<Q>,
        Q: Serialize + std::fmt::Debug + Sync + ?Sized,
    {
        let key = origin_key(&token.aggregate_type, &token.aggregate_id);
        let wanted = SourceVersion::new(token.version);
        self.poll(id, wanted, timeout, |raw| {
            let seen = aggregate_version(raw, &key);
            let reached = seen.is_some_and(|v| v >= token.version);
            (seen.map(SourceVersion::new), reached)
        })
        .await
    }

    /// Waits until the live document satisfies `ready` (for example, a projected
    /// aggregate-version field reaching a token's version).
    ///
    /// On timeout: [`MongoError::WaitTimeout`] (with `wanted` = zero).
    ///
    /// ```no_run
    /// # use cqrs_mongo::{MongoReadModel, Repository};
    /// # #[derive(serde::Serialize, serde::Deserialize)] struct Order { #[serde(rename="_id")] id: String, aggregate_version: u64 }
    /// # impl cqrs_core::ReadModel for Order { type Id = String; const COLLECTION: &'static str = "o"; fn id(&self) -> String { self.id.clone() } }
    /// # impl MongoReadModel for Order {}
    /// # async fn demo(repo: Repository<Order>, token: cqrs_core::ConsistencyToken) -> cqrs_mongo::Result<()> {
    /// let doc = repo
    ///     .wait_until(&token.aggregate_id, std::time::Duration::from_secs(2), |d| {
    ///         d.document.aggregate_version >= token.version
    ///     })
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub async fn wait_until<Q>(
        &self,
        id: &Q,
        timeout: Duration,
        ready: impl Fn(&Versioned<M>) -> bool,
    ) -> Result<Versioned<M>>
    where
        M::Id: Borrow<Q>,
        Q: Serialize + std::fmt::Debug + Sync + ?Sized,
    {
        match self
            .wait_inner(id, SourceVersion::ZERO, timeout, ready)
            .await?
        {
            Waited::Document(d) => Ok(d),
            Waited::Deleted { version } => Err(MongoError::WaitTimeout {
                collection: M::COLLECTION.to_string(),
                id: format!("{id:?}"),
                wanted: SourceVersion::ZERO,
                last_seen: Some(version),
                waited: timeout,
            }),
        }
    }

    async fn wait_inner<Q>(
        &self,
        id: &Q,
        wanted: SourceVersion,
        timeout: Duration,
        ready: impl Fn(&Versioned<M>) -> bool,
    ) -> Result<Waited<M>>
    where
        M::Id: Borrow<Q>,
        Q: Serialize + std::fmt::Debug + Sync + ?Sized,
    {
        let fields = self.fields().clone();
        self.poll(id, wanted, timeout, |raw| {
            let version = fields.read(raw, M::COLLECTION).ok();
            let reached = version.is_some_and(|v| v >= wanted)
                && (is_tombstone(raw)
                    || decode::<M>(raw.clone(), M::COLLECTION, &fields).is_ok_and(|d| ready(&d)));
            (version, reached)
        })
        .await
    }

    /// Polls document `id` until `reached` says so for its raw form, which also reports the
    /// version seen (for the timeout error). A tombstone that has reached is
    /// [`Waited::Deleted`] (unless waiting for version zero, where only live documents
    /// count).
    async fn poll<Q>(
        &self,
        id: &Q,
        wanted: SourceVersion,
        timeout: Duration,
        reached: impl Fn(&Document) -> (Option<SourceVersion>, bool),
    ) -> Result<Waited<M>>
    where
        M::Id: Borrow<Q>,
        Q: Serialize + std::fmt::Debug + Sync + ?Sized,
    {
        let started = Instant::now();
        let deadline = started + timeout;
        let id_bson = self.encode_id(id)?;
        // Tombstones count here (a deletion answers a wait): read the physical collection.
        let coll = self.physical().await?;
        let mut last_seen = None;
        let mut pause = FIRST_POLL;
        loop {
            let found =
                tokio::time::timeout_at(deadline, coll.find_one(doc! { "_id": id_bson.clone() }))
                    .await;
            match found {
                Ok(Ok(Some(raw))) => {
                    let (seen, done) = reached(&raw);
                    if seen.is_some() {
                        last_seen = seen;
                    }
                    if done {
                        if is_tombstone(&raw) {
                            if wanted > SourceVersion::ZERO {
                                let version = self.fields().read(&raw, M::COLLECTION)?;
                                return Ok(Waited::Deleted { version });
                            }
                        } else {
                            let doc = decode::<M>(raw, M::COLLECTION, self.fields())?;
                            return Ok(Waited::Document(doc));
                        }
                    }
                }
                Ok(Ok(None)) => {}
                Ok(Err(e)) => {
                    return Err(MongoError::mongo(
                        "find",
                        M::COLLECTION,
                        Some(display_id(&id_bson)),
                        e,
                    ));
                }
                Err(_) => {}
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(MongoError::WaitTimeout {
                    collection: M::COLLECTION.to_string(),
                    id: display_id(&id_bson),
                    wanted,
                    last_seen,
                    waited: now - started,
                });
            }
            tokio::time::sleep_until((now + pause).min(deadline)).await;
            pause = (pause * 2).min(MAX_POLL);
        }
    }
}

/// The version of aggregate `key` a raw document reflects, if it has one.
fn aggregate_version(raw: &Document, key: &str) -> Option<u64> {
    match raw.get_document(AGGREGATES_FIELD).ok()?.get(key)? {
        Bson::Int64(v) => u64::try_from(*v).ok(),
        Bson::Int32(v) => u64::try_from(*v).ok(),
        _ => None,
    }
}
