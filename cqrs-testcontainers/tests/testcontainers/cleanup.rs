//! Nothing of ours remains once a test process has ended, here by a panic with the shared
//! stack up: a child process (this binary, this test) starts the stack and panics; the
//! reaper then removes every container and the network of its session, and itself.

use std::time::{Duration, Instant};

use cqrs_testcontainers::{REAPER_LABEL, SESSION_LABEL};

use crate::support::{self, CHILD, labelled, rerun};

const TEST: &str = "cleanup::nothing_of_ours_remains_after_the_process_exits";

#[test]
fn nothing_of_ours_remains_after_the_process_exits() {
    if std::env::var(CHILD).as_deref() == Ok("panic-with-the-stack-up") {
        let stack = tokio::runtime::Runtime::new()
            .unwrap()
            .block_on(support::stack());
        println!("SESSION={}", stack.session());
        let up = labelled(&format!("{SESSION_LABEL}={}", stack.session()));
        println!("UP={}", up.len());
        panic!("the child panics on purpose, its stack up");
    }
    // after this binary's own stack is up: two starts at once on two cores slow both
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(support::stack());
    let started = Instant::now();
    let out = rerun(TEST, &[(CHILD, "panic-with-the-stack-up")]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    // the harness prints `test <name> ... ` on the same line: look for the word
    let value = |key: &str| {
        stdout
            .split_whitespace()
            .find_map(|w| w.strip_prefix(key))
            .unwrap_or_else(|| {
                panic!(
                    "the child printed no {key}:\n{stdout}\n{}",
                    String::from_utf8_lossy(&out.stderr)
                )
            })
            .to_owned()
    };
    let session = value("SESSION=");
    assert!(
        !out.status.success(),
        "the child must have failed (it panics)"
    );
    let up: usize = value("UP=").parse().unwrap();
    // the six services and the network
    assert!(
        up >= 7,
        "the child's stack had {up} containers and networks"
    );
    let exited = started.elapsed();

    let ours = [
        format!("{SESSION_LABEL}={session}"),
        format!("{REAPER_LABEL}={session}"),
    ];
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let left: Vec<String> = ours.iter().flat_map(|l| labelled(l)).collect();
        if left.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "left behind by the child's session {session}: {left:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    support::report(&format!(
        "cleanup: child ran {:.1}s; its {up} containers and networks, and the reaper, gone {:.1}s after it exited",
        exited.as_secs_f64(),
        (started.elapsed() - exited).as_secs_f64()
    ));
}
