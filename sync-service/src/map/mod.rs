//! Map stage: a [`Change`] (or an outbox event) into read-model writes.
//!
//! Three kinds of projections feed MongoDB, all run through `cqrs-projection`'s erased
//! [`ChangeProjection`] / [`OutboxHandler`]:
//! - declarative [`TableProjection`]s from the `[[projection]]` sections of the config
//!   (table -> database/collection, `_id` from the key fields, include / exclude / rename),
//!   and [`ChildTableProjection`]s for those with an `embed` (the rows of a child table
//!   inside their parent's document);
//! - typed projections (`cqrs_projection::StateProjection`, `EventProjection`,
//!   `OutboxProjection`): a service's own aggregates and events in, typed writes out;
//! - raw Rust projections: anything implementing [`cqrs_core::Projection`] with
//!   `Input = Change` and `Write = MongoWrite`, registered with the tables it reads.
//!
//! [`Projections`] routes each change to the projections of its table, each outbox event to
//! those of its topic.

/// The runtime's view of a declarative table projection (a struct with `name` and `table`
/// fields that implements [`cqrs_core::Projection`] for [`Change`]s): its one table, and its
/// writes without an origin (a table row is no aggregate).
macro_rules! table_change_projection {
    ($projection:ty) => {
        impl cqrs_projection::ChangeProjection for $projection {
            fn name(&self) -> &str {
                &self.name
            }

            fn tables(&self) -> &[String] {
                std::slice::from_ref(&self.table)
            }

            fn project(
                &self,
                change: &crate::envelope::Change,
            ) -> Result<Vec<cqrs_mongo::GuardedWrite>, cqrs_projection::ProjectionError> {
                cqrs_core::Projection::project(self, change)
                    .map(|writes| {
                        writes
                            .into_iter()
                            .map(cqrs_mongo::GuardedWrite::new)
                            .collect()
                    })
                    .map_err(cqrs_projection::ProjectionError::custom)
            }
        }
    };
}

mod children;
mod table;

use std::collections::HashMap;
use std::sync::Arc;

use cqrs_core::outbox::IntegrationEvent;
use cqrs_core::{Projection, SourceVersion, Target};
use cqrs_mongo::GuardedWrite;
use cqrs_projection::{ChangeProjection, OutboxHandler, ProjectionError};

pub use children::{
    CHILDREN_SCOPE_SEPARATOR, ChildTableProjection, children_scope, floor_scope,
    split_children_scope, split_versioned_id, versioned_child_id, versioned_id,
};
pub use table::TableProjection;

use crate::envelope::{Change, Op};

/// The raw write type projections produce: a guarded write of a BSON document by BSON id
/// (one definition, `cqrs-mongo`'s).
pub use cqrs_mongo::MongoWrite;

/// Why a change could not be mapped. The message is dead-lettered.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum MapError {
    /// The change lacks a field the `_id` is made of.
    #[error("id field {field:?} is missing from the change")]
    MissingIdField {
        /// Projection.
        projection: String,
        /// Field.
        field: String,
    },
    /// The change has no key and the projection names no id fields.
    #[error("the change has no key; configure id_fields")]
    NoKey {
        /// Projection.
        projection: String,
    },
    /// A create/update/read without an `after` image, or a delete without key or `before`.
    #[error("{op} change without the row image it needs")]
    MissingImage {
        /// Projection.
        projection: String,
        /// Operation code.
        op: &'static str,
    },
    /// An update of a child table whose rows may move between parents came without the
    /// old row: the table needs `REPLICA IDENTITY FULL` (or a primary key holding the
    /// parent's columns).
    #[error(
        "update of child table {table} without its old row: a child may have moved to \
         another parent; ALTER TABLE {table} REPLICA IDENTITY FULL (or make the parent \
         columns part of its primary key)"
    )]
    NeedsBeforeImage {
        /// Projection.
        projection: String,
        /// The child table.
        table: String,
    },
    /// A child row has no key within its parent: configure `embed.key`.
    #[error("the child's key within its parent is empty: configure embed.key")]
    NoChildKey {
        /// Projection.
        projection: String,
    },
    /// A Rust projection refused the change (or its row did not fit the projection's
    /// types).
    #[error("projection {projection}: {source}")]
    Projection {
        /// Projection.
        projection: String,
        /// Why.
        #[source]
        source: Arc<ProjectionError>,
    },
}

