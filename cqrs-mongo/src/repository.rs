//! Typed queries and writes on one read model.
//!
//! Every query hides tombstones. Filters are built from typed values (serialized with
//! serde, exactly as the model's fields are), either by field name ([`Filter::eq`]...) or
//! through typed field handles ([`Field`]). Pagination is keyset-based: a page ends with an
//! opaque [`PageCursor`] naming the last document's sort values and id, and the next page
//! starts strictly after it, so documents inserted meanwhile never shift pages (no skips,
//! no duplicates).

use std::{borrow::Borrow, fmt, marker::PhantomData, str::FromStr};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use bson::{Bson, Document, doc};
use cqrs_core::{ReadModelWrite, SourceVersion, Target};
use futures::TryStreamExt;
use mongodb::{Collection, Database};
use serde::Serialize;

use crate::{
    client::MongoClient,
    error::{MongoError, Result, display_id},
    guard::{self, WriteOutcome},
    indexes,
    model::{
        DELETED_AT_FIELD, DELETED_FIELD, GuardedWrite, MongoReadModel, VersionFields, Versioned,
        decode,
    },
};

/// A query filter built from typed values.
///
/// Values are serialized with serde (a value that cannot be is reported when the query
/// runs, as [`MongoError::InvalidQuery`]).
///
/// ```
/// use cqrs_mongo::{Filter, bson::doc};
///
/// let f = Filter::eq("status", "open").and(Filter::gte("total", 100));
/// assert_eq!(
///     f.into_document().unwrap(),
///     doc! { "$and": [ { "status": "open" }, { "total": { "$gte": 100 } } ] }
/// );
/// assert_eq!(Filter::all().into_document().unwrap(), doc! {});
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Filter(std::result::Result<Document, String>);

fn to_bson(value: impl Serialize) -> std::result::Result<Bson, String> {
    bson::to_bson(&value).map_err(|e| e.to_string())
}

impl Filter {
    /// Matches every (live) document.
    pub fn all() -> Self {
        Filter(Ok(Document::new()))
    }

    /// A raw filter document.
    pub fn raw(filter: Document) -> Self {
        Filter(Ok(filter))
    }

    fn op(field: &str, op: &str, value: impl Serialize) -> Self {
        Filter(to_bson(value).map(|v| {
            if op == "$eq" {
                doc! { field: v }
            } else {
                doc! { field: { op: v } }
            }
        }))
    }

    /// `field == value`.
    pub fn eq(field: &str, value: impl Serialize) -> Self {
        Self::op(field, "$eq", value)
    }

    /// `field != value`.
    pub fn ne(field: &str, value: impl Serialize) -> Self {
        Self::op(field, "$ne", value)
    }

    /// `field > value`.
    pub fn gt(field: &str, value: impl Serialize) -> Self {
        Self::op(field, "$gt", value)
    }

    /// `field >= value`.
    pub fn gte(field: &str, value: impl Serialize) -> Self {
        Self::op(field, "$gte", value)
    }

    /// `field < value`.
    pub fn lt(field: &str, value: impl Serialize) -> Self {
        Self::op(field, "$lt", value)
    }

    /// `field <= value`.
    pub fn lte(field: &str, value: impl Serialize) -> Self {
        Self::op(field, "$lte", value)
    }

    /// `field` is one of `values`.
    pub fn is_in<V: Serialize>(field: &str, values: impl IntoIterator<Item = V>) -> Self {
        let values: std::result::Result<Vec<Bson>, String> =
            values.into_iter().map(to_bson).collect();
        Filter(values.map(|v| doc! { field: { "$in": v } }))
    }

    /// `field` exists (or not).
    pub fn exists(field: &str, exists: bool) -> Self {
        Filter(Ok(doc! { field: { "$exists": exists } }))
    }

    /// Both filters.
    pub fn and(self, other: Filter) -> Self {
        Filter(match (self.0, other.0) {
            (Ok(a), Ok(b)) if a.is_empty() => Ok(b),
            (Ok(a), Ok(b)) if b.is_empty() => Ok(a),
            (Ok(a), Ok(b)) => Ok(doc! { "$and": [a, b] }),
            (Err(e), _) | (_, Err(e)) => Err(e),
        })
    }

