//! How each service runs: image settings, environment and health check, for the upstream
//! image (as `docker/docker-compose.yml` runs it) and for the local build (as
//! `docker/docker-compose.offline.yml` changes it). The scripts are the very files of the
//! repository's stack (`assets/` links to them), copied into the containers.

use std::time::Duration;

use testcontainers::core::{Healthcheck, Mount};
use testcontainers::{ContainerRequest, CopyTargetOptions, GenericImage, ImageExt};
use testcontainers_modules::postgres::Postgres;

use crate::Service;
use crate::images::{Flavor, ResolvedImage};

/// The stack's development credentials: the defaults of the repository's `.env`.
pub(crate) mod secrets {
    pub const PG_DB: &str = "cqrs";
    pub const PG_USER: &str = "cqrs_admin";
    pub const PG_PASSWORD: &str = "cqrs_admin_dev";
    pub const DBZ_USER: &str = "cqrs_debezium";
    pub const DBZ_PASSWORD: &str = "cqrs_debezium_dev";
    pub const PUBLICATION: &str = "cqrs_cdc";
    pub const VAULT_TOKEN: &str = "dev-root-token";
}

pub(crate) const PG_INIT: &[u8] = include_bytes!("../assets/10-cqrs-init.sh");
pub(crate) const REGISTER: &[u8] = include_bytes!("../assets/register.sh");
pub(crate) const CDC_TEMPLATE: &str = include_str!("../assets/cqrs-postgres.json.tmpl");
pub(crate) const OUTBOX_TEMPLATE: &str = include_str!("../assets/cqrs-outbox.json.tmpl");
pub(crate) const VAULT_BOOTSTRAP: &[u8] = include_bytes!("../assets/bootstrap.sh");
const MONGO_HEALTHCHECK: &[u8] = include_bytes!("../assets/replica-set-healthcheck.js");
const KAFKA_ENV: &str = include_str!("../assets/kafka.env");

/// Where the Debezium scripts go in the Connect container.
pub(crate) const DEBEZIUM_DIR: &str = "/opt/cqrs/debezium";
/// Where the Vault bootstrap goes in the Vault container.
pub(crate) const VAULT_SCRIPT: &str = "/opt/cqrs/vault/bootstrap.sh";
/// The replica set of the upstream MongoDB (SecantusDB names its own `secantus`).
const REPLICA_SET: &str = "rs0";

/// The container port each service listens on (published on a free host port).
pub(crate) fn port(service: Service) -> u16 {
    match service {
        Service::Postgres => 5432,
        Service::Kafka => 9092,
        Service::SchemaRegistry => 8081,
        Service::KafkaConnect => 8083,
        Service::MongoDb => 27017,
        Service::Vault => 8200,
        Service::SyncService => 9464,
        Service::Reaper => 8080,
    }
}

/// The name (and network host name) of a service's container in a session.
pub(crate) fn host(session: &str, service: Service) -> String {
    format!("cqrs-tc-{}-{service}", short(session))
}

/// The first 8 characters of a session (a UUID's hex digits): unique enough in names.
pub(crate) fn short(session: &str) -> &str {
    session.get(..8).unwrap_or(session)
}

/// The port Kafka's clients inside the network use: the upstream image has an INTERNAL
/// listener on 29092, tansu one listener for everyone.
pub(crate) fn kafka_internal(session: &str, flavor: Flavor) -> String {
    let port = if flavor == Flavor::Local { 9092 } else { 29092 };
    format!("{}:{port}", host(session, Service::Kafka))
}

fn generic(image: &ResolvedImage) -> GenericImage {
    let (name, tag) = image.name_and_tag();
    GenericImage::new(name, tag)
}

/// A health check polled every second; failures count only after `grace` (Docker 20.10
/// has no start interval), so the wait of the crate decides when it is too late.
fn check(test: Healthcheck, grace: Duration) -> Healthcheck {
    test.with_interval(Duration::from_secs(1))
        .with_timeout(Duration::from_secs(10))
        .with_retries(3)
        .with_start_period(grace)
}

