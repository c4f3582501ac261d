//! Test support: every test gets its own randomly named database on the real server,
//! dropped when the test ends (even when it fails). A missing server fails loudly.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use cqrs_mongo::{MongoClient, MongoConfig, PoolConfig};
use rand::Rng;
use std::time::Duration;

/// MONGODB_URI from the environment, else the workspace's `.env.local`, else its `.env`.
pub fn mongo_uri() -> String {
    cqrs_test_support::env::require("MONGODB_URI")
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
                "MongoDB is not reachable ({}): {e}. Start the stack (or secantusd-rs) \
                 and/or set MONGODB_URI; these tests never skip.",
                cqrs_test_support::env::describe("MONGODB_URI")
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
