//! Helpers shared by the end-to-end tests.
//!
//! The stack's endpoints are a contract written down in the workspace's `.env` (see its
//! header): both ways of running the stack, Compose and the local one, expose exactly
//! those. [`Contract::load`] reads that file, then an untracked `.env.local` beside it, then
//! the process environment, each overriding the one before, like the rest of the project.

use std::collections::BTreeMap;
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where a value of the contract came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The checked-in `.env`.
    DotEnv,
    /// The untracked `.env.local`.
    DotEnvLocal,
    /// The process environment.
    Environment,
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::DotEnv => ".env",
            Self::DotEnvLocal => ".env.local",
            Self::Environment => "environment",
        })
    }
}

/// The endpoint contract: `.env`, overridden by `.env.local`, overridden by the environment.
#[derive(Debug, Clone)]
pub struct Contract {
    values: BTreeMap<String, (String, Source)>,
}

/// The workspace root (the parent of this crate's directory), where `.env` lives.
pub fn workspace_root() -> PathBuf {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    crate_dir
        .parent()
        .map_or_else(|| crate_dir.to_path_buf(), Path::to_path_buf)
}

impl Contract {
    /// Loads the contract from the workspace root.
    ///
    /// # Panics
    /// When `.env` is missing or unreadable: without it no test knows where the stack is.
    pub fn load() -> Self {
        Self::load_from(&workspace_root())
    }

    /// Loads the contract from `dir/.env` and `dir/.env.local`, then the environment.
    ///
    /// # Panics
    /// When `dir/.env` is missing or unreadable.
    pub fn load_from(dir: &Path) -> Self {
        let env_file = dir.join(".env");
        let text = std::fs::read_to_string(&env_file).unwrap_or_else(|e| {
            panic!(
                "cannot read the endpoint contract {}: {e}",
                env_file.display()
            )
        });
        let mut values = BTreeMap::new();
        for (k, v) in parse_dotenv(&text) {
            values.insert(k, (v, Source::DotEnv));
        }
        if let Ok(local) = std::fs::read_to_string(dir.join(".env.local")) {
            for (k, v) in parse_dotenv(&local) {
                values.insert(k, (v, Source::DotEnvLocal));
            }
        }
        let keys: Vec<String> = values.keys().cloned().collect();
        for k in keys {
            if let Ok(v) = std::env::var(&k) {
                values.insert(k, (v, Source::Environment));
            }
        }
        Self { values }
    }

    /// The value of `key`, if the contract or the environment has one.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.values.get(key).map(|(v, _)| v.as_str())
    }

    /// The value of `key`.
    ///
    /// # Panics
    /// When neither `.env`, `.env.local` nor the environment sets it.
    pub fn require(&self, key: &str) -> &str {
        self.get(key).unwrap_or_else(|| {
            panic!(
                "the endpoint contract has no {key}: set it in .env, .env.local or the environment"
            )
        })
    }

    /// `KEY=value (from <source>)`, for failure messages.
    pub fn describe(&self, key: &str) -> String {
        match self.values.get(key) {
            Some((v, source)) => format!("{key}={v} (from {source})"),
            None => format!("{key} (unset)"),
        }
    }
}

/// Parses `KEY=VALUE` lines: blank lines and `#` comments are skipped, an `export ` prefix
/// and one pair of matching surrounding quotes are removed.
pub fn parse_dotenv(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|line| {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                return None;
            }
            let line = line.strip_prefix("export ").unwrap_or(line);
            let (key, value) = line.split_once('=')?;
            let value = value.trim();
            let value = ['"', '\'']
                .iter()
                .find_map(|q| {
                    value
                        .strip_prefix(*q)
                        .and_then(|rest| rest.strip_suffix(*q))
                })
                .unwrap_or(value);
            Some((key.trim().to_owned(), value.to_owned()))
        })
        .collect()
}

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
    fn parses_dotenv() {
        let parsed = parse_dotenv("# c\n\nA=1\nexport B = \"two\"\nC='x=y'\nnot a pair\n");
        assert_eq!(
            parsed,
            vec![
                ("A".to_owned(), "1".to_owned()),
                ("B".to_owned(), "two".to_owned()),
                ("C".to_owned(), "x=y".to_owned()),
            ]
        );
    }

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
