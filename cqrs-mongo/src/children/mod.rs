//! Child rows embedded in their parent's document: an order's lines inside the order.
//!
//! A parent document keeps each collection of children as a **map keyed by the child's
//! key**, next to a bookkeeping map of one version per child:
//!
//! ```text
//! { _id: 7, customer: "ada", _version: 120,              <- the parent row
//!   lines: { "1": { line_no: 1, sku: "w", qty: 2 },      <- live children, by key
//!            "3": { line_no: 3, sku: "g", qty: 1 } },
//!   _children: { lines: { "1": { _version: 130, _version_index: 0 },
//!                         "2": { _version: 140, _version_index: 0, _deleted: true },
//!                         "3": { _version: 110, _version_index: 0 } } } }
//! ```
//!
//! A child write ([`ReadModelWrite::Child`](cqrs_core::ReadModelWrite::Child)) is **one
//! guarded update of the parent document**, guarded by that child's own version
//! (`_children.<field>.<key>._version`), so:
//!
//! * changes of different children, and of the parent, never make each other stale,
//!   whatever order they arrive in (they come from different tables, often different
//!   partitions);
//! * a deleted child leaves the map, and its version stays in `_children`: an older change
//!   of that child (a late update, a replay) is stale and cannot bring it back;
//! * a child that arrives **before its parent** creates the document **hidden** (a
//!   tombstone without a parent version: readers of the view do not see it) holding the
//!   child; the parent's first write makes it visible with the child in it;
//! * **child writes never decide whether the parent is visible**: only the parent's own
//!   writes do. A parent delete hides the document and drops the parent's fields but keeps
//!   the children, exactly as a `LEFT JOIN` from the parent table would: the children
//!   are rows of their own table with their own lifecycle (with a foreign key
//!   `ON DELETE CASCADE`, their deletes follow and remove them; without one they outlive
//!   the parent, and a re-created parent shows them again, as the join does). A change of a
//!   child can never make a deleted parent visible again.
//!
//! Parent writes keep the children: a full replacement or a tombstone of a document that
//! holds children (`_children` exists) keeps `_children` and every collection of children
//! it names. Documents without children are written exactly as before (one `replace`); a
//! replacement or tombstone that meets a document with children is sent a second time as
//! an update pipeline that keeps them (so it costs a second round trip, also when
//! [`BulkOptions::confirm_stale`](crate::BulkOptions) is off). Patches and scoped patches
//! never touch fields they do not name.
//!
//! Reading: the map is what raw readers see (`lines.3.qty`); [`array_view`] is an
//! aggregation stage turning it into an array, and [`deserialize_vec`] reads it into a
//! `Vec` in a typed model. Keys come from the child's key columns through [`child_key`].
//!
//! A truncate of the child table removes the children older than it from every document
//! ([`MongoClient::sweep_children`](crate::MongoClient::sweep_children)); a truncate of
//! the parent table hides the parents older than it and keeps their children
//! ([`MongoClient::sweep_older`](crate::MongoClient::sweep_older)).

mod live;
mod read;
mod sweep;
mod write;

pub use read::{array_view, deserialize_vec};
pub(crate) use write::{build_child, keep_form, without_children};

use bson::Bson;

use crate::error::{MongoError, display_id};

/// The bookkeeping map of per-child versions: `_children.<field>.<key>._version`.
pub const CHILDREN_FIELD: &str = "_children";

