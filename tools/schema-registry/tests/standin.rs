//! Spawns the real `schema-registry-standin` binary on an ephemeral port and talks to it over
//! HTTP, both directly and through the real Rust client (`schema_registry_converter`).

// Test helpers outside #[test] functions: clippy.toml's allow-*-in-tests does not reach them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use apache_avro::types::Value as Avro;
use reqwest::StatusCode;
use schema_registry_converter::async_impl::avro::{AvroDecoder, AvroEncoder};
use schema_registry_converter::async_impl::schema_registry::SrSettings;
use schema_registry_converter::schema_registry_common::{
    SchemaType, SubjectNameStrategy, SuppliedSchema,
};
use serde_json::{Value, json};

const CT: &str = "application/vnd.schemaregistry.v1+json";

const ORDER_V1: &str = r#"{"type":"record","name":"Order","namespace":"cqrs.test","fields":[{"name":"id","type":"long"},{"name":"customer","type":"string"}]}"#;
/// ORDER_V1 with other whitespace and key order: the same schema.
const ORDER_V1_REFORMATTED: &str = r#"{
  "namespace": "cqrs.test", "name": "Order", "type": "record",
  "fields": [ { "type": "long", "name": "id" }, { "name": "customer", "type": "string" } ]
}"#;
const ORDER_V2: &str = r#"{"type":"record","name":"Order","namespace":"cqrs.test","fields":[{"name":"id","type":"long"},{"name":"customer","type":"string"},{"name":"note","type":["null","string"],"default":null}]}"#;

/// The running binary; killed when dropped.
struct Registry {
    child: Child,
    url: String,
    http: reqwest::Client,
}

