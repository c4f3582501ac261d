//! Against the stack's real OpenBao (fails loudly when it is not up): AppRole login with
//! token renewal and re-login, leased database credentials rotated and revoked, a KV
//! secret's new versions, Vault unreachable (through a proxy that can be switched off),
//! and no secret in logs, errors or `Debug`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use cqrs_test_support::vault::{FlakyProxy, LogCapture, TEST_CONNECTION, VaultAdmin};
use cqrs_vault::{
    Auth, DatabaseLease, KvOptions, KvSecret, LeaseOptions, RetryOptions, SecretSource,
    VaultClient, VaultConfig, VaultError,
};
use serde_json::json;
use tokio::time::Instant;

async fn admin() -> VaultAdmin {
    VaultAdmin::for_tests().await
}

/// An AppRole `vault-it-<name>` with short token TTLs, its files in a temp dir.
async fn approle(
    admin: &VaultAdmin,
    name: &str,
    ttl: &str,
    max: &str,
) -> (tempfile::TempDir, VaultConfig, String) {
    let dir = tempfile::tempdir().unwrap();
    let files = admin
        .create_approle(
            &format!("vault-it-{name}"),
            &["vault-it"],
            ttl,
            max,
            dir.path(),
        )
        .await
        .expect("approle");
    let config = VaultConfig::new(admin.address(), Auth::approle_files(&files.dir))
        .request_timeout(Duration::from_secs(2))
        .retry(RetryOptions {
            initial: Duration::from_millis(200),
            max: Duration::from_secs(2),
        });
    (dir, config, files.secret_id.expose().to_owned())
}

