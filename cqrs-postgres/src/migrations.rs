//! Embedded, versioned, checksummed migrations of a service schema.
//!
//! The SQL files live in `sql/migrations/` (`V001__events.sql`, ...) and are compiled
//! into the binary. [`Migrator::run`] applies the missing ones in one transaction that
//! holds `pg_advisory_xact_lock` keyed by the schema, records each in
//! `<schema>.cqrs_migrations` with the SHA-256 of its file, and refuses to run when an
//! applied migration's file has changed since ([`PostgresError::ChecksumMismatch`]).
//! Concurrent runs queue on the lock and find nothing left to do; re-runs are no-ops.

use std::time::Instant;

use sha2::{Digest, Sha256};

use crate::error::PostgresError;
use crate::pool::PgPool;
use crate::schema::{SchemaName, render};

/// The migrations compiled into this crate, in order.
const EMBEDDED: &[(&str, &str)] = &[
    (
        "V001__events.sql",
        include_str!("../sql/migrations/V001__events.sql"),
    ),
    (
        "V002__aggregates.sql",
        include_str!("../sql/migrations/V002__aggregates.sql"),
    ),
    (
        "V003__outbox.sql",
        include_str!("../sql/migrations/V003__outbox.sql"),
    ),
    (
        "V004__processed_commands.sql",
        include_str!("../sql/migrations/V004__processed_commands.sql"),
    ),
];

const BOOTSTRAP: &str = include_str!("../sql/bootstrap.sql");

/// First key of the two-key advisory lock that serialises migrations ("cqrs" in ASCII);
/// the second is `hashtext(<schema name>)`.
const LOCK_CLASS: i32 = 0x6371_7273;

/// One migration: a version, a name and its SQL, with `{{schema}}` standing for the
/// quoted schema name.
///
/// ```
/// use cqrs_postgres::Migration;
///
/// let m = Migration::parse("V007__add_index.sql", "CREATE INDEX ...").unwrap();
/// assert_eq!(m.version(), 7);
/// assert_eq!(m.name(), "add_index");
/// assert_eq!(m.checksum().len(), 64);
/// assert!(Migration::parse("007_add_index.sql", "").is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Migration {
    version: i32,
    name: String,
    sql: &'static str,
    checksum: String,
}

impl Migration {
    /// Parses a file name of the form `V<number>__<name>.sql` and computes the checksum
    /// (SHA-256 of the file text as stored, before the schema is substituted, so it is
    /// the same for every schema).
    ///
    /// # Errors
    /// [`PostgresError::MalformedMigration`] for a name not in that form.
    ///
    /// ```
    /// # use cqrs_postgres::Migration;
    /// let m = Migration::parse("V003__outbox.sql", "CREATE TABLE {{schema}}.x ()").unwrap();
    /// assert_eq!((m.version(), m.name()), (3, "outbox"));
    /// ```
    pub fn parse(file_name: &str, sql: &'static str) -> Result<Self, PostgresError> {
        let malformed = |reason| PostgresError::MalformedMigration {
            name: file_name.to_owned(),
            reason,
        };
        let stem = file_name
            .strip_prefix('V')
            .and_then(|s| s.strip_suffix(".sql"))
            .ok_or_else(|| malformed("must look like V001__name.sql"))?;
        let (number, name) = stem
            .split_once("__")
            .ok_or_else(|| malformed("must look like V001__name.sql"))?;
        let version: i32 = number
            .parse()
            .ok()
            .filter(|v| *v > 0)
            .ok_or_else(|| malformed("the version must be a positive number"))?;
        if name.is_empty() {
            return Err(malformed("the name must not be empty"));
        }
        Ok(Migration {
            version,
            name: name.to_owned(),
            sql,
            checksum: hex::encode(Sha256::digest(sql.as_bytes())),
        })
    }