    /// Either filter.
    pub fn or(self, other: Filter) -> Self {
        Filter(match (self.0, other.0) {
            (Ok(a), Ok(b)) => Ok(doc! { "$or": [a, b] }),
            (Err(e), _) | (_, Err(e)) => Err(e),
        })
    }

    /// The filter document, or why a value could not be encoded.
    pub fn into_document(self) -> std::result::Result<Document, String> {
        self.0
    }
}

/// A typed handle on a field of model `M` holding values of type `T`: filters and sorts
/// built from it only accept `T`.
///
/// ```
/// use cqrs_mongo::{Field, Filter};
///
/// struct Order;
/// #[derive(serde::Serialize)]
/// enum Status { Open, Paid }
///
/// const STATUS: Field<Order, Status> = Field::new("status");
/// const TOTAL: Field<Order, i64> = Field::new("total");
///
/// let f = STATUS.eq(Status::Paid).and(TOTAL.gt(10));
/// assert!(f.into_document().is_ok());
/// let s = TOTAL.desc();
/// ```
pub struct Field<M, T> {
    name: &'static str,
    _marker: PhantomData<fn() -> (M, T)>,
}

impl<M, T> Clone for Field<M, T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<M, T> Copy for Field<M, T> {}

impl<M, T> fmt::Debug for Field<M, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Field({})", self.name)
    }
}

impl<M, T: Serialize> Field<M, T> {
    /// A field by (dotted) path.
    pub const fn new(name: &'static str) -> Self {
        Field {
            name,
            _marker: PhantomData,
        }
    }

    /// Its path.
    pub const fn name(&self) -> &'static str {
        self.name
    }

    /// `== value`.
    pub fn eq(&self, value: impl Into<T>) -> Filter {
        Filter::eq(self.name, value.into())
    }

    /// `!= value`.
    pub fn ne(&self, value: impl Into<T>) -> Filter {
        Filter::ne(self.name, value.into())
    }

    /// `> value`.
    pub fn gt(&self, value: impl Into<T>) -> Filter {
        Filter::gt(self.name, value.into())
    }

    /// `>= value`.
    pub fn gte(&self, value: impl Into<T>) -> Filter {
        Filter::gte(self.name, value.into())
    }

    /// `< value`.
    pub fn lt(&self, value: impl Into<T>) -> Filter {
        Filter::lt(self.name, value.into())
    }

    /// `<= value`.
    pub fn lte(&self, value: impl Into<T>) -> Filter {
        Filter::lte(self.name, value.into())
    }

    /// One of `values`.
    pub fn is_in(&self, values: impl IntoIterator<Item = T>) -> Filter {
        Filter::is_in(self.name, values)
    }

    /// Ascending sort on this field.
    pub fn asc(&self) -> Sort {
        Sort::asc(self.name)
    }

    /// Descending sort on this field.
    pub fn desc(&self) -> Sort {
        Sort::desc(self.name)
    }
}

/// A sort order: fields and directions, `_id` ascending as the final tie-breaker.
///
/// ```
/// use cqrs_mongo::{Sort, bson::doc};
/// let s = Sort::desc("created_at").then_asc("name");
/// assert_eq!(s.to_document(), doc! { "created_at": -1, "name": 1, "_id": 1 });
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sort(Vec<(String, i32)>);

impl Sort {
    /// Ascending on `field`.
    pub fn asc(field: &str) -> Self {
        Sort(vec![(field.to_string(), 1)])
    }

    /// Descending on `field`.
    pub fn desc(field: &str) -> Self {
        Sort(vec![(field.to_string(), -1)])
    }

    /// Then ascending on `field`.
    pub fn then_asc(mut self, field: &str) -> Self {
        self.0.push((field.to_string(), 1));
        self
    }

    /// Then descending on `field`.
    pub fn then_desc(mut self, field: &str) -> Self {
        self.0.push((field.to_string(), -1));
        self
    }

