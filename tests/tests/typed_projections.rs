//! Typed projections through the real stack: commands through `cqrs-postgres`, Debezium,
//! Kafka, the registry, the embedded sync-service with typed projections, typed read models
//! in MongoDB read through `cqrs-mongo`'s repository and its token waits.
//!
//! Covers the typed decode of the toolkit's own rows (a state-stored aggregate's state, an
//! event-sourced aggregate's events with an upcast, outbox events), rows that do not fit the
//! named types (dead-lettered with the reason, naming the field), and token waits for
//! state-stored, event-sourced and multi-source documents, one of which times out with the
//! last version seen.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod support;

use std::time::Duration;

use cqrs_core::{
    Aggregate, CommandHandler, CommandMetadata, ConsistencyToken, DomainEvent, Rejected, Upcasters,
};
use cqrs_mongo::{MongoClient, MongoConfig, MongoError, Patch, ReadModel, Waited};
use cqrs_postgres::{PgPool, PostgresConfig, PostgresStore};
use cqrs_projection::{
    EventChange, EventProjection, OutboxChange, OutboxProjection, ProjectionError, StateChange,
    StateProjection, StateView, Write,
};
use serde::{Deserialize, Serialize};
use support::{Running, Scenario, until};
use sync_service::SyncService;
use sync_service::dead_letter::Stage;
use sync_service::dead_letter::admin::{self, Selection};

const WAIT: Duration = Duration::from_secs(60);

// ---- a state-stored aggregate with an outbox --------------------------------------------

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct Wallet {
    balance: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, DomainEvent)]
#[event(name = "WalletCredited")]
struct Credited {
    amount: i64,
}

impl Aggregate for Wallet {
    const TYPE: &'static str = "TypedWallet";
    type Command = i64;
    type Event = Credited;
    type Error = Rejected;
    fn handle(&self, amount: &i64) -> Result<Vec<Credited>, Rejected> {
        Ok(vec![Credited { amount: *amount }])
    }
    fn apply(&mut self, e: &Credited) {
        self.balance += e.amount;
    }
}

/// One document per wallet, from its state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ReadModel)]
#[read_model(collection = "wallets")]
struct WalletView {
    #[serde(rename = "_id")]
    id: String,
    balance: i64,
}

impl StateView<Wallet> for WalletView {
    fn from_state(id: &str, w: &Wallet) -> Self {
        WalletView {
            id: id.into(),
            balance: w.balance,
        }
    }
}

/// The last credit of each wallet, from its outbox events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ReadModel)]
#[read_model(collection = "last_credits")]
struct LastCredit {
    #[serde(rename = "_id")]
    id: String,
    amount: i64,
}

struct LastCredits;

impl OutboxProjection for LastCredits {
    type Payload = Credited;
    type Model = LastCredit;
    fn aggregate_type(&self) -> &str {
        Wallet::TYPE
    }
    fn project(
        &self,
        e: &OutboxChange<Credited>,
    ) -> Result<Vec<Write<LastCredit>>, ProjectionError> {
        let id = e.event.aggregate_id.clone();
        Ok(vec![Write::upsert(LastCredit {
            id,
            amount: e.payload.amount,
        })])
    }
}

// ---- an event-sourced aggregate whose events changed shape ------------------------------

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct Ledger {
    entries: u32,
}

