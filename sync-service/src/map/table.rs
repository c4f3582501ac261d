//! The declarative projection: one table into one collection.

use std::collections::BTreeMap;

use bson::{Bson, Document};
use cqrs_core::{Projection, ReadModelWrite, Target};


use super::{MapError, MongoWrite};

use crate::config::TableMapping;
use crate::envelope::{Change, Op};

/// One table into one collection: `_id` from the key (or the configured id fields), the
/// row's columns as fields (filtered and renamed), each write guarded by the change's
/// LSN. Creates, snapshot reads and updates replace the document; deletes leave a
/// tombstone; an update that changes the key moves the document.
///
/// ```
/// use sync_service::config::TableMapping;
/// use sync_service::map::TableProjection;
///
/// let mapping: TableMapping = toml::from_str(r#"
///     table = "shop.order_lines"
///     collection = "lines"
///     id_fields = ["order_id", "line_no"]
///     exclude = ["internal_note"]
///     rename = { qty = "quantity" }
/// "#).unwrap();
/// let projection = TableProjection::new(&mapping, "read");
/// assert_eq!(projection.table(), "shop.order_lines");
/// assert_eq!(projection.target().collection, "lines");
/// ```
#[derive(Debug, Clone)]
pub struct TableProjection {
    name: String,
    table: String,
    target: Target,
    id_fields: Vec<String>,
    include: Vec<String>,
    exclude: Vec<String>,
    rename: BTreeMap<String, String>,
}

impl TableProjection {
    /// Builds the projection of a validated mapping; `default_database` applies when the
    /// mapping names none.
    pub fn new(mapping: &TableMapping, default_database: &str) -> Self {
        TableProjection {
            name: mapping.name().to_owned(),
            table: mapping.table.clone(),
            target: Target::in_database(
                mapping
                    .database
                    .clone()
                    .unwrap_or_else(|| default_database.to_owned()),
                mapping.collection.clone(),
            ),
            id_fields: mapping.id_fields.clone(),
            include: mapping.include.clone(),
            exclude: mapping.exclude.clone(),
            rename: mapping.rename.clone(),
        }
    }

    /// Source table, `schema.table`.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// Target collection.
    pub fn target(&self) -> &Target {
        &self.target
    }

    /// The `_id` of a row: one field gives its value, several a sub-document in order.
    fn id_of(&self, change: &Change, row: Option<&Document>) -> Result<Bson, MapError> {
        let (source, fields): (Option<&Document>, Vec<&str>) = if self.id_fields.is_empty() {
            let key = change.key.as_ref().ok_or_else(|| MapError::NoKey {
                projection: self.name.clone(),
            })?;
            (Some(key), key.keys().map(String::as_str).collect())
        } else {
            (row, self.id_fields.iter().map(String::as_str).collect())
        };
        let missing = |field: &str| MapError::MissingIdField {
            projection: self.name.clone(),
            field: field.to_owned(),
        };
        let source = source.ok_or_else(|| missing(fields.first().copied().unwrap_or("?")))?;
        if let [single] = fields.as_slice() {
            return source.get(*single).cloned().ok_or_else(|| missing(single));
        }
        let mut id = Document::new();
        for field in fields {
            let value = source.get(field).ok_or_else(|| missing(field))?;
            id.insert(field, value.clone());
        }
        Ok(Bson::Document(id))
    }

    fn document(&self, row: &Document) -> Document {
        if self.include.is_empty() && self.exclude.is_empty() && self.rename.is_empty() {
            // The row as it is: a clone copies the index, where collecting rehashes every
            // field name (a seventh of the instructions per change, decode_cost).
            return row.clone();
        }
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

    fn missing_image(&self, op: Op) -> MapError {
        MapError::MissingImage {
            projection: self.name.clone(),
            op: op.code(),
        }
    }
}

impl Projection for TableProjection {
    type Input = Change;
    type Write = MongoWrite;
    type Error = MapError;

    fn name(&self) -> &str {
        &self.name
    }

