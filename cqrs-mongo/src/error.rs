//! Errors: every one names the collection and, when there is one, the document id.
//!
//! A stale write is **not** an error: it is [`WriteOutcome::Stale`](crate::WriteOutcome).
//! Duplicate-key errors (code 11000) raised by a version guard, whether MongoDB reports
//! them as a write error, a command error or a bulk-write error, are classified as stale
//! by this crate and never reach the caller as a [`MongoError`].

use std::time::Duration;

use bson::{Bson, Document};
use cqrs_core::SourceVersion;
use mongodb::error::{ErrorKind, WriteFailure};

/// Result type of this crate.
///
/// ```
/// fn check() -> cqrs_mongo::Result<u32> { Ok(1) }
/// assert_eq!(check().unwrap(), 1);
/// ```
pub type Result<T, E = MongoError> = std::result::Result<T, E>;

/// MongoDB's duplicate-key error code.
pub const DUPLICATE_KEY: i32 = 11000;

/// Everything that can go wrong in this crate.
///
/// Messages never contain passwords or full connection strings.
///
/// ```
/// use cqrs_mongo::MongoError;
///
/// let err = MongoError::Decode {
///     collection: "orders".into(),
///     id: Some("o-1".into()),
///     field: "lines[2].price".into(),
///     message: "invalid type: string \"x\", expected f64".into(),
/// };
/// assert!(err.to_string().contains("lines[2].price"));
/// assert_eq!(err.collection(), Some("orders"));
/// assert_eq!(err.id(), Some("o-1"));
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MongoError {
    /// The connection settings are invalid (the message never contains the password).
    #[error("invalid MongoDB configuration: {message}")]
    Config {
        /// What is wrong.
        message: String,
    },
    /// A MongoDB operation failed (network, authentication, server error...).
    #[error("MongoDB {operation} on {collection}{} failed: {source}", fmt_id(.id))]
    Mongo {
        /// The operation (`find`, `update`, `bulkWrite`, ...).
        operation: &'static str,
        /// Collection, as `database.collection` when known.
        collection: String,
        /// Document id, when the operation concerned one document.
        id: Option<String>,
        /// The driver's error.
        #[source]
        source: Box<mongodb::error::Error>,
    },
    /// The server applied the writes but could not satisfy the write concern: resend.
    #[error("write concern error on {collection}: {message}")]
    WriteConcern {
        /// Namespace.
        collection: String,
        /// The server's message.
        message: String,
    },
    /// A stored document could not be read into the model: `field` names the path.
    #[error("cannot decode document{} of {collection}: field `{field}`: {message}", fmt_id(.id))]
    Decode {
        /// Collection.
        collection: String,
        /// Document id, when the document has a readable one.
        id: Option<String>,
        /// Path of the offending field (`address.city`, `lines[2].price`; `.` for the root).
        field: String,
        /// What was wrong with it.
        message: String,
    },
    /// A value could not be turned into BSON.
    #[error("cannot encode{} for {collection}: {message}", fmt_id(.id))]
    Encode {
        /// Collection.
        collection: String,
        /// Document id, when known.
        id: Option<String>,
        /// What failed.
        message: String,
    },
    /// The version's position does not fit the stored encoding (a BSON Int64).
    #[error(
        "version {version} of {collection}{} is out of range: positions must be at most {}",
        fmt_id(.id),
        i64::MAX
    )]
    VersionOutOfRange {
        /// Collection.
        collection: String,
        /// Document id.
        id: Option<String>,
        /// The version that does not fit.
        version: SourceVersion,
    },
    /// A write that can never apply (for example `$set` and `$unset` of the same field).
    #[error("invalid write to {collection}{}: {reason}", fmt_id(.id))]
    InvalidWrite {
        /// Collection.
        collection: String,
        /// Document id.
        id: Option<String>,
        /// Why.
        reason: String,
    },
    /// An index declared by the model conflicts with an existing index.
    #[error(
        "index conflict on {collection}: index `{name}`: {reason} (existing: {existing}, declared: {declared})"
    )]
    IndexConflict {
        /// Collection.
        collection: String,
        /// Index name.
        name: String,
        /// What differs.
        reason: String,
        /// The existing index specification.
        existing: Box<Document>,
        /// The declared index specification.
        declared: Box<Document>,
    },
    /// A consistency wait ran out of time.
    #[error(
        "timed out after {waited:?} waiting for {collection}{} to reach version {wanted} (last seen: {})",
        fmt_id(&Some(.id.clone())),
        fmt_version(.last_seen)
    )]
    WaitTimeout {
        /// Collection.
        collection: String,
        /// Document id.
        id: String,
        /// Version waited for.
        wanted: SourceVersion,
        /// Last version seen (`None` if the document never appeared).
        last_seen: Option<SourceVersion>,
        /// How long the wait lasted.
        waited: Duration,
    },
    /// A pagination cursor that this crate did not produce, or produced for another query.
    #[error("invalid page cursor for {collection}: {reason}")]
    InvalidCursor {
        /// Collection.
        collection: String,
        /// Why it was rejected.
        reason: String,
    },
    /// A filter value could not be encoded, or a token id does not match the model's id type.
    #[error("invalid query on {collection}: {reason}")]
    InvalidQuery {
        /// Collection.
        collection: String,
        /// Why.
        reason: String,
    },
}