/// Version 2 of `LedgerPosted`; version 1 was `{"cents": n}` without a currency.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, DomainEvent)]
#[event(name = "LedgerPosted", version = 2)]
struct Posted {
    amount: Money,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Money {
    cents: i64,
    currency: String,
}

impl Aggregate for Ledger {
    const TYPE: &'static str = "TypedLedger";
    type Command = i64;
    type Event = Posted;
    type Error = Rejected;
    fn handle(&self, cents: &i64) -> Result<Vec<Posted>, Rejected> {
        let amount = Money {
            cents: *cents,
            currency: "CHF".into(),
        };
        Ok(vec![Posted { amount }])
    }
    fn apply(&mut self, _: &Posted) {
        self.entries += 1;
    }
}

fn upcasters() -> Upcasters {
    Upcasters::new().register_fn("LedgerPosted", 1, |v1| {
        let cents = v1["cents"].as_i64().ok_or("v1 without cents")?;
        Ok(serde_json::json!({ "amount": { "cents": cents, "currency": "EUR" } }))
    })
}

/// One document per ledger and per wallet of the same id: a wallet's state (scope
/// `wallet`) and its ledger's events (scope `ledger`) feed it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ReadModel)]
#[read_model(collection = "accounts")]
struct Account {
    #[serde(rename = "_id")]
    id: String,
    #[serde(default)]
    balance: Option<i64>,
    #[serde(default)]
    last_posted: Option<Money>,
}

struct AccountBalances;

impl StateProjection for AccountBalances {
    type Aggregate = Wallet;
    type Model = Account;
    fn name(&self) -> &str {
        "accounts.wallet"
    }
    fn project(&self, c: &StateChange<Wallet>) -> Result<Vec<Write<Account>>, ProjectionError> {
        let patch = Patch::new().set("balance", c.state.balance);
        Ok(vec![Write::scoped_patch(
            c.aggregate_id.clone(),
            "wallet",
            patch,
        )])
    }
}

struct AccountPostings;

impl EventProjection for AccountPostings {
    type Aggregate = Ledger;
    type Model = Account;
    fn name(&self) -> &str {
        "accounts.ledger"
    }
    fn upcasters(&self) -> Upcasters {
        upcasters()
    }
    fn project(&self, e: &EventChange<Posted>) -> Result<Vec<Write<Account>>, ProjectionError> {
        let patch = Patch::new().set("last_posted", &e.payload().amount);
        Ok(vec![Write::scoped_patch(e.aggregate_id(), "ledger", patch)])
    }
}

// ---- the scenario ---------------------------------------------------------------------

async fn pool(s: &Scenario) -> PgPool {
    let url = s.contract.require("DATABASE_URL");
    let pool = PgPool::new(&PostgresConfig::from_url(url, &s.schema).unwrap()).unwrap();
    pool.migrate().await.unwrap();
    pool
}

fn service(s: &Scenario) -> SyncService {
    SyncService::new(s.config(""))
        .with_state_view::<Wallet, WalletView>(&s.schema)
        .with_outbox_projection(LastCredits)
        .with_state_projection(&s.schema, AccountBalances)
        .with_event_projection(&s.schema, AccountPostings)
}

async fn reader(s: &Scenario) -> MongoClient {
    let config =
        MongoConfig::new(s.contract.require("MONGODB_URI")).with_default_database(&s.database);
    MongoClient::connect(config).await.unwrap()
}

fn document<M>(waited: Waited<M>) -> M {
    match waited {
        Waited::Document(d) => d.document,
        Waited::Deleted { version } => panic!("deleted at {version}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn typed_projections_from_state_events_and_outbox_with_token_waits() {
    let s = Scenario::new("typed").await;
    let _cleanup = s.cleanup_guard();
    let pool = pool(&s).await;
    let wallets = CommandHandler::new(PostgresStore::<Wallet>::state_stored(&pool).unwrap());
    let ledgers = CommandHandler::new(
        PostgresStore::<Ledger>::event_sourced(&pool)
            .unwrap()
            .with_upcasters(upcasters()),
    );
    let running = Running::start(service(&s));
    let mongo = reader(&s).await;
    let id = format!("w-{}", support::suffix());

    // State-stored: the token of the last command is waited for on the wallet's document,
    // which CDC guards by WAL positions, not by the aggregate version.
    wallets
        .execute(&id, &30, CommandMetadata::new())
        .await
        .unwrap()
        .unwrap();
    let done = wallets
        .execute(&id, &12, CommandMetadata::new())
        .await
        .unwrap()
        .unwrap();
    let token = done.consistency_token().clone();
    assert_eq!(token.version, 2);
    let view = document(
        mongo
            .repository::<WalletView>()
            .wait_for(&token, WAIT)
            .await
            .unwrap(),
    );
    assert_eq!(
        view,
        WalletView {
            id: id.clone(),
            balance: 42
        }
    );

    // A token handed over as text (from another service), then one the read side has not
    // reached: the timeout names the last version of the aggregate it saw.
    let text = token.to_string();
    let parsed: ConsistencyToken = text.parse().unwrap();
    assert!(
        mongo
            .repository::<WalletView>()
            .wait_for(&parsed, WAIT)
            .await
            .is_ok()
    );
    let ahead = ConsistencyToken::new(Wallet::TYPE, &id, 5);
    match mongo
        .repository::<WalletView>()
        .wait_for(&ahead, Duration::from_millis(500))
        .await
    {
        Err(MongoError::WaitTimeout {
            wanted, last_seen, ..
        }) => {
            assert_eq!(wanted.position, 5);
            assert_eq!(last_seen.map(|v| v.position), Some(2));
        }
        other => panic!("expected a timeout, got {other:?}"),
    }

    // Outbox events, typed payload: the same token, through the outbox topic.
    let credit = document(
        mongo
            .repository::<LastCredit>()
            .wait_for(&token, WAIT)
            .await
            .unwrap(),
    );
    assert_eq!(credit.amount, 12);

    // Event-sourced, with an upcast: an event stored in version 1 (written by an older
    // release) and one in version 2 both reach the document typed as version 2.
    s.sql(&format!(
        "INSERT INTO {{s}}.events (aggregate_type, aggregate_id, sequence, event_id, event_type,
             event_version, payload, occurred_at)
         VALUES ('TypedLedger', '{id}', 1, gen_random_uuid(), 'LedgerPosted', 1,
             '{{\"cents\": 500}}', now());
         INSERT INTO {{s}}.aggregates (aggregate_type, aggregate_id, version)
         VALUES ('TypedLedger', '{id}', 1);"
    ))
    .await;
    let old = ConsistencyToken::new(Ledger::TYPE, &id, 1);
    let accounts = mongo.repository::<Account>();
    let account = document(accounts.wait_for(&old, WAIT).await.unwrap());
    assert_eq!(
        account.last_posted,
        Some(Money {
            cents: 500,
            currency: "EUR".into()
        })
    );
    let posted = ledgers
        .execute(&id, &700, CommandMetadata::new())
        .await
        .unwrap()
        .unwrap();
    let ledger_token = posted.consistency_token().clone();
    assert_eq!(ledger_token.version, 2);
    let account = document(accounts.wait_for(&ledger_token, WAIT).await.unwrap());
    assert_eq!(
        account.last_posted,
        Some(Money {
            cents: 700,
            currency: "CHF".into()
        })
    );
    // Multi-source: the same document also reflects the wallet, each source with its own
    // version, each token waited for on it.
    assert_eq!(account.balance, Some(42));
    assert!(accounts.wait_for_in(&id, &token, WAIT).await.is_ok());

    // Rows that do not fit the named types go to the dead letters with the reason.
    let bad = format!("bad-{}", support::suffix());
    s.sql(&format!(
        "INSERT INTO {{s}}.aggregates (aggregate_type, aggregate_id, version, state, snapshot_version)
         VALUES ('TypedWallet', '{bad}', 1, '{{\"balance\": \"lots\"}}', 1);
         INSERT INTO {{s}}.events (aggregate_type, aggregate_id, sequence, event_id, event_type,
             event_version, payload, occurred_at)
         VALUES ('TypedLedger', '{bad}', 1, gen_random_uuid(), 'LedgerPosted', 2,
             '{{\"amount\": {{\"cents\": \"many\"}}}}', now());"
    ))
    .await;
    let letters = until("the two dead letters", WAIT, || async {
        let pending = admin::list(&s.config(""), &Selection::default())
            .await
            .unwrap();
        if pending.len() >= 2 {
            Ok(pending)
        } else {
            Err(format!("{pending:?}"))
        }
    })
    .await;
    let errors: Vec<String> = letters.iter().map(|d| d.error.clone()).collect();
    assert!(letters.iter().all(|d| d.stage == Stage::Map), "{letters:?}");
    // One per message: the first projection a row does not fit refuses it.
    assert!(
        errors
            .iter()
            .any(|e| e.contains("state of TypedWallet") && e.contains("field `balance`")),
        "{errors:?}"
    );
    assert!(
        errors
            .iter()
            .any(|e| e.contains("LedgerPosted") && e.contains("field `amount.cents`")),
        "{errors:?}"
    );
    assert!(
        mongo
            .repository::<WalletView>()
            .get(&bad)
            .await
            .unwrap()
            .is_none(),
        "nothing of the bad row was written"
    );

    running.stop().await;
    s.cleanup().await;
}