fn script(bytes: &[u8], target: &str) -> (Vec<u8>, CopyTargetOptions) {
    (
        bytes.to_vec(),
        CopyTargetOptions::new(target).with_mode(0o755),
    )
}

/// PostgreSQL through the `testcontainers-modules` module (the official image's contract,
/// which the local build follows), with logical replication and the stack's init script.
pub(crate) fn postgres(
    image: &ResolvedImage,
    schemas: &[String],
    grace: Duration,
) -> (ContainerRequest<Postgres>, Healthcheck) {
    let (name, tag) = image.name_and_tag();
    let (init, target) = script(PG_INIT, "/docker-entrypoint-initdb.d/10-cqrs-init.sh");
    let request = Postgres::default()
        .with_db_name(secrets::PG_DB)
        .with_user(secrets::PG_USER)
        .with_password(secrets::PG_PASSWORD)
        .with_name(name)
        .with_tag(tag)
        .with_cmd([
            "postgres",
            "-c",
            "wal_level=logical",
            "-c",
            "max_replication_slots=20",
            "-c",
            "max_wal_senders=20",
            // a test database: durability across a crash of the container buys nothing
            "-c",
            "fsync=off",
        ])
        .with_env_var("DEBEZIUM_PG_USER", secrets::DBZ_USER)
        .with_env_var("DEBEZIUM_PG_PASSWORD", secrets::DBZ_PASSWORD)
        .with_env_var("CDC_PUBLICATION", secrets::PUBLICATION)
        .with_env_var("CQRS_SERVICE_SCHEMAS", schemas.join(" "))
        .with_copy_to(target, init);
    // TCP on 127.0.0.1: the entrypoint's init server listens on the socket only, so this
    // passes once the init script has run and the real server is up
    let health = Healthcheck::cmd([
        "pg_isready",
        "-q",
        "-h",
        "127.0.0.1",
        "-p",
        "5432",
        "-U",
        secrets::PG_USER,
        "-d",
        secrets::PG_DB,
    ]);
    (request, check(health, grace))
}

/// The broker. Upstream: Apache Kafka in KRaft mode with the settings of
/// `docker/kafka/kafka.env`, an INTERNAL listener for containers and an EXTERNAL one
/// advertised at its host port. Local: tansu, one listener advertising the container's IP.
pub(crate) fn kafka(
    image: &ResolvedImage,
    session: &str,
    host_port: u16,
    grace: Duration,
) -> (ContainerRequest<GenericImage>, Healthcheck) {
    let mut request: ContainerRequest<GenericImage> = generic(image).into();
    let name = host(session, Service::Kafka);
    if image.flavor == Flavor::Local {
        let health = Healthcheck::cmd(["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/9092"]);
        return (request, check(health, grace));
    }
    for line in KAFKA_ENV.lines() {
        if let Some((key, value)) = line.split_once('=')
            && !line.starts_with('#')
        {
            request = request.with_env_var(key.trim(), value.trim());
        }
    }
    let request = request
        .with_env_var("KAFKA_CONTROLLER_QUORUM_VOTERS", format!("1@{name}:9093"))
        .with_env_var(
            "KAFKA_ADVERTISED_LISTENERS",
            format!("INTERNAL://{name}:29092,EXTERNAL://127.0.0.1:{host_port}"),
        )
        // no volume: the data of a test broker lives in the container
        .with_env_var("KAFKA_LOG_DIRS", "/tmp/kraft-combined-logs");
    let health = Healthcheck::cmd_shell(
        "/opt/kafka/bin/kafka-broker-api-versions.sh --bootstrap-server localhost:29092 >/dev/null 2>&1",
    );
    (request, check(health, grace))
}

