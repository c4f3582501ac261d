//! The typed read model: [`MongoReadModel`] extends [`cqrs_core::ReadModel`] with indexes,
//! and [`Versioned`] is what reads return.
//!
//! # How versions are stored
//!
//! A [`SourceVersion`] `{position, index}` is stored in two fields:
//!
//! * [`ReadModel::VERSION_FIELD`] (`_version` by default): `position` as a BSON Int64;
//! * the same name followed by `_index` (`_version_index`): `index` as a BSON Int64.
//!
//! Comparison is therefore exact with one filter, and `$or`-shaped only when the index is
//! non-zero (see [`guard`](crate::guard)). Positions above `i64::MAX` are rejected with
//! [`MongoError::VersionOutOfRange`] (a PostgreSQL LSN or an aggregate version never gets
//! there). A document without a version field counts as version zero: any write applies.
//!
//! # Tombstones
//!
//! A delete replaces the document by `{_id, _version, _version_index, _deleted: true,
//! _deleted_at: <date>}` in the physical collection; older writes meet the tombstone's
//! version and are stale. Readers never see it: they read the read model's view, which
//! shows live documents only, and a TTL index purges tombstones after a retention (see
//! [`layout`](crate::layout)).

use std::time::Duration;

use bson::{Bson, Document};
use cqrs_core::{ConsistencyToken, ReadModel, ReadModelWrite, SourceVersion};
use mongodb::IndexModel;
use serde::de::DeserializeOwned;

use crate::error::{MongoError, Result, display_id};

/// Field flagging a tombstone.
pub const DELETED_FIELD: &str = "_deleted";
/// Field holding the deletion time of a tombstone (the TTL index is on it).
pub const DELETED_AT_FIELD: &str = "_deleted_at";
/// Sub-document holding the per-source versions of scoped patches
/// ([`cqrs_core::ReadModelWrite::ScopedPatch`]): `_scopes.<scope>._version`.
pub const SCOPES_FIELD: &str = "_scopes";
/// Suffix of the field holding [`SourceVersion::index`].
pub const VERSION_INDEX_SUFFIX: &str = "_index";
/// Sub-document holding the aggregate versions a document reflects, one per aggregate that
/// fed it: `_aggregates.<Type>/<id>: <version>` (see [`origin_key`]). Written with writes
/// that carry an origin ([`GuardedWrite::origin`]); read by
/// [`Repository::wait_for`](crate::Repository::wait_for).
pub const AGGREGATES_FIELD: &str = "_aggregates";

/// The key of an aggregate under [`AGGREGATES_FIELD`]: `<type>/<id>`, with `%`, `.` and `$`
/// of the id percent-encoded (MongoDB field names may hold neither `.` nor a leading `$`).
///
/// ```
/// assert_eq!(cqrs_mongo::model::origin_key("Order", "o.1$%"), "Order/o%2E1%24%25");
/// ```
pub fn origin_key(aggregate_type: &str, aggregate_id: &str) -> String {
    let mut key = String::with_capacity(aggregate_type.len() + aggregate_id.len() + 1);
    key.push_str(aggregate_type);
    key.push('/');
    for c in aggregate_id.chars() {
        match c {
            '%' => key.push_str("%25"),
            '.' => key.push_str("%2E"),
            '$' => key.push_str("%24"),
            c => key.push(c),
        }
    }
    key
}

/// A guarded write together with the aggregate change it reflects.
///
/// The origin is what makes read-your-own-writes work across PostgreSQL and MongoDB: a
/// command returns a [`ConsistencyToken`] (aggregate type, id, version), the write carries
/// the same triple, the document stores it under [`AGGREGATES_FIELD`], and
/// [`Repository::wait_for`](crate::Repository::wait_for) waits until it reaches the
/// token's version. Writes without an origin (declarative table projections) work as before.
///
/// ```
/// use cqrs_core::{ConsistencyToken, ReadModelWrite, SourceVersion, Target};
/// use cqrs_mongo::{bson::doc, GuardedWrite};
///
/// let write = ReadModelWrite::Replace {
///     target: Target::collection("balances"),
///     id: "acc-1".into(),
///     version: SourceVersion::new(0x1A2B),
///     document: doc! { "balance": 100 },
/// };
/// let tracked = GuardedWrite::new(write).with_origin(ConsistencyToken::new("Account", "acc-1", 2));
/// assert_eq!(tracked.origin.unwrap().version, 2);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct GuardedWrite {
    /// The write.
    pub write: ReadModelWrite<Bson, Document>,
    /// The aggregate change it reflects, if any.
    pub origin: Option<ConsistencyToken>,
    /// A fill only adds: see [`GuardedWrite::fill`].
    pub fill: bool,
}

