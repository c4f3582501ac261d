//! The record of one rebuild (`[rebuild] collection`, `_sync_rebuilds` by default): what
//! is rebuilt from which tables, how far it got. Every step moves `state` forward with a
//! conditional update, so the command and any number of service instances may advance the
//! same rebuild: one wins each step, the others find it done.

use std::collections::BTreeMap;

use bson::DateTime;
use serde::{Deserialize, Serialize};

/// Where a rebuild is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RebuildState {
    /// The new version exists and receives every change; waiting for every writer to know
    /// it before the snapshot is signalled.
    Settling,
    /// The connector snapshots the tables; their rows fill the new version.
    Snapshotting,
    /// The connector reported the snapshot complete; waiting for its last rows to reach
    /// the topics.
    Completed,
    /// Waiting for the service to have applied the topics up to their ends of then.
    CatchingUp,
    /// Readers read the new version.
    Switched,
    /// Cancelled: the new version was dropped, the live one never changed.
    Cancelled,
    /// The connector aborted the snapshot; cancel and start again.
    Failed,
}

impl RebuildState {
    /// Still running (not switched, cancelled or failed).
    pub fn is_active(self) -> bool {
        matches!(
            self,
            RebuildState::Settling
                | RebuildState::Snapshotting
                | RebuildState::Completed
                | RebuildState::CatchingUp
        )
    }

    /// The name stored and printed.
    pub fn as_str(self) -> &'static str {
        match self {
            RebuildState::Settling => "settling",
            RebuildState::Snapshotting => "snapshotting",
            RebuildState::Completed => "completed",
            RebuildState::CatchingUp => "catching_up",
            RebuildState::Switched => "switched",
            RebuildState::Cancelled => "cancelled",
            RebuildState::Failed => "failed",
        }
    }
}

/// The end of one partition the service must have applied before the switch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionEnd {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Next offset of the partition when the snapshot's rows were all in it.
    pub offset: i64,
}

/// One rebuild.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RebuildRecord {
    /// `database.read_model`.
    #[serde(rename = "_id")]
    pub id: String,
    /// Database of the read model.
    pub database: String,
    /// The read model's name (its view).
    pub read_model: String,
    /// The physical collection being built.
    pub building: String,
    /// Source tables (`schema.table`).
    pub tables: Vec<String>,
    /// Their change topics.
    pub topics: Vec<String>,
    /// Id of the execute-snapshot signal (the connector's notifications carry it).
    pub signal_id: String,
    /// Where it is.
    pub state: RebuildState,
    /// When it began.
    pub started_at: DateTime,
    /// When the snapshot was signalled.
    #[serde(default)]
    pub signalled_at: Option<DateTime>,
    /// When the connector reported it complete.
    #[serde(default)]
    pub completed_at: Option<DateTime>,
    /// When readers moved to the new version.
    #[serde(default)]
    pub switched_at: Option<DateTime>,
    /// Snapshot rows the service instances applied (counted when applied: a row
    /// redelivered after a crash counts twice).
    #[serde(default)]
    pub rows: i64,
    /// The planner's estimate of the tables' rows, when known.
    #[serde(default)]
    pub estimate: Option<i64>,
    /// Rows the connector scanned, per table whose scan completed.
    #[serde(default)]
    pub scanned: BTreeMap<String, i64>,
    /// How far the current table's scan is by key (numeric keys only).
    #[serde(default)]
    pub key_fraction: Option<f64>,
    /// Partition ends to reach before the switch.
    #[serde(default)]
    pub catch_up: Vec<PartitionEnd>,
    /// Why it failed.
    #[serde(default)]
    pub error: Option<String>,
}

impl RebuildRecord {
    /// The record id of read model `name` of `database`.
    ///
    /// ```
    /// assert_eq!(sync_service::rebuild::RebuildRecord::key("shop", "orders"), "shop.orders");
    /// ```
    pub fn key(database: &str, name: &str) -> String {
        format!("{database}.{name}")
    }

    /// Rows received against the estimate, between 0 and 1, when there is one.
    pub fn fraction(&self) -> Option<f64> {
        let estimate = self.estimate.filter(|e| *e > 0)?;
        Some((self.rows as f64 / estimate as f64).clamp(0.0, 1.0))
    }
}
