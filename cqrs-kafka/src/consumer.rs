//! The loop: one consumer in a group, records dispatched to partition workers, offsets
//! stored once settled and committed by librdkafka's timer, before a revocation and at
//! shutdown.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{Stream, StreamExt};
use rdkafka::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::context::{LoopContext, is_missing_topic};
use crate::dispatch::{ConsumerFlow, Dispatcher, PartitionFlow};
use crate::offsets::OffsetSink;
use crate::worker::Shared;
use crate::{BatchSettings, Handler, LoopStatus, Observer, Record};

/// Why a loop could not start or stopped with an error.
///
/// ```
/// let e: cqrs_kafka::LoopError<std::io::Error> = rdkafka::error::KafkaError::Canceled.into();
/// assert!(e.to_string().starts_with("kafka"));
/// ```
#[derive(Debug, thiserror::Error)]
pub enum LoopError<E: std::error::Error + 'static> {
    /// The consumer could not be created or subscribed.
    #[error("kafka: {0}")]
    Kafka(#[source] KafkaError),
    /// The handler halted the loop.
    #[error(transparent)]
    Handler(E),
}

impl<E: std::error::Error + 'static> From<KafkaError> for LoopError<E> {
    fn from(e: KafkaError) -> Self {
        LoopError::Kafka(e)
    }
}

/// How a loop consumes.
///
/// ```
/// use std::time::Duration;
/// use cqrs_kafka::{BatchSettings, LoopConfig};
///
/// let config = LoopConfig::new(["outbox.event.Order", "^cqrs\\.orders\\..*"])
///     .with_workers(2)
///     .with_batch(BatchSettings::new(1, Duration::ZERO))
///     .with_commit_interval(Duration::from_millis(500));
/// assert_eq!(config.workers, 2);
/// assert_eq!(config.queue_capacity, 2);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoopConfig {
    /// Topics to subscribe to; a name starting with `^` is a regular expression.
    pub topics: Vec<String>,
    /// Partition workers (at least 1).
    pub workers: usize,
    /// Batch bounds.
    pub batch: BatchSettings,
    /// Records queued per worker beyond the batch it handles (default: two batches).
    pub queue_capacity: usize,
    /// `auto.commit.interval.ms`, unless the client config sets it.
    pub commit_interval: Duration,
    /// How long a revocation waits for in-flight records to settle before committing.
    pub revoke_flush_timeout: Duration,
    /// Pause after a consumer error before polling again.
    pub error_pause: Duration,
}

impl LoopConfig {
    /// Defaults: 4 workers, batches of up to 500 records or 20 ms, a 1 s commit timer,
    /// 10 s revocation flush.
    ///
    /// ```
    /// let c = cqrs_kafka::LoopConfig::new(["t"]);
    /// assert_eq!((c.workers, c.batch.max_size, c.queue_capacity), (4, 500, 1000));
    /// ```
    pub fn new<T: Into<String>>(topics: impl IntoIterator<Item = T>) -> Self {
        LoopConfig {
            topics: topics.into_iter().map(Into::into).collect(),
            workers: 4,
            batch: BatchSettings::new(500, Duration::from_millis(20)),
            queue_capacity: 1000,
            commit_interval: Duration::from_secs(1),
            revoke_flush_timeout: Duration::from_secs(10),
            error_pause: Duration::from_millis(200),
        }
    }

    /// Sets the number of workers (at least 1).
    ///
    /// ```
    /// assert_eq!(cqrs_kafka::LoopConfig::new(["t"]).with_workers(0).workers, 1);
    /// ```
    pub fn with_workers(mut self, workers: usize) -> Self {
        self.workers = workers.max(1);
        self
    }

    /// Sets the batch bounds (and a queue of two batches per worker).
    ///
    /// ```
    /// # use std::time::Duration;
    /// let c = cqrs_kafka::LoopConfig::new(["t"]).with_batch(cqrs_kafka::BatchSettings::new(10, Duration::ZERO));
    /// assert_eq!(c.queue_capacity, 20);
    /// ```
    pub fn with_batch(mut self, batch: BatchSettings) -> Self {
        self.batch = batch;
        self.queue_capacity = batch.max_size.saturating_mul(2);
        self
    }

