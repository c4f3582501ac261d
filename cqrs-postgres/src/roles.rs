//! Least-privilege roles: one per service schema.
//!
//! A service role can use its own schema (USAGE) and create tables in it (CREATE: the
//! service runs its own migrations), read and write the tables in it, and nothing else:
//! no privilege on other service schemas, no CREATE on `public`, no superuser, role or
//! database creation, replication or RLS bypass. The SQL is in `sql/roles/`.
//!
//! PostgreSQL cannot bind parameters in `CREATE ROLE`/`ALTER ROLE`, so the password has
//! to be part of the statement text. It is never sent in clear: the SCRAM-SHA-256 verifier
//! is computed here (random salt, 4096 iterations, as libpq's `PQencryptPasswordConn`
//! does) and sent as a correctly quoted literal, so the server (and any statement log)
//! only ever sees the verifier. Neither the password nor the verifier is logged or put
//! into an error.

use std::fmt;

use crate::credentials::Secret;
use crate::error::PostgresError;
use crate::pool::PgPool;
use crate::schema::{RoleName, SchemaName};

const CREATE_ROLE: &str = include_str!("../sql/roles/create_role.sql");
const ALTER_ROLE: &str = include_str!("../sql/roles/alter_role.sql");
const GRANT: &str = include_str!("../sql/roles/grant_service_role.sql");

/// Advisory lock class of role management (serialises concurrent `ensure` calls).
const LOCK_CLASS: i32 = 0x6371_7272;

/// A service role to create or bring up to date.
///
/// ```no_run
/// use cqrs_postgres::{Secret, PgPool, PostgresConfig, RoleName, SchemaName, ServiceRole};
///
/// # async fn run() -> Result<(), cqrs_postgres::PostgresError> {
/// // Connected as an admin that can create roles and schemas.
/// let admin = PgPool::new(&PostgresConfig::from_url(&std::env::var("DATABASE_URL").unwrap(), "orders")?)?;
/// ServiceRole::new(RoleName::new("svc_orders")?, SchemaName::new("orders")?)
///     .login(Secret::new(std::env::var("ORDERS_DB_PASSWORD").unwrap()))
///     .ensure(&admin)
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct ServiceRole {
    role: RoleName,
    schema: SchemaName,
    password: Option<Secret>,
}

/// What [`ServiceRole::ensure`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
///
/// ```no_run
/// # async fn run(role: cqrs_postgres::ServiceRole, admin: cqrs_postgres::PgPool) -> Result<(), cqrs_postgres::PostgresError> {
/// if role.ensure(&admin).await? == cqrs_postgres::RoleOutcome::Created {
///     println!("created {}", role.role());
/// }
/// # Ok(()) }
/// ```
pub enum RoleOutcome {
    /// The role did not exist and was created.
    Created,
    /// The role existed; its login/password and grants were brought up to date.
    Updated,
}

impl ServiceRole {
    /// A role `role` for schema `schema`, without login (a group role) until
    /// [`ServiceRole::login`] is called.
    ///
    /// ```
    /// use cqrs_postgres::{Secret, RoleName, SchemaName, ServiceRole};
    /// let role = ServiceRole::new(RoleName::new("svc_orders")?, SchemaName::new("orders")?);
    /// # Ok::<(), cqrs_postgres::PostgresError>(())
    /// ```
    pub fn new(role: RoleName, schema: SchemaName) -> Self {
        ServiceRole {
            role,
            schema,
            password: None,
        }
    }

    /// Lets the role log in with `password`.
    ///
    /// ```
    /// use cqrs_postgres::{Secret, RoleName, SchemaName, ServiceRole};
    /// let role = ServiceRole::new(RoleName::new("svc_orders")?, SchemaName::new("orders")?)
    ///     .login(Secret::new("s3cret"));
    /// assert!(!format!("{role:?}").contains("s3cret"));
    /// # Ok::<(), cqrs_postgres::PostgresError>(())
    /// ```
    pub fn login(mut self, password: Secret) -> Self {
        self.password = Some(password);
        self
    }

    /// The role name.
    ///
    /// ```
    /// use cqrs_postgres::{Secret, RoleName, SchemaName, ServiceRole};
    /// let role = ServiceRole::new(RoleName::new("svc_orders")?, SchemaName::new("orders")?);
    /// assert_eq!(role.role().as_str(), "svc_orders");
    /// # Ok::<(), cqrs_postgres::PostgresError>(())
    /// ```
    pub fn role(&self) -> &RoleName {
        &self.role
    }

    /// The schema.
    ///
    /// ```
    /// use cqrs_postgres::{Secret, RoleName, SchemaName, ServiceRole};
    /// let role = ServiceRole::new(RoleName::new("svc_orders")?, SchemaName::new("orders")?);
    /// assert_eq!(role.schema().as_str(), "orders");
    /// # Ok::<(), cqrs_postgres::PostgresError>(())
    /// ```
    pub fn schema(&self) -> &SchemaName {
        &self.schema
    }

