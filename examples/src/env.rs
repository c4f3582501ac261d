//! The stack's endpoints: the process environment, else the workspace's `.env.local`, else
//! its `.env` (read by the workspace's one reader, `cqrs_test_support::env`), else the
//! development defaults.

use cqrs_test_support::env::{StackEnv, workspace_root};

/// Loads the workspace's `.env.local` and `.env` into the process environment, without
/// overriding what the environment already says (the Makefile's precedence: environment,
/// then `.env.local`, then `.env`), so that the `from_env` constructors of the toolkit's
/// configs (`PostgresConfig`, `MongoConfig`, `SyncConfig`) find the stack.
///
/// ```
/// cqrs_examples::env::load_dotenv();
/// assert!(std::env::var("KAFKA_BOOTSTRAP_SERVERS").is_ok());
/// ```
pub fn load_dotenv() {
    // This one writes to the process environment, unlike `Env::load` and the shared reader:
    // the quickstart shows the `from_env` constructors a service would use, and they read
    // nothing else. The crate cannot call `std::env::set_var` itself (`unsafe` in edition
    // 2024, and the workspace forbids unsafe code), so dotenvy does it. The order gives the
    // shared reader's precedence: dotenvy never overrides a variable that is set, so the
    // environment wins, then `.env.local` (loaded first), then `.env`. Call it at the start
    // of `main`, before any thread reads the environment.
    let root = workspace_root();
    for file in [".env.local", ".env"] {
        // A missing file is fine (.env.local is optional).
        let _ = dotenvy::from_path(root.join(file));
    }
}

/// Endpoints and credentials of the development stack.
#[derive(Debug, Clone)]
pub struct Env {
    values: StackEnv,
}

impl Env {
    /// Reads `.env`, then `.env.local`, then the process environment (each overriding the
    /// one before), without changing the process environment. Without a readable `.env`
    /// (a binary run away from the workspace), the environment and the defaults alone.
    ///
    /// ```
    /// let env = cqrs_examples::env::Env::load();
    /// assert!(!env.get("KAFKA_BOOTSTRAP_SERVERS").is_empty());
    /// ```
    pub fn load() -> Env {
        let values = StackEnv::try_load_from(&workspace_root()).unwrap_or_else(|e| {
            tracing::warn!("{e}; using the environment and the defaults");
            StackEnv::environment()
        });
        Env { values }
    }

    /// A value, falling back to the development default.
    pub fn get(&self, key: &str) -> String {
        if let Some(v) = self.values.get(key) {
            return v.to_owned();
        }
        match key {
            "DATABASE_URL" => "postgres://cqrs_admin:cqrs_admin_dev@127.0.0.1:5432/cqrs",
            "KAFKA_BOOTSTRAP_SERVERS" => "127.0.0.1:9092",
            "SCHEMA_REGISTRY_URL" => "http://127.0.0.1:8081",
            "MONGODB_URI" => "mongodb://127.0.0.1:27017/?directConnection=true",
            "POSTGRES_HOST" => "127.0.0.1",
            "POSTGRES_PORT" => "5432",
            "POSTGRES_DB" => "cqrs",
            _ => "",
        }
        .to_owned()
    }
}
