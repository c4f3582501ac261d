//! Kafka Connect `JsonConverter` messages, with (`{"schema":..,"payload":..}`) and without
//! (`schemas.enable=false`) embedded schemas.

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;

use super::error::{DecodeError, Part};
use super::{ConnectSchema, ConnectType, Datum};

/// Which JSON shape to expect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum JsonShape {
    /// `{"schema":..., "payload":...}`.
    WithSchema,
    /// The payload alone.
    Schemaless,
    /// With schema when the object has exactly the keys `schema` and `payload`.
    Detect,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WithSchema {
    schema: Option<serde_json::Value>,
    payload: Datum,
}

/// Decodes a Connect JSON message into a datum shaped by its schema (if any).
pub(crate) fn decode_json(
    part: Part,
    bytes: &[u8],
    shape: JsonShape,
) -> Result<(Datum, Option<Arc<ConnectSchema>>), DecodeError> {
    let not_json = |e: serde_json::Error| DecodeError::NotJson {
        part,
        detail: e.to_string(),
    };
    let invalid = |detail: String| DecodeError::InvalidConnectJson { part, detail };
    let with_schema = match shape {
        JsonShape::Schemaless => None,
        JsonShape::WithSchema => {
            Some(serde_json::from_slice::<WithSchema>(bytes).map_err(|e| {
                if e.is_data() {
                    invalid(format!("expected {{\"schema\":..., \"payload\":...}}: {e}"))
                } else {
                    not_json(e)
                }
            })?)
        }
        JsonShape::Detect => {
            let datum = Datum::from_json_slice(bytes).map_err(not_json)?;
            let names = datum.field_names();
            if names.len() == 2 && names.contains(&"schema") && names.contains(&"payload") {
                Some(serde_json::from_slice::<WithSchema>(bytes).map_err(not_json)?)
            } else {
                return Ok((datum, None));
            }
        }
    };
    match with_schema {
        None => Ok((Datum::from_json_slice(bytes).map_err(not_json)?, None)),
        Some(WithSchema {
            schema: None,
            payload,
        }) => Ok((payload, None)),
        Some(WithSchema {
            schema: Some(schema),
            payload,
        }) => {
            let schema = ConnectSchema::from_connect_json(&schema).map_err(|e| invalid(e.0))?;
            let datum = shape_datum(payload, &schema, "").map_err(invalid)?;
            Ok((datum, Some(Arc::new(schema))))
        }
    }
}

