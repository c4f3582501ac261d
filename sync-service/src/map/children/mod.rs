//! The declarative child projection: the rows of a child table embedded in their parent's
//! document (`[[projection]]` with `embed = { ... }`).
//!
//! Each row becomes one child write (`ReadModelWrite::Child`, see `cqrs_mongo::children`)
//! into the document of its parent, guarded by the row's own LSN: creates, snapshot reads
//! and updates write the child, deletes remove it (its version stays). Where a row sits is
//! its **place**: the parent's `_id` (from the `parent_key` columns) and the child's key
//! (from the `key` columns). An update that changes the place **moves** the child: a delete
//! at the old place and a write at the new one, at the same version, so that the two
//! documents converge in any order.
//!
//! Columns are read from the message key (the primary key) when they are part of it, else
//! from the row image. A place made only of primary-key columns never changes in an update
//! (Debezium sends a key change as a delete and a create), so any `REPLICA IDENTITY` works.
//! Otherwise updates and deletes need the old row: the table must have
//! `REPLICA IDENTITY FULL`. An update without a before image is then refused (the message
//! is dead-lettered) rather than leave a stale copy of a moved child behind; a delete's
//! before image under `REPLICA IDENTITY DEFAULT` carries defaults instead of the old
//! values, which nothing can detect, hence the rule.

use std::collections::BTreeMap;

use bson::{Bson, Document};
use cqrs_core::{ChildChange, Projection, ReadModelWrite, Target};
use cqrs_mongo::children::child_key;

use super::{MapError, MongoWrite};

use crate::config::TableMapping;
use crate::envelope::{Change, Op};

/// Separates a collection from the name of its children in the scope of a truncate floor
/// (`orders$lines`): `$` never appears in a collection name, so no real collection
/// collides with it.
pub const CHILDREN_SCOPE_SEPARATOR: char = '$';

/// The target a truncate floor of children `field` of `target` is kept under.
///
/// ```
/// use cqrs_core::Target;
/// use sync_service::map::{children_scope, split_children_scope};
///
/// let scope = children_scope(&Target::in_database("read", "orders"), "lines");
/// assert_eq!(scope.collection, "orders$lines");
/// assert_eq!(
///     split_children_scope(&scope),
///     Some((Target::in_database("read", "orders"), "lines".to_owned()))
/// );
/// assert_eq!(split_children_scope(&Target::collection("orders")), None);
/// ```
pub fn children_scope(target: &Target, field: &str) -> Target {
    Target {
        database: target.database.clone(),
        collection: format!("{}{CHILDREN_SCOPE_SEPARATOR}{field}", target.collection),
    }
}

/// The collection and children field of a children scope made by [`children_scope`].
pub fn split_children_scope(scope: &Target) -> Option<(Target, String)> {
    let (collection, field) = scope.collection.split_once(CHILDREN_SCOPE_SEPARATOR)?;
    Some((
        Target {
            database: scope.database.clone(),
            collection: collection.to_owned(),
        },
        field.to_owned(),
    ))
}

/// The floor scope of a write: its collection, or for a child write the collection's
/// children of that field (a truncate of the child table must not touch the parents).
///
/// ```
/// use cqrs_core::{ChildChange, ReadModelWrite, SourceVersion, Target};
/// use sync_service::map::floor_scope;
///
/// let w: cqrs_mongo::MongoWrite = ReadModelWrite::Child {
///     target: Target::collection("orders"), id: 7.into(), field: "lines".into(),
///     key: "3".into(), version: SourceVersion::new(1), change: ChildChange::Delete,
/// };
/// assert_eq!(floor_scope(&w).collection, "orders$lines");
/// ```
pub fn floor_scope(write: &MongoWrite) -> Target {
    match write {
        ReadModelWrite::Child { target, field, .. } => children_scope(target, field),
        other => other.target().clone(),
    }
}

/// The id a write's own version is kept under: the document's id, or for a child write
/// `{_id: <parent id>, key: <child key>}` (its version is the child's, not the parent's).
///
/// ```
/// use cqrs_core::{ChildChange, ReadModelWrite, SourceVersion, Target};
/// use sync_service::map::{split_versioned_id, versioned_id};
///
/// let w: cqrs_mongo::MongoWrite = ReadModelWrite::Child {
///     target: Target::collection("orders"), id: 7.into(), field: "lines".into(),
///     key: "3".into(), version: SourceVersion::new(1), change: ChildChange::Delete,
/// };
/// let id = versioned_id(&w);
/// assert_eq!(split_versioned_id(&id), Some((7.into(), "3".to_owned())));
/// ```
pub fn versioned_id(write: &MongoWrite) -> Bson {
    match write {
        ReadModelWrite::Child { id, key, .. } => versioned_child_id(id.clone(), key.clone()),
        other => other.id().clone(),
    }
}

