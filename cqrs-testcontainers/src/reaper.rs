//! Removal of everything of a test process once that process is gone.
//!
//! `testcontainers` (0.27) removes a container when its handle is dropped, but a stack
//! shared by the tests of a binary lives in a `static`, which Rust never drops, and a
//! process that is killed drops nothing. Other Testcontainers libraries solve this with
//! Ryuk, a container that holds a TCP connection from the test process and, once that
//! connection is closed (the kernel closes it however the process ends) and not reopened
//! within a grace period, removes every container, network and volume matching the filters
//! it was sent. The Rust library has no Ryuk support, so this module speaks its protocol:
//! one line `label=<key>=<value>` per filter, answered `ACK`.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::StackError;

/// `TESTCONTAINERS_RYUK_DISABLED=true` leaves the reaper out (as in the other
/// Testcontainers libraries): a stack that is never dropped then outlives the process.
///
/// ```
/// assert_eq!(cqrs_testcontainers::DISABLED_VARIABLE, "TESTCONTAINERS_RYUK_DISABLED");
/// ```
pub const DISABLED_VARIABLE: &str = "TESTCONTAINERS_RYUK_DISABLED";
/// `TESTCONTAINERS_RYUK_PRIVILEGED=true` runs it privileged (SELinux hosts need it).
///
/// ```
/// assert_eq!(cqrs_testcontainers::PRIVILEGED_VARIABLE, "TESTCONTAINERS_RYUK_PRIVILEGED");
/// ```
pub const PRIVILEGED_VARIABLE: &str = "TESTCONTAINERS_RYUK_PRIVILEGED";
/// The engine's socket as seen by the engine, mounted into the reaper (default
/// `/var/run/docker.sock`; rootless and remote engines name theirs).
///
/// ```
/// assert_eq!(cqrs_testcontainers::SOCKET_VARIABLE, "TESTCONTAINERS_DOCKER_SOCKET_OVERRIDE");
/// ```
pub const SOCKET_VARIABLE: &str = "TESTCONTAINERS_DOCKER_SOCKET_OVERRIDE";
/// The label of the reaper's own container (it must not match the filter it enforces);
/// its value is the session it reaps.
///
/// ```
/// assert_eq!(cqrs_testcontainers::REAPER_LABEL, "org.cqrs-toolkit.testcontainers.reaper");
/// ```
pub const REAPER_LABEL: &str = "org.cqrs-toolkit.testcontainers.reaper";

fn flag(variable: &str) -> bool {
    std::env::var(variable).is_ok_and(|v| matches!(v.trim(), "1" | "true" | "TRUE" | "yes"))
}

pub(crate) fn disabled() -> bool {
    flag(DISABLED_VARIABLE)
}

pub(crate) fn privileged() -> bool {
    flag(PRIVILEGED_VARIABLE)
}

pub(crate) fn socket() -> String {
    std::env::var(SOCKET_VARIABLE)
        .ok()
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| "/var/run/docker.sock".to_owned())
}

/// The open connection to the reaper: while it is open, nothing is removed.
pub(crate) struct ReaperLink {
    _stream: TcpStream,
}

/// Connects to the reaper at `127.0.0.1:port` (retrying while it starts) and registers
/// `label=<key>=<value>`; blocking, so it runs on a blocking thread.
pub(crate) async fn connect(
    port: u16,
    key: &str,
    value: &str,
    wait: Duration,
) -> Result<ReaperLink, StackError> {
    let filter = format!("label={key}={value}\n");
    tokio::task::spawn_blocking(move || {
        let start = Instant::now();
        let mut last = String::new();
        while start.elapsed() < wait {
            match register(port, &filter) {
                Ok(stream) => return Ok(ReaperLink { _stream: stream }),
                Err(e) => last = e,
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Err(StackError::Setup {
            service: crate::Service::Reaper,
            step: format!("registering with the reaper at 127.0.0.1:{port}"),
            exit_code: None,
            output: last,
        })
    })
    .await
    .map_err(|e| StackError::Config(format!("the reaper connection task failed: {e}")))?
}

fn register(port: u16, filter: &str) -> Result<TcpStream, String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    stream
        .write_all(filter.as_bytes())
        .map_err(|e| e.to_string())?;
    let mut answer = String::new();
    BufReader::new(&stream)
        .read_line(&mut answer)
        .map_err(|e| e.to_string())?;
    if answer.trim() != "ACK" {
        return Err(format!("the reaper answered {answer:?} instead of ACK"));
    }
    // the connection stays open, idle, for as long as the stack lives
    stream.set_read_timeout(None).map_err(|e| e.to_string())?;
    Ok(stream)
}
