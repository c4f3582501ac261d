//! The running service: the consumer loop, partition workers, periodic tasks and the HTTP
//! endpoints, with graceful shutdown (stop fetching, flush, commit).

use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use cqrs_core::Aggregate;
use cqrs_core::Projection;
use cqrs_mongo::{MongoClient, MongoConfig};
use cqrs_projection::{EventProjection, OutboxProjection, StateProjection, StateView};
use futures::StreamExt;
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::message::OwnedMessage;
use rdkafka::producer::FutureProducer;
use rdkafka::{Message, Offset, TopicPartitionList};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::SyncConfig;
use crate::dead_letter::DeadLetters;
use crate::decode::{Decoder, Format, RegistryDecoder};
use crate::envelope::{Change, EnvelopeParser};
use crate::map::{MongoWrite, Projections, TableProjection};
use crate::metrics::Metrics;
use crate::pipeline::{Offsets, Pipeline};
use crate::progress::Progress;
use crate::source::{self, Source, SourceContext};
use crate::write::{Backoff, Writer};

/// Why the service could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServiceError {
    /// The task running an embedded service panicked or was aborted.
    #[error("sync-service task: {0}")]
    Task(String),
    /// The configuration is invalid (a configuration made in code is checked at start).
    #[error("{0}")]
    Config(#[from] crate::config::ConfigError),
    /// Kafka client setup failed.
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// MongoDB setup failed.
    #[error("mongodb: {0}")]
    Mongo(#[from] cqrs_mongo::Error),
    /// State the service keeps in MongoDB could not be read at start.
    #[error("reading {what} from MongoDB: {source}")]
    State {
        /// What was read.
        what: &'static str,
        /// Error.
        #[source]
        source: mongodb::error::Error,
    },
    /// Dead-letter setup failed.
    #[error("dead letters: {0}")]
    DeadLetter(#[from] crate::dead_letter::DeadLetterError),
    /// The schema registry settings are unusable.
    #[error("schema registry: {0}")]
    Registry(String),
    /// Vault could not provide the MongoDB settings.
    #[cfg(feature = "vault")]
    #[error("vault: {0}")]
    Vault(String),
    /// The HTTP endpoint could not bind.
    #[error("http endpoint {listen}: {source}")]
    Http {
        /// Address.
        listen: String,
        /// Error.
        #[source]
        source: std::io::Error,
    },
}

/// The sync-service: build it from a config, add Rust projections, run it.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use sync_service::{config::SyncConfig, SyncService};
/// use tokio_util::sync::CancellationToken;
///
/// let config = SyncConfig::load("sync.toml".as_ref())?;
/// let shutdown = CancellationToken::new();
/// SyncService::new(config).run(shutdown).await?;
/// # Ok(()) }
/// ```
pub struct SyncService {
    config: SyncConfig,
    projections: Projections,
    metrics: Metrics,
}

impl SyncService {
    /// A service with the declarative projections of `config`.
    pub fn new(config: SyncConfig) -> Self {
        let mut projections = Projections::default();
        for mapping in &config.projections {
            projections.add_table(TableProjection::new(mapping, &config.mongodb.database));
        }
        SyncService {
            config,
            projections,
            metrics: Metrics::new(),
        }
    }

    /// The service's metrics: keep a clone to read counters while it runs (they are also
    /// served on `/metrics`).
    pub fn metrics(&self) -> Metrics {
        self.metrics.clone()
    }

    /// Adds a projection of the state of a state-stored aggregate of service schema
    /// `schema` (its `aggregates` table): typed state in, typed writes out, each write
    /// carrying the aggregate version for `Repository::wait_for`.
    ///
    /// ```no_run
    /// # use cqrs_projection::{ProjectionError, StateChange, StateProjection, Write};
    /// # #[derive(Debug, Default, serde::Serialize, serde::Deserialize)] struct Account { balance: i64 }
    /// # #[derive(Debug, thiserror::Error)] #[error("no")] struct No;
    /// # #[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)] struct Ev;
    /// # impl cqrs_core::DomainEvent for Ev { fn event_type(&self) -> &'static str { "Ev" } }
    /// # impl cqrs_core::Aggregate for Account {
    /// #     const TYPE: &'static str = "Account"; type Command = (); type Event = Ev; type Error = No;
    /// #     fn handle(&self, _: &()) -> Result<Vec<Ev>, No> { Ok(vec![]) } fn apply(&mut self, _: &Ev) {}
    /// # }
    /// # #[derive(Debug, serde::Serialize, serde::Deserialize)] struct Balance { #[serde(rename = "_id")] id: String, balance: i64 }
    /// # impl cqrs_core::ReadModel for Balance { type Id = String; const COLLECTION: &'static str = "balances"; fn id(&self) -> String { self.id.clone() } }
    /// # impl cqrs_mongo::MongoReadModel for Balance {}
    /// # struct Balances;
    /// # impl StateProjection for Balances {
    /// #     type Aggregate = Account; type Model = Balance;
    /// #     fn project(&self, a: &StateChange<Account>) -> Result<Vec<Write<Balance>>, ProjectionError> { Ok(vec![]) }
    /// # }
    /// # async fn demo() -> Result<(), sync_service::ServiceError> {
    /// use sync_service::{config::SyncConfig, SyncService};
    ///
    /// let config = SyncConfig::new("127.0.0.1:9092", "bank-read-side", "mongodb://127.0.0.1:27017", "bank")
    ///     .with_schema_registry("http://127.0.0.1:8081")
    ///     .with_topic_prefix("cqrs");
    /// let stop = tokio_util::sync::CancellationToken::new();
    /// SyncService::new(config).with_state_projection("bank", Balances).run(stop).await?;
    /// # Ok(()) }
    /// ```
    pub fn with_state_projection<P: StateProjection>(
        mut self,
        schema: &str,
        projection: P,
    ) -> Self {
        self.projections
            .add_change(cqrs_projection::state(schema, projection));
        self
    }

    /// Adds a [`StateView`]: one document of `M` per aggregate `A` of service schema
    /// `schema`, rebuilt from the aggregate's state at every command.
    pub fn with_state_view<A, M>(mut self, schema: &str) -> Self
    where
        A: Aggregate,
        M: StateView<A>,
        M::Id: From<String>,
    {
        self.projections
            .add_change(cqrs_projection::state_view::<A, M>(schema));
        self
    }

    /// Adds a projection of the events of an aggregate of service schema `schema` (its
    /// `events` table), upcast and typed.
    pub fn with_event_projection<P: EventProjection>(
        mut self,
        schema: &str,
        projection: P,
    ) -> Self {
        self.projections
            .add_change(cqrs_projection::events(schema, projection));
        self
    }

    /// Adds a projection of another service's integration events (its outbox topic).
    pub fn with_outbox_projection<P: OutboxProjection>(mut self, projection: P) -> Self {
        self.projections
            .add_outbox(cqrs_projection::outbox(projection));
        self
    }

    /// Adds a raw Rust projection fed by `tables` (`schema.table`): BSON rows of any
    /// captured table in, writes built by hand out.
    pub fn with_projection<P>(mut self, projection: P, tables: &[&str]) -> Self
    where
        P: Projection<Input = Change, Write = MongoWrite> + 'static,
    {
        self.projections.add(projection, tables);
        self
    }

    /// Re-processes pending dead letters (after a fix) through this service's projections.
    pub async fn replay_dead_letters(
        self,
        selection: &crate::dlq::Selection,
    ) -> Result<crate::dlq::ReplayReport, ServiceError> {
        crate::dlq::replay(&self.config, self.projections, selection).await
    }

    /// Runs until `shutdown` is cancelled, then flushes and commits.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), ServiceError> {
        self.config.validate()?;
        let topics = subscription(&self.config, &self.projections);
        let mut pipeline = build_pipeline(&self.config, self.projections).await?;
        pipeline.metrics = self.metrics;
        pipeline.metrics.initialize(pipeline.projections.names());
        // Keys parked by dead letters of earlier runs stay held back.
        pipeline.dead_letters.refresh().await?;
        // Truncates applied before this start keep older changes out.
        pipeline
            .writer
            .floors()
            .load()
            .await
            .map_err(|source| ServiceError::State {
                what: "the truncate floors",
                source,
            })?;
        let pipeline = Arc::new(pipeline);
        let progress = Arc::new(Progress::default());
        let context = SourceContext::new(
            pipeline.metrics.clone(),
            Arc::clone(&progress),
            self.config.kafka.revoke_flush_timeout(),
            shutdown.clone(),
        );
        let consumer = Arc::new(source::subscribe(&self.config.kafka, &topics, context)?);
        tracing::info!(projections = ?pipeline.projections.names(), "sync-service started");

        let refresher = tokio::spawn(refresh_parked_keys(
            pipeline.dead_letters.clone(),
            pipeline.writer.clone(),
            self.config.dead_letter.refresh_interval(),
            shutdown.clone(),
        ));
        let http = serve_http(
            &self.config.http.listen,
            HttpState {
                pipeline: Arc::clone(&pipeline),
                consumer: Arc::clone(&consumer),
                progress: Arc::clone(&progress),
            },
            shutdown.clone(),
        )
        .await?;

        let workers = self.config.batch.workers;
        let mut senders = Vec::with_capacity(workers);
        let mut handles = Vec::with_capacity(workers);
        for _ in 0..workers {
            let (tx, rx) = mpsc::channel(self.config.batch.max_size * 2);
            senders.push(tx);
            handles.push(tokio::spawn(worker(
                Arc::clone(&pipeline),
                Arc::clone(&consumer),
                Arc::clone(&progress),
                rx,
                self.config.batch.clone(),
                shutdown.clone(),
            )));
        }

        {
            let mut stream = consumer.stream();
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    next = stream.next() => match next {
                        Some(Ok(message)) => {
                            let message = message.detach();
                            let w = worker_of(&message, workers);
                            progress.dispatched();
                            if senders[w].send(message).await.is_err() {
                                break;
                            }
                        }
                        Some(Err(e)) => {
                            if source::is_missing_topic(&e) {
                                tracing::debug!(error = %e, "subscribed topics not available yet");
                            } else {
                                tracing::warn!(error = %e, "kafka consumer error");
                            }
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                        None => break,
                    }
                }
            }
        }
        tracing::info!("stopped fetching; flushing in-flight batches");
        drop(senders);
        for handle in handles {
            let _ = handle.await;
        }
        match consumer.commit_consumer_state(CommitMode::Sync) {
            Ok(()) => tracing::info!("offsets committed"),
            // Nothing stored since the last automatic commit.
            Err(e) => tracing::info!(result = %e, "final commit"),
        }
        shutdown.cancel();
        let _ = refresher.await;
        if let Some(http) = http {
            let _ = http.await;
        }
        tracing::info!("sync-service stopped");
        Ok(())
    }
}

