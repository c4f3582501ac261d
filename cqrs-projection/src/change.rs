//! The Debezium PostgreSQL change event, as projections receive it.

use std::fmt;

use bson::Document;
use cqrs_core::SourceVersion;

/// The operation of a change (`op`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// `c`: insert.
    Create,
    /// `u`: update.
    Update,
    /// `d`: delete (`after` is null; a tombstone usually follows).
    Delete,
    /// `r`: read during a snapshot.
    Read,
    /// `t`: `TRUNCATE` of the table (no row images).
    Truncate,
    /// `m`: a logical decoding message (`pg_logical_emit_message`).
    Message,
}

impl Op {
    /// Parses Debezium's one-letter code.
    ///
    /// ```
    /// use cqrs_projection::Op;
    ///
    /// assert_eq!(Op::from_code("r"), Some(Op::Read));
    /// assert_eq!(Op::from_code("x"), None);
    /// ```
    pub fn from_code(code: &str) -> Option<Op> {
        Some(match code {
            "c" => Op::Create,
            "u" => Op::Update,
            "d" => Op::Delete,
            "r" => Op::Read,
            "t" => Op::Truncate,
            "m" => Op::Message,
            _ => return None,
        })
    }

    /// Debezium's one-letter code.
    pub fn code(self) -> &'static str {
        match self {
            Op::Create => "c",
            Op::Update => "u",
            Op::Delete => "d",
            Op::Read => "r",
            Op::Truncate => "t",
            Op::Message => "m",
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// `source.snapshot`: whether (and where in) a snapshot the event was read.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Snapshot {
    /// `false` (or absent): streamed from the WAL.
    #[default]
    No,
    /// `true`: a snapshot read.
    Yes,
    /// `first`: the first record of the snapshot.
    First,
    /// `first_in_data_collection`: the first record of a table in the snapshot.
    FirstInDataCollection,
    /// `last_in_data_collection`: the last record of a table in the snapshot.
    LastInDataCollection,
    /// `last`: the last record of the snapshot.
    Last,
    /// `incremental`: an incremental (signalled) snapshot read.
    Incremental,
    /// A value this version does not know.
    Other(String),
}

impl Snapshot {
    /// Parses the `source.snapshot` text.
    ///
    /// ```
    /// use cqrs_projection::Snapshot;
    ///
    /// assert_eq!(Snapshot::parse("last"), Snapshot::Last);
    /// assert!(Snapshot::parse("incremental").is_snapshot());
    /// assert!(!Snapshot::parse("false").is_snapshot());
    /// ```
    pub fn parse(text: &str) -> Snapshot {
        match text {
            "false" | "" => Snapshot::No,
            "true" => Snapshot::Yes,
            "first" => Snapshot::First,
            "first_in_data_collection" => Snapshot::FirstInDataCollection,
            "last_in_data_collection" => Snapshot::LastInDataCollection,
            "last" => Snapshot::Last,
            "incremental" => Snapshot::Incremental,
            other => Snapshot::Other(other.to_owned()),
        }
    }

    /// True for every snapshot marker except [`Snapshot::No`].
    pub fn is_snapshot(&self) -> bool {
        *self != Snapshot::No
    }
}

/// The `source` block.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Source {
    /// Debezium version.
    pub version: Option<String>,
    /// Connector type (`postgresql`).
    pub connector: Option<String>,
    /// Logical server name (topic prefix).
    pub name: Option<String>,
    /// Database.
    pub db: Option<String>,
    /// Schema.
    pub schema: Option<String>,
    /// Table.
    pub table: Option<String>,
    /// Log sequence number of the change (for snapshot reads: the snapshot's LSN).
    pub lsn: Option<u64>,
    /// PostgreSQL transaction id.
    pub tx_id: Option<i64>,
    /// `xmin`, when present.
    pub xmin: Option<i64>,
    /// When the change was made in the database (ms since the epoch).
    pub ts_ms: Option<i64>,
    /// Snapshot marker.
    pub snapshot: Snapshot,
    /// `sequence`: `["<last commit lsn>","<lsn>"]`, as text.
    pub sequence: Option<String>,
}

/// The `transaction` block (`provide.transaction.metadata=true`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransactionInfo {
    /// Transaction id (`"<txId>:<lsn>"`).
    pub id: String,
    /// Position of the event among all events of the transaction.
    pub total_order: Option<i64>,
    /// Position of the event among the transaction's events of this table.
    pub data_collection_order: Option<i64>,
}

/// A row change captured by Debezium from PostgreSQL, with row images as BSON documents
/// (Debezium's semantic types already converted to natural BSON values by the sync-service).
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// The operation.
    pub op: Op,
    /// The record key (the primary key columns), `None` for keyless tables and truncates.
    pub key: Option<Document>,
    /// Row before the change (updates and deletes, with `REPLICA IDENTITY FULL` complete).
    pub before: Option<Document>,
    /// Row after the change (creates, updates, snapshot reads), without the columns listed
    /// in [`Change::unavailable`].
    pub after: Option<Document>,
    /// Columns of `after` that Debezium did not send: unchanged TOASTed values of an update
    /// (its `__debezium_unavailable_value` placeholder, recognised in every shape Debezium
    /// gives it). Their stored values are
    /// still right; a projection must not overwrite them.
    pub unavailable: Vec<String>,
    /// The `source` block.
    pub source: Source,
    /// The `transaction` block, if present.
    pub transaction: Option<TransactionInfo>,
    /// When Debezium processed the event (ms since the epoch).
    pub ts_ms: Option<i64>,
    /// The version read-model writes carry: `position` = LSN, `index` = 0.
    pub version: SourceVersion,
    /// The topic the change came from.
    pub topic: String,
}

impl Change {
    /// Names of the key fields, in key order.
    pub fn key_fields(&self) -> Vec<&str> {
        self.key
            .as_ref()
            .map(|k| k.keys().map(String::as_str).collect())
            .unwrap_or_default()
    }

    /// The row image that identifies the row: `after`, or `before` for deletes.
    pub fn row(&self) -> Option<&Document> {
        self.after.as_ref().or(self.before.as_ref())
    }

    /// A row read by an incremental (signalled) snapshot, the source of a rebuild: it
    /// carries no log position and may only fill in what a read model lacks.
    pub fn is_incremental_snapshot_read(&self) -> bool {
        self.op == Op::Read && self.source.snapshot == Snapshot::Incremental
    }
}