    /// The keys with `_id` appended (unless already present).
    fn keys(&self) -> Vec<(String, i32)> {
        let mut keys = self.0.clone();
        if !keys.iter().any(|(f, _)| f == "_id") {
            keys.push(("_id".to_string(), 1));
        }
        keys
    }

    /// The sort document sent to the server.
    pub fn to_document(&self) -> Document {
        self.keys()
            .into_iter()
            .map(|(f, d)| (f, Bson::Int32(d)))
            .collect()
    }
}

/// What to find: filter, sort and limit.
///
/// ```
/// use cqrs_mongo::{Filter, Query, Sort};
/// let q = Query::new(Filter::eq("status", "open")).sort(Sort::asc("total")).limit(20);
/// assert_eq!(q.limit, Some(20));
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    /// Filter.
    pub filter: Filter,
    /// Sort (`_id` ascending is always the last key).
    pub sort: Sort,
    /// Maximum number of documents (`find` only; `page` takes a page size).
    pub limit: Option<i64>,
}

impl Query {
    /// A query with a filter, sorted by `_id`.
    pub fn new(filter: Filter) -> Self {
        Query {
            filter,
            sort: Sort::default(),
            limit: None,
        }
    }

    /// Every live document.
    pub fn all() -> Self {
        Self::new(Filter::all())
    }

    /// Sorts.
    pub fn sort(mut self, sort: Sort) -> Self {
        self.sort = sort;
        self
    }

    /// Limits.
    pub fn limit(mut self, limit: i64) -> Self {
        self.limit = Some(limit);
        self
    }
}

/// Opaque position after the last document of a page. Pass its string form around
/// (URL-safe) and parse it back.
///
/// ```
/// # use cqrs_mongo::PageCursor;
/// let c: PageCursor = "not a cursor".parse().unwrap();
/// assert_eq!(c.to_string(), "not a cursor"); // validated only when used
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PageCursor(String);

impl fmt::Display for PageCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for PageCursor {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        Ok(PageCursor(s.to_string()))
    }
}

/// One page of results.
///
/// ```
/// let p: cqrs_mongo::Page<u8> = cqrs_mongo::Page { items: vec![], next: None };
/// assert!(p.next.is_none());
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    /// The documents.
    pub items: Vec<Versioned<T>>,
    /// Cursor of the next page; `None` on the last page.
    pub next: Option<PageCursor>,
}

/// Typed fields to set and remove in a guarded partial update.
///
/// ```
/// use cqrs_mongo::Patch;
/// let p = Patch::new().set("status", "paid").set("total", 12.5).unset("eta");
/// assert!(p.is_ok());
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Patch {
    set: std::result::Result<Document, String>,
    unset: Vec<String>,
}

impl Default for Patch {
    fn default() -> Self {
        Self::new()
    }
}

impl Patch {
    /// An empty patch.
    pub fn new() -> Self {
        Patch {
            set: Ok(Document::new()),
            unset: Vec::new(),
        }
    }

    /// Sets `field` (a dotted path works) to `value`.
    pub fn set(mut self, field: &str, value: impl Serialize) -> Self {
        self.set = match (self.set, to_bson(value)) {
            (Ok(mut d), Ok(v)) => {
                d.insert(field, v);
                Ok(d)
            }
            (Err(e), _) | (_, Err(e)) => Err(e),
        };
        self
    }

    /// Sets every top-level field of `fields` (a struct serialized by serde): a typed part
    /// of a document, fields named once, in the struct (`Option` fields skipped when
    /// `None` with `#[serde(skip_serializing_if = "Option::is_none")]` stay untouched).
    ///
    /// ```
    /// #[derive(serde::Serialize)]
    /// struct Shipping { carrier: &'static str, parcels: i32 }
    ///
    /// let (set, _) = cqrs_mongo::Patch::new()
    ///     .set_all(&Shipping { carrier: "dhl", parcels: 2 })
    ///     .into_parts()
    ///     .unwrap();
    /// assert_eq!(set, cqrs_mongo::bson::doc! { "carrier": "dhl", "parcels": 2 });
    /// ```
    pub fn set_all(mut self, fields: &impl Serialize) -> Self {
        self.set = match (self.set, bson::to_document(fields)) {
            (Ok(mut d), Ok(fields)) => {
                d.extend(fields);
                Ok(d)
            }
            (Err(e), _) => Err(e),
            (_, Err(e)) => Err(format!("fields are not a document: {e}")),
        };
        self
    }