/// The topics to subscribe to besides the configured ones: under `kafka.topic_prefix`,
/// those of every table a projection reads, and the outbox topics of outbox projections.
fn subscription(config: &SyncConfig, projections: &Projections) -> Vec<String> {
    let mut topics: Vec<String> = projections
        .outbox_topics()
        .into_iter()
        .map(str::to_owned)
        .collect();
    if let Some(prefix) = config
        .kafka
        .topic_prefix
        .as_deref()
        .filter(|p| !p.is_empty())
    {
        topics.extend(
            projections
                .tables()
                .into_iter()
                .map(|t| format!("{prefix}.{t}")),
        );
    }
    topics.sort();
    topics.dedup();
    topics
}

/// Builds the stages from the configuration.
pub async fn build_pipeline(
    config: &SyncConfig,
    projections: Projections,
) -> Result<Pipeline, ServiceError> {
    let format: Format = config
        .kafka
        .format
        .parse()
        .map_err(|e| ServiceError::Registry(format!("kafka.format: {e}")))?;
    let decoder = match &config.schema_registry {
        Some(registry) => {
            let registry = RegistryDecoder::new(&registry.url)
                .map_err(|e| ServiceError::Registry(e.to_string()))?;
            Decoder::new(registry)
        }
        None => Decoder::without_registry(),
    }
    .with_default_format(format);
    let base =
        MongoConfig::new(&config.mongodb.uri).with_default_database(&config.mongodb.database);
    #[allow(unused_mut)]
    let mut keep_alive: Vec<Box<dyn std::any::Any + Send + Sync>> = Vec::new();
    #[cfg(feature = "vault")]
    let mongo = match &config.vault {
        Some(vault) => {
            let handle = vault
                .connect_mongo(base)
                .await
                .map_err(|e| ServiceError::Vault(e.to_string()))?;
            let client = handle.client().clone();
            keep_alive.push(Box::new(handle));
            client
        }
        None => MongoClient::connect(base).await?,
    };
    #[cfg(not(feature = "vault"))]
    let mongo = MongoClient::connect(base).await?;
    let backoff = Backoff::new(&config.retry);
    let writer = Writer::new(mongo.clone(), backoff.clone())
        .with_truncate_collection(&config.mongodb.truncate_collection);
    let producer: FutureProducer = source::producer_config(&config.kafka).create()?;
    // The records follow the client handle (and its rebuilds), not the driver client of now.
    let dead_letters = DeadLetters::new(
        producer,
        config.dead_letter.topic.clone(),
        mongo,
        config.mongodb.dead_letter_collection.clone(),
    );
    dead_letters.ensure_indexes().await?;
    Ok(Pipeline {
        decoder,
        parser: EnvelopeParser::default(),
        projections,
        writer,
        dead_letters,
        metrics: Metrics::new(),
        backoff,
        _keep_alive: keep_alive,
    })
}