    /// The version (the number after `V`).
    ///
    /// ```
    /// # use cqrs_postgres::Migration;
    /// let m = Migration::parse("V003__outbox.sql", "CREATE TABLE {{schema}}.x ()").unwrap();
    /// assert_eq!(m.version(), 3);
    /// ```
    pub fn version(&self) -> i32 {
        self.version
    }

    /// The name (after `__`, without `.sql`).
    ///
    /// ```
    /// # use cqrs_postgres::Migration;
    /// let m = Migration::parse("V003__outbox.sql", "CREATE TABLE {{schema}}.x ()").unwrap();
    /// assert_eq!(m.name(), "outbox");
    /// ```
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Hex SHA-256 of the SQL file.
    ///
    /// ```
    /// # use cqrs_postgres::Migration;
    /// let m = Migration::parse("V003__outbox.sql", "CREATE TABLE {{schema}}.x ()").unwrap();
    /// assert_eq!(m.checksum().len(), 64);
    /// ```
    pub fn checksum(&self) -> &str {
        &self.checksum
    }

    /// The SQL with `{{schema}}` still in it.
    ///
    /// ```
    /// # use cqrs_postgres::Migration;
    /// let m = Migration::parse("V003__outbox.sql", "CREATE TABLE {{schema}}.x ()").unwrap();
    /// assert!(m.sql().contains("{{schema}}"));
    /// ```
    pub fn sql(&self) -> &'static str {
        self.sql
    }
}

/// What a run of the migrator did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
///
/// ```no_run
/// # async fn run(pool: cqrs_postgres::PgPool) -> Result<(), cqrs_postgres::PostgresError> {
/// let report = pool.migrate().await?;
/// println!("applied {:?}, already there {:?}", report.applied, report.already_applied);
/// # Ok(()) }
/// ```
pub struct MigrationReport {
    /// Versions applied by this run, in order.
    pub applied: Vec<i32>,
    /// Versions that were already applied.
    pub already_applied: Vec<i32>,
    /// Versions recorded in the schema that this binary does not know: a newer release
    /// migrated the schema. Logged as a warning, not an error, so that an older release
    /// keeps running during a rolling deployment.
    pub unknown_applied: Vec<i32>,
}

/// Applies migrations to one schema.
///
/// The embedded SQL files (`sql/migrations/V001__events.sql`, ...) are versioned and
/// SHA-256 checksummed; `{{schema}}` in them stands for the quoted schema name.
///
/// ```no_run
/// use cqrs_postgres::{Migrator, PgPool, PostgresConfig, SchemaName};
///
/// # async fn run() -> Result<(), cqrs_postgres::PostgresError> {
/// let config = PostgresConfig::from_url(&std::env::var("DATABASE_URL").unwrap(), "orders")?;
/// let pool = PgPool::new(&config)?;
/// let report = Migrator::embedded(SchemaName::new("orders")?)?.run(&pool).await?;
/// assert!(report.unknown_applied.is_empty());
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Migrator {
    schema: SchemaName,
    migrations: Vec<Migration>,
}

impl Migrator {
    /// The migrations embedded in this crate, for `schema`.
    ///
    /// # Errors
    /// [`PostgresError::MalformedMigration`] if an embedded file is misnamed (caught by
    /// this crate's tests, never at a user's).
    ///
    /// ```
    /// use cqrs_postgres::{Migrator, SchemaName};
    /// let migrator = Migrator::embedded(SchemaName::new("orders")?)?;
    /// assert_eq!(migrator.migrations()[0].name(), "events");
    /// # Ok::<(), cqrs_postgres::PostgresError>(())
    /// ```
    pub fn embedded(schema: SchemaName) -> Result<Self, PostgresError> {
        let migrations = EMBEDDED
            .iter()
            .map(|(name, sql)| Migration::parse(name, sql))
            .collect::<Result<Vec<_>, _>>()?;
        Self::with_migrations(schema, migrations)
    }

