//! Debezium's notifications about an incremental snapshot (`notification.enabled.channels =
//! sink`): `{id, aggregate_type: "Incremental Snapshot", type, additional_data, timestamp}`,
//! `id` being the signal's. `type` goes `STARTED`, `IN_PROGRESS` (one per chunk, with
//! `last_processed_key` and `maximum_key`), `TABLE_SCAN_COMPLETED` (with
//! `total_rows_scanned`), then `COMPLETED`, or `ABORTED` / `PAUSED` / `RESUMED`.

use std::collections::BTreeMap;

use crate::decode::Datum;

/// One notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    /// The signal id.
    pub id: String,
    /// `Incremental Snapshot`, `Initial Snapshot`, ...
    pub aggregate_type: String,
    /// `STARTED`, `IN_PROGRESS`, `TABLE_SCAN_COMPLETED`, `COMPLETED`, `ABORTED`, ...
    pub kind: String,
    /// Details (`data_collections`, `last_processed_key`, `total_rows_scanned`, ...).
    pub data: BTreeMap<String, String>,
}

impl Notification {
    /// Reads a decoded notification value; `None` when it is not one.
    ///
    /// ```
    /// use sync_service::decode::Datum;
    /// use sync_service::rebuild::Notification;
    ///
    /// let value = Datum::Struct(vec![
    ///     ("id".into(), Datum::String("rb-1".into())),
    ///     ("aggregate_type".into(), Datum::String("Incremental Snapshot".into())),
    ///     ("type".into(), Datum::String("COMPLETED".into())),
    ///     ("additional_data".into(), Datum::Map(vec![
    ///         ("connector_name".into(), Datum::String("cqrs".into())),
    ///     ])),
    /// ]);
    /// let n = Notification::from_datum(&value).unwrap();
    /// assert!(n.is_incremental() && n.kind == "COMPLETED");
    /// assert_eq!(n.data["connector_name"], "cqrs");
    /// ```
    pub fn from_datum(value: &Datum) -> Option<Notification> {
        let text = |name: &str| value.get(name).and_then(Datum::as_str).map(str::to_owned);
        let mut data = BTreeMap::new();
        if let Some(Datum::Map(entries) | Datum::Struct(entries)) = value.get("additional_data") {
            for (k, v) in entries {
                if let Some(s) = v.as_str() {
                    data.insert(k.clone(), s.to_owned());
                }
            }
        }
        Some(Notification {
            id: text("id")?,
            aggregate_type: text("aggregate_type")?,
            kind: text("type")?,
            data,
        })
    }

    /// About an incremental snapshot.
    pub fn is_incremental(&self) -> bool {
        self.aggregate_type == "Incremental Snapshot"
    }
}

/// What the notifications of one signal say so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SnapshotReport {
    /// The connector started it.
    pub started: bool,
    /// The connector completed it.
    pub completed: bool,
    /// The connector aborted it (a stop signal, or a failure).
    pub aborted: bool,
    /// Rows scanned per table whose scan completed.
    pub scanned: BTreeMap<String, u64>,
    /// The last chunk's key and the table's largest key (text, as Debezium prints them).
    pub last_key: Option<(String, String)>,
}

impl SnapshotReport {
    /// Adds one notification (of any signal: others are ignored).
    ///
    /// ```
    /// use std::collections::BTreeMap;
    /// use sync_service::rebuild::{Notification, SnapshotReport};
    ///
    /// let n = |kind: &str, data: &[(&str, &str)]| Notification {
    ///     id: "rb-1".into(),
    ///     aggregate_type: "Incremental Snapshot".into(),
    ///     kind: kind.into(),
    ///     data: data.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
    /// };
    /// let mut report = SnapshotReport::default();
    /// report.add("rb-1", &n("STARTED", &[]));
    /// report.add("rb-1", &n("IN_PROGRESS", &[("last_processed_key", "500"), ("maximum_key", "3000")]));
    /// report.add("rb-1", &n("TABLE_SCAN_COMPLETED", &[("scanned_collection", "app.items"), ("total_rows_scanned", "3000")]));
    /// report.add("rb-2", &n("ABORTED", &[]));
    /// report.add("rb-1", &n("COMPLETED", &[]));
    /// assert!(report.completed && !report.aborted);
    /// assert_eq!(report.scanned["app.items"], 3000);
    /// assert_eq!(report.fraction_of_keys(), Some(500.0 / 3000.0));
    /// ```
    pub fn add(&mut self, signal: &str, n: &Notification) {
        if n.id != signal || !n.is_incremental() {
            return;
        }
        match n.kind.as_str() {
            "STARTED" => self.started = true,
            "IN_PROGRESS" => {
                self.started = true;
                if let (Some(last), Some(max)) =
                    (n.data.get("last_processed_key"), n.data.get("maximum_key"))
                {
                    self.last_key = Some((last.clone(), max.clone()));
                }
            }
            "TABLE_SCAN_COMPLETED" => {
                if let (Some(table), Some(rows)) = (
                    n.data.get("scanned_collection"),
                    n.data
                        .get("total_rows_scanned")
                        .and_then(|r| r.parse().ok()),
                ) {
                    self.scanned.insert(table.clone(), rows);
                }
            }
            "COMPLETED" => self.completed = true,
            "ABORTED" => self.aborted = true,
            _ => {}
        }
    }

    /// How far the current table's scan is by key, when its keys are numbers (Debezium
    /// prints a key as `[1234]` or `1234`).
    pub fn fraction_of_keys(&self) -> Option<f64> {
        let (last, max) = self.last_key.as_ref()?;
        let number = |s: &str| s.trim_matches(|c| c == '[' || c == ']').parse::<f64>().ok();
        let (last, max) = (number(last)?, number(max)?);
        (max > 0.0).then(|| (last / max).clamp(0.0, 1.0))
    }
}
