//! One test's part of a stack: its own schema (hence its own change topics), consumer
//! group and MongoDB database, and ready configurations for the toolkit's crates.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use cqrs_mongo::{MongoClient, MongoConfig};
use cqrs_postgres::PostgresConfig;
use sync_service::config::SyncConfig;
use tokio::sync::{OwnedRwLockReadGuard, OwnedRwLockWriteGuard};

use crate::container::{Placement, Running, SESSION_LABEL, free_ports, launch, wait_healthy};
use crate::images;
use crate::recipes;
use crate::stack::CqrsStack;
use crate::{Service, StackError, runtime};

pub(crate) enum ScopeGuard {
    Shared(#[allow(dead_code)] OwnedRwLockReadGuard<()>),
    Exclusive(#[allow(dead_code)] OwnedRwLockWriteGuard<()>),
}

/// A test's own part of a [`CqrsStack`]: tests in parallel on one stack do not see each
/// other's data.
///
/// - PostgreSQL: the schema `cdc_<name>_<n>` (not created: `PgPool::migrate` makes it), on
///   the admin login. The connector captures every `cdc_*` schema, so its change topics are
///   `cqrs.cdc_<name>_<n>.<table>`: a topic namespace of its own.
/// - Kafka: the consumer group `<schema>-sync`.
/// - MongoDB: the database named like the schema.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let stack = cqrs_testcontainers::CqrsStack::shared().await?;
/// let scope = stack.scope("billing").await?;
/// let pool = cqrs_postgres::PgPool::new(&scope.postgres_config()?)?;
/// pool.migrate().await?;
/// let sync = sync_service::SyncService::new(scope.sync_config());
/// let mongo = scope.mongo_client().await?;
/// # Ok(()) }
/// ```
pub struct TestScope {
    stack: CqrsStack,
    schema: String,
    exclusive: bool,
    _guard: ScopeGuard,
}

impl std::fmt::Debug for TestScope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestScope")
            .field("schema", &self.schema)
            .field("exclusive", &self.exclusive)
            .finish_non_exhaustive()
    }
}

impl TestScope {
    pub(crate) fn new(stack: CqrsStack, name: &str, guard: ScopeGuard) -> Result<Self, StackError> {
        let hint: String = name
            .chars()
            .map(|c| c.to_ascii_lowercase())
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .take(40)
            .collect();
        let n = stack.inner.scopes.fetch_add(1, Ordering::SeqCst) + 1;
        let schema = format!("cdc_{hint}_{n}");
        cqrs_postgres::SchemaName::new(schema.as_str())
            .map_err(|e| StackError::Config(format!("scope name {name:?}: {e}")))?;
        Ok(TestScope {
            stack,
            schema,
            exclusive: matches!(guard, ScopeGuard::Exclusive(_)),
            _guard: guard,
        })
    }

    /// The stack this scope is part of.
    ///
    /// ```no_run
    /// # fn demo(scope: &cqrs_testcontainers::TestScope) {
    /// let kafka = &scope.stack().endpoints().kafka_bootstrap;
    /// # }
    /// ```
    pub fn stack(&self) -> &CqrsStack {
        &self.stack
    }

    /// The PostgreSQL schema of this test (`cdc_<name>_<n>`).
    ///
    /// ```no_run
    /// # fn demo(scope: &cqrs_testcontainers::TestScope) {
    /// assert!(scope.schema().starts_with("cdc_"));
    /// # }
    /// ```
    pub fn schema(&self) -> &str {
        &self.schema
    }

    /// The MongoDB database of this test (named like the schema).
    ///
    /// ```no_run
    /// # fn demo(scope: &cqrs_testcontainers::TestScope) {
    /// assert_eq!(scope.database(), scope.schema());
    /// # }
    /// ```
    pub fn database(&self) -> &str {
        &self.schema
    }

    /// The Kafka consumer group of this test's sync-service (`<schema>-sync`).
    ///
    /// ```no_run
    /// # fn demo(scope: &cqrs_testcontainers::TestScope) {
    /// assert!(scope.consumer_group().ends_with("-sync"));
    /// # }
    /// ```
    pub fn consumer_group(&self) -> String {
        format!("{}-sync", self.schema)
    }

