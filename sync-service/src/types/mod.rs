//! Types stage: Debezium / Kafka Connect values into natural BSON, driven by the schema
//! (`connect.name`, `connect.parameters`, Avro logical types).
//!
//! | Debezium / Connect schema | PostgreSQL | BSON |
//! |---|---|---|
//! | `int8`/`int16`/`int32` | `smallint`, `integer` | Int32 |
//! | `int64` | `bigint`, `oid` | Int64 |
//! | `float32` | `real` | Double (shortest decimal form of the float: `0.1` stays `0.1`) |
//! | `float64` | `double precision` | Double |
//! | `boolean` | `boolean`, `bit(1)` | Boolean |
//! | `string` | `text`, `varchar`, `char` (padded), `inet`, `cidr`, `macaddr`, ranges | String |
//! | `bytes` | `bytea` | Binary (generic) |
//! | `io.debezium.time.Date`, `org.apache.kafka.connect.data.Date`, Avro `date` | `date` | Date at 00:00 UTC; ±infinity → max/min Date; a day count outside PostgreSQL's range is an error |
//! | `io.debezium.time.Time` / `MicroTime` / `NanoTime`, `org.apache.kafka.connect.data.Time`, Avro `time-*` | `time` | String `HH:MM:SS.ffffff` (always 6 digits; sorts like the time) |
//! | `io.debezium.time.ZonedTime` | `timetz` | String as Debezium sends it (UTC, e.g. `12:30:00.5Z`) |
//! | `io.debezium.time.Timestamp` / `MicroTimestamp` / `NanoTimestamp`, `org.apache.kafka.connect.data.Timestamp`, Avro `timestamp-*` | `timestamp` | Date, **floored to milliseconds** (BSON dates hold ms); [`TypeOptions::micros_suffix`] keeps exact microseconds in an extra Int64 field; ±infinity → max/min Date |
//! | `io.debezium.time.ZonedTimestamp` | `timestamptz` | Date (floored to ms, same option); `infinity` → max/min Date |
//! | `io.debezium.time.MicroDuration` | `interval` (numeric mode) | Int64 microseconds (Debezium's month = 30.4375 days) |
//! | `io.debezium.time.Interval` | `interval` (string mode) | String (ISO-8601 duration) |
//! | `org.apache.kafka.connect.data.Decimal`, Avro `decimal` | `numeric(p,s)`, `money` | Decimal128, exact; more than 34 significant digits is an error |
//! | `io.debezium.data.VariableScaleDecimal` | `numeric` | Decimal128, exact (same rule) |
//! | `string` with `__debezium.source.column.type` NUMERIC/DECIMAL/MONEY | `numeric` (`decimal.handling.mode=string`, `column.propagate.source.type`) | Decimal128 (`NaN`, `Infinity` too); without the parameter it stays a String |
//! | `float64` | `numeric` (`decimal.handling.mode=double`) | Double |
//! | `io.debezium.data.Json` | `json`, `jsonb`, `hstore` (json mode) | embedded Document / Array / scalar, key order kept, numbers exact ([`number_to_bson`]) |
//! | `io.debezium.data.Uuid` | `uuid` | Binary subtype 4 (UUID) |
//! | `io.debezium.data.Enum` | enum types | String |
//! | `io.debezium.data.EnumSet` | | Array of Strings |
//! | `io.debezium.data.Bits` | `bit(n>1)`, `varbit(n)` | String of `0`/`1`, most significant first (as PostgreSQL prints it): `n` bits for a `bit(n)`; for a `varbit` (source type `VARBIT` or an unbounded length) the bits from the highest 1 on, unpadded (Debezium drops a varbit's leading zeros) |
//! | `io.debezium.data.Xml`, `io.debezium.data.Ltree` | `xml`, `ltree` | String |
//! | `io.debezium.data.geometry.Point` | `point` | GeoJSON `{type: "Point", coordinates: [x, y]}` |
//! | `io.debezium.data.geometry.Geometry` / `Geography` | PostGIS | Document `{wkb: Binary, srid: Int32 or null}` |
//! | `array` | `text[]`, `int[]`, ... | Array (elements converted by the same rules) |
//! | `map` | `hstore` (map mode) | Document |
//! | `struct` | rows, composite keys | Document, fields in schema order |
//!
//! Columns holding Debezium's placeholder for an unchanged TOASTed value are recognised by
//! [`is_unavailable`] and left out of row images by [`row_image`].
//!
//! Without a schema (Connect JSON with `schemas.enable=false`) there is nothing to say what a
//! number or string means: values map naturally (integers to Int32 when they fit, else
//! Int64; floats to Double; objects to Documents; strings stay strings).

