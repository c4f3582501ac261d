//! The rows of a child table embedded in their parent's document, typed.

use std::sync::Arc;

use bson::{Bson, Document};
use cqrs_core::ReadModel;
use cqrs_mongo::{GuardedWrite, MongoReadModel};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::change::{Change, Op};
use crate::error::ProjectionError;
use crate::projection::ChangeProjection;
use crate::row::table_of;
use crate::write::Write;

/// The rows of a child table (`order_lines`) kept inside their parent's document of read
/// model `Model` (an order), one child per row, each guarded by the row's own version (see
/// [`cqrs_mongo::children`]): children and parent arrive in any order and converge, a
/// deleted row leaves the document, a row arriving before its parent is kept (the document
/// stays hidden until its parent's own projection writes it), a parent delete hides the
/// document and never comes back through its children.
///
/// The runtime reads each captured row into `Row`, asks where it goes ([`parent`] and
/// [`key`]) and what to store ([`child`]); an update whose old row (the before image) sat
/// elsewhere **moves** the child: removed there, written here, at the same version.
///
/// **Replica identity.** Updates and deletes carry the old row only with
/// `REPLICA IDENTITY FULL`; under the default identity a delete's old row has the primary
/// key and defaults for the other columns, and an update none. So: either the parent's
/// columns and the key are part of the child table's primary key (a move is then a key
/// change, which Debezium sends as a delete and a create), or the table has
/// `REPLICA IDENTITY FULL`.
///
/// [`parent`]: ChildProjection::parent
/// [`key`]: ChildProjection::key
/// [`child`]: ChildProjection::child
///
/// ```
/// use cqrs_mongo::ReadModel;
/// use cqrs_projection::{ChildProjection, ProjectionError};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Debug, Serialize, Deserialize, ReadModel)]
/// #[read_model(collection = "orders")]
/// struct Order {
///     #[serde(rename = "_id")]
///     id: String,
///     #[serde(default, skip_serializing, deserialize_with = "cqrs_mongo::children::deserialize_vec")]
///     lines: Vec<Line>,
/// }
///
/// /// A row of `shop.order_lines`, primary key `(order_id, line_no)`.
/// #[derive(Deserialize)]
/// struct LineRow { order_id: String, line_no: i32, sku: String, qty: i32 }
///
/// #[derive(Debug, Serialize, Deserialize)]
/// struct Line { line_no: i32, sku: String, qty: i32 }
///
/// struct OrderLines;
/// impl ChildProjection for OrderLines {
///     type Model = Order;
///     type Row = LineRow;
///     type Child = Line;
///     fn name(&self) -> &str { "orders.lines" }
///     fn field(&self) -> &str { "lines" }
///     fn parent(&self, row: &LineRow) -> Option<String> { Some(row.order_id.clone()) }
///     fn key(&self, row: &LineRow) -> String { row.line_no.to_string() }
///     fn child(&self, row: &LineRow) -> Result<Line, ProjectionError> {
///         Ok(Line { line_no: row.line_no, sku: row.sku.clone(), qty: row.qty })
///     }
/// }
///
/// let erased = cqrs_projection::children("shop.order_lines", OrderLines);
/// assert_eq!(erased.tables(), ["shop.order_lines"]);
/// ```
pub trait ChildProjection: Send + Sync + 'static {
    /// The parents' read model.
    type Model: MongoReadModel;
    /// A row of the child table (deserialized from the captured row image).
    type Row: DeserializeOwned;
    /// What is stored for a row.
    type Child: Serialize;

    /// Stable name (metrics, checkpoints, dead letters): another one than the parent's
    /// projection's.
    fn name(&self) -> &str;

    /// The map of children inside the parent (`lines`).
    fn field(&self) -> &str;

    /// The parent document of a row; `None` when it has none (it is left out).
    fn parent(&self, row: &Self::Row) -> Option<<Self::Model as ReadModel>::Id>;

    /// The row's key within its parent: stable for the row's life (derived from its key
    /// columns; `cqrs_mongo::children::child_key` makes one from values).
    fn key(&self, row: &Self::Row) -> String;

    /// What is stored for the row.
    fn child(&self, row: &Self::Row) -> Result<Self::Child, ProjectionError>;
}

struct ChildrenOf<P> {
    projection: P,
    tables: Vec<String>,
}

impl<P: ChildProjection> ChildrenOf<P> {
    fn row(&self, change: &Change, image: &Document) -> Result<P::Row, ProjectionError> {
        let deserializer = bson::Deserializer::new(Bson::Document(image.clone()));
        serde_path_to_error::deserialize(deserializer).map_err(|e| {
            let path = e.path().to_string();
            ProjectionError::Custom(format!(
                "{}: row does not fit {}: field `{path}`: {}",
                table_of(change),
                std::any::type_name::<P::Row>(),
                e.into_inner()
            ))
        })
    }

    /// Where a row sits: its parent and its key.
    fn place(&self, row: &P::Row) -> Option<(<P::Model as ReadModel>::Id, String)> {
        let parent = self.projection.parent(row)?;
        Some((parent, self.projection.key(row)))
    }
}

