//! Kafka Connect schemas, read from a raw Avro schema (as registered by Confluent's
//! `AvroConverter`) or from the `schema` part of a Kafka Connect JSON message.
//!
//! The raw Avro JSON is read directly instead of apache-avro's parsed [`apache_avro::Schema`]
//! because the parser drops `connect.name` / `connect.parameters` on primitive types
//! (apache/avro-rs #368), and those carry Debezium's semantic types.

use std::collections::{BTreeMap, HashMap};

use serde_json::{Map, Value as Json};

/// The Kafka Connect type of a schema (the physical type; [`ConnectSchema::name`] carries the
/// semantic type).
#[derive(Debug, Clone, PartialEq)]
pub enum ConnectType {
    /// 8-bit integer.
    Int8,
    /// 16-bit integer.
    Int16,
    /// 32-bit integer (Avro `int`).
    Int32,
    /// 64-bit integer (Avro `long`).
    Int64,
    /// 32-bit float.
    Float32,
    /// 64-bit float.
    Float64,
    /// Boolean.
    Boolean,
    /// UTF-8 string (also Avro enums).
    String,
    /// Bytes (also Avro `fixed`).
    Bytes,
    /// Array of `items`.
    Array(Box<ConnectSchema>),
    /// Map with string keys.
    Map(Box<ConnectSchema>),
    /// Struct with named fields, in order.
    Struct(Vec<Field>),
}

/// A named field of a struct schema.
#[derive(Debug, Clone, PartialEq)]
pub struct Field {
    /// Field name.
    pub name: String,
    /// Field schema.
    pub schema: ConnectSchema,
}

/// A Kafka Connect schema: physical type, semantic name, parameters, optionality, plus the
/// Avro logical type and decimal scale when the schema came from Avro.
///
/// ```
/// use sync_service::decode::{ConnectSchema, ConnectType};
///
/// let raw = r#"{"type":"int","connect.version":1,"connect.name":"io.debezium.time.Date"}"#;
/// let schema = ConnectSchema::from_avro_json(raw).unwrap();
/// assert_eq!(schema.ty, ConnectType::Int32);
/// assert_eq!(schema.name.as_deref(), Some("io.debezium.time.Date"));
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct ConnectSchema {
    /// Physical type.
    pub ty: ConnectType,
    /// Semantic name (`connect.name`, the Connect JSON `name`, or an Avro record's full name).
    pub name: Option<String>,
    /// `connect.parameters` / Connect JSON `parameters`.
    pub parameters: BTreeMap<String, String>,
    /// Whether null is allowed.
    pub optional: bool,
    /// Avro `logicalType`, if any (`date`, `decimal`, `timestamp-millis`, ...).
    pub logical_type: Option<String>,
    /// Avro decimal `scale` attribute, if any.
    pub avro_scale: Option<i64>,
}

/// A schema that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid schema: {0}")]
pub struct SchemaError(pub String);

impl ConnectSchema {
    /// A schema of type `ty` with no name or parameters.
    pub fn new(ty: ConnectType) -> Self {
        ConnectSchema {
            ty,
            name: None,
            parameters: BTreeMap::new(),
            optional: false,
            logical_type: None,
            avro_scale: None,
        }
    }

    /// The schema of struct field `name`.
    pub fn field(&self, name: &str) -> Option<&ConnectSchema> {
        match &self.ty {
            ConnectType::Struct(fields) => {
                fields.iter().find(|f| f.name == name).map(|f| &f.schema)
            }
            _ => None,
        }
    }

    /// The semantic name, or `""`.
    pub fn name_str(&self) -> &str {
        self.name.as_deref().unwrap_or("")
    }

    /// A parameter value.
    pub fn parameter(&self, key: &str) -> Option<&str> {
        self.parameters.get(key).map(String::as_str)
    }

    /// Reads a raw Avro schema (JSON text) as registered by Confluent's `AvroConverter`.
    pub fn from_avro_json(raw: &str) -> Result<ConnectSchema, SchemaError> {
        let json: Json = serde_json::from_str(raw)
            .map_err(|e| SchemaError(format!("schema is not JSON: {e}")))?;
        AvroReader::default().read(&json, None)
    }

