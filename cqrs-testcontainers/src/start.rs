//! Bringing a stack up: images, network, reaper, containers in dependency order, then the
//! connectors and the Vault bootstrap. Runs on the crate's runtime.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::{try_join, try_join_all, try_join3};
use testcontainers::bollard::Docker;
use testcontainers::bollard::models::NetworkCreateRequest;
use testcontainers::core::Healthcheck;
use testcontainers::{ContainerRequest, Image};

use crate::builder::{Settings, Started};
use crate::container::{
    Placement, Probe, Running, SESSION_LABEL, free_ports, launch, wait_healthy,
};
use crate::images::{self, ResolvedImage};
use crate::reaper::{self, REAPER_LABEL, ReaperLink};
use crate::recipes::{self, port};
use crate::setup;
use crate::{Service, StackError};

/// The containers started so far: removed (with the network) when the start fails.
#[derive(Default, Clone)]
struct Launched(Arc<Mutex<Vec<Running>>>);

impl Launched {
    fn take(&self) -> Vec<Running> {
        self.0
            .lock()
            .map(|mut v| std::mem::take(&mut *v))
            .unwrap_or_default()
    }
}

/// What every container of a start shares.
struct Context {
    t0: Instant,
    /// When each step was done, since the start began (reported, and in BENCHMARKS.md).
    timeline: Arc<Mutex<Vec<(String, Duration)>>>,
    docker: Docker,
    session: String,
    network: String,
    timeout: Duration,
    launched: Launched,
    images: BTreeMap<Service, ResolvedImage>,
}

impl Context {
    fn done(&self, step: impl Into<String>) {
        if let Ok(mut timeline) = self.timeline.lock() {
            timeline.push((step.into(), self.t0.elapsed()));
        }
    }

    fn image(&self, service: Service) -> Result<&ResolvedImage, StackError> {
        self.images
            .get(&service)
            .ok_or(StackError::NotStarted(service))
    }

    /// Launches a service on its own free host port and waits until it is healthy.
    async fn run<I: Image + 'static>(
        &self,
        service: Service,
        request: ContainerRequest<I>,
        host_port: u16,
        health: Healthcheck,
    ) -> Result<Probe, StackError> {
        let placement = Placement {
            name: recipes::host(&self.session, service),
            network: Some(self.network.clone()),
            ports: BTreeMap::from([(port(service), host_port)]),
            health: Some(health),
            startup: self.timeout,
            labels: vec![(SESSION_LABEL.to_owned(), self.session.clone())],
            auto_remove: false,
        };
        let running = launch(request, service, self.image(service)?.clone(), placement).await?;
        let probe = running.probe();
        // held by the start until it has succeeded: a failed start removes every container
        // it launched (and waits for that) before the network
        if let Ok(mut launched) = self.launched.0.lock() {
            launched.push(running);
        }
        wait_healthy(&self.docker, &probe, self.timeout).await?;
        self.done(service.name());
        Ok(probe)
    }
}

/// Starts the stack `settings` describes.
pub(crate) async fn start(settings: Settings) -> Result<Started, StackError> {
    let t0 = Instant::now();
    let docker = testcontainers::core::client::docker_client_instance()
        .await
        .map_err(|e| StackError::NoEngine {
            message: e.to_string(),
        })?;
    docker.ping().await.map_err(|e| StackError::NoEngine {
        message: e.to_string(),
    })?;

    let mut wanted: Vec<Service> = Service::INFRASTRUCTURE
        .into_iter()
        .filter(|s| *s != Service::Vault || settings.vault)
        .collect();
    let reaped = !reaper::disabled();
    if reaped {
        wanted.push(Service::Reaper);
    }
    let refs = images::resolve(&wanted, &settings.images).await?;
    let checked =
        try_join_all(refs.into_iter().map(|(service, reference, origin)| {
            images::check(&docker, service, reference, origin)
        }))
        .await?;
    let images: BTreeMap<Service, ResolvedImage> =
        checked.into_iter().map(|i| (i.service, i)).collect();

    let session = uuid::Uuid::new_v4().simple().to_string();
    let network = format!("cqrs-tc-{}", recipes::short(&session));
    docker
        .create_network(NetworkCreateRequest {
            name: network.clone(),
            driver: Some("bridge".to_owned()),
            labels: Some([(SESSION_LABEL.to_owned(), session.clone())].into()),
            ..Default::default()
        })
        .await
        .map_err(|e| StackError::docker(format!("create network {network}"), e))?;
    let ctx = Context {
        t0,
        timeline: Arc::new(Mutex::new(vec![("images".to_owned(), t0.elapsed())])),
        docker: docker.clone(),
        session: session.clone(),
        network: network.clone(),
        timeout: settings.startup_timeout,
        launched: Launched::default(),
        images,
    };
    let started = async {
        let reaper = if reaped {
            Some(start_reaper(&ctx, free_ports(1)?.into_iter().next().unwrap_or(0)).await?)
        } else {
            None
        };
        match bring_up(&ctx, &settings).await {
            Ok(started) => Ok(Started { reaper, ..started }),
            Err(e) => {
                if let Some((running, link)) = reaper {
                    // the reaper stays (testcontainers would remove it with its handle) and
                    // removes, once the link is gone, what the failed start could not: a
                    // container whose creation was under way when the start gave up
                    running.detach();
                    drop(link);
                }
                Err(e)
            }
        }
    };
    match started.await {
        Ok(mut started) => {
            started.images = ctx.images.into_values().collect();
            started.started_in = t0.elapsed();
            started.timeline = ctx.timeline.lock().map(|t| t.clone()).unwrap_or_default();
            Ok(started)
        }
        Err(e) => {
            for running in ctx.launched.take() {
                running.remove().await;
            }
            let _ = docker.remove_network(&network).await;
            Err(e)
        }
    }
}

