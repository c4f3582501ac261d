//! Least-privilege service roles against the real PostgreSQL.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure

mod common;

use common::{TestDb, random_name};
use cqrs_core::{CommandHandler, CommandMetadata, PersistenceMode};
use cqrs_postgres::{
    PgPool, PostgresConfig, PostgresError, PostgresStore, RoleName, RoleOutcome, Secret,
    ServiceRole,
};
use cqrs_test_support::account::{Account, AccountCommand};

/// A pool logged in as `role` with `password`, on `schema`.
fn pool_as(db: &TestDb, role: &str, password: &str, schema: &str) -> PgPool {
    let config = PostgresConfig::from_url(&db.url, schema)
        .unwrap()
        .with_user(role, Some(Secret::new(password)))
        .with_max_connections(2);
    PgPool::new(&config).unwrap()
}

fn sqlstate(err: &tokio_postgres::Error) -> String {
    err.code().map(|c| c.code().to_owned()).unwrap_or_default()
}

#[tokio::test]
async fn service_role_uses_its_schema_and_nothing_else() {
    let db = TestDb::migrated().await; // service A's schema, migrated by the admin
    let other = db.other_schema_pool(); // service B's schema
    other.migrate().await.unwrap();

    let role = random_name("t_svc");
    db.drop_role_later(&role);
    let password = "pw-with-'quote-and-\\backslash";
    let outcome = ServiceRole::new(RoleName::new(role.clone()).unwrap(), db.schema.clone())
        .login(Secret::new(password))
        .ensure(&db.pool)
        .await
        .unwrap();
    assert_eq!(outcome, RoleOutcome::Created);

    let as_role = pool_as(&db, &role, password, db.schema.as_str());
    as_role
        .check()
        .await
        .expect("the role logs in with its password");

    // Its own schema: commands work with nothing but the role's privileges.
    let store = PostgresStore::<Account>::new(&as_role, PersistenceMode::event_sourced()).unwrap();
    CommandHandler::new(store)
        .execute("acc-r", &AccountCommand::Deposit(1), CommandMetadata::new())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(db.count("events").await, 1);
    let client = as_role.get().await.unwrap();
    client
        .batch_execute(&db.sql("CREATE TABLE {{schema}}.own_table (id int PRIMARY KEY)"))
        .await
        .expect("CREATE in its own schema (it runs its own migrations)");
    as_role
        .migrate()
        .await
        .expect("the role can run (no-op) migrations on its schema");

    // Another service's schema: permission denied (42501).
    let err = client
        .query(
            &format!("SELECT * FROM {}.events", other.schema().quoted()),
            &[],
        )
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), "42501", "{err}");
    let err = client
        .execute(
            &format!(
                "INSERT INTO {}.processed_commands VALUES (gen_random_uuid(), 'a', 'b', 1, '{{}}', now())",
                other.schema().quoted()
            ),
            &[],
        )
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), "42501", "{err}");
    // No CREATE on public, no new schemas.
    let err = client
        .batch_execute("CREATE TABLE public.intruder (id int)")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), "42501", "{err}");
    let err = client
        .batch_execute(&format!("CREATE SCHEMA {}", random_name("t_x")))
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), "42501", "{err}");

    // The role has no elevated attribute.
    let admin = db.pool.get().await.unwrap();
    let row = admin
        .query_one(
            "SELECT rolsuper, rolcreaterole, rolcreatedb, rolreplication, rolbypassrls, rolcanlogin, rolpassword LIKE 'SCRAM-SHA-256$%'
             FROM pg_authid WHERE rolname = $1",
            &[&role],
        )
        .await
        .unwrap();
    let flags: (bool, bool, bool, bool, bool, bool, bool) = (
        row.get(0),
        row.get(1),
        row.get(2),
        row.get(3),
        row.get(4),
        row.get(5),
        row.get(6),
    );
    assert_eq!(flags, (false, false, false, false, false, true, true));

    // Idempotent; a new password takes effect.
    drop(client);
    let outcome = ServiceRole::new(RoleName::new(role.clone()).unwrap(), db.schema.clone())
        .login(Secret::new("second-password"))
        .ensure(&db.pool)
        .await
        .unwrap();
    assert_eq!(outcome, RoleOutcome::Updated);
    pool_as(&db, &role, "second-password", db.schema.as_str())
        .check()
        .await
        .expect("new password works");
    let err = pool_as(&db, &role, password, db.schema.as_str())
        .check()
        .await
        .unwrap_err();
    assert_eq!(
        err.sqlstate(),
        Some("28P01"),
        "old password refused: {err:?}"
    );
    assert!(!format!("{err} {err:?}").contains(password));
}

#[tokio::test]
async fn existing_privileged_role_is_refused() {
    let db = TestDb::new().await;
    let role = random_name("t_priv");
    db.drop_role_later(&role);
    db.exec(&format!("CREATE ROLE \"{role}\" NOLOGIN CREATEDB"))
        .await;
    let err = ServiceRole::new(RoleName::new(role.clone()).unwrap(), db.schema.clone())
        .ensure(&db.pool)
        .await
        .unwrap_err();
    assert!(
        matches!(err, PostgresError::PrivilegedRole { .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn group_role_without_login() {
    let db = TestDb::migrated().await;
    let role = random_name("t_grp");
    db.drop_role_later(&role);
    ServiceRole::new(RoleName::new(role.clone()).unwrap(), db.schema.clone())
        .ensure(&db.pool)
        .await
        .unwrap();
    let can_login: bool = db
        .pool
        .get()
        .await
        .unwrap()
        .query_one(
            "SELECT rolcanlogin FROM pg_roles WHERE rolname = $1",
            &[&role],
        )
        .await
        .unwrap()
        .get(0);
    assert!(!can_login);
}
