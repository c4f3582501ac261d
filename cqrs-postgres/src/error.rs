//! Errors of this crate and their mapping onto [`cqrs_core::StoreError`].
//!
//! No error message carries a password, a connection URL or a statement text: they name
//! what failed, the SQLSTATE and PostgreSQL's primary message (which never echoes bound
//! values; the `DETAIL` field, which can, is left out).

use cqrs_core::StoreError;
use tokio_postgres::error::SqlState;
use uuid::Uuid;

/// What can go wrong in this crate outside of the [`AggregateStore`](cqrs_core::AggregateStore)
/// contract (which reports [`StoreError`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
///
/// ```
/// use cqrs_postgres::{PostgresError, SchemaName};
///
/// match SchemaName::new("Bad Name") {
///     Err(PostgresError::InvalidIdentifier { kind, reason, .. }) => println!("{kind}: {reason}"),
///     other => panic!("{other:?}"),
/// }
/// ```
pub enum PostgresError {
    /// A schema or role name breaks the identifier rules; nothing reached the database.
    #[error("invalid {kind} {name:?}: {reason}")]
    InvalidIdentifier {
        /// `"schema name"` or `"role name"`.
        kind: &'static str,
        /// The rejected name (at most 80 characters of it).
        name: String,
        /// Which rule it breaks.
        reason: &'static str,
    },
    /// The configuration is unusable (never contains the password or the URL).
    #[error("invalid PostgreSQL configuration: {0}")]
    Config(String),
    /// TLS could not be set up (a CA file that cannot be read or parsed, ...).
    #[error("TLS setup failed: {0}")]
    Tls(String),
    /// An embedded migration file is malformed (a bug of this crate, caught by its tests).
    #[error("malformed migration {name}: {reason}")]
    MalformedMigration {
        /// File name.
        name: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// A migration that was already applied has changed since: its checksum differs from
    /// the one recorded in `<schema>.cqrs_migrations`. Nothing was applied.
    #[error(
        "migration V{version:03} {name} was changed after it was applied to schema {schema}: recorded checksum {recorded}, embedded checksum {embedded}"
    )]
    ChecksumMismatch {
        /// Schema migrated.
        schema: String,
        /// Migration version.
        version: i32,
        /// Migration name.
        name: String,
        /// Checksum recorded when it was applied.
        recorded: String,
        /// Checksum of the migration embedded in this binary.
        embedded: String,
    },
    /// An existing role has attributes a service role must not have (superuser,
    /// createrole, createdb, replication or bypassrls); it was left unchanged.
    #[error("role {role} exists with elevated attributes; refusing to use it as a service role")]
    PrivilegedRole {
        /// The role.
        role: String,
    },
    /// The database or the pool failed.
    #[error("{context}: {message}")]
    Database {
        /// What was being done.
        context: &'static str,
        /// SQLSTATE and primary message, or the client-side failure.
        message: String,
        /// The SQLSTATE, when the server reported one.
        code: Option<String>,
        /// True when retrying may help (connection lost, pool timeout, server shutting down).
        transient: bool,
        /// The underlying error.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
}

impl PostgresError {
    /// The SQLSTATE of a database error, if any.
    ///
    /// ```
    /// use cqrs_postgres::PostgresError;
    /// assert_eq!(PostgresError::Config("x".into()).sqlstate(), None);
    /// ```
    pub fn sqlstate(&self) -> Option<&str> {
        match self {
            PostgresError::Database { code, .. } => code.as_deref(),
            _ => None,
        }
    }

    /// True when retrying the operation may help.
    ///
    /// ```
    /// use cqrs_postgres::PostgresError;
    /// assert!(!PostgresError::Config("x".into()).is_transient());
    /// ```
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            PostgresError::Database {
                transient: true,
                ..
            }
        )
    }

    pub(crate) fn db(context: &'static str, err: tokio_postgres::Error) -> Self {
        let (message, transient) = describe(&err);
        PostgresError::Database {
            context,
            message,
            code: err.code().map(|c| c.code().to_owned()),
            transient,
            source: Some(Box::new(err)),
        }
    }

    pub(crate) fn pool(context: &'static str, err: deadpool_postgres::PoolError) -> Self {
        match err {
            deadpool_postgres::PoolError::Backend(err) => PostgresError::db(context, err),
            other => {
                let (message, transient) = describe_pool(&other);
                PostgresError::Database {
                    context,
                    message,
                    code: None,
                    transient,
                    source: Some(Box::new(other)),
                }
            }
        }
    }
}

/// SQLSTATE + primary message, and whether the failure is transient.
fn describe(err: &tokio_postgres::Error) -> (String, bool) {
    if let Some(db) = err.as_db_error() {
        let code = db.code();
        let message = format!("{} (SQLSTATE {})", db.message(), code.code());
        return (message, is_transient_code(code));
    }
    // Client-side failures: connection loss, I/O, timeouts are transient; TLS failures
    // (an untrusted certificate, a name mismatch), conversions and protocol misuse are not.
    let text = err.to_string();
    let io_kind = std::error::Error::source(err)
        .and_then(|s| s.downcast_ref::<std::io::Error>())
        .map(std::io::Error::kind);
    let transient = if text.starts_with("error performing TLS handshake") {
        false
    } else if let Some(kind) = io_kind {
        !matches!(
            kind,
            std::io::ErrorKind::InvalidData
                | std::io::ErrorKind::InvalidInput
                | std::io::ErrorKind::PermissionDenied
                | std::io::ErrorKind::Unsupported
        )
    } else {
        err.is_closed() || text.starts_with("timeout") || text.starts_with("error connecting")
    };
    (text, transient)
}

