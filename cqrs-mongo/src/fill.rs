//! Fill writes: add what is missing, change nothing that is there.
//!
//! A fill ([`GuardedWrite::fill`](crate::GuardedWrite::fill)) is sent as an upsert whose
//! filter is `{_id, _deleted: {$ne: true}}` and whose update is a pipeline merging the
//! stored document *over* the filled one:
//!
//! ```text
//! [{ $replaceWith: { $mergeObjects: [ {$literal: <filled>}, "$$ROOT",
//!                                     { _scopes: <filled _scopes merged under the stored ones> },
//!                                     { _aggregates: <the same> } ] } }]
//! ```
//!
//! * no document: the upsert inserts the filled one (with its low version);
//! * a document: every field it has wins (it is at least as new as the fill), the fields
//!   it lacks (a partial patch created it, or an older projection wrote it) are added; its
//!   version stays;
//! * a tombstone: the filter does not match, the upsert collides on `_id` and the write is
//!   stale, like any guarded write that lost;
//! * a hidden document holding children whose parent never came (it has no version, see
//!   [`children`](crate::children)): filled like a live one, and made visible (the fill is
//!   its parent's first write).
//!
//! `$literal` keeps a value such as `"$price"` a string rather than a field path.

use bson::{Bson, Document, doc};
use cqrs_core::{SourceVersion, Target};
use futures::TryStreamExt;

use crate::{
    bulk::BulkWriter,
    error::{MongoError, Result, display_id},
    guard::{GuardedOp, OpBody},
    model::{AGGREGATES_FIELD, DELETED_AT_FIELD, DELETED_FIELD, SCOPES_FIELD, VersionFields},
};

impl BulkWriter {
    /// The stored versions of documents `ids` of `target`'s live version, for those that
    /// exist and are not tombstones.
    ///
    /// A fill's true position is the last change its document received before the
    /// snapshot read it: in the live version, all of them have been applied, so a writer
    /// gives a fill the live document's version (see the sync-service's rebuilds). Then a
    /// rebuilt version's documents carry the same versions as the live ones, and nothing
    /// goes back in version when readers switch.
    ///
    /// ```no_run
    /// # async fn demo(mongo: cqrs_mongo::MongoClient) -> cqrs_mongo::Result<()> {
    /// use cqrs_core::Target;
    /// let found = mongo.bulk_writer().live_versions(&Target::collection("orders"), &["o-1".into()]).await?;
    /// # Ok(()) }
    /// ```
    pub async fn live_versions(
        &self,
        target: &Target,
        ids: &[Bson],
    ) -> Result<Vec<(Bson, SourceVersion)>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let client = self.client();
        let layout = client
            .layout(target.database.as_deref(), &target.collection)
            .await?;
        let fields = self.version_fields();
        let coll = client
            .database(Some(&layout.database))
            .collection::<Document>(&layout.live);
        let mut projection = doc! { "_id": 1, DELETED_FIELD: 1 };
        projection.insert(fields.position.clone(), 1);
        projection.insert(fields.index.clone(), 1);
        let found: Vec<Document> = coll
            .find(doc! { "_id": { "$in": ids.to_vec() } })
            .projection(projection)
            .await
            .map_err(|e| MongoError::mongo("find", layout.live.clone(), None, e))?
            .try_collect()
            .await
            .map_err(|e| MongoError::mongo("find", layout.live.clone(), None, e))?;
        let mut out = Vec::with_capacity(found.len());
        for d in found {
            if d.get_bool(DELETED_FIELD).unwrap_or(false) {
                continue;
            }
            let Some(id) = d.get("_id").cloned() else {
                continue;
            };
            out.push((id, fields.read(&d, &layout.live)?));
        }
        Ok(out)
    }
}

/// Turns a guarded operation into its fill form (`fields`: the model's version fields).
pub(crate) fn into_fill(op: GuardedOp, fields: &VersionFields) -> Result<GuardedOp> {
    let document = match &op.body {
        OpBody::Replace(d) | OpBody::Fill(d) => d.clone(),
        OpBody::Update(update) => filled_from_update(update, &op)?,
    };
    Ok(GuardedOp {
        // Live documents, and hidden ones no parent write ever reached (children only).
        filter: doc! { "_id": op.id.clone(), "$or": [
            { DELETED_FIELD: { "$ne": true } },
            { fields.position.as_str(): { "$exists": false } },
        ] },
        body: OpBody::Fill(document),
        ..op
    })
}

/// The update pipeline of a fill of `filled`.
pub(crate) fn pipeline(filled: &Document) -> Vec<Document> {
    let mut layers = vec![
        Bson::Document(doc! { "$literal": filled.clone() }),
        Bson::String("$$ROOT".into()),
    ];
    // Per-source and per-aggregate versions are maps: one level deeper, the stored entries
    // win and the missing ones are added.
    for map in [SCOPES_FIELD, AGGREGATES_FIELD] {
        if let Ok(entries) = filled.get_document(map) {
            layers.push(Bson::Document(doc! { map: { "$mergeObjects": [
                { "$literal": entries.clone() },
                { "$ifNull": [format!("$$ROOT.{map}"), {}] },
            ] } }));
        }
    }
    vec![
        doc! { "$replaceWith": { "$mergeObjects": layers } },
        // Only live documents and hidden documents of children match a fill: the first have
        // no tombstone flag, the second lose it (see `into_fill`).
        doc! { "$unset": [DELETED_FIELD, DELETED_AT_FIELD] },
    ]
}

