//! Envelope stage: a decoded record into an [`Event`].
//!
//! Debezium PostgreSQL change events become [`Change`]s (row images converted to BSON by
//! the [`types`] stage, version from the LSN). Tombstones, heartbeats,
//! schema-change and transaction-boundary messages are recognised as skippable kinds
//! ([`Event::is_skippable`]); records on outbox topics no projection reads are recognised and
//! skipped (the pipeline decodes those it projects with `cqrs-core`'s outbox decoder). Anything
//! else is an [`EnvelopeError::NotAnEnvelope`].

use bson::Document;
use cqrs_core::SourceVersion;

pub use cqrs_projection::{Change, Op, Snapshot, Source, TransactionInfo};

use crate::decode::{ConnectSchema, Datum, DecodedPart, DecodedRecord};
use crate::types::{self, TypeError, TypeOptions};

/// What a record turned out to be.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A row change (or truncate, or logical message).
    Change(Box<Change>),
    /// A null value: Kafka's tombstone after a delete (log compaction marker).
    Tombstone {
        /// The key of the deleted row, if any.
        key: Option<Document>,
    },
    /// A Debezium heartbeat (`__debezium-heartbeat.<prefix>` topic).
    Heartbeat {
        /// The heartbeat's `ts_ms`.
        ts_ms: Option<i64>,
    },
    /// A schema-change message (`ddl` / `tableChanges`).
    SchemaChange {
        /// The DDL statement, if present.
        ddl: Option<String>,
    },
    /// A transaction BEGIN/END marker (`<prefix>.transaction` topic).
    TransactionBoundary {
        /// `BEGIN` or `END`.
        status: String,
        /// Transaction id.
        id: String,
    },
    /// A record of an outbox topic (`outbox.event.<type>`) that no projection reads.
    Outbox {
        /// The topic.
        topic: String,
    },
}

impl Event {
    /// Kinds the projection stage has nothing to do with: tombstones (the delete came
    /// before), heartbeats, schema changes, transaction markers, unread outbox topics.
    pub fn is_skippable(&self) -> bool {
        !matches!(self, Event::Change(_))
    }

    /// A short name of the kind, for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Event::Change(_) => "change",
            Event::Tombstone { .. } => "tombstone",
            Event::Heartbeat { .. } => "heartbeat",
            Event::SchemaChange { .. } => "schema_change",
            Event::TransactionBoundary { .. } => "transaction_boundary",
            Event::Outbox { .. } => "outbox",
        }
    }
}

/// A record that is not what its topic should carry.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum EnvelopeError {
    /// Not a Debezium envelope nor any other recognised message.
    #[error("topic {topic}: not a Debezium change event: {detail}")]
    NotAnEnvelope {
        /// Topic.
        topic: String,
        /// What was found.
        detail: String,
    },
    /// A required envelope field is missing or null.
    #[error("missing Debezium envelope field {field}")]
    MissingField {
        /// Dotted field name.
        field: &'static str,
    },
    /// An envelope field has the wrong type or value.
    #[error("Debezium envelope field {field}: {detail}")]
    InvalidField {
        /// Dotted field name.
        field: &'static str,
        /// What is wrong.
        detail: String,
    },
    /// A row image or key could not be converted to BSON.
    #[error("{0}")]
    Types(#[from] TypeError),
}

/// Parses decoded records into [`Event`]s.
///
/// ```
/// use sync_service::decode::{DecodedFormat, DecodedPart, DecodedRecord, Datum};
/// use sync_service::envelope::{EnvelopeParser, Event};
///
/// let record = DecodedRecord {
///     topic: "__debezium-heartbeat.cqrs".into(), partition: 0, offset: 0, key: None,
///     value: Some(DecodedPart { datum: Datum::Struct(vec![("ts_ms".into(), Datum::Int(5))]),
///         schema: None, format: DecodedFormat::JsonSchemaless }),
///     headers: vec![],
/// };
/// let event = EnvelopeParser::default().parse(&record).unwrap();
/// assert_eq!(event, Event::Heartbeat { ts_ms: Some(5) });
/// assert!(event.is_skippable());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvelopeParser {
    /// Conversion options for row images.
    pub types: TypeOptions,
    /// Outbox topics start with this (`outbox.event.` by default).
    pub outbox_topic_prefix: String,
    /// Heartbeat topics start with this (`__debezium-heartbeat` by default).
    pub heartbeat_topic_prefix: String,
}

