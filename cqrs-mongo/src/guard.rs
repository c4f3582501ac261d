//! Version-guarded single writes and tombstones.
//!
//! Every write is an **upsert whose filter is `{_id, version older than mine}`**:
//!
//! * the stored document is older: the filter matches, the write applies;
//! * there is no document: the filter does not match, the upsert inserts it;
//! * the stored document is as new or newer: the filter does not match, the upsert tries
//!   to insert a second document with the same `_id` and the server refuses with a
//!   duplicate-key error (11000) on `_id_`: the write is **stale**, a no-op.
//!
//! One round trip decides. "Older than `(p, i)`" is encoded as
//! `{_version: {$not: {$gte: p}}}` when `i == 0`, and as
//! `{$nor: [{_version: {$gt: p}}, {_version: p, _version_index: {$gte: i}}]}` otherwise
//! (see [`guard_filter`]): exact, and a missing version counts as zero.
//!
//! Two writers racing to *create* the same document can make the newer one collide with
//! the older one's fresh insert. The guard then retries once (the document now exists, so
//! the retry is a plain guarded update): a stale verdict costs a second round trip, an
//! applied write one. Set `confirm_stale` to false in [`BulkOptions`](crate::BulkOptions)
//! when one writer owns each id and you want stale writes to cost one round trip too.

use bson::{Bson, Document, doc};
use cqrs_core::{ReadModelWrite, SourceVersion};
use mongodb::Collection;

use crate::{
    children::{self, CHILDREN_FIELD},
    error::{DuplicateOn, MongoError, Result, display_id, duplicate_in},
    model::{
        AGGREGATES_FIELD, DELETED_AT_FIELD, DELETED_FIELD, GuardedWrite, SCOPES_FIELD,
        VersionFields, origin_key,
    },
};

/// What became of a guarded write. A stale write is an outcome, never an error.
///
/// ```
/// use cqrs_mongo::WriteOutcome;
/// assert!(WriteOutcome::Applied.is_applied());
/// assert!(WriteOutcome::Stale.is_stale());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WriteOutcome {
    /// The write was newer than the stored document (or there was none): it applied.
    Applied,
    /// The stored document was as new or newer: nothing changed.
    Stale,
}

impl WriteOutcome {
    /// True for [`WriteOutcome::Applied`].
    pub fn is_applied(self) -> bool {
        self == WriteOutcome::Applied
    }

    /// True for [`WriteOutcome::Stale`].
    pub fn is_stale(self) -> bool {
        self == WriteOutcome::Stale
    }
}

/// The filter matching document `id` only if its stored version is older than
/// `(position, index)`.
///
/// ```
/// use cqrs_mongo::{bson::doc, guard::guard_filter, VersionFields};
///
/// let f = VersionFields::new("_version");
/// assert_eq!(
///     guard_filter(&f, &"a".into(), 7, 0),
///     doc! { "_id": "a", "_version": { "$not": { "$gte": 7_i64 } } }
/// );
/// assert_eq!(
///     guard_filter(&f, &"a".into(), 7, 2),
///     doc! { "_id": "a", "$nor": [
///         { "_version": { "$gt": 7_i64 } },
///         { "_version": 7_i64, "_version_index": { "$gte": 2_i64 } },
///     ] }
/// );
/// ```
pub fn guard_filter(fields: &VersionFields, id: &Bson, position: i64, index: i64) -> Document {
    if index == 0 {
        doc! { "_id": id.clone(), fields.position.as_str(): { "$not": { "$gte": position } } }
    } else {
        doc! {
            "_id": id.clone(),
            "$nor": [
                { fields.position.as_str(): { "$gt": position } },
                { fields.position.as_str(): position, fields.index.as_str(): { "$gte": index } },
            ]
        }
    }
}

/// The update part of a guarded write.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum OpBody {
    /// Full replacement (documents and tombstones).
    Replace(Document),
    /// Update operators (patches).
    Update(Document),
    /// A document to fill in (see [`fill`](crate::fill)): sent as an update pipeline,
    /// inserted as is when there is no document.
    Fill(Document),
}

/// A guarded write ready to send.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct GuardedOp {
    pub database: Option<String>,
    pub collection: String,
    pub id: Bson,
    pub filter: Document,
    pub body: OpBody,
}

