//! The stack's endpoints, with the Makefile's precedence: the process environment, then an
//! untracked `.env.local`, then the checked-in `.env`, both from the workspace root.
//!
//! The files are read with [`dotenvy::from_path_iter`] into a map and the environment is
//! laid over it; the process environment itself is never changed (`std::env::set_var` is
//! `unsafe` in edition 2024 and races with tests running in parallel). [`stack`] reads once
//! per process and keeps the result.
//!
//! An environment variable set to the empty string does not override the files (so
//! `MONGODB_URI= cargo test` still finds the stack), and neither file can unset a variable.
//!
//! ```
//! use cqrs_test_support::env;
//!
//! // Present in the checked-in `.env`, so always there.
//! let bootstrap = env::require("KAFKA_BOOTSTRAP_SERVERS");
//! assert!(!bootstrap.is_empty());
//! assert_eq!(env::stack_env("NO_SUCH_KEY_IN_THE_STACK"), None);
//! println!("{}", env::describe("MONGODB_URI")); // MONGODB_URI=... (from .env)
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Where a value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The checked-in `.env`.
    DotEnv,
    /// The untracked `.env.local`.
    DotEnvLocal,
    /// The process environment.
    Environment,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::DotEnv => ".env",
            Self::DotEnvLocal => ".env.local",
            Self::Environment => "environment",
        })
    }
}

/// The workspace root (the parent of this crate's directory), where `.env` lives.
///
/// ```
/// let root = cqrs_test_support::env::workspace_root();
/// assert!(root.join("Cargo.toml").is_file());
/// ```
pub fn workspace_root() -> PathBuf {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    crate_dir
        .parent()
        .map_or_else(|| crate_dir.to_path_buf(), Path::to_path_buf)
}

/// A `.env` file that could not be read or parsed.
#[derive(Debug, thiserror::Error)]
#[error("cannot read {}: {source}", path.display())]
pub struct EnvFileError {
    /// The file.
    pub path: PathBuf,
    /// What went wrong (I/O or a line that does not parse).
    #[source]
    pub source: dotenvy::Error,
}

/// The stack's variables: `.env`, overridden by `.env.local`, overridden by the environment.
/// Each value remembers its [`Source`], for failure messages.
///
/// ```
/// use cqrs_test_support::env::{Source, StackEnv};
///
/// let env = StackEnv::load();
/// let source = env.source("DATABASE_URL");
/// assert!(matches!(source, Some(Source::DotEnv | Source::DotEnvLocal | Source::Environment)));
/// assert!(env.describe("DATABASE_URL").starts_with("DATABASE_URL="));
/// ```
#[derive(Debug, Clone, Default)]
pub struct StackEnv {
    values: BTreeMap<String, (String, Source)>,
}

impl StackEnv {
    /// Reads `.env` and `.env.local` of the workspace root, then the environment.
    ///
    /// # Panics
    /// When `.env` is missing or does not parse: without it no test knows where the stack
    /// is.
    pub fn load() -> Self {
        Self::load_from(&workspace_root())
    }

    /// Reads `dir/.env` and `dir/.env.local` (optional), then the environment.
    ///
    /// # Panics
    /// When `dir/.env` is missing, or one of the files does not parse.
    pub fn load_from(dir: &Path) -> Self {
        Self::try_load_from(dir)
            .unwrap_or_else(|e| panic!("the stack's endpoints are unknown: {e}"))
    }

    /// Reads `dir/.env` and `dir/.env.local` (optional), then the environment.
    ///
    /// # Errors
    /// When `dir/.env` is missing, or one of the files does not parse.
    pub fn try_load_from(dir: &Path) -> Result<Self, EnvFileError> {
        let mut values = BTreeMap::new();
        read_file(&dir.join(".env"), Source::DotEnv, true, &mut values)?;
        read_file(
            &dir.join(".env.local"),
            Source::DotEnvLocal,
            false,
            &mut values,
        )?;
        let mut env = Self { values };
        env.overlay_environment();
        Ok(env)
    }

    /// The process environment alone (for a program that runs without the workspace's
    /// files).
    pub fn environment() -> Self {
        let mut env = Self::default();
        env.overlay_environment();
        env
    }

    fn overlay_environment(&mut self) {
        for (key, value) in std::env::vars_os() {
            // Names or values that are not UTF-8 are nobody's endpoint.
            let (Ok(key), Ok(value)) = (key.into_string(), value.into_string()) else {
                continue;
            };
            if !value.is_empty() {
                self.values.insert(key, (value, Source::Environment));
            }
        }
    }

