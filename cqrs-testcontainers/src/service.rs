//! The services of the stack: their names, default images and override variables.

use std::fmt;

/// One service of the stack (a container).
///
/// Its [`Display`](fmt::Display) is the service name of `docker/docker-compose.yml`, and
/// [`Service::image_variable`] the environment variable that overrides its image.
///
/// ```
/// use cqrs_testcontainers::Service;
///
/// assert_eq!(Service::KafkaConnect.to_string(), "kafka-connect");
/// assert_eq!(Service::KafkaConnect.image_variable(), "CQRS_IMAGE_KAFKA_CONNECT");
/// assert_eq!(Service::Postgres.default_image(), "postgres:17.6");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Service {
    /// PostgreSQL with logical replication: the write side.
    Postgres,
    /// The Kafka broker.
    Kafka,
    /// The Confluent Schema Registry (Avro schemas of the change topics).
    SchemaRegistry,
    /// Kafka Connect with the Debezium PostgreSQL connector and the Avro converter.
    KafkaConnect,
    /// MongoDB as a single-node replica set: the read side.
    MongoDb,
    /// Vault in dev mode, bootstrapped like the stack's (only with
    /// [`StackBuilder::with_vault`](crate::StackBuilder::with_vault)).
    Vault,
    /// The sync-service as a container of its image
    /// ([`TestScope::start_sync_service`](crate::TestScope::start_sync_service)).
    SyncService,
    /// The resource reaper (Ryuk protocol) that removes everything of a test process once
    /// that process is gone, whatever way it ended.
    Reaper,
}

impl Service {
    /// The infrastructure services, in start order of their dependencies.
    ///
    /// ```
    /// assert_eq!(cqrs_testcontainers::Service::INFRASTRUCTURE.len(), 6);
    /// ```
    pub const INFRASTRUCTURE: [Service; 6] = [
        Service::Postgres,
        Service::Kafka,
        Service::SchemaRegistry,
        Service::KafkaConnect,
        Service::MongoDb,
        Service::Vault,
    ];

    /// The name of the service, as in `docker/docker-compose.yml`.
    ///
    /// ```
    /// assert_eq!(cqrs_testcontainers::Service::MongoDb.name(), "mongodb");
    /// ```
    pub fn name(self) -> &'static str {
        match self {
            Service::Postgres => "postgres",
            Service::Kafka => "kafka",
            Service::SchemaRegistry => "schema-registry",
            Service::KafkaConnect => "kafka-connect",
            Service::MongoDb => "mongodb",
            Service::Vault => "vault",
            Service::SyncService => "sync-service",
            Service::Reaper => "reaper",
        }
    }

    /// The image users pull: the one of `docker/docker-compose.yml` (the Kafka Connect and
    /// sync-service images are the ones that file builds and tags; the reaper is
    /// Testcontainers' Ryuk).
    ///
    /// ```
    /// assert_eq!(cqrs_testcontainers::Service::Kafka.default_image(), "apache/kafka:4.3.1");
    /// ```
    pub fn default_image(self) -> &'static str {
        match self {
            Service::Postgres => "postgres:17.6",
            Service::Kafka => "apache/kafka:4.3.1",
            Service::SchemaRegistry => "confluentinc/cp-schema-registry:8.3.1",
            Service::KafkaConnect => "cqrs-toolkit/kafka-connect:3.6.3.Final-avro7.4.0",
            Service::MongoDb => "mongo:8.2",
            Service::Vault => "hashicorp/vault:1.20.2",
            Service::SyncService => "cqrs-toolkit/sync-service:dev",
            Service::Reaper => "testcontainers/ryuk:0.13.0",
        }
    }

    /// The environment variable that overrides the image: `CQRS_IMAGE_<NAME>`, the names
    /// `docker/images/build.sh` prints for the images it builds.
    ///
    /// ```
    /// assert_eq!(cqrs_testcontainers::Service::Reaper.image_variable(), "CQRS_IMAGE_RYUK");
    /// ```
    pub fn image_variable(self) -> &'static str {
        match self {
            Service::Postgres => "CQRS_IMAGE_POSTGRES",
            Service::Kafka => "CQRS_IMAGE_KAFKA",
            Service::SchemaRegistry => "CQRS_IMAGE_SCHEMA_REGISTRY",
            Service::KafkaConnect => "CQRS_IMAGE_KAFKA_CONNECT",
            Service::MongoDb => "CQRS_IMAGE_MONGODB",
            Service::Vault => "CQRS_IMAGE_VAULT",
            Service::SyncService => "CQRS_IMAGE_SYNC_SERVICE",
            Service::Reaper => "CQRS_IMAGE_RYUK",
        }
    }

    /// The name `docker/images/build.sh` gives the local build of this service's image
    /// (its label `org.cqrs-toolkit.image`).
    pub(crate) fn local_image_name(self) -> &'static str {
        match self {
            Service::Reaper => "ryuk",
            other => other.name(),
        }
    }

    /// What to do when the default image is missing and cannot be pulled.
    pub(crate) fn missing_hint(self) -> String {
        let build = match self {
            Service::KafkaConnect => {
                " It is not on any registry: build it from the cqrs-toolkit repository \
                 (`docker compose -f docker/docker-compose.yml build kafka-connect`)."
            }
            Service::SyncService => {
                " It is not on any registry: build it from the cqrs-toolkit repository \
                 (`docker compose -f docker/docker-compose.yml --profile app build sync-service`)."
            }
            _ => "",
        };
        format!(
            "Set {} to an image this engine has or can pull; without a registry, \
             docker/images/build.sh of the cqrs-toolkit repository builds one.{build}",
            self.image_variable()
        )
    }
}

impl fmt::Display for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
