//! Bringing a stack up: images, network, reaper, containers in dependency order, then the
//! connectors and the Vault bootstrap. Runs on the crate's runtime.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::{try_join, try_join_all, try_join4};
use testcontainers::bollard::Docker;
use testcontainers::bollard::models::NetworkCreateRequest;
use testcontainers::core::Healthcheck;
use testcontainers::{ContainerRequest, Image};

use crate::builder::{Settings, Started};
use crate::container::{Placement, Running, SESSION_LABEL, free_ports, launch, wait_healthy};
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
    ) -> Result<Running, StackError> {
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
        // held by the start while it waits: a failed start removes it (and waits for that)
        if let Ok(mut launched) = self.launched.0.lock() {
            launched.push(running);
        }
        wait_healthy(&self.docker, &probe, self.timeout).await?;
        self.done(service.name());
        self.take(service)
    }

    fn take(&self, service: Service) -> Result<Running, StackError> {
        let mut launched = self
            .launched
            .0
            .lock()
            .map_err(|_| StackError::Config("the start's container list is poisoned".into()))?;
        let i = launched
            .iter()
            .position(|r| r.service == service)
            .ok_or(StackError::NotStarted(service))?;
        Ok(launched.swap_remove(i))
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
    let network = format!("cqrs-tc-{}", &session[..8]);
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
    match bring_up(&ctx, &settings, reaped).await {
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

async fn bring_up(ctx: &Context, settings: &Settings, reaped: bool) -> Result<Started, StackError> {
    let ports = free_ports(7)?;
    let &[
        reaper_port,
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
    let link = if reaped {
        Some(start_reaper(ctx, reaper_port).await?)
    } else {
        None
    };
    let grace = ctx.timeout;
    let kafka_image = ctx.image(Service::Kafka)?.clone();
    let templates = setup::connector_templates(&settings.schemas)?;

    let postgres = async {
        let (request, health) =
            recipes::postgres(ctx.image(Service::Postgres)?, &settings.schemas, grace);
        ctx.run(Service::Postgres, request, pg_port, health).await
    };
    // the registry (Confluent's stores its schemas in Kafka) and Connect need the broker
    let messaging = async {
        let (request, health) = recipes::kafka(&kafka_image, &ctx.session, kafka_port, grace);
        let kafka = ctx.run(Service::Kafka, request, kafka_port, health).await?;
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
        let (registry, connect) = try_join(registry, connect).await?;
        Ok::<_, StackError>((kafka, registry, connect))
    };
    let mongodb = async {
        let (request, health) = recipes::mongodb(ctx.image(Service::MongoDb)?, &ctx.session, grace);
        ctx.run(Service::MongoDb, request, mongo_port, health).await
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
    let (postgres, (kafka, registry, connect), mongodb, vault) =
        try_join4(postgres, messaging, mongodb, vault).await?;

    let register = async {
        setup::register_connectors(&ctx.docker, &connect, &ctx.session).await?;
        ctx.done("connectors RUNNING");
        Ok(())
    };
    let bootstrap = async {
        let Some(v) = &vault else { return Ok(None) };
        let settings =
            setup::bootstrap_vault(&ctx.docker, v, &ctx.session, &settings.schemas).await?;
        ctx.done("vault bootstrap");
        Ok(Some(settings))
    };
    let ((), vault_settings) = match try_join(register, bootstrap).await {
        Ok(done) => done,
        Err(e) => {
            // the clean-up of a failed start removes these too
            if let Ok(mut launched) = ctx.launched.0.lock() {
                launched.extend([postgres, kafka, registry, connect, mongodb]);
                launched.extend(vault);
            }
            return Err(e);
        }
    };
    let mut containers = BTreeMap::new();
    for running in [postgres, kafka, registry, connect, mongodb]
        .into_iter()
        .chain(vault)
    {
        containers.insert(running.service, running);
    }
    Ok(Started {
        session: ctx.session.clone(),
        network: ctx.network.clone(),
        kafka_flavor: kafka_image.flavor,
        containers,
        vault: vault_settings,
        reaper: link,
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
