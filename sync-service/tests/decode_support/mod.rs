//! Shared helpers of the decode tests: the captured fixture and a small in-test HTTP server
//! that answers `GET /schemas/ids/{id}` like the Schema Registry.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::Value;
use sync_service::decode::{RawRecord, RecordHeader};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// One captured Kafka record.
#[derive(Debug, Clone)]
pub struct Captured {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<RecordHeader>,
}

impl Captured {
    pub fn raw(&self) -> RawRecord<'_> {
        RawRecord {
            topic: &self.topic,
            partition: self.partition,
            offset: self.offset,
            key: self.key.as_deref(),
            value: self.value.as_deref(),
            headers: self.headers.clone(),
        }
    }
}

/// The Avro fixture: registry answers by id, and the records.
pub struct Fixture {
    pub schemas: HashMap<u32, String>,
    pub messages: Vec<Captured>,
}

pub fn avro_fixture() -> Fixture {
    let text = include_str!("../fixtures/avro_types_fixture.json");
    let json: Value = serde_json::from_str(text).unwrap();
    let schemas = json["schemas"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.parse().unwrap(), v.as_str().unwrap().to_owned()))
        .collect();
    let hex_opt = |v: &Value| v.as_str().map(|s| hex::decode(s).unwrap());
    let messages = json["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| Captured {
            topic: m["topic"].as_str().unwrap().to_owned(),
            partition: m["partition"].as_i64().unwrap() as i32,
            offset: m["offset"].as_i64().unwrap(),
            key: hex_opt(&m["key_hex"]),
            value: hex_opt(&m["value_hex"]),
            headers: m["headers"]
                .as_array()
                .unwrap()
                .iter()
                .map(|h| RecordHeader {
                    key: h[0].as_str().unwrap().to_owned(),
                    value: hex_opt(&h[1]),
                })
                .collect(),
        })
        .collect();
    Fixture { schemas, messages }
}

/// What the fake registry answers for one id.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub body: String,
}

/// A minimal registry: `GET /schemas/ids/{id}` from a table, 404 (40403) otherwise.
#[derive(Clone, Default)]
pub struct FakeRegistry {
    answers: Arc<Mutex<HashMap<u32, Answer>>>,
    hits: Arc<Mutex<HashMap<u32, usize>>>,
}

impl FakeRegistry {
    pub fn with_schemas(schemas: &HashMap<u32, String>) -> Self {
        let r = FakeRegistry::default();
        for (id, body) in schemas {
            r.set(*id, 200, body);
        }
        r
    }

    pub fn set(&self, id: u32, status: u16, body: &str) {
        self.answers.lock().unwrap().insert(
            id,
            Answer {
                status,
                body: body.to_owned(),
            },
        );
    }

    pub fn hits(&self, id: u32) -> usize {
        self.hits.lock().unwrap().get(&id).copied().unwrap_or(0)
    }

    /// Serves on a free port; returns the base URL.
    pub async fn start(&self) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    return;
                };
                let this = this.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 1024];
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let head = String::from_utf8_lossy(&buf).to_string();
                    let path = head.split_whitespace().nth(1).unwrap_or("").to_owned();
                    let id = path
                        .strip_prefix("/schemas/ids/")
                        .and_then(|rest| rest.split('?').next())
                        .and_then(|id| id.parse::<u32>().ok());
                    let answer = match id {
                        Some(id) => {
                            *this.hits.lock().unwrap().entry(id).or_default() += 1;
                            this.answers.lock().unwrap().get(&id).cloned()
                        }
                        None => None,
                    }
                    .unwrap_or(Answer {
                        status: 404,
                        body: r#"{"error_code":40403,"message":"Schema not found"}"#.into(),
                    });
                    let reason = match answer.status {
                        200 => "OK",
                        404 => "Not Found",
                        500 => "Internal Server Error",
                        503 => "Service Unavailable",
                        _ => "Other",
                    };
                    let response = format!(
                        "HTTP/1.1 {} {reason}\r\nContent-Type: application/vnd.schemaregistry.v1+json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
                        answer.status,
                        answer.body.len(),
                        answer.body
                    );
                    let _ = stream.write_all(response.as_bytes()).await;
                    let _ = stream.shutdown().await;
                });
            }
        });
        format!("http://{addr}")
    }
}
