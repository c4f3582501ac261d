//! One container of the stack: started through `testcontainers`, waited for through its
//! Docker health check, its log tail kept for the error that names it.

use std::any::Any;
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::future::BoxFuture;
use testcontainers::bollard::Docker;
use testcontainers::bollard::exec::StartExecResults;
use testcontainers::bollard::models::{ContainerStateStatusEnum, ExecConfig, HealthStatusEnum};
use testcontainers::core::logs::LogFrame;
use testcontainers::core::logs::consumer::LogConsumer;
use testcontainers::core::{ContainerPort, Healthcheck};
use testcontainers::runners::AsyncRunner;
use testcontainers::{ContainerRequest, Image, ImageExt};

use crate::images::{ResolvedImage, tail};
use crate::{Service, StackError};

/// The label on every container and network of a stack; its value is the stack's session
/// ([`CqrsStack::session`](crate::CqrsStack::session)).
///
/// ```
/// // what a CI job can look for: `docker ps -a --filter label=<this>`
/// assert_eq!(cqrs_testcontainers::SESSION_LABEL, "org.cqrs-toolkit.testcontainers.session");
/// ```
pub const SESSION_LABEL: &str = "org.cqrs-toolkit.testcontainers.session";

/// Lines of a container's log kept for error messages.
const LOG_LINES: usize = 80;

/// The last lines a container logged (stdout and stderr), fed by `testcontainers`.
#[derive(Clone, Default)]
pub(crate) struct LogTail(Arc<Mutex<VecDeque<String>>>);

impl LogTail {
    pub(crate) fn last(&self, n: usize) -> String {
        let lines = self.0.lock().map(|l| l.clone()).unwrap_or_default();
        let skip = lines.len().saturating_sub(n);
        lines.into_iter().skip(skip).collect::<Vec<_>>().join("\n")
    }
}

impl LogConsumer for LogTail {
    fn accept<'a>(&'a self, record: &'a LogFrame) -> BoxFuture<'a, ()> {
        let bytes = match record {
            LogFrame::StdOut(b) | LogFrame::StdErr(b) => b,
        };
        if let Ok(mut lines) = self.0.lock() {
            for line in String::from_utf8_lossy(bytes).lines() {
                if lines.len() == LOG_LINES {
                    lines.pop_front();
                }
                lines.push_back(line.to_owned());
            }
        }
        Box::pin(async {})
    }
}

/// Where and how a container runs, beyond its image's own settings.
pub(crate) struct Placement {
    /// The container's name (its host name on the network).
    pub name: String,
    /// The stack's network (`None`: the engine's default bridge).
    pub network: Option<String>,
    /// Container ports published on 127.0.0.1, each on the host port chosen for it.
    pub ports: BTreeMap<u16, u16>,
    pub health: Option<Healthcheck>,
    pub startup: Duration,
    /// Labels besides the session's (which the reaper itself must not carry).
    pub labels: Vec<(String, String)>,
    /// The engine removes the container once it exits (the reaper).
    pub auto_remove: bool,
}

/// A started container. Dropping it removes the container (on the crate's runtime).
pub(crate) struct Running {
    pub service: Service,
    pub name: String,
    pub image: ResolvedImage,
    pub id: String,
    /// Container port -> host port (127.0.0.1).
    pub ports: BTreeMap<u16, u16>,
    pub logs: LogTail,
    /// The `testcontainers` handle: its drop removes the container.
    holder: Option<Box<dyn Any + Send + Sync>>,
}

/// What waiting for a container needs (kept apart so the container can be held
/// elsewhere meanwhile).
#[derive(Clone)]
pub(crate) struct Probe {
    pub service: Service,
    pub name: String,
    pub image: String,
    pub id: String,
    pub logs: LogTail,
}

impl Running {
    pub fn probe(&self) -> Probe {
        Probe {
            service: self.service,
            name: self.name.clone(),
            image: self.image.reference.clone(),
            id: self.id.clone(),
            logs: self.logs.clone(),
        }
    }

    /// `127.0.0.1:<host port>` of a container port.
    pub fn host_port(&self, port: u16) -> u16 {
        self.ports.get(&port).copied().unwrap_or(port)
    }

    /// Lets the container outlive its handle (the reaper, which removes itself).
    pub fn detach(mut self) {
        // without a drop, testcontainers does not remove it; the handle's memory is all
        // that is lost
        if let Some(holder) = self.holder.take() {
            std::mem::forget(holder);
        }
    }