    /// Removes `field`.
    pub fn unset(mut self, field: &str) -> Self {
        self.unset.push(field.to_string());
        self
    }

    /// False when a value could not be encoded.
    pub fn is_ok(&self) -> bool {
        self.set.is_ok()
    }

    /// The fields to set and the fields to remove; `Err` names the value that could not be
    /// encoded.
    ///
    /// ```
    /// let (set, unset) = cqrs_mongo::Patch::new().set("a", 1).unset("b").into_parts().unwrap();
    /// assert_eq!(set, cqrs_mongo::bson::doc! { "a": 1 });
    /// assert_eq!(unset, vec!["b".to_string()]);
    /// ```
    pub fn into_parts(self) -> std::result::Result<(Document, Vec<String>), String> {
        Ok((self.set?, self.unset))
    }
}

/// Queries and guarded writes on the collection of read model `M`.
///
/// ```no_run
/// # use cqrs_core::{ReadModel, SourceVersion};
/// # use cqrs_mongo::{MongoReadModel, Filter, Query, Sort};
/// # #[derive(Debug, serde::Serialize, serde::Deserialize)]
/// # struct Order { #[serde(rename = "_id")] id: String, status: String, total: i64 }
/// # impl ReadModel for Order { type Id = String; const COLLECTION: &'static str = "orders"; fn id(&self) -> String { self.id.clone() } }
/// # impl MongoReadModel for Order {}
/// # async fn demo(mongo: cqrs_mongo::MongoClient) -> cqrs_mongo::Result<()> {
/// let orders = mongo.repository::<Order>();
/// orders.ensure_indexes().await?;
/// orders.replace(&Order { id: "o-1".into(), status: "open".into(), total: 5 }, SourceVersion::new(1)).await?;
/// let open = orders
///     .find(&Query::new(Filter::eq("status", "open")).sort(Sort::desc("total")).limit(10))
///     .await?;
/// let first = orders.page(&Query::all(), None, 50).await?;
/// if let Some(next) = &first.next {
///     let second = orders.page(&Query::all(), Some(next), 50).await?;
/// }
/// # Ok(()) }
/// ```
pub struct Repository<M> {
    client: MongoClient,
    fields: VersionFields,
    _marker: PhantomData<fn() -> M>,
}

impl<M> Clone for Repository<M> {
    fn clone(&self) -> Self {
        Repository {
            client: self.client.clone(),
            fields: self.fields.clone(),
            _marker: PhantomData,
        }
    }
}

impl<M: MongoReadModel> fmt::Debug for Repository<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Repository")
            .field("collection", &M::COLLECTION)
            .field("database", &M::DATABASE)
            .finish()
    }
}

fn live(filter: Document) -> Document {
    let hide = doc! { DELETED_FIELD: { "$ne": true } };
    if filter.is_empty() {
        hide
    } else {
        doc! { "$and": [filter, hide] }
    }
}

/// Value at a dotted path of a document (`Null` when absent).
fn path_value(doc: &Document, path: &str) -> Bson {
    let mut current = doc;
    let mut parts = path.split('.').peekable();
    while let Some(part) = parts.next() {
        match current.get(part) {
            Some(Bson::Document(d)) if parts.peek().is_some() => current = d,
            Some(v) if parts.peek().is_none() => return v.clone(),
            _ => return Bson::Null,
        }
    }
    Bson::Null
}

impl<M: MongoReadModel> Repository<M> {
    /// A repository on `M`'s collection.
    pub fn new(client: MongoClient) -> Self {
        Repository {
            client,
            fields: VersionFields::of::<M>(),
            _marker: PhantomData,
        }
    }

    /// The database of the collection.
    pub fn database(&self) -> Database {
        self.client.database(M::DATABASE)
    }

