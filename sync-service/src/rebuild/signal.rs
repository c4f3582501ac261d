//! Debezium's signal table: starting and stopping an incremental snapshot, and the row
//! estimates of the tables it reads.
//!
//! A signal is a row `(id, type, data)` inserted into the connector's
//! `signal.data.collection`; the connector reads it from the WAL. The role needs INSERT on
//! that table and nothing else (the stack's `cqrs_signal`); the estimates come from the
//! catalog (`pg_class.reltuples`), which every role may read.

use cqrs_postgres::deadpool_postgres::tokio_postgres;
use cqrs_postgres::{PgPool, PostgresConfig, PostgresError};
use serde_json::json;

/// Sends signals to the connector.
pub struct Signaller {
    pool: PgPool,
    /// `"schema"."table"`, from validated identifiers.
    table: String,
}

/// A signal could not be sent, or an estimate read (messages never hold the URL or the
/// password).
#[derive(Debug, thiserror::Error)]
pub enum SignalError {
    /// No connection (configuration, TLS, credentials, server away).
    #[error("cannot connect to PostgreSQL to signal Debezium: {0}")]
    Connect(#[source] PostgresError),
    /// A statement failed (the role may not insert into the signal table, say).
    #[error("{what} on {table} failed: {source}")]
    Statement {
        /// What was being done.
        what: &'static str,
        /// The signal table.
        table: String,
        /// The server's answer.
        #[source]
        source: tokio_postgres::Error,
    },
}

impl Signaller {
    /// A signaller on `url` (TLS as the URL's `sslmode` says) for `schema.table`, both
    /// already validated identifiers ([`RebuildConfig::signal_table_parts`]).
    ///
    /// [`RebuildConfig::signal_table_parts`]: crate::config::RebuildConfig::signal_table_parts
    pub fn new(url: &str, schema: &str, table: &str) -> Result<Self, SignalError> {
        let config = PostgresConfig::from_url(url, schema)
            .map_err(SignalError::Connect)?
            .with_application_name("sync-service-rebuild")
            .with_max_connections(1);
        let pool = PgPool::new(&config).map_err(SignalError::Connect)?;
        Ok(Signaller {
            pool,
            table: format!("\"{schema}\".\"{table}\""),
        })
    }

    fn failed(&self, what: &'static str) -> impl FnOnce(tokio_postgres::Error) -> SignalError {
        let table = self.table.clone();
        move |source| SignalError::Statement {
            what,
            table,
            source,
        }
    }

    async fn insert(
        &self,
        id: &str,
        kind: &str,
        data: &serde_json::Value,
    ) -> Result<(), SignalError> {
        let client = self.pool.get().await.map_err(SignalError::Connect)?;
        // The same id twice is the same signal: a resumed rebuild does not snapshot twice.
        let sql = format!(
            "INSERT INTO {} (id, type, data) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
            self.table
        );
        client
            .execute(&sql, &[&id, &kind, &data.to_string()])
            .await
            .map_err(self.failed("inserting a signal"))?;
        Ok(())
    }

    /// Asks for an incremental snapshot of `tables` (`schema.table`), under signal `id`
    /// (the notifications carry it).
    pub async fn execute_snapshot(&self, id: &str, tables: &[String]) -> Result<(), SignalError> {
        let data = json!({ "data-collections": tables, "type": "incremental" });
        self.insert(id, "execute-snapshot", &data).await
    }

    /// Stops the incremental snapshot of `tables`.
    pub async fn stop_snapshot(&self, id: &str, tables: &[String]) -> Result<(), SignalError> {
        let data = json!({ "data-collections": tables, "type": "incremental" });
        self.insert(&format!("{id}-stop"), "stop-snapshot", &data)
            .await
    }

    /// The planner's row estimate of `tables` (`schema.table`), summed; `None` when a table
    /// was never analyzed.
    pub async fn estimate(&self, tables: &[String]) -> Result<Option<u64>, SignalError> {
        let client = self.pool.get().await.map_err(SignalError::Connect)?;
        let mut total = 0u64;
        for qualified in tables {
            let Some((schema, table)) = qualified.split_once('.') else {
                return Ok(None);
            };
            let row = client
                .query_opt(
                    "SELECT c.reltuples::float8 FROM pg_class c \
                     JOIN pg_namespace n ON n.oid = c.relnamespace \
                     WHERE n.nspname = $1 AND c.relname = $2",
                    &[&schema, &table],
                )
                .await
                .map_err(self.failed("reading the row estimates"))?;
            match row.map(|r| r.get::<_, f64>(0)) {
                // -1: never vacuumed or analyzed.
                Some(n) if n >= 0.0 => total += n as u64,
                _ => return Ok(None),
            }
        }
        Ok(Some(total))
    }
}
