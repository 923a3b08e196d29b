//! Eight agents race to claim one task: exactly one wins, and every other
//! is told who owns it. Run it against running services (`scripts/dev`):
//!
//! ```sh
//! BATON_NATS_URL=nats://127.0.0.1:4222 cargo run -p baton-agent --example claim_race
//! ```

#![allow(clippy::print_stdout)] // an example talks to the person running it

use baton_agent::{Agent, AgentOptions, ClaimError, NewTask};
use baton_core::TaskId;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("BATON_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
    let id = format!("race-{}", nuid::next());
    let planner = Agent::connect(AgentOptions::new("planner", &url)).await?;
    planner.create_task(NewTask::new(&id, "blog")?).await?;
    let task = TaskId::new(&id)?;
    let mut agents = Vec::new();
    for i in 0..8 {
        agents.push(Agent::connect(AgentOptions::new(format!("racer-{i}"), &url)).await?);
    }
    // README: claim race
    let claims = futures::future::join_all(agents.iter().map(|a| a.claim(&task))).await;
    let mut winners = Vec::new();
    for (agent, claim) in agents.iter().zip(claims) {
        match claim {
            Ok(owned) => winners.push((agent.id().clone(), owned)),
            Err(ClaimError::Lost { owner, epoch, .. }) => {
                println!("{} lost: {owner} owns {id} (epoch {epoch})", agent.id());
            }
            Err(e) => return Err(e.into()),
        }
    }
    // README: end
    assert_eq!(winners.len(), 1, "exactly one claim wins");
    println!("{} won the claim of {id}", winners[0].0);
    for (_, owned) in winners {
        owned.release("example over").await.map_err(|e| e.error)?;
    }
    for a in &agents {
        a.close().await;
    }
    planner.close().await;
    Ok(())
}
