//! Unchanged TOASTed values: what Debezium sends instead of a column it did not get.
//!
//! PostgreSQL's logical decoding leaves a large (TOASTed) column out of an update that did
//! not change it, unless the table has `REPLICA IDENTITY FULL`. Debezium then puts its
//! `unavailable.value.placeholder` (`__debezium_unavailable_value`) in the column, shaped
//! after the column's type (Debezium's `UnchangedToastedPlaceholder`):
//!
//! | column type | what arrives |
//! |---|---|
//! | text, varchar, json, jsonb, xml, numeric as string, ... | the placeholder string |
//! | bytea | the placeholder's bytes |
//! | text[], varchar[], char[], json[], jsonb[] | `["__debezium_unavailable_value"]` |
//! | bytea[] | `[<the placeholder's bytes>]` |
//! | integer[], date[], bigint[] | the placeholder's 28 byte values as numbers |
//! | uuid[] | `["b68a35a7-17ad-35b3-af2a-ae46edb4545a"]` (Java's name-based UUID of the placeholder) |
//! | hstore | `{"__debezium_unavailable_value": "__debezium_unavailable_value"}` (a map, or that JSON text in `hstore.handling.mode=json`) |
//! | numeric[], real[], double precision[], boolean[], timestamp[] and other arrays | **null** (Debezium sends no placeholder: indistinguishable from a real NULL; use `REPLICA IDENTITY FULL` for such tables) |
//!
//! [`is_unavailable`] recognises every shape, so the envelope stage can leave such columns
//! out of the row image and list them in [`Change::unavailable`](crate::envelope::Change),
//! and projections keep the stored value.

use crate::decode::Datum;

/// Debezium's default `unavailable.value.placeholder`.
pub const UNAVAILABLE_PLACEHOLDER: &str = "__debezium_unavailable_value";

/// `java.util.UUID.nameUUIDFromBytes(UNAVAILABLE_PLACEHOLDER)`: Debezium's `uuid[]` placeholder.
const UNAVAILABLE_UUID: &str = "b68a35a7-17ad-35b3-af2a-ae46edb4545a";

/// True when a column value is Debezium's placeholder for an unchanged TOASTed value, in
/// any of the shapes listed in the module documentation.
///
/// ```
/// use sync_service::decode::Datum;
/// use sync_service::types::{is_unavailable, UNAVAILABLE_PLACEHOLDER};
///
/// assert!(is_unavailable(&Datum::String(UNAVAILABLE_PLACEHOLDER.into())));
/// let codes = UNAVAILABLE_PLACEHOLDER.bytes().map(|b| Datum::Int(i64::from(b))).collect();
/// assert!(is_unavailable(&Datum::Array(codes)));
/// assert!(!is_unavailable(&Datum::Array(vec![Datum::Int(95)])));
/// ```
pub fn is_unavailable(datum: &Datum) -> bool {
    let placeholder = UNAVAILABLE_PLACEHOLDER.as_bytes();
    match datum {
        Datum::String(s) => s == UNAVAILABLE_PLACEHOLDER || is_hstore_json_placeholder(s),
        Datum::Bytes(b) => b == placeholder,
        Datum::Array(items) => match items.as_slice() {
            [Datum::String(s)] => s == UNAVAILABLE_PLACEHOLDER || s == UNAVAILABLE_UUID,
            [Datum::Bytes(b)] => b == placeholder,
            codes if codes.len() == placeholder.len() => codes
                .iter()
                .zip(placeholder)
                .all(|(d, &byte)| matches!(d, Datum::Int(i) if *i == i64::from(byte))),
            _ => false,
        },
        Datum::Map(entries) | Datum::Struct(entries) => matches!(
            entries.as_slice(),
            [(k, Datum::String(v))] if k == UNAVAILABLE_PLACEHOLDER && v == UNAVAILABLE_PLACEHOLDER
        ),
        _ => false,
    }
}

/// hstore in `hstore.handling.mode=json`: the placeholder map as JSON text.
fn is_hstore_json_placeholder(text: &str) -> bool {
    // (cheap checks first: this runs on every string column of every row)
    if text.len() > 2 * UNAVAILABLE_PLACEHOLDER.len() + 64 || !text.starts_with('{') {
        return false;
    }
    let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    compact == format!("{{\"{UNAVAILABLE_PLACEHOLDER}\":\"{UNAVAILABLE_PLACEHOLDER}\"}}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shape_is_recognised() {
        let s = || Datum::String(UNAVAILABLE_PLACEHOLDER.into());
        let b = || Datum::Bytes(UNAVAILABLE_PLACEHOLDER.as_bytes().to_vec());
        assert!(is_unavailable(&s()));
        assert!(is_unavailable(&b()));
        assert!(is_unavailable(&Datum::Array(vec![s()])));
        assert!(is_unavailable(&Datum::Array(vec![b()])));
        assert!(is_unavailable(&Datum::Array(vec![Datum::String(
            UNAVAILABLE_UUID.into()
        )])));
        assert!(is_unavailable(&Datum::Map(vec![(
            UNAVAILABLE_PLACEHOLDER.into(),
            s()
        )])));
        assert!(is_unavailable(&Datum::String(format!(
            "{{\"{UNAVAILABLE_PLACEHOLDER}\": \"{UNAVAILABLE_PLACEHOLDER}\"}}"
        ))));
        assert!(!is_unavailable(&Datum::Array(vec![s(), s()])));
        assert!(!is_unavailable(&Datum::String("__debezium".into())));
        assert!(!is_unavailable(&Datum::Null));
    }
}