impl GuardedOp {
    /// `{q, u, upsert: true}` for the `update` command.
    pub(crate) fn update_statement(&self) -> Document {
        let u = match &self.body {
            OpBody::Replace(d) | OpBody::Update(d) => Bson::Document(d.clone()),
            OpBody::Fill(d) => Bson::Array(
                crate::fill::pipeline(d)
                    .into_iter()
                    .map(Bson::Document)
                    .collect(),
            ),
        };
        doc! { "q": self.filter.clone(), "u": u, "upsert": true }
    }
}

/// Fields a caller may not write themselves.
fn reserved(field: &str, fields: &VersionFields) -> bool {
    field == fields.position
        || field == fields.index
        || field == DELETED_FIELD
        || field == DELETED_AT_FIELD
        || field == SCOPES_FIELD
        || field.starts_with(&format!("{SCOPES_FIELD}."))
        || field == AGGREGATES_FIELD
        || field.starts_with(&format!("{AGGREGATES_FIELD}."))
        || field == CHILDREN_FIELD
        || field.starts_with(&format!("{CHILDREN_FIELD}."))
        || field.starts_with(&format!("{}.", fields.position))
}

fn invalid(collection: &str, id: &Bson, reason: String) -> MongoError {
    MongoError::InvalidWrite {
        collection: collection.to_string(),
        id: Some(display_id(id)),
        reason,
    }
}

/// Strips `_id` (which must equal `id` if present) and the reserved fields a caller may
/// have copied from a read.
fn clean_body(
    mut d: Document,
    id: &Bson,
    collection: &str,
    fields: &VersionFields,
) -> Result<Document> {
    if let Some(own) = d.remove("_id")
        && &own != id
    {
        return Err(invalid(
            collection,
            id,
            format!(
                "the document's _id {} differs from the write's id",
                display_id(&own)
            ),
        ));
    }
    Ok(d.into_iter()
        .filter(|(k, _)| !reserved(k, fields))
        .collect())
}

/// The `$set` and `$unset` documents of a patch, checked.
fn patch_parts(
    set: &Document,
    unset: &[String],
    id: &Bson,
    collection: &str,
    fields: &VersionFields,
) -> Result<(Document, Document)> {
    let set = clean_body(set.clone(), id, collection, fields)?;
    let mut unset_doc = Document::new();
    for field in unset {
        if field == "_id" || reserved(field, fields) {
            return Err(invalid(collection, id, format!("cannot unset `{field}`")));
        }
        if set.contains_key(field) {
            return Err(invalid(
                collection,
                id,
                format!("`{field}` is both set and unset"),
            ));
        }
        unset_doc.insert(field.clone(), "");
    }
    Ok((set, unset_doc))
}

/// Builds the guarded operation for a write and its origin (a fill when the write is one;
/// a delete never fills).
pub(crate) fn build(
    guarded: &GuardedWrite,
    fields: &VersionFields,
    now: bson::DateTime,
) -> Result<GuardedOp> {
    // A child write is an update of its parent guarded by the child's own version; it
    // builds its own fill (see `children`).
    if matches!(guarded.write, ReadModelWrite::Child { .. }) {
        return children::build_child(guarded, fields, now);
    }
    let op = build_guarded(guarded, fields, now)?;
    if guarded.fill && !matches!(guarded.write, ReadModelWrite::Delete { .. }) {
        crate::fill::into_fill(op, fields)
    } else {
        Ok(op)
    }
}