/// The Schema Registry: Confluent's (storing in Kafka), or the stand-in of the repository.
pub(crate) fn schema_registry(
    image: &ResolvedImage,
    session: &str,
    grace: Duration,
) -> (ContainerRequest<GenericImage>, Healthcheck) {
    let request: ContainerRequest<GenericImage> = generic(image).into();
    if image.flavor == Flavor::Local {
        let health = Healthcheck::cmd([
            "curl",
            "-fsS",
            "-o",
            "/dev/null",
            "http://127.0.0.1:8081/subjects",
        ]);
        return (request, check(health, grace));
    }
    let request = request
        .with_env_var(
            "SCHEMA_REGISTRY_HOST_NAME",
            host(session, Service::SchemaRegistry),
        )
        .with_env_var("SCHEMA_REGISTRY_LISTENERS", "http://0.0.0.0:8081")
        .with_env_var(
            "SCHEMA_REGISTRY_KAFKASTORE_BOOTSTRAP_SERVERS",
            format!("PLAINTEXT://{}", kafka_internal(session, image.flavor)),
        )
        .with_env_var("SCHEMA_REGISTRY_KAFKASTORE_TOPIC", "_schemas")
        .with_env_var("SCHEMA_REGISTRY_KAFKASTORE_TOPIC_REPLICATION_FACTOR", "1")
        .with_env_var("SCHEMA_REGISTRY_SCHEMA_COMPATIBILITY_LEVEL", "backward");
    // the 8.x image has no curl/wget, but python3
    let health = Healthcheck::cmd([
        "python3",
        "-c",
        "import urllib.request; urllib.request.urlopen('http://localhost:8081/subjects', timeout=5)",
    ]);
    (request, check(health, grace))
}

/// Kafka Connect with Debezium and the Avro converter, the registration script and the
/// connector templates copied in (`kafka` is the broker's flavor: its listener differs).
pub(crate) fn kafka_connect(
    image: &ResolvedImage,
    session: &str,
    kafka: Flavor,
    templates: &[(String, String)],
    grace: Duration,
) -> (ContainerRequest<GenericImage>, Healthcheck) {
    let (register, target) = script(REGISTER, &format!("{DEBEZIUM_DIR}/register.sh"));
    let mut request = ContainerRequest::from(generic(image))
        .with_env_var("BOOTSTRAP_SERVERS", kafka_internal(session, kafka))
        .with_env_var("GROUP_ID", "cqrs-connect")
        .with_env_var("CONFIG_STORAGE_TOPIC", "_connect_configs")
        .with_env_var("OFFSET_STORAGE_TOPIC", "_connect_offsets")
        .with_env_var("STATUS_STORAGE_TOPIC", "_connect_status")
        .with_env_var("CONNECT_CONFIG_STORAGE_REPLICATION_FACTOR", "1")
        .with_env_var("CONNECT_OFFSET_STORAGE_REPLICATION_FACTOR", "1")
        .with_env_var("CONNECT_STATUS_STORAGE_REPLICATION_FACTOR", "1")
        .with_env_var(
            "CONNECT_REST_ADVERTISED_HOST_NAME",
            host(session, Service::KafkaConnect),
        )
        // silence the client-metrics push warnings every 5 s
        .with_env_var("CONNECT_PRODUCER_ENABLE_METRICS_PUSH", "false")
        .with_env_var("CONNECT_ADMIN_ENABLE_METRICS_PUSH", "false")
        .with_copy_to(target, register);
    for (file, text) in templates {
        let target = CopyTargetOptions::new(format!("{DEBEZIUM_DIR}/{file}")).with_mode(0o644);
        request = request.with_copy_to(target, text.clone().into_bytes());
    }
    let health =
        Healthcheck::cmd_shell("curl -fsS http://localhost:8083/connector-plugins >/dev/null");
    (request, check(health, grace))
}

