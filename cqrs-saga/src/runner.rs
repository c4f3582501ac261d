//! The Kafka side: consume outbox topics, hand each event to the handlers, store the
//! offset only once every handler settled it.

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::StreamExt;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers, OwnedMessage};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Message, Offset, TopicPartitionList};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::handler::{EventHandler, Handled, HandlerError};
use cqrs_core::outbox::IntegrationEvent;

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
    /// Backoff before the first retry of a transient failure; doubles up to `max_backoff`.
    pub initial_backoff: Duration,
    /// Upper bound of the retry backoff.
    pub max_backoff: Duration,
    /// What to do with events that can never be handled.
    pub poison: PoisonPolicy,
    /// Extra librdkafka properties (TLS, SASL, timeouts), applied last.
    pub properties: BTreeMap<String, String>,
}

impl RunnerConfig {
    /// Defaults for `bootstrap_servers` and `group_id`: 4 workers, topics created with 4
    /// partitions, 50 ms .. 5 s backoff, poison events skipped.
    pub fn new(bootstrap_servers: impl Into<String>, group_id: impl Into<String>) -> Self {
        RunnerConfig {
            bootstrap_servers: bootstrap_servers.into(),
            group_id: group_id.into(),
            workers: 4,
            create_topics: Some(4),
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(5),
            poison: PoisonPolicy::Skip,
            properties: BTreeMap::new(),
        }
    }

    /// Sets a librdkafka property.
    pub fn with_property(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.properties.insert(key.into(), value.into());
        self
    }

    fn consumer_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.bootstrap_servers)
            .set("group.id", &self.group_id)
            // Offsets are stored by hand once an event is settled and committed on a timer
            // (and at shutdown): never before the command committed.
            .set("enable.auto.commit", "true")
            .set("auto.commit.interval.ms", "500")
            .set("enable.auto.offset.store", "false")
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
}

/// Counters of a running [`SagaRunner`]; clone it before `run` to watch them.
#[derive(Debug, Clone, Default)]
pub struct RunnerStats(Arc<Counters>);

#[derive(Debug, Default)]
struct Counters {
    events: AtomicU64,
    executed: AtomicU64,
    deduplicated: AtomicU64,
    compensated: AtomicU64,
    rejected: AtomicU64,
    retries: AtomicU64,
    poisoned: AtomicU64,
    assigned: std::sync::atomic::AtomicBool,
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
        self.0.assigned.load(Ordering::Relaxed)
    }
    /// Events skipped because they can never be handled.
    pub fn poisoned(&self) -> u64 {
        self.0.poisoned.load(Ordering::Relaxed)
    }

    fn count(&self, handled: &Handled) {
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
///   every 500 ms and at shutdown.
/// * **Order per aggregate**: the router keys records by aggregate id, so one aggregate's
///   events share a partition; a partition is handled by one worker, one event at a time,
///   and a transient failure is retried (with backoff) before the worker moves on.
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
        let consumer: Arc<StreamConsumer> = Arc::new(self.config.consumer_config().create()?);
        let refs: Vec<&str> = topics.iter().map(String::as_str).collect();
        consumer.subscribe(&refs)?;
        tracing::info!(group = %self.config.group_id, ?topics, "saga runner started");

        let stop = shutdown.child_token();
        let poisoned: Arc<std::sync::Mutex<Option<String>>> = Arc::default();
        let workers = self.config.workers.max(1);
        let mut senders = Vec::with_capacity(workers);
        let mut handles = Vec::with_capacity(workers);
        let shared = Arc::new(Worker {
            handlers: self.handlers,
            stats: self.stats,
            config: self.config.clone(),
            consumer: Arc::clone(&consumer),
            stop: stop.clone(),
            poisoned: Arc::clone(&poisoned),
        });
        for _ in 0..workers {
            let (tx, rx) = mpsc::channel::<OwnedMessage>(256);
            senders.push(tx);
            handles.push(tokio::spawn(Arc::clone(&shared).work(rx)));
        }
        {
            let mut stream = consumer.stream();
            let mut assignment = tokio::time::interval(Duration::from_millis(100));
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = assignment.tick() => {
                        let assigned = consumer.assignment().map(|a| a.count() > 0).unwrap_or(false);
                        shared.stats.0.assigned.store(assigned, Ordering::Relaxed);
                    }
                    next = stream.next() => match next {
                        Some(Ok(message)) => {
                            let message = message.detach();
                            let w = worker_of(&message, workers);
                            if senders[w].send(message).await.is_err() {
                                break;
                            }
                        }
                        Some(Err(e)) => {
                            tracing::debug!(error = %e, "kafka consumer error");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                        None => break,
                    }
                }
            }
        }
        drop(senders);
        for handle in handles {
            let _ = handle.await;
        }
        if let Err(e) = consumer.commit_consumer_state(CommitMode::Sync) {
            tracing::debug!(result = %e, "final commit");
        }
        tracing::info!("saga runner stopped");
        let poisoned = poisoned.lock().ok().and_then(|mut p| p.take());
        match poisoned {
            Some(message) => Err(RunnerError::Poisoned(message)),
            None => Ok(()),
        }
    }
}