    /// The value of `key`, if a file or the environment has one.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.values.get(key).map(|(v, _)| v.as_str())
    }

    /// Where the value of `key` came from.
    pub fn source(&self, key: &str) -> Option<Source> {
        self.values.get(key).map(|(_, s)| *s)
    }

    /// The value of `key`.
    ///
    /// # Panics
    /// When neither `.env`, `.env.local` nor the environment sets it.
    pub fn require(&self, key: &str) -> &str {
        self.get(key).unwrap_or_else(|| {
            panic!(
                "{key} is not set: put it in the workspace's .env or .env.local ({}), or in the \
                 environment",
                workspace_root().display()
            )
        })
    }

    /// `KEY=value (from <source>)`, or `KEY (unset)`, for failure messages.
    pub fn describe(&self, key: &str) -> String {
        match self.values.get(key) {
            Some((v, source)) => format!("{key}={v} (from {source})"),
            None => format!("{key} (unset)"),
        }
    }
}

fn read_file(
    path: &Path,
    source: Source,
    required: bool,
    values: &mut BTreeMap<String, (String, Source)>,
) -> Result<(), EnvFileError> {
    let error = |source| EnvFileError {
        path: path.to_owned(),
        source,
    };
    let lines = match dotenvy::from_path_iter(path) {
        Ok(lines) => lines,
        Err(e) if !required && e.not_found() => return Ok(()),
        Err(e) => return Err(error(e)),
    };
    for line in lines {
        let (key, value) = line.map_err(error)?;
        values.insert(key, (value, source));
    }
    Ok(())
}

/// The workspace's [`StackEnv`], read once per process.
///
/// # Panics
/// When the workspace's `.env` is missing or does not parse.
pub fn stack() -> &'static StackEnv {
    static STACK: OnceLock<StackEnv> = OnceLock::new();
    STACK.get_or_init(StackEnv::load)
}

/// A variable of the stack (environment, else `.env.local`, else `.env`), or `None`.
///
/// ```
/// let addr = cqrs_test_support::env::stack_env("VAULT_ADDR").unwrap_or_default();
/// ```
pub fn stack_env(key: &str) -> Option<String> {
    stack().get(key).map(str::to_owned)
}

/// A variable of the stack that the test cannot do without.
///
/// ```
/// let url = cqrs_test_support::env::require("DATABASE_URL");
/// assert!(url.starts_with("postgres"));
/// ```
///
/// # Panics
/// When neither `.env`, `.env.local` nor the environment sets it: the message names them.
pub fn require(key: &str) -> String {
    stack().require(key).to_owned()
}

/// `KEY=value (from <source>)`, or `KEY (unset)`, for failure messages.
pub fn describe(key: &str) -> String {
    stack().describe(key)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn dir_with(files: &[(&str, &str)]) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "cqrs-test-support-env-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        for (name, text) in files {
            std::fs::write(dir.join(name), text).unwrap();
        }
        dir
    }

    #[test]
    fn local_overrides_the_checked_in_file_and_the_environment_overrides_both() {
        let dir = dir_with(&[
            (
                ".env",
                "# comment\n\nA=1\nexport B=\"two\"\nC='x=y'\nPATH=from-the-file\n",
            ),
            (".env.local", "A=local\n"),
        ]);
        let env = StackEnv::try_load_from(&dir).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(
            (env.get("A"), env.source("A")),
            (Some("local"), Some(Source::DotEnvLocal))
        );
        assert_eq!(
            (env.get("B"), env.source("B")),
            (Some("two"), Some(Source::DotEnv))
        );
        assert_eq!(env.get("C"), Some("x=y"));
        assert_eq!(env.source("PATH"), Some(Source::Environment));
        assert_ne!(env.get("PATH"), Some("from-the-file"));
        assert_eq!(env.describe("A"), "A=local (from .env.local)");
        assert_eq!(env.describe("NOPE"), "NOPE (unset)");
    }

    #[test]
    fn a_missing_dotenv_is_an_error_and_a_missing_local_one_is_not() {
        let dir = dir_with(&[(".env", "A=1\n")]);
        let missing = StackEnv::try_load_from(&dir.join("nowhere"));
        let without_local = StackEnv::try_load_from(&dir);
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(missing.unwrap_err().source.not_found());
        assert_eq!(without_local.unwrap().get("A"), Some("1"));
    }

    #[test]
    #[should_panic(expected = "NO_SUCH_STACK_KEY is not set: put it in the workspace's .env")]
    fn require_names_the_files() {
        require("NO_SUCH_STACK_KEY");
    }

    #[test]
    fn the_checked_in_env_loads() {
        assert!(stack_env("KAFKA_BOOTSTRAP_SERVERS").is_some());
        assert!(workspace_root().join(".env").is_file());
    }
}