mod decimal;
mod json;
mod temporal;
mod toast;

use base64::Engine as _;
use bson::spec::BinarySubtype;
use bson::{Binary, Bson, Document};

pub use decimal::{DecimalError, decimal128_from_str, decimal128_from_unscaled};
pub use json::{JsonError, json_text_to_bson, number_to_bson};
pub use toast::{UNAVAILABLE_PLACEHOLDER, is_unavailable};

use crate::decode::{ConnectSchema, ConnectType, Datum};

/// Options of the conversion.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TypeOptions {
    /// If set (for example `"_micros"`), every microsecond or nanosecond timestamp field
    /// (`MicroTimestamp`, `NanoTimestamp`, `ZonedTimestamp`) of a struct also gets a sibling
    /// field `<name><suffix>` with the exact microseconds since the epoch (Int64), since the
    /// BSON date keeps milliseconds only.
    pub micros_suffix: Option<String>,
}

/// Why a value could not be converted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TypeErrorKind {
    /// The value does not have the schema's physical type.
    #[error("expected {expected}, found {found}")]
    Mismatch {
        /// What the schema says.
        expected: String,
        /// What the value is.
        found: &'static str,
    },
    /// A decimal Decimal128 cannot hold exactly.
    #[error(transparent)]
    Decimal(#[from] DecimalError),
    /// A value that is not valid for its semantic type.
    #[error("invalid {semantic} value: {detail}")]
    Invalid {
        /// The semantic type (`io.debezium.data.Uuid`, ...).
        semantic: String,
        /// What is wrong.
        detail: String,
    },
}

/// A value that could not be converted, with the path of the field.
///
/// ```
/// use sync_service::decode::{ConnectSchema, Datum};
/// use sync_service::types::to_bson;
///
/// let schema = ConnectSchema::from_avro_json(
///     r#"{"type":"string","connect.name":"io.debezium.data.Uuid"}"#).unwrap();
/// let err = to_bson(&Datum::String("nope".into()), Some(&schema)).unwrap_err();
/// assert!(err.to_string().starts_with("value: invalid io.debezium.data.Uuid value"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {kind}")]
pub struct TypeError {
    /// Dotted path of the field (`value` at the top level).
    pub path: String,
    /// What went wrong.
    pub kind: TypeErrorKind,
}

/// Converts a value to BSON, driven by its schema (natural mapping without one).
///
/// ```
/// use bson::Bson;
/// use sync_service::decode::{ConnectSchema, Datum};
/// use sync_service::types::to_bson;
///
/// let date = ConnectSchema::from_avro_json(
///     r#"{"type":"int","connect.name":"io.debezium.time.Date"}"#).unwrap();
/// let b = to_bson(&Datum::Int(1), Some(&date)).unwrap();
/// assert_eq!(b, Bson::DateTime(bson::DateTime::from_millis(86_400_000)));
/// ```
pub fn to_bson(datum: &Datum, schema: Option<&ConnectSchema>) -> Result<Bson, TypeError> {
    convert(datum, schema, &TypeOptions::default(), "value")
}

/// [`to_bson`] with options.
pub fn to_bson_with(
    datum: &Datum,
    schema: Option<&ConnectSchema>,
    options: &TypeOptions,
) -> Result<Bson, TypeError> {
    convert(datum, schema, options, "value")
}