    /// Creates the schema (if missing) and the role (or updates an existing one), and
    /// grants exactly: `CONNECT` on the database, `USAGE` and `CREATE` on its schema, and
    /// `SELECT`/`INSERT`/`UPDATE`/`DELETE` on the schema's tables (present and future), in
    /// one transaction. Run it with an admin connection (`CREATEROLE` and `CREATE` on the
    /// database); idempotent.
    ///
    /// # Errors
    /// [`PostgresError::PrivilegedRole`] when the role exists with elevated attributes or
    /// role memberships (it is left unchanged), [`PostgresError::Database`] otherwise.
    ///
    /// ```no_run
    /// # async fn run(admin: cqrs_postgres::PgPool) -> Result<(), cqrs_postgres::PostgresError> {
    /// use cqrs_postgres::{Secret, RoleName, SchemaName, ServiceRole};
    /// let role = ServiceRole::new(RoleName::new("svc_orders")?, SchemaName::new("orders")?);
    /// role.ensure(&admin).await?; // idempotent
    /// # Ok(()) }
    /// ```
    pub async fn ensure(&self, admin: &PgPool) -> Result<RoleOutcome, PostgresError> {
        let db = |context| move |e| PostgresError::db(context, e);
        let mut client = admin.get().await?;
        let tx = client
            .transaction()
            .await
            .map_err(db("starting the role transaction"))?;
        tx.execute(
            "SELECT pg_advisory_xact_lock($1, hashtext($2))",
            &[&LOCK_CLASS, &self.role.as_str()],
        )
        .await
        .map_err(db("taking the role lock"))?;

        tx.batch_execute(&format!(
            "CREATE SCHEMA IF NOT EXISTS {}",
            self.schema.quoted()
        ))
        .await
        .map_err(db("creating the schema"))?;

        let existing = tx
            .query_opt(
                "SELECT (r.rolsuper OR r.rolcreaterole OR r.rolcreatedb OR r.rolreplication OR r.rolbypassrls \
                        OR EXISTS (SELECT 1 FROM pg_auth_members m WHERE m.member = r.oid)) AS elevated \
                 FROM pg_roles r WHERE r.rolname = $1",
                &[&self.role.as_str()],
            )
            .await
            .map_err(db("looking up the role"))?;
        let login = self.login_clause();
        let outcome = match existing {
            Some(row) => {
                let elevated: bool = row.try_get(0).map_err(db("looking up the role"))?;
                if elevated {
                    return Err(PostgresError::PrivilegedRole {
                        role: self.role.to_string(),
                    });
                }
                tx.batch_execute(&self.render(ALTER_ROLE, &login))
                    .await
                    .map_err(db("altering the role"))?;
                RoleOutcome::Updated
            }
            None => {
                tx.batch_execute(&self.render(CREATE_ROLE, &login))
                    .await
                    .map_err(db("creating the role"))?;
                RoleOutcome::Created
            }
        };

        // GRANT CONNECT names the database, which is only known server-side: let the
        // server quote both identifiers.
        let grant_connect: String = tx
            .query_one(
                "SELECT format('GRANT CONNECT ON DATABASE %I TO %I', current_database(), $1::text)",
                &[&self.role.as_str()],
            )
            .await
            .and_then(|row| row.try_get(0))
            .map_err(db("granting CONNECT"))?;
        tx.batch_execute(&grant_connect)
            .await
            .map_err(db("granting CONNECT"))?;
        tx.batch_execute(&self.render(GRANT, ""))
            .await
            .map_err(db("granting schema privileges"))?;
        tx.commit()
            .await
            .map_err(db("committing the role transaction"))?;
        tracing::info!(
            target: "cqrs_postgres",
            role = %self.role,
            schema = %self.schema,
            login = self.password.is_some(),
            outcome = ?outcome,
            "service role ready"
        );
        Ok(outcome)
    }

    /// `LOGIN PASSWORD '<scram verifier>'` or `NOLOGIN`.
    fn login_clause(&self) -> String {
        match &self.password {
            Some(password) => {
                let verifier =
                    postgres_protocol::password::scram_sha_256(password.expose().as_bytes());
                format!("LOGIN PASSWORD {}", quote_literal(&verifier))
            }
            None => "NOLOGIN PASSWORD NULL".to_owned(),
        }
    }

    fn render(&self, template: &str, login: &str) -> String {
        template
            .replace("{{role}}", &self.role.quoted())
            .replace("{{schema}}", &self.schema.quoted())
            .replace("{{login}}", login)
    }
}

impl fmt::Debug for ServiceRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceRole")
            .field("role", &self.role)
            .field("schema", &self.schema)
            .field("login", &self.password.is_some())
            .finish()
    }
}

/// Quotes `value` as an SQL string literal, correct whatever `standard_conforming_strings`
/// is: quotes are doubled, and a value with a backslash uses the `E''` form with the
/// backslashes doubled.
pub(crate) fn quote_literal(value: &str) -> String {
    let doubled = value.replace('\'', "''");
    if value.contains('\\') {
        format!("E'{}'", doubled.replace('\\', "\\\\"))
    } else {
        format!("'{doubled}'")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_literals() {
        assert_eq!(quote_literal("abc"), "'abc'");
        assert_eq!(quote_literal("it's"), "'it''s'");
        assert_eq!(quote_literal("a\\b'c"), "E'a\\\\b''c'");
    }

    #[test]
    fn login_clause_never_contains_the_password() {
        let role = ServiceRole::new(
            RoleName::new("svc").unwrap(),
            SchemaName::new("svc").unwrap(),
        )
        .login(Secret::new("pa'ss\\word"));
        let clause = role.login_clause();
        assert!(
            clause.starts_with("LOGIN PASSWORD 'SCRAM-SHA-256$4096:"),
            "{clause}"
        );
        assert!(!clause.contains("pa'ss"));
        assert!(!format!("{role:?}").contains("pa'ss"));
    }

    #[test]
    fn renders_quoted_identifiers() {
        let role = ServiceRole::new(
            RoleName::new("svc_a").unwrap(),
            SchemaName::new("a").unwrap(),
        );
        let sql = role.render(GRANT, "");
        assert!(sql.contains("GRANT USAGE, CREATE ON SCHEMA \"a\" TO \"svc_a\""));
        assert!(!sql.contains("{{"));
    }
}
