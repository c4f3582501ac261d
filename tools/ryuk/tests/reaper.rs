//! The stand-in against the real engine: what a filter matches goes once the client is
//! gone (after the reconnection timeout), and nothing goes without a client. Needs a Docker
//! engine (`make docker-engine`); fails, never skips, without one.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cqrs_test_support::net::free_port;

fn docker(args: &[&str]) -> String {
    let out = Command::new("docker")
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

fn reaper(port: u16, connection_timeout: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_ryuk-standin"))
        .env("RYUK_PORT", port.to_string())
        .env("RYUK_RECONNECTION_TIMEOUT", "1s")
        .env("RYUK_CONNECTION_TIMEOUT", connection_timeout)
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

fn wait_exit(child: &mut Child, within: Duration) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(
            start.elapsed() < within,
            "the reaper did not exit within {within:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Labelled objects: a network, a volume, and a container on that network when the engine
/// has any image to make one from (said by the result).
fn objects(label: &str, name: &str) -> bool {
    docker(&["info", "--format", "{{.ServerVersion}}"]);
    docker(&["network", "create", "--label", label, name]);
    docker(&["volume", "create", "--label", label, name]);
    let image = docker(&["images", "--format", "{{.Repository}}:{{.Tag}}"]);
    let image = image.lines().find(|i| !i.contains("<none>"));
    if let Some(image) = image {
        docker(&[
            "create",
            "--label",
            label,
            "--network",
            name,
            "--name",
            name,
            image,
            "true",
        ]);
    }
    image.is_some()
}

fn left(label: &str) -> Vec<String> {
    let mut left = Vec::new();
    let filter = format!("label={label}");
    for kind in [
        &["ps", "-a", "-q"][..],
        &["network", "ls", "-q"],
        &["volume", "ls", "-q"],
    ] {
        let mut args = kind.to_vec();
        args.extend(["--filter", filter.as_str()]);
        left.extend(docker(&args).lines().map(str::to_owned));
    }
    left
}

#[test]
fn removes_what_the_filters_match_once_the_client_is_gone() {
    let run = format!("{}", std::process::id());
    let label = format!("org.cqrs-toolkit.ryuk-test={run}");
    let name = format!("ryuk-standin-test-{run}");
    let with_container = objects(&label, &name);
    let port = free_port();
    let mut child = reaper(port, "30s");

    let start = Instant::now();
    let stream = loop {
        match TcpStream::connect(("127.0.0.1", port)) {
            Ok(s) => break s,
            Err(e) => {
                assert!(
                    start.elapsed() < Duration::from_secs(10),
                    "reaper not listening: {e}"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    };
    let mut writer = stream.try_clone().unwrap();
    writeln!(writer, "label={label}").unwrap();
    let mut ack = String::new();
    BufReader::new(&stream).read_line(&mut ack).unwrap();
    assert_eq!(ack, "ACK\n");
    // while the client is connected, nothing goes
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(left(&label).len(), 2 + usize::from(with_container));
    drop((writer, stream));

    let status = wait_exit(&mut child, Duration::from_secs(30));
    assert!(status.success(), "{status}");
    assert!(left(&label).is_empty(), "left behind: {:?}", left(&label));
}

#[test]
fn exits_without_removing_anything_when_no_client_comes() {
    let run = format!("{}-idle", std::process::id());
    let label = format!("org.cqrs-toolkit.ryuk-test={run}");
    let name = format!("ryuk-standin-test-{run}");
    docker(&["network", "create", "--label", &label, &name]);
    let mut child = reaper(free_port(), "1s");
    let status = wait_exit(&mut child, Duration::from_secs(20));
    assert!(status.success(), "{status}");
    assert_eq!(left(&label).len(), 1, "the network must stay");
    docker(&["network", "rm", &name]);
}
