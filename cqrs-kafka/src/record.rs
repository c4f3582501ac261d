//! The records the loop hands to its handler: our own type, so that the stages behind the
//! loop (and their unit tests) never need a Kafka client or an `rdkafka` message.

use cqrs_core::outbox::{DecodeError, IntegrationEvent};
use rdkafka::Message;
use rdkafka::message::Headers;

/// One record header: a key and a value that may be null.
///
/// ```
/// let h = cqrs_kafka::Header::new("traceparent", Some(b"00-ab".to_vec()));
/// assert_eq!(h.value.as_deref(), Some(&b"00-ab"[..]));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Header name.
    pub key: String,
    /// Header value (`None`: a null value).
    pub value: Option<Vec<u8>>,
}

impl Header {
    /// A header.
    ///
    /// ```
    /// assert!(cqrs_kafka::Header::new("k", None).value.is_none());
    /// ```
    pub fn new(key: impl Into<String>, value: Option<Vec<u8>>) -> Self {
        Header {
            key: key.into(),
            value,
        }
    }
}

/// A consumed record: where it was read, its key, value, headers and timestamp.
///
/// ```
/// use cqrs_kafka::Record;
///
/// let r = Record::new("cqrs.app.orders", 2, 41)
///     .with_key(b"{\"id\":1}".to_vec())
///     .with_value(b"{}".to_vec())
///     .with_header("traceparent", Some(b"00-ab".to_vec()));
/// assert_eq!(r.id(), "cqrs.app.orders/2/41");
/// assert_eq!(r.header("traceparent"), Some(&b"00-ab"[..]));
/// assert!(r.timestamp.is_none());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Record {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Offset in the partition.
    pub offset: i64,
    /// Key bytes (`None`: a null key).
    pub key: Option<Vec<u8>>,
    /// Value bytes (`None`: a tombstone).
    pub value: Option<Vec<u8>>,
    /// Headers, in order.
    pub headers: Vec<Header>,
    /// Record timestamp in milliseconds since the epoch, when the broker gave one.
    pub timestamp: Option<i64>,
}

impl Record {
    /// A record of `topic` at `partition` / `offset`, with null key and value.
    ///
    /// ```
    /// let r = cqrs_kafka::Record::new("t", 0, 7);
    /// assert!(r.key.is_none() && r.value.is_none());
    /// ```
    pub fn new(topic: impl Into<String>, partition: i32, offset: i64) -> Self {
        Record {
            topic: topic.into(),
            partition,
            offset,
            ..Record::default()
        }
    }

