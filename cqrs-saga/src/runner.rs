//! The Kafka side: the toolkit's consumer loop (`cqrs-kafka`) over outbox topics, each
//! record handed to the handlers ([`crate::reactions`]), its offset stored only once every
//! handler settled it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use cqrs_core::backoff::Backoff;
use cqrs_kafka::{BatchSettings, ConsumerLoop, LoopConfig, LoopError, LoopStatus};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use tokio_util::sync::CancellationToken;

use crate::handler::{EventHandler, Handled};
use crate::reactions::Reactions;

/// Why the runner could not start or had to stop.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunnerError {
    /// The Kafka client could not be set up or the topics created.
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    /// Nothing to run.
    #[error("no handler registered")]
    NoHandlers,
    /// Two handlers share a name (their command ids would collide).
    #[error("two handlers are named {0:?}")]
    DuplicateHandler(String),
    /// A permanent failure met [`PoisonPolicy::Stop`].
    #[error("stopped on an event that cannot be handled: {0}")]
    Poisoned(String),
}

/// What to do with an event that can never be handled (undecodable, or a permanent
/// handler error).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PoisonPolicy {
    /// Log it, count it in [`RunnerStats::poisoned`] and move on.
    #[default]
    Skip,
    /// Stop the runner without storing its offset (it is redelivered after a fix).
    Stop,
}

/// Settings of a [`SagaRunner`].
///
/// ```
/// use cqrs_saga::RunnerConfig;
/// let config = RunnerConfig::new("127.0.0.1:9092", "billing-reactions")
///     .with_property("security.protocol", "plaintext");
/// assert_eq!(config.workers, 4);
/// assert_eq!(config.backoff.initial(), std::time::Duration::from_millis(50));
/// ```
#[derive(Debug, Clone)]
pub struct RunnerConfig {
    /// `bootstrap.servers`.
    pub bootstrap_servers: String,
    /// Consumer group: one per service (its handlers share it).
    pub group_id: String,
    /// Partition workers: partitions are spread over them, each handles its events one at
    /// a time, so the events of one aggregate (one key, one partition) stay in order.
    pub workers: usize,
    /// Create missing topics with this many partitions at start (`None`: do not).
    pub create_topics: Option<i32>,
    /// Delays between retries of a transient failure (50 ms doubling to 5 s by default).
    pub backoff: Backoff,
    /// How long a partition revocation waits for the event in hand to settle before the
    /// partitions move to another instance (what is left is redelivered there).
    pub revoke_flush_timeout: Duration,
    /// What to do with events that can never be handled.
    pub poison: PoisonPolicy,
    /// Extra librdkafka properties (TLS, SASL, timeouts), applied last.
    pub properties: BTreeMap<String, String>,
}

impl RunnerConfig {
    /// Defaults for `bootstrap_servers` and `group_id`: 4 workers, topics created with 4
    /// partitions, 50 ms .. 5 s backoff, a 10 s revocation flush, poison events skipped.
    ///
    /// ```
    /// let c = cqrs_saga::RunnerConfig::new("127.0.0.1:9092", "orders-reactions");
    /// assert_eq!(c.create_topics, Some(4));
    /// ```
    pub fn new(bootstrap_servers: impl Into<String>, group_id: impl Into<String>) -> Self {
        RunnerConfig {
            bootstrap_servers: bootstrap_servers.into(),
            group_id: group_id.into(),
            workers: 4,
            create_topics: Some(4),
            backoff: Backoff::exponential(Duration::from_millis(50), Duration::from_secs(5)),
            revoke_flush_timeout: Duration::from_secs(10),
            poison: PoisonPolicy::Skip,
            properties: BTreeMap::new(),
        }
    }

    /// Sets a librdkafka property.
    ///
    /// ```
    /// let c = cqrs_saga::RunnerConfig::new("k:9092", "g").with_property("client.id", "orders");
    /// assert_eq!(c.properties["client.id"], "orders");
    /// ```
    pub fn with_property(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.properties.insert(key.into(), value.into());
        self
    }

