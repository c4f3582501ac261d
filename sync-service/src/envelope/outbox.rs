//! Events routed by Debezium's outbox event router
//! (`io.debezium.transforms.outbox.EventRouter`).

use bson::{Bson, Document};

use crate::decode::{DecodedRecord, RecordHeader};
use crate::types::{self, TypeOptions};

use super::EnvelopeError;

/// Where outbox events are recognised and how their parts are found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxOptions {
    /// Topics starting with one of these are outbox topics (the router's default
    /// `route.topic.replacement` is `outbox.event.${routedByValue}`); the rest of the topic
    /// name is the aggregate type.
    pub topic_prefixes: Vec<String>,
    /// Exact topic names that are outbox topics too.
    pub topics: Vec<String>,
    /// Header carrying the event id (`id` by default).
    pub event_id_header: String,
    /// Headers or value fields (envelope placement) carrying the event type, tried in order.
    pub event_type_keys: Vec<String>,
    /// Value field holding the payload when the router placed extra fields in the envelope.
    pub payload_field: String,
}

impl Default for OutboxOptions {
    fn default() -> Self {
        OutboxOptions {
            topic_prefixes: vec!["outbox.event.".into()],
            topics: Vec::new(),
            event_id_header: "id".into(),
            event_type_keys: vec!["eventType".into(), "type".into()],
            payload_field: "payload".into(),
        }
    }
}

impl OutboxOptions {
    /// Whether `topic` carries outbox events.
    pub fn matches(&self, topic: &str) -> bool {
        self.topics.iter().any(|t| t == topic)
            || self
                .topic_prefixes
                .iter()
                .any(|p| topic.starts_with(p.as_str()))
    }

    fn aggregate_type(&self, topic: &str) -> Option<String> {
        self.topic_prefixes
            .iter()
            .find_map(|p| topic.strip_prefix(p.as_str()))
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    }
}

/// An event routed by the outbox event router.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxEvent {
    /// Event id (the `id` header).
    pub event_id: Option<String>,
    /// The record key: the aggregate id.
    pub aggregate_id: Option<Bson>,
    /// Aggregate type, from the topic name.
    pub aggregate_type: Option<String>,
    /// Event type, from a header or an envelope field.
    pub event_type: Option<String>,
    /// The payload: a document when it is (or is a string of) a JSON object.
    pub payload: Bson,
    /// Other fields the router placed in the value next to the payload.
    pub fields: Document,
    /// All record headers.
    pub headers: Vec<RecordHeader>,
    /// The topic.
    pub topic: String,
}

impl OutboxEvent {
    /// The aggregate id as text, if it is a string or a number.
    pub fn aggregate_id_str(&self) -> Option<String> {
        match self.aggregate_id.as_ref()? {
            Bson::String(s) => Some(s.clone()),
            Bson::Int32(i) => Some(i.to_string()),
            Bson::Int64(i) => Some(i.to_string()),
            Bson::Binary(b) => uuid::Uuid::from_slice(&b.bytes).ok().map(|u| u.to_string()),
            _ => None,
        }
    }
}

pub(super) fn parse_outbox(
    record: &DecodedRecord,
    options: &OutboxOptions,
    types: &TypeOptions,
) -> Result<OutboxEvent, EnvelopeError> {
    let aggregate_id = match &record.key {
        Some(k) => Some(
            types::to_bson_with(&k.datum, k.schema.as_deref(), types)
                .map_err(EnvelopeError::Types)?,
        ),
        None => None,
    };
    let value = match &record.value {
        Some(v) => types::to_bson_with(&v.datum, v.schema.as_deref(), types)
            .map_err(EnvelopeError::Types)?,
        None => Bson::Null,
    };
    let header = |name: &str| record.header_str(name).map(str::to_owned);
    let (payload, mut fields) = match value {
        Bson::Document(mut doc)
            if doc.contains_key(&options.payload_field) && is_envelope_placement(&doc, options) =>
        {
            let payload = doc.remove(&options.payload_field).unwrap_or(Bson::Null);
            (payload, doc)
        }
        other => (other, Document::new()),
    };
    let payload = match payload {
        Bson::String(s) => match types::json_text_to_bson(&s) {
            Ok(b @ (Bson::Document(_) | Bson::Array(_))) => b,
            _ => Bson::String(s),
        },
        other => other,
    };
    let event_type = options
        .event_type_keys
        .iter()
        .find_map(|k| header(k))
        .or_else(|| {
            options
                .event_type_keys
                .iter()
                .find_map(|k| match fields.remove(k) {
                    Some(Bson::String(s)) => Some(s),
                    _ => None,
                })
        });
    Ok(OutboxEvent {
        event_id: header(&options.event_id_header),
        aggregate_id,
        aggregate_type: options.aggregate_type(&record.topic),
        event_type,
        payload,
        fields,
        headers: record.headers.clone(),
        topic: record.topic.clone(),
    })
}

/// A value with the payload field *and* one of the event type keys (or nothing else) was
/// built by the router's envelope placement; otherwise the whole value is the payload.
fn is_envelope_placement(doc: &Document, options: &OutboxOptions) -> bool {
    doc.len() == 1 || options.event_type_keys.iter().any(|k| doc.contains_key(k))
}
