//! The running service: the stages assembled from the configuration, the consumer loop
//! (`cqrs-kafka`) feeding them, a periodic task (readiness probe, parked-keys refresh,
//! checkpoints read back after an assignment) and the HTTP endpoints, with graceful
//! shutdown (stop fetching, settle, commit).

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use cqrs_kafka::{ConsumerLoop, Halt, Handler, LoopError, Record};
use cqrs_mongo::{MongoClient, MongoConfig};
use rdkafka::producer::FutureProducer;
use tokio_util::sync::CancellationToken;

use crate::config::SyncConfig;
use crate::dead_letter::{DeadLetters, KafkaSink, MongoLetters};
use crate::decode::{Decoder, Format, RegistryDecoder};
use crate::envelope::EnvelopeParser;
use crate::map::Projections;
use crate::metrics::{Metrics, ReadModelLabel};
use crate::pipeline::Pipeline;
use crate::progress::ProjectionProgress;
use crate::rebuild::Rebuilds;
use crate::service::ServiceError;
use crate::source::{self, SourceObserver};
use crate::write::{MongoStore, Writer};

/// What must live as long as the MongoDB client (the Vault client renewing its token and
/// following the MongoDB secret).
pub(crate) type KeepAlive = Vec<Box<dyn std::any::Any + Send + Sync>>;

/// The MongoDB client of `config` (through Vault with the `[vault]` section).
pub(crate) async fn connect_mongo(
    config: &SyncConfig,
) -> Result<(MongoClient, KeepAlive), ServiceError> {
    let base = MongoConfig::new(&config.mongodb.uri)
        .with_default_database(&config.mongodb.database)
        .with_tombstone_retention(config.mongodb.tombstone_retention());
    #[allow(unused_mut)]
    let mut keep_alive: KeepAlive = Vec::new();
    #[cfg(feature = "vault")]
    let mongo = match &config.vault {
        Some(vault) => {
            let handle = vault
                .connect_mongo(base)
                .await?;
            let client = handle.client().clone();
            keep_alive.push(Box::new(handle));
            client
        }
        None => MongoClient::connect(base).await?,
    };
    #[cfg(not(feature = "vault"))]
    let mongo = MongoClient::connect(base).await?;
    Ok((mongo, keep_alive))
}

/// Builds the stages from the configuration.
///
/// ```no_run
/// # async fn demo() -> Result<(), sync_service::ServiceError> {
/// let config = sync_service::config::SyncConfig::load("sync.toml".as_ref())?;
/// let pipeline = sync_service::runtime::build_pipeline(&config, Default::default()).await?;
/// # Ok(()) }
/// ```
pub async fn build_pipeline(
    config: &SyncConfig,
    projections: Projections,
) -> Result<Pipeline, ServiceError> {
    let (mongo, keep_alive) = connect_mongo(config).await?;
    assemble(config, projections, mongo, keep_alive).await
}

/// The decoder of `config`: the Schema Registry's when there is one, the default format.
pub(crate) fn decoder(config: &SyncConfig) -> Result<Decoder, ServiceError> {
    let format: Format = config.kafka.format.parse()?;
    Ok(match &config.schema_registry {
        Some(registry) => {
            Decoder::new(RegistryDecoder::new(&registry.url)?)
        }
        None => Decoder::without_registry(),
    }
    .with_default_format(format))
}

/// The stages over `mongo`.
pub(crate) async fn assemble(
    config: &SyncConfig,
    projections: Projections,
    mongo: MongoClient,
    keep_alive: KeepAlive,
) -> Result<Pipeline, ServiceError> {
    let decoder = decoder(config)?;
    let backoff = config.retry.backoff();
    let store = MongoStore::new(mongo.clone())
        .with_checkpoint_collection(&config.mongodb.checkpoint_collection)
        .with_truncate_collection(&config.mongodb.truncate_collection);
    let writer = Writer::new(Arc::new(store), backoff);
    let producer: FutureProducer = source::producer_config(&config.kafka).create()?;
    // The records follow the client handle (and its rebuilds), not the driver client of now.
    let letters = MongoLetters::new(mongo, config.mongodb.dead_letter_collection.clone());
    letters.ensure_indexes().await?;
    let dead_letters = DeadLetters::new(
        Arc::new(KafkaSink::new(producer, config.dead_letter.topic.clone())),
        Arc::new(letters),
    );
    let metrics = Metrics::new();
    Ok(Pipeline {
        decoder,
        parser: EnvelopeParser::default(),
        projections,
        writer,
        dead_letters,
        progress: Arc::new(ProjectionProgress::new(metrics.clone())),
        metrics,
        backoff,
        snapshot_rows: Default::default(),
        _keep_alive: keep_alive,
    })
}

