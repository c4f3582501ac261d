//! Decode stage: a Kafka record's key and value bytes into [`Datum`]s with their Kafka
//! Connect schemas.
//!
//! Formats ([`Format`], selectable per topic and per part):
//! - **Avro** in the Confluent wire format (magic byte 0, 4-byte big-endian schema id, Avro
//!   body), schemas from the Schema Registry ([`RegistryDecoder`]);
//! - **Kafka Connect JSON** with embedded schemas (`{"schema":..,"payload":..}`) or without
//!   (`schemas.enable=false`);
//! - **string** (`StringConverter`);
//! - **auto**: magic byte 0 means Avro, JSON text means JSON (with schema if the object is
//!   exactly `{"schema","payload"}`).
//!
//! A null value is a tombstone ([`DecodedRecord::is_tombstone`]); a null key stays `None`.

mod avro;
mod datum;
mod error;
mod json;
mod schema;

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;

pub use avro::{RegistryConfigError, RegistryDecoder, split_wire_format};
pub use datum::Datum;
pub use error::{DecodeError, Part, Retry, WireFormatProblem};
pub use schema::{ConnectSchema, ConnectType, Field, SchemaError};

use json::{JsonShape, decode_json};

/// The wire format of a key or value.
///
/// ```
/// use sync_service::decode::Format;
///
/// assert_eq!("avro".parse::<Format>(), Ok(Format::Avro));
/// assert_eq!("json-schemaless".parse::<Format>(), Ok(Format::JsonSchemaless));
/// assert!("xml".parse::<Format>().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// Confluent wire-format Avro (`avro`).
    Avro,
    /// Connect JSON with embedded schema (`json-with-schema`).
    JsonWithSchema,
    /// Connect JSON without schema (`json-schemaless`).
    JsonSchemaless,
    /// Connect JSON, with or without schema, told apart per message (`json`).
    Json,
    /// A UTF-8 string (`string`).
    String,
    /// Avro if the first byte is 0, JSON otherwise (`auto`).
    #[default]
    Auto,
}

/// A format name that is not one of [`Format`]'s.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown format {0:?} (expected avro, json, json-with-schema, json-schemaless, string or auto)"
)]
pub struct UnknownFormat(pub String);

impl FromStr for Format {
    type Err = UnknownFormat;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "avro" => Format::Avro,
            "json" => Format::Json,
            "json-with-schema" => Format::JsonWithSchema,
            "json-schemaless" => Format::JsonSchemaless,
            "string" => Format::String,
            "auto" => Format::Auto,
            other => return Err(UnknownFormat(other.to_owned())),
        })
    }
}

/// The formats of a topic's keys and values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TopicFormats {
    /// Format of the key.
    pub key: Format,
    /// Format of the value.
    pub value: Format,
}

/// A Kafka header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordHeader {
    /// Header name.
    pub key: String,
    /// Header value (`None` for a null header).
    pub value: Option<Vec<u8>>,
}

impl RecordHeader {
    /// The value as UTF-8 text, if it is.
    pub fn value_str(&self) -> Option<&str> {
        self.value
            .as_deref()
            .and_then(|v| std::str::from_utf8(v).ok())
    }
}

/// A record as consumed from Kafka: the decoder's input.
///
/// ```
/// use sync_service::decode::RawRecord;
///
/// let r = RawRecord::new("cqrs.app.orders").with_value(b"{}").with_header("id", Some(b"1"));
/// assert!(r.key.is_none());
/// assert_eq!(r.headers[0].value_str(), Some("1"));
/// ```
#[derive(Debug, Clone, Default)]
pub struct RawRecord<'a> {
    /// Topic.
    pub topic: &'a str,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Key bytes (`None`: null key).
    pub key: Option<&'a [u8]>,
    /// Value bytes (`None`: tombstone).
    pub value: Option<&'a [u8]>,
    /// Headers, in order.
    pub headers: Vec<RecordHeader>,
}

