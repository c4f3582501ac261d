//! The sync-service embedded in an application or a test: started on a task of its own,
//! stopped (flushed and committed) on demand.

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::service::{ServiceError, SyncService};

/// A [`SyncService`] running on its own task ([`SyncService::spawn`]).
///
/// ```no_run
/// # async fn demo(service: sync_service::SyncService) -> Result<(), sync_service::ServiceError> {
/// let running = service.spawn();
/// // ... commands, reads ...
/// running.stop().await?; // stop fetching, flush, commit
/// # Ok(()) }
/// ```
pub struct RunningService {
    shutdown: CancellationToken,
    metrics: Metrics,
    handle: JoinHandle<Result<(), ServiceError>>,
}

impl SyncService {
    /// Runs the service on a task of its own (see [`SyncService::run`]).
    pub fn spawn(self) -> RunningService {
        let shutdown = CancellationToken::new();
        let metrics = self.metrics();
        let handle = tokio::spawn(self.run(shutdown.clone()));
        RunningService {
            shutdown,
            metrics,
            handle,
        }
    }
}

impl RunningService {
    /// Its metrics (also served on `/metrics` when `http.listen` is set).
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The token that stops it (cancelling it is what [`RunningService::stop`] does).
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// True once the service ended (stopped, or failed: [`RunningService::stop`] says why).
    pub fn is_finished(&self) -> bool {
        self.handle.is_finished()
    }

    /// Stops it gracefully and returns how it ended.
    pub async fn stop(self) -> Result<(), ServiceError> {
        self.shutdown.cancel();
        match self.handle.await {
            Ok(result) => result,
            Err(e) => Err(ServiceError::Task(e.to_string())),
        }
    }
}