/// How long work may wait without any batch settling before `/readyz` reports stuck.
const STUCK_AFTER: Duration = Duration::from_secs(60);

/// All messages of one partition go to the same worker, so order per key holds.
fn worker_of(message: &OwnedMessage, workers: usize) -> usize {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    message.topic().hash(&mut hasher);
    message.partition().hash(&mut hasher);
    (hasher.finish() % workers as u64) as usize
}

async fn worker(
    pipeline: Arc<Pipeline>,
    consumer: Arc<Source>,
    progress: Arc<Progress>,
    mut rx: mpsc::Receiver<OwnedMessage>,
    batch: crate::config::BatchConfig,
    shutdown: CancellationToken,
) {
    while let Some(first) = rx.recv().await {
        let mut messages = vec![first];
        let deadline = tokio::time::Instant::now() + batch.max_wait();
        while messages.len() < batch.max_size {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(message)) => messages.push(message),
                _ => break,
            }
        }
        match pipeline.process(&messages, &shutdown).await {
            Ok(report) => {
                store_offsets(&consumer, &report.offsets);
                progress.settled(messages.len());
            }
            Err(interrupted) => {
                tracing::warn!(%interrupted, messages = messages.len(), "batch left uncommitted; it will be redelivered");
                break;
            }
        }
    }
}