    /// Removes the container now and waits until it is gone.
    pub async fn remove(mut self) {
        if let Some(holder) = self.holder.take() {
            // testcontainers removes it in its Drop, blocking in place on a worker thread
            if let Ok(handle) = crate::runtime::handle() {
                let _ = handle.spawn(async move { drop(holder) }).await;
            }
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(holder) = self.holder.take()
            && let Ok(handle) = crate::runtime::handle()
        {
            handle.spawn(async move { drop(holder) });
        }
    }
}

/// Creates and starts the container (without waiting for its health check).
pub(crate) async fn launch<I: Image + 'static>(
    request: ContainerRequest<I>,
    service: Service,
    image: ResolvedImage,
    placement: Placement,
) -> Result<Running, StackError> {
    let name = placement.name.clone();
    let logs = LogTail::default();
    let mut request = request
        .with_container_name(&name)
        .with_labels(placement.labels.clone())
        .with_log_consumer(logs.clone())
        .with_ready_conditions(Vec::new())
        .with_startup_timeout(placement.startup);
    if let Some(network) = &placement.network {
        request = request.with_network(network);
    }
    for (&container, &host) in &placement.ports {
        request = request.with_mapped_port(host, ContainerPort::Tcp(container));
    }
    // published on the loopback interface only, as the Compose file does
    let auto_remove = placement.auto_remove;
    request = request.with_host_config_modifier(move |config| {
        config.auto_remove = auto_remove.then_some(true);
        if let Some(bindings) = config.port_bindings.as_mut() {
            for binding in bindings.values_mut().flatten().flatten() {
                binding.host_ip = Some("127.0.0.1".to_owned());
            }
        }
    });
    if let Some(health) = placement.health {
        request = request.with_health_check(health);
    }
    let container = request.start().await.map_err(|e| StackError::Unhealthy {
        service,
        container: name.clone(),
        image: image.reference.clone(),
        waited: placement.startup,
        reason: format!("it did not start: {e}"),
        log_tail: logs.last(40),
    })?;
    let id = container.id().to_owned();
    Ok(Running {
        service,
        name,
        image,
        id,
        ports: placement.ports,
        logs,
        holder: Some(Box::new(container)),
    })
}

/// Waits until the container's health check passes (or, without one, until it runs).
pub(crate) async fn wait_healthy(
    docker: &Docker,
    running: &Probe,
    timeout: Duration,
) -> Result<(), StackError> {
    let start = Instant::now();
    let fail = |reason: String| StackError::Unhealthy {
        service: running.service,
        container: running.name.clone(),
        image: running.image.clone(),
        waited: start.elapsed(),
        reason,
        log_tail: running.logs.last(40),
    };
    loop {
        let state = docker
            .inspect_container(&running.id, None)
            .await
            .map_err(|e| StackError::docker(format!("inspect {}", running.name), e))?
            .state
            .unwrap_or_default();
        let health = state.health.as_ref().and_then(|h| h.status);
        match (state.status, health) {
            (Some(ContainerStateStatusEnum::RUNNING), Some(HealthStatusEnum::HEALTHY))
            | (Some(ContainerStateStatusEnum::RUNNING), None | Some(HealthStatusEnum::NONE)) => {
                return Ok(());
            }
            (Some(ContainerStateStatusEnum::EXITED | ContainerStateStatusEnum::DEAD), _) => {
                return Err(fail(format!(
                    "it stopped with exit code {}",
                    state.exit_code.unwrap_or(-1)
                )));
            }
            (_, Some(HealthStatusEnum::UNHEALTHY)) => {
                let last = state
                    .health
                    .and_then(|h| h.log)
                    .and_then(|log| log.last().and_then(|l| l.output.clone()))
                    .unwrap_or_default();
                return Err(fail(format!(
                    "its health check failed: {}",
                    tail(last.trim(), 5)
                )));
            }
            _ if start.elapsed() >= timeout => {
                return Err(fail("its health check is still starting".to_owned()));
            }
            _ => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
}

/// The result of a command run in a container.
pub(crate) struct ExecOutput {
    pub exit_code: Option<i64>,
    pub output: String,
}

/// Runs `cmd` in the container with `env` (values never reach a command line).
pub(crate) async fn exec(
    docker: &Docker,
    running: &Probe,
    cmd: &[&str],
    env: &[(&str, String)],
) -> Result<ExecOutput, StackError> {
    let action = || format!("exec {} in {}", cmd.join(" "), running.name);
    let created = docker
        .create_exec(
            &running.id,
            ExecConfig {
                cmd: Some(cmd.iter().map(|s| (*s).to_owned()).collect()),
                env: Some(env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
                attach_stdout: Some(true),
                attach_stderr: Some(true),
                ..Default::default()
            },
        )
        .await
        .map_err(|e| StackError::docker(action(), e))?;
    let mut output = String::new();
    if let StartExecResults::Attached {
        output: mut stream, ..
    } = docker
        .start_exec(&created.id, None)
        .await
        .map_err(|e| StackError::docker(action(), e))?
    {
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| StackError::docker(action(), e))?;
            output.push_str(&String::from_utf8_lossy(&chunk.into_bytes()));
        }
    }
    let exit_code = docker
        .inspect_exec(&created.id)
        .await
        .map_err(|e| StackError::docker(action(), e))?
        .exit_code;
    Ok(ExecOutput { exit_code, output })
}

/// Free TCP ports on 127.0.0.1 (the kernel's choice; they are taken when the containers
/// publish them).
pub(crate) fn free_ports(n: usize) -> Result<Vec<u16>, StackError> {
    let listeners = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| StackError::Config(format!("no free port on 127.0.0.1: {e}")))?;
    listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| StackError::Config(format!("no free port on 127.0.0.1: {e}")))
}
