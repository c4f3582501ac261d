//! Errors a user can act on, as typed values: no engine, an image missing, a container
//! that stops (named, with the tail of its log).

use std::time::{Duration, Instant};

use cqrs_testcontainers::{CqrsStack, Service, StackError};

use crate::support::{self, CHILD, docker, rerun};

const NO_ENGINE: &str = "errors::no_engine_is_a_typed_error";

#[test]
fn no_engine_is_a_typed_error() {
    if std::env::var(CHILD).as_deref() == Ok("no-engine") {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let err = rt.block_on(CqrsStack::builder().start()).unwrap_err();
        println!("ERROR={err}");
        assert!(matches!(err, StackError::NoEngine { .. }), "{err:?}");
        return;
    }
    // the child sees an engine that is not there
    let out = rerun(
        NO_ENGINE,
        &[
            (CHILD, "no-engine"),
            ("DOCKER_HOST", "unix:///nonexistent/docker.sock"),
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("ERROR=no Docker engine answers"),
        "{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_image_is_named_with_what_to_do() {
    let started = Instant::now();
    let err = CqrsStack::builder()
        .image(Service::Postgres, "cqrs-local/never-built:none")
        .start()
        .await
        .unwrap_err();
    let StackError::ImageMissing {
        service,
        ref image,
        ref hint,
        ..
    } = err
    else {
        panic!("{err:?}")
    };
    assert_eq!(service, Service::Postgres);
    assert_eq!(image, "cqrs-local/never-built:none");
    assert!(hint.contains("CQRS_IMAGE_POSTGRES"), "{hint}");
    assert!(err.to_string().contains("set by the builder"), "{err}");
    support::report(&format!(
        "errors: image missing reported in {:.1}s: {err}",
        started.elapsed().as_secs_f64()
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_that_stops_is_named_with_its_log() {
    // an image that cannot run PostgreSQL's command: its container exits at once
    let shared = support::stack().await;
    let vault = shared
        .images()
        .iter()
        .find(|i| i.service == Service::Vault)
        .unwrap();
    let err = CqrsStack::builder()
        .image(Service::Postgres, vault.reference.clone())
        .start()
        .await
        .unwrap_err();
    let StackError::Unhealthy {
        service,
        ref container,
        ref reason,
        ref log_tail,
        ..
    } = err
    else {
        panic!("{err:?}")
    };
    assert_eq!(service, Service::Postgres);
    assert!(reason.contains("exit code"), "{reason}");
    assert!(
        log_tail.contains("postgres"),
        "the log says why: {log_tail}"
    );
    assert!(err.to_string().contains(container.as_str()), "{err}");
    // the failed start removed what it had started
    let prefix = container.trim_end_matches("postgres");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = docker(&["ps", "-a", "-q", "--filter", &format!("name={prefix}")]);
        if left.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "left by the failed start: {left}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
