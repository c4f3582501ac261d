//! The sync-service binary: one or more instances as child processes.

use super::*;

/// The binary cargo built with this bench (`SYNC_SERVICE_BIN` for another one).
pub(crate) fn release_binary() -> PathBuf {
    std::env::var_os("SYNC_SERVICE_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_sync-service")))
}

pub(crate) struct ChildGuard {
    pub(crate) child: Child,
    pub(crate) dir: PathBuf,
}

impl ChildGuard {
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        // SIGTERM first: the binary's graceful shutdown, and a wrapper such as valgrind
        // (`SYNC_SERVICE_BIN`) gets to write its output; SIGKILL after 30 s.
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        // `BENCH_SYNC_LOG` (a RUST_LOG filter for the binary) keeps its log to read.
        if std::env::var_os("BENCH_SYNC_LOG").is_some() {
            println!(
                "  sync-service log kept: {}",
                self.dir.join("sync.log").display()
            );
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

pub(crate) struct Instance<'a> {
    pub(crate) env: &'a Env,
    pub(crate) binary: &'a PathBuf,
    pub(crate) group: String,
    pub(crate) database: String,
    pub(crate) workers: usize,
}

impl Instance<'_> {
    pub(crate) fn start(&self, schema: &str, tables: &[&str]) -> ChildGuard {
        let topics: Vec<String> = tables
            .iter()
            .map(|t| format!("\"cqrs.{schema}.{t}\""))
            .collect();
        let projections: String = tables
            .iter()
            .map(|t| format!("[[projection]]\ntable = \"{schema}.{t}\"\ncollection = \"{t}\"\n"))
            .collect();
        let config = format!(
            r#"
[kafka]
bootstrap_servers = "{kafka}"
group_id = "{group}"
topics = [{topics}]
format = "avro"
session_timeout_ms = 6000

{properties}
[schema_registry]
url = "{registry}"

[mongodb]
uri = "{mongo}"
database = "{database}"

[batch]
max_size = {BATCH}
max_wait_ms = 20
workers = {workers}

[dead_letter]
topic = "{group}.dlq"

[http]
listen = ""
{projections}
"#,
            kafka = self.env.require("KAFKA_BOOTSTRAP_SERVERS"),
            registry = self.env.require("SCHEMA_REGISTRY_URL"),
            mongo = self.env.require("MONGODB_URI"),
            group = self.group,
            database = self.database,
            workers = self.workers,
            topics = topics.join(", "),
            properties = kafka_properties(),
        );
        let dir = std::env::temp_dir().join(format!("bench-ceilings-{}", short_id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("sync.toml"), config).unwrap();
        let log = std::fs::File::create(dir.join("sync.log")).unwrap();
        let child = Command::new(self.binary)
            .args(["run", "--config"])
            .arg(dir.join("sync.toml"))
            .env(
                "RUST_LOG",
                std::env::var("BENCH_SYNC_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap_or_else(|e| panic!("{}: {e}", self.binary.display()));
        ChildGuard { child, dir }
    }
}

/// `BENCH_KAFKA_PROPS="fetch.wait.max.ms=100,..."`: librdkafka properties for the
/// binary's consumer, to try settings without a rebuild.
pub(crate) fn kafka_properties() -> String {
    let Ok(props) = std::env::var("BENCH_KAFKA_PROPS") else {
        return String::new();
    };
    let lines: Vec<String> = props
        .split(',')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| format!("\"{}\" = \"{}\"", k.trim(), v.trim()))
        .collect();
    format!("[kafka.properties]\n{}\n", lines.join("\n"))
}

pub(crate) struct Ours {
    pub(crate) rate: Rate,
    pub(crate) cpu: f64,
    pub(crate) hwm_mb: f64,
    /// The machine and the servers over the run.
    pub(crate) around: String,
}

/// `instances` binaries in one group, `workers` each, on `load`'s topic.
pub(crate) async fn run_ours(
    env: &Env,
    mongo: &mongodb::Client,
    binary: &PathBuf,
    schema: &str,
    load: &Load,
    workers: usize,
    instances: usize,
) -> Ours {
    let id = short_id();
    let database = format!("bench_sync_{id}");
    let group = format!("bench-sync-{id}");
    let children: Vec<ChildGuard> = (0..instances)
        .map(|_| {
            Instance {
                env,
                binary,
                group: group.clone(),
                database: database.clone(),
                workers,
            }
            .start(schema, &[load.table])
        })
        .collect();
    let pids: Vec<u32> = children.iter().map(ChildGuard::pid).collect();
    // The physical collection behind the read model's view (tombstones included).
    let coll = mongo
        .database(&database)
        .collection::<Document>(&format!("{}__v1", load.table));
    let mut rss_peak = 0u64;
    // From the first document seen, as the rate.
    let mut window: Option<CpuWindow> = None;
    let rate = measure(&coll, load, Duration::from_secs(600), |visible| {
        if visible && window.is_none() {
            window = Some(CpuWindow::start());
        }
        for pid in &pids {
            rss_peak = rss_peak.max(memory_kb(*pid, "VmHWM:"));
        }
    })
    .await;
    let around = window.map_or_else(String::new, |w| w.report());
    let cpu: f64 = pids.iter().map(|p| cpu_secs(*p)).sum();
    let hwm = pids
        .iter()
        .map(|p| memory_kb(*p, "VmHWM:"))
        .max()
        .unwrap_or(0)
        .max(rss_peak);
    drop(children);
    let _ = mongo.database(&database).drop().await;
    assert!(
        rate.complete,
        "the sync-service did not finish {} within 600 s",
        load.name
    );
    Ours {
        rate,
        cpu,
        hwm_mb: hwm as f64 / 1024.0,
        around,
    }
}