fn describe_pool(err: &deadpool_postgres::PoolError) -> (String, bool) {
    use deadpool_postgres::PoolError;
    match err {
        PoolError::Timeout(kind) => (
            format!("timed out waiting for a pooled connection ({kind:?})"),
            true,
        ),
        PoolError::Closed => ("the connection pool is closed".to_owned(), false),
        PoolError::NoRuntimeSpecified => (
            "the pool has timeouts but no runtime was specified".to_owned(),
            false,
        ),
        PoolError::PostCreateHook(_) => ("a post-create hook failed".to_owned(), true),
        PoolError::Backend(err) => describe(err),
    }
}

/// Failures that go away by themselves: connection exceptions, server shutdown,
/// resource exhaustion, statement timeouts.
fn is_transient_code(code: &SqlState) -> bool {
    let c = code.code();
    c.starts_with("08") // connection exception
        || c.starts_with("53") // insufficient resources (too many connections, ...)
        || c == "57P01" // admin shutdown
        || c == "57P02" // crash shutdown
        || c == "57P03" // cannot connect now
        || c == "57014" // query canceled (statement_timeout)
        || c == "58000" // system error
        || c == "58030" // I/O error
}

/// Why a connection can no longer serve: gone, or logged in with a dead credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stale {
    /// Closed, terminated (`pg_terminate_backend`, server shutdown) or broken under us.
    Closed,
    /// Login refused (SQLSTATE class 28) or the session's role was dropped (a revoked
    /// lease: `invalid role OID`).
    Credential,
}

/// Whether `err` says the connection itself is unusable (rather than the statement).
pub(crate) fn stale_kind(err: &tokio_postgres::Error) -> Option<Stale> {
    if let Some(db) = err.as_db_error() {
        let code = db.code().code();
        return if code.starts_with("28")
            || (*db.code() == SqlState::UNDEFINED_OBJECT
                && db.message().starts_with("invalid role OID"))
        {
            Some(Stale::Credential)
        } else if code.starts_with("08") || code == "57P01" || code == "57P02" {
            Some(Stale::Closed)
        } else {
            None
        };
    }
    let broken_io = std::error::Error::source(err)
        .is_some_and(|s| s.downcast_ref::<std::io::Error>().is_some());
    (err.is_closed() || broken_io).then_some(Stale::Closed)
}

/// [`stale_kind`] of the PostgreSQL error behind a store error.
pub(crate) fn stale_store_error(err: &StoreError) -> Option<Stale> {
    let StoreError::Backend {
        source: Some(source),
        ..
    } = err
    else {
        return None;
    };
    if let Some(e) = source.downcast_ref::<tokio_postgres::Error>() {
        return stale_kind(e);
    }
    match source.downcast_ref::<deadpool_postgres::PoolError>() {
        Some(deadpool_postgres::PoolError::Backend(e)) => stale_kind(e),
        _ => None,
    }
}

/// Why a commit failed, to map unique violations to the right [`StoreError`].
pub(crate) struct CommitContext<'a> {
    pub aggregate_type: &'a str,
    pub aggregate_id: &'a str,
    pub expected_version: u64,
    pub command_id: Uuid,
}

/// Maps a database error raised by a read onto [`StoreError`].
pub(crate) fn store_error(context: &'static str, err: tokio_postgres::Error) -> StoreError {
    let (message, transient) = describe(&err);
    StoreError::Backend {
        message: format!("{context}: {message}"),
        transient,
        source: Some(Box::new(err)),
    }
}

/// Maps a pool error onto [`StoreError`].
pub(crate) fn store_pool_error(err: deadpool_postgres::PoolError) -> StoreError {
    match err {
        deadpool_postgres::PoolError::Backend(err) => store_error("opening a connection", err),
        other => {
            let (message, transient) = describe_pool(&other);
            StoreError::Backend {
                message,
                transient,
                source: Some(Box::new(other)),
            }
        }
    }
}

/// Maps a database error raised while committing onto [`StoreError`]: a unique violation
/// on `processed_commands` is a duplicate command, one on the events, aggregates or outbox
/// (same event id) tables a concurrency conflict.
pub(crate) fn commit_error(ctx: &CommitContext<'_>, err: tokio_postgres::Error) -> StoreError {
    let conflict = || StoreError::Conflict {
        aggregate_type: ctx.aggregate_type.to_owned(),
        aggregate_id: ctx.aggregate_id.to_owned(),
        expected_version: ctx.expected_version,
    };
    if let Some(db) = err.as_db_error() {
        let code = db.code();
        if *code == SqlState::UNIQUE_VIOLATION {
            match db.constraint() {
                Some("processed_commands_pkey") => {
                    return StoreError::DuplicateCommand {
                        command_id: ctx.command_id,
                    };
                }
                Some(
                    "events_stream_sequence_key"
                    | "events_event_id_key"
                    | "aggregates_pkey"
                    | "outbox_pkey",
                ) => return conflict(),
                _ => {}
            }
        }
        // Serialization failures and deadlocks are resolved by running the command again
        // on fresh state, exactly like a version conflict.
        if *code == SqlState::T_R_SERIALIZATION_FAILURE || *code == SqlState::T_R_DEADLOCK_DETECTED
        {
            return conflict();
        }
    }
    store_error("committing", err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_codes() {
        assert!(is_transient_code(&SqlState::ADMIN_SHUTDOWN));
        assert!(is_transient_code(&SqlState::CONNECTION_FAILURE));
        assert!(is_transient_code(&SqlState::TOO_MANY_CONNECTIONS));
        assert!(!is_transient_code(&SqlState::UNIQUE_VIOLATION));
        assert!(!is_transient_code(&SqlState::INSUFFICIENT_PRIVILEGE));
    }
}
