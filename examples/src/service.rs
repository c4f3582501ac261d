//! What every example service does at start: its schema migrated, its least-privilege
//! login role ensured, and a pool that connects as that role.

use cqrs_postgres::{
    PgPool, PostgresConfig, PostgresError, RoleName, SchemaName, Secret, ServiceRole,
};

use crate::env::Env;

/// Why a service could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SetupError {
    /// PostgreSQL set-up failed.
    #[error("postgres ({schema}): {source}")]
    Postgres {
        /// Schema of the service.
        schema: String,
        /// Cause.
        #[source]
        source: Box<PostgresError>,
    },
    /// A statement of a service's own schema set-up failed.
    #[error("postgres ({schema}): {what}: {message}")]
    Sql {
        /// Schema of the service.
        schema: String,
        /// What was being set up.
        what: &'static str,
        /// The server's message.
        message: String,
    },
}

/// Migrates `schema` as the admin (`DATABASE_URL`), ensures the login role
/// `<schema>_app` (USAGE + CREATE on its schema and DML on its tables, nothing on any
/// other schema; password from `<SCHEMA>_APP_PASSWORD`, default `<schema>_app_dev`), and
/// returns a pool connected as that role. Idempotent.
///
/// ```no_run
/// # async fn run() -> Result<(), cqrs_examples::service::SetupError> {
/// let env = cqrs_examples::env::Env::load();
/// let orders = cqrs_examples::service::provision(&env, "orders").await?;
/// assert_eq!(orders.schema().as_str(), "orders");
/// # Ok(()) }
/// ```
pub async fn provision(env: &Env, schema: &str) -> Result<PgPool, SetupError> {
    let err = |source| SetupError::Postgres {
        schema: schema.to_owned(),
        source: Box::new(source),
    };
    let admin_config = PostgresConfig::from_url(&env.get("DATABASE_URL"), schema)
        .map_err(err)?
        .with_max_connections(2)
        .with_application_name("cqrs-examples-setup");
    let admin = PgPool::new(&admin_config).map_err(err)?;
    admin.migrate().await.map_err(err)?;
    let role = format!("{schema}_app");
    let password_var = format!("{}_APP_PASSWORD", schema.to_uppercase());
    let password = match env.get(&password_var) {
        p if p.is_empty() => format!("{role}_dev"),
        p => p,
    };
    ServiceRole::new(
        RoleName::new(role.clone()).map_err(err)?,
        SchemaName::new(schema).map_err(err)?,
    )
    .login(Secret::new(password.clone()))
    .ensure(&admin)
    .await
    .map_err(err)?;
    let port = env.get("POSTGRES_PORT").parse().unwrap_or(5432);
    let config = PostgresConfig::new(
        &env.get("POSTGRES_HOST"),
        port,
        &env.get("POSTGRES_DB"),
        schema,
    )
    .map_err(err)?
    .with_user(role, Some(Secret::new(password)))
    .with_max_connections(8)
    .with_application_name(&format!("cqrs-examples-{schema}"));
    let pool = PgPool::new(&config).map_err(err)?;
    pool.check().await.map_err(err)?;
    Ok(pool)
}
