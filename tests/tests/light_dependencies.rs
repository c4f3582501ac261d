//! A projection crate of a user (`tests/user-projection`: typed projections and read models)
//! compiles without the sync-service's Kafka, HTTP and telemetry stack: its dependency tree,
//! as `cargo tree` prints it, holds none of those crates.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

/// Crates a projection crate must not pull in (the sync-service's runtime).
const FORBIDDEN: [&str; 10] = [
    "rdkafka",
    "rdkafka-sys",
    "axum",
    "hyper",
    "tonic",
    "opentelemetry",
    "opentelemetry-otlp",
    "prometheus-client",
    "cqrs-toolkit-sync",
    "cqrs-toolkit-kafka",
];

#[test]
fn a_projection_crate_builds_without_kafka_http_or_telemetry() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .current_dir(cqrs_e2e::workspace_root())
        .args([
            "tree",
            "--offline",
            "-p",
            "cqrs-user-projection",
            "-e",
            "normal",
            "--prefix",
            "none",
        ])
        .output()
        .expect("cargo tree runs");
    assert!(
        out.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tree = String::from_utf8_lossy(&out.stdout);
    let crates: Vec<&str> = tree
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    // The tree is not empty: the crate and its light dependencies are there.
    for expected in [
        "cqrs-user-projection",
        "cqrs-toolkit-projection",
        "cqrs-toolkit-mongo",
        "cqrs-toolkit-core",
    ] {
        assert!(
            crates.contains(&expected),
            "{expected} missing from:\n{tree}"
        );
    }
    let found: Vec<&str> = crates
        .iter()
        .copied()
        .filter(|c| FORBIDDEN.contains(c))
        .collect();
    assert!(
        found.is_empty(),
        "heavy dependencies in a projection crate: {found:?}\n{tree}"
    );
}