impl<'a> RawRecord<'a> {
    /// A record of `topic` with null key and value.
    pub fn new(topic: &'a str) -> Self {
        RawRecord {
            topic,
            ..RawRecord::default()
        }
    }
    /// Sets the key bytes.
    pub fn with_key(mut self, key: &'a [u8]) -> Self {
        self.key = Some(key);
        self
    }
    /// Sets the value bytes.
    pub fn with_value(mut self, value: &'a [u8]) -> Self {
        self.value = Some(value);
        self
    }
    /// Appends a header.
    pub fn with_header(mut self, key: &str, value: Option<&[u8]>) -> Self {
        self.headers.push(RecordHeader {
            key: key.to_owned(),
            value: value.map(<[u8]>::to_vec),
        });
        self
    }
    /// Sets partition and offset.
    pub fn at(mut self, partition: i32, offset: i64) -> Self {
        self.partition = partition;
        self.offset = offset;
        self
    }
}

/// The format a part was actually decoded from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodedFormat {
    /// Avro with this registry schema id.
    Avro {
        /// Schema id.
        schema_id: u32,
    },
    /// Connect JSON with embedded schema.
    JsonWithSchema,
    /// Connect JSON without schema.
    JsonSchemaless,
    /// Plain string.
    String,
}

/// A decoded key or value.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodedPart {
    /// The value.
    pub datum: Datum,
    /// Its schema, when the format carries one (Avro, Connect JSON with schema).
    pub schema: Option<Arc<ConnectSchema>>,
    /// Where it came from.
    pub format: DecodedFormat,
}

/// The decoder's output: the record with key and value decoded.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodedRecord {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Decoded key (`None`: null key).
    pub key: Option<DecodedPart>,
    /// Decoded value (`None`: tombstone).
    pub value: Option<DecodedPart>,
    /// Headers, unchanged.
    pub headers: Vec<RecordHeader>,
}

impl DecodedRecord {
    /// A null value: Kafka's tombstone.
    pub fn is_tombstone(&self) -> bool {
        self.value.is_none()
    }

    /// The first header named `key`, as text.
    pub fn header_str(&self, key: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|h| h.key == key)
            .and_then(RecordHeader::value_str)
    }
}

/// Decodes records; cheap to share (`Arc`) between partition workers.
///
/// ```
/// use sync_service::decode::{Decoder, Format, RawRecord, DecodeError};
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let decoder = Decoder::without_registry().with_topic_format("t", Format::String, Format::Json);
/// let d = decoder.decode(&RawRecord::new("t").with_key(b"k1").with_value(br#"{"a":1}"#)).await.unwrap();
/// assert_eq!(d.key.unwrap().datum.as_str(), Some("k1"));
///
/// let e = decoder.decode(&RawRecord::new("other").with_value(&[0, 0, 0, 0, 1, 2])).await.unwrap_err();
/// assert!(matches!(e, DecodeError::NoRegistry { .. }));
/// # });
/// ```
#[derive(Debug, Clone, Default)]
pub struct Decoder {
    registry: Option<Arc<RegistryDecoder>>,
    default: TopicFormats,
    topics: HashMap<String, TopicFormats>,
}

impl Decoder {
    /// A decoder using `registry` for Avro; every topic defaults to [`Format::Auto`].
    pub fn new(registry: RegistryDecoder) -> Self {
        Decoder {
            registry: Some(Arc::new(registry)),
            ..Decoder::default()
        }
    }

    /// A decoder without a Schema Registry (JSON and string formats only).
    pub fn without_registry() -> Self {
        Decoder::default()
    }

    /// Sets the format of keys and values of topics without their own setting.
    pub fn with_default_format(mut self, format: Format) -> Self {
        self.default = TopicFormats {
            key: format,
            value: format,
        };
        self
    }

    /// Sets the key and value formats of one topic.
    pub fn with_topic_format(
        mut self,
        topic: impl Into<String>,
        key: Format,
        value: Format,
    ) -> Self {
        self.topics
            .insert(topic.into(), TopicFormats { key, value });
        self
    }

    /// The formats used for `topic`.
    pub fn formats_for(&self, topic: &str) -> TopicFormats {
        self.topics.get(topic).copied().unwrap_or(self.default)
    }