    /// The change topic of one of this test's tables: `cqrs.<schema>.<table>`.
    ///
    /// ```no_run
    /// # fn demo(scope: &cqrs_testcontainers::TestScope) {
    /// assert_eq!(scope.topic("aggregates"), format!("cqrs.{}.aggregates", scope.schema()));
    /// # }
    /// ```
    pub fn topic(&self, table: &str) -> String {
        format!(
            "{}.{}.{table}",
            self.stack.endpoints().debezium_topic_prefix,
            self.schema
        )
    }

    /// `cqrs-postgres` settings for this test's schema, on the admin login.
    ///
    /// # Errors
    /// [`StackError::Config`] if the settings do not parse (they always do).
    ///
    /// ```no_run
    /// # fn demo(scope: &cqrs_testcontainers::TestScope) -> Result<(), cqrs_testcontainers::StackError> {
    /// let config = scope.postgres_config()?;
    /// assert_eq!(config.schema().as_str(), scope.schema());
    /// # Ok(()) }
    /// ```
    pub fn postgres_config(&self) -> Result<PostgresConfig, StackError> {
        PostgresConfig::from_url(&self.stack.endpoints().database_url(), &self.schema)
            .map_err(|e| StackError::Config(format!("PostgreSQL settings: {e}")))
    }

    /// An embedded sync-service's settings: the stack's Kafka (this test's consumer group,
    /// Debezium's topic prefix), Schema Registry and MongoDB (this test's database).
    /// Register the projections on `SyncService::new(scope.sync_config())`.
    ///
    /// ```no_run
    /// # fn demo(scope: &cqrs_testcontainers::TestScope) {
    /// let config = scope.sync_config();
    /// assert_eq!(config.mongodb.database, scope.database());
    /// # }
    /// ```
    pub fn sync_config(&self) -> SyncConfig {
        let e = self.stack.endpoints();
        SyncConfig::new(
            e.kafka_bootstrap.clone(),
            self.consumer_group(),
            e.mongodb_uri.clone(),
            self.database(),
        )
        .with_schema_registry(e.schema_registry_url.clone())
        .with_topic_prefix(e.debezium_topic_prefix.clone())
    }

    /// `cqrs-mongo` settings: the stack's MongoDB, this test's database by default.
    ///
    /// ```no_run
    /// # fn demo(scope: &cqrs_testcontainers::TestScope) {
    /// let config = scope.mongo_config();
    /// assert_eq!(config.default_database.as_deref(), Some(scope.database()));
    /// # }
    /// ```
    pub fn mongo_config(&self) -> MongoConfig {
        MongoConfig::new(self.stack.endpoints().mongodb_uri.clone())
            .with_default_database(self.database())
    }

    /// A connected `cqrs-mongo` client on [`TestScope::mongo_config`].
    ///
    /// # Errors
    /// [`StackError::Client`] when MongoDB does not answer.
    ///
    /// ```no_run
    /// # async fn demo(scope: &cqrs_testcontainers::TestScope) -> Result<(), cqrs_testcontainers::StackError> {
    /// let client = scope.mongo_client().await?;
    /// # Ok(()) }
    /// ```
    pub async fn mongo_client(&self) -> Result<MongoClient, StackError> {
        MongoClient::connect(self.mongo_config())
            .await
            .map_err(|e| StackError::client("MongoDB client", e))
    }

    /// Stops a service's container (`docker stop`: SIGTERM, then its data stays in the
    /// container) until [`TestScope::start_service`]. Only in an exclusive scope
    /// ([`CqrsStack::exclusive_scope`]): every test of the stack would feel it.
    ///
    /// # Errors
    /// [`StackError::NotExclusive`], [`StackError::NotStarted`], [`StackError::Docker`].
    ///
    /// ```no_run
    /// # async fn demo(scope: &cqrs_testcontainers::TestScope) -> Result<(), cqrs_testcontainers::StackError> {
    /// scope.stop_service(cqrs_testcontainers::Service::MongoDb).await?;
    /// scope.start_service(cqrs_testcontainers::Service::MongoDb).await?;
    /// # Ok(()) }
    /// ```
    pub async fn stop_service(&self, service: Service) -> Result<(), StackError> {
        let id = self.exclusive_id(service, "stop_service")?;
        runtime::run(async move {
            let docker = docker().await?;
            docker
                .stop_container(&id, None)
                .await
                .map_err(|e| StackError::docker(format!("stop {service}"), e))
        })
        .await
    }