    /// Raw read access to the read model, for anything this type does not cover: its view
    /// (live documents of the live version, see [`layout`](crate::layout)); it refuses
    /// writes.
    pub fn collection(&self) -> Collection<Document> {
        self.database().collection(M::COLLECTION)
    }

    /// [`Repository::collection`] typed as `M`.
    pub fn typed_collection(&self) -> Collection<M> {
        self.database().collection(M::COLLECTION)
    }

    /// The physical collection of the live version, tombstones included (writes made
    /// through it bypass the version guard).
    ///
    /// ```no_run
    /// # use cqrs_mongo::MongoReadModel;
    /// # async fn demo<M: MongoReadModel>(repo: cqrs_mongo::Repository<M>) -> cqrs_mongo::Result<()> {
    /// let tombstones = repo.physical().await?.count_documents(cqrs_mongo::bson::doc! { "_deleted": true }).await;
    /// # Ok(()) }
    /// ```
    pub async fn physical(&self) -> Result<Collection<Document>> {
        let layout = self.client.layout(M::DATABASE, M::COLLECTION).await?;
        Ok(self
            .client
            .database(Some(&layout.database))
            .collection(&layout.live))
    }

    /// Where guarded writes of this model go.
    pub fn target(&self) -> Target {
        match M::DATABASE {
            Some(db) => Target::in_database(db, M::COLLECTION),
            None => Target::collection(M::COLLECTION),
        }
    }

    fn id_bson<Q>(&self, id: &Q) -> Result<Bson>
    where
        M::Id: Borrow<Q>,
        Q: Serialize + fmt::Debug + Sync + ?Sized,
    {
        bson::to_bson(id).map_err(|e| MongoError::Encode {
            collection: M::COLLECTION.to_string(),
            id: Some(format!("{id:?}")),
            message: format!("id: {e}"),
        })
    }

    fn mongo_err(
        &self,
        op: &'static str,
        id: Option<String>,
        e: mongodb::error::Error,
    ) -> MongoError {
        MongoError::mongo(op, M::COLLECTION, id, e)
    }

    fn filter_doc(&self, filter: &Filter) -> Result<Document> {
        filter
            .clone()
            .into_document()
            .map_err(|reason| MongoError::InvalidQuery {
                collection: M::COLLECTION.to_string(),
                reason,
            })
    }

    /// Creates (or verifies) the model's indexes and the tombstone index; returns the
    /// names of the indexes created.
    ///
    /// A conflicting existing index is a [`MongoError::IndexConflict`].
    pub async fn ensure_indexes(&self) -> Result<Vec<String>> {
        let layout = self.client.layout(M::DATABASE, M::COLLECTION).await?;
        let db = self.client.database(Some(&layout.database));
        let retention = M::TOMBSTONE_TTL.unwrap_or_else(|| self.client.tombstone_retention());
        let mut created = Vec::new();
        for physical in layout.write_targets() {
            self.client
                .ensure_retention(&db, physical, retention)
                .await?;
            created.extend(indexes::ensure_indexes(&db.collection(physical), M::indexes()).await?);
        }
        Ok(created)
    }

    /// The live document with this id, with its version.
    ///
    /// `id` is the model's id or a borrowed form of it: `get("o-1")` for a `String` id.
    ///
    /// ```no_run
    /// # use cqrs_mongo::{MongoReadModel, Repository};
    /// # async fn demo<M: MongoReadModel<Id = String>>(orders: Repository<M>) -> cqrs_mongo::Result<()> {
    /// if let Some(order) = orders.get("o-1").await? {
    ///     println!("o-1 at {}", order.version);
    /// }
    /// let id = String::from("o-2");
    /// let _same = orders.get(&id).await?;
    /// # Ok(()) }
    /// ```
    pub async fn get<Q>(&self, id: &Q) -> Result<Option<Versioned<M>>>
    where
        M::Id: Borrow<Q>,
        Q: Serialize + fmt::Debug + Sync + ?Sized,
    {
        let id = self.id_bson(id)?;
        let found = self
            .collection()
            .find_one(live(doc! { "_id": id.clone() }))
            .await
            .map_err(|e| self.mongo_err("find", Some(display_id(&id)), e))?;
        found
            .map(|d| decode(d, M::COLLECTION, &self.fields))
            .transpose()
    }

