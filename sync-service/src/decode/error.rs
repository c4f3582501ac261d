//! Decode errors.

use std::fmt;

/// Which part of a Kafka record failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Part {
    /// The record key.
    Key,
    /// The record value.
    Value,
}

impl fmt::Display for Part {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Part::Key => "key",
            Part::Value => "value",
        })
    }
}

/// Why bytes are not in the Confluent wire format (magic byte 0, 4-byte schema id, body).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WireFormatProblem {
    /// No bytes at all.
    Empty,
    /// Fewer than the 5 header bytes.
    TooShort {
        /// The length found.
        len: usize,
    },
    /// The first byte is not the magic byte 0.
    BadMagicByte {
        /// The byte found.
        byte: u8,
    },
}

impl fmt::Display for WireFormatProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WireFormatProblem::Empty => f.write_str("empty"),
            WireFormatProblem::TooShort { len } => {
                write!(f, "too short ({len} bytes, the header alone is 5)")
            }
            WireFormatProblem::BadMagicByte { byte } => {
                write!(f, "first byte is {byte:#04x}, not the magic byte 0x00")
            }
        }
    }
}

/// Whether retrying the same record can succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// A dependency (the Schema Registry) failed: retry the same record with backoff and do
    /// not move offsets meanwhile.
    Transient,
    /// The record itself cannot be decoded as configured: dead-letter it.
    Permanent,
}

/// A record that could not be decoded. Every variant names the part (key or value) and what
/// failed; [`DecodeError::retry`] says whether retrying can help.
///
/// ```
/// use sync_service::decode::{DecodeError, Part, Retry, WireFormatProblem};
///
/// let e = DecodeError::NotWireFormat { part: Part::Value, problem: WireFormatProblem::Empty };
/// assert_eq!(e.retry(), Retry::Permanent);
/// assert_eq!(e.to_string(), "value is not in the Confluent wire format: empty");
/// ```
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// Not magic byte 0 + schema id + body.
    #[error("{part} is not in the Confluent wire format: {problem}")]
    NotWireFormat {
        /// Key or value.
        part: Part,
        /// What is wrong.
        problem: WireFormatProblem,
    },
    /// The registry does not know the schema id (HTTP 404 / 40403).
    #[error("{part}: schema id {id} is unknown to the Schema Registry: {detail}")]
    UnknownSchemaId {
        /// Key or value.
        part: Part,
        /// The schema id from the wire format header.
        id: u32,
        /// The registry's answer.
        detail: String,
    },
    /// The registry could not be reached or answered with a server error (transient).
    #[error("{part}: Schema Registry unavailable while fetching schema id {id}: {detail}")]
    RegistryUnavailable {
        /// Key or value.
        part: Part,
        /// The schema id being fetched.
        id: u32,
        /// What happened.
        detail: String,
    },
    /// The registry refused the request (authorization, bad request: permanent until fixed).
    #[error("{part}: Schema Registry refused schema id {id}: {detail}")]
    RegistryRejected {
        /// Key or value.
        part: Part,
        /// The schema id being fetched.
        id: u32,
        /// What happened.
        detail: String,
    },
    /// The registry returned a schema that cannot be used (not Avro, not parseable).
    #[error("{part}: schema id {id} is not a usable Avro schema: {detail}")]
    InvalidSchema {
        /// Key or value.
        part: Part,
        /// The schema id.
        id: u32,
        /// What is wrong.
        detail: String,
    },
    /// The Avro body does not match its schema (truncated, corrupt).
    #[error("{part}: corrupt Avro body for schema id {id}: {detail}")]
    CorruptAvro {
        /// Key or value.
        part: Part,
        /// The schema id.
        id: u32,
        /// What the Avro reader said.
        detail: String,
    },
    /// The bytes are not JSON.
    #[error("{part} is not valid JSON: {detail}")]
    NotJson {
        /// Key or value.
        part: Part,
        /// The parser's message.
        detail: String,
    },
    /// JSON that is not a valid Kafka Connect message (missing `schema`/`payload`, payload
    /// not matching its schema).
    #[error("{part} is not a valid Kafka Connect JSON message: {detail}")]
    InvalidConnectJson {
        /// Key or value.
        part: Part,
        /// What is wrong.
        detail: String,
    },
    /// Bytes that are not valid UTF-8 for the string format.
    #[error("{part} is not valid UTF-8")]
    NotUtf8 {
        /// Key or value.
        part: Part,
    },
    /// `auto` could not tell the format (neither magic byte 0 nor JSON).
    #[error(
        "{part}: cannot tell the format (first byte {first_byte:#04x}: neither Avro wire format nor JSON)"
    )]
    UnrecognisedFormat {
        /// Key or value.
        part: Part,
        /// The first byte.
        first_byte: u8,
    },
    /// Avro data but the decoder was built without a Schema Registry.
    #[error("{part} is Avro but no Schema Registry is configured")]
    NoRegistry {
        /// Key or value.
        part: Part,
    },
}

impl DecodeError {
    /// Whether retrying can succeed: only registry outages are transient.
    pub fn retry(&self) -> Retry {
        match self {
            DecodeError::RegistryUnavailable { .. } => Retry::Transient,
            _ => Retry::Permanent,
        }
    }

    /// Shorthand for `retry() == Retry::Transient`.
    pub fn is_transient(&self) -> bool {
        self.retry() == Retry::Transient
    }

    /// The part that failed.
    pub fn part(&self) -> Part {
        match self {
            DecodeError::NotWireFormat { part, .. }
            | DecodeError::UnknownSchemaId { part, .. }
            | DecodeError::RegistryUnavailable { part, .. }
            | DecodeError::RegistryRejected { part, .. }
            | DecodeError::InvalidSchema { part, .. }
            | DecodeError::CorruptAvro { part, .. }
            | DecodeError::NotJson { part, .. }
            | DecodeError::InvalidConnectJson { part, .. }
            | DecodeError::NotUtf8 { part }
            | DecodeError::UnrecognisedFormat { part, .. }
            | DecodeError::NoRegistry { part } => *part,
        }
    }
}
