//! Helpers shared by the end-to-end tests.
//!
//! The stack's endpoints are a contract written down in the workspace's `.env` (see its
//! header): both ways of running the stack, Compose and the local one, expose exactly
//! those. [`Contract::load`] reads that file, then an untracked `.env.local` beside it, then
//! the process environment, each overriding the one before, like the rest of the project
//! (it is the workspace's one reader, `cqrs_test_support::env::StackEnv`).

use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

pub use cqrs_test_support::env::{Source, workspace_root};

/// The endpoint contract: `.env`, overridden by `.env.local`, overridden by the environment;
/// each value keeps its [`Source`] (`describe` says `KEY=value (from <source>)`).
pub type Contract = cqrs_test_support::env::StackEnv;

/// Opens (and closes) a TCP connection to `host_port` within `timeout`.
///
/// # Errors
/// A message naming the address and the reason, when no address of it accepts a connection.
pub fn check_tcp(host_port: &str, timeout: Duration) -> Result<(), String> {
    let addrs: Vec<_> = host_port
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host_port}: {e}"))?
        .collect();
    let mut last = format!("{host_port} resolves to no address");
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(_) => return Ok(()),
            Err(e) => last = format!("{addr}: {e}"),
        }
    }
    Err(last)
}

/// The `host:port` of an `http://host:port/...` URL (port 80/443 when it has none).
pub fn url_host_port(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let authority = rest.split('/').next()?;
    if authority.is_empty() {
        return None;
    }
    if authority
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        Some(authority.to_owned())
    } else {
        let port = if scheme == "https" { 443 } else { 80 };
        Some(format!("{authority}:{port}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_of_urls() {
        assert_eq!(
            url_host_port("http://127.0.0.1:8081").as_deref(),
            Some("127.0.0.1:8081")
        );
        assert_eq!(url_host_port("http://h:8083/x").as_deref(), Some("h:8083"));
        assert_eq!(url_host_port("http://h/").as_deref(), Some("h:80"));
        assert_eq!(url_host_port("nourl"), None);
    }

    #[test]
    fn the_checked_in_contract_loads() {
        let c = Contract::load();
        assert!(c.get("KAFKA_BOOTSTRAP_SERVERS").is_some());
        assert!(
            c.describe("SCHEMA_REGISTRY_URL")
                .starts_with("SCHEMA_REGISTRY_URL=")
        );
    }
}