    /// Starts a stopped service again (same container, same host port) and waits until it
    /// is healthy. Only in an exclusive scope.
    ///
    /// # Errors
    /// As [`TestScope::stop_service`], and [`StackError::Unhealthy`].
    ///
    /// ```no_run
    /// # async fn demo(scope: &cqrs_testcontainers::TestScope) -> Result<(), cqrs_testcontainers::StackError> {
    /// scope.start_service(cqrs_testcontainers::Service::MongoDb).await?;
    /// # Ok(()) }
    /// ```
    pub async fn start_service(&self, service: Service) -> Result<(), StackError> {
        let id = self.exclusive_id(service, "start_service")?;
        let probe = {
            let containers =
                self.stack.inner.containers.lock().map_err(|_| {
                    StackError::Config("the stack's container list is poisoned".into())
                })?;
            containers
                .get(&service)
                .map(Running::probe)
                .ok_or(StackError::NotStarted(service))?
        };
        let timeout = self.stack.inner.settings.startup_timeout;
        runtime::run(async move {
            let docker = docker().await?;
            docker
                .start_container(&id, None)
                .await
                .map_err(|e| StackError::docker(format!("start {service}"), e))?;
            wait_healthy(&docker, &probe, timeout).await
        })
        .await
    }

    fn exclusive_id(&self, service: Service, operation: &str) -> Result<String, StackError> {
        if !self.exclusive {
            return Err(StackError::NotExclusive {
                operation: format!("{operation}({service})"),
            });
        }
        self.stack
            .container_id(service)
            .map(str::to_owned)
            .ok_or(StackError::NotStarted(service))
    }

    /// Runs the sync-service as a container of our image on the stack's network, with
    /// `config` (a `sync.toml`) and this test's consumer group, database and endpoints set
    /// through its environment (`SYNC__KAFKA__GROUP_ID`, ...). `${CQRS_SCHEMA}` in
    /// `config` is this test's schema. Waits until `/metrics` answers; removed when the
    /// returned handle is dropped.
    ///
    /// # Errors
    /// [`StackError::ImageMissing`] (`CQRS_IMAGE_SYNC_SERVICE`), [`StackError::Unhealthy`].
    ///
    /// ```no_run
    /// # async fn demo(scope: &cqrs_testcontainers::TestScope) -> Result<(), cqrs_testcontainers::StackError> {
    /// let sync = scope.start_sync_service(r#"
    ///     [kafka]
    ///     topic_regex = "cqrs\\.${CQRS_SCHEMA}\\..*"
    ///     format = "avro"
    ///     [[projection]]
    ///     table = "${CQRS_SCHEMA}.orders"
    ///     collection = "orders"
    /// "#).await?;
    /// # Ok(()) }
    /// ```
    pub async fn start_sync_service(
        &self,
        config: &str,
    ) -> Result<SyncServiceContainer, StackError> {
        let inner = self.stack.inner.clone();
        let image = inner
            .sync_image
            .get_or_try_init(|| async {
                runtime::run(async {
                    let refs = images::resolve(&[Service::SyncService], &BTreeMap::new()).await?;
                    let docker = docker().await?;
                    let (service, reference, origin) = refs
                        .into_iter()
                        .next()
                        .ok_or(StackError::NotStarted(Service::SyncService))?;
                    images::check(&docker, service, reference, origin).await
                })
                .await
            })
            .await?
            .clone();
        let net = self.stack.network_endpoints();
        let env = vec![
            ("CQRS_SCHEMA".to_owned(), self.schema.clone()),
            (
                "SYNC__KAFKA__BOOTSTRAP_SERVERS".to_owned(),
                net.kafka_bootstrap.clone(),
            ),
            ("SYNC__KAFKA__GROUP_ID".to_owned(), self.consumer_group()),
            (
                "SYNC__SCHEMA_REGISTRY__URL".to_owned(),
                net.schema_registry_url.clone(),
            ),
            ("SYNC__MONGODB__URI".to_owned(), net.mongodb_uri.clone()),
            (
                "SYNC__MONGODB__DATABASE".to_owned(),
                self.database().to_owned(),
            ),
        ];
        let session = inner.session.clone();
        let placement = Placement {
            name: format!(
                "cqrs-tc-{}-sync-{}",
                recipes::short(&session),
                self.schema.replace('_', "-")
            ),
            network: Some(inner.network.clone()),
            ports: free_ports(1)?
                .into_iter()
                .map(|host| (recipes::port(Service::SyncService), host))
                .collect(),
            health: None,
            startup: inner.settings.startup_timeout,
            labels: vec![(SESSION_LABEL.to_owned(), session)],
            auto_remove: false,
        };
        let (request, health) = recipes::sync_service(&image, config, &env, placement.startup);
        let placement = Placement {
            health: Some(health),
            ..placement
        };
        let timeout = placement.startup;
        let running = runtime::run(async move {
            let running = launch(request, Service::SyncService, image, placement).await?;
            wait_healthy(&docker().await?, &running.probe(), timeout).await?;
            Ok(running)
        })
        .await?;
        let metrics_url = format!("http://127.0.0.1:{}/metrics", running.host_port(9464));
        Ok(SyncServiceContainer {
            running,
            metrics_url,
        })
    }
}