    /// Custom migrations (for example the embedded ones plus a service's own tables).
    ///
    /// # Errors
    /// [`PostgresError::MalformedMigration`] when two migrations share a version.
    ///
    /// ```
    /// use cqrs_postgres::{Migration, Migrator, SchemaName};
    ///
    /// let mut migrations = Migrator::embedded(SchemaName::new("orders")?)?.migrations().to_vec();
    /// migrations.push(Migration::parse(
    ///     "V100__order_lines.sql",
    ///     "CREATE TABLE {{schema}}.order_lines (id bigint PRIMARY KEY)",
    /// )?);
    /// let migrator = Migrator::with_migrations(SchemaName::new("orders")?, migrations)?;
    /// assert_eq!(migrator.migrations().last().unwrap().version(), 100);
    /// # Ok::<(), cqrs_postgres::PostgresError>(())
    /// ```
    pub fn with_migrations(
        schema: SchemaName,
        mut migrations: Vec<Migration>,
    ) -> Result<Self, PostgresError> {
        migrations.sort_by_key(|m| m.version);
        if let Some(pair) = migrations.windows(2).find(|w| w[0].version == w[1].version) {
            return Err(PostgresError::MalformedMigration {
                name: pair[1].name.clone(),
                reason: "two migrations have the same version",
            });
        }
        Ok(Migrator { schema, migrations })
    }

    /// The migrations, in version order.
    ///
    /// ```
    /// use cqrs_postgres::{Migrator, SchemaName};
    /// let migrator = Migrator::embedded(SchemaName::new("orders")?)?;
    /// assert!(migrator.migrations().windows(2).all(|w| w[0].version() < w[1].version()));
    /// # Ok::<(), cqrs_postgres::PostgresError>(())
    /// ```
    pub fn migrations(&self) -> &[Migration] {
        &self.migrations
    }