    /// The registry decoder, if any (for [`RegistryDecoder::forget_failures`]).
    pub fn registry(&self) -> Option<&RegistryDecoder> {
        self.registry.as_deref()
    }

    /// Decodes key and value of a record. A [`DecodeError`] says which part failed and
    /// whether retrying can help ([`DecodeError::retry`]).
    pub async fn decode(&self, record: &RawRecord<'_>) -> Result<DecodedRecord, DecodeError> {
        let formats = self.formats_for(record.topic);
        let key = match record.key {
            Some(bytes) => Some(self.decode_part(Part::Key, formats.key, bytes).await?),
            None => None,
        };
        let value = match record.value {
            Some(bytes) => Some(self.decode_part(Part::Value, formats.value, bytes).await?),
            None => None,
        };
        Ok(DecodedRecord {
            topic: record.topic.to_owned(),
            partition: record.partition,
            offset: record.offset,
            key,
            value,
            headers: record.headers.clone(),
        })
    }

    /// Decodes one part's bytes in `format`.
    pub async fn decode_part(
        &self,
        part: Part,
        format: Format,
        bytes: &[u8],
    ) -> Result<DecodedPart, DecodeError> {
        let format = match format {
            Format::Auto => sniff(part, bytes)?,
            other => other,
        };
        let (datum, schema, format) = match format {
            Format::Avro => {
                let registry = self
                    .registry
                    .as_ref()
                    .ok_or(DecodeError::NoRegistry { part })?;
                let (datum, schema, schema_id) = registry.decode(part, bytes).await?;
                (datum, Some(schema), DecodedFormat::Avro { schema_id })
            }
            Format::Json | Format::Auto => {
                with_json_format(decode_json(part, bytes, JsonShape::Detect)?)
            }
            Format::JsonWithSchema => {
                with_json_format(decode_json(part, bytes, JsonShape::WithSchema)?)
            }
            Format::JsonSchemaless => {
                with_json_format(decode_json(part, bytes, JsonShape::Schemaless)?)
            }
            Format::String => {
                let s = std::str::from_utf8(bytes).map_err(|_| DecodeError::NotUtf8 { part })?;
                (Datum::String(s.to_owned()), None, DecodedFormat::String)
            }
        };
        Ok(DecodedPart {
            datum,
            schema,
            format,
        })
    }
}

fn with_json_format(
    (datum, schema): (Datum, Option<Arc<ConnectSchema>>),
) -> (Datum, Option<Arc<ConnectSchema>>, DecodedFormat) {
    let format = if schema.is_some() {
        DecodedFormat::JsonWithSchema
    } else {
        DecodedFormat::JsonSchemaless
    };
    (datum, schema, format)
}

/// `auto`: magic byte 0 is Avro, the start of a JSON text is JSON.
fn sniff(part: Part, bytes: &[u8]) -> Result<Format, DecodeError> {
    let Some(&first) = bytes.first() else {
        return Err(DecodeError::NotWireFormat {
            part,
            problem: WireFormatProblem::Empty,
        });
    };
    if first == 0 {
        return Ok(Format::Avro);
    }
    let first_text = bytes
        .iter()
        .copied()
        .find(|b| !b.is_ascii_whitespace())
        .unwrap_or(first);
    match first_text {
        b'{' | b'[' | b'"' | b'-' | b'0'..=b'9' | b't' | b'f' | b'n' => Ok(Format::Json),
        _ => Err(DecodeError::UnrecognisedFormat {
            part,
            first_byte: first,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniffs_formats() {
        assert_eq!(sniff(Part::Value, &[0, 0, 0, 0, 1]), Ok(Format::Avro));
        assert_eq!(sniff(Part::Value, b" {\"a\":1}"), Ok(Format::Json));
        assert!(matches!(
            sniff(Part::Key, &[0x80, 1]),
            Err(DecodeError::UnrecognisedFormat {
                part: Part::Key,
                first_byte: 0x80
            })
        ));
        assert!(matches!(
            sniff(Part::Value, b""),
            Err(DecodeError::NotWireFormat {
                problem: WireFormatProblem::Empty,
                ..
            })
        ));
    }
}
