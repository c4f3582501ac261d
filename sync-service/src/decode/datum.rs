//! The format-independent decoded value.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

/// A decoded value, independent of the wire format (Avro or JSON).
///
/// Semantics (is this `Int` a date? are these `Bytes` a decimal?) come from the
/// [`ConnectSchema`](super::ConnectSchema) that travels next to it; the [`types`](crate::types)
/// stage turns both into BSON.
///
/// Avro logical values are lowered to their underlying representation: `date` to days
/// (`Int`), `timestamp-millis` to milliseconds (`Int`), `decimal` to the unscaled
/// big-endian two's-complement bytes (`Bytes`), enums and UUIDs to `String`.
///
/// ```
/// use sync_service::decode::Datum;
///
/// let row = Datum::Struct(vec![("id".into(), Datum::Int(7))]);
/// assert_eq!(row.get("id"), Some(&Datum::Int(7)));
/// assert!(row.get("missing").is_none());
/// ```
#[derive(Debug, Clone, PartialEq)]
pub enum Datum {
    /// Null / absent.
    Null,
    /// A boolean.
    Boolean(bool),
    /// Any integer width (int8 .. int64).
    Int(i64),
    /// Any float width (a `float32` is widened exactly).
    Float(f64),
    /// A string.
    String(String),
    /// Raw bytes.
    Bytes(Vec<u8>),
    /// An array.
    Array(Vec<Datum>),
    /// A map with string keys (non-string keys are rendered as strings).
    Map(Vec<(String, Datum)>),
    /// A struct / record / JSON object, fields in order.
    Struct(Vec<(String, Datum)>),
}

impl Datum {
    /// The field `name` of a struct or map, `None` for other values.
    pub fn get(&self, name: &str) -> Option<&Datum> {
        match self {
            Datum::Struct(fields) | Datum::Map(fields) => {
                fields.iter().find(|(n, _)| n == name).map(|(_, v)| v)
            }
            _ => None,
        }
    }

    /// True for [`Datum::Null`].
    pub fn is_null(&self) -> bool {
        matches!(self, Datum::Null)
    }

    /// The string, if this is a string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Datum::String(s) => Some(s),
            _ => None,
        }
    }

    /// The integer, if this is an integer.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Datum::Int(i) => Some(*i),
            _ => None,
        }
    }

    /// The field names of a struct or map (empty for other values).
    pub fn field_names(&self) -> Vec<&str> {
        match self {
            Datum::Struct(fields) | Datum::Map(fields) => {
                fields.iter().map(|(n, _)| n.as_str()).collect()
            }
            _ => Vec::new(),
        }
    }

    /// A short name of the variant, for error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Datum::Null => "null",
            Datum::Boolean(_) => "boolean",
            Datum::Int(_) => "integer",
            Datum::Float(_) => "float",
            Datum::String(_) => "string",
            Datum::Bytes(_) => "bytes",
            Datum::Array(_) => "array",
            Datum::Map(_) => "map",
            Datum::Struct(_) => "struct",
        }
    }

    /// Parses JSON text into a datum, keeping object keys in document order
    /// (objects become [`Datum::Struct`]).
    ///
    /// ```
    /// use sync_service::decode::Datum;
    ///
    /// let d = Datum::from_json_slice(br#"{"b":1,"a":[true,null,1.5]}"#).unwrap();
    /// assert_eq!(d.field_names(), vec!["b", "a"]);
    /// ```
    pub fn from_json_slice(bytes: &[u8]) -> Result<Datum, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

impl<'de> Deserialize<'de> for Datum {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(DatumVisitor)
    }
}

struct DatumVisitor;

impl<'de> Visitor<'de> for DatumVisitor {
    type Value = Datum;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_unit<E: de::Error>(self) -> Result<Datum, E> {
        Ok(Datum::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<Datum, E> {
        Ok(Datum::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Datum, D::Error> {
        Datum::deserialize(d)
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Datum, E> {
        Ok(Datum::Boolean(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Datum, E> {
        Ok(Datum::Int(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Datum, E> {
        Ok(match i64::try_from(v) {
            Ok(i) => Datum::Int(i),
            Err(_) => Datum::Float(v as f64),
        })
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Datum, E> {
        Ok(Datum::Float(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Datum, E> {
        Ok(Datum::String(v.to_owned()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Datum, E> {
        Ok(Datum::String(v))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Datum, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(item) = seq.next_element::<Datum>()? {
            items.push(item);
        }
        Ok(Datum::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Datum, A::Error> {
        let mut fields = Vec::with_capacity(map.size_hint().unwrap_or(0));
        while let Some((k, v)) = map.next_entry::<String, Datum>()? {
            fields.push((k, v));
        }
        Ok(Datum::Struct(fields))
    }
}
