//! Building child writes, and the form of parent writes that keeps the children.

use bson::{Bson, Document, doc};
use cqrs_core::{ChildChange, ReadModelWrite};

use super::{CHILDREN_FIELD, invalid, validate_field, validate_key};
use crate::error::Result;
use crate::guard::{GuardedOp, OpBody, guard_filter};
use crate::model::{
    AGGREGATES_FIELD, DELETED_AT_FIELD, DELETED_FIELD, GuardedWrite, VersionFields, origin_key,
};

/// The condition a full replacement or tombstone carries so that its plain form only
/// applies to documents without children (see [`keep_form`]).
pub(crate) fn without_children() -> (String, Bson) {
    (
        CHILDREN_FIELD.to_owned(),
        Bson::Document(doc! { "$exists": false }),
    )
}

/// For a full replacement or tombstone sent in its plain form (a `replace` that only
/// matches a document without children), the form to send when it met a duplicate key:
/// the guard filter alone and an update pipeline that keeps the children. `None` for any
/// other operation.
///
/// A duplicate key means the plain form found no document it may replace: either the
/// stored version is as new or newer (then the keeping form is stale too), or the
/// document holds children (then the keeping form applies if the version allows).
pub(crate) fn keep_form(filter: &Document, body: &OpBody) -> Option<(Document, Vec<Document>)> {
    let OpBody::Replace(literal) = body else {
        return None;
    };
    let (name, marker) = without_children();
    if filter.get(&name) != Some(&marker) {
        return None;
    }
    let mut plain = filter.clone();
    plain.remove(&name);
    Some((plain, keep_pipeline(literal)))
}

/// `$replaceWith` the new document, with the stored `_children` and every collection of
/// children it names laid over it (they are not the parent's to change).
pub(crate) fn keep_pipeline(literal: &Document) -> Vec<Document> {
    vec![doc! { "$replaceWith": { "$mergeObjects": [
        { "$literal": literal.clone() },
        kept_children(),
    ] } }]
}

/// An expression: the stored `_children` and the fields it names (`{}` without children).
/// Written with `$objectToArray` / `$filter` rather than a dynamic `$getField`, which
/// MongoDB only accepts from 7.2 on.
pub(crate) fn kept_children() -> Document {
    let children = format!("${CHILDREN_FIELD}");
    doc! { "$cond": [
        { "$eq": [{ "$type": &children }, "object"] },
        { "$arrayToObject": { "$filter": {
            "input": { "$objectToArray": "$$ROOT" },
            "as": "e",
            "cond": { "$in": ["$$e.k", { "$concatArrays": [
                [CHILDREN_FIELD],
                { "$map": { "input": { "$objectToArray": &children }, "in": "$$this.k" } },
            ] }] },
        } } },
        {},
    ] }
}

