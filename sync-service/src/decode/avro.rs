//! Confluent wire-format Avro through the Schema Registry.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use apache_avro::types::Value;
use schema_registry_converter::async_impl::avro::AvroDecoder;
use schema_registry_converter::async_impl::schema_registry::SrSettings;
use schema_registry_converter::error::SRCError;

use super::error::{DecodeError, Part, WireFormatProblem};
use super::{ConnectSchema, Datum};

/// Splits Confluent wire-format bytes into the schema id and the body.
///
/// ```
/// use sync_service::decode::{split_wire_format, WireFormatProblem};
///
/// assert_eq!(split_wire_format(&[0, 0, 0, 1, 2, 42]), Ok((258, &[42u8][..])));
/// assert_eq!(split_wire_format(&[1, 0, 0, 0, 1]), Err(WireFormatProblem::BadMagicByte { byte: 1 }));
/// assert_eq!(split_wire_format(&[0, 0]), Err(WireFormatProblem::TooShort { len: 2 }));
/// ```
pub fn split_wire_format(bytes: &[u8]) -> Result<(u32, &[u8]), WireFormatProblem> {
    match bytes {
        [] => Err(WireFormatProblem::Empty),
        [first, ..] if *first != 0 => Err(WireFormatProblem::BadMagicByte { byte: *first }),
        [0, a, b, c, d, body @ ..] => Ok((u32::from_be_bytes([*a, *b, *c, *d]), body)),
        short => Err(WireFormatProblem::TooShort { len: short.len() }),
    }
}

