//! The three services, their reaction loops and the embedded sync-service, wired
//! together in one process for the demo and the end-to-end test. Each service still
//! owns its schema and connects with its own login role; they talk only through Kafka.

use std::time::{Duration, Instant};

use cqrs_core::{CommandError, CommandMetadata, ConsistencyToken};
use cqrs_mongo::{MongoClient, MongoConfig, Repository, Versioned};
use cqrs_saga::{RunnerConfig, RunnerError, RunnerStats, SagaRunner, outbox_topic};
use sync_service::SyncService;
use sync_service::config::SyncConfig;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::billing::{self, Billing, InvoiceCommand};
use crate::env::Env;
use crate::inventory::{self, Inventory, WarehouseCommand};
use crate::orders::{self, Line, OrderCommand, Orders, Status};
use crate::read_models::{self, OrderSummary, StockLevel};
use crate::service::{SetupError, provision};

/// How long a step may take before the flow is declared broken.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(60);

/// Why the demo failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DemoError {
    /// A service could not be set up.
    #[error(transparent)]
    Setup(#[from] SetupError),
    /// A command failed on infrastructure.
    #[error("command: {0}")]
    Command(#[from] CommandError),
    /// A command was refused by the domain.
    #[error("{0} refused: {1}")]
    Refused(&'static str, String),
    /// The read side failed or did not catch up in time.
    #[error("read side: {0}")]
    Mongo(#[from] cqrs_mongo::MongoError),
    /// Raw MongoDB query failure.
    #[error("mongodb: {0}")]
    MongoDriver(#[from] mongodb::error::Error),
    /// Kafka set-up failed.
    #[error(transparent)]
    Kafka(#[from] RunnerError),
    /// The sync-service configuration is invalid.
    #[error("sync-service config: {0}")]
    Config(String),
    /// A reaction loop did not join its consumer group in time.
    #[error("the {0} reaction loop got no partitions within {1:?}")]
    NotAssigned(&'static str, Duration),
}

/// Names that keep runs apart: consumer groups, read database, warehouse.
#[derive(Debug, Clone)]
pub struct DemoNames {
    /// Prefix of the three reaction loops' consumer groups.
    pub group_prefix: String,
    /// Consumer group of the embedded sync-service.
    pub sync_group: String,
    /// MongoDB database of the read models.
    pub database: String,
    /// Dead-letter topic of the sync-service.
    pub dead_letter_topic: String,
}

impl DemoNames {
    /// The fixed names of `make demo`: repeated runs resume where the last one stopped.
    pub fn demo() -> Self {
        DemoNames {
            group_prefix: "cqrs-demo".into(),
            sync_group: "cqrs-demo-sync".into(),
            database: "cqrs_demo".into(),
            dead_letter_topic: "cqrs-demo-dead-letters".into(),
        }
    }

    /// Names unique to `run` (tests).
    pub fn unique(run: &str) -> Self {
        DemoNames {
            group_prefix: format!("demo-test-{run}"),
            sync_group: format!("demo-test-{run}-sync"),
            database: format!("demo_test_{run}"),
            dead_letter_topic: format!("demo-test-{run}-dead-letters"),
        }
    }
}

/// The running system.
pub struct Stack {
    /// Orders service commands.
    pub orders: Orders,
    /// Inventory service commands.
    pub inventory: Inventory,
    /// Billing service commands.
    pub billing: Billing,
    /// Read side.
    pub mongo: MongoClient,
    /// Counters of the three reaction loops (orders, inventory, billing).
    pub runners: Vec<(&'static str, RunnerStats)>,
    shutdown: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Stack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stack").finish_non_exhaustive()
    }
}

fn sync_config(env: &Env, names: &DemoNames) -> SyncConfig {
    let mut config = SyncConfig::new(
        env.get("KAFKA_BOOTSTRAP_SERVERS"),
        &names.sync_group,
        env.get("MONGODB_URI"),
        &names.database,
    )
    .with_schema_registry(env.get("SCHEMA_REGISTRY_URL"))
    .with_topic_prefix("cqrs");
    config.batch.max_size = 200;
    config.batch.max_wait_ms = 5;
    config.retry.initial_backoff_ms = 50;
    config.retry.max_backoff_ms = 1000;
    config.dead_letter.topic = names.dead_letter_topic.clone();
    config
}

fn spawn_runner(
    name: &'static str,
    runner: SagaRunner,
    shutdown: &CancellationToken,
) -> (RunnerStats, JoinHandle<()>) {
    let stats = runner.stats();
    let stop = shutdown.clone();
    let task = tokio::spawn(async move {
        if let Err(e) = runner.run(stop).await {
            tracing::error!(service = name, error = %e, "reaction loop stopped");
        }
    });
    (stats, task)
}

impl Stack {
    /// Sets up the three services (schemas migrated, login roles ensured), creates the
    /// topics, and starts the three reaction loops and the sync-service. Returns once the
    /// loops have joined their consumer groups.
    pub async fn start(env: &Env, names: &DemoNames) -> Result<Stack, DemoError> {
        let orders_pool = provision(env, "orders").await?;
        orders::provision_lines(&env.get("DATABASE_URL")).await?;
        let inventory_pool = provision(env, "inventory").await?;
        let billing_pool = provision(env, "billing").await?;
        let pg = |schema: &str, e| SetupError::Postgres {
            schema: schema.to_owned(),
            source: Box::new(e),
        };

        let bootstrap = env.get("KAFKA_BOOTSTRAP_SERVERS");
        let mut topics: Vec<String> = ["Order", "Warehouse", "Invoice"]
            .iter()
            .map(|t| outbox_topic(t))
            .collect();
        topics.extend(read_models::TOPICS.iter().map(|t| (*t).to_owned()));
        SagaRunner::ensure_topics(&bootstrap, &topics, 4)
            .await
            .map_err(RunnerError::from)?;

        let shutdown = CancellationToken::new();
        let mut runners = Vec::new();
        let mut tasks = Vec::new();
        let config = |service: &str| {
            let mut c = RunnerConfig::new(&bootstrap, format!("{}-{service}", names.group_prefix));
            c.create_topics = None;
            c
        };
        let loops: [(&'static str, SagaRunner); 3] = [
            (
                "orders",
                SagaRunner::new(config("orders")).with_handler(orders::saga(
                    orders::handler(&orders_pool).map_err(|e| pg("orders", e))?,
                )),
            ),
            (
                "inventory",
                SagaRunner::new(config("inventory")).with_handler(inventory::saga(
                    inventory::handler(&inventory_pool).map_err(|e| pg("inventory", e))?,
                )),
            ),
            (
                "billing",
                SagaRunner::new(config("billing")).with_handler(billing::saga(
                    billing::handler(&billing_pool).map_err(|e| pg("billing", e))?,
                )),
            ),
        ];
        for (name, runner) in loops {
            let (stats, task) = spawn_runner(name, runner, &shutdown);
            runners.push((name, stats));
            tasks.push(task);
        }

        let sync = read_models::register(SyncService::new(sync_config(env, names)));
        let stop = shutdown.clone();
        tasks.push(tokio::spawn(async move {
            if let Err(e) = sync.run(stop).await {
                tracing::error!(error = %e, "sync-service stopped");
            }
        }));

        let mongo = MongoClient::connect(
            MongoConfig::new(env.get("MONGODB_URI")).with_default_database(&names.database),
        )
        .await?;

        let stack = Stack {
            orders: orders::handler(&orders_pool).map_err(|e| pg("orders", e))?,
            inventory: inventory::handler(&inventory_pool).map_err(|e| pg("inventory", e))?,
            billing: billing::handler(&billing_pool).map_err(|e| pg("billing", e))?,
            mongo,
            runners,
            shutdown,
            tasks,
        };
        let deadline = Instant::now() + STEP_TIMEOUT;
        for (name, stats) in &stack.runners {
            while !stats.is_assigned() {
                if Instant::now() > deadline {
                    return Err(DemoError::NotAssigned(name, STEP_TIMEOUT));
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        Ok(stack)
    }

    /// The read database.
    pub fn db(&self) -> mongodb::Database {
        self.mongo.default_database()
    }

    /// The order summaries.
    pub fn summaries(&self) -> Repository<OrderSummary> {
        self.mongo.repository::<OrderSummary>()
    }

    /// Adds stock and waits until the dashboard shows it.
    pub async fn restock(&self, warehouse: &str, sku: &str, qty: u32) -> Result<(), DemoError> {
        let command = WarehouseCommand::Restock {
            sku: sku.to_owned(),
            qty,
        };
        let outcome = self
            .inventory
            .execute(warehouse, &command, CommandMetadata::new())
            .await?
            .map_err(|e| DemoError::Refused("restock", e.to_string()))?;
        // The warehouse's token, waited for on the product's stock level (one document per
        // product of the warehouse aggregate).
        self.mongo
            .repository::<StockLevel>()
            .wait_for_in(
                &format!("{warehouse}/{sku}"),
                outcome.consistency_token(),
                STEP_TIMEOUT,
            )
            .await?;
        Ok(())
    }

    /// Places an order (the orders service's command).
    pub async fn place_order(
        &self,
        order_id: &str,
        customer: &str,
        warehouse: &str,
        lines: Vec<Line>,
    ) -> Result<ConsistencyToken, DemoError> {
        let command = (
            order_id.to_owned(),
            OrderCommand::Place {
                customer: customer.to_owned(),
                warehouse: warehouse.to_owned(),
                lines,
            },
        );
        let outcome = self
            .orders
            .execute(order_id, &command, CommandMetadata::new())
            .await?
            .map_err(|e| DemoError::Refused("place order", e.to_string()))?;
        Ok(outcome.consistency_token().clone())
    }

    /// Pays an order's invoice (the billing service's command).
    pub async fn pay(
        &self,
        order_id: &str,
        payment_id: &str,
        amount_cents: i64,
    ) -> Result<ConsistencyToken, DemoError> {
        let invoice = billing::invoice_id(order_id);
        let command = (
            invoice.clone(),
            InvoiceCommand::Pay {
                payment_id: payment_id.to_owned(),
                amount_cents,
            },
        );
        let outcome = self
            .billing
            .execute(&invoice, &command, CommandMetadata::new())
            .await?
            .map_err(|e| DemoError::Refused("payment", e.to_string()))?;
        Ok(outcome.consistency_token().clone())
    }

    /// Waits until the summary of `order_id` reflects the command that returned `token`
    /// (an order's or an invoice's: both aggregates write into the summary).
    pub async fn wait_token(
        &self,
        order_id: &str,
        token: &ConsistencyToken,
    ) -> Result<OrderSummary, DemoError> {
        let waited = self
            .summaries()
            .wait_for_in(&order_id.to_owned(), token, STEP_TIMEOUT)
            .await?;
        waited
            .into_document()
            .map(|d| d.document)
            .ok_or_else(|| DemoError::Refused("wait", format!("order {order_id} was deleted")))
    }

    /// Waits until the order's summary satisfies `ready`.
    pub async fn wait_summary(
        &self,
        order_id: &str,
        ready: impl Fn(&OrderSummary) -> bool,
    ) -> Result<OrderSummary, DemoError> {
        let found: Versioned<OrderSummary> = self
            .summaries()
            .wait_until(&order_id.to_owned(), STEP_TIMEOUT, |d| ready(&d.document))
            .await?;
        Ok(found.document)
    }

    /// Stops the loops and the sync-service (offsets committed).
    pub async fn stop(self) {
        self.shutdown.cancel();
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// Timings of one run of the flow.
#[derive(Debug, Clone)]
pub struct FlowReport {
    /// The order that completed.
    pub completed: OrderSummary,
    /// The order that was cancelled (compensation).
    pub cancelled: OrderSummary,
    /// PlaceOrder command -> order on the dashboard.
    pub order_to_dashboard: Duration,
    /// PlaceOrder command -> invoice on the dashboard (orders -> inventory -> billing).
    pub order_to_invoice: Duration,
    /// Payment command -> order completed on the dashboard (billing -> orders).
    pub payment_to_completed: Duration,
    /// PlaceOrder command -> cancellation on the dashboard (orders -> inventory -> orders).
    pub order_to_cancelled: Duration,
}

/// The whole flow: restock, an order that goes through (reserve, invoice, pay,
/// complete) and one that cannot be served (stock rejected, order cancelled).
/// `run` makes the order ids unique.
pub async fn run_flow(
    stack: &Stack,
    run: &str,
    warehouse: &str,
    skus: [&str; 3],
) -> Result<FlowReport, DemoError> {
    restock(stack, warehouse, skus).await?;
    place_orders(stack, run, warehouse, skus).await
}

/// Restocks the three products (10, 5 and 1) and waits until the dashboard shows it,
/// which also proves the CDC pipeline into MongoDB is live.
pub async fn restock(stack: &Stack, warehouse: &str, skus: [&str; 3]) -> Result<(), DemoError> {
    for (sku, qty) in skus.into_iter().zip([10, 5, 1]) {
        stack.restock(warehouse, sku, qty).await?;
    }
    Ok(())
}

/// The two orders of [`run_flow`], after [`restock`].
pub async fn place_orders(
    stack: &Stack,
    run: &str,
    warehouse: &str,
    skus: [&str; 3],
) -> Result<FlowReport, DemoError> {
    let [widget, gadget, gizmo] = skus;

    // 1. An order that goes through.
    let order_id = format!("order-{run}-1");
    let started = Instant::now();
    let token = stack
        .place_order(
            &order_id,
            "ada",
            warehouse,
            vec![
                Line {
                    sku: widget.into(),
                    qty: 2,
                    unit_price_cents: 1250,
                },
                Line {
                    sku: gadget.into(),
                    qty: 1,
                    unit_price_cents: 4999,
                },
            ],
        )
        .await?;
    // The command's token: the summary reflects it once the order's part is written; its
    // lines come from another table (another topic): on the dashboard means both.
    stack.wait_token(&order_id, &token).await?;
    stack
        .wait_summary(&order_id, |s| s.lines.len() == 2)
        .await?;
    let order_to_dashboard = started.elapsed();
    let invoiced = stack
        .wait_summary(&order_id, |s| s.invoice.is_some())
        .await?;
    let order_to_invoice = started.elapsed();
    let amount = invoiced.invoice.as_ref().map_or(0, |i| i.amount_cents);
    let paid = Instant::now();
    // Billing's token, waited for on the order's summary: billing writes its part there.
    let payment = stack
        .pay(&order_id, &format!("pay-{run}-1"), amount)
        .await?;
    stack.wait_token(&order_id, &payment).await?;
    let completed = stack
        .wait_summary(&order_id, |s| {
            s.status == Some(Status::Completed) && s.payment.is_some() && s.lines.len() == 2
        })
        .await?;
    let payment_to_completed = paid.elapsed();

    // 2. An order the warehouse cannot serve: compensated by cancelling it.
    let rejected_id = format!("order-{run}-2");
    let started = Instant::now();
    stack
        .place_order(
            &rejected_id,
            "grace",
            warehouse,
            vec![Line {
                sku: gizmo.into(),
                qty: 1000,
                unit_price_cents: 99,
            }],
        )
        .await?;
    let cancelled = stack
        .wait_summary(&rejected_id, |s| {
            s.status == Some(Status::Cancelled) && s.lines.len() == 1
        })
        .await?;
    let order_to_cancelled = started.elapsed();

    Ok(FlowReport {
        completed,
        cancelled,
        order_to_dashboard,
        order_to_invoice,
        payment_to_completed,
        order_to_cancelled,
    })
}
