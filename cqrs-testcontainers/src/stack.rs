//! The started stack: its handle, what it reports, how tests take their part of it, and
//! how it goes away.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OnceCell, RwLock};

use crate::builder::{Settings, StackBuilder, Started};
use crate::container::Running;
use crate::endpoints::Endpoints;
use crate::images::ResolvedImage;
use crate::reaper::ReaperLink;
use crate::recipes::{self, secrets};
use crate::scope::{ScopeGuard, TestScope};
use crate::vault::VaultSettings;
use crate::{Service, StackError, runtime};

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
    pub timeline: Vec<(String, Duration)>,
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

    pub(crate) fn new(started: Started, settings: Settings) -> CqrsStack {
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
                timeline: started.timeline,
                scopes: AtomicU64::new(0),
                lock: Arc::new(RwLock::new(())),
                sync_image: OnceCell::new(),
                reaper: Mutex::new(started.reaper),
            }),
        }
    }

    /// One line per fact on stderr (not captured by the test harness): start time and
    /// images, local builds named as such.
    pub(crate) fn report(&self) {
        let mut err = std::io::stderr();
        let _ = writeln!(
            err,
            "cqrs-testcontainers: stack {} up in {:.1}s on network {}",
            recipes::short(&self.inner.session),
            self.inner.started_in.as_secs_f64(),
            self.inner.network
        );
        let steps: Vec<String> = self
            .inner
            .timeline
            .iter()
            .map(|(step, at)| format!("{step} {:.1}s", at.as_secs_f64()))
            .collect();
        let _ = writeln!(err, "cqrs-testcontainers: done at: {}", steps.join(", "));
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

    /// When each step of the start was done, counted from its beginning: `images` (found,
    /// or pulled), `reaper`, each service healthy, `connectors RUNNING`, `vault bootstrap`.
    ///
    /// ```no_run
    /// # fn demo(stack: &cqrs_testcontainers::CqrsStack) {
    /// for (step, at) in stack.timeline() { println!("{step}: {at:?}"); }
    /// # }
    /// ```
    pub fn timeline(&self) -> &[(String, Duration)] {
        &self.inner.timeline
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
