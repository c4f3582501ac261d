//! Reading the toolkit's own tables out of a captured row.
//!
//! `cqrs-postgres` writes aggregate states, event payloads and metadata as `jsonb`, which
//! the sync-service delivers as BSON with every JSON number exact. They are turned back
//! into the `serde_json::Value` the command side serialized ([`to_json`]) and deserialized
//! from there, through the same serde path as the command side's own loads.

use bson::{Bson, Document};
use serde::de::DeserializeOwned;
use serde_json::{Number, Value};

use crate::change::Change;
use crate::error::ProjectionError;

/// `schema.table` of a change, for error messages.
pub(crate) fn table_of(change: &Change) -> String {
    format!(
        "{}.{}",
        change.source.schema.as_deref().unwrap_or("?"),
        change.source.table.as_deref().unwrap_or("?")
    )
}

/// Typed access to the columns of one row image.
pub(crate) struct Row<'a> {
    pub(crate) doc: &'a Document,
    pub(crate) table: String,
}

impl<'a> Row<'a> {
    pub(crate) fn new(change: &Change, doc: &'a Document) -> Self {
        Row {
            doc,
            table: table_of(change),
        }
    }

    fn error(&self, column: &'static str, message: impl Into<String>) -> ProjectionError {
        ProjectionError::Row {
            table: self.table.clone(),
            column,
            message: message.into(),
        }
    }

    pub(crate) fn get(&self, column: &'static str) -> Option<&'a Bson> {
        self.doc.get(column).filter(|b| !matches!(b, Bson::Null))
    }

    pub(crate) fn str(&self, column: &'static str) -> Result<&'a str, ProjectionError> {
        match self.get(column) {
            Some(Bson::String(s)) => Ok(s),
            Some(other) => Err(self.error(column, format!("expected text, found {other}"))),
            None => Err(self.error(column, "missing")),
        }
    }

    pub(crate) fn u64(&self, column: &'static str) -> Result<u64, ProjectionError> {
        let n = match self.get(column) {
            Some(Bson::Int64(n)) => *n,
            Some(Bson::Int32(n)) => i64::from(*n),
            Some(other) => {
                return Err(self.error(column, format!("expected an integer, found {other}")));
            }
            None => return Err(self.error(column, "missing")),
        };
        u64::try_from(n).map_err(|_| self.error(column, format!("negative: {n}")))
    }

    pub(crate) fn uuid(&self, column: &'static str) -> Result<uuid::Uuid, ProjectionError> {
        match self.get(column) {
            Some(Bson::Binary(b)) => {
                uuid::Uuid::from_slice(&b.bytes).map_err(|e| self.error(column, e.to_string()))
            }
            Some(Bson::String(s)) => {
                uuid::Uuid::parse_str(s).map_err(|e| self.error(column, e.to_string()))
            }
            Some(other) => Err(self.error(column, format!("expected a UUID, found {other}"))),
            None => Err(self.error(column, "missing")),
        }
    }

    pub(crate) fn time(
        &self,
        column: &'static str,
    ) -> Result<chrono::DateTime<chrono::Utc>, ProjectionError> {
        match self.get(column) {
            Some(Bson::DateTime(d)) => Ok(d.to_chrono()),
            Some(Bson::String(s)) => chrono::DateTime::parse_from_rfc3339(s)
                .map(|t| t.with_timezone(&chrono::Utc))
                .map_err(|e| self.error(column, e.to_string())),
            Some(other) => Err(self.error(column, format!("expected a timestamp, found {other}"))),
            None => Err(self.error(column, "missing")),
        }
    }

    /// A `jsonb` column as JSON (`None` for SQL NULL).
    pub(crate) fn json(&self, column: &'static str) -> Option<Value> {
        self.get(column).map(to_json)
    }
}

/// Deserializes JSON into `T`, naming the field serde stopped at.
pub(crate) fn deserialize<T: DeserializeOwned>(
    value: Value,
    what: impl Into<String>,
    aggregate_type: &str,
    aggregate_id: &str,
) -> Result<T, ProjectionError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        ProjectionError::Deserialize {
            what: what.into(),
            aggregate_type: aggregate_type.to_owned(),
            aggregate_id: aggregate_id.to_owned(),
            type_name: std::any::type_name::<T>(),
            message: if path == "." {
                e.into_inner().to_string()
            } else {
                format!("field `{path}`: {}", e.into_inner())
            },
        }
    })
}

/// BSON that came from JSON back to JSON: what `serde_json` would have parsed from the same
/// text (integers as `i64`/`u64`, other numbers as `f64`; exact Decimal128 values of the
/// sync-service become the number `serde_json` reads for their text).
///
/// ```
/// use cqrs_projection::to_json;
/// let b = bson::bson!({ "a": 1, "b": [2.5, "x", null], "big": bson::Bson::Decimal128("18446744073709551615".parse().unwrap()) });
/// assert_eq!(to_json(&b), serde_json::json!({ "a": 1, "b": [2.5, "x", null], "big": 18446744073709551615u64 }));
/// ```
pub fn to_json(b: &Bson) -> Value {
    match b {
        Bson::Null | Bson::Undefined => Value::Null,
        Bson::Boolean(v) => Value::Bool(*v),
        Bson::Int32(v) => Value::from(*v),
        Bson::Int64(v) => Value::from(*v),
        Bson::Double(v) => Number::from_f64(*v).map_or(Value::Null, Value::Number),
        Bson::Decimal128(d) => {
            let text = d.to_string();
            serde_json::from_str::<Value>(&text).unwrap_or(Value::String(text))
        }
        Bson::String(s) => Value::String(s.clone()),
        Bson::Array(items) => Value::Array(items.iter().map(to_json).collect()),
        Bson::Document(d) => {
            Value::Object(d.iter().map(|(k, v)| (k.clone(), to_json(v))).collect())
        }
        Bson::DateTime(d) => Value::String(d.to_chrono().to_rfc3339()),
        other => Value::String(other.to_string()),
    }
}
