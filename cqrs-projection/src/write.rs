//! Typed writes: what a projection asks of a read model `M`.

use bson::{Bson, Document};
use cqrs_core::{ChildChange, ConsistencyToken, ReadModel, ReadModelWrite, SourceVersion, Target};
use cqrs_mongo::{GuardedWrite, MongoReadModel, Patch};
use serde::Serialize;

use crate::error::ProjectionError;

/// One write of read model `M`. The collection comes from `M`, the document from serde,
/// and the runtime adds the version guarding the write and the aggregate change it reflects
/// (for [`Repository::wait_for`](cqrs_mongo::Repository::wait_for)), so a projection never
/// touches BSON or versions.
///
/// ```
/// use cqrs_mongo::Patch;
/// use cqrs_projection::Write;
/// # #[derive(Debug, serde::Serialize, serde::Deserialize)]
/// # struct Balance { #[serde(rename = "_id")] id: String, balance: i64 }
/// # impl cqrs_core::ReadModel for Balance { type Id = String; const COLLECTION: &'static str = "balances"; fn id(&self) -> String { self.id.clone() } }
/// # impl cqrs_mongo::MongoReadModel for Balance {}
///
/// let writes = vec![
///     Write::upsert(Balance { id: "acc-1".into(), balance: 70 }),
///     Write::<Balance>::patch("acc-2", Patch::new().set("balance", 0)),
///     Write::<Balance>::delete("acc-3"),
/// ];
/// assert_eq!(writes.len(), 3);
/// ```
#[derive(Debug, Clone)]
pub enum Write<M: MongoReadModel> {
    /// Insert or replace the whole document.
    Upsert(M),
    /// Set and remove some fields (creating the document if needed).
    Patch {
        /// The document.
        id: M::Id,
        /// The fields.
        patch: Patch,
    },
    /// Set and remove fields owned by one source of a document fed by several, guarded by
    /// that source's own version (see [`ReadModelWrite::ScopedPatch`]).
    ScopedPatch {
        /// The document.
        id: M::Id,
        /// The source owning the fields: letters, digits, `_`, `-`.
        scope: String,
        /// The fields.
        patch: Patch,
    },
    /// Delete the document (a tombstone keeps older changes from bringing it back).
    Delete(M::Id),
    /// Write one child embedded in document `id`: element `key` of the map of children
    /// `field`, guarded by the child's own version (see [`cqrs_mongo::children`]). Made by
    /// [`Write::child`], [`Write::patch_child`] and [`Write::delete_child`].
    Child {
        /// The parent document.
        id: M::Id,
        /// The map of children (`lines`).
        field: String,
        /// The child's key (`cqrs_mongo::children::child_key` makes one from values).
        key: String,
        /// What happens to the child (its fields as BSON).
        change: ChildChange<Document>,
    },
}

impl<M: MongoReadModel> Write<M> {
    /// Insert or replace `model`.
    pub fn upsert(model: M) -> Self {
        Write::Upsert(model)
    }

    /// Patch document `id`.
    pub fn patch(id: impl Into<M::Id>, patch: Patch) -> Self {
        Write::Patch {
            id: id.into(),
            patch,
        }
    }

    /// Patch the fields of document `id` that source `scope` owns.
    pub fn scoped_patch(id: impl Into<M::Id>, scope: impl Into<String>, patch: Patch) -> Self {
        Write::ScopedPatch {
            id: id.into(),
            scope: scope.into(),
            patch,
        }
    }

    /// Delete document `id`.
    pub fn delete(id: impl Into<M::Id>) -> Self {
        Write::Delete(id.into())
    }

    /// Insert or replace child `key` of the map `field` of document `id` with `child`.
    /// The model reads the map with
    /// [`deserialize_vec`](cqrs_mongo::children::deserialize_vec) (or as a map) and never
    /// writes it itself (`skip_serializing`).
    ///
    /// ```
    /// use cqrs_projection::Write;
    /// # #[derive(Debug, serde::Serialize, serde::Deserialize)]
    /// # struct Order { #[serde(rename = "_id")] id: String }
    /// # impl cqrs_core::ReadModel for Order { type Id = String; const COLLECTION: &'static str = "orders"; fn id(&self) -> String { self.id.clone() } }
    /// # impl cqrs_mongo::MongoReadModel for Order {}
    /// #[derive(serde::Serialize)]
    /// struct Line { sku: String, qty: u32 }
    ///
    /// let w = Write::<Order>::child("o-1", "lines", "1", &Line { sku: "w".into(), qty: 2 }).unwrap();
    /// assert!(matches!(w, Write::Child { .. }));
    /// ```
    pub fn child(
        id: impl Into<M::Id>,
        field: impl Into<String>,
        key: impl Into<String>,
        child: &impl Serialize,
    ) -> Result<Self, ProjectionError> {
        let document = bson::to_document(child).map_err(|e| encode::<M>(e.to_string()))?;
        Ok(Write::Child {
            id: id.into(),
            field: field.into(),
            key: key.into(),
            change: ChildChange::Replace(document),
        })
    }

