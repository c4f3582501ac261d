//! A stand-in for Testcontainers' Ryuk: the same TCP protocol and environment, enough of
//! its behaviour for `cqrs-testcontainers`, on the Rust standard library and `serde_json`.
//!
//! Clients connect to `RYUK_PORT` (8080) and send filters, one per line, in Docker's query
//! form (`label=key=value&label=other`); each line is answered `ACK`. Once every client has
//! disconnected and none came back within `RYUK_RECONNECTION_TIMEOUT` (10 s), every
//! container, then network, then volume matching a filter is removed through the engine's
//! socket, and the process exits. Without any connection within `RYUK_CONNECTION_TIMEOUT`
//! (60 s) it exits removing nothing.

mod docker;
mod filters;

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use filters::{Filters, parse_duration};

#[derive(Default)]
struct State {
    filters: Vec<Filters>,
    connections: usize,
    ever_connected: bool,
    last_disconnect: Option<Instant>,
}

type Shared = Arc<(Mutex<State>, Condvar)>;

fn log(message: &str) {
    let _ = writeln!(std::io::stderr(), "ryuk-standin: {message}");
}

fn env_duration(name: &str, default: Duration) -> Duration {
    match std::env::var(name) {
        Ok(v) => parse_duration(&v).unwrap_or_else(|| {
            log(&format!(
                "{name}={v:?} is not a duration; using {default:?}"
            ));
            default
        }),
        Err(_) => default,
    }
}

fn main() {
    let port = std::env::var("RYUK_PORT")
        .ok()
        .and_then(|p| p.parse::<u16>().ok())
        .unwrap_or(8080);
    let connection_timeout = env_duration("RYUK_CONNECTION_TIMEOUT", Duration::from_secs(60));
    let reconnection_timeout = env_duration("RYUK_RECONNECTION_TIMEOUT", Duration::from_secs(10));
    let socket = docker::socket_path();
    let listener = match TcpListener::bind(("0.0.0.0", port)) {
        Ok(l) => l,
        Err(e) => {
            log(&format!("cannot listen on port {port}: {e}"));
            std::process::exit(1);
        }
    };
    log(&format!(
        "started on port {port} (engine {socket}, connection timeout {connection_timeout:?}, \
         reconnection timeout {reconnection_timeout:?})"
    ));
    let shared: Shared = Arc::default();
    let accepting = shared.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let shared = accepting.clone();
            std::thread::spawn(move || serve(stream, &shared));
        }
    });

    let started = Instant::now();
    let (lock, changed) = &*shared;
    let Ok(mut state) = lock.lock() else {
        std::process::exit(1);
    };
    loop {
        if !state.ever_connected && started.elapsed() >= connection_timeout {
            log("no connection within the connection timeout; exiting");
            return;
        }
        if state.ever_connected
            && state.connections == 0
            && state
                .last_disconnect
                .is_some_and(|t| t.elapsed() >= reconnection_timeout)
        {
            break;
        }
        state = match changed.wait_timeout(state, Duration::from_millis(200)) {
            Ok((s, _)) => s,
            Err(_) => std::process::exit(1),
        };
    }
    let filters = std::mem::take(&mut state.filters);
    drop(state);
    log("every client is gone; removing what the filters match");
    let removed = docker::prune(&socket, &filters);
    log(&format!(
        "removed {} container(s), {} network(s), {} volume(s)",
        removed.containers, removed.networks, removed.volumes
    ));
}

/// One client: each line a filter, answered `ACK`; the connection's end is what counts.
fn serve(stream: TcpStream, shared: &Shared) {
    let (lock, changed) = &**shared;
    if let Ok(mut state) = lock.lock() {
        state.connections += 1;
        state.ever_connected = true;
    }
    let peer = stream
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    log(&format!("client {peer} connected"));
    let mut writer = stream.try_clone().ok();
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    loop {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let text = line.trim();
        if text.is_empty() {
            continue;
        }
        let parsed = Filters::parse(text);
        log(&format!("client {peer} added filter {parsed}"));
        if let Ok(mut state) = lock.lock() {
            state.filters.push(parsed);
        }
        if let Some(w) = writer.as_mut()
            && w.write_all(b"ACK\n").is_err()
        {
            break;
        }
    }
    log(&format!("client {peer} disconnected"));
    if let Ok(mut state) = lock.lock() {
        state.connections -= 1;
        state.last_disconnect = Some(Instant::now());
    }
    changed.notify_all();
}