/// Converts a row (a struct: a before/after image or a key) to a BSON document.
///
/// ```
/// use sync_service::decode::Datum;
/// use sync_service::types::{row_to_document, TypeOptions};
///
/// let row = Datum::Struct(vec![("id".into(), Datum::Int(1)), ("name".into(), Datum::String("a".into()))]);
/// let doc = row_to_document(&row, None, &TypeOptions::default()).unwrap();
/// assert_eq!(doc.get_i32("id").unwrap(), 1);
/// ```
pub fn row_to_document(
    datum: &Datum,
    schema: Option<&ConnectSchema>,
    options: &TypeOptions,
) -> Result<Document, TypeError> {
    match convert(datum, schema, options, "")? {
        Bson::Document(d) => Ok(d),
        other => Err(TypeError {
            path: "row".into(),
            kind: TypeErrorKind::Mismatch {
                expected: "a struct".into(),
                found: bson_kind(&other),
            },
        }),
    }
}

/// A row image (`before` / `after`) as BSON, without the columns Debezium could not send.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RowImage {
    /// The columns that arrived, converted.
    pub document: Document,
    /// Columns left out because Debezium sent its placeholder for an unchanged TOASTed
    /// value ([`is_unavailable`]): their stored values are still right.
    pub unavailable: Vec<String>,
}

/// Converts a row image like [`row_to_document`], leaving out (and listing) the columns
/// that hold Debezium's placeholder for an unchanged TOASTed value.
///
/// ```
/// use sync_service::decode::Datum;
/// use sync_service::types::{row_image, TypeOptions, UNAVAILABLE_PLACEHOLDER};
///
/// let row = Datum::Struct(vec![
///     ("id".into(), Datum::Int(1)),
///     ("doc".into(), Datum::String(UNAVAILABLE_PLACEHOLDER.into())),
/// ]);
/// let image = row_image(&row, None, &TypeOptions::default()).unwrap();
/// assert_eq!(image.document, bson::doc! { "id": 1 });
/// assert_eq!(image.unavailable, vec!["doc".to_string()]);
/// ```
pub fn row_image(
    datum: &Datum,
    schema: Option<&ConnectSchema>,
    options: &TypeOptions,
) -> Result<RowImage, TypeError> {
    let (Datum::Struct(values) | Datum::Map(values)) = datum else {
        return row_to_document(datum, schema, options).map(|document| RowImage {
            document,
            unavailable: Vec::new(),
        });
    };
    let fields = match schema.map(|s| &s.ty) {
        Some(ConnectType::Struct(fields)) => Some(fields.as_slice()),
        Some(_) => return Err(mismatch("row", "a struct", datum)),
        None => None,
    };
    let mut unavailable = Vec::new();
    let document = struct_document(values, fields, options, "", Some(&mut unavailable))?;
    Ok(RowImage {
        document,
        unavailable,
    })
}

/// Semantic types, by `connect.name` or Avro logical type.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Semantic {
    Date,
    TimeMillis,
    TimeMicros,
    TimeNanos,
    TimestampMillis,
    TimestampMicros,
    TimestampNanos,
    ZonedTimestamp,
    Decimal,
    VariableScaleDecimal,
    DecimalString,
    Json,
    Uuid,
    EnumSet,
    Bits,
    Point,
    Geometry,
    Plain,
}