    /// Sets the commit timer.
    ///
    /// ```
    /// # use std::time::Duration;
    /// let c = cqrs_kafka::LoopConfig::new(["t"]).with_commit_interval(Duration::from_millis(500));
    /// assert_eq!(c.commit_interval.as_millis(), 500);
    /// ```
    pub fn with_commit_interval(mut self, interval: Duration) -> Self {
        self.commit_interval = interval;
        self
    }

    /// Sets how long a revocation waits for in-flight records.
    ///
    /// ```
    /// # use std::time::Duration;
    /// let c = cqrs_kafka::LoopConfig::new(["t"]).with_revoke_flush_timeout(Duration::from_secs(3));
    /// assert_eq!(c.revoke_flush_timeout.as_secs(), 3);
    /// ```
    pub fn with_revoke_flush_timeout(mut self, timeout: Duration) -> Self {
        self.revoke_flush_timeout = timeout;
        self
    }

    /// Sets the pause after a consumer error.
    ///
    /// ```
    /// # use std::time::Duration;
    /// let c = cqrs_kafka::LoopConfig::new(["t"]).with_error_pause(Duration::from_millis(100));
    /// assert_eq!(c.error_pause.as_millis(), 100);
    /// ```
    pub fn with_error_pause(mut self, pause: Duration) -> Self {
        self.error_pause = pause;
        self
    }
}

/// A subscribed consumer ready to run: see the [crate] documentation.
pub struct ConsumerLoop {
    consumer: Arc<StreamConsumer<LoopContext>>,
    config: LoopConfig,
    status: Arc<LoopStatus>,
    stop: CancellationToken,
}

impl std::fmt::Debug for ConsumerLoop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsumerLoop")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl ConsumerLoop {
    /// Creates the consumer from `client` (bootstrap servers, group id, any librdkafka
    /// property) and subscribes. The loop owns offset storing: `enable.auto.offset.store`
    /// is forced off, and the commit timer (`enable.auto.commit`,
    /// `auto.commit.interval.ms`) is set from `config` where `client` does not set it.
    /// It stops when `shutdown` is cancelled.
    ///
    /// ```no_run
    /// # fn demo() -> Result<(), rdkafka::error::KafkaError> {
    /// let mut client = rdkafka::ClientConfig::new();
    /// client.set("bootstrap.servers", "127.0.0.1:9092").set("group.id", "demo");
    /// let shutdown = tokio_util::sync::CancellationToken::new();
    /// let consumer = cqrs_kafka::ConsumerLoop::subscribe(
    ///     client, cqrs_kafka::LoopConfig::new(["orders"]), std::sync::Arc::new(()), &shutdown)?;
    /// assert!(!consumer.status().is_assigned());
    /// # Ok(()) }
    /// ```
    pub fn subscribe(
        mut client: ClientConfig,
        config: LoopConfig,
        observer: Arc<dyn Observer>,
        shutdown: &CancellationToken,
    ) -> Result<Self, KafkaError> {
        if client.get("enable.auto.commit").is_none() {
            client.set("enable.auto.commit", "true");
        }
        if client.get("auto.commit.interval.ms").is_none() {
            client.set(
                "auto.commit.interval.ms",
                config.commit_interval.as_millis().max(1).to_string(),
            );
        }
        client.set("enable.auto.offset.store", "false");
        let status = Arc::new(LoopStatus::default());
        let stop = shutdown.child_token();
        let context = LoopContext {
            status: Arc::clone(&status),
            observer,
            flush_timeout: config.revoke_flush_timeout,
            stop: stop.clone(),
        };
        let consumer: StreamConsumer<LoopContext> = client.create_with_context(context)?;
        let topics: Vec<&str> = config.topics.iter().map(String::as_str).collect();
        consumer.subscribe(&topics)?;
        Ok(ConsumerLoop {
            consumer: Arc::new(consumer),
            config,
            status,
            stop,
        })
    }

    /// The loop's status: in-flight records, stuck work, assignment.
    ///
    /// ```no_run
    /// # fn demo(consumer: &cqrs_kafka::ConsumerLoop) {
    /// let status = consumer.status();
    /// println!("assigned: {}, in flight: {}", status.is_assigned(), status.in_flight());
    /// # }
    /// ```
    pub fn status(&self) -> Arc<LoopStatus> {
        Arc::clone(&self.status)
    }

    /// Consumes until shutdown (or a [`Halt`](crate::Halt) with an error): dispatches each
    /// record to the worker of its partition, then stops fetching, lets the workers settle
    /// what they hold, commits and returns.
    ///
    /// # Errors
    /// [`LoopError::Handler`] with the first error a handler halted with.
    ///
    /// ```no_run
    /// # async fn demo(consumer: cqrs_kafka::ConsumerLoop, handler: impl cqrs_kafka::Handler) {
    /// consumer.run(handler).await.ok();
    /// # }
    /// ```
    pub async fn run<H: Handler>(self, handler: H) -> Result<(), LoopError<H::Error>> {
        let sink: Arc<dyn OffsetSink> = self.consumer.clone();
        let flow: Arc<dyn PartitionFlow> = Arc::new(ConsumerFlow::new(Arc::clone(&self.consumer)));
        let records = self
            .consumer
            .stream()
            .map(|next| next.map(|message| Record::from_message(&message)));
        drive(
            records,
            sink,
            flow,
            handler,
            self.status,
            &self.config,
            self.stop,
        )
        .await
    }
}