    fn project(&self, change: &Change) -> Result<Vec<MongoWrite>, MapError> {
        let version = change.version;
        match change.op {
            Op::Create | Op::Read | Op::Update => {
                let after = change
                    .after
                    .as_ref()
                    .ok_or_else(|| self.missing_image(change.op))?;
                let id = self.id_of(change, Some(after))?;
                let mut writes = Vec::with_capacity(2);
                // A key update: Debezium sends a delete + create pair by default, but a
                // before image with another id (custom key fields) moves the document too.
                if change.op == Op::Update
                    && let Some(before) = &change.before
                    && !self.id_fields.is_empty()
                    && let Ok(old) = self.id_of(change, Some(before))
                    && old != id
                {
                    writes.push(ReadModelWrite::Delete {
                        target: self.target.clone(),
                        id: old,
                        version,
                    });
                }
                let document = self.document(after);
                if !change.unavailable.is_empty() {
                    // Columns Debezium did not send keep their stored values: patch the rest.
                    let set = document;
                    writes.push(ReadModelWrite::Patch {
                        target: self.target.clone(),
                        id,
                        version,
                        set,
                        unset: Vec::new(),
                    });
                } else {
                    writes.push(ReadModelWrite::Replace {
                        target: self.target.clone(),
                        id,
                        version,
                        document,
                    });
                }
                Ok(writes)
            }
            Op::Delete => {
                let id = self.id_of(change, change.before.as_ref())?;
                Ok(vec![ReadModelWrite::Delete {
                    target: self.target.clone(),
                    id,
                    version,
                }])
            }
            // Truncates are planned per collection by `Projections::plan`; other
            // operations (logical messages) carry no row.
            _ => Ok(Vec::new()),
        }
    }
}

table_change_projection!(TableProjection);

#[cfg(test)]
mod tests {
    use bson::doc;
    use cqrs_core::SourceVersion;

    use super::*;
    use crate::envelope::Source;

    fn mapping() -> TableMapping {
        toml::from_str(
            r#"
            table = "shop.docs"
            collection = "docs"
            exclude = ["secret"]
            rename = { body = "text" }
            "#,
        )
        .unwrap()
    }

    fn change(op: Op, after: Option<bson::Document>, before: Option<bson::Document>) -> Change {
        Change {
            op,
            key: Some(doc! { "id": 1 }),
            before,
            after,
            unavailable: Vec::new(),
            source: Source::default(),
            transaction: None,
            ts_ms: None,
            version: SourceVersion::new(42),
            topic: "cqrs.shop.docs".into(),
        }
    }

    #[test]
    fn rows_become_full_replacements_with_filters_and_renames() {
        let p = TableProjection::new(&mapping(), "read");
        let writes = Projection::project(
            &p,
            &change(
                Op::Create,
                Some(doc! { "id": 1, "body": "x", "secret": "s" }),
                None,
            ),
        )
        .unwrap();
        assert_eq!(
            writes,
            vec![ReadModelWrite::Replace {
                target: Target::in_database("read", "docs"),
                id: Bson::Int32(1),
                version: SourceVersion::new(42),
                document: doc! { "id": 1, "text": "x" },
            }]
        );
    }

    #[test]
    fn unchanged_toasted_columns_are_left_alone() {
        let p = TableProjection::new(&mapping(), "read");
        let after = doc! { "id": 1, "title": "new" };
        let mut c = change(Op::Update, Some(after), None);
        c.unavailable = vec!["body".into()];
        let writes = Projection::project(&p, &c).unwrap();
        assert_eq!(
            writes,
            vec![ReadModelWrite::Patch {
                target: Target::in_database("read", "docs"),
                id: Bson::Int32(1),
                version: SourceVersion::new(42),
                set: doc! { "id": 1, "title": "new" },
                unset: vec![],
            }]
        );
    }

    #[test]
    fn deletes_need_a_key_or_a_before_image() {
        let p = TableProjection::new(&mapping(), "read");
        let mut c = change(Op::Delete, None, Some(doc! { "id": 1 }));
        assert!(matches!(
            Projection::project(&p, &c).unwrap()[0],
            ReadModelWrite::Delete { .. }
        ));
        c.key = None;
        assert!(matches!(
            Projection::project(&p, &c),
            Err(MapError::NoKey { .. })
        ));
    }
}
