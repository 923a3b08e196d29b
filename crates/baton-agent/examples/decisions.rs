//! Reading and recording decisions: an agent that recorded over a decision
//! it had not read is refused, and told to read again. Run it against
//! running services (`scripts/dev`):
//!
//! ```sh
//! BATON_NATS_URL=nats://127.0.0.1:4222 cargo run -p baton-agent --example decisions
//! ```

#![allow(clippy::print_stdout)] // an example talks to the person running it

use baton_agent::{Agent, AgentOptions, ContextError};
use baton_core::WorkflowId;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("BATON_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
    let workflow = WorkflowId::new(format!("blog-{}", nuid::next()))?;
    let alice = Agent::connect(AgentOptions::new("alice", &url)).await?;
    let bob = Agent::connect(AgentOptions::new("bob", &url)).await?;
    // README: decisions
    let a_record = alice.context(&workflow);
    let b_record = bob.context(&workflow);
    a_record.read().await?; // read the decisions first
    b_record.read().await?;
    let v1 = a_record
        .record("Use British spelling", "All posts use en-GB.", None)
        .await?;
    // Bob read before Alice recorded: his decision would ignore hers.
    match b_record
        .record("Use American spelling", "en-US", None)
        .await
    {
        Err(ContextError::Stale { latest, .. }) => {
            println!("bob must read again (latest {latest})")
        }
        other => return Err(format!("expected a stale refusal, got {other:?}").into()),
    }
    let snapshot = b_record.read().await?; // now bob has read v1 ...
    let v2 = b_record
        .record("Use American spelling after all", "en-US", Some(v1))
        .await?; // ... and may supersede it
    // README: end
    assert_eq!(snapshot.decisions.len(), 1);
    println!("decisions at versions {v1} and {v2} in {workflow}");
    alice.close().await;
    bob.close().await;
    Ok(())
}
