//! The article's editor, researcher and publisher on one draft file: one
//! writer at a time, readers together, and a fenced store that refuses a
//! late write from a writer whose lease lapsed. Run it against running
//! services (`scripts/dev`):
//!
//! ```sh
//! BATON_NATS_URL=nats://127.0.0.1:4222 cargo run -p baton-agent --example leases
//! ```

#![allow(clippy::print_stdout)] // an example talks to the person running it

use std::time::Duration;

use baton_agent::{
    Agent, AgentOptions, LeaseError, LeaseOptions, core::lease::ArtifactName,
    core::lease::LeaseMode, fence::FencedDir,
};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("BATON_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
    let editor = Agent::connect(AgentOptions::new("editor", &url)).await?;
    let researcher = Agent::connect(AgentOptions::new("researcher", &url)).await?;
    let publisher = Agent::connect(AgentOptions::new("publisher", &url)).await?;
    let dir = std::env::temp_dir().join(format!("baton-leases-{}", nuid::next()));
    // A new name each run, so the example can run again at once.
    let file = format!("drafts/post-{}.md", nuid::next());
    // README: leases
    let store = FencedDir::new(&dir); // files whose writes carry a lease token
    let name = ArtifactName::new(&file)?;

    let editing = editor.acquire(&file, LeaseMode::Exclusive).await?; // renewed while held
    store.write(&name, editing.token(), b"draft v2")?;
    match publisher.acquire(&file, LeaseMode::Exclusive).await {
        Err(LeaseError::Held { holder, since, .. }) => {
            println!("publisher waits: {holder} holds {file} since {since}")
        }
        other => return Err(format!("expected Held, got {other:?}").into()),
    }
    editing.release("revision done").await?;

    // Readers share the file once the writer is gone.
    let reading = researcher.acquire(&file, LeaseMode::Shared).await?;
    let checking = publisher.acquire(&file, LeaseMode::Shared).await?;
    reading.release("read").await?;
    checking.release("read").await?;

    // A writer that stops renewing (a stuck tool call) loses the file ...
    let quick = LeaseOptions {
        ttl: Duration::from_secs(1),
        auto_renew: false,
        ..LeaseOptions::default()
    };
    let stuck = editor
        .acquire_with(&file, LeaseMode::Exclusive, quick)
        .await?;
    let publishing = loop {
        match publisher.acquire(&file, LeaseMode::Exclusive).await {
            Ok(lease) => break lease,
            Err(LeaseError::Held { .. }) => tokio::time::sleep(Duration::from_millis(200)).await,
            Err(e) => return Err(e.into()),
        }
    };
    store.write(&name, publishing.token(), b"published")?;
    // ... and its late write, with the older token, is refused.
    let late = store.write(&name, stuck.token(), b"draft v3");
    println!("late write refused: {}", late.is_err());
    // README: end
    assert!(late.is_err());
    assert_eq!(store.read(&name)?, b"published");
    publishing.release("published").await?;
    stuck.detach();
    for agent in [&editor, &researcher, &publisher] {
        agent.close().await;
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
