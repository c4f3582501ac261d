//! TLS modes against the real PostgreSQL. The local stack's server (Debian package) has
//! `ssl = on` with its self-signed `localhost` certificate; a server with TLS off is
//! tested for the matching behaviour (require fails, prefer falls back) instead.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure

mod common;

use std::path::PathBuf;

use common::TestDb;
use cqrs_postgres::{PgPool, PostgresConfig, TlsConfig};

/// Whether the session of `pool` is encrypted, per the server.
async fn session_uses_tls(pool: &PgPool) -> bool {
    pool.get()
        .await
        .unwrap()
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

fn pool(db: &TestDb, host: Option<&str>, tls: TlsConfig) -> PgPool {
    let url = match host {
        Some(host) => db.url.replace("127.0.0.1", host),
        None => db.url.clone(),
    };
    let config = PostgresConfig::from_url(&url, db.schema.as_str())
        .unwrap()
        .with_tls(tls)
        .with_max_connections(1);
    PgPool::new(&config).unwrap()
}

#[tokio::test]
async fn tls_modes_behave_like_libpq() {
    let db = TestDb::new().await;
    let client = db.pool.get().await.unwrap();
    let ssl: String = client.query_one("SHOW ssl", &[]).await.unwrap().get(0);
    let cert_file: String = client
        .query_one("SHOW ssl_cert_file", &[])
        .await
        .unwrap()
        .get(0);
    drop(client);

    let plain = pool(&db, None, TlsConfig::Disable);
    assert!(!session_uses_tls(&plain).await, "disable: plain TCP");

    if ssl != "on" {
        // The server offers no TLS: require must fail, prefer must fall back.
        let err = pool(&db, None, TlsConfig::Require)
            .check()
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("TLS") || err.to_string().contains("SSL"),
            "{err}"
        );
        assert!(!session_uses_tls(&pool(&db, None, TlsConfig::Prefer)).await);
        return;
    }

    assert!(
        session_uses_tls(&pool(&db, None, TlsConfig::Prefer)).await,
        "prefer: TLS when offered"
    );
    assert!(
        session_uses_tls(&pool(&db, None, TlsConfig::Require)).await,
        "require: TLS"
    );

    // verify-full against the Mozilla roots: the self-signed certificate is refused.
    let err = pool(&db, None, TlsConfig::VerifyFull { ca_file: None })
        .check()
        .await
        .unwrap_err();
    assert!(
        !err.is_transient(),
        "a certificate error is not transient: {err:?}"
    );

    // verify-full trusting the server's own certificate, for the name it carries.
    let ca = PathBuf::from(&cert_file);
    if std::fs::read(&ca).is_ok() && url_host_is_loopback(&db.url) {
        let trusted = TlsConfig::VerifyFull {
            ca_file: Some(ca.clone()),
        };
        let verified = pool(&db, Some("localhost"), trusted.clone());
        verified
            .check()
            .await
            .expect("verify-full with the server's CA and its host name");
        assert!(session_uses_tls(&verified).await);
        // The same CA but an address the certificate does not name: refused.
        let err = pool(&db, None, trusted).check().await.unwrap_err();
        assert!(!err.is_transient(), "{err:?}");
    }
}

fn url_host_is_loopback(url: &str) -> bool {
    common::server_address(url).starts_with("127.0.0.1:")
}
