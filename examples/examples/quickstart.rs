//! Quickstart: one aggregate in PostgreSQL, one read model in MongoDB, kept in sync by
//! Debezium and the sync-service. `cargo run -p cqrs-examples --example quickstart`.

use std::time::{Duration, Instant};

use bson::{Bson, doc};
use cqrs_core::{Aggregate, CommandHandler, CommandMetadata, DomainEvent, PersistenceMode};
use cqrs_core::{Projection, ReadModelWrite, Target};
use cqrs_postgres::{PgPool, PostgresConfig, PostgresStore};
use serde::{Deserialize, Serialize};
use sync_service::{SyncService, config::SyncConfig, envelope::Change, map::MongoWrite};

// 1. Write side: the aggregate decides events from a command, then applies them.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Account {
    balance: i64,
}

struct Deposit(i64);
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Deposited {
    amount: i64,
}

impl DomainEvent for Deposited {
    fn event_type(&self) -> &'static str {
        "MoneyDeposited" // stable name, stored with the event and sent through the outbox
    }
}

#[derive(Debug, thiserror::Error)]
#[error("deposits must be positive")]
struct NotPositive;

impl Aggregate for Account {
    const TYPE: &'static str = "Account";
    type Command = Deposit;
    type Event = Deposited;
    type Error = NotPositive;
    fn handle(&self, Deposit(amount): &Deposit) -> Result<Vec<Deposited>, NotPositive> {
        match *amount {
            ..=0 => Err(NotPositive),
            amount => Ok(vec![Deposited { amount }]),
        }
    }
    fn apply(&mut self, event: &Deposited) {
        self.balance += event.amount;
    }
}

// 2. Read side: each captured row of `<schema>.aggregates` (the state-stored account)
// becomes a `balances` document, guarded by the row's WAL position (change.version).
struct Balances;

impl Projection for Balances {
    type Input = Change;
    type Write = MongoWrite;
    type Error = std::convert::Infallible;
    fn name(&self) -> &str {
        "balances"
    }
    fn project(&self, change: &Change) -> Result<Vec<MongoWrite>, Self::Error> {
        let Some(row) = &change.after else {
            return Ok(vec![]);
        };
        let (Ok(id), Ok(version), Ok(state)) = (
            row.get_str("aggregate_id"),
            row.get_i64("version"),
            row.get_document("state"),
        ) else {
            return Ok(vec![]);
        };
        let balance = state.get("balance").cloned().unwrap_or(Bson::Null);
        Ok(vec![ReadModelWrite::Replace {
            target: Target::collection("balances"),
            id: id.into(),
            version: change.version,
            document: doc! { "balance": balance, "account_version": version },
        }])
    }
}

const SYNC: &str = r#"
http = { listen = "" }
schema_registry = { url = "${SCHEMA_REGISTRY_URL:-http://127.0.0.1:8081}" }
mongodb = { uri = "${MONGODB_URI:-mongodb://127.0.0.1:27017/?directConnection=true}", database = "quickstart" }
[kafka]
bootstrap_servers = "${KAFKA_BOOTSTRAP_SERVERS:-127.0.0.1:9092}"
group_id = "quickstart"
topics = ["cqrs.cdc_quickstart.aggregates"]
session_timeout_ms = 6000
properties = { "topic.metadata.refresh.interval.ms" = "500" }
"#;

/// Deposits twice and waits until MongoDB shows the balance; returns it.
pub async fn run() -> Result<i64, Box<dyn std::error::Error>> {
    let env = cqrs_examples::env::Env::load();
    // 3. One schema per service; `cdc_*` schemas are captured by the stack's connector.
    let url = env.get("DATABASE_URL");
    let pool = PgPool::new(&PostgresConfig::from_url(&url, "cdc_quickstart")?)?;
    let create = "CREATE SCHEMA IF NOT EXISTS cdc_quickstart";
    pool.get().await?.batch_execute(create).await?;
    pool.migrate().await?; // events, aggregates, outbox, processed_commands
    let store = PostgresStore::<Account>::new(&pool, PersistenceMode::StateStored)?;
    let accounts = CommandHandler::new(store);

    // 4. Commands: the outer `?` is infrastructure, the inner one the domain rule.
    let id = format!("acc-{}", uuid::Uuid::now_v7());
    let mut version = 0;
    for deposit in [Deposit(70), Deposit(30)] {
        let done = accounts.execute(&id, &deposit, CommandMetadata::new());
        version = done.await??.version();
    }
    let started = Instant::now();

    // 5. The sync-service, embedded: CDC topic of the aggregates table -> `balances`.
    let service = SyncService::new(SyncConfig::from_toml_with_env(SYNC, std::env::vars())?)
        .with_projection(Balances, &["cdc_quickstart.aggregates"]);
    let stop = tokio_util::sync::CancellationToken::new();
    let sync = tokio::spawn(service.run(stop.clone()));

    // 6. Read your own write: wait until the document reflects the command's version.
    let mongo = mongodb::Client::with_uri_str(env.get("MONGODB_URI")).await?;
    let db = mongo.database("quickstart");
    let balances = db.collection::<bson::Document>("balances");
    let wanted = doc! { "_id": &id, "account_version": { "$gte": version as i64 } };
    let balance = loop {
        if let Some(d) = balances.find_one(wanted.clone()).await? {
            break d
                .get_i32("balance")
                .map(i64::from)
                .or(d.get_i64("balance"))?;
        }
        if started.elapsed() > Duration::from_secs(60) {
            return Err("the read model did not catch up within 60 s".into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let ms = started.elapsed().as_millis();
    println!("{id}: balance {balance} in MongoDB, {ms} ms after the last command");
    stop.cancel();
    sync.await??;
    Ok(balance)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    run().await.map(|_| ())
}