    fn consumer_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        // The loop stores an event's offset once its commands committed and commits every
        // 500 ms (LoopConfig), before a revocation and at shutdown.
        c.set("bootstrap.servers", &self.bootstrap_servers)
            .set("group.id", &self.group_id)
            .set("auto.offset.reset", "earliest")
            .set("session.timeout.ms", "6000")
            .set("topic.metadata.refresh.interval.ms", "2000")
            .set("fetch.wait.max.ms", "20")
            .set("isolation.level", "read_uncommitted");
        for (k, v) in &self.properties {
            c.set(k, v);
        }
        c
    }

    /// The loop settings: one event per batch (its offset is stored as soon as it
    /// settled), 256 queued per worker, commits every 500 ms.
    fn loop_config(&self, topics: Vec<String>) -> LoopConfig {
        let mut config = LoopConfig::new(topics)
            .with_workers(self.workers)
            .with_batch(BatchSettings::new(1, Duration::ZERO))
            .with_commit_interval(Duration::from_millis(500))
            .with_revoke_flush_timeout(self.revoke_flush_timeout)
            .with_error_pause(Duration::from_millis(100));
        config.queue_capacity = 256;
        config
    }
}

/// Counters of a running [`SagaRunner`]; clone it before `run` to watch them.
#[derive(Debug, Clone, Default)]
pub struct RunnerStats(pub(crate) Arc<Counters>);

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) events: AtomicU64,
    executed: AtomicU64,
    deduplicated: AtomicU64,
    compensated: AtomicU64,
    rejected: AtomicU64,
    pub(crate) retries: AtomicU64,
    pub(crate) poisoned: AtomicU64,
    /// The running loop's status, once it runs.
    status: OnceLock<Arc<LoopStatus>>,
}

impl RunnerStats {
    /// Events settled (every handler done with them).
    pub fn events(&self) -> u64 {
        self.0.events.load(Ordering::Relaxed)
    }
    /// Commands that ran now (steps and compensations).
    pub fn executed(&self) -> u64 {
        self.0.executed.load(Ordering::Relaxed)
    }
    /// Commands that had already run (redeliveries).
    pub fn deduplicated(&self) -> u64 {
        self.0.deduplicated.load(Ordering::Relaxed)
    }
    /// Compensations (run now or before).
    pub fn compensated(&self) -> u64 {
        self.0.compensated.load(Ordering::Relaxed)
    }
    /// Commands refused by the domain without compensation.
    pub fn rejected(&self) -> u64 {
        self.0.rejected.load(Ordering::Relaxed)
    }
    /// Retries after transient failures.
    pub fn retries(&self) -> u64 {
        self.0.retries.load(Ordering::Relaxed)
    }
    /// True once the consumer group assigned partitions to the runner: events published
    /// from now on are handled without the group-join delay.
    pub fn is_assigned(&self) -> bool {
        self.0.status.get().is_some_and(|s| s.is_assigned())
    }

    /// Events handed to the workers and not settled yet.
    ///
    /// ```
    /// assert_eq!(cqrs_saga::RunnerStats::default().in_flight(), 0);
    /// ```
    pub fn in_flight(&self) -> usize {
        self.0.status.get().map_or(0, |s| s.in_flight())
    }
    /// Events skipped because they can never be handled.
    pub fn poisoned(&self) -> u64 {
        self.0.poisoned.load(Ordering::Relaxed)
    }

    pub(crate) fn count(&self, handled: &Handled) {
        let c = &self.0;
        match handled {
            Handled::Executed { deduplicated, .. } => {
                if *deduplicated {
                    c.deduplicated.fetch_add(1, Ordering::Relaxed);
                } else {
                    c.executed.fetch_add(1, Ordering::Relaxed);
                }
            }
            Handled::Compensated { deduplicated, .. } => {
                c.compensated.fetch_add(1, Ordering::Relaxed);
                if *deduplicated {
                    c.deduplicated.fetch_add(1, Ordering::Relaxed);
                } else {
                    c.executed.fetch_add(1, Ordering::Relaxed);
                }
            }
            Handled::Rejected { .. } => {
                c.rejected.fetch_add(1, Ordering::Relaxed);
            }
            Handled::Ignored => {}
        }
    }
}

/// Consumes outbox topics and drives [`EventHandler`]s: the reaction loop of a service.
///
/// * **Exactly once in effect**: delivery is at least once; every command's id is
///   derived from the event id ([`command_id`](crate::command_id)), so the store's
///   processed-commands table turns a redelivery into a no-op. The offset of an event is
///   stored only after every handler settled it (its command committed), and committed
///   every 500 ms, at shutdown, and before partitions are handed to another instance
///   (the event in hand settles first, up to [`RunnerConfig::revoke_flush_timeout`]).
/// * **Order per aggregate**: the router keys records by aggregate id, so one aggregate's
///   events share a partition; a partition is handled by one worker, one event at a time,
///   and a transient failure is retried (with backoff) before the worker moves on.
///
/// The loop is `cqrs-kafka`'s, shared with the sync-service.
///
/// ```no_run
/// # async fn run(handler: impl cqrs_saga::EventHandler) -> Result<(), cqrs_saga::RunnerError> {
/// use cqrs_saga::{RunnerConfig, SagaRunner};
/// use tokio_util::sync::CancellationToken;
///
/// let shutdown = CancellationToken::new();
/// SagaRunner::new(RunnerConfig::new("127.0.0.1:9092", "inventory-reactions"))
///     .with_handler(handler)
///     .run(shutdown)
///     .await?;
/// # Ok(()) }
/// ```
pub struct SagaRunner {
    config: RunnerConfig,
    handlers: Vec<Arc<dyn EventHandler>>,
    stats: RunnerStats,
}