fn semantic(schema: &ConnectSchema) -> Semantic {
    match schema.name_str() {
        "io.debezium.time.Date" | "org.apache.kafka.connect.data.Date" => Semantic::Date,
        "io.debezium.time.Time" | "org.apache.kafka.connect.data.Time" => Semantic::TimeMillis,
        "io.debezium.time.MicroTime" => Semantic::TimeMicros,
        "io.debezium.time.NanoTime" => Semantic::TimeNanos,
        "io.debezium.time.Timestamp" | "org.apache.kafka.connect.data.Timestamp" => {
            Semantic::TimestampMillis
        }
        "io.debezium.time.MicroTimestamp" => Semantic::TimestampMicros,
        "io.debezium.time.NanoTimestamp" => Semantic::TimestampNanos,
        "io.debezium.time.ZonedTimestamp" => Semantic::ZonedTimestamp,
        "org.apache.kafka.connect.data.Decimal" => Semantic::Decimal,
        "io.debezium.data.VariableScaleDecimal" => Semantic::VariableScaleDecimal,
        "io.debezium.data.Json" => Semantic::Json,
        "io.debezium.data.Uuid" => Semantic::Uuid,
        "io.debezium.data.EnumSet" => Semantic::EnumSet,
        "io.debezium.data.Bits" => Semantic::Bits,
        "io.debezium.data.geometry.Point" => Semantic::Point,
        "io.debezium.data.geometry.Geometry" | "io.debezium.data.geometry.Geography" => {
            Semantic::Geometry
        }
        _ => match schema.logical_type.as_deref() {
            Some("date") => Semantic::Date,
            Some("time-millis") => Semantic::TimeMillis,
            Some("time-micros") => Semantic::TimeMicros,
            Some("timestamp-millis") | Some("local-timestamp-millis") => Semantic::TimestampMillis,
            Some("timestamp-micros") | Some("local-timestamp-micros") => Semantic::TimestampMicros,
            Some("timestamp-nanos") | Some("local-timestamp-nanos") => Semantic::TimestampNanos,
            Some("decimal") => Semantic::Decimal,
            Some("uuid") => Semantic::Uuid,
            _ if schema.ty == ConnectType::String && is_numeric_column(schema) => {
                Semantic::DecimalString
            }
            _ => Semantic::Plain,
        },
    }
}

fn is_numeric_column(schema: &ConnectSchema) -> bool {
    schema
        .parameter("__debezium.source.column.type")
        .is_some_and(|t| {
            matches!(
                t.to_ascii_uppercase().as_str(),
                "NUMERIC" | "DECIMAL" | "MONEY"
            )
        })
}

fn err(path: &str, kind: TypeErrorKind) -> TypeError {
    TypeError {
        path: if path.is_empty() {
            "value".into()
        } else {
            path.into()
        },
        kind,
    }
}

fn mismatch(path: &str, expected: &str, found: &Datum) -> TypeError {
    err(
        path,
        TypeErrorKind::Mismatch {
            expected: expected.into(),
            found: found.kind(),
        },
    )
}

fn invalid(path: &str, schema: &ConnectSchema, detail: impl Into<String>) -> TypeError {
    let semantic = match schema.name_str() {
        "" => schema
            .logical_type
            .clone()
            .unwrap_or_else(|| "typed".into()),
        name => name.to_owned(),
    };
    err(
        path,
        TypeErrorKind::Invalid {
            semantic,
            detail: detail.into(),
        },
    )
}

fn join(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_owned()
    } else {
        format!("{path}.{name}")
    }
}