/// The document a patch fills: its `$set` paths expanded (`a.b` becomes `{a: {b}}`), the
/// document-level version of a scoped patch's `$max` added. `$unset` is ignored: a field
/// the fill does not carry is not added.
fn filled_from_update(update: &Document, op: &GuardedOp) -> Result<Document> {
    let mut out = doc! { "_id": op.id.clone() };
    let set = update
        .get_document("$set")
        .map_err(|_| refused(op, "a patch without $set"))?;
    for (path, value) in set {
        insert_path(&mut out, path, value.clone()).map_err(|reason| refused(op, &reason))?;
    }
    if let Ok(max) = update.get_document("$max") {
        for (path, value) in max {
            insert_path(&mut out, path, value.clone()).map_err(|reason| refused(op, &reason))?;
        }
    }
    Ok(out)
}

/// Inserts `value` at dotted `path` of `doc`, creating the documents on the way.
fn insert_path(doc: &mut Document, path: &str, value: Bson) -> std::result::Result<(), String> {
    let mut parts = path.split('.').peekable();
    let mut current = doc;
    while let Some(part) = parts.next() {
        if parts.peek().is_none() {
            if current.contains_key(part) {
                return Err(format!("`{path}` is set twice"));
            }
            current.insert(part, value);
            return Ok(());
        }
        if !current.contains_key(part) {
            current.insert(part, Document::new());
        }
        current = match current.get_mut(part) {
            Some(Bson::Document(d)) => d,
            _ => return Err(format!("`{path}` crosses a value that is not a document")),
        };
    }
    Err("an empty path".into())
}

fn refused(op: &GuardedOp, reason: &str) -> MongoError {
    MongoError::InvalidWrite {
        collection: op.collection.clone(),
        id: Some(display_id(&op.id)),
        reason: format!("cannot fill: {reason}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields() -> VersionFields {
        VersionFields::new("_version")
    }

    fn op(body: OpBody) -> GuardedOp {
        GuardedOp {
            database: None,
            collection: "c".into(),
            id: Bson::from("a"),
            filter: doc! { "_id": "a" },
            body,
        }
    }

    #[test]
    fn a_replacement_fills_as_is_and_spares_tombstones() {
        let d = doc! { "_id": "a", "x": "$price", "_version": 0_i64 };
        let f = into_fill(op(OpBody::Replace(d.clone())), &fields()).unwrap();
        assert_eq!(
            f.filter,
            doc! { "_id": "a", "$or": [
                { "_deleted": { "$ne": true } },
                { "_version": { "$exists": false } },
            ] }
        );
        assert_eq!(f.body, OpBody::Fill(d.clone()));
        assert_eq!(
            pipeline(&d),
            vec![
                doc! { "$replaceWith": { "$mergeObjects": [
                    { "$literal": d }, "$$ROOT",
                ] } },
                doc! { "$unset": ["_deleted", "_deleted_at"] },
            ]
        );
    }

    #[test]
    fn a_scoped_patch_fills_nested_and_merges_its_scope_under_the_stored_ones() {
        let update = doc! {
            "$set": { "x": 1, "_scopes.lines._version": 0_i64, "_scopes.lines._version_index": 0_i64 },
            "$unset": { "y": "" },
            "$max": { "_version": 0_i64 },
        };
        let f = into_fill(op(OpBody::Update(update)), &fields()).unwrap();
        let filled = doc! {
            "_id": "a", "x": 1,
            "_scopes": { "lines": { "_version": 0_i64, "_version_index": 0_i64 } },
            "_version": 0_i64,
        };
        assert_eq!(f.body, OpBody::Fill(filled.clone()));
        let stages = pipeline(&filled);
        let layers = stages[0]
            .get_document("$replaceWith")
            .unwrap()
            .get_array("$mergeObjects")
            .unwrap();
        assert_eq!(layers.len(), 3);
        assert_eq!(
            layers[2],
            Bson::Document(doc! { "_scopes": { "$mergeObjects": [
                { "$literal": { "lines": { "_version": 0_i64, "_version_index": 0_i64 } } },
                { "$ifNull": ["$$ROOT._scopes", {}] },
            ] } })
        );
    }

    #[test]
    fn conflicting_paths_are_refused() {
        let update = doc! { "$set": { "a": 1, "a.b": 2 } };
        assert!(matches!(
            into_fill(op(OpBody::Update(update)), &fields()),
            Err(MongoError::InvalidWrite { .. })
        ));
    }
}