/// The [`versioned_id`] of child `key` of parent `id`.
///
/// ```
/// use sync_service::map::{split_versioned_id, versioned_child_id};
/// let id = versioned_child_id(7.into(), "3".into());
/// assert_eq!(split_versioned_id(&id), Some((7.into(), "3".to_owned())));
/// ```
pub fn versioned_child_id(id: Bson, key: String) -> Bson {
    Bson::Document(bson::doc! { "_id": id, "key": key })
}

/// The parent id and child key of an id made by [`versioned_id`] for a child write.
pub fn split_versioned_id(id: &Bson) -> Option<(Bson, String)> {
    let d = id.as_document()?;
    if d.len() != 2 {
        return None;
    }
    Some((d.get("_id")?.clone(), d.get_str("key").ok()?.to_owned()))
}

/// One child table into its parents' documents.
///
/// ```
/// use sync_service::config::TableMapping;
/// use sync_service::map::ChildTableProjection;
///
/// let mapping: TableMapping = toml::from_str(r#"
///     table = "shop.order_lines"
///     collection = "orders"
///     embed = { field = "lines", parent_key = ["order_id"] }
/// "#).unwrap();
/// let p = ChildTableProjection::new(&mapping, "read").expect("an embed mapping");
/// assert_eq!((p.table(), p.field()), ("shop.order_lines", "lines"));
/// ```
#[derive(Debug, Clone)]
pub struct ChildTableProjection {
    name: String,
    table: String,
    target: Target,
    field: String,
    parent_key: Vec<String>,
    parent_id_fields: Vec<String>,
    key: Vec<String>,
    include: Vec<String>,
    exclude: Vec<String>,
    rename: BTreeMap<String, String>,
}

/// Where a child sits: its parent's `_id` and its key within the parent.
#[derive(Debug, Clone, PartialEq)]
struct Place {
    parent: Bson,
    key: String,
}

impl ChildTableProjection {
    /// The projection of a validated mapping with an `embed`; `None` without one.
    pub fn new(mapping: &TableMapping, default_database: &str) -> Option<Self> {
        let embed = mapping.embed.as_ref()?;
        Some(ChildTableProjection {
            name: mapping.name().to_owned(),
            table: mapping.table.clone(),
            target: Target::in_database(
                mapping
                    .database
                    .clone()
                    .unwrap_or_else(|| default_database.to_owned()),
                mapping.collection.clone(),
            ),
            field: embed.field.clone(),
            parent_key: embed.parent_key.clone(),
            parent_id_fields: if embed.parent_id_fields.is_empty() {
                embed.parent_key.clone()
            } else {
                embed.parent_id_fields.clone()
            },
            key: embed.key.clone(),
            include: mapping.include.clone(),
            exclude: mapping.exclude.clone(),
            rename: mapping.rename.clone(),
        })
    }

    /// Source table, `schema.table`.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// The parents' collection.
    pub fn target(&self) -> &Target {
        &self.target
    }

    /// The children field inside the parents.
    pub fn field(&self) -> &str {
        &self.field
    }

    /// The target truncates of the child table are floored under.
    pub fn truncate_scope(&self) -> Target {
        children_scope(&self.target, &self.field)
    }

    /// The key columns of a change: configured, or the primary key's minus the parent's.
    fn key_columns<'a>(&'a self, change: &'a Change) -> Vec<&'a str> {
        if !self.key.is_empty() {
            return self.key.iter().map(String::as_str).collect();
        }
        change
            .key_fields()
            .into_iter()
            .filter(|k| !self.parent_key.iter().any(|p| p == k))
            .collect()
    }

    /// True when the place is made of primary-key columns only (it cannot change in an
    /// update, and a delete carries it whatever the replica identity).
    fn place_in_key(&self, change: &Change) -> bool {
        let Some(key) = &change.key else {
            return false;
        };
        self.parent_key
            .iter()
            .map(String::as_str)
            .chain(self.key_columns(change))
            .all(|c| key.contains_key(c))
    }

    /// A column's value: from the message key when it is part of it, else from `row`.
    fn column<'a>(&self, change: &'a Change, row: &'a Document, column: &str) -> Option<&'a Bson> {
        change
            .key
            .as_ref()
            .and_then(|k| k.get(column))
            .or_else(|| row.get(column))
    }

