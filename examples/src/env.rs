//! The stack's endpoints: the process environment, else the workspace's `.env` (and an
//! untracked `.env.local`), else the development defaults.

use std::collections::BTreeMap;
use std::path::Path;

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
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    for file in [".env.local", ".env"] {
        // A missing file is fine (.env.local is optional); dotenvy never overrides.
        let _ = dotenvy::from_path(root.join(file));
    }
}

/// Endpoints and credentials of the development stack.
#[derive(Debug, Clone)]
pub struct Env {
    values: BTreeMap<String, String>,
}

impl Env {
    /// Reads `.env`, then `.env.local`, then the process environment (each overriding the
    /// one before).
    ///
    /// ```
    /// let env = cqrs_examples::env::Env::load();
    /// assert!(!env.get("KAFKA_BOOTSTRAP_SERVERS").is_empty());
    /// ```
    pub fn load() -> Env {
        load_dotenv();
        Env {
            values: std::env::vars().collect(),
        }
    }

    /// A value, falling back to the development default.
    pub fn get(&self, key: &str) -> String {
        if let Some(v) = self.values.get(key) {
            return v.clone();
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