/// All events of one partition go to one worker.
fn worker_of(message: &OwnedMessage, workers: usize) -> usize {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    message.topic().hash(&mut hasher);
    message.partition().hash(&mut hasher);
    (hasher.finish() % workers as u64) as usize
}

struct Worker {
    handlers: Vec<Arc<dyn EventHandler>>,
    stats: RunnerStats,
    config: RunnerConfig,
    consumer: Arc<StreamConsumer>,
    stop: CancellationToken,
    poisoned: Arc<std::sync::Mutex<Option<String>>>,
}

impl Worker {
    async fn work(self: Arc<Self>, mut rx: mpsc::Receiver<OwnedMessage>) {
        while let Some(message) = rx.recv().await {
            match self.settle(&message).await {
                Settled::Done => self.store_offset(&message),
                Settled::Interrupted => break,
                Settled::Poisoned(reason) => {
                    self.stats.0.poisoned.fetch_add(1, Ordering::Relaxed);
                    match self.config.poison {
                        PoisonPolicy::Skip => {
                            tracing::error!(topic = message.topic(), partition = message.partition(),
                                offset = message.offset(), %reason, "event cannot be handled; skipped");
                            self.store_offset(&message);
                        }
                        PoisonPolicy::Stop => {
                            tracing::error!(%reason, "event cannot be handled; stopping");
                            if let Ok(mut p) = self.poisoned.lock() {
                                p.get_or_insert(reason);
                            }
                            self.stop.cancel();
                            break;
                        }
                    }
                }
            }
        }
    }

    async fn settle(&self, message: &OwnedMessage) -> Settled {
        let headers: Vec<(&str, Option<&[u8]>)> = message
            .headers()
            .map(|h| h.iter().map(|h| (h.key, h.value)).collect())
            .unwrap_or_default();
        let event = match IntegrationEvent::from_record(
            message.topic(),
            message.partition(),
            message.offset(),
            message.key(),
            message.payload(),
            headers,
        ) {
            Ok(Some(event)) => event,
            Ok(None) => return Settled::Done,
            Err(e) => return Settled::Poisoned(e.to_string()),
        };
        for handler in &self.handlers {
            if !handler.topics().iter().any(|t| t == message.topic()) {
                continue;
            }
            let mut backoff = self.config.initial_backoff;
            loop {
                let span = tracing::debug_span!("handle", handler = handler.name(),
                    event_id = %event.event_id, event_type = %event.event_type,
                    aggregate_id = %event.aggregate_id);
                match handler.handle(&event).instrument(span).await {
                    Ok(handled) => {
                        tracing::debug!(handler = handler.name(), event_id = %event.event_id,
                            event_type = %event.event_type, ?handled, "event handled");
                        self.stats.count(&handled);
                        break;
                    }
                    Err(e @ HandlerError::Transient { .. }) => {
                        self.stats.0.retries.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(error = %e, retry_in = ?backoff, "transient failure; retrying");
                        tokio::select! {
                            _ = self.stop.cancelled() => return Settled::Interrupted,
                            _ = tokio::time::sleep(backoff) => {}
                        }
                        backoff = (backoff * 2).min(self.config.max_backoff);
                    }
                    Err(e) => return Settled::Poisoned(e.to_string()),
                }
            }
        }
        self.stats.0.events.fetch_add(1, Ordering::Relaxed);
        Settled::Done
    }

    fn store_offset(&self, message: &OwnedMessage) {
        let mut tpl = TopicPartitionList::new();
        let added = tpl.add_partition_offset(
            message.topic(),
            message.partition(),
            Offset::Offset(message.offset() + 1),
        );
        if let Err(e) = added.and_then(|()| self.consumer.store_offsets(&tpl)) {
            // The partition was revoked: its next owner redelivers, which dedup absorbs.
            tracing::warn!(error = %e, "offset not stored");
        }
    }
}

enum Settled {
    Done,
    Interrupted,
    Poisoned(String),
}