/// The pipeline as the consumer loop's handler.
struct Batches(Arc<Pipeline>);

impl Handler for Batches {
    type Error = Infallible;

    async fn handle(
        &self,
        batch: &[Record],
        stop: &CancellationToken,
    ) -> Result<(), Halt<Infallible>> {
        match self.0.process(batch, stop).await {
            Ok(_) => Ok(()),
            // Nothing of the batch may be committed: it is redelivered.
            Err(_interrupted) => Err(Halt::interrupted(0)),
        }
    }
}

/// Runs the service until `shutdown` is cancelled, then settles and commits.
pub(crate) async fn run(
    config: SyncConfig,
    projections: Projections,
    metrics: Metrics,
    topics: Vec<String>,
    shutdown: CancellationToken,
) -> Result<(), ServiceError> {
    config.validate()?;
    let (mongo, keep_alive) = connect_mongo(&config).await?;
    let rebuilds = Rebuilds::new(&config, mongo.clone())?;
    // Read models are versions behind a view (cqrs_mongo::layout): laid out, or migrated
    // from a plain collection of earlier releases, before the first change.
    for mapping in &config.projections {
        mongo
            .ensure_layout(mapping.database.as_deref(), &mapping.collection)
            .await?;
    }
    let mut pipeline = assemble(&config, projections, mongo, keep_alive).await?;
    pipeline.progress = Arc::new(ProjectionProgress::new(metrics.clone()));
    pipeline.metrics = metrics;
    pipeline.metrics.initialize(pipeline.projections.names());
    // Keys parked by dead letters of earlier runs stay held back.
    pipeline.dead_letters.refresh().await?;
    // Truncates applied before this start keep older changes out.
    pipeline
        .writer
        .load_floors()
        .await
        .map_err(|source| ServiceError::State {
            what: "the truncate floors",
            source,
        })?;
    let pipeline = Arc::new(pipeline);
    let observer = SourceObserver::new(pipeline.metrics.clone(), Arc::clone(&pipeline.progress));
    let consumer = ConsumerLoop::subscribe(
        source::client_config(&config.kafka),
        source::loop_config(&config, &topics),
        Arc::new(observer),
        &shutdown,
    )?;
    let status = consumer.status();
    tracing::info!(projections = ?pipeline.projections.names(), "sync-service started");

    // The side tasks stop after the loop has committed, not before.
    let tasks = CancellationToken::new();
    let periodic = tokio::spawn(periodic(
        Arc::clone(&pipeline),
        config.dead_letter.refresh_interval(),
        tasks.clone(),
    ));
    let rebuilding = tokio::spawn(follow_rebuilds(
        Arc::clone(&pipeline),
        rebuilds,
        config.rebuild.poll_interval(),
        tasks.clone(),
    ));
    let http = match crate::http::serve(
        &config.http.listen,
        crate::http::HttpState {
            pipeline: Arc::clone(&pipeline),
            status,
        },
        tasks.clone(),
    )
    .await
    {
        Ok(http) => http,
        Err(e) => {
            tasks.cancel();
            let _ = periodic.await;
            let _ = rebuilding.await;
            return Err(e);
        }
    };
    let result = consumer.run(Batches(Arc::clone(&pipeline))).await;
    tasks.cancel();
    let _ = periodic.await;
    let _ = rebuilding.await;
    if let Some(http) = http {
        let _ = http.await;
    }
    tracing::info!("sync-service stopped");
    match result {
        Ok(()) => Ok(()),
        Err(LoopError::Kafka(e)) => Err(ServiceError::Kafka(e)),
        Err(LoopError::Handler(never)) => match never {},
    }
}