/// Builds the guarded update of a [`ReadModelWrite::Child`].
pub(crate) fn build_child(
    guarded: &GuardedWrite,
    fields: &VersionFields,
    now: bson::DateTime,
) -> Result<GuardedOp> {
    let ReadModelWrite::Child {
        target,
        id,
        field,
        key,
        version,
        change,
    } = &guarded.write
    else {
        return Err(invalid(
            &guarded.write.target().collection,
            guarded.write.id(),
            "not a child write".into(),
        ));
    };
    let collection = target.collection.as_str();
    validate_field(field).map_err(|r| invalid(collection, id, r))?;
    validate_key(key).map_err(|r| invalid(collection, id, r))?;
    let (position, index) = fields.encode(*version, collection, Some(id))?;
    let element = format!("{field}.{key}");
    let entry = format!("{CHILDREN_FIELD}.{field}.{key}");
    // The child's own version, beside the document: `_children.<field>.<key>._version`.
    let own = VersionFields::new(&format!("{entry}.{}", fields.position));
    let mut bookkeeping = doc! {
        fields.position.as_str(): position,
        fields.index.as_str(): index,
    };
    let mut set = Document::new();
    let mut unset = Document::new();
    match change {
        ChildChange::Replace(document) => {
            set.insert(element, document.clone());
        }
        ChildChange::Patch(document) => {
            for (name, value) in document {
                if name.is_empty() || name.starts_with('$') || name.contains('.') {
                    return Err(invalid(
                        collection,
                        id,
                        format!("child field {name:?} cannot be patched"),
                    ));
                }
                set.insert(format!("{element}.{name}"), value.clone());
            }
        }
        ChildChange::Delete => {
            unset.insert(element, "");
            bookkeeping.insert(DELETED_FIELD, true);
        }
    }
    set.insert(entry.clone(), bookkeeping);
    // A fill (a row of an incremental snapshot) only adds a child never seen: whatever
    // its version, a child with an entry (live or deleted) has had a newer change.
    let filter = if guarded.fill && !change.is_delete() {
        doc! { "_id": id.clone(), entry: { "$exists": false } }
    } else {
        guard_filter(&own, id, position, index)
    };
    let mut update = doc! {
        "$set": set,
        // A child arriving before its parent creates the document hidden: only the
        // parent's writes make it visible (the TTL purges it if no parent ever comes).
        "$setOnInsert": { DELETED_FIELD: true, DELETED_AT_FIELD: now },
    };
    if !unset.is_empty() {
        update.insert("$unset", unset);
    }
    if let Some(origin) = &guarded.origin {
        // Children of one aggregate change in any order: never lower what a newer one set.
        let version = i64::try_from(origin.version).unwrap_or(i64::MAX);
        update.insert(
            "$max",
            doc! { format!("{AGGREGATES_FIELD}.{}", origin_key(&origin.aggregate_type, &origin.aggregate_id)): version },
        );
    }
    Ok(GuardedOp {
        database: target.database.clone(),
        collection: target.collection.clone(),
        id: id.clone(),
        filter,
        body: OpBody::Update(update),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use cqrs_core::{ConsistencyToken, SourceVersion, Target};

    fn child(change: ChildChange<Document>) -> GuardedWrite {
        GuardedWrite::new(ReadModelWrite::Child {
            target: Target::collection("orders"),
            id: Bson::Int32(7),
            field: "lines".into(),
            key: "3".into(),
            version: SourceVersion::with_index(100, 2),
            change,
        })
    }

    fn build(w: &GuardedWrite) -> Result<GuardedOp> {
        build_child(
            w,
            &VersionFields::new("_version"),
            bson::DateTime::from_millis(0),
        )
    }

    #[test]
    fn an_upsert_sets_the_element_and_its_version_guarded_by_that_version() {
        let op = build(&child(ChildChange::Replace(doc! { "qty": 2 }))).unwrap();
        assert_eq!(
            op.filter,
            doc! { "_id": 7, "$nor": [
                { "_children.lines.3._version": { "$gt": 100_i64 } },
                { "_children.lines.3._version": 100_i64, "_children.lines.3._version_index": { "$gte": 2_i64 } },
            ] }
        );
        assert_eq!(
            op.body,
            OpBody::Update(doc! {
                "$set": {
                    "lines.3": { "qty": 2 },
                    "_children.lines.3": { "_version": 100_i64, "_version_index": 2_i64 },
                },
                "$setOnInsert": { "_deleted": true, "_deleted_at": bson::DateTime::from_millis(0) },
            })
        );
    }

    #[test]
    fn a_delete_unsets_the_element_and_leaves_its_version() {
        let op = build(&child(ChildChange::Delete).fill()).unwrap();
        let OpBody::Update(update) = op.body else {
            panic!("an update")
        };
        assert_eq!(
            update.get_document("$unset").unwrap(),
            &doc! { "lines.3": "" }
        );
        assert_eq!(
            update
                .get_document("$set")
                .unwrap()
                .get_document("_children.lines.3")
                .unwrap(),
            &doc! { "_version": 100_i64, "_version_index": 2_i64, "_deleted": true }
        );
        // A delete never fills: it keeps its guard.
        assert!(op.filter.contains_key("$nor"));
    }

    #[test]
    fn a_fill_only_adds_a_child_never_seen_and_patches_set_paths() {
        let op = build(&child(ChildChange::Patch(doc! { "qty": 3 })).fill()).unwrap();
        assert_eq!(
            op.filter,
            doc! { "_id": 7, "_children.lines.3": { "$exists": false } }
        );
        let OpBody::Update(update) = op.body else {
            panic!("an update")
        };
        assert_eq!(
            update
                .get_document("$set")
                .unwrap()
                .get_i32("lines.3.qty")
                .unwrap(),
            3
        );
        assert!(matches!(
            build(&child(ChildChange::Patch(doc! { "a.b": 1 }))),
            Err(crate::MongoError::InvalidWrite { .. })
        ));
    }

    #[test]
    fn origins_only_move_forward_and_bad_names_are_refused() {
        let w = child(ChildChange::Replace(doc! {}))
            .with_origin(ConsistencyToken::new("Order", "o.1", 4));
        let OpBody::Update(update) = build(&w).unwrap().body else {
            panic!("an update")
        };
        assert_eq!(
            update.get_document("$max").unwrap(),
            &doc! { "_aggregates.Order/o%2E1": 4_i64 }
        );
        for (field, key) in [
            ("_lines", "3"),
            ("lines", "a.b"),
            ("lines", "$x"),
            ("", "1"),
        ] {
            let w = GuardedWrite::new(ReadModelWrite::Child {
                target: Target::collection("orders"),
                id: Bson::Int32(7),
                field: field.into(),
                key: key.into(),
                version: SourceVersion::new(1),
                change: ChildChange::Delete,
            });
            assert!(
                matches!(build(&w), Err(crate::MongoError::InvalidWrite { .. })),
                "{field} {key}"
            );
        }
    }

    #[test]
    fn only_plain_replacements_have_a_keeping_form() {
        let (name, marker) = without_children();
        let filter = doc! { "_id": 1, "_version": { "$not": { "$gte": 5_i64 } }, name: marker };
        let body = OpBody::Replace(doc! { "_id": 1, "a": 1 });
        let (plain, pipeline) = keep_form(&filter, &body).expect("a keeping form");
        assert_eq!(
            plain,
            doc! { "_id": 1, "_version": { "$not": { "$gte": 5_i64 } } }
        );
        assert_eq!(pipeline, keep_pipeline(&doc! { "_id": 1, "a": 1 }));
        assert!(
            keep_form(&plain, &body).is_none(),
            "a fill's filter has no marker"
        );
        assert!(keep_form(&filter, &OpBody::Update(doc! {})).is_none());
    }
}
