//! How a stack is asked for: images, Vault, service schemas, timeouts; owned or shared.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::sync::OnceCell;

use crate::container::Running;
use crate::images::{Flavor, ResolvedImage};
use crate::reaper::ReaperLink;
use crate::stack::CqrsStack;
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
    pub timeline: Vec<(String, Duration)>,
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