/// The key of a child within its parent from the values of its key columns (in order):
/// their text joined with `,`, with `%`, `.`, `$` and `,` percent-encoded (a MongoDB field
/// name holds no `.` and starts with no `$`). Strings are taken as they are, integers in
/// decimal, UUIDs in their hyphenated form, other values in their extended-JSON text; an
/// empty string is `%`, a null `%N`.
///
/// ```
/// use cqrs_mongo::{bson::Bson, children::child_key};
///
/// assert_eq!(child_key(&[Bson::Int32(3)]), "3");
/// assert_eq!(child_key(&[Bson::from("a.b"), Bson::Int64(-1)]), "a%2Eb,-1");
/// assert_eq!(child_key(&[Bson::from("$x,y%")]), "%24x%2Cy%25");
/// ```
pub fn child_key(values: &[Bson]) -> String {
    let mut key = String::new();
    for (i, value) in values.iter().enumerate() {
        if i > 0 {
            key.push(',');
        }
        let text = match value {
            Bson::String(s) if s.is_empty() => {
                key.push('%');
                continue;
            }
            Bson::Null | Bson::Undefined => {
                key.push_str("%N");
                continue;
            }
            Bson::String(s) => s.clone(),
            Bson::Int32(v) => v.to_string(),
            Bson::Int64(v) => v.to_string(),
            Bson::Boolean(v) => v.to_string(),
            Bson::Binary(b) if b.subtype == bson::spec::BinarySubtype::Uuid => match b.to_uuid() {
                Ok(u) => u.to_string(),
                Err(_) => value.clone().into_relaxed_extjson().to_string(),
            },
            Bson::Decimal128(d) => d.to_string(),
            other => other.clone().into_relaxed_extjson().to_string(),
        };
        for c in text.chars() {
            match c {
                '%' => key.push_str("%25"),
                '.' => key.push_str("%2E"),
                '$' => key.push_str("%24"),
                ',' => key.push_str("%2C"),
                '\0' => key.push_str("%00"),
                c => key.push(c),
            }
        }
    }
    key
}

/// Checks the name of a collection of children: 1-64 ASCII letters, digits and `_`, not
/// starting with `_` (names starting with `_` are the crate's own fields) or a digit.
///
/// ```
/// use cqrs_mongo::children::validate_field;
/// assert!(validate_field("lines").is_ok());
/// assert!(validate_field("_lines").is_err());
/// assert!(validate_field("a.b").is_err());
/// ```
pub fn validate_field(field: &str) -> Result<(), String> {
    let ok = !field.is_empty()
        && field.len() <= 64
        && !field.starts_with(|c: char| c == '_' || c.is_ascii_digit())
        && field
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "children field {field:?} must be 1-64 letters, digits or '_', not starting with '_' or a digit"
        ))
    }
}

/// Checks a child key: not empty, at most 256 bytes, no `.`, no leading `$`, no NUL
/// ([`child_key`] always makes valid ones).
///
/// ```
/// use cqrs_mongo::children::validate_key;
/// assert!(validate_key("3").is_ok());
/// assert!(validate_key("a.b").is_err());
/// assert!(validate_key("").is_err());
/// ```
pub fn validate_key(key: &str) -> Result<(), String> {
    let ok =
        !key.is_empty() && key.len() <= 256 && !key.starts_with('$') && !key.contains(['.', '\0']);
    if ok {
        Ok(())
    } else {
        Err(format!(
            "child key {key:?} must be 1-256 bytes without '.', NUL or a leading '$' (see child_key)"
        ))
    }
}

/// An invalid child write, naming the parent document.
pub(crate) fn invalid(collection: &str, id: &Bson, reason: String) -> MongoError {
    MongoError::InvalidWrite {
        collection: collection.to_string(),
        id: Some(display_id(id)),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_valid_field_names_and_tell_values_apart() {
        let cases = [
            vec![Bson::from("")],
            vec![Bson::Null],
            vec![Bson::from("a"), Bson::from("b")],
            vec![Bson::from("a,b")],
            vec![Bson::from("a%2Cb")],
            vec![Bson::from(".$")],
            vec![Bson::Boolean(true)],
            vec![Bson::Double(1.5)],
        ];
        let keys: Vec<String> = cases.iter().map(|c| child_key(c)).collect();
        for k in &keys {
            assert!(validate_key(k).is_ok(), "{k}");
        }
        let distinct: std::collections::HashSet<&String> = keys.iter().collect();
        assert_eq!(distinct.len(), keys.len(), "{keys:?}");
        let uuid = uuid::Uuid::nil();
        assert_eq!(
            child_key(&[Bson::Binary(bson::Binary {
                subtype: bson::spec::BinarySubtype::Uuid,
                bytes: uuid.as_bytes().to_vec(),
            })]),
            "00000000-0000-0000-0000-000000000000"
        );
    }
}
