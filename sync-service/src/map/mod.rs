//! Map stage: a [`Change`] into read-model writes.
//!
//! Two kinds of projections feed MongoDB:
//! - declarative [`TableProjection`]s from the `[[projection]]` sections of the config
//!   (table -> database/collection, `_id` from the key fields, include / exclude / rename);
//! - Rust projections: anything implementing [`cqrs_core::Projection`] with
//!   `Input = Change` and `Write = MongoWrite`, registered with the tables it reads
//!   (one read model fed by two tables, for example).
//!
//! [`Projections`] routes each change to the projections of its table.

mod table;

use std::collections::HashMap;
use std::sync::Arc;

use bson::{Bson, Document};
use cqrs_core::{Projection, ReadModelWrite, SourceVersion, Target};

pub use table::TableProjection;

use crate::envelope::{Change, Op};

/// The write type projections produce: a guarded write of a BSON document by BSON id.
pub type MongoWrite = ReadModelWrite<Bson, Document>;

/// Why a change could not be mapped. The message is dead-lettered.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum MapError {
    /// The change lacks a field the `_id` is made of.
    #[error("projection {projection}: id field {field:?} is missing from the change")]
    MissingIdField {
        /// Projection.
        projection: String,
        /// Field.
        field: String,
    },
    /// The change has no key and the projection names no id fields.
    #[error("projection {projection}: the change has no key; configure id_fields")]
    NoKey {
        /// Projection.
        projection: String,
    },
    /// A create/update/read without an `after` image, or a delete without key or `before`.
    #[error("projection {projection}: {op} change without the row image it needs")]
    MissingImage {
        /// Projection.
        projection: String,
        /// Operation code.
        op: &'static str,
    },
    /// A Rust projection failed.
    #[error("projection {projection}: {message}")]
    Custom {
        /// Projection.
        projection: String,
        /// Its error, rendered.
        message: String,
    },
}

/// What one change asks of the write stage.
// Nearly every item is a `Write`: boxing it would allocate once per write for the rare
// truncate's sake.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Planned {
    /// A guarded document write.
    Write {
        /// Projection that asked for it (metrics, checkpoints).
        projection: Arc<str>,
        /// The write.
        write: MongoWrite,
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

/// Object-safe form of a change projection.
trait ErasedProjection: Send + Sync {
    fn name(&self) -> &str;
    fn project(&self, change: &Change) -> Result<Vec<MongoWrite>, MapError>;
    /// Collection a truncate of the source table empties (declarative projections only).
    fn truncate_target(&self) -> Option<Target>;
}

struct Custom<P>(P);

impl<P> ErasedProjection for Custom<P>
where
    P: Projection<Input = Change, Write = MongoWrite>,
{
    fn name(&self) -> &str {
        self.0.name()
    }

    fn project(&self, change: &Change) -> Result<Vec<MongoWrite>, MapError> {
        self.0.project(change).map_err(|e| MapError::Custom {
            projection: self.0.name().to_owned(),
            message: e.to_string(),
        })
    }

    fn truncate_target(&self) -> Option<Target> {
        None
    }
}

impl ErasedProjection for TableProjection {
    fn name(&self) -> &str {
        Projection::name(self)
    }

    fn project(&self, change: &Change) -> Result<Vec<MongoWrite>, MapError> {
        Projection::project(self, change)
    }

    fn truncate_target(&self) -> Option<Target> {
        Some(self.target().clone())
    }
}

struct Registered {
    name: Arc<str>,
    projection: Arc<dyn ErasedProjection>,
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
    names: Vec<Arc<str>>,
}

impl Projections {
    /// Adds a declarative table projection.
    pub fn add_table(&mut self, projection: TableProjection) {
        let table = projection.table().to_owned();
        self.insert(vec![table], Arc::new(projection));
    }

    /// Adds a Rust projection fed by `tables` (`schema.table` each).
    pub fn add<P>(&mut self, projection: P, tables: &[&str])
    where
        P: Projection<Input = Change, Write = MongoWrite> + 'static,
    {
        self.insert(
            tables.iter().map(|t| (*t).to_owned()).collect(),
            Arc::new(Custom(projection)),
        );
    }

    fn insert(&mut self, tables: Vec<String>, projection: Arc<dyn ErasedProjection>) {
        let name: Arc<str> = Arc::from(projection.name());
        self.names.push(Arc::clone(&name));
        for table in tables {
            self.by_table.entry(table).or_default().push(Registered {
                name: Arc::clone(&name),
                projection: Arc::clone(&projection),
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
                && let Some(target) = r.projection.truncate_target()
            {
                planned.push(Planned::Truncate {
                    projection: Arc::clone(&r.name),
                    target,
                    version: change.version,
                });
                continue;
            }
            for write in r.projection.project(change)? {
                planned.push(Planned::Write {
                    projection: Arc::clone(&r.name),
                    write,
                });
            }
        }
        Ok(planned)
    }
}