fn convert(
    datum: &Datum,
    schema: Option<&ConnectSchema>,
    options: &TypeOptions,
    path: &str,
) -> Result<Bson, TypeError> {
    let Some(schema) = schema else {
        return Ok(natural(datum));
    };
    if datum.is_null() {
        return Ok(Bson::Null);
    }
    let int = || {
        datum
            .as_i64()
            .ok_or_else(|| mismatch(path, "an integer", datum))
    };
    let text = || {
        datum
            .as_str()
            .ok_or_else(|| mismatch(path, "a string", datum))
    };
    Ok(match semantic(schema) {
        Semantic::Date => {
            let days = int()?;
            Bson::DateTime(temporal::date_from_days(days).ok_or_else(|| {
                invalid(
                    path,
                    schema,
                    format!("{days} days since 1970 is outside PostgreSQL's date range"),
                )
            })?)
        }
        Semantic::TimeMillis => time(path, schema, int()?.checked_mul(1000))?,
        Semantic::TimeMicros => time(path, schema, Some(int()?))?,
        Semantic::TimeNanos => time(path, schema, Some(int()?.div_euclid(1000)))?,
        Semantic::TimestampMillis => Bson::DateTime(temporal::timestamp_from_millis(int()?)),
        Semantic::TimestampMicros => Bson::DateTime(temporal::timestamp_from_micros(int()?)),
        Semantic::TimestampNanos => Bson::DateTime(temporal::timestamp_from_nanos(int()?)),
        Semantic::ZonedTimestamp => {
            let t = text()?;
            let us = temporal::parse_zoned_timestamp_micros(t).ok_or_else(|| {
                invalid(path, schema, format!("{t:?} is not an ISO-8601 timestamp"))
            })?;
            Bson::DateTime(temporal::timestamp_from_micros(us))
        }
        Semantic::Decimal => Bson::Decimal128(decimal(datum, schema, path)?),
        Semantic::VariableScaleDecimal => {
            let scale = datum.get("scale").and_then(Datum::as_i64);
            let value = match datum.get("value") {
                Some(Datum::Bytes(b)) => Some(b),
                _ => None,
            };
            let (Some(scale), Some(value)) = (scale, value) else {
                return Err(mismatch(
                    path,
                    "a struct {scale: int32, value: bytes}",
                    datum,
                ));
            };
            Bson::Decimal128(
                decimal128_from_unscaled(value, scale)
                    .map_err(|e| err(path, TypeErrorKind::Decimal(e)))?,
            )
        }
        Semantic::DecimalString => Bson::Decimal128(
            decimal128_from_str(text()?).map_err(|e| err(path, TypeErrorKind::Decimal(e)))?,
        ),
        Semantic::Json => json_text_to_bson(text()?)
            .map_err(|e| invalid(path, schema, format!("not JSON: {e}")))?,
        Semantic::Uuid => {
            let t = text()?;
            let uuid = uuid::Uuid::parse_str(t)
                .map_err(|e| invalid(path, schema, format!("{t:?}: {e}")))?;
            Bson::Binary(Binary {
                subtype: BinarySubtype::Uuid,
                bytes: uuid.as_bytes().to_vec(),
            })
        }
        Semantic::EnumSet => {
            let t = text()?;
            Bson::Array(
                t.split(',')
                    .filter(|s| !s.is_empty())
                    .map(|s| Bson::String(s.to_owned()))
                    .collect(),
            )
        }
        Semantic::Bits => {
            let Datum::Bytes(bytes) = datum else {
                return Err(mismatch(path, "bytes", datum));
            };
            Bson::String(bits(bytes, bit_length(schema, path)?))
        }
        Semantic::Point => {
            let coord = |name: &str| match datum.get(name) {
                Some(Datum::Float(f)) => Ok(Bson::Double(*f)),
                Some(Datum::Int(i)) => Ok(Bson::Double(*i as f64)),
                _ => Err(mismatch(
                    path,
                    "a point struct {x: double, y: double}",
                    datum,
                )),
            };
            let mut doc = Document::new();
            doc.insert("type", "Point");
            doc.insert("coordinates", Bson::Array(vec![coord("x")?, coord("y")?]));
            Bson::Document(doc)
        }
        Semantic::Geometry => {
            let mut doc = Document::new();
            match datum.get("wkb") {
                Some(Datum::Bytes(b)) => doc.insert("wkb", binary(b)),
                // Connect JSON without schema shaping leaves base64 text.
                Some(Datum::String(s)) => doc.insert(
                    "wkb",
                    binary(
                        &base64::engine::general_purpose::STANDARD
                            .decode(s)
                            .map_err(|e| invalid(path, schema, format!("wkb: {e}")))?,
                    ),
                ),
                _ => {
                    return Err(mismatch(
                        path,
                        "a geometry struct {wkb: bytes, srid}",
                        datum,
                    ));
                }
            };
            let srid = match datum.get("srid") {
                Some(Datum::Int(i)) => Bson::Int32(i32::try_from(*i).unwrap_or(i32::MAX)),
                _ => Bson::Null,
            };
            doc.insert("srid", srid);
            Bson::Document(doc)
        }
        Semantic::Plain => plain(datum, schema, options, path)?,
    })
}

fn time(path: &str, schema: &ConnectSchema, micros: Option<i64>) -> Result<Bson, TypeError> {
    micros
        .and_then(temporal::time_of_day)
        .map(Bson::String)
        .ok_or_else(|| invalid(path, schema, "time of day out of range"))
}

