//! What the crate's tests share: the stack they ask for, waits, a PostgreSQL admin client.

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

/// A line on stderr that the test harness does not capture: timings show in `make test`.
pub fn report(line: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// The variable that makes a test run as the child of another (see [`rerun`]).
pub const CHILD: &str = "CQRS_TESTCONTAINERS_TEST_CHILD";

/// Runs `test` (its full path) of this very test binary in a process of its own, with
/// `env`: for what must happen in another process (it exits, it sees another engine).
pub fn rerun(test: &str, env: &[(&str, &str)]) -> std::process::Output {
    std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

/// `docker ARGS` (the engine's own client: an outside view of what exists).
pub fn docker(args: &[&str]) -> String {
    let out = std::process::Command::new("docker")
        .args(args)
        .output()
        .expect("no docker client (make docker-engine installs one)");
    assert!(
        out.status.success(),
        "docker {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Containers and networks carrying `label` (`key=value`), whatever their state.
pub fn labelled(label: &str) -> Vec<String> {
    let filter = format!("label={label}");
    let mut found = Vec::new();
    for (kind, args) in [
        ("container", ["ps", "-a", "-q"]),
        ("network", ["network", "ls", "-q"]),
    ] {
        let mut args = args.to_vec();
        args.extend(["--filter", filter.as_str()]);
        found.extend(docker(&args).lines().map(|id| format!("{kind} {id}")));
    }
    found
}
