//! The sync-service as a child process (`target/debug/sync-service`: `cargo build --bin
//! sync-service`; `cargo test --workspace --all-targets` builds it first), for tests that
//! SIGKILL it: spawn, kill, respawn, read its `/metrics`, stop it gracefully.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The sync-service binary: `SYNC_SERVICE_BIN`, else `<target>/debug/sync-service`.
pub fn binary() -> PathBuf {
    static BINARY: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BINARY.get_or_init(find_binary).clone()
}

fn find_binary() -> PathBuf {
    let root = cqrs_e2e::workspace_root();
    let path = std::env::var_os("SYNC_SERVICE_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let target = std::env::var_os("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| root.join("target"));
            target.join("debug").join("sync-service")
        });
    assert!(
        path.is_file(),
        "the sync-service binary {} is missing: build it with `cargo build --bin sync-service` \
         (or set SYNC_SERVICE_BIN)",
        path.display()
    );
    if let (Ok(bin), Some(src)) = (
        path.metadata().and_then(|m| m.modified()),
        newest_mtime(&root.join("sync-service/src")),
    ) && src > bin
    {
        eprintln!(
            "WARNING: {} is older than sync-service/src: run `cargo build --bin sync-service`",
            path.display()
        );
    }
    path
}

fn newest_mtime(dir: &Path) -> Option<std::time::SystemTime> {
    let mut newest = None;
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        let t = if path.is_dir() {
            newest_mtime(&path)
        } else {
            entry.metadata().and_then(|m| m.modified()).ok()
        };
        newest = newest.max(t);
    }
    newest
}

/// One sync-service process running `config` (killed when dropped, also when the test
/// panics, and its log tail printed then).
pub struct SyncProcess {
    name: String,
    child: Option<Child>,
    config: PathBuf,
    log: PathBuf,
    /// `ip:port` of its HTTP endpoints.
    pub listen: String,
}

impl SyncProcess {
    /// Writes `config_text` (with `{listen}` standing for a free `ip:port`) under a
    /// directory of the system's temp dir named after `dir`, and starts the service.
    pub fn start(dir: &str, name: &str, config_text: &str) -> Self {
        let dir = std::env::temp_dir().join(dir);
        std::fs::create_dir_all(&dir).unwrap();
        let listen = format!("127.0.0.1:{}", super::free_port());
        let config = dir.join(format!("{name}.toml"));
        std::fs::write(&config, config_text.replace("{listen}", &listen)).unwrap();
        let mut process = SyncProcess {
            name: name.to_owned(),
            child: None,
            log: dir.join(format!("{name}.log")),
            config,
            listen,
        };
        process.spawn();
        process
    }

    /// Starts the process again (after [`SyncProcess::kill`]).
    pub fn spawn(&mut self) {
        assert!(self.child.is_none(), "{} is already running", self.name);
        let log = File::options()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(binary())
            .args(["run", "--config"])
            .arg(&self.config)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary().display()));
        self.child = Some(child);
    }

    /// SIGKILL, then wait for the process to be gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Panics (with the log) if the process exited.
    pub fn assert_running(&mut self) {
        let child = self.child.as_mut().expect("not running");
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "sync-service {} exited with {status}; log tail:\n{}",
                self.name,
                self.log_tail(40)
            );
        }
    }

    /// The last `lines` lines of its log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = self.log_text();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("not running").id()
    }

    /// Its whole log.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Status and body of `GET path` on its HTTP endpoints, `None` when they do not answer.
    async fn get(&self, path: &str) -> Option<(u16, String)> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .unwrap();
        let response = client
            .get(format!("http://{}{path}", self.listen))
            .send()
            .await
            .ok()?;
        let status = response.status().as_u16();
        Some((status, response.text().await.unwrap_or_default()))
    }

    /// `/readyz` status, `None` when the endpoint does not answer.
    pub async fn readyz(&self) -> Option<u16> {
        self.get("/readyz").await.map(|r| r.0)
    }

    /// Sum of every sample of a metric family on `/metrics` (0 when absent or down).
    pub async fn metric(&self, name: &str) -> f64 {
        let Some((200, text)) = self.get("/metrics").await else {
            return 0.0;
        };
        text.lines()
            .filter(|l| {
                l.strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .fold(0.0, |sum, v| sum + v)
    }

    /// Messages consumed so far (`sync_changes_consumed_total`).
    pub async fn consumed(&self) -> f64 {
        self.metric("sync_changes_consumed_total").await
    }

    /// Waits until it consumed more than `above` messages (it owns partitions and makes
    /// progress); returns the count.
    pub async fn wait_consuming(&mut self, above: f64, timeout: Duration) -> f64 {
        let deadline = Instant::now() + timeout;
        loop {
            self.assert_running();
            let consumed = self.consumed().await;
            if consumed > above {
                return consumed;
            }
            assert!(
                Instant::now() < deadline,
                "{} consumed nothing within {timeout:?}; log tail:\n{}",
                self.name,
                self.log_tail(30)
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Graceful stop (SIGTERM); asserts exit 0.
    pub fn terminate(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!(
                    "{} did not stop within 30 s of SIGTERM:\n{}",
                    self.name,
                    self.log_tail(30)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        assert!(
            status.success(),
            "{} exited with {status} after SIGTERM:\n{}",
            self.name,
            self.log_tail(30)
        );
    }
}

impl Drop for SyncProcess {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!(
                "---- log tail of sync-service {} ({}) ----\n{}",
                self.name,
                self.log.display(),
                self.log_tail(40)
            );
        }
    }
}