fn store_offsets(consumer: &Source, offsets: &Offsets) {
    let mut tpl = TopicPartitionList::new();
    for ((topic, partition), next) in offsets {
        if let Err(e) = tpl.add_partition_offset(topic, *partition, Offset::Offset(*next)) {
            tracing::warn!(error = %e, topic, partition, "cannot store offset");
        }
    }
    // Fails for partitions revoked meanwhile: their new owner re-reads the batch, which
    // the version guards make harmless.
    if let Err(e) = consumer.store_offsets(&tpl) {
        tracing::warn!(error = %e, "offsets not stored (partition revoked?)");
    }
}

/// Every 2 s: probes MongoDB for the readiness check (also when no batch is flowing), and
/// every `dead_letter.refresh_interval_ms` reloads the parked keys (an operator may have
/// resolved dead letters) with the same request.
async fn refresh_parked_keys(
    dead_letters: DeadLetters,
    writer: Writer,
    refresh_every: Duration,
    shutdown: CancellationToken,
) {
    let mut refreshed_at = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(PROBE_EVERY.min(refresh_every)) => {
                let refresh = refreshed_at.elapsed() >= refresh_every;
                let answered = tokio::time::timeout(PROBE_EVERY, async {
                    if refresh {
                        dead_letters.refresh().await.map(|_| ())
                    } else {
                        dead_letters.probe().await
                    }
                })
                .await;
                match answered {
                    Ok(Ok(())) => {
                        writer.observe(true);
                        if refresh {
                            refreshed_at = tokio::time::Instant::now();
                        }
                    }
                    Ok(Err(e)) => {
                        writer.observe(false);
                        tracing::warn!(error = %e, "MongoDB probe / parked-keys refresh failed");
                    }
                    Err(_) => {
                        writer.observe(false);
                        tracing::warn!("MongoDB did not answer the probe within 2 s");
                    }
                }
            }
        }
    }
}

/// How often MongoDB is probed for the readiness check.
const PROBE_EVERY: Duration = Duration::from_secs(2);

#[derive(Clone)]
struct HttpState {
    pipeline: Arc<Pipeline>,
    consumer: Arc<Source>,
    progress: Arc<Progress>,
}

async fn serve_http(
    listen: &str,
    state: HttpState,
    shutdown: CancellationToken,
) -> Result<Option<tokio::task::JoinHandle<()>>, ServiceError> {
    if listen.is_empty() {
        return Ok(None);
    }
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|source| ServiceError::Http {
            listen: listen.to_owned(),
            source,
        })?;
    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics))
        .with_state(state);
    Ok(Some(tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await;
        if let Err(e) = served {
            tracing::warn!(error = %e, "http endpoint stopped");
        }
    })))
}

/// Ready: partitions assigned and MongoDB answering.
async fn ready(State(state): State<HttpState>) -> (StatusCode, &'static str) {
    let assigned = state
        .consumer
        .assignment()
        .map(|a| a.count() > 0)
        .unwrap_or(false);
    if !assigned {
        return (StatusCode::SERVICE_UNAVAILABLE, "no partitions assigned");
    }
    if !state.pipeline.writer.is_healthy() {
        return (StatusCode::SERVICE_UNAVAILABLE, "mongodb unavailable");
    }
    if state.progress.stuck(STUCK_AFTER) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "stuck: no batch settled for 60 s",
        );
    }
    (StatusCode::OK, "ready")
}

async fn metrics(State(state): State<HttpState>) -> String {
    state.pipeline.metrics.render()
}
