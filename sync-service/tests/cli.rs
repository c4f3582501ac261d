//! The `sync-service` binary: `check-config` names bad keys; `run` serves health and
//! metrics, becomes ready on the real stack, and exits 0 on SIGTERM after flushing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cqrs_test_support::env::require;
use cqrs_test_support::net::free_port;

const BIN: &str = env!("CARGO_BIN_EXE_sync-service");

fn write_config(dir: &tempfile::TempDir, text: &str) -> std::path::PathBuf {
    let path = dir.path().join("sync.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn config_text(listen: &str, group: &str) -> String {
    format!(
        r#"
[kafka]
bootstrap_servers = "{kafka}"
group_id = "{group}"
topics = ["__debezium-heartbeat.cqrs"]

[schema_registry]
url = "{registry}"

[mongodb]
uri = "{mongo}"
database = "sync_cli_{group}"

[http]
listen = "{listen}"

[[projection]]
table = "shop.orders"
collection = "orders"
"#,
        kafka = require("KAFKA_BOOTSTRAP_SERVERS"),
        registry = require("SCHEMA_REGISTRY_URL"),
        mongo = require("MONGODB_URI"),
    )
}

#[test]
fn check_config_accepts_a_valid_file_and_names_the_bad_key() {
    let dir = tempfile::tempdir().unwrap();
    let good = write_config(&dir, &config_text("127.0.0.1:0", "g"));
    let out = Command::new(BIN)
        .args(["check-config", "--config"])
        .arg(&good)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("configuration is valid"));

    let bad = write_config(
        &dir,
        &config_text("127.0.0.1:0", "g").replace("collection = \"orders\"", "collection = \"\""),
    );
    let out = Command::new(BIN)
        .args(["check-config", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("projection[0].collection"), "{stderr}");

    // An environment override is validated too.
    let out = Command::new(BIN)
        .args(["check-config", "--config"])
        .arg(&good)
        .env("SYNC__BATCH__MAX_SIZE", "lots")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("batch.max_size"));
}

fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, response))
}

#[test]
fn run_serves_health_becomes_ready_and_stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let group = format!("cli{}", std::process::id());
    let config = write_config(&dir, &config_text(&addr, &group));
    let mut child = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&config)
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    let deadline = Instant::now() + Duration::from_secs(60);
    let mut ready = false;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            BufReader::new(child.stderr.take().unwrap())
                .lines()
                .for_each(|l| err.push_str(&l.unwrap_or_default()));
            panic!(
                "sync-service exited early with {status} (is the stack up? `make infrastructure-up`): {err}"
            );
        }
        if let Some((200, _)) = http_get(&addr, "/readyz") {
            ready = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        ready,
        "sync-service did not become ready within 60 s on {addr}"
    );
    assert_eq!(http_get(&addr, "/healthz").map(|r| r.0), Some(200));
    let (status, metrics) = http_get(&addr, "/metrics").unwrap();
    assert_eq!(status, 200);
    assert!(metrics.contains("sync_batch_size"), "{metrics}");
    assert!(
        metrics.contains("sync_end_to_end_latency_seconds"),
        "{metrics}"
    );

    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "sync-service did not stop within 30 s of SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut logs = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .lines()
        .for_each(|l| {
            logs.push_str(&l.unwrap_or_default());
            logs.push('\n');
        });
    assert!(status.success(), "exit status {status}; logs:\n{logs}");
    assert!(logs.contains("sync-service stopped"), "{logs}");
    // Logs are structured JSON lines.
    assert!(logs.lines().all(|l| l.starts_with('{')), "{logs}");
}

/// The `sync-service ...` commands of the README, as written there: optional `[--flag v]`
/// parts filled in, `sync.toml` pointing at a real config, `# comments` dropped.
fn readme_commands() -> Vec<Vec<String>> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let mut commands = Vec::new();
    let mut in_sh = false;
    for line in readme.lines() {
        if line.starts_with("```") {
            in_sh = line == "```sh";
            continue;
        }
        let Some(rest) = line.strip_prefix("sync-service ").filter(|_| in_sh) else {
            continue;
        };
        let rest = rest.split(" # ").next().unwrap_or(rest);
        let filled = rest
            .replace(['[', ']'], "")
            .replace("topic/partition/offset", "cqrs.none.none/0/0")
            .replace("--id ...", "--id cqrs.none.none/0/0")
            .replace("--topic T", "--topic cqrs.none.none");
        commands.push(filled.split_whitespace().map(str::to_owned).collect());
    }
    commands
}

#[test]
fn the_readme_cli_commands_run_as_written() {
    let commands = readme_commands();
    let verbs: Vec<String> = commands.iter().map(|c| c[..2].join(" ")).collect();
    assert_eq!(
        verbs,
        ["dlq list", "dlq replay", "dlq skip"],
        "the README's CLI section changed: update this test with it"
    );
    let dir = tempfile::tempdir().unwrap();
    let group = format!("cli-readme-{}", std::process::id());
    let config = write_config(&dir, &config_text("", &group));
    for args in commands {
        let args: Vec<String> = args
            .into_iter()
            .map(|a| {
                if a == "sync.toml" {
                    config.display().to_string()
                } else {
                    a
                }
            })
            .collect();
        assert!(
            args.iter().any(|a| a == "--config"),
            "README command without --config: {args:?}"
        );
        let out = Command::new(BIN).args(&args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "`sync-service {}` failed: {stderr}",
            args.join(" ")
        );
        assert!(!stderr.contains("unexpected argument"), "{stderr}");
    }
    // The other order keeps working.
    let out = Command::new(BIN)
        .args(["dlq", "--config"])
        .arg(&config)
        .arg("list")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("0 pending"));
}

#[test]
fn rebuild_names_what_it_cannot_rebuild_and_reports_status() {
    let dir = tempfile::tempdir().unwrap();
    let group = format!("rebuild-{}", std::process::id());
    let path = write_config(&dir, &config_text("", &group));
    let run = |args: &[&str]| {
        let out = Command::new(BIN)
            .arg("rebuild")
            .args(args)
            .arg("--config")
            .arg(&path)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    // Not a collection of the mappings: the plan names the fix.
    let (ok, _, err) = run(&["nope"]);
    assert!(!ok);
    assert!(
        err.contains("no [[projection]] writes read model \"nope\""),
        "{err}"
    );
    // A known read model, but no signal connection configured: refused before anything.
    let (ok, _, err) = run(&["orders"]);
    assert!(!ok);
    assert!(
        err.contains("rebuild.signal_database_url is not set"),
        "{err}"
    );
    // Never rebuilt: --status says so.
    let (ok, _, err) = run(&["orders", "--status"]);
    assert!(!ok);
    assert!(err.contains("orders was never rebuilt"), "{err}");
    // Options that contradict each other are refused by the parser.
    let (ok, _, err) = run(&["orders", "--cancel", "--detach"]);
    assert!(!ok);
    assert!(err.contains("cannot be used with"), "{err}");
}
