//! Each component of the stack, through the real servers in their containers: a row reaches
//! Kafka as Avro through the Schema Registry, Connect reports the connectors RUNNING,
//! MongoDB is a replica set (transactions work), Vault leases a database user that logs in.
//! All tests of this binary share one stack (`support::stack`), each in its own scope.

use std::time::Duration;

use crate::support::{self, get_json, until};
use apache_avro::types::Value as Avro;
use bson::doc;
use rdkafka::ClientConfig;
use rdkafka::Message as _;
use rdkafka::consumer::{Consumer as _, StreamConsumer};
use schema_registry_converter::async_impl::avro::AvroDecoder;
use schema_registry_converter::async_impl::schema_registry::SrSettings;

/// `record.name`, looking through the unions Debezium wraps optional fields in.
fn field<'a>(record: &'a Avro, name: &str) -> Option<&'a Avro> {
    let record = match record {
        Avro::Union(_, inner) => inner.as_ref(),
        other => other,
    };
    match record {
        Avro::Record(fields) => fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| match v {
                Avro::Union(_, inner) => inner.as_ref(),
                other => other,
            }),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_reaches_kafka_as_avro_through_the_registry() {
    let stack = support::stack().await;
    let scope = stack.scope("avro").await.unwrap();
    let s = scope.schema();
    support::pg(&stack)
        .await
        .batch_execute(&format!(
            "CREATE SCHEMA {s};
             CREATE TABLE {s}.items (id bigint PRIMARY KEY, name text NOT NULL);
             INSERT INTO {s}.items VALUES (1, 'first');"
        ))
        .await
        .unwrap();
    let topic = scope.topic("items");
    let registry = stack.endpoints().schema_registry_url.clone();
    let subject = format!("{topic}-value");
    until(
        "Debezium to register the value schema",
        Duration::from_secs(60),
        || {
            let (url, subject) = (format!("{registry}/subjects"), subject.clone());
            async move {
                let subjects = get_json(&url).await?;
                let found = subjects
                    .as_array()
                    .is_some_and(|a| a.iter().any(|v| v == &subject));
                if found {
                    Ok(())
                } else {
                    Err(subjects.to_string())
                }
            }
        },
    )
    .await;

    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &stack.endpoints().kafka_bootstrap)
        .set("group.id", scope.consumer_group())
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "6000")
        .create()
        .unwrap();
    consumer.subscribe(&[&topic]).unwrap();
    let message = tokio::time::timeout(Duration::from_secs(60), consumer.recv())
        .await
        .unwrap_or_else(|_| panic!("no message on {topic} within 60 s"))
        .unwrap();
    let settings = SrSettings::new_builder(registry)
        .no_proxy()
        .build()
        .unwrap();
    let value = AvroDecoder::new(settings)
        .decode_with_schema(message.payload())
        .await
        .unwrap()
        .expect("a change event, not a tombstone");
    assert!(value.schema.id > 0, "the schema id comes from the registry");
    let after = field(&value.value, "after").expect("an `after` image");
    assert_eq!(field(after, "id"), Some(&Avro::Long(1)));
    assert_eq!(field(after, "name"), Some(&Avro::String("first".into())));
    assert_eq!(field(&value.value, "op"), Some(&Avro::String("c".into())));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_reports_the_connectors_running() {
    let stack = support::stack().await;
    let url = format!(
        "{}/connectors?expand=status",
        stack.endpoints().kafka_connect_url
    );
    let connectors = get_json(&url).await.unwrap();
    for name in ["cqrs-postgres", "cqrs-outbox"] {
        let status = &connectors[name]["status"];
        assert_eq!(status["connector"]["state"], "RUNNING", "{name}: {status}");
        let tasks = status["tasks"].as_array().unwrap();
        assert!(!tasks.is_empty(), "{name}: {status}");
        assert!(
            tasks.iter().all(|t| t["state"] == "RUNNING"),
            "{name}: {status}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mongodb_is_a_replica_set() {
    let stack = support::stack().await;
    let scope = stack.scope("replica_set").await.unwrap();
    let client = scope.mongo_client().await.unwrap().client();
    let hello = client
        .database("admin")
        .run_command(doc! { "hello": 1 })
        .await
        .unwrap();
    assert!(!hello.get_str("setName").unwrap().is_empty(), "{hello}");
    assert!(hello.get_bool("isWritablePrimary").unwrap(), "{hello}");
    // what a replica set gives and a standalone server refuses: a transaction
    let items = client
        .database(scope.database())
        .collection::<bson::Document>("items");
    let mut session = client.start_session().await.unwrap();
    session.start_transaction().await.unwrap();
    items
        .insert_one(doc! { "_id": 1 })
        .session(&mut session)
        .await
        .unwrap();
    session.commit_transaction().await.unwrap();
    assert_eq!(items.count_documents(doc! {}).await.unwrap(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vault_leases_a_database_user_that_logs_in() {
    let stack = support::stack().await;
    let vault = stack.vault().expect("the stack runs Vault");
    let client = cqrs_vault::VaultClient::connect(vault.approle_config("orders").unwrap())
        .await
        .unwrap();
    let lease = cqrs_vault::DatabaseLease::start(&client, "orders", Default::default())
        .await
        .unwrap();
    let creds = lease.current();
    let e = stack.endpoints();
    let url = format!(
        "host={} port={} dbname={} user={} password={}",
        e.postgres_host,
        e.postgres_port,
        e.postgres_db,
        creds.username,
        creds.password.expose()
    );
    let (pg, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let row = pg
        .query_one("SELECT session_user::text, current_user::text", &[])
        .await
        .unwrap();
    assert_eq!(
        row.get::<_, String>(0),
        creds.username,
        "logged in as the leased user"
    );
    assert_eq!(
        row.get::<_, String>(1),
        "svc_orders",
        "acting as the service's group role"
    );
    drop(pg);
    let username = creds.username.clone();
    lease.shutdown().await.unwrap();
    let gone = support::pg(&stack)
        .await
        .query_opt("SELECT 1 FROM pg_roles WHERE rolname = $1", &[&username])
        .await
        .unwrap();
    assert!(gone.is_none(), "revoking the lease drops the user");
}