fn decimal(
    datum: &Datum,
    schema: &ConnectSchema,
    path: &str,
) -> Result<bson::Decimal128, TypeError> {
    let result = match datum {
        Datum::Bytes(bytes) => {
            let scale = schema
                .parameter("scale")
                .and_then(|s| s.parse::<i64>().ok())
                .or(schema.avro_scale)
                .ok_or_else(|| invalid(path, schema, "no scale in the schema"))?;
            decimal128_from_unscaled(bytes, scale)
        }
        // `decimal.format=NUMERIC` (JSON): the number as written.
        Datum::Int(i) => decimal128_from_str(&i.to_string()),
        Datum::Float(f) => decimal128_from_str(&f.to_string()),
        Datum::String(s) => decimal128_from_str(s),
        other => return Err(mismatch(path, "decimal bytes", other)),
    };
    result.map_err(|e| err(path, TypeErrorKind::Decimal(e)))
}

/// PostgreSQL's longest bit string (`bit(83886080)`).
const MAX_BITS: usize = 83_886_080;

/// How many bits a `Bits` value has: the declared length of a `bit(n)`; `None` (as many as
/// the value holds) for a `varbit`, known by `__debezium.source.column.type = VARBIT`
/// (`datatype.propagate.source.type`) or by an unbounded length (Debezium says 2147483647).
fn bit_length(schema: &ConnectSchema, path: &str) -> Result<Option<usize>, TypeError> {
    if schema
        .parameter("__debezium.source.column.type")
        .is_some_and(|t| t.eq_ignore_ascii_case("VARBIT"))
    {
        return Ok(None);
    }
    match schema.parameter("length").map(str::parse::<usize>) {
        None => Ok(None),
        Some(Ok(2_147_483_647)) => Ok(None),
        Some(Ok(n)) if n <= MAX_BITS => Ok(Some(n)),
        Some(_) => Err(invalid(
            path,
            schema,
            "bit length out of PostgreSQL's range",
        )),
    }
}

/// Little-endian bytes (Debezium's `Bits`) as a bit string, most significant first (as
/// PostgreSQL prints it): `length` bits for a `bit(n)` (zeros on the left, Debezium sends
/// the fewest bytes), or up to the highest set bit for a `varbit` (Debezium sends no
/// length, so a varbit's leading zeros are lost before us: `B'0101'` arrives as `101`).
fn bits(bytes: &[u8], length: Option<usize>) -> String {
    let n = length.unwrap_or_else(|| {
        bytes
            .iter()
            .rposition(|b| *b != 0)
            .map_or(0, |i| i * 8 + (8 - bytes[i].leading_zeros() as usize))
    });
    (0..n)
        .rev()
        .map(|i| match bytes.get(i / 8) {
            Some(b) if b >> (i % 8) & 1 == 1 => '1',
            _ => '0',
        })
        .collect()
}

fn binary(bytes: &[u8]) -> Bson {
    Bson::Binary(Binary {
        subtype: BinarySubtype::Generic,
        bytes: bytes.to_vec(),
    })
}

/// Physical types, no semantic name.
fn plain(
    datum: &Datum,
    schema: &ConnectSchema,
    options: &TypeOptions,
    path: &str,
) -> Result<Bson, TypeError> {
    Ok(match (&schema.ty, datum) {
        (ConnectType::Int8 | ConnectType::Int16 | ConnectType::Int32, Datum::Int(i)) => {
            match i32::try_from(*i) {
                Ok(v) => Bson::Int32(v),
                Err(_) => Bson::Int64(*i),
            }
        }
        (ConnectType::Int64, Datum::Int(i)) => Bson::Int64(*i),
        (ConnectType::Float32, Datum::Float(f)) => Bson::Double(shortest_f32(*f)),
        (ConnectType::Float64, Datum::Float(f)) => Bson::Double(*f),
        (ConnectType::Float32 | ConnectType::Float64, Datum::Int(i)) => Bson::Double(*i as f64),
        (ConnectType::Boolean, Datum::Boolean(b)) => Bson::Boolean(*b),
        (ConnectType::String, Datum::String(s)) => Bson::String(s.clone()),
        (ConnectType::Bytes, Datum::Bytes(b)) => binary(b),
        (ConnectType::Array(items), Datum::Array(values)) => Bson::Array(
            values
                .iter()
                .enumerate()
                .map(|(i, v)| convert(v, Some(items), options, &format!("{}[{i}]", err_path(path))))
                .collect::<Result<_, _>>()?,
        ),
        (ConnectType::Map(values), Datum::Map(entries) | Datum::Struct(entries)) => {
            let mut doc = Document::new();
            for (k, v) in entries {
                doc.insert(
                    k.clone(),
                    convert(v, Some(values), options, &join(path, k))?,
                );
            }
            Bson::Document(doc)
        }
        (ConnectType::Struct(fields), Datum::Struct(values)) => {
            Bson::Document(struct_document(values, Some(fields), options, path, None)?)
        }
        (ty, d) => return Err(mismatch(path, &format!("{ty:?}").to_lowercase(), d)),
    })
}