/// The loop proper, over any record stream (the consumer's, or a test's).
pub(crate) async fn drive<H, S>(
    mut records: S,
    sink: Arc<dyn OffsetSink>,
    flow: Arc<dyn PartitionFlow>,
    handler: H,
    status: Arc<LoopStatus>,
    config: &LoopConfig,
    stop: CancellationToken,
) -> Result<(), LoopError<H::Error>>
where
    H: Handler,
    S: Stream<Item = Result<Record, KafkaError>> + Unpin,
{
    let shared = Arc::new(Shared {
        handler,
        sink: Arc::clone(&sink),
        status: Arc::clone(&status),
        batch: config.batch,
        stop: stop.clone(),
        failure: Mutex::new(None),
    });
    let workers = config.workers.max(1);
    let mut senders = Vec::with_capacity(workers);
    let mut handles = Vec::with_capacity(workers);
    for _ in 0..workers {
        let (tx, rx) = mpsc::channel(config.queue_capacity.max(1));
        senders.push(tx);
        handles.push(tokio::spawn(Arc::clone(&shared).work(rx)));
    }
    // A worker's held records are bounded by its queue's size.
    let hold_limit = config.queue_capacity.max(1);
    let mut dispatch = Dispatcher::new(senders, hold_limit, flow, Arc::clone(&status));
    loop {
        tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            room = dispatch.room(), if dispatch.held() > 0 => {
                dispatch.forget(&status.take_revoked());
                if dispatch.release(room).is_err() {
                    // A worker halted: the loop is stopping.
                    break;
                }
            }
            next = records.next() => match next {
                Some(Ok(record)) => {
                    // A revocation runs inside the poll that returned this record: forget
                    // the revoked partitions before it is routed.
                    dispatch.forget(&status.take_revoked());
                    if dispatch.offer(record).is_err() {
                        break;
                    }
                }
                Some(Err(e)) => {
                    if is_missing_topic(&e) {
                        tracing::debug!(error = %e, "subscribed topics not available yet");
                    } else {
                        tracing::warn!(error = %e, "kafka consumer error");
                    }
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        _ = tokio::time::sleep(config.error_pause) => {}
                    }
                }
                None => break,
            }
        }
    }
    if dispatch.held() > 0 {
        tracing::info!(
            records = dispatch.held(),
            "held records left for redelivery"
        );
    }
    tracing::info!("stopped fetching; settling in-flight batches");
    // From here on a revocation (the consumer closing) must not wait for the workers.
    stop.cancel();
    drop(dispatch);
    for handle in handles {
        if let Err(e) = handle.await {
            tracing::error!(error = %e, "a partition worker panicked");
        }
    }
    match sink.commit() {
        Ok(()) => tracing::info!("offsets committed"),
        // Nothing stored since the last automatic commit.
        Err(e) => tracing::info!(result = %e, "final commit"),
    }
    let failure = shared.failure.lock().ok().and_then(|mut f| f.take());
    match failure {
        Some(error) => Err(LoopError::Handler(error)),
        None => Ok(()),
    }
}