impl<P: ChildProjection> ChangeProjection for ChildrenOf<P>
where
    <P::Model as ReadModel>::Id: PartialEq,
{
    fn name(&self) -> &str {
        self.projection.name()
    }

    fn tables(&self) -> &[String] {
        &self.tables
    }

    fn project(&self, change: &Change) -> Result<Vec<GuardedWrite>, ProjectionError> {
        let field = self.projection.field();
        let mut writes: Vec<Write<P::Model>> = Vec::with_capacity(2);
        match change.op {
            Op::Create | Op::Read | Op::Update => {
                let Some(after) = &change.after else {
                    return Ok(Vec::new());
                };
                let row = self.row(change, after)?;
                let new = self.place(&row);
                if change.op == Op::Update
                    && let Some(before) = &change.before
                    && let Some(old) = self.place(&self.row(change, before)?)
                    && Some(&old) != new.as_ref()
                {
                    writes.push(Write::delete_child(old.0, field, old.1));
                }
                if let Some((parent, key)) = new {
                    let child = self.projection.child(&row)?;
                    writes.push(Write::child(parent, field, key, &child)?);
                }
            }
            Op::Delete => {
                let Some(before) = change.before.as_ref().or(change.key.as_ref()) else {
                    return Ok(Vec::new());
                };
                if let Some((parent, key)) = self.place(&self.row(change, before)?) {
                    writes.push(Write::delete_child(parent, field, key));
                }
            }
            Op::Truncate | Op::Message => {}
        }
        // A table row is no aggregate: nothing to wait for.
        writes
            .into_iter()
            .map(|w| w.into_guarded(change.version, None))
            .collect()
    }
}

/// A [`ChildProjection`] reading `table` (`schema.table`), erased for the runtime.
pub fn children<P: ChildProjection>(table: &str, projection: P) -> Arc<dyn ChangeProjection>
where
    <P::Model as ReadModel>::Id: PartialEq,
{
    Arc::new(ChildrenOf {
        projection,
        tables: vec![table.to_owned()],
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::change::Source;
    use bson::doc;
    use cqrs_core::{ChildChange, ReadModelWrite, SourceVersion};
    use serde::Deserialize;

    #[derive(Debug, Serialize, Deserialize)]
    struct Order {
        #[serde(rename = "_id")]
        id: i32,
    }
    impl ReadModel for Order {
        type Id = i32;
        const COLLECTION: &'static str = "orders";
        fn id(&self) -> i32 {
            self.id
        }
    }
    impl MongoReadModel for Order {}

    #[derive(Deserialize)]
    struct Row {
        id: i32,
        order_id: Option<i32>,
        #[serde(default)]
        qty: i32,
    }

    #[derive(Serialize)]
    struct Item {
        qty: i32,
    }

    struct Items;
    impl ChildProjection for Items {
        type Model = Order;
        type Row = Row;
        type Child = Item;
        fn name(&self) -> &str {
            "orders.items"
        }
        fn field(&self) -> &str {
            "items"
        }
        fn parent(&self, row: &Row) -> Option<i32> {
            row.order_id
        }
        fn key(&self, row: &Row) -> String {
            row.id.to_string()
        }
        fn child(&self, row: &Row) -> Result<Item, ProjectionError> {
            if row.qty < 0 {
                return Err(ProjectionError::custom("negative quantity"));
            }
            Ok(Item { qty: row.qty })
        }
    }

    fn change(op: Op, before: Option<Document>, after: Option<Document>) -> Change {
        Change {
            op,
            key: Some(doc! { "id": 5 }),
            before,
            after,
            unavailable: Vec::new(),
            source: Source {
                schema: Some("shop".into()),
                table: Some("items".into()),
                ..Source::default()
            },
            transaction: None,
            ts_ms: None,
            version: SourceVersion::new(9),
            topic: "cqrs.shop.items".into(),
        }
    }

    fn shapes(writes: &[GuardedWrite]) -> Vec<(Bson, String, bool)> {
        writes
            .iter()
            .map(|w| match &w.write {
                ReadModelWrite::Child {
                    id, key, change, ..
                } => (id.clone(), key.clone(), change.is_delete()),
                other => panic!("not a child write: {other:?}"),
            })
            .collect()
    }

    #[test]
    fn rows_become_children_and_moves_remove_them_from_the_old_parent() {
        let p = children("shop.items", Items);
        let row = |order: i32| doc! { "id": 5, "order_id": order, "qty": 2 };
        let w = p.project(&change(Op::Create, None, Some(row(1)))).unwrap();
        assert_eq!(shapes(&w), vec![(Bson::Int32(1), "5".into(), false)]);
        assert!(matches!(
            &w[0].write,
            ReadModelWrite::Child { change: ChildChange::Replace(d), field, .. }
                if d == &doc! { "qty": 2 } && field == "items"
        ));
        let w = p
            .project(&change(Op::Update, Some(row(1)), Some(row(2))))
            .unwrap();
        assert_eq!(
            shapes(&w),
            vec![
                (Bson::Int32(1), "5".into(), true),
                (Bson::Int32(2), "5".into(), false)
            ]
        );
        // A delete under the default replica identity: only the key.
        let w = p
            .project(&change(
                Op::Delete,
                Some(doc! { "id": 5, "order_id": 2 }),
                None,
            ))
            .unwrap();
        assert_eq!(shapes(&w), vec![(Bson::Int32(2), "5".into(), true)]);
        // No parent: nothing; a row that does not fit: an error naming the field.
        let orphan = doc! { "id": 5, "order_id": Bson::Null };
        assert!(
            p.project(&change(Op::Create, None, Some(orphan)))
                .unwrap()
                .is_empty()
        );
        let bad = doc! { "id": "x" };
        let err = p.project(&change(Op::Create, None, Some(bad))).unwrap_err();
        assert!(err.to_string().contains("`id`"), "{err}");
        let refused = doc! { "id": 5, "order_id": 1, "qty": -1 };
        assert!(p.project(&change(Op::Create, None, Some(refused))).is_err());
    }
}
