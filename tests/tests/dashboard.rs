//! The Grafana dashboard's queries against a real Prometheus scraping a real sync-service.
//!
//! There is no Grafana on machines without Docker (Compose provisions it), so this test
//! checks what the dashboard depends on: a Prometheus server (Debian's package, unpacked by
//! `scripts/ensure-prometheus.sh`, run by the test on a free port) scrapes the service's
//! `/metrics` every second while changes, re-sent change events (stale writes) and a corrupt
//! message (dead letter) flow through the stack; then every query of
//! `docker/grafana/dashboards/sync-service.json` is evaluated through the Prometheus HTTP
//! API and must return a positive value (lag: a finite one, 0 when caught up).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rdkafka::Message;
use support::{Running, Scenario, eventually, free_port, until};
use sync_service::SyncService;

/// The Prometheus binary, installed into the tool cache when missing.
fn prometheus_binary() -> PathBuf {
    let out = Command::new(cqrs_e2e::workspace_root().join("scripts/ensure-prometheus.sh"))
        .stderr(Stdio::inherit())
        .output()
        .expect("scripts/ensure-prometheus.sh");
    assert!(
        out.status.success(),
        "scripts/ensure-prometheus.sh failed: no Prometheus to evaluate the dashboard with"
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    PathBuf::from(stdout.lines().last().expect("a path").trim())
}

/// A Prometheus server scraping `target` every second (killed when dropped).
struct Prometheus {
    child: Child,
    url: String,
    dir: PathBuf,
}

impl Prometheus {
    fn start(target: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("dashboard-{}", support::suffix()));
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: sync-service\n    static_configs:\n      \
                 - targets: ['{target}']\n"
            ),
        )
        .unwrap();
        let listen = format!("127.0.0.1:{}", free_port());
        let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
        let child = Command::new(prometheus_binary())
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={listen}"))
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("starting prometheus");
        Prometheus {
            child,
            url: format!("http://{listen}"),
            dir,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
    }

    /// Evaluates an instant query; `Err` carries Prometheus' answer.
    async fn query(&self, expr: &str) -> Result<Vec<f64>, String> {
        let response = reqwest::Client::new()
            .get(format!("{}/api/v1/query", self.url))
            .query(&[("query", expr)])
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let body: serde_json::Value = response.json().await.map_err(|e| e.to_string())?;
        if body["status"] != "success" {
            return Err(body.to_string());
        }
        let values = body["data"]["result"]
            .as_array()
            .ok_or_else(|| body.to_string())?
            .iter()
            .filter_map(|r| r["value"][1].as_str()?.parse::<f64>().ok())
            .collect();
        Ok(values)
    }

    /// Whether the scrape target is up.
    async fn target_up(&self) -> bool {
        self.query("up").await.is_ok_and(|v| v == [1.0])
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- prometheus log ----\n{}", self.log());
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Every `expr` of the dashboard's panels, with Grafana's range variables filled in.
fn dashboard_queries() -> Vec<(String, String)> {
    let path = cqrs_e2e::workspace_root().join("docker/grafana/dashboards/sync-service.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let mut queries = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().into_iter().flatten() {
            if let Some(expr) = target["expr"].as_str() {
                let expr = expr
                    .replace("$__rate_interval", "1m")
                    .replace("$__range", "10m");
                queries.push((panel["title"].as_str().unwrap_or("?").to_owned(), expr));
            }
        }
    }
    queries
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_dashboard_query_returns_data_from_a_real_prometheus() {
    let queries = dashboard_queries();
    assert!(queries.len() >= 10, "the dashboard lost its queries");

    let s = Scenario::new("dash").await;
    let guard = s.cleanup_guard();
    s.sql(
        "CREATE TABLE {s}.items (id int PRIMARY KEY, qty int NOT NULL);
         INSERT INTO {s}.items SELECT g, g FROM generate_series(1, 200) g;",
    )
    .await;
    let projections = r#"
        [[projection]]
        table = "{s}.items"
        collection = "items"
    "#;
    let listen = format!("127.0.0.1:{}", free_port());
    let mut config = s.config(projections);
    config.http.listen = listen.clone();
    let prometheus = Prometheus::start(&listen);
    let service = Running::start(SyncService::new(config));
    eventually("the rows projected", Duration::from_secs(60), || async {
        (s.live_docs("items").await.len() == 200).then_some(())
    })
    .await;
    eventually(
        "Prometheus scraping the service",
        Duration::from_secs(30),
        || async { prometheus.target_up().await.then_some(()) },
    )
    .await;

    // Steady changes while Prometheus scrapes and the queries run, and one message no
    // decoder can read.
    let load = {
        let (contract, schema) = (s.contract.clone(), s.schema.clone());
        tokio::spawn(async move {
            let pg = support::postgres(&contract).await;
            for round in 0.. {
                pg.batch_execute(&format!(
                    "UPDATE {schema}.items SET qty = qty + 1 WHERE id % 40 = {};
                     INSERT INTO {schema}.items VALUES ({}, 0);",
                    round % 40,
                    1000 + round
                ))
                .await
                .unwrap();
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_secs(3)).await;
    s.send_raw(&s.topic("items"), br#"{"id":-1}"#, support::CORRUPT)
        .await;
    // Twenty change events delivered again, as Debezium does after a restart: stale writes.
    let copier = s.reader(&s.topic("items"), "copier");
    let mut copied = 0;
    while copied < 20 {
        let message = tokio::time::timeout(Duration::from_secs(30), copier.recv())
            .await
            .expect("reading the items topic")
            .unwrap();
        let (Some(key), Some(value)) = (message.key(), message.payload()) else {
            continue;
        };
        if value.first() != Some(&0) || key.first() != Some(&0) {
            continue; // not an Avro change event (the corrupt message)
        }
        s.send_raw(&s.topic("items"), key, value).await;
        copied += 1;
    }
    tokio::time::sleep(Duration::from_secs(5)).await;

    for (title, expr) in &queries {
        // Lag comes from librdkafka's statistics every 5 s, the rest after a scrape or two.
        let values = until(
            &format!("a positive value for {title}: {expr}"),
            Duration::from_secs(30),
            || async {
                match prometheus.query(expr).await {
                    // Lag may be 0 when the group caught up; everything else saw activity.
                    Ok(values)
                        if values
                            .iter()
                            .any(|v| v.is_finite() && (*v > 0.0 || expr.contains("lag"))) =>
                    {
                        Ok(values)
                    }
                    Ok(values) => Err(format!("{values:?}")),
                    Err(e) => Err(format!("refused: {e}")),
                }
            },
        )
        .await;
        eprintln!("{title}: {expr} = {values:?}");
    }
    load.abort();
    service.stop().await;
    s.cleanup().await;
    guard.disarm();
}
