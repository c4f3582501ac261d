//! Consistency waits: read your own writes through the asynchronous read side.
//!
//! A command returns a [`ConsistencyToken`]; the caller waits until the read model has
//! applied at least that version. The wait polls the document by id (5 ms, doubling up to
//! 100 ms) until its stored version reaches the wanted one or the timeout expires.
//!
//! The token carries an *aggregate* version: [`Repository::wait_for_token`] is right for
//! read models whose version is the aggregate version. A read model fed by change data
//! capture stores source positions (LSNs) instead; for it, project the aggregate version
//! into a field and use [`Repository::wait_until`] with a predicate on that field.

use std::time::Duration;

use bson::{Bson, doc};
use cqrs_core::{ConsistencyToken, SourceVersion};
use tokio::time::Instant;

use crate::{
    errors::{Error, Result, display_id},
    model::{MongoReadModel, Versioned, decode, is_tombstone},
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
    /// On timeout: [`Error::WaitTimeout`] with the last version seen.
    ///
    /// ```no_run
    /// # use cqrs_mongo::{MongoReadModel, Repository, Waited};
    /// # async fn demo<M: MongoReadModel<Id = String>>(repo: Repository<M>) -> cqrs_mongo::Result<()> {
    /// use std::time::Duration;
    /// use cqrs_core::SourceVersion;
    /// match repo.wait_for_version(&"o-1".to_string(), SourceVersion::new(3), Duration::from_secs(2)).await? {
    ///     Waited::Document(doc) => println!("at {}", doc.version),
    ///     Waited::Deleted { .. } => println!("deleted"),
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn wait_for_version(
        &self,
        id: &M::Id,
        version: SourceVersion,
        timeout: Duration,
    ) -> Result<Waited<M>> {
        self.wait_inner(id, version, timeout, |_| true).await
    }

    /// Waits for the version of a command's token, the token's aggregate id being the
    /// document id (it must deserialize from a string into `M::Id`).
    ///
    /// ```no_run
    /// # use cqrs_mongo::{MongoReadModel, Repository};
    /// # async fn demo<M: MongoReadModel>(repo: Repository<M>) -> cqrs_mongo::Result<()> {
    /// let token: cqrs_core::ConsistencyToken = "Order:3:o-1".parse().expect("token");
    /// let doc = repo.wait_for_token(&token, std::time::Duration::from_secs(2)).await?;
    /// # Ok(()) }
    /// ```
    pub async fn wait_for_token(
        &self,
        token: &ConsistencyToken,
        timeout: Duration,
    ) -> Result<Waited<M>> {
        let id: M::Id = bson::from_bson(Bson::String(token.aggregate_id.clone())).map_err(|e| {
            Error::InvalidQuery {
                collection: M::COLLECTION.to_string(),
                reason: format!(
                    "token id {:?} is not a {}: {e}",
                    token.aggregate_id,
                    std::any::type_name::<M::Id>()
                ),
            }
        })?;
        self.wait_for_version(&id, token.source_version(), timeout)
            .await
    }

    /// Waits until the live document satisfies `ready` (for example, a projected
    /// aggregate-version field reaching a token's version).
    ///
    /// On timeout: [`Error::WaitTimeout`] (with `wanted` = zero).
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
    pub async fn wait_until(
        &self,
        id: &M::Id,
        timeout: Duration,
        ready: impl Fn(&Versioned<M>) -> bool,
    ) -> Result<Versioned<M>> {
        match self
            .wait_inner(id, SourceVersion::ZERO, timeout, ready)
            .await?
        {
            Waited::Document(d) => Ok(d),
            Waited::Deleted { version } => Err(Error::WaitTimeout {
                collection: M::COLLECTION.to_string(),
                id: format!("{id:?}"),
                wanted: SourceVersion::ZERO,
                last_seen: Some(version),
                waited: timeout,
            }),
        }
    }

    async fn wait_inner(
        &self,
        id: &M::Id,
        wanted: SourceVersion,
        timeout: Duration,
        ready: impl Fn(&Versioned<M>) -> bool,
    ) -> Result<Waited<M>> {
        let started = Instant::now();
        let deadline = started + timeout;
        let id_bson = self.encode_id(id)?;
        let coll = self.collection();
        let mut last_seen = None;
        let mut pause = FIRST_POLL;
        loop {
            let found =
                tokio::time::timeout_at(deadline, coll.find_one(doc! { "_id": id_bson.clone() }))
                    .await;
            match found {
                Ok(Ok(Some(raw))) => {
                    let version = self.fields().read(&raw, M::COLLECTION)?;
                    last_seen = Some(version);
                    if version >= wanted {
                        if is_tombstone(&raw) {
                            if wanted > SourceVersion::ZERO {
                                return Ok(Waited::Deleted { version });
                            }
                        } else {
                            let doc = decode::<M>(raw, M::COLLECTION, self.fields())?;
                            if ready(&doc) {
                                return Ok(Waited::Document(doc));
                            }
                        }
                    }
                }
                Ok(Ok(None)) => {}
                Ok(Err(e)) => {
                    return Err(Error::mongo(
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
                return Err(Error::WaitTimeout {
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