fn build_guarded(
    guarded: &GuardedWrite,
    fields: &VersionFields,
    now: bson::DateTime,
) -> Result<GuardedOp> {
    let write = &guarded.write;
    // `_aggregates.<Type>/<id>`: the aggregate version the document reflects.
    let origin = guarded.origin.as_ref().map(|o| {
        (
            origin_key(&o.aggregate_type, &o.aggregate_id),
            i64::try_from(o.version).unwrap_or(i64::MAX),
        )
    });
    let target = write.target();
    let collection = target.collection.as_str();
    let id = write.id();
    let version: SourceVersion = write.version();
    let (position, index) = fields.encode(version, collection, Some(id))?;
    let mut filter = guard_filter(fields, id, position, index);
    let body = match write {
        ReadModelWrite::Replace { document, .. } => {
            let body = clean_body(document.clone(), id, collection, fields)?;
            let mut out = Document::new();
            out.insert("_id", id.clone());
            out.extend(body);
            out.insert(fields.position.clone(), position);
            out.insert(fields.index.clone(), index);
            if let Some((key, version)) = &origin {
                out.insert(AGGREGATES_FIELD, doc! { key.as_str(): *version });
            }
            // Sent as a plain replace to a document without children; one with children
            // gets the form that keeps them (`children::keep_form`).
            let (name, marker) = children::without_children();
            filter.insert(name, marker);
            OpBody::Replace(out)
        }
        ReadModelWrite::Patch { set, unset, .. } => {
            let (mut set, mut unset_doc) = patch_parts(set, unset, id, collection, fields)?;
            set.insert(fields.position.clone(), position);
            set.insert(fields.index.clone(), index);
            if let Some((key, version)) = &origin {
                set.insert(format!("{AGGREGATES_FIELD}.{key}"), *version);
            }
            unset_doc.insert(DELETED_FIELD, "");
            unset_doc.insert(DELETED_AT_FIELD, "");
            OpBody::Update(doc! { "$set": set, "$unset": unset_doc })
        }
        ReadModelWrite::ScopedPatch {
            scope, set, unset, ..
        } => {
            let valid_scope = !scope.is_empty()
                && scope.len() <= 64
                && scope
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
            if !valid_scope {
                return Err(invalid(
                    collection,
                    id,
                    format!("scope {scope:?} must be 1-64 letters, digits, '_' or '-'"),
                ));
            }
            let (mut set, mut unset_doc) = patch_parts(set, unset, id, collection, fields)?;
            let scoped = VersionFields::new(&format!("{SCOPES_FIELD}.{scope}.{}", fields.position));
            set.insert(scoped.position.clone(), position);
            set.insert(scoped.index.clone(), index);
            if let Some((key, version)) = &origin {
                set.insert(format!("{AGGREGATES_FIELD}.{key}"), *version);
            }
            unset_doc.insert(DELETED_FIELD, "");
            unset_doc.insert(DELETED_AT_FIELD, "");
            // The source's own version guards the write; a tombstone at least as new as
            // the change keeps the document deleted.
            let own = guard_filter(&scoped, id, position, index);
            let mut conditions: Vec<Bson> = own
                .into_iter()
                .filter(|(k, _)| k != "_id")
                .map(|(k, v)| Bson::Document(doc! { k: v }))
                .collect();
            conditions.push(Bson::Document(doc! { "$nor": [
                { DELETED_FIELD: true, fields.position.as_str(): { "$gte": position } }
            ] }));
            return Ok(GuardedOp {
                database: target.database.clone(),
                collection: target.collection.clone(),
                id: id.clone(),
                filter: doc! { "_id": id.clone(), "$and": conditions },
                body: OpBody::Update(doc! {
                    "$set": set,
                    "$unset": unset_doc,
                    // The document-level version is the newest of its sources, so a
                    // consistency wait sees every source's progress.
                    "$max": { fields.position.as_str(): position },
                }),
            });
        }
        ReadModelWrite::Delete { .. } => {
            let mut tombstone = doc! {
                "_id": id.clone(),
                fields.position.as_str(): position,
                fields.index.as_str(): index,
                DELETED_FIELD: true,
                DELETED_AT_FIELD: now,
            };
            // A waiter for the deleting command learns that the document is gone.
            if let Some((key, version)) = &origin {
                tombstone.insert(AGGREGATES_FIELD, doc! { key.as_str(): *version });
            }
            // A deleted parent keeps its children (rows of their own table): see `children`.
            let (name, marker) = children::without_children();
            filter.insert(name, marker);
            OpBody::Replace(tombstone)
        }
        ReadModelWrite::Child { .. } => return children::build_child(guarded, fields, now),
    };
    Ok(GuardedOp {
        database: target.database.clone(),
        collection: target.collection.clone(),
        id: id.clone(),
        filter,
        body,
    })
}

/// Sends one guarded operation to the live version of its read model, and a copy to the
/// version being rebuilt (see [`layout`](crate::layout)); the live outcome counts.
pub(crate) async fn execute_resolved(
    client: &crate::MongoClient,
    op: &GuardedOp,
    confirm_stale: bool,
) -> Result<WriteOutcome> {
    let layout = client
        .layout(op.database.as_deref(), &op.collection)
        .await?;
    let db = client.database(Some(&layout.database));
    let outcome = execute_one(&db.collection(&layout.live), op, confirm_stale).await?;
    if let Some(building) = &layout.building
        && let Err(e) = execute_one(&db.collection(building), op, confirm_stale).await
    {
        tracing::warn!(collection = %building, id = %display_id(&op.id), error = %e, "write to the version being rebuilt failed");
    }
    Ok(outcome)
}