/// An invalid registry configuration (bad URL, TLS setup): the client's own error.
#[derive(Debug, Clone, thiserror::Error)]
#[error("invalid Schema Registry settings: {0}")]
pub struct RegistryConfigError(#[source] pub SRCError);

/// Decodes Confluent wire-format Avro with schemas from the Schema Registry.
///
/// Wraps `schema_registry_converter`'s async [`AvroDecoder`] (which fetches each schema id
/// once and caches it) and keeps, per schema id, the [`ConnectSchema`] read from the **raw**
/// schema JSON (`decode_with_schema`), since the parsed Avro schema loses `connect.name` on
/// primitive types.
///
/// Unknown schema ids: the underlying decoder caches a 404 forever. This decoder remembers
/// the failure (and other permanent ones: a refused request, an unusable schema) for
/// [`RegistryDecoder::with_unknown_id_retry_after`] (30 s by default), answering
/// [`DecodeError::UnknownSchemaId`] without a request meanwhile; after that it clears the
/// decoder's error cache (`remove_errors_from_cache`) and asks the registry again, so a schema
/// registered later is found. [`RegistryDecoder::forget_failures`] does the same at once (for
/// a dead-letter replay). Server errors (5xx, timeouts, connection failures, 401/403/408/429)
/// are [`DecodeError::RegistryUnavailable`] (transient) and never stay cached.
#[derive(Debug)]
pub struct RegistryDecoder {
    inner: AvroDecoder,
    schemas: RwLock<HashMap<u32, Arc<ConnectSchema>>>,
    failures: Mutex<HashMap<u32, (Instant, Failure)>>,
    unknown_retry_after: Duration,
}

impl RegistryDecoder {
    /// A decoder for the registry at `url` (for example `http://127.0.0.1:8081`), with a
    /// 10 s request timeout.
    ///
    /// ```
    /// use sync_service::decode::RegistryDecoder;
    ///
    /// let registry = RegistryDecoder::new("http://127.0.0.1:8081").unwrap();
    /// # drop(registry);
    /// ```
    pub fn new(url: &str) -> Result<Self, RegistryConfigError> {
        let settings = SrSettings::new_builder(url.trim_end_matches('/').to_owned())
            .set_timeout(Duration::from_secs(10))
            .build()
            .map_err(RegistryConfigError)?;
        Ok(Self::from_settings(settings))
    }

    /// A decoder from full settings (authentication, several URLs, proxy).
    pub fn from_settings(settings: SrSettings) -> Self {
        RegistryDecoder {
            inner: AvroDecoder::new(settings),
            schemas: RwLock::new(HashMap::new()),
            failures: Mutex::new(HashMap::new()),
            unknown_retry_after: Duration::from_secs(30),
        }
    }

    /// How long an unknown schema id is answered from memory before the registry is asked
    /// again.
    pub fn with_unknown_id_retry_after(mut self, after: Duration) -> Self {
        self.unknown_retry_after = after;
        self
    }

    /// Forgets every cached failure, so the next record asks the registry again.
    pub fn forget_failures(&self) {
        self.failures
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        self.inner.remove_errors_from_cache();
    }

    /// Decodes wire-format bytes into a datum and the schema read from the raw schema JSON.
    pub async fn decode(
        &self,
        part: Part,
        bytes: &[u8],
    ) -> Result<(Datum, Arc<ConnectSchema>, u32), DecodeError> {
        let (id, _) = split_wire_format(bytes)
            .map_err(|problem| DecodeError::NotWireFormat { part, problem })?;
        self.check_failures(part, id)?;
        // Fetch (or hit the cache) first, so registry errors and body errors are told apart.
        if let Err(e) = self.inner.get_schema(id).await {
            return Err(self.classify_registry_error(part, id, &e));
        }
        let decoded = self
            .inner
            .decode_with_schema(Some(bytes))
            .await
            .map_err(|e| DecodeError::CorruptAvro {
                part,
                id,
                detail: describe(&e),
            })?
            .ok_or(DecodeError::NotWireFormat {
                part,
                problem: WireFormatProblem::Empty,
            })?;
        let schema = self.connect_schema(part, id, &decoded.schema.raw)?;
        let datum = avro_to_datum(decoded.value).map_err(|detail| DecodeError::CorruptAvro {
            part,
            id,
            detail,
        })?;
        Ok((datum, schema, id))
    }

    fn check_failures(&self, part: Part, id: u32) -> Result<(), DecodeError> {
        let mut failures = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((since, failure)) = failures.get(&id) {
            if since.elapsed() < self.unknown_retry_after {
                return Err(failure.to_error(part, id));
            }
            failures.remove(&id);
            self.inner.remove_errors_from_cache();
        }
        Ok(())
    }

    fn connect_schema(
        &self,
        part: Part,
        id: u32,
        raw: &str,
    ) -> Result<Arc<ConnectSchema>, DecodeError> {
        if let Some(s) = self
            .schemas
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&id)
        {
            return Ok(s.clone());
        }
        let schema = Arc::new(ConnectSchema::from_avro_json(raw).map_err(|e| {
            DecodeError::InvalidSchema {
                part,
                id,
                detail: e.to_string(),
            }
        })?);
        self.schemas
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, schema.clone());
        Ok(schema)
    }

    fn classify_registry_error(&self, part: Part, id: u32, e: &SRCError) -> DecodeError {
        let detail = describe(e);
        let status = http_status(&e.error);
        let failure = match status {
            Some(404) => Failure::Unknown(detail),
            Some(s) if s >= 500 || matches!(s, 401 | 403 | 408 | 429) => {
                // Transient: the underlying decoder caches every non-502/503 error, which must
                // not stick, or a recovered registry would never be asked again.
                self.inner.remove_errors_from_cache();
                return DecodeError::RegistryUnavailable { part, id, detail };
            }
            Some(_) => Failure::Rejected(detail),
            None if e.retriable => return DecodeError::RegistryUnavailable { part, id, detail },
            None => Failure::Invalid(detail),
        };
        // Permanent for now: answered from memory for a while, then asked again (see
        // `check_failures`), so one bad id does not cost a request per record.
        let error = failure.to_error(part, id);
        self.failures
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, (Instant::now(), failure));
        error
    }
}

