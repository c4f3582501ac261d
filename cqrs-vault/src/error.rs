//! Errors. None of them carries a token, a password, a secret id or a response body
//! holding secrets: they name the API path, the HTTP status and Vault's own error
//! messages (which never echo request values).

use std::path::PathBuf;

/// What can go wrong talking to Vault/OpenBao.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VaultError {
    /// The configuration is unusable (missing address, unreadable CA file, ...).
    #[error("invalid Vault configuration: {0}")]
    Config(String),
    /// A file holding a role id, secret id or token could not be read.
    #[error("cannot read {what} from {path}: {source}")]
    ReadFile {
        /// `"role id"`, `"secret id"`, `"token"`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Vault could not be reached (connection refused, timeout, TLS failure) or answered
    /// that it cannot serve now (5xx: sealed, standby, overloaded). Retrying may help.
    #[error("Vault unreachable ({path}): {message}")]
    Unreachable {
        /// API path of the request (no query, no secret).
        path: String,
        /// What happened (HTTP status or client-side failure).
        message: String,
    },
    /// Vault refused the request (4xx).
    #[error("Vault refused {path} with HTTP {status}: {}", errors.join("; "))]
    Refused {
        /// API path of the request.
        path: String,
        /// HTTP status.
        status: u16,
        /// Vault's error messages.
        errors: Vec<String>,
    },
    /// The response did not have the expected shape.
    #[error("unexpected response from {path}: {message}")]
    Decode {
        /// API path of the request.
        path: String,
        /// What was missing or malformed (never the value).
        message: String,
    },
    /// The background task was stopped.
    #[error("stopped")]
    Stopped,
}

impl VaultError {
    /// True when Vault was unreachable or unavailable: keep the current credentials and
    /// retry later.
    ///
    /// ```
    /// use cqrs_vault::VaultError;
    /// let e = VaultError::Unreachable { path: "sys/health".into(), message: "timeout".into() };
    /// assert!(e.is_unreachable());
    /// ```
    pub fn is_unreachable(&self) -> bool {
        matches!(self, VaultError::Unreachable { .. })
    }

    /// The HTTP status of a refusal.
    ///
    /// ```
    /// use cqrs_vault::VaultError;
    /// let e = VaultError::Refused { path: "x".into(), status: 403, errors: vec![] };
    /// assert_eq!(e.status(), Some(403));
    /// ```
    pub fn status(&self) -> Option<u16> {
        match self {
            VaultError::Refused { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// Result of this crate.
pub type Result<T, E = VaultError> = std::result::Result<T, E>;