    /// The stored version of a document, tombstones included (`None` if never written).
    pub async fn version_of<Q>(&self, id: &Q) -> Result<Option<(SourceVersion, bool)>>
    where
        M::Id: Borrow<Q>,
        Q: Serialize + fmt::Debug + Sync + ?Sized,
    {
        let id = self.id_bson(id)?;
        let projection = doc! {
            self.fields.position.as_str(): 1,
            self.fields.index.as_str(): 1,
            DELETED_FIELD: 1,
        };
        let found = self
            .physical()
            .await?
            .find_one(doc! { "_id": id.clone() })
            .projection(projection)
            .await
            .map_err(|e| self.mongo_err("find", Some(display_id(&id)), e))?;
        found
            .map(|d| {
                let deleted = crate::model::is_tombstone(&d);
                self.fields.read(&d, M::COLLECTION).map(|v| (v, deleted))
            })
            .transpose()
    }

    /// Live documents matching a query, in its sort order.
    pub async fn find(&self, query: &Query) -> Result<Vec<Versioned<M>>> {
        let filter = live(self.filter_doc(&query.filter)?);
        let coll = self.collection();
        let mut action = coll.find(filter).sort(query.sort.to_document());
        if let Some(limit) = query.limit {
            action = action.limit(limit);
        }
        let docs: Vec<Document> = action
            .await
            .map_err(|e| self.mongo_err("find", None, e))?
            .try_collect()
            .await
            .map_err(|e| self.mongo_err("find", None, e))?;
        docs.into_iter()
            .map(|d| decode(d, M::COLLECTION, &self.fields))
            .collect()
    }

    /// Runs an aggregation pipeline over the live documents (tombstones are filtered out
    /// first) and decodes each result row as `R`.
    ///
    /// ```no_run
    /// # use cqrs_mongo::{MongoReadModel, Repository};
    /// # async fn demo<M: MongoReadModel>(orders: Repository<M>) -> cqrs_mongo::Result<()> {
    /// use cqrs_mongo::bson::doc;
    ///
    /// #[derive(serde::Deserialize)]
    /// struct PerStatus { #[serde(rename = "_id")] status: String, n: i64 }
    ///
    /// let rows: Vec<PerStatus> = orders
    ///     .aggregate(vec![doc! { "$group": { "_id": "$status", "n": { "$sum": 1 } } }])
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub async fn aggregate<R: serde::de::DeserializeOwned>(
        &self,
        pipeline: Vec<Document>,
    ) -> Result<Vec<R>> {
        let mut stages = vec![doc! { "$match": live(Document::new()) }];
        stages.extend(pipeline);
        let rows: Vec<Document> = self
            .collection()
            .aggregate(stages)
            .await
            .map_err(|e| self.mongo_err("aggregate", None, e))?
            .try_collect()
            .await
            .map_err(|e| self.mongo_err("aggregate", None, e))?;
        rows.into_iter()
            .map(|row| {
                bson::from_document(row).map_err(|e| MongoError::Decode {
                    collection: M::COLLECTION.to_string(),
                    id: None,
                    field: "(aggregation row)".into(),
                    message: e.to_string(),
                })
            })
            .collect()
    }

    /// Number of live documents matching a filter.
    pub async fn count(&self, filter: &Filter) -> Result<u64> {
        let filter = live(self.filter_doc(filter)?);
        self.collection()
            .count_documents(filter)
            .await
            .map_err(|e| self.mongo_err("count", None, e))
    }

