//! The Compose stack for real, through its containers only.
//!
//! `docker/compose.sh` brings up `docker/docker-compose.yml` under a project of its own
//! (`cqrs-e2e-compose`: its own network and volumes) with every published port on a free
//! port, so it never touches the stack the other tests use (the local stack, or a Compose
//! project `cqrs-toolkit`) nor its ports, data or replication slots. On an engine that
//! reaches no registry (these machines) it adds `docker/docker-compose.offline.yml` and the
//! images `docker/images/build.sh` builds here, the sync-service's from
//! `docker/sync-service/Dockerfile` with the binary this workspace just built.
//!
//! Checked: every health check green and every init job (replica set, Vault bootstrap,
//! connector registration) exited 0; a row written into PostgreSQL in its container reaches
//! MongoDB in its container through Debezium in the Connect container and the sync-service
//! container; the Vault bootstrap's AppRole logs in and leases a PostgreSQL user that logs in
//! to the PostgreSQL container; Prometheus in its container scrapes the sync-service
//! container and a query returns a value; `compose restart sync-service` in the middle of a
//! load loses no row; `docker stop` sends SIGTERM and the service exits 0 after its flush,
//! losing nothing; the published ports are none of the `.env` ones, and the endpoints of the
//! other stack that answered before still answer after; `clean` (`down -v`) leaves no
//! container, network or volume of the project behind.
//!
//! It fails, never skips, when no engine answers (`scripts/ensure-docker.sh`, which
//! `make test` runs, starts one) or an image cannot be built. Phase durations are written to
//! stderr as `compose_stack:` lines.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use bson::{Document, doc};
use cqrs_e2e::{Contract, check_tcp, url_host_port, workspace_root};
use futures::TryStreamExt;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Message as _, Offset, TopicPartitionList};
use serde_json::{Value as Json, json};
use support::until;

/// The project of this test (`CQRS_COMPOSE_TEST_PROJECT` overrides it).
const DEFAULT_PROJECT: &str = "cqrs-e2e-compose";

/// Every host port the Compose file publishes: 0 = a free port each.
const PORT_VARS: &[&str] = &[
    "POSTGRES_PORT",
    "MONGODB_PORT",
    "SCHEMA_REGISTRY_PORT",
    "KAFKA_CONNECT_PORT",
    "VAULT_PORT",
    "PROMETHEUS_PORT",
    "SYNC_SERVICE_HTTP_PORT",
    "OTEL_GRPC_PORT",
    "OTEL_HTTP_PORT",
    "GRAFANA_PORT",
    "TEMPO_PORT",
    "LOKI_PORT",
];

/// The long-running services of the offline run (observability has no local image).
const SERVICES: &[&str] = &[
    "postgres",
    "mongodb",
    "kafka",
    "schema-registry",
    "kafka-connect",
    "vault",
    "prometheus",
];
const INIT_JOBS: &[&str] = &["mongodb-init", "vault-init", "debezium-init"];

/// A line on stderr that the test harness does not capture: progress and timings show in
/// `make test`'s output.
fn report(msg: &str) {
    let _ = writeln!(std::io::stderr(), "compose_stack: {msg}");
}

