//! The read side: read models and the projections that feed them.

use std::fmt::Debug;

use serde::{Serialize, de::DeserializeOwned};

use crate::consistency::SourceVersion;

/// A document or row of the read side, shaped for queries.
///
/// It has an id, lives in a collection (or table), and the store keeps the
/// [`SourceVersion`] of the last write applied to it in [`ReadModel::VERSION_FIELD`], so
/// that older writes arriving late are ignored. Storage crates add their own details
/// (indexes, for example) in an extension trait.
///
/// ```
/// use cqrs_core::ReadModel;
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Debug, Serialize, Deserialize)]
/// struct OrderSummary {
///     #[serde(rename = "_id")]
///     order_id: String,
///     status: String,
/// }
///
/// impl ReadModel for OrderSummary {
///     type Id = String;
///     const COLLECTION: &'static str = "order_summaries";
///     fn id(&self) -> String { self.order_id.clone() }
/// }
///
/// assert_eq!(OrderSummary::VERSION_FIELD, "_version");
/// ```
pub trait ReadModel: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// Type of the id.
    type Id: Serialize + DeserializeOwned + Clone + Debug + Send + Sync + 'static;
    /// Collection or table name.
    const COLLECTION: &'static str;
    /// Field holding the version of the last applied write.
    const VERSION_FIELD: &'static str = "_version";
    /// The id of this document.
    fn id(&self) -> Self::Id;
}

/// Where a read-model write goes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Target {
    /// Database, or `None` for the store's default.
    pub database: Option<String>,
    /// Collection or table.
    pub collection: String,
}

impl Target {
    /// A collection in the default database.
    pub fn collection(name: impl Into<String>) -> Self {
        Target {
            database: None,
            collection: name.into(),
        }
    }

    /// A collection in a named database.
    pub fn in_database(database: impl Into<String>, collection: impl Into<String>) -> Self {
        Target {
            database: Some(database.into()),
            collection: collection.into(),
        }
    }
}

/// One version-guarded write a projection asks the read store to make.
///
/// `K` is the id type and `D` the document type of the store (for MongoDB, a BSON value
/// and a BSON document). Every write applies only if `version` is newer than the stored
/// one; a delete leaves a tombstone so that older writes cannot bring the document back.
///
/// ```
/// use cqrs_core::{ReadModelWrite, SourceVersion, Target};
///
/// let write: ReadModelWrite<String, Vec<(String, String)>> = ReadModelWrite::Delete {
///     target: Target::collection("orders"),
///     id: "o-1".into(),
///     version: SourceVersion::new(9),
/// };
/// assert_eq!(write.version(), SourceVersion::new(9));
/// assert_eq!(write.id(), "o-1");
/// ```
#[derive(Debug, Clone, PartialEq)]
pub enum ReadModelWrite<K, D> {
    /// Insert or fully replace the document.
    Replace {
        /// Where.
        target: Target,
        /// Document id.
        id: K,
        /// Version of the change.
        version: SourceVersion,
        /// The full document (without id and version fields).
        document: D,
    },
    /// Set some fields and remove others, creating the document if needed.
    Patch {
        /// Where.
        target: Target,
        /// Document id.
        id: K,
        /// Version of the change.
        version: SourceVersion,
        /// Fields to set.
        set: D,
        /// Fields to remove.
        unset: Vec<String>,
    },
    /// Set fields owned by one source of a document fed by several (one read model fed by
    /// two tables, say). Guarded by that source's own version (`scope`), so changes of
    /// different sources, which arrive in any relative order, never make each other stale;
    /// a document deleted at a newer version is never brought back.
    ScopedPatch {
        /// Where.
        target: Target,
        /// Document id.
        id: K,
        /// The source owning the fields, e.g. the table name: letters, digits, `_`, `-`.
        scope: String,
        /// Version of the change in that source.
        version: SourceVersion,
        /// Fields to set.
        set: D,
        /// Fields to remove.
        unset: Vec<String>,
    },
    /// Delete the document, leaving a tombstone at this version.
    Delete {
        /// Where.
        target: Target,
        /// Document id.
        id: K,
        /// Version of the change.
        version: SourceVersion,
    },
    /// Write one child row embedded in its parent's document (an order line inside its
    /// order): element `key` of the collection of children `field` of document `id`.
    ///
    /// Each child is guarded by its own version, kept beside the document, so changes of
    /// different children, and of the parent, arrive in any relative order and never make
    /// each other stale; a deleted child leaves a version behind so that an older change of
    /// it cannot bring it back. Child writes never decide whether the parent document is
    /// visible: a child arriving before its parent is kept (the document stays hidden
    /// until its parent arrives) and cannot bring a deleted parent back.
    Child {
        /// Where the parent documents live.
        target: Target,
        /// The parent document's id.
        id: K,
        /// The collection of children inside the parent (`lines`): letters, digits and
        /// `_`, not starting with `_`.
        field: String,
        /// The child's key within its parent (`"3"` for line 3): the store may restrict
        /// the characters (cqrs-mongo encodes keys with `child_key`).
        key: String,
        /// Version of the change of the child.
        version: SourceVersion,
        /// What happens to the child.
        change: ChildChange<D>,
    },
}

