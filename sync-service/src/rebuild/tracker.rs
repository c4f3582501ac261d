//! Service side of rebuilds: counting the incremental snapshot rows the pipeline applies,
//! per source table, until they are added to the running rebuilds' records.

use std::collections::BTreeMap;
use std::sync::Mutex;

use crate::metrics::{Metrics, TableLabel};

/// Snapshot rows applied since the last [`SnapshotRows::take`], per table.
///
/// ```
/// use sync_service::rebuild::SnapshotRows;
///
/// let rows = SnapshotRows::default();
/// rows.count("shop.orders", 2);
/// rows.count("shop.orders", 1);
/// assert_eq!(rows.take()["shop.orders"], 3);
/// assert!(rows.take().is_empty());
/// ```
#[derive(Debug, Default)]
pub struct SnapshotRows {
    pending: Mutex<BTreeMap<String, u64>>,
}

impl SnapshotRows {
    /// Counts `n` rows of `table`.
    pub fn count(&self, table: &str, n: u64) {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        *pending.entry(table.to_owned()).or_default() += n;
    }

    /// The counts since the last call (and resets them).
    pub fn take(&self) -> BTreeMap<String, u64> {
        std::mem::take(&mut *self.pending.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Puts counts back (their records could not be updated: the next flush adds them).
    pub fn restore(&self, counts: BTreeMap<String, u64>) {
        for (table, n) in counts {
            self.count(&table, n);
        }
    }

    /// Counts `n` rows of `table` here and in `metrics`.
    pub fn applied(&self, metrics: &Metrics, table: &str, n: u64) {
        self.count(table, n);
        metrics
            .snapshot_rows
            .get_or_create(&TableLabel {
                table: table.to_owned(),
            })
            .inc_by(n);
    }
}
