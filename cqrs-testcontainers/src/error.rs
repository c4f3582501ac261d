//! What can go wrong, each with what a user can do about it.

use std::time::Duration;

use crate::Service;

/// Why the stack (or a part of it) is not available.
///
/// Every variant carries text only, so the error is `Clone`: the shared stack of a test
/// binary hands the same failure to each test that asks for it.
///
/// ```
/// use cqrs_testcontainers::{Service, StackError};
///
/// let e = StackError::ImageMissing {
///     service: Service::Postgres,
///     image: "postgres:17.6".into(),
///     origin: "default".into(),
///     message: "pull access denied".into(),
///     hint: Service::Postgres.to_string(),
/// };
/// assert!(e.to_string().contains("postgres:17.6"));
/// ```
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum StackError {
    /// No Docker engine answers.
    #[error(
        "no Docker engine answers ({message}); start one (dockerd, Docker Desktop, or \
         scripts/ensure-docker.sh in the cqrs-toolkit repository) or point DOCKER_HOST at one"
    )]
    NoEngine {
        /// What the client said.
        message: String,
    },
    /// An image is neither on the engine nor pullable.
    #[error(
        "image {image} of {service} ({origin}) is not on this engine and cannot be pulled: {message}. {hint}"
    )]
    ImageMissing {
        /// The service that needs it.
        service: Service,
        /// The image reference.
        image: String,
        /// Where the reference came from (`default`, an environment variable, the builder).
        origin: String,
        /// What the engine said.
        message: String,
        /// What to do about it.
        hint: String,
    },
    /// A container stopped or never became healthy.
    #[error(
        "{service} (container {container}, image {image}) did not become healthy within \
         {waited:?}: {reason}\n--- last lines of its log ---\n{log_tail}"
    )]
    Unhealthy {
        /// The service.
        service: Service,
        /// The container's name.
        container: String,
        /// Its image.
        image: String,
        /// How long it was waited for.
        waited: Duration,
        /// Unhealthy, exited (with its code), or still starting.
        reason: String,
        /// The last lines of its log.
        log_tail: String,
    },
    /// A setup step inside a container failed (connector registration, Vault bootstrap).
    #[error("{step} failed in {service} (exit code {exit_code:?}):\n{output}")]
    Setup {
        /// The container it ran in.
        service: Service,
        /// What it was (`register.sh`, `bootstrap.sh`).
        step: String,
        /// The exit code.
        exit_code: Option<i64>,
        /// The tail of its output.
        output: String,
    },
    /// The command of `CQRS_IMAGES_COMMAND` failed.
    #[error("the images command `{command}` failed: {message}")]
    ImagesCommand {
        /// The command.
        command: String,
        /// Its exit status and the tail of its error output.
        message: String,
    },
    /// A Docker API call failed.
    #[error("Docker: {action} failed: {message}")]
    Docker {
        /// What was asked.
        action: String,
        /// What the engine said.
        message: String,
    },
    /// A client of the stack (PostgreSQL, MongoDB) could not be made or connected.
    #[error("{what}: {message}")]
    Client {
        /// Which client.
        what: String,
        /// Why.
        message: String,
    },
    /// A value given to the builder or a scope is not usable.
    #[error("invalid setting: {0}")]
    Config(String),
    /// The shared stack of this process runs with other settings than asked for.
    #[error(
        "the shared stack of this test binary was started with other settings ({running}) \
         than this call asks for ({asked}); use the same builder everywhere, or \
         StackBuilder::start for a stack of its own"
    )]
    SharedConflict {
        /// The settings it runs with.
        running: String,
        /// The settings asked for.
        asked: String,
    },
    /// Stopping or starting a service of a stack that other tests are using.
    #[error(
        "{operation} disturbs every test of the stack: take an exclusive scope \
         (CqrsStack::exclusive_scope) for it"
    )]
    NotExclusive {
        /// What was asked.
        operation: String,
    },
    /// The service is not part of this stack.
    #[error("{0} is not part of this stack (see StackBuilder)")]
    NotStarted(Service),
}

impl StackError {
    pub(crate) fn docker(action: impl Into<String>, e: impl std::fmt::Display) -> Self {
        StackError::Docker {
            action: action.into(),
            message: e.to_string(),
        }
    }

    pub(crate) fn client(what: impl Into<String>, e: impl std::fmt::Display) -> Self {
        StackError::Client {
            what: what.into(),
            message: e.to_string(),
        }
    }
}