/// What a [`ReadModelWrite::Child`] does to its child.
///
/// ```
/// use cqrs_core::ChildChange;
///
/// let upsert: ChildChange<Vec<(String, i64)>> = ChildChange::Replace(vec![("qty".into(), 2)]);
/// assert!(!upsert.is_delete());
/// assert!(ChildChange::<()>::Delete.is_delete());
/// ```
#[derive(Debug, Clone, PartialEq)]
pub enum ChildChange<D> {
    /// Insert or fully replace the child (its fields, without key or version).
    Replace(D),
    /// Set some fields of the child, creating it if needed (an update that did not carry
    /// every column).
    Patch(D),
    /// Remove the child, leaving its version behind.
    Delete,
}

impl<D> ChildChange<D> {
    /// True for [`ChildChange::Delete`].
    pub fn is_delete(&self) -> bool {
        matches!(self, ChildChange::Delete)
    }
}

impl<K, D> ReadModelWrite<K, D> {
    /// Where the write goes.
    pub fn target(&self) -> &Target {
        match self {
            ReadModelWrite::Replace { target, .. }
            | ReadModelWrite::Patch { target, .. }
            | ReadModelWrite::ScopedPatch { target, .. }
            | ReadModelWrite::Delete { target, .. }
            | ReadModelWrite::Child { target, .. } => target,
        }
    }

    /// The document id.
    pub fn id(&self) -> &K {
        match self {
            ReadModelWrite::Replace { id, .. }
            | ReadModelWrite::Patch { id, .. }
            | ReadModelWrite::ScopedPatch { id, .. }
            | ReadModelWrite::Delete { id, .. }
            | ReadModelWrite::Child { id, .. } => id,
        }
    }

    /// The version the write carries.
    pub fn version(&self) -> SourceVersion {
        match self {
            ReadModelWrite::Replace { version, .. }
            | ReadModelWrite::Patch { version, .. }
            | ReadModelWrite::ScopedPatch { version, .. }
            | ReadModelWrite::Delete { version, .. }
            | ReadModelWrite::Child { version, .. } => *version,
        }
    }

    /// The same write at another version (a runtime lifting a write to a floor, say).
    ///
    /// ```
    /// use cqrs_core::{ReadModelWrite, SourceVersion, Target};
    ///
    /// let w: ReadModelWrite<u32, ()> = ReadModelWrite::Delete {
    ///     target: Target::collection("c"), id: 1, version: SourceVersion::ZERO,
    /// };
    /// assert_eq!(w.with_version(SourceVersion::new(9)).version(), SourceVersion::new(9));
    /// ```
    pub fn with_version(mut self, new: SourceVersion) -> Self {
        match &mut self {
            ReadModelWrite::Replace { version, .. }
            | ReadModelWrite::Patch { version, .. }
            | ReadModelWrite::ScopedPatch { version, .. }
            | ReadModelWrite::Delete { version, .. }
            | ReadModelWrite::Child { version, .. } => *version = new,
        }
        self
    }
}

/// Maps one input (a change captured from the write side, or a domain event) into
/// read-model writes.
///
/// Projections are pure: they decide writes, the runtime (for example the sync-service)
/// applies them with version guards and tracks progress. One projection may be fed by
/// several sources and may write to several read models.
///
/// ```
/// use cqrs_core::{Projection, ReadModelWrite, SourceVersion, Target};
///
/// struct Deposit { account: String, amount: i64, position: u64 }
///
/// struct BalanceProjection;
///
/// impl Projection for BalanceProjection {
///     type Input = Deposit;
///     type Write = ReadModelWrite<String, Vec<(String, i64)>>;
///     type Error = std::convert::Infallible;
///
///     fn name(&self) -> &str { "balances" }
///
///     fn project(&self, d: &Deposit) -> Result<Vec<Self::Write>, Self::Error> {
///         Ok(vec![ReadModelWrite::Patch {
///             target: Target::collection("balances"),
///             id: d.account.clone(),
///             version: SourceVersion::new(d.position),
///             set: vec![("last_deposit".into(), d.amount)],
///             unset: vec![],
///         }])
///     }
/// }
///
/// let writes = BalanceProjection.project(&Deposit { account: "a".into(), amount: 5, position: 1 }).unwrap();
/// assert_eq!(writes.len(), 1);
/// ```
pub trait Projection: Send + Sync {
    /// What the projection consumes.
    type Input: ?Sized;
    /// The writes it produces.
    type Write;
    /// Why an input could not be mapped (the runtime dead-letters it).
    type Error: std::error::Error + Send + Sync + 'static;

    /// Stable name: keys the projection's checkpoints.
    fn name(&self) -> &str;

    /// Maps one input into zero or more writes.
    fn project(&self, input: &Self::Input) -> Result<Vec<Self::Write>, Self::Error>;
}
