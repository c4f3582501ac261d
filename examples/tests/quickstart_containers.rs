//! The quickstart's account service (`examples/quickstart.rs`) tested as a user tests their
//! own service: the whole CDC stack in containers (`cqrs-testcontainers`), shared by the
//! tests of this file, each test in a scope of its own. No `.env`, no running stack needed:
//! only a Docker engine.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs, dead_code)]

#[path = "../examples/quickstart.rs"]
mod quickstart;

use std::time::Duration;

use cqrs_core::{CommandHandler, CommandMetadata};
use cqrs_postgres::{PgPool, PostgresStore};
use cqrs_testcontainers::{CqrsStack, Service};
use quickstart::{Account, Balance, Deposit};
use sync_service::SyncService;

type Result<T = ()> = std::result::Result<T, Box<dyn std::error::Error>>;

const MINUTE: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deposit_shows_in_the_balance() -> Result {
    let stack = CqrsStack::shared().await?; // started once for this file's tests
    let scope = stack.scope("accounts").await?; // a schema, group and database of its own
    let pool = PgPool::new(&scope.postgres_config()?)?;
    pool.migrate().await?;
    let accounts = CommandHandler::new(PostgresStore::<Account>::state_stored(&pool)?);
    let sync = SyncService::new(scope.sync_config())
        .with_state_view::<Account, Balance>(scope.schema())
        .spawn();

    accounts
        .execute("acc-1", &Deposit(70), CommandMetadata::new())
        .await??;
    let done = accounts
        .execute("acc-1", &Deposit(30), CommandMetadata::new())
        .await??;

    let balances = scope.mongo_client().await?.repository::<Balance>();
    let read = balances.wait_for(done.consistency_token(), MINUTE).await?;
    assert_eq!(
        read.into_document().expect("not deleted").document.balance,
        100
    );
    sync.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mongodb_down_and_up_again_loses_no_deposit() -> Result {
    let stack = CqrsStack::shared().await?;
    // alone on the stack while MongoDB is down: the other tests of the file wait
    let scope = stack.exclusive_scope("outage").await?;
    let pool = PgPool::new(&scope.postgres_config()?)?;
    pool.migrate().await?;
    let accounts = CommandHandler::new(PostgresStore::<Account>::state_stored(&pool)?);
    let sync = SyncService::new(scope.sync_config())
        .with_state_view::<Account, Balance>(scope.schema())
        .spawn();
    let balances = scope.mongo_client().await?.repository::<Balance>();
    let first = accounts
        .execute("acc-2", &Deposit(1), CommandMetadata::new())
        .await??;
    balances.wait_for(first.consistency_token(), MINUTE).await?;

    scope.stop_service(Service::MongoDb).await?;
    // the write side does not depend on the read side: every command succeeds meanwhile
    let mut last = first;
    for amount in 2..=10 {
        last = accounts
            .execute("acc-2", &Deposit(amount), CommandMetadata::new())
            .await??;
    }
    tokio::time::sleep(Duration::from_secs(3)).await; // the sync-service meets the outage
    scope.start_service(Service::MongoDb).await?;

    let read = balances
        .wait_for(last.consistency_token(), 2 * MINUTE)
        .await?;
    let balance = read.into_document().expect("not deleted").document;
    assert_eq!(
        balance.balance,
        (1..=10).sum::<i64>(),
        "every deposit is in the balance"
    );
    assert!(!sync.is_finished(), "the sync-service rode out the outage");
    sync.stop().await?;
    Ok(())
}