/// Every `every`: re-reads the read models' layouts (a rebuild begun elsewhere is then
/// written along), adds the snapshot rows counted since to the running rebuilds, takes
/// their next steps (whoever comes first: the command, this or another instance) and
/// exports their progress.
async fn follow_rebuilds(
    pipeline: Arc<Pipeline>,
    rebuilds: Rebuilds,
    every: Duration,
    stop: CancellationToken,
) {
    let mut known: BTreeSet<String> = BTreeSet::new();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        if let Err(e) = rebuilds.refresh_layouts().await {
            tracing::warn!(error = %e, "re-reading the read models' layouts failed");
        }
        let counts = pipeline.snapshot_rows.take();
        if let Err(e) = rebuilds.add_rows(&counts).await {
            pipeline.snapshot_rows.restore(counts);
            tracing::warn!(error = %e, "recording rebuild progress failed");
        }
        let active = match rebuilds.active().await {
            Ok(active) => active,
            Err(e) => {
                tracing::warn!(error = %e, "reading the running rebuilds failed");
                continue;
            }
        };
        let metrics = &pipeline.metrics;
        let mut running = BTreeSet::new();
        for record in active {
            let label = ReadModelLabel {
                read_model: record.id.clone(),
            };
            let record = match rebuilds.advance(&record).await {
                Ok(record) => record,
                Err(e) => {
                    tracing::warn!(read_model = %record.id, error = %e, "rebuild step failed");
                    record
                }
            };
            metrics.rebuild_rows.get_or_create(&label).set(record.rows);
            metrics
                .rebuild_rows_estimate
                .get_or_create(&label)
                .set(record.estimate.unwrap_or(0));
            metrics
                .rebuild_active
                .get_or_create(&label)
                .set(i64::from(record.state.is_active()));
            running.insert(record.id);
        }
        for gone in known.difference(&running) {
            let label = ReadModelLabel {
                read_model: gone.clone(),
            };
            metrics.rebuild_active.get_or_create(&label).set(0);
        }
        known = running;
    }
}

/// How often MongoDB is probed for the readiness check.
const PROBE_EVERY: Duration = Duration::from_secs(2);

/// Every 2 s: probes MongoDB for the readiness check (also when no batch is flowing);
/// every `refresh_every` reloads the parked keys (an operator may have resolved dead
/// letters) with the same request; after an assignment reads the checkpoints of the
/// projections back (their positions and lag on `/metrics`).
async fn periodic(pipeline: Arc<Pipeline>, refresh_every: Duration, stop: CancellationToken) {
    let mut refreshed_at = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(PROBE_EVERY.min(refresh_every)) => {}
        }
        let refresh = refreshed_at.elapsed() >= refresh_every;
        let dead_letters = &pipeline.dead_letters;
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
                pipeline.writer.observe(true);
                if refresh {
                    refreshed_at = tokio::time::Instant::now();
                }
            }
            Ok(Err(e)) => {
                pipeline.writer.observe(false);
                tracing::warn!(error = %e, "MongoDB probe / parked-keys refresh failed");
            }
            Err(_) => {
                pipeline.writer.observe(false);
                tracing::warn!("MongoDB did not answer the probe within 2 s");
            }
        }
        if pipeline.progress.take_reload() && !reload_checkpoints(&pipeline).await {
            // Read them again at the next tick.
            pipeline.progress.assigned(&[]);
        }
    }
}

/// Reads every projection's checkpoints back; false when the store did not answer.
async fn reload_checkpoints(pipeline: &Pipeline) -> bool {
    for name in pipeline.projections.names() {
        let read = tokio::time::timeout(PROBE_EVERY, pipeline.writer.store().checkpoints(name));
        match read.await {
            Ok(Ok(checkpoints)) => pipeline.progress.loaded(&checkpoints),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, projection = name, "cannot read the checkpoints");
                return false;
            }
            Err(_) => return false,
        }
    }
    true
}