async fn docker() -> Result<testcontainers::bollard::Docker, StackError> {
    testcontainers::core::client::docker_client_instance()
        .await
        .map_err(|e| StackError::NoEngine {
            message: e.to_string(),
        })
}

/// The sync-service running as a container of its image for one test
/// ([`TestScope::start_sync_service`]); dropping it removes the container.
///
/// ```no_run
/// # async fn demo(scope: &cqrs_testcontainers::TestScope, toml: &str) -> Result<(), Box<dyn std::error::Error>> {
/// let sync = scope.start_sync_service(toml).await?;
/// // ... rows in, documents out ...
/// eprintln!("{}", sync.log_tail(20));
/// sync.remove().await;
/// # Ok(()) }
/// ```
pub struct SyncServiceContainer {
    running: Running,
    metrics_url: String,
}

impl std::fmt::Debug for SyncServiceContainer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncServiceContainer")
            .field("container", &self.running.name)
            .field("image", &self.running.image.reference)
            .finish_non_exhaustive()
    }
}

impl SyncServiceContainer {
    /// Its `/metrics` URL from the test process.
    ///
    /// ```no_run
    /// # fn demo(sync: &cqrs_testcontainers::SyncServiceContainer) {
    /// assert!(sync.metrics_url().ends_with("/metrics"));
    /// # }
    /// ```
    pub fn metrics_url(&self) -> &str {
        &self.metrics_url
    }

    /// Its image and where that came from.
    ///
    /// ```no_run
    /// # fn demo(sync: &cqrs_testcontainers::SyncServiceContainer) {
    /// println!("{}", sync.image());
    /// # }
    /// ```
    pub fn image(&self) -> &crate::ResolvedImage {
        &self.running.image
    }

    /// The last lines of its log.
    ///
    /// ```no_run
    /// # fn demo(sync: &cqrs_testcontainers::SyncServiceContainer) {
    /// eprintln!("{}", sync.log_tail(50));
    /// # }
    /// ```
    pub fn log_tail(&self, lines: usize) -> String {
        self.running.logs.last(lines)
    }

    /// Stops and removes it now, waiting for that.
    ///
    /// ```no_run
    /// # async fn demo(sync: cqrs_testcontainers::SyncServiceContainer) {
    /// sync.remove().await;
    /// # }
    /// ```
    pub async fn remove(self) {
        self.running.remove().await;
    }
}