    /// Applies the missing migrations: in one transaction holding
    /// `pg_advisory_xact_lock` keyed by the schema, each recorded in
    /// `<schema>.cqrs_migrations` with its checksum. Concurrent runs queue on the lock and
    /// find nothing left to do; re-runs are no-ops; a changed applied migration is an error.
    ///
    /// The schema is created when it does not exist (that needs `CREATE` on the database;
    /// a service role without it needs the schema created beforehand, for example by
    /// [`ServiceRole::ensure`](crate::ServiceRole::ensure)).
    ///
    /// # Errors
    /// [`PostgresError::ChecksumMismatch`] when an applied migration changed (nothing is
    /// applied then), [`PostgresError::Database`] when a statement fails (the whole run
    /// is rolled back).
    ///
    /// ```no_run
    /// # async fn run(pool: cqrs_postgres::PgPool) -> Result<(), cqrs_postgres::PostgresError> {
    /// use cqrs_postgres::Migrator;
    /// let report = Migrator::embedded(pool.schema().clone())?.run(&pool).await?;
    /// # Ok(()) }
    /// ```
    pub async fn run(&self, pool: &PgPool) -> Result<MigrationReport, PostgresError> {
        let schema = &self.schema;
        let mut client = pool.get().await?;
        let tx = client
            .transaction()
            .await
            .map_err(|e| PostgresError::db("starting the migration transaction", e))?;
        let db = |context| move |e| PostgresError::db(context, e);

        tx.execute(
            "SELECT pg_advisory_xact_lock($1, hashtext($2))",
            &[&LOCK_CLASS, &schema.as_str()],
        )
        .await
        .map_err(db("taking the migration lock"))?;

        let exists: bool = tx
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)",
                &[&schema.as_str()],
            )
            .await
            .and_then(|row| row.try_get(0))
            .map_err(db("looking up the schema"))?;
        if !exists {
            // Not `CREATE SCHEMA IF NOT EXISTS`: PostgreSQL checks the CREATE privilege on
            // the database before the existence, so a service role would fail on it.
            tx.batch_execute(&format!("CREATE SCHEMA {}", schema.quoted()))
                .await
                .map_err(db("creating the schema"))?;
            tracing::info!(target: "cqrs_postgres", schema = %schema, "created schema");
        }
        tx.batch_execute(&render(BOOTSTRAP, schema))
            .await
            .map_err(db("creating the migrations table"))?;

        let rows = tx
            .query(
                &render(
                    "SELECT version, name, checksum FROM {{schema}}.cqrs_migrations ORDER BY version",
                    schema,
                ),
                &[],
            )
            .await
            .map_err(db("reading applied migrations"))?;
        let mut applied = Vec::with_capacity(rows.len());
        for row in rows {
            let version: i32 = row.try_get(0).map_err(db("reading applied migrations"))?;
            let name: String = row.try_get(1).map_err(db("reading applied migrations"))?;
            let checksum: String = row.try_get(2).map_err(db("reading applied migrations"))?;
            applied.push((version, name, checksum));
        }

        let mut report = MigrationReport::default();
        for (version, name, recorded) in &applied {
            match self.migrations.iter().find(|m| m.version == *version) {
                Some(m) if m.checksum != *recorded => {
                    return Err(PostgresError::ChecksumMismatch {
                        schema: schema.to_string(),
                        version: *version,
                        name: name.clone(),
                        recorded: recorded.clone(),
                        embedded: m.checksum.clone(),
                    });
                }
                Some(_) => report.already_applied.push(*version),
                None => report.unknown_applied.push(*version),
            }
        }
        if !report.unknown_applied.is_empty() {
            tracing::warn!(
                target: "cqrs_postgres",
                schema = %schema,
                versions = ?report.unknown_applied,
                "schema has migrations this release does not know (a newer release migrated it)"
            );
        }

        let insert = render(
            "INSERT INTO {{schema}}.cqrs_migrations (version, name, checksum, duration_ms) VALUES ($1, $2, $3, $4)",
            schema,
        );
        for migration in &self.migrations {
            if applied.iter().any(|(v, _, _)| *v == migration.version) {
                continue;
            }
            let started = Instant::now();
            tx.batch_execute(&render(migration.sql, schema))
                .await
                .map_err(db("applying a migration"))?;
            let millis = i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX);
            tx.execute(
                &insert,
                &[
                    &migration.version,
                    &migration.name,
                    &migration.checksum,
                    &millis,
                ],
            )
            .await
            .map_err(db("recording a migration"))?;
            tracing::info!(
                target: "cqrs_postgres",
                schema = %schema,
                version = migration.version,
                name = %migration.name,
                "applied migration"
            );
            report.applied.push(migration.version);
        }
        tx.commit().await.map_err(db("committing the migrations"))?;
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_migrations_are_well_formed_and_ordered() {
        let migrator = Migrator::embedded(SchemaName::new("s").unwrap()).unwrap();
        let versions: Vec<i32> = migrator.migrations().iter().map(|m| m.version).collect();
        assert_eq!(versions, (1..=EMBEDDED.len() as i32).collect::<Vec<_>>());
        for m in migrator.migrations() {
            assert!(
                m.sql.contains("{{schema}}"),
                "{} must use the placeholder",
                m.name
            );
        }
    }

    #[test]
    fn checksum_is_sha256_of_the_file() {
        let m = Migration::parse("V001__x.sql", "abc").unwrap();
        assert_eq!(
            m.checksum(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn rejects_bad_names_and_duplicates() {
        for bad in [
            "V__x.sql",
            "V0__x.sql",
            "Vx__y.sql",
            "V1__.sql",
            "V1_x.sql",
            "V1__x.txt",
        ] {
            assert!(Migration::parse(bad, "").is_err(), "{bad}");
        }
        let a = Migration::parse("V1__a.sql", "").unwrap();
        let b = Migration::parse("V1__b.sql", "").unwrap();
        assert!(Migrator::with_migrations(SchemaName::new("s").unwrap(), vec![a, b]).is_err());
    }
}