/// What one change asks of the write stage.
// Nearly every item is a `Write`: boxing it would allocate once per write for the rare
// truncate's sake.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum Planned {
    /// A guarded document write.
    Write {
        /// Projection that asked for it (metrics, checkpoints).
        projection: Arc<str>,
        /// The write, with the aggregate change it reflects.
        write: GuardedWrite,
    },
    /// A truncated table: every document of the target older than `version` goes, and
    /// every older write to it becomes stale (see [`truncate`](crate::truncate)).
    Truncate {
        /// Projection.
        projection: Arc<str>,
        /// Collection to empty.
        target: Target,
        /// Version of the truncate.
        version: SourceVersion,
    },
}

impl Planned {
    /// The projection that asked for the write.
    pub fn projection(&self) -> &Arc<str> {
        match self {
            Planned::Write { projection, .. } | Planned::Truncate { projection, .. } => projection,
        }
    }
}

/// An outbox projection and its name.
type NamedHandler = (Arc<str>, Arc<dyn OutboxHandler>);

struct Registered {
    name: Arc<str>,
    projection: Arc<dyn ChangeProjection>,
    /// Collection a truncate of the source table empties (declarative projections only).
    truncate_target: Option<Target>,
}

/// The projections of a service, routed by source table (`schema.table`).
///
/// ```
/// use sync_service::map::{Projections, TableProjection};
/// use sync_service::config::TableMapping;
///
/// let mapping: TableMapping = toml::from_str(r#"
///     table = "orders.orders"
///     collection = "orders"
/// "#).unwrap();
/// let mut projections = Projections::default();
/// projections.add_table(TableProjection::new(&mapping, "read"));
/// assert_eq!(projections.names(), vec!["orders.orders"]);
/// assert!(projections.has_table("orders.orders"));
/// ```
#[derive(Default)]
pub struct Projections {
    by_table: HashMap<String, Vec<Registered>>,
    by_topic: HashMap<String, Vec<NamedHandler>>,
    names: Vec<Arc<str>>,
}

impl Projections {
    /// Adds a declarative table projection.
    pub fn add_table(&mut self, projection: TableProjection) {
        let target = projection.target().clone();
        self.insert(Arc::new(projection), Some(target));
    }

    /// Adds a declarative child projection: its truncates remove the children of its
    /// field, never the parents.
    ///
    /// ```
    /// use sync_service::config::TableMapping;
    /// use sync_service::map::{ChildTableProjection, Projections};
    ///
    /// let mapping: TableMapping = toml::from_str(r#"
    ///     table = "shop.order_lines"
    ///     collection = "orders"
    ///     embed = { field = "lines", parent_key = ["order_id"] }
    /// "#).unwrap();
    /// let mut projections = Projections::default();
    /// projections.add_children(ChildTableProjection::new(&mapping, "read").unwrap());
    /// assert!(projections.has_table("shop.order_lines"));
    /// ```
    pub fn add_children(&mut self, projection: ChildTableProjection) {
        let scope = projection.truncate_scope();
        self.insert(Arc::new(projection), Some(scope));
    }

    /// Adds an erased projection of a child table (`cqrs_projection::children`) whose
    /// truncates remove the children of `scope` (`children_scope` of the parents'
    /// collection and the children field), never the parents.
    /// `SyncService::with_child_projection` is the usual way in.
    ///
    /// ```ignore
    /// let scope = children_scope(&Target::collection("orders"), "lines");
    /// projections.add_child_change(cqrs_projection::children("shop.order_lines", OrderLines), scope);
    /// ```
    pub fn add_child_change(&mut self, projection: Arc<dyn ChangeProjection>, scope: Target) {
        self.insert(projection, Some(scope));
    }

    /// Adds a raw Rust projection fed by `tables` (`schema.table` each).
    pub fn add<P>(&mut self, projection: P, tables: &[&str])
    where
        P: Projection<Input = Change, Write = MongoWrite> + 'static,
    {
        self.insert(cqrs_projection::raw(projection, tables), None);
    }