    /// Sets the key.
    ///
    /// ```
    /// assert_eq!(cqrs_kafka::Record::new("t", 0, 0).with_key(b"k".to_vec()).key(), Some(&b"k"[..]));
    /// ```
    pub fn with_key(mut self, key: impl Into<Vec<u8>>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Sets the value.
    ///
    /// ```
    /// assert_eq!(cqrs_kafka::Record::new("t", 0, 0).with_value(b"v".to_vec()).value(), Some(&b"v"[..]));
    /// ```
    pub fn with_value(mut self, value: impl Into<Vec<u8>>) -> Self {
        self.value = Some(value.into());
        self
    }

    /// Appends a header.
    ///
    /// ```
    /// let r = cqrs_kafka::Record::new("t", 0, 0).with_header("k", None);
    /// assert_eq!(r.headers.len(), 1);
    /// ```
    pub fn with_header(mut self, key: impl Into<String>, value: Option<Vec<u8>>) -> Self {
        self.headers.push(Header::new(key, value));
        self
    }

    /// Sets the timestamp (milliseconds since the epoch).
    ///
    /// ```
    /// assert_eq!(cqrs_kafka::Record::new("t", 0, 0).with_timestamp(5).timestamp, Some(5));
    /// ```
    pub fn with_timestamp(mut self, millis: i64) -> Self {
        self.timestamp = Some(millis);
        self
    }

    /// The key bytes.
    ///
    /// ```
    /// assert_eq!(cqrs_kafka::Record::new("t", 0, 0).key(), None);
    /// ```
    pub fn key(&self) -> Option<&[u8]> {
        self.key.as_deref()
    }

    /// The value bytes.
    ///
    /// ```
    /// assert_eq!(cqrs_kafka::Record::new("t", 0, 0).value(), None);
    /// ```
    pub fn value(&self) -> Option<&[u8]> {
        self.value.as_deref()
    }

    /// The headers as `(name, value)` pairs, in order.
    ///
    /// ```
    /// let r = cqrs_kafka::Record::new("t", 0, 0).with_header("a", Some(b"1".to_vec()));
    /// assert_eq!(r.headers_iter().collect::<Vec<_>>(), vec![("a", Some(&b"1"[..]))]);
    /// ```
    pub fn headers_iter(&self) -> impl Iterator<Item = (&str, Option<&[u8]>)> {
        self.headers
            .iter()
            .map(|h| (h.key.as_str(), h.value.as_deref()))
    }

    /// The value of the first header named `key` that has one.
    ///
    /// ```
    /// let r = cqrs_kafka::Record::new("t", 0, 0).with_header("a", None).with_header("a", Some(b"2".to_vec()));
    /// assert_eq!(r.header("a"), Some(&b"2"[..]));
    /// ```
    pub fn header(&self, key: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .filter(|h| h.key == key)
            .find_map(|h| h.value.as_deref())
    }

    /// `topic/partition/offset`: the record's identity across the toolkit (dead-letter
    /// ids, logs).
    ///
    /// ```
    /// assert_eq!(cqrs_kafka::Record::new("t", 1, 2).id(), "t/1/2");
    /// ```
    pub fn id(&self) -> String {
        format!("{}/{}/{}", self.topic, self.partition, self.offset)
    }

    /// The record as an integration event of an outbox topic (`cqrs-core`'s one outbox
    /// decoder); `Ok(None)` for a tombstone.
    ///
    /// ```
    /// let r = cqrs_kafka::Record::new("outbox.event.Order", 0, 3)
    ///     .with_key(b"o-1".to_vec())
    ///     .with_value(br#"{"total":5}"#.to_vec())
    ///     .with_header("id", Some(b"0190c3f6-6c1e-7c4e-9c1e-3a2b1c0d9e8f".to_vec()))
    ///     .with_header("eventType", Some(b"OrderPlaced".to_vec()));
    /// let event = r.integration_event().unwrap().unwrap();
    /// assert_eq!((event.aggregate_id.as_str(), event.position.offset), ("o-1", 3));
    /// ```
    pub fn integration_event(&self) -> Result<Option<IntegrationEvent>, DecodeError> {
        IntegrationEvent::from_record(
            &self.topic,
            self.partition,
            self.offset,
            self.key(),
            self.value(),
            self.headers_iter(),
        )
    }

    /// Copies an `rdkafka` message (borrowed from the consumer or owned).
    ///
    /// ```
    /// use rdkafka::message::OwnedMessage;
    /// use rdkafka::Timestamp;
    /// let m = OwnedMessage::new(Some(b"v".to_vec()), None, "t".into(), Timestamp::CreateTime(9), 1, 2, None);
    /// let r = cqrs_kafka::Record::from_message(&m);
    /// assert_eq!((r.id(), r.timestamp, r.value()), ("t/1/2".to_string(), Some(9), Some(&b"v"[..])));
    /// ```
    pub fn from_message<M: Message>(message: &M) -> Self {
        let headers = message
            .headers()
            .map(|hs| {
                hs.iter()
                    .map(|h| Header::new(h.key, h.value.map(<[u8]>::to_vec)))
                    .collect()
            })
            .unwrap_or_default();
        Record {
            topic: message.topic().to_owned(),
            partition: message.partition(),
            offset: message.offset(),
            key: message.key().map(<[u8]>::to_vec),
            value: message.payload().map(<[u8]>::to_vec),
            headers,
            timestamp: message.timestamp().to_millis(),
        }
    }
}