impl MongoError {
    /// The collection the error concerns, if any.
    ///
    /// ```
    /// let err = cqrs_mongo::MongoError::Config { message: "no host".into() };
    /// assert_eq!(err.collection(), None);
    /// ```
    pub fn collection(&self) -> Option<&str> {
        match self {
            MongoError::Config { .. } => None,
            MongoError::Mongo { collection, .. }
            | MongoError::Decode { collection, .. }
            | MongoError::Encode { collection, .. }
            | MongoError::VersionOutOfRange { collection, .. }
            | MongoError::InvalidWrite { collection, .. }
            | MongoError::IndexConflict { collection, .. }
            | MongoError::WaitTimeout { collection, .. }
            | MongoError::InvalidCursor { collection, .. }
            | MongoError::InvalidQuery { collection, .. }
            | MongoError::WriteConcern { collection, .. } => Some(collection),
        }
    }

    /// The document id the error concerns, if any.
    ///
    /// ```
    /// let err = cqrs_mongo::MongoError::InvalidWrite {
    ///     collection: "c".into(), id: Some("7".into()), reason: "x".into(),
    /// };
    /// assert_eq!(err.id(), Some("7"));
    /// ```
    pub fn id(&self) -> Option<&str> {
        match self {
            MongoError::Mongo { id, .. }
            | MongoError::Decode { id, .. }
            | MongoError::Encode { id, .. }
            | MongoError::VersionOutOfRange { id, .. }
            | MongoError::InvalidWrite { id, .. } => id.as_deref(),
            MongoError::WaitTimeout { id, .. } => Some(id),
            _ => None,
        }
    }

    /// True for errors worth retrying as they are (network, server selection, timeouts of
    /// the driver, write conflicts): guarded writes are idempotent, so retrying them is safe.
    ///
    /// ```
    /// let err = cqrs_mongo::MongoError::Config { message: "bad".into() };
    /// assert!(!err.is_transient());
    /// ```
    pub fn is_transient(&self) -> bool {
        match self {
            MongoError::Mongo { source, .. } => is_transient_driver_error(source),
            MongoError::WriteConcern { .. } => true,
            _ => false,
        }
    }

    pub(crate) fn mongo(
        operation: &'static str,
        collection: impl Into<String>,
        id: Option<String>,
        source: mongodb::error::Error,
    ) -> Self {
        MongoError::Mongo {
            operation,
            collection: collection.into(),
            id,
            source: Box::new(source),
        }
    }
}

