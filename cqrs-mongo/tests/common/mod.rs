//! Test support: every test gets its own randomly named database on the real server,
//! dropped when the test ends (even when it fails). A missing server fails loudly.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use cqrs_mongo::{MongoClient, MongoConfig, PoolConfig};
use rand::Rng;
use std::time::Duration;

/// MONGODB_URI from the environment, else from the workspace's `.env`.
pub fn mongo_uri() -> String {
    if let Ok(uri) = std::env::var("MONGODB_URI")
        && !uri.is_empty()
    {
        return uri;
    }
    let env_file = concat!(env!("CARGO_MANIFEST_DIR"), "/../.env");
    let text = std::fs::read_to_string(env_file)
        .unwrap_or_else(|e| panic!("MONGODB_URI is not set and {env_file} is unreadable: {e}"));
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("MONGODB_URI="))
        .map(|v| v.trim().trim_matches('"').to_string())
        .next()
        .unwrap_or_else(|| panic!("MONGODB_URI is not set and not in {env_file}"))
}

pub struct TestDb {
    pub mongo: MongoClient,
    pub name: String,
    uri: String,
}

impl TestDb {
    /// A client whose default database is a fresh random one. Panics if the server
    /// does not answer.
    pub async fn new() -> TestDb {
        let uri = mongo_uri();
        let name = format!("cqrs_mongo_test_{:016x}", rand::rng().random::<u64>());
        let mongo = MongoClient::connect(
            MongoConfig::new(uri.clone())
                .with_default_database(name.clone())
                .with_pool(PoolConfig {
                    server_selection_timeout: Duration::from_secs(5),
                    ..PoolConfig::default()
                }),
        )
        .await
        .expect("client");
        if let Err(e) = mongo.ping().await {
            panic!(
                "MongoDB is not reachable at {uri}: {e}. Start the stack (or secantusd-rs) \
                 and/or set MONGODB_URI; these tests never skip."
            );
        }
        TestDb { mongo, name, uri }
    }

    /// Another database name owned by this test (dropped at the end too).
    pub fn other_db(&self) -> String {
        format!("{}_b", self.name)
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let uri = self.uri.clone();
        let names = [self.name.clone(), self.other_db()];
        // Drop needs a runtime of its own: the test's may be shutting down.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                if let Ok(client) = MongoClient::from_uri(&uri).await {
                    for n in names {
                        let _ = client.client().database(&n).drop().await;
                    }
                }
            });
        })
        .join();
    }
}

use cqrs_core::ReadModel;
use cqrs_mongo::MongoReadModel;
use serde::{Deserialize, Serialize};

/// A small model for the guard tests.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Item {
    #[serde(rename = "_id")]
    pub id: String,
    pub value: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl ReadModel for Item {
    type Id = String;
    const COLLECTION: &'static str = "items";
    fn id(&self) -> String {
        self.id.clone()
    }
}

impl MongoReadModel for Item {}
