//! The few Docker Engine API calls a reaper needs, as HTTP/1.0 over the engine's unix
//! socket (HTTP/1.0: the engine answers with a plain body and closes, no chunking).

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use crate::filters::{Filters, encode};
use crate::log;

/// The engine's socket: `DOCKER_HOST=unix://...`, else `/var/run/docker.sock`.
pub fn socket_path() -> String {
    std::env::var("DOCKER_HOST")
        .ok()
        .and_then(|h| h.strip_prefix("unix://").map(str::to_owned))
        .unwrap_or_else(|| "/var/run/docker.sock".to_owned())
}

/// What a prune removed.
#[derive(Debug, Default)]
pub struct Removed {
    pub containers: usize,
    pub networks: usize,
    pub volumes: usize,
}

fn request(socket: &str, method: &str, path: &str) -> Result<(u16, String), String> {
    let mut stream = UnixStream::connect(socket).map_err(|e| format!("{socket}: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .map_err(|e| e.to_string())?;
    write!(stream, "{method} {path} HTTP/1.0\r\nHost: docker\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no HTTP status in {:?}", head.lines().next()))?;
    Ok((status, body.to_owned()))
}

/// The values of `key` (`Id`, `Name`) of the objects a list endpoint returns.
fn list(socket: &str, path: &str, key: &str) -> Vec<String> {
    match request(socket, "GET", path) {
        Ok((200, body)) => {
            let json: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            // /volumes answers {"Volumes": [...]}, the others a plain array
            let items = json
                .get("Volumes")
                .unwrap_or(&json)
                .as_array()
                .cloned()
                .unwrap_or_default();
            items
                .iter()
                .filter_map(|i| i.get(key).and_then(|v| v.as_str()).map(str::to_owned))
                .collect()
        }
        Ok((status, body)) => {
            log(&format!("GET {path}: HTTP {status}: {}", body.trim()));
            Vec::new()
        }
        Err(e) => {
            log(&format!("GET {path}: {e}"));
            Vec::new()
        }
    }
}

/// Deletes one object, retrying a few times (a network is busy while its last containers
/// are being removed); 404 counts as gone.
fn delete(socket: &str, path: &str) -> bool {
    for attempt in 0..10 {
        match request(socket, "DELETE", path) {
            Ok((200..=299, _)) => return true,
            Ok((404, _)) => return false,
            Ok((status, body)) => log(&format!("DELETE {path}: HTTP {status}: {}", body.trim())),
            Err(e) => log(&format!("DELETE {path}: {e}")),
        }
        std::thread::sleep(Duration::from_millis(200 * (attempt + 1)));
    }
    false
}

/// Removes every container, then network, then volume that a filter matches.
pub fn prune(socket: &str, all: &[Filters]) -> Removed {
    let mut removed = Removed::default();
    for filters in all {
        let q = encode(&filters.to_json());
        for id in list(socket, &format!("/containers/json?all=1&filters={q}"), "Id") {
            removed.containers +=
                usize::from(delete(socket, &format!("/containers/{id}?force=1&v=1")));
        }
        for id in list(socket, &format!("/networks?filters={q}"), "Id") {
            removed.networks += usize::from(delete(socket, &format!("/networks/{id}")));
        }
        for name in list(socket, &format!("/volumes?filters={q}"), "Name") {
            removed.volumes += usize::from(delete(socket, &format!("/volumes/{}", encode(&name))));
        }
    }
    removed
}