/// Sends one guarded operation; a duplicate key on `_id` is stale (confirmed once by a
/// retry when `confirm_stale`).
pub(crate) async fn execute_one(
    coll: &Collection<Document>,
    op: &GuardedOp,
    confirm_stale: bool,
) -> Result<WriteOutcome> {
    let attempts = if confirm_stale { 2 } else { 1 };
    let keep = children::keep_form(&op.filter, &op.body);
    for attempt in 1..=attempts {
        let result = match &op.body {
            OpBody::Replace(d) => {
                coll.replace_one(op.filter.clone(), d.clone())
                    .upsert(true)
                    .await
            }
            OpBody::Update(u) => {
                coll.update_one(op.filter.clone(), u.clone())
                    .upsert(true)
                    .await
            }
            OpBody::Fill(d) => {
                coll.update_one(op.filter.clone(), crate::fill::pipeline(d))
                    .upsert(true)
                    .await
            }
        };
        match result {
            Ok(_) => return Ok(WriteOutcome::Applied),
            Err(e) => match duplicate_in(&e) {
                // The plain form met a document it may not replace: one that holds
                // children gets the form keeping them (which also decides staleness).
                Some(DuplicateOn::Id) if keep.is_some() => {
                    let Some((filter, pipeline)) = keep else {
                        return Ok(WriteOutcome::Stale);
                    };
                    return match coll.update_one(filter, pipeline).upsert(true).await {
                        Ok(_) => Ok(WriteOutcome::Applied),
                        Err(e) if duplicate_in(&e) == Some(DuplicateOn::Id) => {
                            Ok(WriteOutcome::Stale)
                        }
                        Err(e) => Err(MongoError::mongo(
                            "guarded write",
                            coll.namespace().to_string(),
                            Some(display_id(&op.id)),
                            e,
                        )),
                    };
                }
                Some(DuplicateOn::Id) if attempt < attempts => {
                    tracing::trace!(collection = %coll.name(), id = %display_id(&op.id), "duplicate key on _id: confirming");
                    continue;
                }
                Some(DuplicateOn::Id) => return Ok(WriteOutcome::Stale),
                _ => {
                    return Err(MongoError::mongo(
                        "guarded write",
                        coll.namespace().to_string(),
                        Some(display_id(&op.id)),
                        e,
                    ));
                }
            },
        }
    }
    Ok(WriteOutcome::Stale)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cqrs_core::Target;

    fn fields() -> VersionFields {
        VersionFields::new("_version")
    }

    #[test]
    fn replace_sets_id_and_version_and_drops_reserved() {
        let w = ReadModelWrite::Replace {
            target: Target::collection("c"),
            id: Bson::from("a"),
            version: SourceVersion::with_index(5, 1),
            document: doc! { "_id": "a", "x": 1, "_version": 99_i64, "_deleted": true },
        };
        let op = build(&w.clone().into(), &fields(), bson::DateTime::now()).unwrap();
        assert_eq!(
            op.body,
            OpBody::Replace(
                doc! { "_id": "a", "x": 1, "_version": 5_i64, "_version_index": 1_i64 }
            )
        );
    }

    #[test]
    fn patch_conflicts_and_foreign_ids_are_invalid() {
        let w = ReadModelWrite::Patch {
            target: Target::collection("c"),
            id: Bson::from("a"),
            version: SourceVersion::new(5),
            set: doc! { "x": 1 },
            unset: vec!["x".into()],
        };
        assert!(matches!(
            build(&w.clone().into(), &fields(), bson::DateTime::now()),
            Err(MongoError::InvalidWrite { .. })
        ));
        let w = ReadModelWrite::Replace {
            target: Target::collection("c"),
            id: Bson::from("a"),
            version: SourceVersion::new(5),
            document: doc! { "_id": "b" },
        };
        assert!(matches!(
            build(&w.clone().into(), &fields(), bson::DateTime::now()),
            Err(MongoError::InvalidWrite { .. })
        ));
    }

    #[test]
    fn positions_beyond_i64_are_typed_errors() {
        let w: ReadModelWrite<Bson, Document> = ReadModelWrite::Delete {
            target: Target::collection("c"),
            id: Bson::from("a"),
            version: SourceVersion::new(u64::MAX),
        };
        let err = build(&w.clone().into(), &fields(), bson::DateTime::now()).unwrap_err();
        assert!(matches!(err, MongoError::VersionOutOfRange { .. }), "{err}");
        assert_eq!(err.id(), Some("a"));
    }
}