impl std::fmt::Debug for SagaRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SagaRunner")
            .field("group_id", &self.config.group_id)
            .field(
                "handlers",
                &self
                    .handlers
                    .iter()
                    .map(|h| h.name().to_owned())
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl SagaRunner {
    /// A runner without handlers.
    ///
    /// ```
    /// let runner = cqrs_saga::SagaRunner::new(cqrs_saga::RunnerConfig::new("k:9092", "g"));
    /// assert!(runner.topics().is_empty());
    /// ```
    pub fn new(config: RunnerConfig) -> Self {
        SagaRunner {
            config,
            handlers: Vec::new(),
            stats: RunnerStats::default(),
        }
    }

    /// Adds a handler.
    pub fn with_handler(mut self, handler: impl EventHandler) -> Self {
        self.handlers.push(Arc::new(handler));
        self
    }

    /// The runner's counters.
    ///
    /// ```
    /// let runner = cqrs_saga::SagaRunner::new(cqrs_saga::RunnerConfig::new("k:9092", "g"));
    /// let stats = runner.stats();
    /// assert_eq!((stats.events(), stats.is_assigned()), (0, false));
    /// ```
    pub fn stats(&self) -> RunnerStats {
        self.stats.clone()
    }

    /// Every topic some handler needs.
    pub fn topics(&self) -> Vec<String> {
        self.handlers
            .iter()
            .flat_map(|h| h.topics())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect()
    }

    /// Creates `topics` with `partitions` partitions where missing (idempotent).
    pub async fn ensure_topics(
        bootstrap_servers: &str,
        topics: &[String],
        partitions: i32,
    ) -> Result<(), KafkaError> {
        if topics.is_empty() {
            return Ok(());
        }
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", bootstrap_servers)
            .create()?;
        let new: Vec<NewTopic<'_>> = topics
            .iter()
            .map(|t| NewTopic::new(t, partitions, TopicReplication::Fixed(1)))
            .collect();
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
        for result in admin.create_topics(&new, &options).await? {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((topic, code)) => {
                    tracing::warn!(%topic, ?code, "cannot create topic; relying on auto-creation");
                }
            }
        }
        Ok(())
    }

    /// Consumes until `shutdown` is cancelled, then finishes the events in hand and
    /// commits their offsets.
    ///
    /// # Errors
    /// [`RunnerError::Kafka`] when the consumer cannot be created,
    /// [`RunnerError::NoHandlers`] / [`RunnerError::DuplicateHandler`] for a bad setup,
    /// [`RunnerError::Poisoned`] under [`PoisonPolicy::Stop`].
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), RunnerError> {
        if self.handlers.is_empty() {
            return Err(RunnerError::NoHandlers);
        }
        let mut names = BTreeSet::new();
        for h in &self.handlers {
            if !names.insert(h.name().to_owned()) {
                return Err(RunnerError::DuplicateHandler(h.name().to_owned()));
            }
        }
        let topics = self.topics();
        if let Some(partitions) = self.config.create_topics {
            Self::ensure_topics(&self.config.bootstrap_servers, &topics, partitions).await?;
        }
        let consumer = ConsumerLoop::subscribe(
            self.config.consumer_config(),
            self.config.loop_config(topics.clone()),
            Arc::new(()),
            &shutdown,
        )?;
        // Set once: a runner runs once (`run` takes it by value).
        let _ = self.stats.0.status.set(consumer.status());
        tracing::info!(group = %self.config.group_id, ?topics, "saga runner started");
        let reactions = Reactions {
            handlers: self.handlers,
            stats: self.stats,
            backoff: self.config.backoff,
            poison: self.config.poison,
        };
        let result = consumer.run(reactions).await;
        tracing::info!("saga runner stopped");
        match result {
            Ok(()) => Ok(()),
            Err(LoopError::Kafka(e)) => Err(RunnerError::Kafka(e)),
            Err(LoopError::Handler(poisoned)) => Err(RunnerError::Poisoned(poisoned.0)),
        }
    }
}
