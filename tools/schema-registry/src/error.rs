//! Errors of the stand-in and their Confluent wire form.
//!
//! Every error the HTTP layer returns is rendered as the body Confluent's Schema Registry
//! uses, `{"error_code": <int>, "message": <str>}`, with the HTTP status the real registry
//! uses for that code (`40401` -> 404, `42201` -> 422, ...). The real clients (the Java
//! `AvroConverter`, Rust's `schema_registry_converter`) parse exactly that shape.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// What can go wrong while serving a request or persisting the registry.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The subject has never been registered (`40401`).
    #[error("Subject '{0}' not found.")]
    SubjectNotFound(String),
    /// The subject exists but has no such version (`40402`).
    #[error("Version {version} not found.")]
    VersionNotFound {
        /// The version that was asked for, as the client wrote it.
        version: String,
    },
    /// No schema with this id, or the schema is not registered under the subject (`40403`).
    #[error("{0}")]
    SchemaNotFound(String),
    /// The subject has no subject-level compatibility configured (`40408`).
    #[error("Subject '{0}' does not have subject-level compatibility configured")]
    SubjectConfigNotFound(String),
    /// The schema text is not a valid schema of its type (`42201`).
    #[error("Invalid schema: {0}")]
    InvalidSchema(String),
    /// The version in the path is neither a positive integer, `-1` nor `latest` (`42202`).
    #[error(
        "The specified version '{0}' is not a valid version id. Allowed values are between [1, 2^31-1] and the string \"latest\""
    )]
    InvalidVersion(String),
    /// The compatibility level is not one the registry knows (`42203`).
    #[error(
        "Invalid compatibility level. Valid values are none, backward, forward, full, backward_transitive, forward_transitive, and full_transitive: {0}"
    )]
    InvalidCompatibilityLevel(String),
    /// The request body is not the JSON the endpoint expects (HTTP 400 / `400`).
    #[error("Bad request: {0}")]
    BadRequest(String),
    /// The request's content type is not one the registry accepts (HTTP 415 / `415`).
    #[error("Unsupported content type: {0}")]
    UnsupportedMediaType(String),
    /// No such endpoint (HTTP 404 / `404`).
    #[error("HTTP 404 Not Found")]
    NotFound,
    /// The endpoint exists but not for this method (HTTP 405 / `405`).
    #[error("HTTP 405 Method Not Allowed")]
    MethodNotAllowed,
    /// The data file could not be read or written (`50001`).
    #[error("Error in the backend data store: {0}")]
    Store(#[from] StoreError),
}

/// Errors of the persistent data file.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Reading, writing or renaming the data file failed.
    #[error("data file {path}: {source}")]
    Io {
        /// The data file (or its temporary sibling).
        path: String,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The data file exists but is not a registry snapshot.
    #[error("data file {path} is not a valid registry snapshot: {source}")]
    Corrupt {
        /// The data file.
        path: String,
        /// Why it could not be parsed.
        #[source]
        source: serde_json::Error,
    },
    /// The snapshot could not be serialized (should not happen).
    #[error("could not serialize the registry snapshot: {0}")]
    Serialize(#[source] serde_json::Error),
}

impl RegistryError {
    /// The Confluent `error_code` of this error.
    pub fn error_code(&self) -> u32 {
        match self {
            Self::SubjectNotFound(_) => 40401,
            Self::VersionNotFound { .. } => 40402,
            Self::SchemaNotFound(_) => 40403,
            Self::SubjectConfigNotFound(_) => 40408,
            Self::InvalidSchema(_) => 42201,
            Self::InvalidVersion(_) => 42202,
            Self::InvalidCompatibilityLevel(_) => 42203,
            Self::BadRequest(_) => 400,
            Self::UnsupportedMediaType(_) => 415,
            Self::NotFound => 404,
            Self::MethodNotAllowed => 405,
            Self::Store(_) => 50001,
        }
    }

    /// The HTTP status the real registry answers this error with.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::SubjectNotFound(_)
            | Self::VersionNotFound { .. }
            | Self::SchemaNotFound(_)
            | Self::SubjectConfigNotFound(_)
            | Self::NotFound => StatusCode::NOT_FOUND,
            Self::InvalidSchema(_)
            | Self::InvalidVersion(_)
            | Self::InvalidCompatibilityLevel(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// The Confluent error body.
#[derive(Debug, Serialize)]
struct ErrorBody {
    error_code: u32,
    message: String,
}

impl IntoResponse for RegistryError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::error!(error = %self, "request failed");
        } else {
            tracing::debug!(error = %self, code = self.error_code(), "request rejected");
        }
        let body = ErrorBody {
            error_code: self.error_code(),
            message: self.to_string(),
        };
        crate::http::json_response(status, &body)
    }
}
