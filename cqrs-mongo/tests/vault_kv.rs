//! A cqrs-mongo client following a KV v2 secret in the stack's real OpenBao across new
//! versions, under steady reads and writes (feature `vault`).
//!
//! The stack's MongoDB server (SecantusDB) runs WITHOUT authentication, so it cannot tell
//! a good password from a bad one: this test proves that every new secret version is
//! picked up and the client rebuilt (generation counter, new settings in use) while reads
//! and writes keep succeeding; it cannot prove that the server accepted the new
//! credentials. Against a server with auth, set `use_credentials: true` (the default).
//!
//! `cargo test -p cqrs-toolkit-mongo --features vault --test vault_kv`

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bson::{Document, doc};
use cqrs_mongo::MongoConfig;
use cqrs_mongo::vault::{MongoVaultOptions, VaultMongo};
use cqrs_test_support::env::stack_env;
use cqrs_test_support::vault::{LogCapture, VaultAdmin};
use cqrs_vault::{Auth, KvOptions, VaultClient, VaultConfig};
use serde_json::json;
use tokio::time::Instant;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reads_and_writes_keep_succeeding_across_kv_secret_changes() {
    let logs = LogCapture::install();
    let admin = VaultAdmin::for_tests().await;
    let uri = stack_env("MONGODB_URI")
        .unwrap_or_else(|| "mongodb://127.0.0.1:27017/?directConnection=true".into());
    let path = "vault_it/mongo/mongodb";
    let password = |n: u32| format!("mongo-secret-pw-{n}-{}", std::process::id());
    admin
        .kv_put(
            "secret",
            path,
            &json!({"username": "svc_vault_it", "password": password(0), "uri": uri, "database": "vault_it_mongo"}),
        )
        .await
        .unwrap();
    let dir = std::env::temp_dir().join(format!("cqrs-vault-it-mongo-{}", std::process::id()));
    let files = admin
        .create_approle("vault-it-mongo", &["vault-it"], "1m", "10m", &dir)
        .await
        .unwrap();
    let vault = VaultClient::connect(VaultConfig::new(
        admin.address(),
        Auth::approle_files(&files.dir),
    ))
    .await
    .unwrap();
    let options = MongoVaultOptions {
        kv: KvOptions {
            poll_interval: Duration::from_millis(300),
            ..KvOptions::default()
        },
        // The stack's server has no authentication (see the module doc).
        use_credentials: false,
        retry_delay: Duration::from_millis(500),
        ..MongoVaultOptions::default()
    };
    let base = MongoConfig::new("mongodb://127.0.0.1:1/?directConnection=true");
    let mongo = VaultMongo::connect(base, &vault, path, options)
        .await
        .unwrap();
    let client = mongo.client().clone();
    assert_eq!(
        client.default_database_name(),
        "vault_it_mongo",
        "settings come from the secret"
    );
    client
        .ping()
        .await
        .expect("the secret's URI is used, not the base one");
    let collection = client.default_database().collection::<Document>("items");
    let _ = collection.drop().await;

    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for w in 0..4u32 {
        let (client, stop, ok, failed) = (client.clone(), stop.clone(), ok.clone(), failed.clone());
        tasks.push(tokio::spawn(async move {
            let mut i = 0u32;
            while !stop.load(Ordering::SeqCst) {
                i += 1;
                // Each operation asks the handle for the current driver client.
                let items = client.default_database().collection::<Document>("items");
                let result = if w % 2 == 0 {
                    items
                        .insert_one(doc! {"w": w as i32, "i": i as i32})
                        .await
                        .map(|_| ())
                } else {
                    items.count_documents(doc! {"w": 0}).await.map(|_| ())
                };
                match result {
                    Ok(()) => ok.fetch_add(1, Ordering::SeqCst),
                    Err(e) => {
                        eprintln!("operation failed: {e}");
                        failed.fetch_add(1, Ordering::SeqCst)
                    }
                };
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }));
    }

    let started = Instant::now();
    for n in 1..=3u32 {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let version = admin
            .kv_put(
                "secret",
                path,
                &json!({"username": format!("svc_vault_it_{n}"), "password": password(n), "uri": uri, "database": "vault_it_mongo"}),
            )
            .await
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while client.generation() < u64::from(n) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(
            client.generation(),
            u64::from(n),
            "client rebuilt for version {version}"
        );
        assert_eq!(mongo.secret_version(), version);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::SeqCst);
    for t in tasks {
        t.await.unwrap();
    }
    let (ok, failed) = (ok.load(Ordering::SeqCst), failed.load(Ordering::SeqCst));
    eprintln!(
        "{ok} reads/writes ok, {failed} failed across 3 secret versions in {:?}",
        started.elapsed()
    );
    assert_eq!(failed, 0);
    assert!(ok > 200, "too little load: {ok}");
    let written = collection.count_documents(doc! {}).await.unwrap();
    assert!(written > 50);
    assert!(!format!("{mongo:?}").contains("mongo-secret-pw"));
    mongo.stop().await;
    let _ = collection.drop().await;
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        logs.contents()
            .contains("MongoDB client rebuilt from a new Vault secret version")
    );
    let token = vault.token();
    let mut secrets: Vec<String> = (0..=3).map(password).collect();
    secrets.push(files.secret_id.expose().to_owned());
    secrets.push(token.expose().to_owned());
    logs.assert_absent(&secrets.iter().map(String::as_str).collect::<Vec<_>>());
}
