//! `/healthz` (liveness), `/readyz` (partitions assigned, MongoDB answering, no work stuck)
//! and `/metrics` (Prometheus text).

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use cqrs_kafka::LoopStatus;
use tokio_util::sync::CancellationToken;

use crate::pipeline::Pipeline;
use crate::service::ServiceError;

/// How long work may wait without any batch settling before `/readyz` reports stuck.
const STUCK_AFTER: Duration = Duration::from_secs(60);

/// What the endpoints read.
#[derive(Clone)]
pub(crate) struct HttpState {
    pub(crate) pipeline: Arc<Pipeline>,
    pub(crate) status: Arc<LoopStatus>,
}

/// Serves the endpoints on `listen` until `stop` (none when `listen` is empty).
pub(crate) async fn serve(
    listen: &str,
    state: HttpState,
    stop: CancellationToken,
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
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await;
        if let Err(e) = served {
            tracing::warn!(error = %e, "http endpoint stopped");
        }
    })))
}

/// Ready: partitions assigned, MongoDB answering, nothing stuck.
async fn ready(State(state): State<HttpState>) -> (StatusCode, &'static str) {
    if !state.status.is_assigned() {
        return (StatusCode::SERVICE_UNAVAILABLE, "no partitions assigned");
    }
    if !state.pipeline.writer.is_healthy() {
        return (StatusCode::SERVICE_UNAVAILABLE, "mongodb unavailable");
    }
    if state.status.stuck(STUCK_AFTER) {
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