    /// Reads the `schema` part of a Kafka Connect JSON message (`schemas.enable=true`).
    pub fn from_connect_json(json: &Json) -> Result<ConnectSchema, SchemaError> {
        let obj = json
            .as_object()
            .ok_or_else(|| SchemaError("a Connect schema must be an object".into()))?;
        let ty = obj
            .get("type")
            .and_then(Json::as_str)
            .ok_or_else(|| SchemaError("Connect schema without \"type\"".into()))?;
        let ty = match ty {
            "int8" => ConnectType::Int8,
            "int16" => ConnectType::Int16,
            "int32" => ConnectType::Int32,
            "int64" => ConnectType::Int64,
            "float" | "float32" => ConnectType::Float32,
            "double" | "float64" => ConnectType::Float64,
            "boolean" => ConnectType::Boolean,
            "string" => ConnectType::String,
            "bytes" => ConnectType::Bytes,
            "array" => ConnectType::Array(Box::new(Self::from_connect_json(
                obj.get("items")
                    .ok_or_else(|| SchemaError("array schema without \"items\"".into()))?,
            )?)),
            "map" => ConnectType::Map(Box::new(Self::from_connect_json(
                obj.get("values")
                    .ok_or_else(|| SchemaError("map schema without \"values\"".into()))?,
            )?)),
            "struct" => {
                let fields = obj
                    .get("fields")
                    .and_then(Json::as_array)
                    .ok_or_else(|| SchemaError("struct schema without \"fields\"".into()))?;
                let mut out = Vec::with_capacity(fields.len());
                for f in fields {
                    let name = f
                        .get("field")
                        .and_then(Json::as_str)
                        .ok_or_else(|| SchemaError("struct field without \"field\"".into()))?;
                    out.push(Field {
                        name: name.to_owned(),
                        schema: Self::from_connect_json(f)?,
                    });
                }
                ConnectType::Struct(out)
            }
            other => return Err(SchemaError(format!("unknown Connect type {other:?}"))),
        };
        Ok(ConnectSchema {
            ty,
            name: obj.get("name").and_then(Json::as_str).map(str::to_owned),
            parameters: read_parameters(obj.get("parameters")),
            optional: obj.get("optional").and_then(Json::as_bool).unwrap_or(false),
            logical_type: None,
            avro_scale: None,
        })
    }
}

fn read_parameters(json: Option<&Json>) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    if let Some(Json::Object(map)) = json {
        for (k, v) in map {
            let v = match v {
                Json::String(s) => s.clone(),
                other => other.to_string(),
            };
            out.insert(k.clone(), v);
        }
    }
    out
}

/// Reads Avro JSON schemas, resolving references to named types.
#[derive(Default)]
struct AvroReader {
    named: HashMap<String, ConnectSchema>,
}

impl AvroReader {
    fn read(&mut self, json: &Json, namespace: Option<&str>) -> Result<ConnectSchema, SchemaError> {
        match json {
            Json::String(name) => self.read_name(name, namespace),
            Json::Array(branches) => self.read_union(branches, namespace),
            Json::Object(obj) => self.read_object(obj, namespace),
            other => Err(SchemaError(format!("unexpected Avro schema {other}"))),
        }
    }

    fn read_name(&self, name: &str, namespace: Option<&str>) -> Result<ConnectSchema, SchemaError> {
        if let Some(ty) = primitive(name) {
            return Ok(ConnectSchema::new(ty));
        }
        let full = match namespace {
            Some(ns) if !name.contains('.') => format!("{ns}.{name}"),
            _ => name.to_owned(),
        };
        self.named
            .get(&full)
            .or_else(|| self.named.get(name))
            .cloned()
            .ok_or_else(|| SchemaError(format!("unknown Avro type {name:?}")))
    }

