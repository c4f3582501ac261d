//! The runtime every Docker call of the crate runs on.
//!
//! `#[tokio::test]` gives each test a runtime of its own that ends with the test, while the
//! shared stack lives as long as the process. The Docker client, the log followers and the
//! container handles keep tasks and connections on the runtime that made them, so they all
//! live on this one, process-wide runtime; callers await its tasks from any runtime.

use std::future::Future;
use std::sync::OnceLock;

use tokio::runtime::{Handle, Runtime};

use crate::StackError;

static RUNTIME: OnceLock<Result<Runtime, String>> = OnceLock::new();

/// The process-wide runtime (two workers: Docker calls wait, they do not compute).
pub(crate) fn handle() -> Result<Handle, StackError> {
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name("cqrs-testcontainers")
                .enable_all()
                .build()
                .map_err(|e| e.to_string())
        })
        .as_ref()
        .map(|rt| rt.handle().clone())
        .map_err(|e| StackError::Config(format!("cannot start the crate's runtime: {e}")))
}

/// Runs `future` on the crate's runtime and waits for it from the caller's.
pub(crate) async fn run<F, T>(future: F) -> Result<T, StackError>
where
    F: Future<Output = Result<T, StackError>> + Send + 'static,
    T: Send + 'static,
{
    handle()?
        .spawn(future)
        .await
        .map_err(|e| StackError::Config(format!("a task of the crate's runtime failed: {e}")))?
}
