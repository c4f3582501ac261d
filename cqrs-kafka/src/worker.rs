//! A partition worker: takes the records of its partitions in order, groups them into
//! batches, hands each batch to the [`Handler`] and stores the offsets of what settled.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::offsets::{OffsetSink, next_offsets};
use crate::{LoopStatus, Record};

/// What a handler does with a batch: settle every record (apply it, skip it,
/// dead-letter it...) or [`Halt`].
///
/// The records of one partition come in order, in consecutive batches of one worker; a
/// batch may hold several partitions. The loop stores a batch's offsets only after
/// `handle` returned, and only up to what it settled.
///
/// ```
/// use cqrs_kafka::{Halt, Handler, Record};
/// use tokio_util::sync::CancellationToken;
///
/// struct Print;
/// impl Handler for Print {
///     type Error = std::convert::Infallible;
///     async fn handle(&self, batch: &[Record], _stop: &CancellationToken) -> Result<(), Halt<Self::Error>> {
///         for r in batch {
///             println!("{} {:?}", r.id(), r.value());
///         }
///         Ok(())
///     }
/// }
/// ```
pub trait Handler: Send + Sync + 'static {
    /// Why the handler made the loop stop.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Settles `batch`, in order. `stop` is cancelled on shutdown: a handler waiting on an
    /// unavailable dependency gives up with [`Halt::interrupted`].
    fn handle(
        &self,
        batch: &[Record],
        stop: &CancellationToken,
    ) -> impl Future<Output = Result<(), Halt<Self::Error>>> + Send;
}

/// A batch only partly settled: the worker stores the offsets of the first `settled`
/// records and stops; with an `error` the whole loop stops and returns it.
///
/// ```
/// let halt = cqrs_kafka::Halt::<std::io::Error>::interrupted(3);
/// assert_eq!(halt.settled, 3);
/// assert!(halt.error.is_none());
/// ```
#[derive(Debug)]
pub struct Halt<E> {
    /// Records of the batch settled, from the first.
    pub settled: usize,
    /// Why the loop must stop; `None` when it is stopping anyway (shutdown).
    pub error: Option<E>,
}

impl<E> Halt<E> {
    /// Shutdown came while the batch waited on a dependency: the rest of the batch is left
    /// to be redelivered.
    ///
    /// ```
    /// assert_eq!(cqrs_kafka::Halt::<std::io::Error>::interrupted(0).settled, 0);
    /// ```
    pub fn interrupted(settled: usize) -> Self {
        Halt {
            settled,
            error: None,
        }
    }

    /// The record after the first `settled` cannot be handled and the loop must stop.
    ///
    /// ```
    /// let halt = cqrs_kafka::Halt::failed(1, std::io::Error::other("poison"));
    /// assert!(halt.error.is_some());
    /// ```
    pub fn failed(settled: usize, error: E) -> Self {
        Halt {
            settled,
            error: Some(error),
        }
    }
}

/// Batch bounds: a batch is handed over when it holds `max_size` records or its first
/// record waited `max_wait` for more.
///
/// ```
/// let b = cqrs_kafka::BatchSettings::new(500, std::time::Duration::from_millis(20));
/// assert_eq!(b.max_size, 500);
/// assert_eq!(cqrs_kafka::BatchSettings::new(0, b.max_wait).max_size, 1);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchSettings {
    /// Most records per batch (at least 1).
    pub max_size: usize,
    /// Longest wait for a partial batch.
    pub max_wait: Duration,
}

impl BatchSettings {
    /// Bounds of a batch (`max_size` at least 1).
    pub fn new(max_size: usize, max_wait: Duration) -> Self {
        BatchSettings {
            max_size: max_size.max(1),
            max_wait,
        }
    }
}

/// Everything a worker shares with the loop.
pub(crate) struct Shared<H: Handler> {
    pub(crate) handler: H,
    pub(crate) sink: Arc<dyn OffsetSink>,
    pub(crate) status: Arc<LoopStatus>,
    pub(crate) batch: BatchSettings,
    pub(crate) stop: CancellationToken,
    /// The first handler error; the loop returns it.
    pub(crate) failure: Mutex<Option<H::Error>>,
}

impl<H: Handler> Shared<H> {
    /// Runs one worker until its queue closes or the handler halts.
    pub(crate) async fn work(self: Arc<Self>, mut rx: mpsc::Receiver<Record>) {
        while let Some(first) = rx.recv().await {
            let batch = self.collect(first, &mut rx).await;
            match self.handler.handle(&batch, &self.stop).await {
                Ok(()) => self.settle(&batch),
                Err(halt) => {
                    self.settle(&batch[..halt.settled.min(batch.len())]);
                    match halt.error {
                        Some(error) => {
                            if let Ok(mut failure) = self.failure.lock() {
                                failure.get_or_insert(error);
                            }
                            self.stop.cancel();
                        }
                        None => tracing::warn!(
                            records = batch.len() - halt.settled.min(batch.len()),
                            "batch left unsettled at shutdown; it will be redelivered"
                        ),
                    }
                    return;
                }
            }
        }
    }

    async fn collect(&self, first: Record, rx: &mut mpsc::Receiver<Record>) -> Vec<Record> {
        let mut batch = vec![first];
        let deadline = tokio::time::Instant::now() + self.batch.max_wait;
        while batch.len() < self.batch.max_size {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(record)) => batch.push(record),
                _ => break,
            }
        }
        batch
    }

    fn settle(&self, records: &[Record]) {
        if records.is_empty() {
            return;
        }
        // Fails for partitions revoked meanwhile: their new owner redelivers the records,
        // which the handlers make harmless (version guards, command ids).
        if let Err(e) = self.sink.store(&next_offsets(records)) {
            tracing::warn!(error = %e, "offsets not stored (partition revoked?)");
        }
        self.status.settled(records.len());
    }
}
