//! The saga runner against the real stack: PostgreSQL outbox -> Debezium outbox router ->
//! Kafka -> runner -> command in PostgreSQL. Needs `make infrastructure-up`.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::{Duration, Instant};

use cqrs_core::{
    Aggregate, AggregateStore, CommandHandler, CommandMetadata, DomainEvent, PersistenceMode,
};
use cqrs_postgres::{PgPool, PostgresConfig, PostgresStore};
use cqrs_saga::{Command, Handled, RunnerConfig, RunnerStats, Saga, SagaHandler, SagaRunner};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

/// A stack endpoint (environment, then `.env.local`, then `.env`), else the stack's default.
fn env(key: &str, default: &str) -> String {
    cqrs_test_support::env::stack_env(key).unwrap_or_else(|| default.to_owned())
}

fn database_url() -> String {
    env(
        "DATABASE_URL",
        "postgres://cqrs_admin:cqrs_admin_dev@127.0.0.1:5432/cqrs",
    )
}

fn bootstrap() -> String {
    env("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
}

// ---- the order side --------------------------------------------------------------------

#[derive(Debug, Default, Serialize, Deserialize)]
struct TestOrder {
    qty: u32,
    status: String,
}

#[derive(Debug, Clone)]
enum OrderCommand {
    Place { run: String, qty: u32 },
    Cancel { reason: String },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
enum OrderEvent {
    Placed {
        run: String,
        order_id: String,
        qty: u32,
    },
    Cancelled {
        reason: String,
    },
}

impl DomainEvent for OrderEvent {
    fn event_type(&self) -> &'static str {
        match self {
            OrderEvent::Placed { .. } => "TestOrderPlaced",
            OrderEvent::Cancelled { .. } => "TestOrderCancelled",
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("order rule")]
struct OrderError;

impl Aggregate for TestOrder {
    const TYPE: &'static str = "SagaTestOrder";
    type Command = (String, OrderCommand);
    type Event = OrderEvent;
    type Error = OrderError;

    fn handle(&self, (id, c): &(String, OrderCommand)) -> Result<Vec<OrderEvent>, OrderError> {
        Ok(match c {
            OrderCommand::Place { run, qty } => vec![OrderEvent::Placed {
                run: run.clone(),
                order_id: id.clone(),
                qty: *qty,
            }],
            OrderCommand::Cancel { reason } => vec![OrderEvent::Cancelled {
                reason: reason.clone(),
            }],
        })
    }

    fn apply(&mut self, e: &OrderEvent) {
        match e {
            OrderEvent::Placed { qty, .. } => {
                self.qty = *qty;
                self.status = "placed".into();
            }
            OrderEvent::Cancelled { .. } => self.status = "cancelled".into(),
        }
    }
}

// ---- the stock side --------------------------------------------------------------------

#[derive(Debug, Default, Serialize, Deserialize)]
struct TestStock {
    reserved: u32,
    reservations: u32,
}

#[derive(Debug, Clone)]
enum StockCommand {
    Reserve { order_id: String, qty: u32 },
    Reject { order_id: String, reason: String },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
enum StockEvent {
    Reserved { order_id: String, qty: u32 },
    Rejected { order_id: String, reason: String },
}

impl DomainEvent for StockEvent {
    fn event_type(&self) -> &'static str {
        match self {
            StockEvent::Reserved { .. } => "TestStockReserved",
            StockEvent::Rejected { .. } => "TestStockRejected",
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("only 10 available, {0} asked")]
struct OutOfStock(u32);

impl Aggregate for TestStock {
    const TYPE: &'static str = "SagaTestStock";
    type Command = StockCommand;
    type Event = StockEvent;
    type Error = OutOfStock;

    fn handle(&self, c: &StockCommand) -> Result<Vec<StockEvent>, OutOfStock> {
        match c {
            StockCommand::Reserve { qty, .. } if *qty > 10 => Err(OutOfStock(*qty)),
            StockCommand::Reserve { order_id, qty } => Ok(vec![StockEvent::Reserved {
                order_id: order_id.clone(),
                qty: *qty,
            }]),
            StockCommand::Reject { order_id, reason } => Ok(vec![StockEvent::Rejected {
                order_id: order_id.clone(),
                reason: reason.clone(),
            }]),
        }
    }

    fn apply(&mut self, e: &StockEvent) {
        if let StockEvent::Reserved { qty, .. } = e {
            self.reserved += qty;
            self.reservations += 1;
        }
    }
}

// ---- set-up ----------------------------------------------------------------------------

struct Setup {
    run: String,
    pool: PgPool,
}

impl Setup {
    async fn new() -> Setup {
        let run = uuid::Uuid::new_v4().simple().to_string()[..10].to_owned();
        let schema = format!("cdc_saga_{run}");
        let config = PostgresConfig::from_url(&database_url(), &schema).unwrap();
        let pool = PgPool::new(&config).unwrap();
        pool.get()
            .await
            .expect("PostgreSQL of the stack (make infrastructure-up)")
            .batch_execute(&format!("CREATE SCHEMA {schema}"))
            .await
            .unwrap();
        pool.migrate().await.unwrap();
        Setup { run, pool }
    }

    fn orders(&self) -> CommandHandler<TestOrder, PostgresStore<TestOrder>> {
        CommandHandler::new(PostgresStore::new(&self.pool, PersistenceMode::StateStored).unwrap())
    }

    fn stock(&self) -> CommandHandler<TestStock, PostgresStore<TestStock>> {
        CommandHandler::new(
            PostgresStore::new(&self.pool, PersistenceMode::event_sourced()).unwrap(),
        )
    }

    /// Inventory: OrderPlaced of this run -> reserve; refused -> record the rejection.
    fn stock_saga(&self) -> Saga<TestStock> {
        let run = self.run.clone();
        Saga::new("saga-test-inventory")
            .step("SagaTestOrder", "TestOrderPlaced", move |e| {
                if e.payload["run"] != run.as_str() {
                    return Ok(None);
                }
                let order_id = e.payload["order_id"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                let qty = e.payload["qty"].as_u64().unwrap_or_default() as u32;
                Ok(Some(Command::new(
                    format!("stock-{order_id}"),
                    StockCommand::Reserve { order_id, qty },
                )))
            })
            .on_rejected(|e, error: &OutOfStock| {
                let order_id = e.payload["order_id"].as_str()?.to_owned();
                Some(Command::new(
                    format!("stock-{order_id}"),
                    StockCommand::Reject {
                        order_id,
                        reason: error.to_string(),
                    },
                ))
            })
    }

    /// Orders: StockRejected of this run -> cancel (compensation).
    fn order_saga(&self) -> Saga<TestOrder> {
        let run = self.run.clone();
        Saga::new("saga-test-orders").compensate("SagaTestStock", "TestStockRejected", move |e| {
            let order_id = e.payload["order_id"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            if !order_id.starts_with(&run) {
                return Ok(None);
            }
            let reason = e.payload["reason"].as_str().unwrap_or_default().to_owned();
            Ok(Some(Command::new(
                order_id.clone(),
                (order_id, OrderCommand::Cancel { reason }),
            )))
        })
    }

    fn runner(&self, group: &str) -> RunnerConfig {
        let mut config = RunnerConfig::new(bootstrap(), format!("saga-test-{group}-{}", self.run));
        config.workers = 2;
        config
    }
}

async fn until<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn spawn(runner: SagaRunner) -> (CancellationToken, RunnerStats, tokio::task::JoinHandle<()>) {
    let stop = CancellationToken::new();
    let stats = runner.stats();
    let task = tokio::spawn({
        let stop = stop.clone();
        async move { runner.run(stop).await.unwrap() }
    });
    (stop, stats, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_redelivered_event_runs_its_command_once() {
    let s = Setup::new().await;
    let order_id = format!("{}-1", s.run);
    s.orders()
        .execute(
            &order_id,
            &(
                order_id.clone(),
                OrderCommand::Place {
                    run: s.run.clone(),
                    qty: 3,
                },
            ),
            CommandMetadata::new(),
        )
        .await
        .unwrap()
        .unwrap();

    // First consumer group: the event arrives and the reservation runs.
    let (stop, stats, task) = spawn(
        SagaRunner::new(s.runner("first"))
            .with_handler(SagaHandler::new(s.stock_saga(), s.stock())),
    );
    let stock = s.stock();
    let stock_id = format!("stock-{order_id}");
    until("the reservation", || async {
        let loaded = stock.store().load(&stock_id).await.unwrap();
        (loaded.version == 1).then_some(())
    })
    .await;
    until("the offset to be settled", || async {
        (stats.executed() == 1).then_some(())
    })
    .await;
    stop.cancel();
    task.await.unwrap();

    // A second group re-reads the topic from the start: the same event is delivered
    // again, and the command is deduplicated by its derived id.
    let (stop, again, task) = spawn(
        SagaRunner::new(s.runner("second"))
            .with_handler(SagaHandler::new(s.stock_saga(), s.stock())),
    );
    until("the redelivery", || async {
        (again.deduplicated() >= 1).then_some(())
    })
    .await;
    stop.cancel();
    task.await.unwrap();
    assert_eq!(
        again.executed(),
        0,
        "a redelivered event ran its command again"
    );
    let loaded = stock.store().load(&stock_id).await.unwrap();
    assert_eq!(loaded.version, 1);
    assert_eq!(loaded.state.reservations, 1);
    assert_eq!(loaded.state.reserved, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_refused_step_compensates_the_order() {
    let s = Setup::new().await;
    let order_id = format!("{}-big", s.run);
    s.orders()
        .execute(
            &order_id,
            &(
                order_id.clone(),
                OrderCommand::Place {
                    run: s.run.clone(),
                    qty: 50,
                },
            ),
            CommandMetadata::new(),
        )
        .await
        .unwrap()
        .unwrap();

    let (stop, stats, task) = spawn(
        SagaRunner::new(s.runner("flow"))
            .with_handler(SagaHandler::new(s.stock_saga(), s.stock()))
            .with_handler(SagaHandler::new(s.order_saga(), s.orders())),
    );
    let orders = s.orders();
    let order = until("the order to be cancelled", || async {
        let loaded = orders.store().load(&order_id).await.unwrap();
        (loaded.state.status == "cancelled").then_some(loaded)
    })
    .await;
    assert_eq!(order.version, 2);
    // inventory compensated locally (StockRejected), orders compensated on it
    until("both compensations counted", || async {
        (stats.compensated() >= 2).then_some(())
    })
    .await;
    stop.cancel();
    task.await.unwrap();
    let stock = s
        .stock()
        .store()
        .load(&format!("stock-{order_id}"))
        .await
        .unwrap();
    assert_eq!(stock.state.reservations, 0);
    assert_eq!(stock.version, 1, "only the rejection was recorded");

    // One event handled twice (a redelivery without Kafka): the command runs once.
    let handler = SagaHandler::new(s.stock_saga(), s.stock());
    let headers = [
        ("id", Some(uuid::Uuid::now_v7().to_string().into_bytes())),
        ("eventType", Some(b"TestOrderPlaced".to_vec())),
    ];
    let payload = serde_json::json!({ "run": s.run, "order_id": order_id, "qty": 5 }).to_string();
    let event = cqrs_saga::IntegrationEvent::from_record(
        "outbox.event.SagaTestOrder",
        0,
        0,
        Some(order_id.as_bytes()),
        Some(payload.as_bytes()),
        headers.iter().map(|(k, v)| (*k, v.as_deref())),
    )
    .unwrap()
    .unwrap();
    use cqrs_saga::EventHandler;
    let first = handler.handle(&event).await.unwrap();
    let second = handler.handle(&event).await.unwrap();
    assert!(
        matches!(
            first,
            Handled::Executed {
                deduplicated: false,
                ..
            }
        ),
        "{first:?}"
    );
    assert!(
        matches!(
            second,
            Handled::Executed {
                deduplicated: true,
                ..
            }
        ),
        "{second:?}"
    );
}