/// Shapes a JSON datum after its Connect schema: structs in schema order, base64 bytes
/// decoded, maps with non-string keys (arrays of pairs) turned into maps.
fn shape_datum(datum: Datum, schema: &ConnectSchema, path: &str) -> Result<Datum, String> {
    let at = |p: &str| {
        if p.is_empty() {
            "payload".to_owned()
        } else {
            p.to_owned()
        }
    };
    match (&schema.ty, datum) {
        (_, Datum::Null) => Ok(Datum::Null),
        (ConnectType::Struct(fields), Datum::Struct(mut values)) => {
            let mut out = Vec::with_capacity(fields.len());
            for field in fields {
                let value = match values.iter().position(|(n, _)| *n == field.name) {
                    Some(i) => values.swap_remove(i).1,
                    None => Datum::Null,
                };
                let path = format!("{path}.{}", field.name);
                out.push((
                    field.name.clone(),
                    shape_datum(value, &field.schema, path.trim_start_matches('.'))?,
                ));
            }
            Ok(Datum::Struct(out))
        }
        (ConnectType::Array(items), Datum::Array(values)) => Ok(Datum::Array(
            values
                .into_iter()
                .enumerate()
                .map(|(i, v)| shape_datum(v, items, &format!("{}[{i}]", at(path))))
                .collect::<Result<_, _>>()?,
        )),
        (ConnectType::Map(values), Datum::Struct(entries)) => Ok(Datum::Map(
            entries
                .into_iter()
                .map(|(k, v)| {
                    let p = format!("{}.{k}", at(path));
                    Ok((k, shape_datum(v, values, &p)?))
                })
                .collect::<Result<_, String>>()?,
        )),
        (ConnectType::Map(values), Datum::Array(pairs)) => {
            let mut out = Vec::with_capacity(pairs.len());
            for pair in pairs {
                let Datum::Array(mut kv) = pair else {
                    return Err(format!(
                        "{}: map entry is not a [key, value] pair",
                        at(path)
                    ));
                };
                if kv.len() != 2 {
                    return Err(format!(
                        "{}: map entry is not a [key, value] pair",
                        at(path)
                    ));
                }
                let v = kv.pop().unwrap_or(Datum::Null);
                let k = kv.pop().unwrap_or(Datum::Null);
                let k = match k {
                    Datum::String(s) => s,
                    Datum::Int(i) => i.to_string(),
                    Datum::Float(f) => f.to_string(),
                    Datum::Boolean(b) => b.to_string(),
                    other => {
                        return Err(format!(
                            "{}: unsupported map key {}",
                            at(path),
                            other.kind()
                        ));
                    }
                };
                let p = format!("{}.{k}", at(path));
                out.push((k, shape_datum(v, values, &p)?));
            }
            Ok(Datum::Map(out))
        }
        (ConnectType::Bytes, Datum::String(b64)) => STANDARD
            .decode(b64.as_bytes())
            .map(Datum::Bytes)
            .map_err(|e| format!("{}: bytes are not base64: {e}", at(path))),
        // Decimals with `decimal.format=NUMERIC` arrive as JSON numbers.
        (ConnectType::Bytes, d @ (Datum::Int(_) | Datum::Float(_))) => Ok(d),
        (ConnectType::Float32 | ConnectType::Float64, Datum::Int(i)) => Ok(Datum::Float(i as f64)),
        (
            ConnectType::Int8 | ConnectType::Int16 | ConnectType::Int32 | ConnectType::Int64,
            d @ Datum::Int(_),
        )
        | (ConnectType::Float32 | ConnectType::Float64, d @ Datum::Float(_))
        | (ConnectType::Boolean, d @ Datum::Boolean(_))
        | (ConnectType::String, d @ Datum::String(_)) => Ok(d),
        (ty, d) => Err(format!(
            "{}: {} does not match schema type {ty:?}",
            at(path),
            d.kind()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_payload_by_schema() {
        let bytes = br#"{"schema":{"type":"struct","optional":false,"fields":[
            {"type":"bytes","optional":true,"field":"b"},
            {"type":"int32","optional":false,"field":"a"},
            {"type":"map","keys":{"type":"int32"},"values":{"type":"string"},"optional":true,"field":"m"}]},
            "payload":{"a":1,"b":"AQI=","m":[[1,"x"]]}}"#;
        let (d, s) = decode_json(Part::Value, bytes, JsonShape::Detect).unwrap();
        assert!(s.is_some());
        assert_eq!(
            d,
            Datum::Struct(vec![
                ("b".into(), Datum::Bytes(vec![1, 2])),
                ("a".into(), Datum::Int(1)),
                (
                    "m".into(),
                    Datum::Map(vec![("1".into(), Datum::String("x".into()))])
                ),
            ])
        );
    }

    #[test]
    fn errors_name_the_problem() {
        let e = decode_json(Part::Key, b"{nope", JsonShape::Schemaless).unwrap_err();
        assert!(matches!(
            e,
            DecodeError::NotJson {
                part: Part::Key,
                ..
            }
        ));
        let e = decode_json(Part::Value, br#"{"a":1}"#, JsonShape::WithSchema).unwrap_err();
        assert!(matches!(e, DecodeError::InvalidConnectJson { .. }), "{e}");
        let e = decode_json(
            Part::Value,
            br#"{"schema":{"type":"int32"},"payload":"x"}"#,
            JsonShape::WithSchema,
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("payload: string does not match"),
            "{e}"
        );
    }
}