/// A permanent registry failure remembered for a while.
#[derive(Debug, Clone)]
enum Failure {
    Unknown(String),
    Rejected(String),
    Invalid(String),
}

impl Failure {
    fn to_error(&self, part: Part, id: u32) -> DecodeError {
        match self.clone() {
            Failure::Unknown(detail) => DecodeError::UnknownSchemaId { part, id, detail },
            Failure::Rejected(detail) => DecodeError::RegistryRejected { part, id, detail },
            Failure::Invalid(detail) => DecodeError::InvalidSchema { part, id, detail },
        }
    }
}

fn describe(e: &SRCError) -> String {
    match &e.cause {
        Some(cause) => format!("{}: {}", e.error, cause),
        None => e.error.clone(),
    }
}

/// The status in "HTTP request to schema registry failed with status 404 Not Found".
fn http_status(message: &str) -> Option<u16> {
    let (_, rest) = message.split_once("with status ")?;
    rest.split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// Lowers an apache-avro value to a [`Datum`]: unions unwrap, logical values become their
/// underlying representation (decimals their unscaled bytes).
pub(crate) fn avro_to_datum(value: Value) -> Result<Datum, String> {
    Ok(match value {
        Value::Null => Datum::Null,
        Value::Boolean(b) => Datum::Boolean(b),
        Value::Int(i) | Value::Date(i) | Value::TimeMillis(i) => Datum::Int(i64::from(i)),
        Value::Long(i)
        | Value::TimeMicros(i)
        | Value::TimestampMillis(i)
        | Value::TimestampMicros(i)
        | Value::TimestampNanos(i)
        | Value::LocalTimestampMillis(i)
        | Value::LocalTimestampMicros(i)
        | Value::LocalTimestampNanos(i) => Datum::Int(i),
        Value::Float(f) => Datum::Float(f64::from(f)),
        Value::Double(f) => Datum::Float(f),
        Value::Bytes(b) | Value::Fixed(_, b) => Datum::Bytes(b),
        Value::String(s) | Value::Enum(_, s) => Datum::String(s),
        Value::Uuid(u) => Datum::String(u.to_string()),
        Value::Union(_, inner) => avro_to_datum(*inner)?,
        Value::Array(items) => Datum::Array(
            items
                .into_iter()
                .map(avro_to_datum)
                .collect::<Result<_, _>>()?,
        ),
        Value::Map(map) => {
            let mut entries = map
                .into_iter()
                .map(|(k, v)| Ok((k, avro_to_datum(v)?)))
                .collect::<Result<Vec<_>, String>>()?;
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            Datum::Map(entries)
        }
        Value::Record(fields) => Datum::Struct(
            fields
                .into_iter()
                .map(|(k, v)| Ok((k, avro_to_datum(v)?)))
                .collect::<Result<_, String>>()?,
        ),
        Value::Decimal(d) => {
            Datum::Bytes(Vec::<u8>::try_from(&d).map_err(|e| format!("unreadable decimal: {e}"))?)
        }
        Value::BigDecimal(d) => Datum::String(d.to_string()),
        Value::Duration(_) => return Err("the Avro duration logical type is not supported".into()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_status_from_converter_messages() {
        assert_eq!(
            http_status("HTTP request to schema registry failed with status 404 Not Found"),
            Some(404)
        );
        assert_eq!(http_status("http call to schema registry failed"), None);
    }

    #[test]
    fn lowers_logical_values() {
        let v = Value::Record(vec![
            ("d".into(), Value::Date(-1)),
            ("n".into(), Value::Union(0, Box::new(Value::Null))),
            (
                "x".into(),
                Value::Decimal(apache_avro::Decimal::from(vec![0xff, 0x85])),
            ),
        ]);
        assert_eq!(
            avro_to_datum(v).unwrap(),
            Datum::Struct(vec![
                ("d".into(), Datum::Int(-1)),
                ("n".into(), Datum::Null),
                ("x".into(), Datum::Bytes(vec![0xff, 0x85])),
            ])
        );
    }
}