    /// One page of a query (its `limit` is ignored: `size` documents at most), starting
    /// after `after`.
    ///
    /// Sort fields should hold values of one BSON type per field (nulls and missing
    /// values are handled: they sort first).
    pub async fn page(
        &self,
        query: &Query,
        after: Option<&PageCursor>,
        size: u32,
    ) -> Result<Page<M>> {
        let keys = query.sort.keys();
        let mut filter = self.filter_doc(&query.filter)?;
        if let Some(cursor) = after {
            let values = self.decode_cursor(cursor, &keys)?;
            let keyset = keyset_filter(&keys, &values);
            filter = if filter.is_empty() {
                keyset
            } else {
                doc! { "$and": [filter, keyset] }
            };
        }
        let docs: Vec<Document> = self
            .collection()
            .find(live(filter))
            .sort(query.sort.to_document())
            .limit(i64::from(size.max(1)) + 1)
            .await
            .map_err(|e| self.mongo_err("find", None, e))?
            .try_collect()
            .await
            .map_err(|e| self.mongo_err("find", None, e))?;
        let more = docs.len() > size.max(1) as usize;
        let docs: Vec<Document> = docs.into_iter().take(size.max(1) as usize).collect();
        let next = match (more, docs.last()) {
            (true, Some(last)) => Some(self.encode_cursor(&keys, last)),
            _ => None,
        };
        let items = docs
            .into_iter()
            .map(|d| decode(d, M::COLLECTION, &self.fields))
            .collect::<Result<Vec<_>>>()?;
        Ok(Page { items, next })
    }

    fn encode_cursor(&self, keys: &[(String, i32)], last: &Document) -> PageCursor {
        let sort: Vec<Bson> = keys
            .iter()
            .map(|(f, d)| Bson::String(format!("{f}:{d}")))
            .collect();
        let values: Vec<Bson> = keys.iter().map(|(f, _)| path_value(last, f)).collect();
        let d = doc! { "c": M::COLLECTION, "s": sort, "v": values };
        let bytes = bson::to_vec(&d).unwrap_or_default();
        PageCursor(URL_SAFE_NO_PAD.encode(bytes))
    }

    fn decode_cursor(&self, cursor: &PageCursor, keys: &[(String, i32)]) -> Result<Vec<Bson>> {
        let invalid = |reason: &str| MongoError::InvalidCursor {
            collection: M::COLLECTION.to_string(),
            reason: reason.to_string(),
        };
        let bytes = URL_SAFE_NO_PAD
            .decode(cursor.0.as_bytes())
            .map_err(|_| invalid("not base64"))?;
        let d: Document = bson::from_slice(&bytes).map_err(|_| invalid("not a cursor"))?;
        if d.get_str("c").ok() != Some(M::COLLECTION) {
            return Err(invalid("made for another collection"));
        }
        let sort: Vec<String> = keys.iter().map(|(f, d)| format!("{f}:{d}")).collect();
        let stored: Vec<String> = d
            .get_array("s")
            .map_err(|_| invalid("not a cursor"))?
            .iter()
            .filter_map(|b| b.as_str().map(str::to_string))
            .collect();
        if stored != sort {
            return Err(invalid("made for another sort order"));
        }
        let values = d
            .get_array("v")
            .map_err(|_| invalid("not a cursor"))?
            .clone();
        if values.len() != keys.len() {
            return Err(invalid("made for another sort order"));
        }
        Ok(values)
    }

    /// Guarded full replace of a document (creating it if needed).
    pub async fn replace(&self, document: &M, version: SourceVersion) -> Result<WriteOutcome> {
        let id = self.id_bson(&document.id())?;
        let doc = bson::to_document(document).map_err(|e| MongoError::Encode {
            collection: M::COLLECTION.to_string(),
            id: Some(display_id(&id)),
            message: e.to_string(),
        })?;
        self.apply(ReadModelWrite::Replace {
            target: self.target(),
            id,
            version,
            document: doc,
        })
        .await
    }

    /// Guarded partial update (creating the document with just these fields if needed).
    pub async fn patch<Q>(
        &self,
        id: &Q,
        version: SourceVersion,
        patch: Patch,
    ) -> Result<WriteOutcome>
    where
        M::Id: Borrow<Q>,
        Q: Serialize + fmt::Debug + Sync + ?Sized,
    {
        let id = self.id_bson(id)?;
        let set = patch.set.map_err(|message| MongoError::Encode {
            collection: M::COLLECTION.to_string(),
            id: Some(display_id(&id)),
            message,
        })?;
        self.apply(ReadModelWrite::Patch {
            target: self.target(),
            id,
            version,
            set,
            unset: patch.unset,
        })
        .await
    }