    /// The place of `row`; `None` when its parent columns are NULL (no parent).
    fn place(&self, change: &Change, row: &Document) -> Result<Option<Place>, MapError> {
        let missing = |field: &str| MapError::MissingIdField {
            projection: self.name.clone(),
            field: field.to_owned(),
        };
        let mut parent_values = Vec::with_capacity(self.parent_key.len());
        for column in &self.parent_key {
            match self.column(change, row, column) {
                None => return Err(missing(column)),
                Some(Bson::Null) => return Ok(None),
                Some(v) => parent_values.push(v.clone()),
            }
        }
        let parent = match parent_values.as_slice() {
            [single] => single.clone(),
            _ => Bson::Document(
                self.parent_id_fields
                    .iter()
                    .cloned()
                    .zip(parent_values)
                    .collect(),
            ),
        };
        let columns = self.key_columns(change);
        if columns.is_empty() {
            return Err(MapError::NoChildKey {
                projection: self.name.clone(),
            });
        }
        let mut values = Vec::with_capacity(columns.len());
        for column in columns {
            values.push(
                self.column(change, row, column)
                    .cloned()
                    .ok_or_else(|| missing(column))?,
            );
        }
        Ok(Some(Place {
            parent,
            key: child_key(&values),
        }))
    }

    fn element(&self, row: &Document) -> Document {
        row.iter()
            .filter(|(k, _)| self.include.is_empty() || self.include.contains(k))
            .filter(|(k, _)| !self.exclude.contains(k))
            .map(|(k, v)| {
                (
                    self.rename.get(k).cloned().unwrap_or_else(|| k.clone()),
                    v.clone(),
                )
            })
            .collect()
    }

    fn write(&self, change: &Change, place: Place, what: ChildChange<Document>) -> MongoWrite {
        ReadModelWrite::Child {
            target: self.target.clone(),
            id: place.parent,
            field: self.field.clone(),
            key: place.key,
            version: change.version,
            change: what,
        }
    }

    fn missing_image(&self, op: Op) -> MapError {
        MapError::MissingImage {
            projection: self.name.clone(),
            op: op.code(),
        }
    }
}

impl Projection for ChildTableProjection {
    type Input = Change;
    type Write = MongoWrite;
    type Error = MapError;

    fn name(&self) -> &str {
        &self.name
    }

    fn project(&self, change: &Change) -> Result<Vec<MongoWrite>, MapError> {
        match change.op {
            Op::Create | Op::Read | Op::Update => {
                let after = change
                    .after
                    .as_ref()
                    .ok_or_else(|| self.missing_image(change.op))?;
                let new = self.place(change, after)?;
                let mut writes = Vec::with_capacity(2);
                if change.op == Op::Update && !self.place_in_key(change) {
                    // The place may have changed: the old row says where the child was.
                    let Some(before) = &change.before else {
                        return Err(MapError::NeedsBeforeImage {
                            projection: self.name.clone(),
                            table: self.table.clone(),
                        });
                    };
                    if let Some(old) = self.place(change, before)?
                        && Some(&old) != new.as_ref()
                    {
                        writes.push(self.write(change, old, ChildChange::Delete));
                    }
                }
                if let Some(place) = new {
                    let element = self.element(after);
                    // Columns Debezium did not send keep their stored values.
                    let what = if change.unavailable.is_empty() {
                        ChildChange::Replace(element)
                    } else {
                        ChildChange::Patch(element)
                    };
                    writes.push(self.write(change, place, what));
                }
                Ok(writes)
            }
            Op::Delete => {
                let before = change
                    .before
                    .as_ref()
                    .or(change.key.as_ref())
                    .ok_or_else(|| self.missing_image(change.op))?;
                Ok(self
                    .place(change, before)?
                    .map(|place| self.write(change, place, ChildChange::Delete))
                    .into_iter()
                    .collect())
            }
            // Truncates are planned by `Projections::plan` (children scope).
            _ => Ok(Vec::new()),
        }
    }
}

table_change_projection!(ChildTableProjection);

#[cfg(test)]
mod tests {
    use bson::doc;
    use cqrs_core::SourceVersion;

    use super::*;
    use crate::envelope::Source;

    fn projection(embed: &str) -> ChildTableProjection {
        let mapping: TableMapping = toml::from_str(&format!(
            r#"
            table = "shop.order_lines"
            collection = "orders"
            exclude = ["note"]
            embed = {embed}
            "#
        ))
        .unwrap();
        ChildTableProjection::new(&mapping, "read").unwrap()
    }

    fn change(op: Op, key: Document, before: Option<Document>, after: Option<Document>) -> Change {
        Change {
            op,
            key: Some(key),
            before,
            after,
            unavailable: Vec::new(),
            source: Source::default(),
            transaction: None,
            ts_ms: None,
            version: SourceVersion::new(42),
            topic: "cqrs.shop.order_lines".into(),
        }
    }

    fn child(parent: i32, key: &str, what: ChildChange<Document>) -> MongoWrite {
        ReadModelWrite::Child {
            target: Target::in_database("read", "orders"),
            id: Bson::Int32(parent),
            field: "lines".into(),
            key: key.into(),
            version: SourceVersion::new(42),
            change: what,
        }
    }