impl Default for EnvelopeParser {
    fn default() -> Self {
        EnvelopeParser {
            types: TypeOptions::default(),
            outbox_topic_prefix: cqrs_core::outbox::TOPIC_PREFIX.into(),
            heartbeat_topic_prefix: "__debezium-heartbeat".into(),
        }
    }
}

impl EnvelopeParser {
    /// Recognises and parses one decoded record.
    pub fn parse(&self, record: &DecodedRecord) -> Result<Event, EnvelopeError> {
        let value = record.value.as_ref().filter(|v| !v.datum.is_null());
        if record.topic.starts_with(&self.heartbeat_topic_prefix) {
            return Ok(Event::Heartbeat {
                ts_ms: value
                    .and_then(|v| v.datum.get("ts_ms"))
                    .and_then(Datum::as_i64),
            });
        }
        let Some(value) = value else {
            return Ok(Event::Tombstone {
                key: self.key_document(record)?,
            });
        };
        if record.topic.starts_with(&self.outbox_topic_prefix) {
            return Ok(Event::Outbox {
                topic: record.topic.clone(),
            });
        }
        let datum = &value.datum;
        if !matches!(datum, Datum::Struct(_) | Datum::Map(_)) {
            return Err(self.not_envelope(record, format!("the value is a {}", datum.kind())));
        }
        let schema_name = value
            .schema
            .as_deref()
            .map(ConnectSchema::name_str)
            .unwrap_or("");
        let fields = datum.field_names();
        if fields.contains(&"op") {
            return self
                .parse_change(record, value)
                .map(|c| Event::Change(Box::new(c)));
        }
        if schema_name == "io.debezium.connector.common.Heartbeat" || fields == ["ts_ms"] {
            return Ok(Event::Heartbeat {
                ts_ms: datum.get("ts_ms").and_then(Datum::as_i64),
            });
        }
        if fields.contains(&"ddl")
            || fields.contains(&"tableChanges")
            || schema_name.ends_with("SchemaChangeValue")
        {
            return Ok(Event::SchemaChange {
                ddl: datum.get("ddl").and_then(Datum::as_str).map(str::to_owned),
            });
        }
        if fields.contains(&"status")
            && fields.contains(&"id")
            && (fields.contains(&"event_count") || fields.contains(&"data_collections"))
        {
            return Ok(Event::TransactionBoundary {
                status: datum
                    .get("status")
                    .and_then(Datum::as_str)
                    .unwrap_or("")
                    .to_owned(),
                id: datum
                    .get("id")
                    .and_then(Datum::as_str)
                    .unwrap_or("")
                    .to_owned(),
            });
        }
        Err(self.not_envelope(
            record,
            format!("no \"op\" field (fields: {})", fields.join(", ")),
        ))
    }

    fn not_envelope(&self, record: &DecodedRecord, detail: String) -> EnvelopeError {
        EnvelopeError::NotAnEnvelope {
            topic: record.topic.clone(),
            detail,
        }
    }

    fn key_document(&self, record: &DecodedRecord) -> Result<Option<Document>, EnvelopeError> {
        let Some(key) = &record.key else {
            return Ok(None);
        };
        if key.datum.is_null() {
            return Ok(None);
        }
        match &key.datum {
            Datum::Struct(_) | Datum::Map(_) => Ok(Some(types::row_to_document(
                &key.datum,
                key.schema.as_deref(),
                &self.types,
            )?)),
            // A scalar key (not Debezium's, but possible with other routing): `{key: value}`.
            other => {
                let mut doc = Document::new();
                doc.insert(
                    "key",
                    types::to_bson_with(other, key.schema.as_deref(), &self.types)?,
                );
                Ok(Some(doc))
            }
        }
    }

