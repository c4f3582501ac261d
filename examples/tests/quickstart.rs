//! Runs the quickstart example's logic against the stack, so it never rots.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs, dead_code)]

#[path = "../examples/quickstart.rs"]
mod quickstart;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quickstart_runs_against_the_stack() {
    // The typed read model, returned by the repository's wait for the last command's token.
    let balance = quickstart::run().await.unwrap_or_else(|e| {
        panic!("quickstart failed (is the stack up? make infrastructure-up): {e}")
    });
    assert_eq!(balance.balance, 100);
}
