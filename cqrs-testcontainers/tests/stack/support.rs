//! What the crate's tests share: the stack they ask for, waits, a PostgreSQL admin client.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::future::Future;
use std::time::{Duration, Instant};

use cqrs_testcontainers::CqrsStack;

/// The stack of this test binary: every service, Vault included. A test that needs the
/// engine fails here, loudly, when none answers.
pub async fn stack() -> CqrsStack {
    CqrsStack::builder()
        .with_vault()
        .shared()
        .await
        .unwrap_or_else(|e| panic!("the test stack did not start: {e}"))
}

/// Retries `probe` until it returns `Ok`, failing with its last error after `timeout`.
pub async fn until<T, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let start = Instant::now();
    loop {
        match probe().await {
            Ok(v) => return v,
            Err(e) if start.elapsed() >= timeout => panic!("{what}: not after {timeout:?}: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// A PostgreSQL client on the stack's admin login.
pub async fn pg(stack: &CqrsStack) -> tokio_postgres::Client {
    let (client, connection) =
        tokio_postgres::connect(&stack.endpoints().database_url(), tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|e| panic!("PostgreSQL of the stack: {e}"));
    tokio::spawn(connection);
    client
}

/// GET `url` as JSON.
pub async fn get_json(url: &str) -> Result<serde_json::Value, String> {
    let response = reqwest::get(url).await.map_err(|e| format!("{url}: {e}"))?;
    let status = response.status();
    let body = response.text().await.map_err(|e| format!("{url}: {e}"))?;
    if !status.is_success() {
        return Err(format!("{url}: HTTP {status}: {body}"));
    }
    serde_json::from_str(&body).map_err(|e| format!("{url}: {e}: {body}"))
}