fn is_transient_driver_error(err: &mongodb::error::Error) -> bool {
    if err.contains_label("TransientTransactionError") || err.contains_label("RetryableWriteError")
    {
        return true;
    }
    matches!(
        *err.kind,
        ErrorKind::Io(_)
            | ErrorKind::ConnectionPoolCleared { .. }
            | ErrorKind::ServerSelection { .. }
    ) || error_code(err).is_some_and(|c| {
        // WriteConflict, NotWritablePrimary, PrimarySteppedDown, ShutdownInProgress,
        // HostUnreachable, NetworkTimeout, ExceededTimeLimit...
        matches!(
            c,
            112 | 10107 | 189 | 91 | 11600 | 11602 | 6 | 7 | 89 | 9001 | 262 | 13435 | 13436
        )
    })
}

/// The server error code carried by a driver error, whatever its shape.
pub(crate) fn error_code(err: &mongodb::error::Error) -> Option<i32> {
    match &*err.kind {
        ErrorKind::Command(c) => Some(c.code),
        ErrorKind::Write(WriteFailure::WriteError(w)) => Some(w.code),
        ErrorKind::Write(WriteFailure::WriteConcernError(w)) => Some(w.code),
        ErrorKind::BulkWrite(b) => b.write_errors.values().next().map(|w| w.code),
        ErrorKind::InsertMany(i) => i
            .write_errors
            .as_ref()
            .and_then(|e| e.first())
            .map(|w| w.code),
        _ => None,
    }
}

/// What a duplicate-key error collided on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DuplicateOn {
    /// The `_id` index (or the server did not say): the version guard's signature.
    Id,
    /// Another unique index: a real conflict, not a stale write.
    Index(String),
}

/// Classifies one server error (code + message) as a duplicate key, and on which index.
pub(crate) fn classify_duplicate(code: i32, message: &str) -> Option<DuplicateOn> {
    if code != DUPLICATE_KEY {
        return None;
    }
    // MongoDB: "E11000 duplicate key error collection: db.c index: _id_ dup key: { ... }"
    match message.split_once("index: ") {
        Some((_, rest)) => {
            let name = rest.split_whitespace().next().unwrap_or("");
            if name.is_empty() || name == "_id_" {
                Some(DuplicateOn::Id)
            } else {
                Some(DuplicateOn::Index(name.to_string()))
            }
        }
        None => Some(DuplicateOn::Id),
    }
}

/// Duplicate-key classification for a driver error of any of the three shapes (write
/// error, command error, bulk-write error with one item).
pub(crate) fn duplicate_in(err: &mongodb::error::Error) -> Option<DuplicateOn> {
    match &*err.kind {
        ErrorKind::Command(c) => classify_duplicate(c.code, &c.message),
        ErrorKind::Write(WriteFailure::WriteError(w)) => classify_duplicate(w.code, &w.message),
        ErrorKind::BulkWrite(b)
            if b.write_concern_errors.is_empty() && b.write_errors.len() == 1 =>
        {
            b.write_errors
                .values()
                .next()
                .and_then(|w| classify_duplicate(w.code, &w.message))
        }
        _ => None,
    }
}

/// How an id shows in errors: strings as they are, other values as extended JSON.
pub(crate) fn display_id(id: &Bson) -> String {
    match id {
        Bson::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn fmt_id(id: &Option<String>) -> String {
    match id {
        Some(id) => format!(" (id {id})"),
        None => String::new(),
    }
}

fn fmt_version(v: &Option<SourceVersion>) -> String {
    match v {
        Some(v) => v.to_string(),
        None => "none".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicate_on_id_and_other_index() {
        assert_eq!(
            classify_duplicate(
                11000,
                "E11000 duplicate key error collection: db.c index: _id_ dup key: { _id: 1 }"
            ),
            Some(DuplicateOn::Id)
        );
        assert_eq!(
            classify_duplicate(
                11000,
                "E11000 duplicate key error collection: db.c index: email_1 dup key: { email: \"a\" }"
            ),
            Some(DuplicateOn::Index("email_1".into()))
        );
        assert_eq!(
            classify_duplicate(11000, "duplicate key"),
            Some(DuplicateOn::Id)
        );
        assert_eq!(classify_duplicate(2, "index: _id_"), None);
    }
}