    fn parse_change(
        &self,
        record: &DecodedRecord,
        value: &DecodedPart,
    ) -> Result<Change, EnvelopeError> {
        let datum = &value.datum;
        let schema = value.schema.as_deref();
        let op_text = datum
            .get("op")
            .and_then(Datum::as_str)
            .ok_or(EnvelopeError::MissingField { field: "op" })?;
        let op = Op::from_code(op_text).ok_or_else(|| EnvelopeError::InvalidField {
            field: "op",
            detail: format!("unknown operation {op_text:?}"),
        })?;
        let image = |name: &str| -> Result<Option<types::RowImage>, EnvelopeError> {
            match datum.get(name) {
                None | Some(Datum::Null) => Ok(None),
                Some(row) => Ok(Some(types::row_image(
                    row,
                    schema.and_then(|s| s.field(name)),
                    &self.types,
                )?)),
            }
        };
        let before = image("before")?.map(|i| i.document);
        let (after, unavailable) = match image("after")? {
            Some(i) => (Some(i.document), i.unavailable),
            None => (None, Vec::new()),
        };
        let source = parse_source(
            datum
                .get("source")
                .ok_or(EnvelopeError::MissingField { field: "source" })?,
        )?;
        let transaction = match datum.get("transaction") {
            None | Some(Datum::Null) => None,
            Some(t) => Some(TransactionInfo {
                id: t
                    .get("id")
                    .and_then(Datum::as_str)
                    .ok_or(EnvelopeError::MissingField {
                        field: "transaction.id",
                    })?
                    .to_owned(),
                total_order: t.get("total_order").and_then(Datum::as_i64),
                data_collection_order: t.get("data_collection_order").and_then(Datum::as_i64),
            }),
        };
        // Rows of an incremental (signalled) snapshot carry no LSN: whatever position they
        // were given could not be compared with the changes that follow them (see
        // cqrs_mongo's fill writes). They get the lowest version and are written as fills.
        let lsn = match (source.lsn, &source.snapshot) {
            (Some(lsn), _) => lsn,
            (None, Snapshot::Incremental) if op == Op::Read => 0,
            (None, _) => {
                return Err(EnvelopeError::MissingField {
                    field: "source.lsn",
                });
            }
        };
        match op {
            Op::Create | Op::Read if after.is_none() => {
                return Err(EnvelopeError::MissingField { field: "after" });
            }
            Op::Update if after.is_none() => {
                return Err(EnvelopeError::MissingField { field: "after" });
            }
            _ => {}
        }
        Ok(Change {
            op,
            key: self.key_document(record)?,
            before,
            after,
            unavailable,
            source,
            transaction,
            ts_ms: datum.get("ts_ms").and_then(Datum::as_i64),
            version: SourceVersion::new(lsn),
            topic: record.topic.clone(),
        })
    }
}

fn parse_source(source: &Datum) -> Result<Source, EnvelopeError> {
    if !matches!(source, Datum::Struct(_) | Datum::Map(_)) {
        return Err(EnvelopeError::InvalidField {
            field: "source",
            detail: format!("expected a struct, found {}", source.kind()),
        });
    }
    let text = |name: &str| source.get(name).and_then(Datum::as_str).map(str::to_owned);
    let int = |name: &str| source.get(name).and_then(Datum::as_i64);
    let lsn = match source.get("lsn") {
        None | Some(Datum::Null) => None,
        Some(Datum::Int(i)) => {
            Some(u64::try_from(*i).map_err(|_| EnvelopeError::InvalidField {
                field: "source.lsn",
                detail: format!("negative LSN {i}"),
            })?)
        }
        Some(other) => {
            return Err(EnvelopeError::InvalidField {
                field: "source.lsn",
                detail: format!("expected an integer, found {}", other.kind()),
            });
        }
    };
    let snapshot = match source.get("snapshot") {
        None | Some(Datum::Null) => Snapshot::No,
        Some(Datum::String(s)) => Snapshot::parse(s),
        Some(Datum::Boolean(b)) => Snapshot::parse(if *b { "true" } else { "false" }),
        Some(other) => {
            return Err(EnvelopeError::InvalidField {
                field: "source.snapshot",
                detail: format!("expected a string, found {}", other.kind()),
            });
        }
    };
    Ok(Source {
        version: text("version"),
        connector: text("connector"),
        name: text("name"),
        db: text("db"),
        schema: text("schema"),
        table: text("table"),
        lsn,
        tx_id: int("txId"),
        xmin: int("xmin"),
        ts_ms: int("ts_ms"),
        snapshot,
        sequence: text("sequence"),
    })
}