impl GuardedWrite {
    /// A write without origin.
    pub fn new(write: ReadModelWrite<Bson, Document>) -> Self {
        GuardedWrite {
            write,
            origin: None,
            fill: false,
        }
    }

    /// Makes the write a **fill**: it creates the document when there is none and adds the
    /// fields the stored document lacks, but never changes a field already there, never
    /// lowers a version and never revives a tombstone.
    ///
    /// That is how rows of an incremental snapshot (the source of a rebuild) are written:
    /// such a row is never newer than a change already applied to its document, and its
    /// log position cannot be compared with the changes that follow it (a transaction that
    /// wrote before the snapshot window and committed after it comes later with a lower
    /// position), so it must neither overwrite nor block. Give it the lowest version the
    /// target accepts (zero, or the target's truncate floor). Only `Replace`, `Patch` and
    /// `ScopedPatch` writes without dotted paths can fill.
    ///
    /// ```
    /// use cqrs_mongo::{GuardedWrite, bson::doc};
    /// use cqrs_core::{ReadModelWrite, SourceVersion, Target};
    ///
    /// let row = ReadModelWrite::Replace {
    ///     target: Target::collection("orders"),
    ///     id: "o-1".into(),
    ///     version: SourceVersion::ZERO,
    ///     document: doc! { "status": "paid" },
    /// };
    /// assert!(GuardedWrite::new(row).fill().fill);
    /// ```
    pub fn fill(mut self) -> Self {
        self.fill = true;
        self
    }

    /// Records the aggregate change the write reflects.
    pub fn with_origin(mut self, origin: ConsistencyToken) -> Self {
        self.origin = Some(origin);
        self
    }
}

impl From<ReadModelWrite<Bson, Document>> for GuardedWrite {
    fn from(write: ReadModelWrite<Bson, Document>) -> Self {
        GuardedWrite::new(write)
    }
}

impl From<&ReadModelWrite<Bson, Document>> for GuardedWrite {
    fn from(write: &ReadModelWrite<Bson, Document>) -> Self {
        GuardedWrite::new(write.clone())
    }
}

/// A MongoDB read model: a [`ReadModel`] that also declares its indexes.
///
/// Serialize the id as `_id` (`#[serde(rename = "_id")]`). The version and tombstone
/// fields are managed by this crate; the model may declare `_version` (as an integer) to
/// read it, but does not have to: [`Versioned::version`] carries it.
///
/// ```
/// use cqrs_core::ReadModel;
/// use cqrs_mongo::{MongoReadModel, IndexModel, bson::doc};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Debug, Serialize, Deserialize)]
/// struct Customer {
///     #[serde(rename = "_id")]
///     id: String,
///     email: String,
///     country: String,
/// }
///
/// impl ReadModel for Customer {
///     type Id = String;
///     const COLLECTION: &'static str = "customers";
///     fn id(&self) -> String { self.id.clone() }
/// }
///
/// impl MongoReadModel for Customer {
///     fn indexes() -> Vec<IndexModel> {
///         vec![IndexModel::builder().keys(doc! { "country": 1, "email": 1 }).build()]
///     }
/// }
///
/// assert_eq!(Customer::indexes().len(), 1);
/// assert_eq!(Customer::DATABASE, None);
/// ```
pub trait MongoReadModel: ReadModel {
    /// Database holding the collection; `None` for the client's default database.
    const DATABASE: Option<&'static str> = None;

    /// How long tombstones are kept before a TTL index removes them; `None` uses the
    /// client's retention ([`MongoConfig::with_tombstone_retention`](crate::MongoConfig),
    /// 7 days by default). Applied by
    /// [`Repository::ensure_indexes`](crate::Repository::ensure_indexes).
    ///
    /// Keep it longer than any redelivery window of the source: once a tombstone is gone,
    /// an older write for that id can create the document again.
    const TOMBSTONE_TTL: Option<Duration> = None;

    /// Secondary indexes, created (or verified) by
    /// [`Repository::ensure_indexes`](crate::Repository::ensure_indexes).
    fn indexes() -> Vec<IndexModel> {
        Vec::new()
    }
}

/// A document read together with the version of the last write applied to it.
///
/// ```
/// use cqrs_core::SourceVersion;
/// use cqrs_mongo::Versioned;
///
/// let v = Versioned { version: SourceVersion::new(3), document: "doc" };
/// assert_eq!(v.map(|d| d.len()).document, 3);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Versioned<T> {
    /// Version of the last applied write.
    pub version: SourceVersion,
    /// The document.
    pub document: T,
}

