//! A user's crate, made outside the workspace the way the README says: `cargo new`, then
//! `cargo add --path <checkout>/cqrs-core` (and cqrs-postgres, cqrs-mongo), then an aggregate,
//! a command and a typed read model written against the crates' public paths
//! (`cqrs_core::`, `cqrs_postgres::`, `cqrs_mongo::`). It must type-check with nothing but
//! what the README's `cargo add` lines give it (issue 18: package names that are ours, code
//! paths that stay).
//!
//! `cargo check`, not `cargo build`: the point is the dependency names and the public API,
//! and checking skips code generation of the dependencies (a cold run takes 1-2 min, a warm
//! one seconds). Offline, with the workspace's lock file, so the crates resolve to the
//! versions the workspace already downloaded. Its target directory is
//! `target/fresh-crate`, kept between runs.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// The aggregate of cqrs-core's README, section 1, as a user copies it.
const ACCOUNT: &str = include_str!("../../cqrs-core/doc/readme_account.rs");

/// What the user writes beside it: the wiring of the README's quickstart.
const SERVICE: &str = r#"
mod account;
pub use account::{Account, AccountCommand};

use cqrs_core::{CommandHandler, CommandMetadata, SourceVersion};
use cqrs_mongo::{MongoClient, ReadModel};
use cqrs_postgres::{PgPool, PostgresConfig, PostgresStore};
use serde::{Deserialize, Serialize};

/// The typed read model of an account.
#[derive(Debug, Serialize, Deserialize, ReadModel)]
#[read_model(collection = "balances")]
pub struct Balance {
    #[serde(rename = "_id")]
    pub id: String,
    pub balance: i64,
}

/// Opens an account on PostgreSQL, writes its read model and reads it back.
pub async fn open_and_read(
    database_url: &str,
    mongodb_uri: &str,
) -> Result<Option<i64>, Box<dyn std::error::Error>> {
    let pool = PgPool::new(&PostgresConfig::from_url(database_url, "accounts")?)?;
    pool.migrate().await?;
    let accounts = CommandHandler::new(PostgresStore::<Account>::state_stored(&pool)?);
    let done = accounts
        .execute("acc-1", &AccountCommand::Open, CommandMetadata::new())
        .await??;
    let balances = MongoClient::from_uri(mongodb_uri).await?.repository::<Balance>();
    let balance = Balance { id: "acc-1".into(), balance: 0 };
    balances
        .replace(&balance, SourceVersion::new(done.consistency_token().version))
        .await?;
    Ok(balances.get("acc-1").await?.map(|v| v.document.balance))
}
"#;

fn run(dir: &Path, target: &Path, args: &[&str]) {
    let output = Command::new(env!("CARGO"))
        .args(args)
        .current_dir(dir)
        .env("CARGO_TARGET_DIR", target)
        // The workspace's own settings must not leak into the user's crate.
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_MANIFEST_DIR")
        .output()
        .unwrap_or_else(|e| panic!("cargo {args:?}: {e}"));
    assert!(
        output.status.success(),
        "cargo {args:?} failed in {}:\n{}\n{}",
        dir.display(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn a_new_crate_builds_an_aggregate_and_a_typed_read_model_with_the_readme_lines() {
    let root = cqrs_e2e::workspace_root();
    let target: PathBuf = root.join("target").join("fresh-crate");
    // Outside the workspace, so that cargo does not take the crate for a member of it.
    let parent = std::env::temp_dir().join(format!("cqrs-fresh-crate-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&parent);
    std::fs::create_dir_all(&parent).expect("a temporary directory");
    let dir = parent.join("fresh-service");
    run(
        &parent,
        &target,
        &[
            "new",
            "--lib",
            "--vcs",
            "none",
            "--offline",
            "fresh-service",
        ],
    );
    std::fs::copy(root.join("Cargo.lock"), dir.join("Cargo.lock")).expect("the lock file");
    for krate in ["cqrs-core", "cqrs-postgres", "cqrs-mongo"] {
        let path = root.join(krate);
        run(
            &dir,
            &target,
            &[
                "add",
                "--offline",
                "--path",
                path.to_str().expect("a UTF-8 path"),
            ],
        );
    }
    run(
        &dir,
        &target,
        &["add", "--offline", "serde", "--features", "derive"],
    );
    run(&dir, &target, &["add", "--offline", "thiserror"]);
    let manifest = std::fs::read_to_string(dir.join("Cargo.toml")).unwrap();
    for package in [
        "cqrs-toolkit-core",
        "cqrs-toolkit-postgres",
        "cqrs-toolkit-mongo",
    ] {
        assert!(
            manifest.contains(package),
            "{package} not added:\n{manifest}"
        );
    }
    std::fs::write(dir.join("src/account.rs"), ACCOUNT).unwrap();
    std::fs::write(dir.join("src/lib.rs"), SERVICE).unwrap();
    run(&dir, &target, &["check", "--offline", "--all-targets"]);
    let _ = std::fs::remove_dir_all(&parent);
}
