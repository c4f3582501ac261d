//! The stack: how it is asked for, started (owned or shared per test binary) and reached.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OnceCell, RwLock};

use crate::container::Running;
use crate::images::{Flavor, ResolvedImage};
use crate::reaper::ReaperLink;
use crate::recipes::{self, secrets};
use crate::scope::{ScopeGuard, TestScope};
use crate::vault::VaultSettings;
use crate::{Service, StackError, runtime};

/// What a stack is asked to be (compared when a shared stack is asked for again).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Settings {
    pub images: BTreeMap<Service, String>,
    pub vault: bool,
    pub schemas: Vec<String>,
    pub startup_timeout: Duration,
}

/// What [`crate::start`] hands back.
pub(crate) struct Started {
    pub session: String,
    pub network: String,
    pub kafka_flavor: Flavor,
    pub containers: BTreeMap<Service, Running>,
    pub vault: Option<VaultSettings>,
    pub reaper: Option<(Running, ReaperLink)>,
    pub images: Vec<ResolvedImage>,
    pub started_in: Duration,
}

/// Asks for a stack: images, Vault, service schemas. [`StackBuilder::shared`] gives the
/// one stack of the test binary, [`StackBuilder::start`] a stack of the caller's own.
///
/// ```no_run
/// use cqrs_testcontainers::{CqrsStack, Service};
///
/// # async fn demo() -> Result<(), cqrs_testcontainers::StackError> {
/// let stack = CqrsStack::builder()
///     .image(Service::Postgres, "postgres:17.6")
///     .service_schemas(["orders", "billing"])
///     .with_vault()
///     .shared()
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct StackBuilder {
    settings: Settings,
}

impl Default for StackBuilder {
    fn default() -> Self {
        StackBuilder {
            settings: Settings {
                images: BTreeMap::new(),
                vault: false,
                schemas: ["orders", "inventory", "billing"]
                    .map(String::from)
                    .to_vec(),
                startup_timeout: Duration::from_secs(120),
            },
        }
    }
}

impl StackBuilder {
    /// Runs `service` from `image` (`name:tag`), whatever its environment variable says.
    /// It must be the same kind of image as the default (a mirror, another tag) or the
    /// local build of `docker/images/build.sh`.
    ///
    /// ```
    /// use cqrs_testcontainers::{CqrsStack, Service};
    /// let builder = CqrsStack::builder().image(Service::MongoDb, "registry.local/mongo:8.2");
    /// ```
    pub fn image(mut self, service: Service, image: impl Into<String>) -> Self {
        self.settings.images.insert(service, image.into());
        self
    }

    /// Adds Vault, bootstrapped like the stack's (see [`VaultSettings`]).
    ///
    /// ```
    /// let builder = cqrs_testcontainers::CqrsStack::builder().with_vault();
    /// ```
    pub fn with_vault(mut self) -> Self {
        self.settings.vault = true;
        self
    }

    /// The service schemas made at start (each with its group role `svc_<schema>` and, with
    /// Vault, its database role and AppRole) and captured by the connector besides every
    /// `cdc_*` schema. Default: `orders`, `inventory`, `billing`, as the stack.
    ///
    /// ```
    /// let builder = cqrs_testcontainers::CqrsStack::builder().service_schemas(["payments"]);
    /// ```
    pub fn service_schemas<S: Into<String>>(
        mut self,
        schemas: impl IntoIterator<Item = S>,
    ) -> Self {
        self.settings.schemas = schemas.into_iter().map(Into::into).collect();
        self
    }

    /// How long each container may take to become healthy (default 120 s).
    ///
    /// ```
    /// let builder = cqrs_testcontainers::CqrsStack::builder()
    ///     .startup_timeout(std::time::Duration::from_secs(300));
    /// ```
    pub fn startup_timeout(mut self, timeout: Duration) -> Self {
        self.settings.startup_timeout = timeout;
        self
    }

    fn validate(&self) -> Result<(), StackError> {
        for schema in &self.settings.schemas {
            cqrs_postgres::SchemaName::new(schema.as_str())
                .map_err(|e| StackError::Config(format!("service schema {schema:?}: {e}")))?;
        }
        Ok(())
    }