fn tail(bytes: &[u8], lines: usize) -> String {
    let text = String::from_utf8_lossy(bytes);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// The test's Compose project; `clean` runs when it is dropped (also when the test fails,
/// after the logs of every service have been shown).
struct Stack {
    root: PathBuf,
    project: String,
    env: Vec<(String, String)>,
    armed: bool,
}

impl Stack {
    fn new() -> Self {
        let root = workspace_root();
        let project = std::env::var("CQRS_COMPOSE_TEST_PROJECT")
            .unwrap_or_else(|_| DEFAULT_PROJECT.to_owned());
        let target =
            std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
        let binary = target.join("debug/sync-service");
        assert!(
            binary.is_file(),
            "{} is missing: the sync-service image takes the binary of this workspace \
             (`cargo test --workspace` builds it; or `cargo build --bin sync-service`)",
            binary.display()
        );
        let mut env = vec![
            ("COMPOSE_PROJECT_NAME".to_owned(), project.clone()),
            // a free port rather than 0: the upstream Kafka advertises this very address
            (
                "KAFKA_BOOTSTRAP_SERVERS".to_owned(),
                format!("127.0.0.1:{}", support::free_port()),
            ),
            (
                "CQRS_SYNC_SERVICE_BIN".to_owned(),
                binary.display().to_string(),
            ),
            ("COMPOSE_WAIT_TIMEOUT".to_owned(), "300".to_owned()),
        ];
        env.extend(PORT_VARS.iter().map(|v| ((*v).to_owned(), "0".to_owned())));
        Stack {
            root,
            project,
            env,
            armed: true,
        }
    }

    fn command(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        c.current_dir(&self.root);
        for (k, v) in &self.env {
            c.env(k, v);
        }
        c
    }

    /// `docker/compose.sh ARGS` for this project; `app` adds the sync-service's profile.
    fn compose_sh(&self, args: &[&str], app: bool) -> Output {
        let mut c = self.command("bash");
        c.arg(self.root.join("docker/compose.sh")).args(args);
        if app {
            c.env("COMPOSE_PROFILES", "app");
        } else {
            c.env_remove("COMPOSE_PROFILES");
        }
        c.output().expect("cannot run docker/compose.sh")
    }

    fn compose_ok(&self, args: &[&str], app: bool) -> String {
        let out = self.compose_sh(args, app);
        assert!(
            out.status.success(),
            "docker/compose.sh {} failed ({}):\n{}\n{}",
            args.join(" "),
            out.status,
            tail(&out.stdout, 40),
            tail(&out.stderr, 150)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    fn docker(&self, args: &[&str]) -> Output {
        self.command("docker")
            .args(args)
            .output()
            .expect("cannot run docker")
    }

    fn docker_ok(&self, args: &[&str]) -> String {
        let out = self.docker(args);
        assert!(
            out.status.success(),
            "docker {} failed: {}",
            args.join(" "),
            tail(&out.stderr, 20)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    fn label(&self) -> String {
        format!("label=com.docker.compose.project={}", self.project)
    }

    /// The id of the one container of `service`.
    fn container(&self, service: &str) -> String {
        let ids = self.docker_ok(&[
            "ps",
            "-a",
            "-q",
            "--filter",
            &self.label(),
            "--filter",
            &format!("label=com.docker.compose.service={service}"),
        ]);
        let ids: Vec<&str> = ids.lines().collect();
        assert_eq!(
            ids.len(),
            1,
            "expected one container of service {service}, found {ids:?}"
        );
        ids[0].to_owned()
    }

    fn inspect(&self, id: &str, template: &str) -> String {
        self.docker_ok(&["inspect", "--format", template, id])
    }

    /// `127.0.0.1:<port>` where the container port of `service` is published.
    fn published(&self, service: &str, port: u16) -> String {
        let out = self.docker_ok(&["port", &self.container(service), &format!("{port}/tcp")]);
        out.lines()
            .find(|l| l.starts_with("127.0.0.1:"))
            .unwrap_or_else(|| panic!("{service}:{port} is not published on 127.0.0.1: {out}"))
            .to_owned()
    }

    /// Every host port published by a container of the project.
    fn published_ports(&self) -> Vec<u16> {
        let ids = self.docker_ok(&["ps", "-q", "--filter", &self.label()]);
        let mut ports = Vec::new();
        for id in ids.lines() {
            for line in self.docker_ok(&["port", id]).lines() {
                if let Some(p) = line.rsplit(':').next().and_then(|p| p.parse().ok()) {
                    ports.push(p);
                }
            }
        }
        ports
    }

    /// Containers, volumes and networks that still carry the project's label.
    fn leftovers(&self) -> Vec<String> {
        let mut left = Vec::new();
        for (kind, args) in [
            ("container", vec!["ps", "-a", "-q"]),
            ("volume", vec!["volume", "ls", "-q"]),
            ("network", vec!["network", "ls", "-q"]),
        ] {
            let mut args = args;
            let label = self.label();
            args.extend(["--filter", label.as_str()]);
            for id in self.docker_ok(&args).lines() {
                left.push(format!("{kind} {id}"));
            }
        }
        left
    }

    fn logs(&self, service: &str) -> String {
        let out = self.docker(&["logs", "--tail", "400", &self.container(service)]);
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }

    /// `clean` (down -v) and the check that nothing of the project is left.
    fn clean(mut self) {
        self.armed = false;
        self.compose_ok(&["clean"], true);
        let left = self.leftovers();
        assert!(
            left.is_empty(),
            "docker/compose.sh clean left these behind: {left:?}"
        );
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        if std::thread::panicking() {
            let out = self.compose_sh(&["compose", "logs", "--no-color", "--tail=60"], true);
            report(&format!(
                "the test failed; last lines of every service:\n{}",
                tail(&out.stdout, 600)
            ));
        }
        let _ = self.compose_sh(&["clean"], true);
    }
}

async fn get_json(url: &str) -> Result<Json, String> {
    let resp = reqwest::get(url).await.map_err(|e| format!("{url}: {e}"))?;
    let status = resp.status();
    let body = resp.text().await.map_err(|e| format!("{url}: {e}"))?;
    if !status.is_success() {
        return Err(format!("{url}: HTTP {status}: {body}"));
    }
    serde_json::from_str(&body).map_err(|e| format!("{url}: {e}: {body}"))
}

/// `status` of every row of `orders.orders` with `id >= from`.
async fn pg_rows(pg: &tokio_postgres::Client, from: i64) -> BTreeMap<i64, String> {
    pg.query(
        "SELECT id, status FROM orders.orders WHERE id >= $1",
        &[&from],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1)))
    .collect()
}

/// `status` of every live document of `read_models.orders` with `_id >= from`.
async fn mongo_docs(orders: &mongodb::Collection<Document>, from: i64) -> BTreeMap<i64, String> {
    let docs: Vec<Document> = orders
        .find(doc! { "_id": { "$gte": from } })
        .await
        .map_err(|e| e.to_string())
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    docs.iter()
        .filter(|d| !d.get_bool("_deleted").unwrap_or(false))
        .filter_map(|d| {
            let id = d.get_i64("_id").ok()?;
            Some((id, d.get_str("status").ok()?.to_owned()))
        })
        .collect()
}

/// Waits until MongoDB holds exactly the rows PostgreSQL holds (id >= from).
async fn reconcile(
    what: &str,
    pg: &tokio_postgres::Client,
    orders: &mongodb::Collection<Document>,
    from: i64,
) -> usize {
    let want = pg_rows(pg, from).await;
    until(what, Duration::from_secs(120), || {
        let want = want.clone();
        async move {
            let have = mongo_docs(orders, from).await;
            if have == want {
                Ok(have.len())
            } else {
                let missing = want.keys().filter(|k| !have.contains_key(k)).count();
                let differ = want
                    .iter()
                    .filter(|(k, v)| have.get(*k).is_some_and(|h| h != *v))
                    .count();
                Err(format!(
                    "{} rows in PostgreSQL, {} documents; {missing} missing, {differ} differ",
                    want.len(),
                    have.len()
                ))
            }
        }
    })
    .await
}

/// Writes rows `from..` in batches (insert 20, then mark the previous 20 `paid`) until
/// `duration` has passed; `progress` holds the next id. Returns the next id.
async fn write_load(
    pg: Arc<tokio_postgres::Client>,
    from: i64,
    duration: Duration,
    progress: Arc<AtomicI64>,
) -> i64 {
    let start = Instant::now();
    let mut next = from;
    while start.elapsed() < duration {
        pg.execute(
            "INSERT INTO orders.orders (id, status, amount, internal_note) \
             SELECT g, 'created', g % 1000, 'n' FROM generate_series($1::bigint, $2::bigint) g",
            &[&next, &(next + 19)],
        )
        .await
        .unwrap();
        if next > from {
            pg.execute(
                "UPDATE orders.orders SET status = 'paid' WHERE id BETWEEN $1 AND $2",
                &[&(next - 20), &(next - 1)],
            )
            .await
            .unwrap();
        }
        next += 20;
        progress.store(next, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    next
}

#[test]
fn compose_stack_through_its_containers() {
    let t_all = Instant::now();
    let contract = Contract::load();

    // An engine must answer: fail, do not skip.
    let info = Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .output();
    let engine = match info {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        Ok(out) => panic!(
            "no Docker engine answers (`docker info`: {}); scripts/ensure-docker.sh starts one \
             (make test runs it)",
            tail(&out.stderr, 5)
        ),
        Err(e) => panic!(
            "no docker client ({e}); scripts/ensure-docker.sh installs Debian's docker.io \
             (make test runs it)"
        ),
    };

    // The endpoints of the other stack (.env) that answer now must still answer at the end.
    let endpoints: Vec<String> = [
        format!(
            "{}:{}",
            contract.require("POSTGRES_HOST"),
            contract.require("POSTGRES_PORT")
        ),
        contract.require("KAFKA_BOOTSTRAP_SERVERS").to_owned(),
        url_host_port(contract.require("SCHEMA_REGISTRY_URL")).unwrap(),
        url_host_port(contract.require("KAFKA_CONNECT_URL")).unwrap(),
        url_host_port(contract.require("VAULT_ADDR")).unwrap(),
        url_host_port(
            &contract
                .require("MONGODB_URI")
                .replacen("mongodb://", "http://", 1),
        )
        .unwrap(),
    ]
    .into_iter()
    .filter(|hp| check_tcp(hp, Duration::from_secs(1)).is_ok())
    .collect();
    let contract_ports: Vec<u16> = [
        "5432", "9092", "8081", "8083", "27017", "8200", "9464", "4317", "4318", "9090",
    ]
    .iter()
    .map(|p| p.parse().unwrap())
    .chain(
        endpoints
            .iter()
            .filter_map(|hp| hp.rsplit(':').next()?.parse().ok()),
    )
    .collect();

    let stack = Stack::new();
    // what an earlier run that was killed may have left
    let _ = stack.compose_sh(&["clean"], true);
    let mode = stack.compose_ok(&["mode"], false);
    report(&format!(
        "engine {engine}, project {}, mode: {mode}",
        stack.project
    ));

    // ---- 1. the infrastructure: images, health checks, init jobs
    let t = Instant::now();
    stack.compose_ok(&["up"], false);
    report(&format!(
        "infrastructure up in {:.1}s (images built or found by their input hashes, every \
         health check green, init jobs done)",
        t.elapsed().as_secs_f64()
    ));
    for service in SERVICES {
        let id = stack.container(service);
        assert_eq!(
            stack.inspect(&id, "{{.State.Status}} {{.State.Health.Status}}"),
            "running healthy",
            "{service}"
        );
    }
    for job in INIT_JOBS {
        let id = stack.container(job);
        assert_eq!(
            stack.inspect(&id, "{{.State.Status}} {{.State.ExitCode}}"),
            "exited 0",
            "init job {job}:\n{}",
            stack.logs(job)
        );
    }

    let rt = tokio::runtime::Runtime::new().unwrap();
    let pg_url = format!(
        "postgres://{}:{}@{}/{}",
        contract.require("POSTGRES_USER"),
        contract.require("POSTGRES_PASSWORD"),
        stack.published("postgres", 5432),
        contract.require("POSTGRES_DB")
    );
    let registry = format!("http://{}", stack.published("schema-registry", 8081));
    let pg = rt.block_on(async {
        let (pg, conn) = tokio_postgres::connect(&pg_url, tokio_postgres::NoTls)
            .await
            .expect("PostgreSQL in its container");
        tokio::spawn(conn);
        // The table of the sync-service's `orders.orders` projection (docker/sync-service/
        // sync.toml), with a first row: Debezium creates its topic before the sync-service
        // subscribes (a new topic is only seen at librdkafka's next metadata refresh).
        pg.batch_execute(
            "CREATE TABLE orders.orders (id bigint PRIMARY KEY, status text NOT NULL, \
               amount numeric(12,2), internal_note text);
             INSERT INTO orders.orders VALUES (1, 'created', 10.50, 'not for the read side');",
        )
        .await
        .unwrap();
        until(
            "Debezium (Connect container) to register cqrs.orders.orders-value",
            Duration::from_secs(60),
            || {
                let url = format!("{registry}/subjects");
                async move {
                    let subjects = get_json(&url).await?;
                    if subjects
                        .as_array()
                        .is_some_and(|s| s.iter().any(|s| s == "cqrs.orders.orders-value"))
                    {
                        Ok(())
                    } else {
                        Err(subjects.to_string())
                    }
                }
            },
        )
        .await;
        Arc::new(pg)
    });

    // ---- 2. the sync-service container (profile app)
    let t = Instant::now();
    stack.compose_ok(&["up"], true);
    let sync_id = stack.container("sync-service");
    assert_eq!(
        stack.inspect(
            &sync_id,
            "{{.State.Status}} {{.State.Health.Status}} {{.Config.User}}"
        ),
        "running healthy 10001:10001",
        "the sync-service runs healthy as a non-root user"
    );
    report(&format!(
        "sync-service container up in {:.1}s",
        t.elapsed().as_secs_f64()
    ));

    let mongo_uri = format!(
        "mongodb://{}/?directConnection=true",
        stack.published("mongodb", 27017)
    );
    let vault = format!("http://{}", stack.published("vault", 8200));
    let prometheus = format!("http://{}", stack.published("prometheus", 9090));
    // the AppRole the Vault bootstrap wrote into the vault-approle volume, as the
    // sync-service container sees it (never printed)
    let role_id = stack.docker_ok(&["exec", &sync_id, "cat", "/run/cqrs/approle/orders/role_id"]);
    let secret_id = stack.docker_ok(&[
        "exec",
        &sync_id,
        "cat",
        "/run/cqrs/approle/orders/secret_id",
    ]);

    let orders = rt.block_on(async {
        let t = Instant::now();
        let mongo = mongodb::Client::with_uri_str(&mongo_uri).await.unwrap();
        let orders = mongo.database("read_models").collection::<Document>("orders");

        // ---- 3. a row through the containers: PostgreSQL -> Debezium -> Kafka -> sync-service -> MongoDB
        pg.execute(
            "INSERT INTO orders.orders VALUES (2, 'created', 20, 'not for the read side')",
            &[],
        )
        .await
        .unwrap();
        let doc = until(
            "row 2 in MongoDB (read_models.orders)",
            Duration::from_secs(60),
            || {
                let orders = orders.clone();
                async move {
                    orders
                        .find_one(doc! { "_id": 2_i64 })
                        .await
                        .map_err(|e| e.to_string())?
                        .ok_or_else(|| "not there yet".to_owned())
                }
            },
        )
        .await;
        assert_eq!(doc.get_str("status").unwrap(), "created", "{doc}");
        assert!(
            !doc.contains_key("internal_note"),
            "the projection excludes internal_note: {doc}"
        );
        // row 1 was written before the sync-service started; its key may sit in another
        // partition than row 2's, consumed a little later
        until(
            "row 1 (written before the sync-service started) in MongoDB",
            Duration::from_secs(60),
            || {
                let orders = orders.clone();
                async move {
                    orders
                        .find_one(doc! { "_id": 1_i64 })
                        .await
                        .map_err(|e| e.to_string())?
                        .map(|_| ())
                        .ok_or_else(|| "not there yet".to_owned())
                }
            },
        )
        .await;
        report(&format!(
            "row in PostgreSQL -> document in MongoDB through the containers in {:.1}s",
            t.elapsed().as_secs_f64()
        ));

        // ---- 4. Vault: the bootstrap's AppRole logs in and leases a PostgreSQL user
        let http = reqwest::Client::new();
        let login: Json = http
            .post(format!("{vault}/v1/auth/approle/login"))
            .json(&json!({ "role_id": role_id, "secret_id": secret_id }))
            .send()
            .await
            .unwrap()
            .error_for_status()
            .expect("AppRole login of `orders`")
            .json()
            .await
            .unwrap();
        let token = login["auth"]["client_token"].as_str().unwrap().to_owned();
        let creds: Json = http
            .get(format!("{vault}/v1/database/creds/orders"))
            .header("X-Vault-Token", &token)
            .send()
            .await
            .unwrap()
            .error_for_status()
            .expect("a lease of database/creds/orders")
            .json()
            .await
            .unwrap();
        let user = creds["data"]["username"].as_str().unwrap().to_owned();
        let password = creds["data"]["password"].as_str().unwrap();
        let lease_id = creds["lease_id"].as_str().unwrap().to_owned();
        let leased_url = format!(
            "postgres://{}:{}@{}/{}",
            urlencode(&user),
            urlencode(password),
            stack.published("postgres", 5432),
            contract.require("POSTGRES_DB")
        );
        let (leased, conn) = tokio_postgres::connect(&leased_url, tokio_postgres::NoTls)
            .await
            .expect("the leased user logs in to PostgreSQL in its container");
        tokio::spawn(conn);
        let row = leased
            .query_one("SELECT session_user::text, current_user::text", &[])
            .await
            .unwrap();
        assert_eq!(row.get::<_, String>(0), user);
        assert_eq!(
            row.get::<_, String>(1),
            "svc_orders",
            "the leased user's session runs as the service's group role"
        );
        drop(leased);
        http.put(format!("{vault}/v1/sys/leases/revoke"))
            .header("X-Vault-Token", &token)
            .json(&json!({ "lease_id": lease_id }))
            .send()
            .await
            .unwrap()
            .error_for_status()
            .expect("the AppRole token revokes its own lease");
        until(
            "the revoked user to be dropped",
            Duration::from_secs(30),
            || {
                let pg = pg.clone();
                let user = user.clone();
                async move {
                    let n: i64 = pg
                        .query_one("SELECT count(*) FROM pg_roles WHERE rolname = $1", &[&user])
                        .await
                        .map_err(|e| e.to_string())?
                        .get(0);
                    if n == 0 { Ok(()) } else { Err("still there".into()) }
                }
            },
        )
        .await;
        report("Vault AppRole login, PostgreSQL lease, login and revocation: ok");

        // ---- 5. Prometheus (its container) scrapes the sync-service container
        let value = until(
            "Prometheus to return sync_changes_consumed_total for cqrs.orders.orders",
            Duration::from_secs(60),
            || {
                let url = format!(
                    "{prometheus}/api/v1/query?query=sum(sync_changes_consumed_total%7Btopic%3D%22cqrs.orders.orders%22%7D)"
                );
                async move {
                    let r = get_json(&url).await?;
                    let v = r["data"]["result"][0]["value"][1]
                        .as_str()
                        .and_then(|v| v.parse::<f64>().ok())
                        .ok_or_else(|| r.to_string())?;
                    if v >= 2.0 { Ok(v) } else { Err(r.to_string()) }
                }
            },
        )
        .await;
        let up = get_json(&format!(
            "{prometheus}/api/v1/query?query=up%7Bjob%3D%22sync-service%22%7D"
        ))
        .await
        .unwrap();
        assert_eq!(up["data"]["result"][0]["value"][1], "1", "{up}");
        report(&format!(
            "Prometheus scrapes the sync-service: sync_changes_consumed_total = {value}"
        ));
        orders
    });

    // ---- host clients reach the broker through its published port (the tools and tests
    // on the host do; offline, tansu advertises the container's address, which the host
    // reaches on the bridge network)
    let kafka = stack.published("kafka", 9092);
    let (tx, rx) = std::sync::mpsc::channel();
    // on a thread of its own with a deadline: a librdkafka client that cannot reach a
    // broker can block in its destructor
    std::thread::spawn(move || {
        let _ = tx.send(host_kafka_roundtrip(&kafka));
    });
    match rx.recv_timeout(Duration::from_secs(90)) {
        Ok(Ok(())) => report("a host producer and consumer through the published Kafka port: ok"),
        Ok(Err(e)) => panic!("host Kafka client through the published port: {e}"),
        Err(_) => panic!("host Kafka client through the published port: no answer in 90 s"),
    }

    // ---- 6. `compose restart sync-service` in the middle of a load loses nothing
    let t = Instant::now();
    let progress = Arc::new(AtomicI64::new(10_000));
    let load = rt.spawn(write_load(
        pg.clone(),
        10_000,
        Duration::from_secs(10),
        progress.clone(),
    ));
    std::thread::sleep(Duration::from_secs(3));
    let before = progress.load(Ordering::SeqCst);
    let restart = stack.compose_sh(&["compose", "restart", "-t", "30", "sync-service"], true);
    let after = progress.load(Ordering::SeqCst);
    assert!(
        restart.status.success(),
        "compose restart sync-service: {}",
        tail(&restart.stderr, 20)
    );
    let end = rt.block_on(load).unwrap();
    assert!(
        after > before && end > after,
        "the load ran across the restart (next id {before} before, {after} after, {end} at the end)"
    );
    let logs = stack.logs("sync-service");
    assert!(
        logs.contains("stopped fetching") && logs.contains("sync-service stopped"),
        "the restart stopped the service gracefully:\n{}",
        tail(logs.as_bytes(), 30)
    );
    let n = rt.block_on(reconcile(
        "every row written across the restart in MongoDB with its last status",
        &pg,
        &orders,
        10_000,
    ));
    report(&format!(
        "compose restart sync-service during a load: {n} rows ({} written while it restarted) \
         all in MongoDB, {:.1}s",
        after - before,
        t.elapsed().as_secs_f64()
    ));

    // ---- 7. docker stop: SIGTERM, flush, exit 0; nothing lost
    let t = Instant::now();
    rt.block_on(async {
        pg.execute(
            "INSERT INTO orders.orders (id, status, amount) \
             SELECT g, 'created', 1 FROM generate_series(50000, 50999) g",
            &[],
        )
        .await
        .unwrap();
    });
    let stop = Instant::now();
    stack.docker_ok(&["stop", "-t", "30", &sync_id]);
    let stopped_in = stop.elapsed();
    let state = stack.inspect(&sync_id, "{{.State.ExitCode}} {{.State.OOMKilled}}");
    let logs = stack.logs("sync-service");
    assert_eq!(
        state,
        "0 false",
        "docker stop: the sync-service exits 0 (not killed after the grace period):\n{}",
        tail(logs.as_bytes(), 30)
    );
    assert!(
        stopped_in < Duration::from_secs(25),
        "SIGTERM stopped it in {stopped_in:?}: it did not wait for SIGKILL"
    );
    let last = logs.rsplit("shutdown requested").next().unwrap_or_default();
    assert!(
        last.contains("stopped fetching") && last.contains("sync-service stopped"),
        "the SIGTERM from docker stop ran the flush:\n{}",
        tail(logs.as_bytes(), 30)
    );
    stack.docker_ok(&["start", &sync_id]);
    let n = rt.block_on(reconcile(
        "the rows written before docker stop in MongoDB after the restart",
        &pg,
        &orders,
        50_000,
    ));
    report(&format!(
        "docker stop: exit 0 after its flush in {:.1}s; {n} rows all in MongoDB after docker start, {:.1}s",
        stopped_in.as_secs_f64(),
        t.elapsed().as_secs_f64()
    ));

    // ---- 8. no clash with the other stack
    let ports = stack.published_ports();
    let clashing: Vec<&u16> = ports
        .iter()
        .filter(|p| contract_ports.contains(p))
        .collect();
    assert!(
        clashing.is_empty(),
        "the test project published ports of the .env contract: {clashing:?}"
    );
    for hp in &endpoints {
        check_tcp(hp, Duration::from_secs(2)).unwrap_or_else(|e| {
            panic!("{hp} answered before the Compose run and does not any more: {e}")
        });
    }

    // ---- 9. down -v leaves nothing of the project
    drop(pg);
    drop(rt);
    let t = Instant::now();
    stack.clean();
    report(&format!(
        "clean (down -v) in {:.1}s, nothing left; whole Compose test {:.1}s",
        t.elapsed().as_secs_f64(),
        t_all.elapsed().as_secs_f64()
    ));
}

/// Produces a message through `bootstrap` (the published port) and reads it back with a
/// consumer assigned to its partition (no group: nothing to leave or commit).
fn host_kafka_roundtrip(bootstrap: &str) -> Result<(), String> {
    let topic = "compose-e2e-host";
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("message.timeout.ms", "20000")
        .create()
        .map_err(|e| e.to_string())?;
    let delivery = rt
        .block_on(producer.send(
            FutureRecord::to(topic).key("k").payload("from the host"),
            Duration::from_secs(20),
        ))
        .map_err(|(e, _)| format!("produce: {e}"))?;
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "compose-e2e-host")
        .set("enable.auto.commit", "false")
        .create()
        .map_err(|e| e.to_string())?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, delivery.partition, Offset::Offset(delivery.offset))
        .map_err(|e| e.to_string())?;
    consumer.assign(&tpl).map_err(|e| e.to_string())?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(500)) {
            Some(Ok(m)) if m.payload() == Some(&b"from the host"[..]) => return Ok(()),
            Some(Err(e)) => return Err(format!("consume: {e}")),
            _ => {}
        }
    }
    Err("the message did not come back within 30 s".into())
}

/// Percent-encoding of a URL user-info part.
fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
