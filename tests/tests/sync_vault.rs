//! The sync-service taking its MongoDB settings from the stack's real OpenBao (`[vault]`
//! section, KV v2 secret) while changes flow PostgreSQL -> Debezium -> Kafka ->
//! sync-service -> MongoDB under a steady load, across two new versions of the secret.
//!
//! What the test proves, and what it cannot:
//!
//! * The stack's MongoDB server (SecantusDB) runs WITHOUT authentication: it accepts any
//!   credentials, so the test cannot show that a server accepted the new password. The
//!   secret's `username`/`password` are therefore not used to log in (`use_credentials =
//!   false`, as for any server without auth); they are still read, and the test asserts
//!   they never reach a log.
//! * What it can show is that each new version is picked up and the client really
//!   rebuilt, and that nothing keeps using the old one: every version points the client at
//!   a different address (a TCP forwarder in front of the server for the first two, the
//!   server itself for the last), and each old address is switched off once the client
//!   moved on, the way a revoked credential would stop working. The base `[mongodb] uri`
//!   points nowhere, so all traffic goes where the secret says.
//! * Every row written during the rotations arrives with its values, with no dead letter
//!   and no failed write; the `sync_mongodb_client_generation` metric and the rebuild log
//!   show the two rebuilds.
//! * A poison message after the rotations is dead-lettered and its record lands in MongoDB:
//!   the dead-letter records follow the rebuilt client too (they used to stay on the
//!   client of the start, whose address is off by then).
//! * The captured logs contain neither a password of the secret nor the Vault token.
//!
//! `cargo test -p cqrs-e2e --test sync_vault`

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bson::{Document, doc};
use cqrs_test_support::vault::{FlakyProxy, LogCapture, VaultAdmin};
use serde_json::json;
use support::{Running, Scenario, suffix, until};
use sync_service::SyncService;
use sync_service::config::vault::VaultSection;
use sync_service::metrics::StageLabel;

const WAIT: Duration = Duration::from_secs(60);

const PROJECTIONS: &str = r#"
    [[projection]]
    table = "{s}.items"
    collection = "items"
"#;

const STAGES: [&str; 5] = ["decode", "envelope", "map", "write", "held_back"];

/// `host:port` of a `mongodb://host:port/...` URI.
fn authority(uri: &str) -> String {
    let rest = uri.split_once("://").map(|(_, r)| r).unwrap_or(uri);
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    rest[..end].to_owned()
}

fn direct_uri(host_port: &str) -> String {
    format!("mongodb://{host_port}/?directConnection=true")
}

/// `(id, name, qty)` of every row, from PostgreSQL.
async fn pg_rows(s: &Scenario) -> Vec<(i32, String, i32)> {
    s.pg.query(
        &format!("SELECT id, name, qty FROM {}.items ORDER BY id", s.schema),
        &[],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1), r.get(2)))
    .collect()
}

/// `(id, name, qty)` of every live document, from MongoDB.
async fn mongo_rows(s: &Scenario) -> Vec<(i32, String, i32)> {
    s.live_docs("items")
        .await
        .iter()
        .map(|d: &Document| {
            (
                d.get_i32("_id").unwrap_or(-1),
                d.get_str("name").unwrap_or("<missing>").to_owned(),
                d.get_i32("qty").unwrap_or(-1),
            )
        })
        .collect()
}

async fn wait_in_sync(s: &Scenario, what: &str) {
    let expected = pg_rows(s).await;
    until(what, WAIT, || async {
        let seen = mongo_rows(s).await;
        if seen == expected {
            Ok(())
        } else {
            Err(format!(
                "{} documents, {} rows; first difference: {:?}",
                seen.len(),
                expected.len(),
                seen.iter()
                    .zip(&expected)
                    .find(|(a, b)| a != b)
                    .map(|(a, b)| format!("{a:?} != {b:?}"))
            ))
        }
    })
    .await;
}

fn dead_lettered(running: &Running) -> Vec<(&'static str, u64)> {
    STAGES
        .iter()
        .map(|stage| {
            let n = running
                .metrics
                .dead_lettered
                .get_or_create(&StageLabel {
                    stage: (*stage).to_owned(),
                })
                .get();
            (*stage, n)
        })
        .filter(|(_, n)| *n > 0)
        .collect()
}