    /// Starts a stack of the caller's own, removed when the last handle to it is dropped
    /// (or by [`CqrsStack::stop`]).
    ///
    /// # Errors
    /// Every [`StackError`] a start can meet: no engine, an image missing, a container
    /// that does not become healthy, a failed connector registration or Vault bootstrap.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), cqrs_testcontainers::StackError> {
    /// let stack = cqrs_testcontainers::CqrsStack::builder().start().await?;
    /// stack.stop().await;
    /// # Ok(()) }
    /// ```
    pub async fn start(self) -> Result<CqrsStack, StackError> {
        self.validate()?;
        let settings = self.settings.clone();
        let started = runtime::run(crate::start::start(settings.clone())).await?;
        let stack = CqrsStack::new(started, settings);
        stack.report();
        Ok(stack)
    }

    /// The stack of this test binary: started by the first call, the same for every later
    /// one, removed when the process ends (by the reaper, also after a panic or a kill).
    ///
    /// # Errors
    /// As [`StackBuilder::start`] (the same failure for every caller), and
    /// [`StackError::SharedConflict`] when an earlier call asked for other settings.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), cqrs_testcontainers::StackError> {
    /// let stack = cqrs_testcontainers::CqrsStack::builder().with_vault().shared().await?;
    /// # Ok(()) }
    /// ```
    pub async fn shared(self) -> Result<CqrsStack, StackError> {
        static SHARED: OnceCell<(Settings, Result<CqrsStack, StackError>)> = OnceCell::const_new();
        let (settings, result) = SHARED
            .get_or_init(|| {
                let builder = self.clone();
                async move { (builder.settings.clone(), builder.start().await) }
            })
            .await;
        if *settings != self.settings {
            return Err(StackError::SharedConflict {
                running: format!("{settings:?}"),
                asked: format!("{:?}", self.settings),
            });
        }
        result.clone()
    }
}

/// Addresses and credentials of the stack's services, from the test process or from the
/// stack's network ([`CqrsStack::endpoints`], [`CqrsStack::network_endpoints`]).
///
/// ```
/// let e = cqrs_testcontainers::Endpoints {
///     postgres_host: "127.0.0.1".into(),
///     postgres_port: 5432,
///     postgres_db: "cqrs".into(),
///     postgres_user: "cqrs_admin".into(),
///     postgres_password: "cqrs_admin_dev".into(),
///     kafka_bootstrap: "127.0.0.1:9092".into(),
///     schema_registry_url: "http://127.0.0.1:8081".into(),
///     kafka_connect_url: "http://127.0.0.1:8083".into(),
///     mongodb_uri: "mongodb://127.0.0.1:27017/?directConnection=true".into(),
///     debezium_topic_prefix: "cqrs".into(),
/// };
/// assert_eq!(e.database_url(), "postgres://cqrs_admin:cqrs_admin_dev@127.0.0.1:5432/cqrs?sslmode=disable");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoints {
    /// PostgreSQL host.
    pub postgres_host: String,
    /// PostgreSQL port.
    pub postgres_port: u16,
    /// The database (`cqrs`).
    pub postgres_db: String,
    /// The admin role (superuser of the test server).
    pub postgres_user: String,
    /// Its password.
    pub postgres_password: String,
    /// Kafka `bootstrap.servers`.
    pub kafka_bootstrap: String,
    /// The Schema Registry's base URL.
    pub schema_registry_url: String,
    /// Kafka Connect's REST URL.
    pub kafka_connect_url: String,
    /// MongoDB's connection string.
    pub mongodb_uri: String,
    /// Debezium's `topic.prefix` (`cqrs`): change topics are `<prefix>.<schema>.<table>`.
    pub debezium_topic_prefix: String,
}

impl Endpoints {
    /// `postgres://<admin>:<password>@<host>:<port>/<db>?sslmode=disable`.
    pub fn database_url(&self) -> String {
        format!(
            "postgres://{}:{}@{}:{}/{}?sslmode=disable",
            self.postgres_user,
            self.postgres_password,
            self.postgres_host,
            self.postgres_port,
            self.postgres_db
        )
    }
}

