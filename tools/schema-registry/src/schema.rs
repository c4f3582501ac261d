//! Schema validation and the canonical form used to decide whether two schema texts are the
//! same schema.
//!
//! Confluent gives identical schemas the same id. "Identical" here means: the same schema
//! type, the same references, and the same JSON document once whitespace and the order of
//! object keys are disregarded. The original text is kept for `GET` replies; only the
//! comparison uses the canonical form.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::Value;

use crate::error::RegistryError;

/// The schema type Confluent assumes when a request names none.
pub const AVRO: &str = "AVRO";
/// JSON Schema.
pub const JSON: &str = "JSON";
/// Protocol Buffers.
pub const PROTOBUF: &str = "PROTOBUF";

/// Normalizes the `schemaType` of a request: absent means `AVRO`; the name is upper-cased.
///
/// # Errors
/// [`RegistryError::InvalidSchema`] for a type other than `AVRO`, `JSON` or `PROTOBUF`.
pub fn normalize_type(schema_type: Option<&str>) -> Result<String, RegistryError> {
    let ty = schema_type.unwrap_or(AVRO).to_ascii_uppercase();
    match ty.as_str() {
        AVRO | JSON | PROTOBUF => Ok(ty),
        other => Err(RegistryError::InvalidSchema(format!(
            "unknown schema type '{other}'"
        ))),
    }
}

/// Validates `text` as a schema of `schema_type` and returns its canonical form.
///
/// * `AVRO`: the text must be JSON and parse with `apache-avro`'s parser; `referenced` holds
///   the texts of the schemas it references (they resolve named types).
/// * `JSON`: the text must be JSON (it is not checked against the JSON Schema meta-schema).
/// * `PROTOBUF`: not validated; the canonical form is the trimmed text.
///
/// # Errors
/// [`RegistryError::InvalidSchema`] when the text is not a valid schema of its type.
pub fn canonicalize(
    schema_type: &str,
    text: &str,
    referenced: &[String],
) -> Result<String, RegistryError> {
    match schema_type {
        AVRO => {
            let json: Value = serde_json::from_str(text)
                .map_err(|e| RegistryError::InvalidSchema(format!("not valid JSON: {e}")))?;
            let parsed = if referenced.is_empty() {
                apache_avro::Schema::parse(&json).map(|_| ())
            } else {
                apache_avro::Schema::parse_str_with_list(text, referenced).map(|_| ())
            };
            parsed.map_err(|e| {
                RegistryError::InvalidSchema(format!("not a valid Avro schema: {e}"))
            })?;
            Ok(canonical_json(&json))
        }
        JSON => {
            let json: Value = serde_json::from_str(text)
                .map_err(|e| RegistryError::InvalidSchema(format!("not valid JSON: {e}")))?;
            Ok(canonical_json(&json))
        }
        _ => Ok(text.trim().to_owned()),
    }
}

/// Serializes a JSON value with no insignificant whitespace and object keys sorted, so that
/// two texts of the same document give the same string whatever their formatting.
///
/// Array order is kept: it is significant in Avro (field order, union branch order).
pub fn canonical_json(value: &Value) -> String {
    let mut out = String::new();
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let sorted: BTreeMap<&String, &Value> = map.iter().collect();
            out.push('{');
            for (i, (key, item)) in sorted.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_string(key, out);
                out.push(':');
                write_canonical(item, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        Value::String(s) => write_string(s, out),
        // Null, booleans and numbers have exactly one serde_json rendering.
        other => {
            let _ = write!(out, "{other}");
        }
    }
}

fn write_string(s: &str, out: &mut String) {
    // `Value::String`'s Display renders a correctly escaped JSON string literal.
    let _ = write!(out, "{}", Value::String(s.to_owned()));
}

#[cfg(test)]
mod tests {
    use super::*;

    const RECORD: &str = r#"{"type":"record","name":"A","fields":[{"name":"x","type":"long"}]}"#;

    #[test]
    fn whitespace_and_key_order_do_not_matter() {
        let reordered = r#"{ "name" : "A",
            "fields": [ {"type": "long", "name": "x"} ], "type": "record" }"#;
        assert_eq!(
            canonicalize(AVRO, RECORD, &[]).unwrap(),
            canonicalize(AVRO, reordered, &[]).unwrap()
        );
    }

    #[test]
    fn field_order_matters() {
        let a = r#"{"type":"record","name":"A","fields":[{"name":"x","type":"long"},{"name":"y","type":"int"}]}"#;
        let b = r#"{"type":"record","name":"A","fields":[{"name":"y","type":"int"},{"name":"x","type":"long"}]}"#;
        assert_ne!(
            canonicalize(AVRO, a, &[]).unwrap(),
            canonicalize(AVRO, b, &[]).unwrap()
        );
    }

    #[test]
    fn invalid_avro_is_rejected() {
        for bad in ["not json", r#"{"type":"record"}"#, r#""nosuchtype""#] {
            let err = canonicalize(AVRO, bad, &[]).unwrap_err();
            assert_eq!(err.error_code(), 42201, "{bad}");
        }
    }

    #[test]
    fn primitive_schema_is_valid() {
        assert_eq!(
            canonicalize(AVRO, r#" "string" "#, &[]).unwrap(),
            r#""string""#
        );
    }

    #[test]
    fn references_resolve_named_types() {
        let outer = r#"{"type":"record","name":"B","fields":[{"name":"a","type":"A"}]}"#;
        assert!(canonicalize(AVRO, outer, &[]).is_err());
        assert!(canonicalize(AVRO, outer, &[RECORD.to_owned()]).is_ok());
    }

    #[test]
    fn escapes_survive() {
        let v: Value = serde_json::from_str(r#"{"doc":"a \"q\" \n b","type":"string"}"#).unwrap();
        let c = canonical_json(&v);
        let back: Value = serde_json::from_str(&c).unwrap();
        assert_eq!(back, v);
    }
}