async fn wait_generation(running: &Running, generation: i64) {
    let gauge = running.metrics.mongodb_client_generation.clone();
    until(
        &format!("a batch written by MongoDB client generation {generation}"),
        Duration::from_secs(20),
        || {
            let seen = gauge.get();
            async move {
                if seen == generation {
                    Ok(())
                } else {
                    Err(format!("generation {seen}"))
                }
            }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sync_service_follows_kv_secret_versions_under_load() {
    let logs = LogCapture::install();
    let admin = VaultAdmin::for_tests().await;

    let s = Scenario::new("vault").await;
    // Drops the schema and database even when an assertion fails.
    let _cleanup = s.cleanup_guard();
    let server = authority(s.contract.require("MONGODB_URI"));
    let proxy_1 = FlakyProxy::start(&server).await.unwrap();
    let proxy_2 = FlakyProxy::start(&server).await.unwrap();
    let uris = [
        direct_uri(&authority(proxy_1.address())),
        direct_uri(&authority(proxy_2.address())),
        direct_uri(&server),
    ];
    let run = suffix();
    let password = |n: usize| format!("sync-mongo-pw-{n}-{run}");
    let path = format!("vault_it/sync_{run}/mongodb");
    let put_version = |n: usize| {
        let (admin, path) = (admin.clone(), path.clone());
        let body = json!({
            "username": format!("svc_sync_{n}"),
            "password": password(n),
            "uri": uris[n],
            "database": s.database,
        });
        async move { admin.kv_put("secret", &path, &body).await.unwrap() }
    };
    let first_version = put_version(0).await;

    // A token of the test policy (reads `secret/vault_it/*`), so that the test knows the
    // token the service uses and can look for it in the logs.
    let token = admin
        .write(
            "auth/token/create-orphan",
            &json!({ "policies": ["vault-it"], "ttl": "10m", "display_name": "sync-vault-it" }),
        )
        .await
        .unwrap()
        .and_then(|v| v["auth"]["client_token"].as_str().map(str::to_owned))
        .expect("client token");

    s.sql(
        "CREATE TABLE {s}.items (id int PRIMARY KEY, name text NOT NULL, qty int NOT NULL);
         INSERT INTO {s}.items SELECT i, 'start-' || i, i FROM generate_series(1, 20) i;",
    )
    .await;
    let mut config = s.config(PROJECTIONS);
    // Nothing listens there: every byte must go where the secret says.
    config.mongodb.uri = "mongodb://127.0.0.1:1/?directConnection=true".into();
    let section: VaultSection = serde_json::from_value(json!({
        "address": admin.address(),
        "token": token,
        "mongodb_secret": path,
        "poll_interval_ms": 300,
        // SecantusDB has no authentication (see the module doc).
        "use_credentials": false,
    }))
    .unwrap();
    config.vault = Some(section);
    let shown = format!("{config:?}");
    assert!(!shown.contains(&token), "the token shows in Debug");
    let dead_letter_collection = config.mongodb.dead_letter_collection.clone();

    let running = Running::start(SyncService::new(config));
    wait_in_sync(&s, "the first rows through the secret's first address").await;
    assert_eq!(running.metrics.mongodb_client_generation.get(), 0);

    // Steady load: an insert and an update every ~20 ms, each its own transaction.
    let stop = Arc::new(AtomicBool::new(false));
    let statements = Arc::new(AtomicU64::new(0));
    let load = {
        let (stop, statements) = (Arc::clone(&stop), Arc::clone(&statements));
        let url = s.contract.require("DATABASE_URL").to_owned();
        let schema = s.schema.clone();
        tokio::spawn(async move {
            let (pg, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .unwrap();
            tokio::spawn(connection);
            let mut id = 20;
            while !stop.load(Ordering::SeqCst) {
                id += 1;
                pg.batch_execute(&format!(
                    "INSERT INTO {schema}.items VALUES ({id}, 'row-{id}', 0);
                     UPDATE {schema}.items SET qty = qty + 1, name = 'upd-' || qty + 1 WHERE id = {};",
                    id / 2
                ))
                .await
                .unwrap();
                statements.fetch_add(2, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };

    // Two new versions, each to another address; the old address is switched off once
    // batches are written through the rebuilt client.
    let mut versions = vec![first_version];
    for (n, old) in [(1usize, &proxy_1), (2, &proxy_2)] {
        tokio::time::sleep(Duration::from_secs(2)).await;
        versions.push(put_version(n).await);
        wait_generation(&running, n as i64).await;
        // Let operations started on the old client finish, then cut it off.
        tokio::time::sleep(Duration::from_millis(500)).await;
        old.set_down(true);
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::SeqCst);
    load.await.unwrap();
    assert!(
        versions.windows(2).all(|w| w[1] == w[0] + 1),
        "{versions:?}"
    );
    let statements = statements.load(Ordering::SeqCst);
    assert!(
        statements >= 200,
        "too little load: {statements} statements"
    );

    wait_in_sync(&s, "every row with its values after two secret versions").await;
    assert_eq!(
        dead_lettered(&running),
        vec![],
        "no dead letter across the rotations"
    );
    let captured = logs.contents();
    assert!(
        !captured.contains("MongoDB write failed"),
        "a MongoDB write failed across the rotations"
    );
    assert_eq!(
        captured
            .matches("MongoDB client rebuilt from a new Vault secret version")
            .count(),
        2,
        "one rebuild per new version"
    );
    assert!(
        running
            .metrics
            .render()
            .contains("sync_mongodb_client_generation 2"),
        "the metric shows the rebuilds"
    );

    // A poison message after the rotations: its record must land through the current
    // client (the first address is off).
    let (partition, offset) = s
        .send_raw(&s.topic("items"), br#"{"id":-1}"#, support::CORRUPT)
        .await;
    let id = format!("{}/{partition}/{offset}", s.topic("items"));
    let records = s
        .mongo
        .database(&s.database)
        .collection::<Document>(&dead_letter_collection);
    let record = until("the poison message's dead-letter record", WAIT, || async {
        match records.find_one(doc! { "_id": &id }).await.unwrap() {
            Some(record) => Ok(record),
            None => Err(format!("dead letters {:?}", dead_lettered(&running))),
        }
    })
    .await;
    assert_eq!(record.get_str("status"), Ok("pending"), "{record:?}");
    assert_eq!(record.get_str("stage"), Ok("decode"), "{record:?}");
    assert_eq!(dead_lettered(&running), vec![("decode", 1)]);
    // Other keys keep flowing behind it.
    s.sql("UPDATE {s}.items SET name = 'after-poison' WHERE id = 1")
        .await;
    wait_in_sync(&s, "a change after the poison message").await;

    running.stop().await;
    let _ = admin
        .write("auth/token/revoke", &json!({ "token": token }))
        .await;
    let _ = admin.delete(&format!("secret/metadata/{path}")).await;
    s.cleanup().await;

    let mut secrets: Vec<String> = (0..3).map(password).collect();
    secrets.push(token.clone());
    secrets.push(admin.token().expose().to_owned());
    logs.assert_absent(&secrets.iter().map(String::as_str).collect::<Vec<_>>());
}