    /// Guarded delete: leaves a tombstone at `version`.
    pub async fn delete<Q>(&self, id: &Q, version: SourceVersion) -> Result<WriteOutcome>
    where
        M::Id: Borrow<Q>,
        Q: Serialize + fmt::Debug + Sync + ?Sized,
    {
        let id = self.id_bson(id)?;
        self.apply(ReadModelWrite::Delete {
            target: self.target(),
            id,
            version,
        })
        .await
    }

    /// Applies an untyped guarded write to this model's collection (its target's
    /// collection and database are ignored).
    pub async fn apply(&self, write: impl Into<GuardedWrite>) -> Result<WriteOutcome> {
        let mut op = guard::build(&write.into(), &self.fields, bson::DateTime::now())?;
        op.database = M::DATABASE.map(str::to_owned);
        op.collection = M::COLLECTION.to_owned();
        guard::execute_resolved(&self.client, &op, true).await
    }

    /// Removes tombstones deleted before `older_than`; returns how many.
    pub async fn purge_tombstones(&self, older_than: chrono::DateTime<chrono::Utc>) -> Result<u64> {
        self.physical()
            .await?
            .delete_many(doc! {
                DELETED_FIELD: true,
                DELETED_AT_FIELD: { "$lt": bson::DateTime::from_chrono(older_than) },
            })
            .await
            .map(|r| r.deleted_count)
            .map_err(|e| self.mongo_err("purge tombstones", None, e))
    }

    pub(crate) fn fields(&self) -> &VersionFields {
        &self.fields
    }

    pub(crate) fn encode_id<Q>(&self, id: &Q) -> Result<Bson>
    where
        M::Id: Borrow<Q>,
        Q: Serialize + fmt::Debug + Sync + ?Sized,
    {
        self.id_bson(id)
    }
}

/// `(k1 > v1) or (k1 == v1 and k2 > v2) or ...`, with nulls (which sort first) handled.
fn keyset_filter(keys: &[(String, i32)], values: &[Bson]) -> Document {
    let mut branches: Vec<Bson> = Vec::new();
    for k in 0..keys.len() {
        let mut branch = Document::new();
        let mut conditions: Vec<Document> = Vec::new();
        for j in 0..k {
            conditions.push(doc! { keys[j].0.as_str(): { "$eq": values[j].clone() } });
        }
        let (field, dir) = (&keys[k].0, keys[k].1);
        let value = &values[k];
        let after = if matches!(value, Bson::Null) {
            if dir > 0 {
                Some(doc! { field.as_str(): { "$ne": Bson::Null } })
            } else {
                None
            }
        } else if dir > 0 {
            Some(doc! { field.as_str(): { "$gt": value.clone() } })
        } else {
            // Descending: smaller values, then nulls/missing (which sort last here).
            Some(doc! { "$or": [
                { field.as_str(): { "$lt": value.clone() } },
                { field.as_str(): Bson::Null },
            ] })
        };
        let Some(after) = after else { continue };
        conditions.push(after);
        branch.insert("$and", conditions);
        branches.push(Bson::Document(branch));
    }
    if branches.is_empty() {
        // Nothing can follow: match nothing.
        doc! { "_id": { "$in": [] } }
    } else {
        doc! { "$or": branches }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyset_on_one_key() {
        let keys = vec![("_id".to_string(), 1)];
        assert_eq!(
            keyset_filter(&keys, &[Bson::Int32(5)]),
            doc! { "$or": [ { "$and": [ { "_id": { "$gt": 5 } } ] } ] }
        );
    }

    #[test]
    fn path_values() {
        let d = doc! { "a": { "b": 2 }, "c": 3 };
        assert_eq!(path_value(&d, "a.b"), Bson::Int32(2));
        assert_eq!(path_value(&d, "c"), Bson::Int32(3));
        assert_eq!(path_value(&d, "a.x"), Bson::Null);
        assert_eq!(path_value(&d, "c.d"), Bson::Null);
    }
}