    #[test]
    fn rows_of_a_composite_key_go_to_their_parent_by_the_rest_of_the_key() {
        let p = projection(r#"{ field = "lines", parent_key = ["order_id"] }"#);
        let key = doc! { "order_id": 7, "line_no": 2 };
        let row = doc! { "order_id": 7, "line_no": 2, "qty": 3, "note": "x" };
        let c = change(Op::Create, key.clone(), None, Some(row.clone()));
        assert_eq!(
            Projection::project(&p, &c).unwrap(),
            vec![child(
                7,
                "2",
                ChildChange::Replace(doc! { "order_id": 7, "line_no": 2, "qty": 3 })
            )]
        );
        // An update needs no before image: the place is the primary key.
        let c = change(Op::Update, key.clone(), None, Some(row));
        assert_eq!(Projection::project(&p, &c).unwrap().len(), 1);
        // A delete under REPLICA IDENTITY DEFAULT: the key columns are right.
        let defaults = doc! { "order_id": 7, "line_no": 2, "qty": 0, "note": Bson::Null };
        let c = change(Op::Delete, key, Some(defaults), None);
        assert_eq!(
            Projection::project(&p, &c).unwrap(),
            vec![child(7, "2", ChildChange::Delete)]
        );
    }

    #[test]
    fn an_update_that_changes_the_parent_moves_the_child() {
        let p = projection(r#"{ field = "lines", parent_key = ["order_id"] }"#);
        let key = doc! { "id": 9 };
        let before = doc! { "id": 9, "order_id": 7, "qty": 1 };
        let after = doc! { "id": 9, "order_id": 8, "qty": 1 };
        let c = change(
            Op::Update,
            key.clone(),
            Some(before.clone()),
            Some(after.clone()),
        );
        assert_eq!(
            Projection::project(&p, &c).unwrap(),
            vec![
                child(7, "9", ChildChange::Delete),
                child(8, "9", ChildChange::Replace(after.clone())),
            ]
        );
        // The same parent: no move.
        let c = change(
            Op::Update,
            key.clone(),
            Some(after.clone()),
            Some(after.clone()),
        );
        assert_eq!(Projection::project(&p, &c).unwrap().len(), 1);
        // Without the old row the move cannot be seen: refused, naming the fix.
        let c = change(Op::Update, key.clone(), None, Some(after.clone()));
        let err = Projection::project(&p, &c).unwrap_err();
        assert!(err.to_string().contains("REPLICA IDENTITY FULL"), "{err}");
        // Moved to no parent (NULL): removed from the old one only.
        let orphan = doc! { "id": 9, "order_id": Bson::Null, "qty": 1 };
        let c = change(Op::Update, key, Some(before), Some(orphan));
        assert_eq!(
            Projection::project(&p, &c).unwrap(),
            vec![child(7, "9", ChildChange::Delete)]
        );
    }

    #[test]
    fn composite_parents_partial_rows_and_missing_columns() {
        let p = projection(
            r#"{ field = "lines", parent_key = ["tenant", "order_id"], parent_id_fields = ["tenant", "id"], key = ["sku"] }"#,
        );
        let key = doc! { "tenant": "t", "order_id": 7, "sku": "a.b" };
        let mut c = change(Op::Update, key.clone(), None, Some(doc! { "qty": 2 }));
        c.unavailable = vec!["note".into()];
        assert_eq!(
            Projection::project(&p, &c).unwrap(),
            vec![ReadModelWrite::Child {
                target: Target::in_database("read", "orders"),
                id: Bson::Document(doc! { "tenant": "t", "id": 7 }),
                field: "lines".into(),
                key: "a%2Eb".into(),
                version: SourceVersion::new(42),
                change: ChildChange::Patch(doc! { "qty": 2 }),
            }]
        );
        let c = change(
            Op::Create,
            doc! { "sku": "x" },
            None,
            Some(doc! { "sku": "x" }),
        );
        assert!(matches!(
            Projection::project(&p, &c),
            Err(MapError::MissingIdField { .. })
        ));
        let p = projection(r#"{ field = "lines", parent_key = ["order_id"] }"#);
        let c = change(
            Op::Create,
            doc! { "order_id": 1 },
            None,
            Some(doc! { "order_id": 1 }),
        );
        assert!(matches!(
            Projection::project(&p, &c),
            Err(MapError::NoChildKey { .. })
        ));
    }

    #[test]
    fn floor_scopes_keep_parents_and_children_apart() {
        let w = child(7, "2", ChildChange::Delete);
        assert_eq!(floor_scope(&w).collection, "orders$lines");
        let parent: MongoWrite = ReadModelWrite::Delete {
            target: Target::collection("orders"),
            id: Bson::Int32(7),
            version: SourceVersion::new(1),
        };
        assert_eq!(floor_scope(&parent), Target::collection("orders"));
    }
}

#[cfg(test)]
mod pipeline_tests;