/// MongoDB as a replica set. Upstream: `mongod --replSet` whose health check (the stack's
/// script) initiates the set with this container as its member. Local: SecantusDB, the
/// primary of its own single-node set from the start.
pub(crate) fn mongodb(
    image: &ResolvedImage,
    session: &str,
    grace: Duration,
) -> (ContainerRequest<GenericImage>, Healthcheck) {
    let request = ContainerRequest::from(generic(image));
    if image.flavor == Flavor::Local {
        let request = request.with_cmd([
            "secantusd-rs",
            "--host",
            "0.0.0.0",
            "--port",
            "27017",
            "--storage-path",
            "/data/db",
            "--cache-size",
            "256M",
        ]);
        let health = Healthcheck::cmd(["mongo-check.sh", "primary", "127.0.0.1", "27017"]);
        return (request, check(health, grace));
    }
    let js = "/usr/local/share/cqrs/replica-set-healthcheck.js";
    let request = request
        .with_cmd([
            "mongod",
            "--replSet",
            REPLICA_SET,
            "--bind_ip_all",
            "--port",
            "27017",
        ])
        .with_env_var("MONGODB_REPLICA_SET", REPLICA_SET)
        .with_env_var(
            "MONGODB_MEMBER_HOST",
            format!("{}:27017", host(session, Service::MongoDb)),
        )
        .with_copy_to(
            CopyTargetOptions::new(js).with_mode(0o644),
            MONGO_HEALTHCHECK.to_vec(),
        );
    let health = Healthcheck::cmd([
        "mongosh", "--quiet", "--norc", "--port", "27017", "--file", js,
    ]);
    (request, check(health, grace))
}

/// Vault in dev mode (the local build maps the same variables to OpenBao), with the
/// stack's bootstrap script copied in.
pub(crate) fn vault(
    image: &ResolvedImage,
    grace: Duration,
) -> (ContainerRequest<GenericImage>, Healthcheck) {
    let (bootstrap, target) = script(VAULT_BOOTSTRAP, VAULT_SCRIPT);
    let request = ContainerRequest::from(generic(image))
        .with_cmd(["server", "-dev"])
        .with_cap_add("IPC_LOCK")
        .with_env_var("VAULT_DEV_ROOT_TOKEN_ID", secrets::VAULT_TOKEN)
        .with_env_var("VAULT_DEV_LISTEN_ADDRESS", "0.0.0.0:8200")
        // for the CLI inside the container (health check, bootstrap)
        .with_env_var("VAULT_ADDR", "http://127.0.0.1:8200")
        .with_copy_to(target, bootstrap);
    (request, check(Healthcheck::cmd(["vault", "status"]), grace))
}

/// The sync-service of our image running `config` (TOML), as the Compose file runs it.
pub(crate) fn sync_service(
    image: &ResolvedImage,
    config: &str,
    env: &[(String, String)],
    grace: Duration,
) -> (ContainerRequest<GenericImage>, Healthcheck) {
    let path = "/etc/sync-service/sync.toml";
    let mut request = ContainerRequest::from(generic(image))
        .with_cmd(["sync-service", "run", "--config", path])
        .with_env_var("SYNC__HTTP__LISTEN", "0.0.0.0:9464")
        // no collector in a test stack: an empty endpoint turns trace export off
        .with_env_var("OTEL_EXPORTER_OTLP_ENDPOINT", "")
        .with_env_var("RUST_LOG", "info")
        .with_copy_to(
            CopyTargetOptions::new(path).with_mode(0o644),
            config.as_bytes().to_vec(),
        );
    for (key, value) in env {
        request = request.with_env_var(key, value);
    }
    let health = Healthcheck::cmd([
        "curl",
        "-fsS",
        "-o",
        "/dev/null",
        "http://127.0.0.1:9464/metrics",
    ]);
    (request, check(health, grace))
}

/// The reaper: Ryuk's protocol on 8080, the engine's socket mounted (launched with
/// `auto_remove`: the engine removes it once it has removed the session and exited).
pub(crate) fn reaper(
    image: &ResolvedImage,
    socket: &str,
    privileged: bool,
    reconnection: Duration,
) -> ContainerRequest<GenericImage> {
    ContainerRequest::from(generic(image))
        .with_mount(Mount::bind_mount(socket, "/var/run/docker.sock"))
        .with_env_var("RYUK_PORT", "8080")
        .with_env_var("RYUK_CONNECTION_TIMEOUT", "60s")
        .with_env_var(
            "RYUK_RECONNECTION_TIMEOUT",
            format!("{}s", reconnection.as_secs().max(1)),
        )
        .with_privileged(privileged)
}
