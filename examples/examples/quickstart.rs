//! Quickstart: an aggregate in PostgreSQL, a typed read model in MongoDB, synced through Debezium.
use cqrs_core::{Aggregate, CommandHandler, CommandMetadata, DomainEvent, Rejected};
use cqrs_mongo::{MongoClient, MongoConfig, ReadModel};
use cqrs_postgres::{PgPool, PostgresConfig, PostgresStore};
use serde::{Deserialize, Serialize};
use sync_service::{SyncService, config::SyncConfig};

// 1. Write side: the aggregate decides events from a command, then applies them.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct Account {
    balance: i64,
}
pub(crate) struct Deposit(pub(crate) i64);
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, DomainEvent)]
#[event(name = "MoneyDeposited")] // the stable name stored with the event
pub(crate) struct Deposited {
    amount: i64,
}
impl Aggregate for Account {
    const TYPE: &'static str = "Account";
    type Command = Deposit;
    type Event = Deposited;
    type Error = Rejected;
    fn handle(&self, Deposit(amount): &Deposit) -> Result<Vec<Deposited>, Rejected> {
        let ok = (*amount > 0).then(|| vec![Deposited { amount: *amount }]);
        ok.ok_or(Rejected::because("deposits must be positive"))
    }
    fn apply(&mut self, event: &Deposited) {
        self.balance += event.amount;
    }
}

/// 2. Read side: a typed MongoDB document per account, rebuilt from its state.
#[derive(Debug, Serialize, Deserialize, ReadModel)]
#[read_model(collection = "balances")]
pub struct Balance {
    #[serde(rename = "_id")]
    id: String,
    /// The account's balance.
    pub balance: i64,
}
impl cqrs_projection::StateView<Account> for Balance {
    fn from_state(id: &str, account: &Account) -> Self {
        let (id, balance) = (id.to_owned(), account.balance);
        Balance { id, balance }
    }
}

/// Deposits twice, then waits until the read model reflects the last command.
pub async fn run() -> Result<Balance, Box<dyn std::error::Error>> {
    cqrs_examples::env::load_dotenv(); // the stack's endpoints, from `.env`
    // 3. One schema per service (the stack's connector captures every `cdc_*` schema).
    let pool = PgPool::new(&PostgresConfig::from_env("cdc_quickstart")?)?;
    pool.migrate().await?; // the schema, its events, aggregates and outbox tables
    let accounts = CommandHandler::new(PostgresStore::<Account>::state_stored(&pool)?);
    // 4. Commands: the outer `?` is infrastructure, the inner one the domain rule.
    let id = format!("acc-{}", uuid::Uuid::now_v7());
    let meta = CommandMetadata::new;
    accounts.execute(&id, &Deposit(70), meta()).await??;
    let done = accounts.execute(&id, &Deposit(30), meta()).await??;
    // 5. The sync-service, embedded: the account rows (a Debezium topic) into `balances`.
    let config = SyncConfig::from_env("quickstart", "quickstart")?;
    let sync = SyncService::new(config).with_state_view::<Account, Balance>("cdc_quickstart");
    let running = sync.spawn();
    // 6. Read your own write: wait until the document reflects the command's token.
    let mongo = MongoClient::connect(MongoConfig::from_env("quickstart")?).await?;
    let balances = mongo.repository::<Balance>();
    let waited = balances.wait_for(done.consistency_token(), MINUTE).await?;
    let balance = waited.into_document().ok_or("deleted")?.document;
    println!("{id}: balance {} in MongoDB", balance.balance);
    running.stop().await?;
    Ok(balance)
}
const MINUTE: std::time::Duration = std::time::Duration::from_secs(60);

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    run().await.map(|_| ())
}