fn short_lease(grace_ms: u64) -> LeaseOptions {
    LeaseOptions {
        revoke_grace: Duration::from_millis(grace_ms),
        check_interval: Some(Duration::from_secs(1)),
        ..LeaseOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approle_token_is_renewed_then_replaced_before_max_ttl() {
    let logs = LogCapture::install();
    let admin = admin().await;
    let (_dir, config, secret_id) = approle(&admin, "token", "3s", "8s").await;
    let vault = VaultClient::connect(config).await.expect("login");
    let first = vault.token_info();
    assert_eq!(first.generation, 1);
    let first_token = vault.token().expose().to_owned();
    let mut tokens = vec![first_token];
    let deadline = Instant::now() + Duration::from_secs(12);
    while Instant::now() < deadline {
        // Requests keep working all along (the policy allows lease lookups: a 400 for an
        // unknown lease proves the token was accepted).
        let err = vault
            .write(
                "sys/leases/lookup",
                &json!({"lease_id": "database/creds/vault_it_x/nope"}),
            )
            .await
            .unwrap_err();
        assert_eq!(err.status(), Some(400), "{err}");
        let t = vault.token().expose().to_owned();
        if !tokens.contains(&t) {
            tokens.push(t);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let m = vault.metrics();
    assert!(
        m.token_renewals.get() >= 1,
        "renewals {}",
        m.token_renewals.get()
    );
    assert!(
        vault.token_info().generation >= 2,
        "{:?}",
        vault.token_info()
    );
    assert!(m.logins.get() >= 2);
    assert!(!format!("{vault:?}").contains(&tokens[0]));
    let mut secrets: Vec<&str> = tokens.iter().map(String::as_str).collect();
    secrets.push(&secret_id);
    secrets.push(admin.token().expose());
    logs.assert_absent(&secrets);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_lease_renews_rotates_and_revokes() {
    let logs = LogCapture::install();
    let admin = admin().await;
    admin
        .create_postgres_role(
            TEST_CONNECTION,
            "vault_it_lease",
            "svc_orders",
            "orders",
            // Renewals every ~1.3 s well before the 9 s cap forces a rotation, even on a
            // loaded machine.
            "2s",
            "9s",
        )
        .await
        .unwrap();
    let (_dir, config, secret_id) = approle(&admin, "lease", "1m", "10m").await;
    let vault = VaultClient::connect(config).await.unwrap();
    let lease = DatabaseLease::start(&vault, "vault_it_lease", short_lease(500))
        .await
        .unwrap();
    let first = lease.current();
    assert_eq!(first.serial, 1);
    let mut seen = vec![first.clone()];
    let mut rx = lease.subscribe();
    let deadline = Instant::now() + Duration::from_secs(30);
    while seen.len() < 3 && Instant::now() < deadline {
        if tokio::time::timeout(Duration::from_millis(500), rx.changed())
            .await
            .is_ok()
        {
            seen.push(rx.borrow_and_update().clone());
        }
    }
    assert!(seen.len() >= 3, "only {} credentials in 30 s", seen.len());
    // Renewed before being replaced at the cap. (Three credentials within 2 s and no
    // renewal were once seen here: lookups in a lease's last second answer `ttl: 0`,
    // which was taken for a revocation; see
    // `lookups_in_the_last_second_do_not_replace_a_live_lease`.)
    assert!(
        vault.metrics().lease_renewals.get() >= 2,
        "{} renewals",
        vault.metrics().lease_renewals.get()
    );
    // The replaced leases were revoked by us (grace 0.5 s), before their max TTL.
    tokio::time::sleep(Duration::from_secs(1)).await;
    for old in &seen[..seen.len() - 1] {
        let err = admin
            .write("sys/leases/lookup", &json!({"lease_id": old.lease_id()}))
            .await
            .unwrap_err();
        assert_eq!(err.status(), Some(400), "old lease still there: {err}");
    }
    assert!(vault.metrics().lease_revocations.get() >= 2);
    let debug = format!("{lease:?} {:?}", seen[0]);
    assert!(debug.contains(&seen[0].username));
    let current = lease.current();
    lease.shutdown().await.unwrap();
    let err = admin
        .write(
            "sys/leases/lookup",
            &json!({"lease_id": current.lease_id()}),
        )
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(400), "shutdown must revoke: {err}");
    let mut secrets: Vec<&str> = seen.iter().map(|c| c.password.expose()).collect();
    for c in &seen {
        assert!(!debug.contains(c.password.expose()));
    }
    let token = vault.token();
    secrets.extend([secret_id.as_str(), token.expose(), admin.token().expose()]);
    logs.assert_absent(&secrets);
}

/// A lease with less than a second left is still there: Vault's lookup answers `ttl: 0`
/// for it (whole seconds, rounded down). Taking that for a revoked lease replaced every
/// short lease at its first lookup in its last second, before its renewal at 2/3: three
/// credentials within 2 s and no renewal, as once seen in `database_lease_renews_...`.
/// Here frequent lookups (every 200 ms) run across several renewals of a 2 s lease: the
/// credential must be renewed, never replaced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookups_in_the_last_second_do_not_replace_a_live_lease() {
    let logs = LogCapture::install();
    let admin = admin().await;
    admin
        .create_postgres_role(
            TEST_CONNECTION,
            "vault_it_lastsecond",
            "svc_orders",
            "orders",
            "2s",
            "1m",
        )
        .await
        .unwrap();
    let (_dir, config, secret_id) = approle(&admin, "lastsecond", "1m", "10m").await;
    let vault = VaultClient::connect(config).await.unwrap();
    let options = LeaseOptions {
        check_interval: Some(Duration::from_millis(200)),
        ..short_lease(500)
    };
    let lease = DatabaseLease::start(&vault, "vault_it_lastsecond", options)
        .await
        .unwrap();
    let first = lease.current();
    tokio::time::sleep(Duration::from_secs(6)).await;
    let current = lease.current();
    let (issued, renewed) = (
        vault.metrics().lease_rotations.get(),
        vault.metrics().lease_renewals.get(),
    );
    lease.shutdown().await.unwrap();
    assert_eq!(
        (current.serial, issued),
        (1, 1),
        "a live lease was replaced ({renewed} renewals)"
    );
    assert!(renewed >= 3, "only {renewed} renewals in 6 s");
    assert_eq!(current.username, first.username);
    logs.assert_absent(&[
        first.password.expose(),
        secret_id.as_str(),
        vault.token().expose(),
    ]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_revoked_from_outside_is_replaced() {
    let logs = LogCapture::install();
    let admin = admin().await;
    admin
        .create_postgres_role(
            TEST_CONNECTION,
            "vault_it_revoked",
            "svc_orders",
            "orders",
            "1m",
            "10m",
        )
        .await
        .unwrap();
    let (_dir, config, secret_id) = approle(&admin, "revoked", "1m", "10m").await;
    let vault = VaultClient::connect(config).await.unwrap();
    let lease = DatabaseLease::start(&vault, "vault_it_revoked", short_lease(500))
        .await
        .unwrap();
    let first = lease.current();
    admin.revoke_lease(first.lease_id()).await.unwrap();
    let mut rx = lease.subscribe();
    // Noticed by the periodic lookup (1 s) without anyone asking.
    tokio::time::timeout(Duration::from_secs(4), rx.changed())
        .await
        .expect("replaced within the check interval")
        .unwrap();
    let second = rx.borrow_and_update().clone();
    assert_ne!(second.username, first.username);
    // And at once on request.
    admin.revoke_lease(second.lease_id()).await.unwrap();
    let started = Instant::now();
    lease.request_check();
    tokio::time::timeout(Duration::from_secs(2), rx.changed())
        .await
        .expect("replaced on request")
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(2));
    let third = lease.current();
    let forced = lease.rotate_now().await.unwrap();
    assert_ne!(forced.username, third.username);
    lease.shutdown().await.unwrap();
    let token = vault.token();
    logs.assert_absent(&[
        first.password.expose(),
        second.password.expose(),
        third.password.expose(),
        forced.password.expose(),
        &secret_id,
        token.expose(),
    ]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_secret_new_versions_are_picked_up() {
    let logs = LogCapture::install();
    let admin = admin().await;
    let path = "vault_it/kv/mongodb";
    let v1 = admin
        .kv_put(
            "secret",
            path,
            &json!({"username": "u1", "password": "kv-pass-one-1234"}),
        )
        .await
        .unwrap();
    let (_dir, config, secret_id) = approle(&admin, "kv", "1m", "10m").await;
    let vault = VaultClient::connect(config).await.unwrap();
    let secret = KvSecret::start(
        &vault,
        path,
        KvOptions {
            poll_interval: Duration::from_millis(300),
            ..KvOptions::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(secret.current().version, v1);
    assert_eq!(secret.current().get("username").unwrap().expose(), "u1");
    let mut rx = secret.subscribe();
    let v2 = admin
        .kv_put(
            "secret",
            path,
            &json!({"username": "u2", "password": "kv-pass-two-5678"}),
        )
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(3), rx.changed())
        .await
        .expect("new version within 3 s")
        .unwrap();
    let current = rx.borrow_and_update().clone();
    assert_eq!(current.version, v2);
    assert_eq!(
        current.get("password").unwrap().expose(),
        "kv-pass-two-5678"
    );
    assert!(!format!("{secret:?} {current:?}").contains("kv-pass"));
    secret.stop().await;
    let token = vault.token();
    logs.assert_absent(&[
        "kv-pass-one-1234",
        "kv-pass-two-5678",
        &secret_id,
        token.expose(),
    ]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_vault_keeps_credentials_retries_and_counts() {
    let logs = LogCapture::install();
    let admin = admin().await;
    admin
        .create_postgres_role(
            TEST_CONNECTION,
            "vault_it_flaky",
            "svc_orders",
            "orders",
            "8s",
            "1m",
        )
        .await
        .unwrap();
    let target = admin.address().trim_start_matches("http://").to_owned();
    let proxy = FlakyProxy::start(&target).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let files = admin
        .create_approle("vault-it-flaky", &["vault-it"], "1m", "10m", dir.path())
        .await
        .unwrap();
    let config = VaultConfig::new(proxy.address(), Auth::approle_files(&files.dir))
        .request_timeout(Duration::from_secs(1))
        .retry(RetryOptions {
            initial: Duration::from_millis(200),
            max: Duration::from_secs(1),
        });
    let vault = VaultClient::connect(config).await.unwrap();
    let lease = DatabaseLease::start(&vault, "vault_it_flaky", short_lease(500))
        .await
        .unwrap();
    let first = lease.current();
    proxy.set_down(true);
    // Renewal due after ~5.3 s (2/3 of the 8 s TTL) fails; the credential stays current
    // while valid.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(lease.current().username, first.username);
    let unreachable = vault.metrics().unreachable_total();
    assert!(unreachable >= 1, "unreachable counter {unreachable}");
    assert!(
        logs.contents()
            .contains("Vault unreachable; keeping the current database credentials")
    );
    proxy.set_down(false);
    // Back: the retry renews the same lease, unless a loaded machine let it expire in the
    // meantime, in which case a fresh credential replaces it: never a gap either way.
    let deadline = Instant::now() + Duration::from_secs(6);
    let recovered = || vault.metrics().lease_renewals.get() + vault.metrics().lease_rotations.get();
    while recovered() == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        recovered() >= 1,
        "neither renewed nor rotated after Vault came back"
    );
    if lease.current().username != first.username {
        assert!(vault.metrics().lease_rotations.get() >= 1);
    }
    lease.shutdown().await.unwrap();
    let token = vault.token();
    logs.assert_absent(&[
        first.password.expose(),
        files.secret_id.expose(),
        token.expose(),
    ]);
}

#[tokio::test]
async fn errors_and_debug_never_show_secrets() {
    let logs = LogCapture::install();
    let admin = admin().await;
    // Wrong secret id: the error names the path and Vault's message, not the values.
    let config = VaultConfig::new(
        admin.address(),
        Auth::AppRole {
            role_id: SecretSource::value("role-id-that-is-secret"),
            secret_id: SecretSource::value("secret-id-that-is-secret"),
            mount: "approle".into(),
        },
    );
    assert!(!format!("{config:?}").contains("that-is-secret"));
    let err = VaultClient::connect(config).await.unwrap_err();
    assert!(matches!(err, VaultError::Refused { .. }), "{err:?}");
    for shown in [err.to_string(), format!("{err:?}")] {
        assert!(!shown.contains("that-is-secret"), "{shown}");
    }
    // Bad token.
    let err = VaultClient::connect(VaultConfig::new(
        admin.address(),
        Auth::Token(SecretSource::value("token-that-is-secret")),
    ))
    .await
    .unwrap_err();
    assert_eq!(err.status(), Some(403), "{err}");
    assert!(!format!("{err} {err:?}").contains("token-that-is-secret"));
    // Root token client: works, no TTL, and Debug hides the token.
    let vault = VaultClient::connect(VaultConfig::new(
        admin.address(),
        Auth::Token(SecretSource::Value(admin.token().clone())),
    ))
    .await
    .unwrap();
    assert!(vault.token_info().expires_at.is_none());
    assert!(!format!("{vault:?}").contains(admin.token().expose()));
    // Unreachable address: classified as such and counted.
    let err = VaultClient::connect(
        VaultConfig::new(
            "http://127.0.0.1:9",
            Auth::Token(SecretSource::value("t-secret-x")),
        )
        .request_timeout(Duration::from_millis(500)),
    )
    .await
    .unwrap_err();
    assert!(err.is_unreachable(), "{err}");
    assert!(!format!("{err} {err:?}").contains("t-secret-x"));
    // A CA file that is not PEM.
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, "not a certificate").unwrap();
    let err = VaultClient::connect(
        VaultConfig::new(
            "https://127.0.0.1:8200",
            Auth::Token(SecretSource::value("x")),
        )
        .ca_file(&ca),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, VaultError::Config(_)), "{err}");
    logs.assert_absent(&[
        "role-id-that-is-secret",
        "secret-id-that-is-secret",
        "token-that-is-secret",
        admin.token().expose(),
    ]);
}
