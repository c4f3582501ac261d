//! Starts the whole stack (Vault included), prints when each step was done, and removes it:
//! how long a test binary waits for its stack on this machine.
//!
//! ```sh
//! cargo run -p cqrs-toolkit-testcontainers --example stack_up [-- ROUNDS]
//! ```

use std::time::Instant;

use cqrs_testcontainers::CqrsStack;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let rounds: usize = std::env::args().nth(1).map_or(Ok(1), |r| r.parse())?;
    for round in 1..=rounds {
        let stack = CqrsStack::builder().with_vault().start().await?;
        let steps: Vec<String> = stack
            .timeline()
            .iter()
            .map(|(step, at)| format!("{step} {:.1}s", at.as_secs_f64()))
            .collect();
        println!(
            "round {round}: up in {:.1}s ({})",
            stack.started_in().as_secs_f64(),
            steps.join(", ")
        );
        let t = Instant::now();
        stack.stop().await;
        println!(
            "round {round}: removed in {:.1}s",
            t.elapsed().as_secs_f64()
        );
    }
    Ok(())
}