pub(crate) struct Inner {
    pub session: String,
    pub network: String,
    pub settings: Settings,
    pub containers: Mutex<BTreeMap<Service, Running>>,
    pub ids: BTreeMap<Service, String>,
    pub images: Vec<ResolvedImage>,
    pub endpoints: Endpoints,
    pub network_endpoints: Endpoints,
    pub vault: Option<VaultSettings>,
    pub started_in: Duration,
    pub scopes: AtomicU64,
    /// Scopes hold it shared; an exclusive scope (which may stop services) holds it alone.
    pub lock: Arc<RwLock<()>>,
    pub sync_image: OnceCell<ResolvedImage>,
    pub reaper: Mutex<Option<(Running, ReaperLink)>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        let containers = self
            .containers
            .lock()
            .map(|mut c| std::mem::take(&mut *c))
            .unwrap_or_default();
        let reaper = self.reaper.lock().ok().and_then(|mut r| r.take());
        let network = self.network.clone();
        if let Ok(handle) = runtime::handle() {
            handle.spawn(remove_all(containers, reaper, network));
        }
    }
}

/// Removes the containers, then the network; the reaper goes last (its link with it).
async fn remove_all(
    containers: BTreeMap<Service, Running>,
    reaper: Option<(Running, ReaperLink)>,
    network: String,
) {
    futures::future::join_all(containers.into_values().map(Running::remove)).await;
    if let Ok(docker) = testcontainers::core::client::docker_client_instance().await {
        let _ = docker.remove_network(&network).await;
    }
    if let Some((running, link)) = reaper {
        running.remove().await;
        drop(link);
    }
}

/// The whole CDC stack on one private Docker network, every container healthy:
/// PostgreSQL (logical replication, the stack's roles and schemas), Kafka, the Schema
/// Registry, Kafka Connect with the Debezium connectors RUNNING, MongoDB as a replica set
/// and, when asked, Vault bootstrapped like the stack's.
///
/// Cheap to clone. Tests take a [`TestScope`] each ([`CqrsStack::scope`]): a fresh schema
/// (so their own change topics), consumer group and MongoDB database.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let stack = cqrs_testcontainers::CqrsStack::shared().await?;
/// let scope = stack.scope("orders").await?;
/// let pool = cqrs_postgres::PgPool::new(&scope.postgres_config()?)?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct CqrsStack {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for CqrsStack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CqrsStack")
            .field("session", &self.inner.session)
            .field("network", &self.inner.network)
            .field("endpoints", &self.inner.endpoints)
            .finish_non_exhaustive()
    }
}

impl CqrsStack {
    /// A builder with the defaults (upstream images unless overridden, no Vault).
    ///
    /// ```
    /// let builder = cqrs_testcontainers::CqrsStack::builder();
    /// ```
    pub fn builder() -> StackBuilder {
        StackBuilder::default()
    }

