//! A writer hands a draft to an editor: create, claim, heartbeat, offer,
//! accept, complete. Run it against running services (`scripts/dev`):
//!
//! ```sh
//! BATON_NATS_URL=nats://127.0.0.1:4222 cargo run -p baton-agent --example handoff
//! ```
//!
//! Every run uses a fresh task id, so it can be run again and again.

#![allow(clippy::print_stdout)] // an example talks to the person running it

use baton_agent::{Agent, AgentOptions, NewTask};
use baton_core::{AgentId, TaskId};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("BATON_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
    let id = format!("post-{}", nuid::next());
    // README: handoff
    let writer = Agent::connect(AgentOptions::new("writer", &url)).await?;
    let editor = Agent::connect(AgentOptions::new("editor", &url)).await?;
    writer
        .create_task(NewTask::new(&id, "blog")?.title("Launch post"))
        .await?;
    let task = TaskId::new(&id)?;

    let draft = writer.claim(&task).await?; // Err(ClaimError::Lost { owner, .. }) if taken
    draft.heartbeat("outline done", true).await?; // automatic heartbeats run meanwhile
    let offer = draft // `draft` is consumed: the writer cannot touch the task now
        .offer_to_agent(&AgentId::new("editor")?, "s3://drafts/post.md", None)
        .await?;

    let review = editor.accept_handoff(&task).await?; // the editor owns it at the next epoch
    review
        .complete("s3://published/post.md", "edited and published")
        .await?;
    // README: end
    println!(
        "task {id}: offered at seq {}, completed by editor",
        offer.seq
    );
    writer.close().await;
    editor.close().await;
    Ok(())
}
