//! OpenBao paused (SIGSTOP) for 20 s while the leased credentials are still valid: the
//! command load keeps running, new connections still open with the current credential,
//! renewals are retried with backoff (warning + metric) and succeed once Vault is back.
//!
//! `cargo test -p cqrs-toolkit-postgres --features vault --test vault_pause`
//!
//! Pauses the stack's shared OpenBao for 20 s: run it alone.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod vault_support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use cqrs_vault::LeaseOptions;
use tokio::time::Instant;
use vault_support::{run_load, setup};

/// Sends SIGCONT on drop, so a failing test never leaves OpenBao stopped.
struct Paused(String);

impl Paused {
    fn pause() -> Paused {
        let pid_file = std::env::var("CQRS_STATE_DIR")
            .map(|d| format!("{d}/run/vault.pid"))
            .unwrap_or_else(|_| {
                concat!(env!("CARGO_MANIFEST_DIR"), "/../.stack/run/vault.pid").into()
            });
        // The stack of another checkout may be serving this one (`up` reuses what already
        // answers): then find the dev server by its command line.
        let pid = std::fs::read_to_string(&pid_file)
            .map(|p| p.trim().to_owned())
            .or_else(|e| {
                let out = std::process::Command::new("pgrep")
                    .args(["-o", "-f", "bao server -dev"])
                    .output()
                    .map_err(|_| e)?;
                let pid = String::from_utf8_lossy(&out.stdout).trim().to_owned();
                if pid.is_empty() {
                    Err(std::io::Error::other("no OpenBao dev server process"))
                } else {
                    Ok(pid)
                }
            })
            .unwrap_or_else(|e| {
                panic!("OpenBao pid file {pid_file}: {e} (is the local stack up?)")
            });
        signal("-STOP", &pid);
        Paused(pid)
    }
}

impl Drop for Paused {
    fn drop(&mut self) {
        signal("-CONT", &self.0);
    }
}

fn signal(sig: &str, pid: &str) {
    let status = std::process::Command::new("kill")
        .args([sig, pid])
        .status()
        .expect("kill");
    assert!(status.success(), "kill {sig} {pid} failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn vault_paused_20s_while_credentials_valid_no_failure() {
    // Lease 30 s (renewal due at 20 s), token 30 s: both renewals fall into the pause.
    let env = setup("pause", "30s", "10m", "30s", "10m").await;
    let options = LeaseOptions {
        revoke_grace: Duration::from_secs(2),
        check_interval: Some(Duration::from_secs(5)),
        ..LeaseOptions::default()
    };
    let pg = Arc::new(env.pool(options, 4).await);
    pg.pool().migrate().await.unwrap();
    let first = pg.lease().current();
    let unreachable_before = env.vault.metrics().unreachable_total();

    let stop = Arc::new(AtomicBool::new(false));
    let load = tokio::spawn(run_load(
        pg.clone(),
        3,
        Duration::from_millis(20),
        stop.clone(),
    ));
    tokio::time::sleep(Duration::from_secs(2)).await;

    let paused_at = Instant::now();
    let paused = Paused::pause();
    // Mid-pause, make the pool open new connections: they log in with the current
    // credential, which PostgreSQL still accepts.
    tokio::time::sleep(Duration::from_secs(10)).await;
    pg.pool().retire_connections();
    tokio::time::sleep(Duration::from_secs(20).saturating_sub(paused_at.elapsed())).await;
    drop(paused);
    let pause = paused_at.elapsed();
    let unreachable = env.vault.metrics().unreachable_total() - unreachable_before;

    // Back: the retried renewals succeed with the same lease.
    let renewals_at_resume = env.vault.metrics().lease_renewals.get();
    let deadline = Instant::now() + Duration::from_secs(8);
    while env.vault.metrics().lease_renewals.get() == renewals_at_resume
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::SeqCst);
    let report = load.await.unwrap();
    eprintln!(
        "paused {pause:?}: {} ok, {} failed, {unreachable} unreachable Vault requests, session users {:?}",
        report.ok, report.failed, report.session_users
    );
    assert_eq!(
        report.failed,
        0,
        "{:?}",
        &report.errors[..report.errors.len().min(10)]
    );
    assert!(report.ok > 200);
    assert!(
        unreachable >= 1,
        "the metric counts the failed Vault requests"
    );
    assert!(
        env.vault.metrics().lease_renewals.get() > renewals_at_resume,
        "the lease is renewed once Vault is back"
    );
    assert_eq!(
        pg.lease().current().username,
        first.username,
        "no rotation needed"
    );
    let logs = env.logs.contents();
    assert!(logs.contains("Vault unreachable"), "a warning is logged");
    let pg = Arc::try_unwrap(pg).expect("load finished");
    pg.shutdown().await.unwrap();
    let token = env.vault.token();
    env.logs.assert_absent(&[
        first.password.expose(),
        &env.secret_id,
        token.expose(),
        env.admin.token().expose(),
    ]);
}