impl Registry {
    fn start(data_file: &Path) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_schema-registry-standin"))
            .args(["--listen", "127.0.0.1:0", "--data-file"])
            .arg(data_file)
            .env("RUST_LOG", "warn")
            .env_remove("SCHEMA_REGISTRY_LISTEN")
            .env_remove("SCHEMA_REGISTRY_DATA_FILE")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn schema-registry-standin");
        let stdout = child.stdout.take().expect("stdout is piped");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read the listening line");
        let url = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first stdout line: {line:?}"))
            .to_owned();
        Self {
            child,
            url,
            http: reqwest::Client::new(),
        }
    }

    fn stop(mut self) {
        self.child.kill().expect("kill");
        self.child.wait().expect("wait");
    }

    async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        let resp = self
            .http
            .post(format!("{}{path}", self.url))
            .header("content-type", CT)
            .body(body.to_string())
            .send()
            .await
            .expect("POST");
        Self::read(resp).await
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        let resp = self
            .http
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .expect("GET");
        Self::read(resp).await
    }

    async fn read(resp: reqwest::Response) -> (StatusCode, Value) {
        let status = resp.status();
        assert_eq!(
            resp.headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok()),
            Some(CT),
            "content type of every reply"
        );
        let body = resp.json::<Value>().await.expect("JSON body");
        (status, body)
    }

    async fn register(&self, subject: &str, schema: &str) -> u64 {
        let (status, body) = self
            .post(
                &format!("/subjects/{subject}/versions?normalize=false"),
                json!({ "schema": schema }),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["id"].as_u64().expect("id")
    }

    fn settings(&self) -> SrSettings {
        SrSettings::new_builder(self.url.clone())
            .no_proxy()
            .build()
            .expect("SrSettings")
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn data_file(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("registry.json")
}

#[tokio::test]
async fn register_same_id_and_new_version() {
    let dir = tempfile::tempdir().unwrap();
    let sr = Registry::start(&data_file(&dir));

    let (status, body) = sr.get("/").await;
    assert_eq!((status, body), (StatusCode::OK, json!({})));

    let id1 = sr.register("orders-value", ORDER_V1).await;
    assert_eq!(sr.register("orders-value", ORDER_V1).await, id1);
    assert_eq!(
        sr.register("orders-value", ORDER_V1_REFORMATTED).await,
        id1,
        "whitespace and key order must not change the id"
    );
    let id2 = sr.register("orders-value", ORDER_V2).await;
    assert_ne!(id1, id2);
    // The same schema under another subject keeps its id.
    assert_eq!(sr.register("other-value", ORDER_V1).await, id1);

    assert_eq!(
        sr.get("/subjects/orders-value/versions").await.1,
        json!([1, 2])
    );
    let (status, subjects) = sr.get("/subjects").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(subjects, json!(["orders-value", "other-value"]));

    let (_, latest) = sr.get("/subjects/orders-value/versions/latest").await;
    assert_eq!(
        latest,
        json!({"subject": "orders-value", "version": 2, "id": id2, "schema": ORDER_V2})
    );
    let (_, v1) = sr.get("/subjects/orders-value/versions/1").await;
    assert_eq!(v1["id"], json!(id1));
    assert_eq!(
        v1["schema"],
        json!(ORDER_V1),
        "the original text is returned"
    );

    let (status, body) = sr.get("/subjects/orders-value/versions/7").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error_code"], json!(40402));
    let (status, body) = sr.get("/subjects/orders-value/versions/abc").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["error_code"], json!(42202));
    let (status, body) = sr.get("/subjects/nope/versions").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error_code"], json!(40401));

    let (_, versions) = sr.get(&format!("/schemas/ids/{id1}/versions")).await;
    assert_eq!(
        versions,
        json!([{"subject": "orders-value", "version": 1}, {"subject": "other-value", "version": 1}])
    );
}

#[tokio::test]
async fn lookup_under_subject() {
    let dir = tempfile::tempdir().unwrap();
    let sr = Registry::start(&data_file(&dir));
    let id = sr.register("orders-value", ORDER_V1).await;

    // What the Java client sends.
    let (status, body) = sr
        .post(
            "/subjects/orders-value?normalize=false&deleted=true",
            json!({ "schema": ORDER_V1_REFORMATTED }),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        json!({"subject": "orders-value", "id": id, "version": 1, "schema": ORDER_V1})
    );

    let (status, body) = sr
        .post("/subjects/orders-value", json!({ "schema": ORDER_V2 }))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error_code"], json!(40403));
    assert!(body["message"].is_string());

    let (status, body) = sr
        .post("/subjects/unknown-value", json!({ "schema": ORDER_V1 }))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error_code"], json!(40401));
}

#[tokio::test]
async fn get_by_id_and_unknown_id() {
    let dir = tempfile::tempdir().unwrap();
    let sr = Registry::start(&data_file(&dir));
    let id = sr.register("orders-value", ORDER_V1).await;

    // The Java deserializer's call; Avro replies carry no schemaType, like Confluent.
    let (status, body) = sr
        .get(&format!(
            "/schemas/ids/{id}?fetchMaxId=false&subject=orders-value"
        ))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!({ "schema": ORDER_V1 }));
    // The Rust client's call.
    let (status, _) = sr.get(&format!("/schemas/ids/{id}?deleted=true")).await;
    assert_eq!(status, StatusCode::OK);
    let (_, body) = sr.get(&format!("/schemas/ids/{id}?fetchMaxId=true")).await;
    assert_eq!(body["maxId"], json!(id));

    let (status, body) = sr.get("/schemas/ids/4242?deleted=true").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error_code"], json!(40403));
    assert!(body["message"].as_str().unwrap().contains("4242"), "{body}");

    // A JSON Schema is stored with its type and reports it.
    let (status, body) = sr
        .post(
            "/subjects/json-value/versions",
            json!({ "schema": r#"{"type":"object"}"#, "schemaType": "JSON" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (_, got) = sr.get(&format!("/schemas/ids/{}", body["id"])).await;
    assert_eq!(got["schemaType"], json!("JSON"));
}

#[tokio::test]
async fn invalid_schema_is_42201() {
    let dir = tempfile::tempdir().unwrap();
    let sr = Registry::start(&data_file(&dir));
    for bad in [
        "this is not json",
        r#"{"type":"record","name":"X"}"#,
        r#"{"type":"record","name":"X","fields":[{"name":"a","type":"nosuchtype"}]}"#,
    ] {
        let (status, body) = sr
            .post("/subjects/bad-value/versions", json!({ "schema": bad }))
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}: {body}");
        assert_eq!(body["error_code"], json!(42201), "{bad}: {body}");
        assert!(body["message"].is_string());
    }
    // Nothing was registered.
    let (status, body) = sr.get("/subjects/bad-value/versions").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error_code"], json!(40401));
}

#[tokio::test]
async fn content_types_config_and_unknown_routes() {
    let dir = tempfile::tempdir().unwrap();
    let sr = Registry::start(&data_file(&dir));

    let resp = sr
        .http
        .post(format!("{}/subjects/plain-value/versions", sr.url))
        .json(&json!({ "schema": ORDER_V1 }))
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        StatusCode::OK,
        "application/json is accepted"
    );

    let resp = sr
        .http
        .post(format!("{}/subjects/plain-value/versions", sr.url))
        .header("content-type", "text/plain")
        .body(json!({ "schema": ORDER_V1 }).to_string())
        .send()
        .await
        .unwrap();
    let (status, body) = Registry::read(resp).await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(body["error_code"], json!(415));

    let (_, config) = sr.get("/config").await;
    assert_eq!(config, json!({ "compatibilityLevel": "BACKWARD" }));
    let resp = sr
        .http
        .put(format!("{}/config", sr.url))
        .header("content-type", CT)
        .body(r#"{"compatibility":"NONE"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(
        Registry::read(resp).await.1,
        json!({ "compatibility": "NONE" })
    );
    assert_eq!(
        sr.get("/config").await.1["compatibilityLevel"],
        json!("NONE")
    );
    let resp = sr
        .http
        .put(format!("{}/config/plain-value", sr.url))
        .header("content-type", CT)
        .body(r#"{"compatibility":"sideways"}"#)
        .send()
        .await
        .unwrap();
    let (status, body) = Registry::read(resp).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["error_code"], json!(42203));

    let (status, body) = sr.get("/no/such/endpoint").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error_code"], json!(404));
}

#[tokio::test]
async fn schemas_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = data_file(&dir);

    let sr = Registry::start(&path);
    let id1 = sr.register("orders-value", ORDER_V1).await;
    let id2 = sr.register("orders-value", ORDER_V2).await;
    sr.stop();

    let sr = Registry::start(&path);
    let (status, body) = sr.get(&format!("/schemas/ids/{id1}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!({ "schema": ORDER_V1 }));
    assert_eq!(
        sr.register("orders-value", ORDER_V2).await,
        id2,
        "same id after restart"
    );
    assert_eq!(
        sr.get("/subjects/orders-value/versions").await.1,
        json!([1, 2])
    );
    let id3 = sr
        .register(
            "customers-value",
            r#"{"type":"record","name":"Customer","fields":[{"name":"id","type":"long"}]}"#,
        )
        .await;
    assert!(
        id3 > id2,
        "ids keep counting up after a restart: {id3} after {id2}"
    );
}

#[tokio::test]
async fn rust_client_encodes_and_decodes_against_it() {
    let dir = tempfile::tempdir().unwrap();
    let sr = Registry::start(&data_file(&dir));
    let id = sr.register("orders-value", ORDER_V1).await;

    // TopicNameStrategy without a schema: the encoder fetches `orders-value` latest.
    let encoder = AvroEncoder::new(sr.settings());
    let bytes = encoder
        .encode(
            vec![
                ("id", Avro::Long(42)),
                ("customer", Avro::String("ada".into())),
            ],
            SubjectNameStrategy::TopicNameStrategy("orders".into(), false),
        )
        .await
        .expect("encode");
    assert_eq!(bytes[0], 0, "magic byte");
    assert_eq!(
        u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]),
        u32::try_from(id).unwrap()
    );

    let decoder = AvroDecoder::new(sr.settings());
    let decoded = decoder.decode(Some(&bytes)).await.expect("decode");
    assert_eq!(
        decoded.value,
        Avro::Record(vec![
            ("id".into(), Avro::Long(42)),
            ("customer".into(), Avro::String("ada".into())),
        ])
    );
    let with_schema = decoder
        .decode_with_schema(Some(&bytes))
        .await
        .expect("decode_with_schema")
        .expect("not null");
    assert_eq!(with_schema.schema.id, u32::try_from(id).unwrap());
    assert_eq!(with_schema.schema.raw, ORDER_V1);

    // With a supplied schema the client POSTs it (with an explicit "schemaType":"AVRO"):
    // the same schema must get the same id.
    let supplied = SuppliedSchema::new(
        Some("cqrs.test.Order".into()),
        SchemaType::Avro,
        ORDER_V1_REFORMATTED.into(),
    );
    let bytes2 = encoder
        .encode(
            vec![
                ("id", Avro::Long(7)),
                ("customer", Avro::String("bob".into())),
            ],
            SubjectNameStrategy::TopicNameStrategyWithSchema("orders".into(), false, supplied),
        )
        .await
        .expect("encode with supplied schema");
    assert_eq!(bytes2[..5], bytes[..5], "same schema id");

    // A key subject works the same way.
    let key_schema = SuppliedSchema::new(None, SchemaType::Avro, r#""long""#.into());
    let key = encoder
        .encode_value(
            Avro::Long(42),
            &SubjectNameStrategy::TopicNameStrategyWithSchema("orders".into(), true, key_schema),
        )
        .await
        .expect("encode key");
    assert_eq!(
        decoder.decode(Some(&key)).await.unwrap().value,
        Avro::Long(42)
    );
    assert_eq!(
        sr.get("/subjects").await.1,
        json!(["orders-key", "orders-value"])
    );

    // Bytes naming an id the registry does not have fail to decode.
    let mut unknown = bytes.clone();
    unknown[1..5].copy_from_slice(&9999u32.to_be_bytes());
    let err = decoder
        .decode(Some(&unknown))
        .await
        .expect_err("unknown schema id must not decode");
    assert!(!err.retriable, "a 404 is not retriable: {err:?}");

    // A null payload (a tombstone) decodes to Null.
    assert_eq!(decoder.decode(None).await.unwrap().value, Avro::Null);
}