    /// Adds an erased change projection (a typed one made by `cqrs_projection::state` or
    /// `cqrs_projection::events`).
    pub fn add_change(&mut self, projection: Arc<dyn ChangeProjection>) {
        self.insert(projection, None);
    }

    /// Adds an erased outbox projection (`cqrs_projection::outbox`).
    pub fn add_outbox(&mut self, handler: Arc<dyn OutboxHandler>) {
        let name: Arc<str> = Arc::from(handler.name());
        self.names.push(Arc::clone(&name));
        for topic in handler.topics() {
            self.by_topic
                .entry(topic)
                .or_default()
                .push((Arc::clone(&name), Arc::clone(&handler)));
        }
    }

    fn insert(&mut self, projection: Arc<dyn ChangeProjection>, truncate_target: Option<Target>) {
        let name: Arc<str> = Arc::from(projection.name());
        self.names.push(Arc::clone(&name));
        for table in projection.tables() {
            self.by_table
                .entry(table.clone())
                .or_default()
                .push(Registered {
                    name: Arc::clone(&name),
                    projection: Arc::clone(&projection),
                    truncate_target: truncate_target.clone(),
                });
        }
    }

    /// Names of every projection.
    pub fn names(&self) -> Vec<&str> {
        self.names.iter().map(|n| &**n).collect()
    }

    /// True when some projection reads `table`.
    pub fn has_table(&self, table: &str) -> bool {
        self.by_table.contains_key(table)
    }

    /// The tables (`schema.table`) some projection reads.
    pub fn tables(&self) -> Vec<&str> {
        self.by_table.keys().map(String::as_str).collect()
    }

    /// The outbox topics some projection reads.
    pub fn outbox_topics(&self) -> Vec<&str> {
        self.by_topic.keys().map(String::as_str).collect()
    }

    /// True when some outbox projection reads `topic`.
    pub fn has_outbox_topic(&self, topic: &str) -> bool {
        self.by_topic.contains_key(topic)
    }

    /// The writes one change asks for, from every projection of its table. A change of a
    /// table no projection reads asks for nothing.
    pub fn plan(&self, change: &Change) -> Result<Vec<Planned>, MapError> {
        let (Some(schema), Some(table)) = (&change.source.schema, &change.source.table) else {
            return Ok(Vec::new());
        };
        let Some(registered) = self.by_table.get(&format!("{schema}.{table}")) else {
            return Ok(Vec::new());
        };
        let mut planned = Vec::new();
        for r in registered {
            if change.op == Op::Truncate
                && let Some(target) = &r.truncate_target
            {
                planned.push(Planned::Truncate {
                    projection: Arc::clone(&r.name),
                    target: target.clone(),
                    version: change.version,
                });
                continue;
            }
            let writes = r
                .projection
                .project(change)
                .map_err(|e| failed(&r.name, e))?;
            let fill = change.is_incremental_snapshot_read();
            planned.extend(writes.into_iter().map(|write| Planned::Write {
                projection: Arc::clone(&r.name),
                // A row of an incremental snapshot only fills in what is missing: see
                // cqrs_mongo::GuardedWrite::fill.
                write: if fill { write.fill() } else { write },
            }));
        }
        Ok(planned)
    }

    /// The writes one outbox event asks for, from every projection of its topic.
    pub fn plan_outbox(&self, event: &IntegrationEvent) -> Result<Vec<Planned>, MapError> {
        let Some(handlers) = self.by_topic.get(&event.position.topic) else {
            return Ok(Vec::new());
        };
        let mut planned = Vec::new();
        for (name, handler) in handlers {
            let writes = handler.project(event).map_err(|e| failed(name, e))?;
            planned.extend(writes.into_iter().map(|write| Planned::Write {
                projection: Arc::clone(name),
                write,
            }));
        }
        Ok(planned)
    }
}

/// A projection's error, with its name.
fn failed(name: &str, e: ProjectionError) -> MapError {
    MapError::Projection {
        projection: name.to_owned(),
        source: Arc::new(e),
    }
}