    fn read_union(
        &mut self,
        branches: &[Json],
        namespace: Option<&str>,
    ) -> Result<ConnectSchema, SchemaError> {
        let non_null: Vec<&Json> = branches
            .iter()
            .filter(|b| b.as_str() != Some("null"))
            .collect();
        match non_null.as_slice() {
            [one] if branches.len() == 2 => {
                let mut schema = self.read(one, namespace)?;
                schema.optional = true;
                Ok(schema)
            }
            _ => Err(SchemaError(format!(
                "unsupported Avro union {} (only [\"null\", T] is used by Kafka Connect)",
                Json::Array(branches.to_vec())
            ))),
        }
    }

    fn read_object(
        &mut self,
        obj: &Map<String, Json>,
        namespace: Option<&str>,
    ) -> Result<ConnectSchema, SchemaError> {
        let ty_json = obj
            .get("type")
            .ok_or_else(|| SchemaError("Avro schema object without \"type\"".into()))?;
        let mut schema = match ty_json {
            Json::String(t) => match t.as_str() {
                "record" => self.read_record(obj, namespace)?,
                "array" => {
                    let items = obj
                        .get("items")
                        .ok_or_else(|| SchemaError("array without \"items\"".into()))?;
                    ConnectSchema::new(ConnectType::Array(Box::new(self.read(items, namespace)?)))
                }
                "map" => {
                    let values = obj
                        .get("values")
                        .ok_or_else(|| SchemaError("map without \"values\"".into()))?;
                    ConnectSchema::new(ConnectType::Map(Box::new(self.read(values, namespace)?)))
                }
                "enum" => {
                    let mut s = ConnectSchema::new(ConnectType::String);
                    self.register(obj, namespace, &s)?;
                    s.name = full_name(obj, namespace);
                    s
                }
                "fixed" => {
                    let s = ConnectSchema::new(ConnectType::Bytes);
                    self.register(obj, namespace, &s)?;
                    s
                }
                other => self.read_name(other, namespace)?,
            },
            nested => self.read(nested, namespace)?,
        };
        // Attributes on the object override the type's defaults.
        if let Some(t) = obj.get("connect.type").and_then(Json::as_str) {
            match (t, &schema.ty) {
                ("int8", ConnectType::Int32) => schema.ty = ConnectType::Int8,
                ("int16", ConnectType::Int32) => schema.ty = ConnectType::Int16,
                _ => {}
            }
        }
        if let Some(name) = obj.get("connect.name").and_then(Json::as_str) {
            schema.name = Some(name.to_owned());
        }
        if obj.contains_key("connect.parameters") {
            schema.parameters = read_parameters(obj.get("connect.parameters"));
        }
        if let Some(l) = obj.get("logicalType").and_then(Json::as_str) {
            schema.logical_type = Some(l.to_owned());
        }
        if let Some(s) = obj.get("scale").and_then(Json::as_i64) {
            schema.avro_scale = Some(s);
        }
        Ok(schema)
    }

    fn read_record(
        &mut self,
        obj: &Map<String, Json>,
        namespace: Option<&str>,
    ) -> Result<ConnectSchema, SchemaError> {
        let full = full_name(obj, namespace)
            .ok_or_else(|| SchemaError("record without \"name\"".into()))?;
        let inner_ns = full.rsplit_once('.').map(|(ns, _)| ns.to_owned());
        let fields_json = obj
            .get("fields")
            .and_then(Json::as_array)
            .ok_or_else(|| SchemaError(format!("record {full} without \"fields\"")))?;
        let mut fields = Vec::with_capacity(fields_json.len());
        for f in fields_json {
            let name = f
                .get("name")
                .and_then(Json::as_str)
                .ok_or_else(|| SchemaError(format!("field of {full} without \"name\"")))?;
            let ty = f
                .get("type")
                .ok_or_else(|| SchemaError(format!("field {full}.{name} without \"type\"")))?;
            fields.push(Field {
                name: name.to_owned(),
                schema: self.read(ty, inner_ns.as_deref())?,
            });
        }
        let mut schema = ConnectSchema::new(ConnectType::Struct(fields));
        schema.name = Some(full.clone());
        self.register(obj, namespace, &schema)?;
        Ok(schema)
    }