/// A struct's fields as a document; with `unavailable`, the fields holding Debezium's
/// unchanged-TOAST placeholder are left out and listed there instead.
fn struct_document(
    values: &[(String, Datum)],
    fields: Option<&[crate::decode::Field]>,
    options: &TypeOptions,
    path: &str,
    mut unavailable: Option<&mut Vec<String>>,
) -> Result<Document, TypeError> {
    let mut doc = Document::new();
    for (i, (name, value)) in values.iter().enumerate() {
        if let Some(list) = unavailable.as_deref_mut()
            && is_unavailable(value)
        {
            list.push(name.clone());
            continue;
        }
        // Values come in the schema's order: the field at the same place is the one,
        // unless the shapes differ (then search).
        let field_schema = fields.and_then(|fs| {
            fs.get(i)
                .filter(|f| &f.name == name)
                .or_else(|| fs.iter().find(|f| &f.name == name))
                .map(|f| &f.schema)
        });
        // The path only names a field in errors: a row's own fields borrow their name.
        let field_path = if path.is_empty() {
            std::borrow::Cow::Borrowed(name.as_str())
        } else {
            std::borrow::Cow::Owned(join(path, name))
        };
        let converted = match field_schema {
            Some(fs) => convert(value, Some(fs), options, &field_path)?,
            None => natural(value),
        };
        doc.insert(name.clone(), converted);
        if let (Some(suffix), Some(us)) = (
            &options.micros_suffix,
            field_schema.and_then(|fs| exact_micros(value, fs)),
        ) {
            doc.insert(format!("{name}{suffix}"), Bson::Int64(us));
        }
    }
    Ok(doc)
}

fn err_path(path: &str) -> &str {
    if path.is_empty() { "value" } else { path }
}

/// The exact microseconds of a sub-millisecond timestamp field (for `micros_suffix`).
fn exact_micros(datum: &Datum, schema: &ConnectSchema) -> Option<i64> {
    match (semantic(schema), datum) {
        (Semantic::TimestampMicros, Datum::Int(us)) => Some(*us),
        (Semantic::TimestampNanos, Datum::Int(ns)) => Some(ns.div_euclid(1000)),
        (Semantic::ZonedTimestamp, Datum::String(s)) => temporal::parse_zoned_timestamp_micros(s),
        _ => None,
    }
}

/// A float32 widened exactly, re-read from its shortest decimal form (`0.1f32` → `0.1`).
fn shortest_f32(f: f64) -> f64 {
    let narrow = f as f32;
    if !narrow.is_finite() {
        return f64::from(narrow);
    }
    narrow
        .to_string()
        .parse::<f64>()
        .unwrap_or(f64::from(narrow))
}

/// Schemaless conversion.
fn natural(datum: &Datum) -> Bson {
    match datum {
        Datum::Null => Bson::Null,
        Datum::Boolean(b) => Bson::Boolean(*b),
        Datum::Int(i) => match i32::try_from(*i) {
            Ok(v) => Bson::Int32(v),
            Err(_) => Bson::Int64(*i),
        },
        Datum::Float(f) => Bson::Double(*f),
        Datum::String(s) => Bson::String(s.clone()),
        Datum::Bytes(b) => binary(b),
        Datum::Array(items) => Bson::Array(items.iter().map(natural).collect()),
        Datum::Map(entries) | Datum::Struct(entries) => Bson::Document(
            entries
                .iter()
                .map(|(k, v)| (k.clone(), natural(v)))
                .collect(),
        ),
    }
}