impl<T> Versioned<T> {
    /// Transforms the document, keeping the version.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Versioned<U> {
        Versioned {
            version: self.version,
            document: f(self.document),
        }
    }
}

/// Names of the fields that hold a version.
///
/// ```
/// let f = cqrs_mongo::VersionFields::new("_version");
/// assert_eq!(f.index, "_version_index");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionFields {
    /// Field holding the position (Int64).
    pub position: String,
    /// Field holding the index (Int64).
    pub index: String,
}

impl VersionFields {
    /// The fields for a version field name.
    pub fn new(version_field: &str) -> Self {
        VersionFields {
            position: version_field.to_string(),
            index: format!("{version_field}{VERSION_INDEX_SUFFIX}"),
        }
    }

    /// The fields of a model.
    pub fn of<M: ReadModel>() -> Self {
        Self::new(M::VERSION_FIELD)
    }

    /// `{position, index}` as the two Int64 values to store.
    pub(crate) fn encode(
        &self,
        version: SourceVersion,
        collection: &str,
        id: Option<&Bson>,
    ) -> Result<(i64, i64)> {
        let position =
            i64::try_from(version.position).map_err(|_| MongoError::VersionOutOfRange {
                collection: collection.to_string(),
                id: id.map(display_id),
                version,
            })?;
        Ok((position, i64::from(version.index)))
    }

    /// Reads the stored version of a raw document (missing fields count as zero).
    pub fn read(&self, doc: &Document, collection: &str) -> Result<SourceVersion> {
        let position = read_u64(doc, &self.position, collection)?;
        let index = read_u64(doc, &self.index, collection)?;
        let index = u32::try_from(index).map_err(|_| MongoError::Decode {
            collection: collection.to_string(),
            id: doc.get("_id").map(display_id),
            field: self.index.clone(),
            message: format!("{index} does not fit a u32"),
        })?;
        Ok(SourceVersion { position, index })
    }
}

fn read_u64(doc: &Document, field: &str, collection: &str) -> Result<u64> {
    let bad = |message: String| MongoError::Decode {
        collection: collection.to_string(),
        id: doc.get("_id").map(display_id),
        field: field.to_string(),
        message,
    };
    match doc.get(field) {
        None | Some(Bson::Null) => Ok(0),
        Some(Bson::Int64(v)) => u64::try_from(*v).map_err(|_| bad(format!("negative version {v}"))),
        Some(Bson::Int32(v)) => u64::try_from(*v).map_err(|_| bad(format!("negative version {v}"))),
        Some(other) => Err(bad(format!(
            "expected an integer version, found {:?}",
            other.element_type()
        ))),
    }
}

/// True if the raw document is a tombstone.
pub(crate) fn is_tombstone(doc: &Document) -> bool {
    matches!(doc.get(DELETED_FIELD), Some(Bson::Boolean(true)))
}

/// Decodes a raw document into a model, naming the offending field on failure.
///
/// The `_version_index`, scope, aggregate, children-version and tombstone fields are removed first; the version field stays
/// (a model may declare it).
///
/// ```
/// use cqrs_mongo::{bson::doc, model::decode, VersionFields};
///
/// #[derive(Debug, serde::Deserialize)]
/// struct Item { qty: u32 }
///
/// let fields = VersionFields::new("_version");
/// let ok = decode::<Item>(doc! { "_id": 1, "qty": 3, "_version": 9_i64 }, "items", &fields).unwrap();
/// assert_eq!(ok.version.position, 9);
///
/// let err = decode::<Item>(doc! { "_id": 1, "qty": "three" }, "items", &fields).unwrap_err();
/// assert!(err.to_string().contains("`qty`"), "{err}");
/// ```
pub fn decode<T: DeserializeOwned>(
    mut doc: Document,
    collection: &str,
    fields: &VersionFields,
) -> Result<Versioned<T>> {
    let version = fields.read(&doc, collection)?;
    doc.remove(&fields.index);
    doc.remove(SCOPES_FIELD);
    doc.remove(AGGREGATES_FIELD);
    doc.remove(crate::children::CHILDREN_FIELD);
    doc.remove(DELETED_FIELD);
    doc.remove(DELETED_AT_FIELD);
    let id = doc.get("_id").map(display_id);
    let deserializer = bson::Deserializer::new(Bson::Document(doc));
    let document: T = serde_path_to_error::deserialize(deserializer).map_err(|e| {
        let field = e.path().to_string();
        MongoError::Decode {
            collection: collection.to_string(),
            id,
            field,
            message: e.into_inner().to_string(),
        }
    })?;
    Ok(Versioned { version, document })
}