    fn register(
        &mut self,
        obj: &Map<String, Json>,
        namespace: Option<&str>,
        schema: &ConnectSchema,
    ) -> Result<(), SchemaError> {
        let full = full_name(obj, namespace)
            .ok_or_else(|| SchemaError("named Avro type without \"name\"".into()))?;
        let mut schema = schema.clone();
        if let Some(name) = obj.get("connect.name").and_then(Json::as_str) {
            schema.name = Some(name.to_owned());
        }
        if obj.contains_key("connect.parameters") {
            schema.parameters = read_parameters(obj.get("connect.parameters"));
        }
        self.named.insert(full, schema);
        Ok(())
    }
}

fn full_name(obj: &Map<String, Json>, namespace: Option<&str>) -> Option<String> {
    let name = obj.get("name").and_then(Json::as_str)?;
    if name.contains('.') {
        return Some(name.to_owned());
    }
    let ns = obj.get("namespace").and_then(Json::as_str).or(namespace);
    Some(match ns {
        Some(ns) if !ns.is_empty() => format!("{ns}.{name}"),
        _ => name.to_owned(),
    })
}

fn primitive(name: &str) -> Option<ConnectType> {
    Some(match name {
        "int" => ConnectType::Int32,
        "long" => ConnectType::Int64,
        "float" => ConnectType::Float32,
        "double" => ConnectType::Float64,
        "boolean" => ConnectType::Boolean,
        "string" => ConnectType::String,
        "bytes" => ConnectType::Bytes,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_debezium_style_record_with_reference() {
        let raw = r#"{"type":"record","name":"Envelope","namespace":"cqrs.s.t","fields":[
            {"name":"before","type":["null",{"type":"record","name":"Value","fields":[
                {"name":"id","type":{"type":"int","connect.type":"int16"}},
                {"name":"amount","type":["null",{"type":"bytes","scale":2,"precision":10,
                  "connect.version":1,"connect.parameters":{"scale":"2","connect.decimal.precision":"10"},
                  "connect.name":"org.apache.kafka.connect.data.Decimal","logicalType":"decimal"}],"default":null}
            ],"connect.name":"cqrs.s.t.Value"}],"default":null},
            {"name":"after","type":["null","Value"],"default":null},
            {"name":"op","type":"string"}
        ],"connect.name":"cqrs.s.t.Envelope"}"#;
        let s = ConnectSchema::from_avro_json(raw).unwrap();
        assert_eq!(s.name_str(), "cqrs.s.t.Envelope");
        let after = s.field("after").unwrap();
        assert!(after.optional);
        assert_eq!(after.name_str(), "cqrs.s.t.Value");
        assert_eq!(after.field("id").unwrap().ty, ConnectType::Int16);
        let amount = after.field("amount").unwrap();
        assert_eq!(amount.parameter("scale"), Some("2"));
        assert_eq!(amount.logical_type.as_deref(), Some("decimal"));
        assert!(amount.optional);
    }

    #[test]
    fn rejects_general_unions_and_unknown_names() {
        assert!(ConnectSchema::from_avro_json(r#"["int","string"]"#).is_err());
        assert!(ConnectSchema::from_avro_json(r#""Nope""#).is_err());
        assert!(ConnectSchema::from_avro_json("not json").is_err());
    }

    #[test]
    fn reads_connect_json_schema() {
        let json: Json = serde_json::from_str(
            r#"{"type":"struct","fields":[{"type":"array","items":{"type":"string","optional":true},"optional":true,"field":"tags"},
               {"type":"int32","optional":true,"name":"io.debezium.time.Date","version":1,"field":"d"}],"optional":false,"name":"x.Value"}"#,
        )
        .unwrap();
        let s = ConnectSchema::from_connect_json(&json).unwrap();
        assert_eq!(s.field("d").unwrap().name_str(), "io.debezium.time.Date");
        assert!(matches!(s.field("tags").unwrap().ty, ConnectType::Array(_)));
    }
}