fn bson_kind(b: &Bson) -> &'static str {
    match b {
        Bson::Null => "null",
        Bson::Array(_) => "array",
        Bson::Document(_) => "document",
        Bson::String(_) => "string",
        _ => "scalar",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema(raw: &str) -> ConnectSchema {
        ConnectSchema::from_avro_json(raw).unwrap()
    }

    #[test]
    fn bits_are_little_endian_msb_first() {
        assert_eq!(bits(&[0b0000_0101], Some(3)), "101");
        assert_eq!(bits(&[0x01, 0x01], Some(10)), "0100000001");
        assert_eq!(bits(&[], Some(3)), "000");
        assert_eq!(bits(&[0b101], None), "101");
        assert_eq!(bits(&[0x00, 0x02], None), "1000000000");
        assert_eq!(bits(&[], None), "");
    }

    #[test]
    fn varbits_are_unpadded_and_bits_padded() {
        let unbounded = schema(
            r#"{"type":"bytes","connect.name":"io.debezium.data.Bits","connect.parameters":{"length":"2147483647"}}"#,
        );
        let varbit16 = schema(
            r#"{"type":"bytes","connect.name":"io.debezium.data.Bits","connect.parameters":{"length":"16","__debezium.source.column.type":"VARBIT"}}"#,
        );
        let bit10 = schema(
            r#"{"type":"bytes","connect.name":"io.debezium.data.Bits","connect.parameters":{"length":"10","__debezium.source.column.type":"BIT"}}"#,
        );
        let five = Datum::Bytes(vec![5]);
        assert_eq!(
            to_bson(&five, Some(&unbounded)).unwrap(),
            Bson::String("101".into())
        );
        assert_eq!(
            to_bson(&five, Some(&varbit16)).unwrap(),
            Bson::String("101".into())
        );
        assert_eq!(
            to_bson(&five, Some(&bit10)).unwrap(),
            Bson::String("0000000101".into())
        );
    }

    #[test]
    fn date_infinities_and_out_of_range_days() {
        let date = schema(r#"{"type":"int","connect.name":"io.debezium.time.Date"}"#);
        assert_eq!(
            to_bson(&Datum::Int(-2_147_472_692), Some(&date)).unwrap(),
            Bson::DateTime(bson::DateTime::MAX)
        );
        assert_eq!(
            to_bson(&Datum::Int(-2_147_472_691), Some(&date)).unwrap(),
            Bson::DateTime(bson::DateTime::MIN)
        );
        assert!(to_bson(&Datum::Int(-2_147_000_000), Some(&date)).is_err());
        assert!(to_bson(&Datum::Int(2_145_042_905), Some(&date)).is_ok());
    }

    #[test]
    fn floats_keep_their_short_form() {
        let s = schema(r#""float""#);
        assert_eq!(
            to_bson(&Datum::Float(f64::from(0.1f32)), Some(&s)).unwrap(),
            Bson::Double(0.1)
        );
    }

    #[test]
    fn micros_suffix_adds_exact_field() {
        let s = schema(
            r#"{"type":"record","name":"V","fields":[{"name":"t","type":{"type":"long","connect.name":"io.debezium.time.MicroTimestamp"}}]}"#,
        );
        let row = Datum::Struct(vec![("t".into(), Datum::Int(1_500))]);
        let opts = TypeOptions {
            micros_suffix: Some("_us".into()),
        };
        let doc = row_to_document(&row, Some(&s), &opts).unwrap();
        assert_eq!(doc.get_datetime("t").unwrap().timestamp_millis(), 1);
        assert_eq!(doc.get_i64("t_us").unwrap(), 1_500);
    }

    #[test]
    fn mismatches_name_the_field() {
        let s = schema(r#"{"type":"record","name":"V","fields":[{"name":"n","type":"int"}]}"#);
        let row = Datum::Struct(vec![("n".into(), Datum::String("x".into()))]);
        let e = row_to_document(&row, Some(&s), &TypeOptions::default()).unwrap_err();
        assert_eq!(e.path, "n");
    }
}