    /// Set some fields of child `key` of the map `field` of document `id` (creating it if
    /// needed). A patch that removes fields is refused.
    ///
    /// ```
    /// use cqrs_mongo::Patch;
    /// use cqrs_projection::Write;
    /// # #[derive(Debug, serde::Serialize, serde::Deserialize)]
    /// # struct Order { #[serde(rename = "_id")] id: String }
    /// # impl cqrs_core::ReadModel for Order { type Id = String; const COLLECTION: &'static str = "orders"; fn id(&self) -> String { self.id.clone() } }
    /// # impl cqrs_mongo::MongoReadModel for Order {}
    /// let shipped = Write::<Order>::patch_child("o-1", "lines", "1", Patch::new().set("shipped", true));
    /// assert!(shipped.is_ok());
    /// let removing = Write::<Order>::patch_child("o-1", "lines", "1", Patch::new().unset("note"));
    /// assert!(removing.is_err());
    /// ```
    pub fn patch_child(
        id: impl Into<M::Id>,
        field: impl Into<String>,
        key: impl Into<String>,
        patch: Patch,
    ) -> Result<Self, ProjectionError> {
        let (set, unset) = parts::<M>(patch)?;
        if !unset.is_empty() {
            return Err(encode::<M>(format!(
                "a child patch cannot remove fields ({unset:?}): replace the child instead"
            )));
        }
        Ok(Write::Child {
            id: id.into(),
            field: field.into(),
            key: key.into(),
            change: ChildChange::Patch(set),
        })
    }

    /// Remove child `key` of the map `field` of document `id` (its version stays, so an
    /// older change of it cannot bring it back).
    ///
    /// ```
    /// use cqrs_core::{ReadModelWrite, SourceVersion};
    /// use cqrs_projection::Write;
    /// # #[derive(Debug, serde::Serialize, serde::Deserialize)]
    /// # struct Order { #[serde(rename = "_id")] id: String }
    /// # impl cqrs_core::ReadModel for Order { type Id = String; const COLLECTION: &'static str = "orders"; fn id(&self) -> String { self.id.clone() } }
    /// # impl cqrs_mongo::MongoReadModel for Order {}
    /// let w = Write::<Order>::delete_child("o-1", "lines", "2")
    ///     .into_guarded(SourceVersion::new(9), None)
    ///     .unwrap();
    /// assert!(matches!(w.write, ReadModelWrite::Child { ref key, .. } if key == "2"));
    /// ```
    pub fn delete_child(
        id: impl Into<M::Id>,
        field: impl Into<String>,
        key: impl Into<String>,
    ) -> Self {
        Write::Child {
            id: id.into(),
            field: field.into(),
            key: key.into(),
            change: ChildChange::Delete,
        }
    }

    /// The untyped guarded write at `version`, reflecting `origin`.
    ///
    /// ```
    /// use cqrs_core::{ConsistencyToken, SourceVersion};
    /// use cqrs_projection::Write;
    /// # #[derive(Debug, serde::Serialize, serde::Deserialize)]
    /// # struct Balance { #[serde(rename = "_id")] id: String, balance: i64 }
    /// # impl cqrs_core::ReadModel for Balance { type Id = String; const COLLECTION: &'static str = "balances"; fn id(&self) -> String { self.id.clone() } }
    /// # impl cqrs_mongo::MongoReadModel for Balance {}
    /// let w = Write::upsert(Balance { id: "acc-1".into(), balance: 70 })
    ///     .into_guarded(SourceVersion::new(42), Some(ConsistencyToken::new("Account", "acc-1", 2)))
    ///     .unwrap();
    /// assert_eq!(w.write.target().collection, "balances");
    /// assert_eq!(w.origin.unwrap().version, 2);
    /// ```
    pub fn into_guarded(
        self,
        version: SourceVersion,
        origin: Option<ConsistencyToken>,
    ) -> Result<GuardedWrite, ProjectionError> {
        let target = match M::DATABASE {
            Some(db) => Target::in_database(db, M::COLLECTION),
            None => Target::collection(M::COLLECTION),
        };
        let write = match self {
            Write::Upsert(model) => {
                let id = id_bson::<M>(&model.id())?;
                let document = bson::to_document(&model).map_err(|e| encode::<M>(e.to_string()))?;
                ReadModelWrite::Replace {
                    target,
                    id,
                    version,
                    document,
                }
            }
            Write::Patch { id, patch } => {
                let (set, unset) = parts::<M>(patch)?;
                ReadModelWrite::Patch {
                    target,
                    id: id_bson::<M>(&id)?,
                    version,
                    set,
                    unset,
                }
            }
            Write::ScopedPatch { id, scope, patch } => {
                let (set, unset) = parts::<M>(patch)?;
                ReadModelWrite::ScopedPatch {
                    target,
                    id: id_bson::<M>(&id)?,
                    scope,
                    version,
                    set,
                    unset,
                }
            }
            Write::Delete(id) => ReadModelWrite::Delete {
                target,
                id: id_bson::<M>(&id)?,
                version,
            },
            Write::Child {
                id,
                field,
                key,
                change,
            } => ReadModelWrite::Child {
                target,
                id: id_bson::<M>(&id)?,
                field,
                key,
                version,
                change,
            },
        };
        Ok(GuardedWrite {
            write,
            origin,
            fill: false,
        })
    }
}

fn encode<M: ReadModel>(message: String) -> ProjectionError {
    ProjectionError::Encode {
        model: M::COLLECTION,
        message,
    }
}

fn id_bson<M: ReadModel>(id: &M::Id) -> Result<Bson, ProjectionError> {
    bson::to_bson(id).map_err(|e| encode::<M>(format!("id {id:?}: {e}")))
}

fn parts<M: ReadModel>(patch: Patch) -> Result<(Document, Vec<String>), ProjectionError> {
    patch.into_parts().map_err(encode::<M>)
}