    /// The test binary's stack with the default settings: `CqrsStack::builder().shared()`.
    ///
    /// # Errors
    /// As [`StackBuilder::shared`].
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), cqrs_testcontainers::StackError> {
    /// let stack = cqrs_testcontainers::CqrsStack::shared().await?;
    /// # Ok(()) }
    /// ```
    pub async fn shared() -> Result<CqrsStack, StackError> {
        Self::builder().shared().await
    }

    fn new(started: Started, settings: Settings) -> CqrsStack {
        let port = |s: Service| {
            started
                .containers
                .get(&s)
                .map_or(0, |r| r.host_port(recipes::port(s)))
        };
        let host = |s: Service| recipes::host(&started.session, s);
        let base = Endpoints {
            postgres_host: "127.0.0.1".into(),
            postgres_port: port(Service::Postgres),
            postgres_db: secrets::PG_DB.into(),
            postgres_user: secrets::PG_USER.into(),
            postgres_password: secrets::PG_PASSWORD.into(),
            kafka_bootstrap: format!("127.0.0.1:{}", port(Service::Kafka)),
            schema_registry_url: format!("http://127.0.0.1:{}", port(Service::SchemaRegistry)),
            kafka_connect_url: format!("http://127.0.0.1:{}", port(Service::KafkaConnect)),
            mongodb_uri: format!(
                "mongodb://127.0.0.1:{}/?directConnection=true",
                port(Service::MongoDb)
            ),
            debezium_topic_prefix: "cqrs".into(),
        };
        let network_endpoints = Endpoints {
            postgres_host: host(Service::Postgres),
            postgres_port: 5432,
            kafka_bootstrap: recipes::kafka_internal(&started.session, started.kafka_flavor),
            schema_registry_url: format!("http://{}:8081", host(Service::SchemaRegistry)),
            kafka_connect_url: format!("http://{}:8083", host(Service::KafkaConnect)),
            mongodb_uri: format!(
                "mongodb://{}:27017/?directConnection=true",
                host(Service::MongoDb)
            ),
            ..base.clone()
        };
        let ids = started
            .containers
            .iter()
            .map(|(s, r)| (*s, r.id.clone()))
            .collect();
        CqrsStack {
            inner: Arc::new(Inner {
                session: started.session,
                network: started.network,
                settings,
                containers: Mutex::new(started.containers),
                ids,
                images: started.images,
                endpoints: base,
                network_endpoints,
                vault: started.vault,
                started_in: started.started_in,
                scopes: AtomicU64::new(0),
                lock: Arc::new(RwLock::new(())),
                sync_image: OnceCell::new(),
                reaper: Mutex::new(started.reaper),
            }),
        }
    }

    /// One line per fact on stderr (not captured by the test harness): start time and
    /// images, local builds named as such.
    fn report(&self) {
        let mut err = std::io::stderr();
        let _ = writeln!(
            err,
            "cqrs-testcontainers: stack {} up in {:.1}s on network {}",
            &self.inner.session[..8],
            self.inner.started_in.as_secs_f64(),
            self.inner.network
        );
        let notes: std::collections::BTreeSet<&str> = self
            .inner
            .images
            .iter()
            .filter_map(|i| match &i.origin {
                crate::ImageOrigin::Command(note) if !note.is_empty() => Some(note.as_str()),
                _ => None,
            })
            .collect();
        for note in notes {
            let _ = writeln!(err, "cqrs-testcontainers: images command: {note}");
        }
        for image in &self.inner.images {
            let _ = writeln!(err, "cqrs-testcontainers:   {image}");
        }
    }

    /// A fresh, isolated part of the stack for one test: see [`TestScope`]. `name` (a
    /// hint, lower case letters, digits and `_`) starts its schema and database names.
    ///
    /// # Errors
    /// [`StackError::Config`] when `name` cannot start a schema name.
    ///
    /// ```no_run
    /// # async fn demo(stack: cqrs_testcontainers::CqrsStack) -> Result<(), cqrs_testcontainers::StackError> {
    /// let scope = stack.scope("accounts").await?;
    /// assert!(scope.schema().starts_with("cdc_accounts_"));
    /// # Ok(()) }
    /// ```
    pub async fn scope(&self, name: &str) -> Result<TestScope, StackError> {
        let guard = ScopeGuard::Shared(self.inner.lock.clone().read_owned().await);
        TestScope::new(self.clone(), name, guard)
    }

    /// Like [`CqrsStack::scope`], but alone on the stack: it waits until the other scopes
    /// have ended and holds back new ones while it lives. Only such a scope may stop and
    /// start services ([`TestScope::stop_service`]).
    ///
    /// # Errors
    /// As [`CqrsStack::scope`].
    ///
    /// ```no_run
    /// # async fn demo(stack: cqrs_testcontainers::CqrsStack) -> Result<(), cqrs_testcontainers::StackError> {
    /// let scope = stack.exclusive_scope("outage").await?;
    /// scope.stop_service(cqrs_testcontainers::Service::MongoDb).await?;
    /// # Ok(()) }
    /// ```
    pub async fn exclusive_scope(&self, name: &str) -> Result<TestScope, StackError> {
        let guard = ScopeGuard::Exclusive(self.inner.lock.clone().write_owned().await);
        TestScope::new(self.clone(), name, guard)
    }

    /// Addresses and credentials from the test process (ports published on 127.0.0.1).
    ///
    /// ```no_run
    /// # fn demo(stack: &cqrs_testcontainers::CqrsStack) {
    /// let pg_url = stack.endpoints().database_url();
    /// # }
    /// ```
    pub fn endpoints(&self) -> &Endpoints {
        &self.inner.endpoints
    }

    /// Addresses and credentials from a container on the stack's network
    /// ([`CqrsStack::network`]): container names and container ports.
    ///
    /// ```no_run
    /// # fn demo(stack: &cqrs_testcontainers::CqrsStack) {
    /// assert_eq!(stack.network_endpoints().postgres_port, 5432);
    /// # }
    /// ```
    pub fn network_endpoints(&self) -> &Endpoints {
        &self.inner.network_endpoints
    }

    /// Vault, when the stack was started [`with_vault`](StackBuilder::with_vault).
    ///
    /// ```no_run
    /// # fn demo(stack: &cqrs_testcontainers::CqrsStack) {
    /// if let Some(vault) = stack.vault() { println!("{}", vault.address()); }
    /// # }
    /// ```
    pub fn vault(&self) -> Option<&VaultSettings> {
        self.inner.vault.as_ref()
    }

    /// How long the start took (images checked, network, every container healthy,
    /// connectors RUNNING, Vault bootstrapped).
    ///
    /// ```no_run
    /// # fn demo(stack: &cqrs_testcontainers::CqrsStack) {
    /// assert!(stack.started_in().as_secs() < 60);
    /// # }
    /// ```
    pub fn started_in(&self) -> Duration {
        self.inner.started_in
    }

    /// The image of each service and where it came from.
    ///
    /// ```no_run
    /// # fn demo(stack: &cqrs_testcontainers::CqrsStack) {
    /// for image in stack.images() { println!("{image}"); }
    /// # }
    /// ```
    pub fn images(&self) -> &[ResolvedImage] {
        &self.inner.images
    }

    /// The session id: the value of the label `org.cqrs-toolkit.testcontainers.session` on
    /// every container and the network of this stack.
    ///
    /// ```no_run
    /// # fn demo(stack: &cqrs_testcontainers::CqrsStack) {
    /// assert_eq!(stack.session().len(), 32);
    /// # }
    /// ```
    pub fn session(&self) -> &str {
        &self.inner.session
    }

    /// The name of the stack's private Docker network.
    ///
    /// ```no_run
    /// # fn demo(stack: &cqrs_testcontainers::CqrsStack) {
    /// assert!(stack.network().starts_with("cqrs-tc-"));
    /// # }
    /// ```
    pub fn network(&self) -> &str {
        &self.inner.network
    }

    /// The Docker id of a service's container.
    ///
    /// ```no_run
    /// # fn demo(stack: &cqrs_testcontainers::CqrsStack) {
    /// let id = stack.container_id(cqrs_testcontainers::Service::Kafka);
    /// # }
    /// ```
    pub fn container_id(&self, service: Service) -> Option<&str> {
        self.inner.ids.get(&service).map(String::as_str)
    }

    /// Removes every container and the network now, and waits for it (a dropped stack is
    /// removed in the background). Does nothing while scopes or clones still use it.
    ///
    /// ```no_run
    /// # async fn demo(stack: cqrs_testcontainers::CqrsStack) {
    /// stack.stop().await;
    /// # }
    /// ```
    pub async fn stop(self) {
        let Some(inner) = Arc::into_inner(self.inner) else {
            return;
        };
        let containers = inner
            .containers
            .lock()
            .map(|mut c| std::mem::take(&mut *c))
            .unwrap_or_default();
        let reaper = inner.reaper.lock().ok().and_then(|mut r| r.take());
        let network = inner.network.clone();
        let _ = runtime::run(async move {
            remove_all(containers, reaper, network).await;
            Ok(())
        })
        .await;
    }
}