async fn bring_up(ctx: &Context, settings: &Settings) -> Result<Started, StackError> {
    let ports = free_ports(6)?;
    let &[
        pg_port,
        kafka_port,
        registry_port,
        connect_port,
        mongo_port,
        vault_port,
    ] = ports.as_slice()
    else {
        return Err(StackError::Config("fewer free ports than services".into()));
    };
    let grace = ctx.timeout;
    let kafka_image = ctx.image(Service::Kafka)?.clone();
    let templates = setup::connector_templates(&settings.schemas)?;

    // PostgreSQL, then Vault's bootstrap on it (off the critical path: Connect takes longer)
    let write_side = async {
        let postgres = async {
            let image = ctx.image(Service::Postgres)?;
            let (request, health) = recipes::postgres(image, &settings.schemas, grace);
            ctx.run(Service::Postgres, request, pg_port, health).await
        };
        let vault = async {
            if !settings.vault {
                return Ok(None);
            }
            let (request, health) = recipes::vault(ctx.image(Service::Vault)?, grace);
            ctx.run(Service::Vault, request, vault_port, health)
                .await
                .map(Some)
        };
        let (_, vault) = try_join(postgres, vault).await?;
        let Some(vault) = vault else { return Ok(None) };
        let schemas = &settings.schemas;
        let bootstrapped =
            setup::bootstrap_vault(&ctx.docker, &vault, vault_port, &ctx.session, schemas).await?;
        ctx.done("vault bootstrap");
        Ok(Some(bootstrapped))
    };
    // the registry (Confluent's stores its schemas in Kafka) and Connect need the broker
    let messaging = async {
        let (request, health) = recipes::kafka(&kafka_image, &ctx.session, kafka_port, grace);
        ctx.run(Service::Kafka, request, kafka_port, health).await?;
        let registry = async {
            let image = ctx.image(Service::SchemaRegistry)?;
            let (request, health) = recipes::schema_registry(image, &ctx.session, grace);
            ctx.run(Service::SchemaRegistry, request, registry_port, health)
                .await
        };
        let connect = async {
            let image = ctx.image(Service::KafkaConnect)?;
            let (request, health) =
                recipes::kafka_connect(image, &ctx.session, kafka_image.flavor, &templates, grace);
            ctx.run(Service::KafkaConnect, request, connect_port, health)
                .await
        };
        let (_, connect) = try_join(registry, connect).await?;
        Ok::<_, StackError>(connect)
    };
    let mongodb = async {
        let (request, health) = recipes::mongodb(ctx.image(Service::MongoDb)?, &ctx.session, grace);
        ctx.run(Service::MongoDb, request, mongo_port, health).await
    };
    let (vault, connect, _) = try_join3(write_side, messaging, mongodb).await?;
    // PostgreSQL and the registry are healthy by now: what the connectors read and write
    setup::register_connectors(&ctx.docker, &connect, &ctx.session).await?;
    ctx.done("connectors RUNNING");

    let containers: BTreeMap<Service, Running> = ctx
        .launched
        .take()
        .into_iter()
        .map(|r| (r.service, r))
        .collect();
    Ok(Started {
        session: ctx.session.clone(),
        network: ctx.network.clone(),
        kafka_flavor: kafka_image.flavor,
        containers,
        vault,
        reaper: None,
        images: Vec::new(),
        started_in: Duration::ZERO,
        timeline: Vec::new(),
    })
}

/// The reaper first: from then on, whatever the process does, the session goes away.
async fn start_reaper(ctx: &Context, host_port: u16) -> Result<(Running, ReaperLink), StackError> {
    let image = ctx.image(Service::Reaper)?;
    let reconnection = Duration::from_secs(10);
    let request = recipes::reaper(image, &reaper::socket(), reaper::privileged(), reconnection);
    // on the default bridge, not the stack's network: removing that network at the end of
    // an owned stack must not wait for the reaper
    let placement = Placement {
        name: recipes::host(&ctx.session, Service::Reaper),
        network: None,
        ports: BTreeMap::from([(port(Service::Reaper), host_port)]),
        health: None,
        startup: ctx.timeout,
        labels: vec![(REAPER_LABEL.to_owned(), ctx.session.clone())],
        auto_remove: true,
    };
    let running = launch(request, Service::Reaper, image.clone(), placement).await?;
    ctx.done("reaper");
    let link = reaper::connect(
        host_port,
        SESSION_LABEL,
        &ctx.session,
        Duration::from_secs(30),
    )
    .await
    .map_err(|e| match e {
        StackError::Setup {
            service,
            step,
            exit_code,
            output,
        } => StackError::Setup {
            service,
            step,
            exit_code,
            output: format!("{output}\n--- reaper log ---\n{}", running.logs.last(20)),
        },
        other => other,
    })?;
    Ok((running, link))
}
