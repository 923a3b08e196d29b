//! `baton dev --demo`: simulated agents run a small content pipeline
//! (draft → review → publish) and play each failure mode, while Baton
//! catches it live:
//!
//! 1. two writers race for the same draft: one claim wins, the loser is
//!    told who owns it (shared-state conflict, prevented);
//! 2. the editor offers the draft to review and nobody accepts:
//!    `HANDOFF_NOT_ACCEPTED` fires, then resolves when review accepts late
//!    (silent completion);
//! 3. the publisher works from a decision record that changed under it:
//!    `STALE_CONTEXT` fires (context divergence);
//! 4. a non-owner tries to publish the draft: `OWNERSHIP_VIOLATION`;
//! 5. the article's own example, with artifact leases: the publisher cannot
//!    take the draft file while the editor holds it, readers share it once
//!    the editor lets go, and a stuck editor's lease is reported
//!    (`LEASE_EXPIRED`) and freed.
//!
//! Windows are short so the whole demo takes well under a minute.

use std::time::Duration;

use anyhow::Context as _;
use baton_agent::{
    Agent, AgentOptions, ClaimError, LeaseError, LeaseOptions, NewTask, core::lease::LeaseMode,
};
use baton_core::{
    AgentId, Alert, AlertKind, AlertState, Event, EventBody, StageName, TaskId, WorkflowId,
    subjects,
};
use baton_jetstream::{NatsOptions, Retry, publish_durable};
use futures::StreamExt;
use tokio::sync::mpsc;

use crate::output::{Color, paint};

/// How long the unaccepted handoff waits before the reviewer accepts.
const ACCEPT_WITHIN: Duration = Duration::from_secs(3);

fn say(step: &str, text: &str) {
    println!("{} {text}", paint(&format!("[demo {step}]"), Color::Bold));
}

fn caught(kind: AlertKind, a: &Alert) {
    let label = match a.state {
        AlertState::Firing => paint(
            &format!("CAUGHT {}", kind.as_str().to_uppercase()),
            Color::Red,
        ),
        AlertState::Resolved => paint(
            &format!("RESOLVED {}", kind.as_str().to_uppercase()),
            Color::Green,
        ),
    };
    println!("           {label}: {}", a.summary);
}

/// Waits for an alert of `kind` in `state` about `task`.
async fn expect(
    rx: &mut mpsc::UnboundedReceiver<Alert>,
    kind: AlertKind,
    state: AlertState,
    task: &TaskId,
) -> anyhow::Result<Alert> {
    let wait = async {
        while let Some(a) = rx.recv().await {
            if a.kind == kind && a.state == state && a.task.as_ref() == Some(task) {
                return Some(a);
            }
        }
        None
    };
    tokio::time::timeout(Duration::from_secs(30), wait)
        .await
        .ok()
        .flatten()
        .with_context(|| {
            format!(
                "the demo expected {kind} ({}) for {task} and it did not come",
                state.as_str()
            )
        })
}

async fn agent(options: &NatsOptions, id: &str) -> anyhow::Result<Agent> {
    let mut o = AgentOptions::new(id, options.servers.clone());
    o.nats = options.clone();
    o.nats.name = Some(format!("baton-demo-{id}"));
    o.lease = Duration::from_secs(3);
    Ok(Agent::connect(o).await?)
}

/// Runs the four scenes.
pub async fn run(options: &NatsOptions) -> anyhow::Result<()> {
    let client = options.connect().await?;
    let mut sub = client.subscribe(subjects::ALERTS_ALL).await?;
    let (tx, mut rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(msg) = sub.next().await {
            if let Ok(a) = Alert::decode(&msg.payload) {
                let _ = tx.send(a);
            }
        }
    });
    let run_id = nuid::next().to_string()[..6].to_lowercase();
    let blog = WorkflowId::new(format!("blog-{run_id}"))?;
    let planner = agent(options, "planner").await?;
    let writer_a = agent(options, "writer-a").await?;
    let writer_b = agent(options, "writer-b").await?;
    let reviewer = agent(options, "reviewer").await?;
    let publisher = agent(options, "publisher").await?;
    let intern = agent(options, "intern").await?;
    let draft = TaskId::new(format!("draft-{run_id}"))?;
    let publish_task = TaskId::new(format!("publish-{run_id}"))?;

    println!();
    say(
        "0",
        &format!("A content pipeline for workflow {blog}: draft -> review -> publish."),
    );
    planner
        .create_task(NewTask {
            task: draft.clone(),
            workflow: blog.clone(),
            stage: Some(StageName::new("draft")?),
            title: "Launch announcement".into(),
            assignee: None,
            windows: Default::default(),
            artifacts: Vec::new(),
        })
        .await?;
    planner.context(&blog).read().await?;
    planner
        .context(&blog)
        .record(
            "Publish on Tuesday",
            "The launch post goes out Tuesday 09:00.",
            None,
        )
        .await?;
    say(
        "0",
        "planner created the draft task and recorded \"Publish on Tuesday\" in the decision record.",
    );

    // 1. The race.
    println!();
    say(
        "1",
        "writer-a and writer-b both try to take the draft at the same moment ...",
    );
    for w in [&writer_a, &writer_b, &reviewer, &publisher] {
        w.context(&blog).read().await?;
    }
    let (ra, rb) = tokio::join!(writer_a.claim(&draft), writer_b.claim(&draft));
    let (winner, loss) = match (ra, rb) {
        (Ok(o), Err(e)) | (Err(e), Ok(o)) => (o, e),
        (Ok(_), Ok(_)) => anyhow::bail!("both claims succeeded: ownership is broken"),
        (Err(a), Err(b)) => anyhow::bail!("both claims failed: {a}; {b}"),
    };
    let owner_id = match &loss {
        ClaimError::Lost { owner, .. } => {
            println!(
                "           {}: {loss}",
                paint("CAUGHT CLAIM RACE", Color::Green)
            );
            say(
                "1",
                &format!(
                    "exactly one claim was stored: {owner} owns the draft at epoch {}.",
                    winner.epoch()
                ),
            );
            owner.clone()
        }
        other => anyhow::bail!("unexpected claim error: {other}"),
    };
    winner.heartbeat("first draft written", true).await?;

    // 2. The silent gap.
    println!();
    say(
        "2",
        &format!(
            "{owner_id} finishes and offers the draft to the reviewer (accept within {}s) ... the reviewer is busy.",
            ACCEPT_WITHIN.as_secs()
        ),
    );
    winner
        .offer_to_agent(
            &AgentId::new("reviewer")?,
            "s3://drafts/launch.md",
            Some(ACCEPT_WITHIN),
        )
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let a = expect(
        &mut rx,
        AlertKind::HandoffNotAccepted,
        AlertState::Firing,
        &draft,
    )
    .await?;
    caught(AlertKind::HandoffNotAccepted, &a);
    say("2", "the reviewer notices and accepts, late.");
    let review = reviewer.accept_handoff(&draft).await?;
    let r = expect(
        &mut rx,
        AlertKind::HandoffNotAccepted,
        AlertState::Resolved,
        &draft,
    )
    .await?;
    caught(AlertKind::HandoffNotAccepted, &r);

    // 3. Context divergence.
    println!();
    say(
        "3",
        "the publisher read the decision record earlier (\"Publish on Tuesday\").",
    );
    planner
        .create_task(NewTask {
            task: publish_task.clone(),
            workflow: blog.clone(),
            stage: Some(StageName::new("publish")?),
            title: "Publish the launch post".into(),
            assignee: Some(AgentId::new("publisher")?),
            windows: Default::default(),
            artifacts: Vec::new(),
        })
        .await?;
    reviewer.context(&blog).read().await?;
    reviewer
        .context(&blog)
        .record(
            "Embargo: hold until Friday",
            "Legal asked to hold the announcement until Friday.",
            None,
        )
        .await?;
    say(
        "3",
        "meanwhile the reviewer records \"Embargo: hold until Friday\"; the publisher goes ahead anyway.",
    );
    let publishing = publisher.claim(&publish_task).await?;
    let a = expect(
        &mut rx,
        AlertKind::StaleContext,
        AlertState::Firing,
        &publish_task,
    )
    .await?;
    caught(AlertKind::StaleContext, &a);
    publishing
        .release("holding for the embargo")
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;

    // 4. A non-owner acts.
    println!();
    say(
        "4",
        "an intern, told the article is ready, marks the draft published without owning it ...",
    );
    let rogue = Event::new(
        nuid::next().to_string(),
        draft.clone(),
        blog.clone(),
        AgentId::new("intern")?,
        EventBody::Completed {
            output_location: "https://blog.example/launch".into(),
            summary: "published".into(),
        },
    );
    let js = async_nats::jetstream::new(intern.client().clone());
    publish_durable(
        &js,
        &subjects::event(&rogue.task, &rogue.agent),
        rogue.encode_to_vec().into(),
        &rogue.event_id,
        None,
        Retry::default(),
    )
    .await?;
    let a = expect(
        &mut rx,
        AlertKind::OwnershipViolation,
        AlertState::Firing,
        &draft,
    )
    .await?;
    caught(AlertKind::OwnershipViolation, &a);
    say(
        "4",
        "the refused event changed nothing: the reviewer still owns the draft.",
    );

    // 5. Shared artifacts: the draft file itself has one writer.
    println!();
    let file = "drafts/launch.md";
    let scoped = |ttl: Duration, auto_renew: bool| LeaseOptions {
        workflow: Some(blog.clone()),
        ttl,
        task: Some(draft.clone()),
        auto_renew,
        ..LeaseOptions::default()
    };
    let editing = reviewer
        .acquire_with(
            file,
            LeaseMode::Exclusive,
            scoped(Duration::from_secs(15), true),
        )
        .await?;
    say(
        "5",
        &format!(
            "the reviewer, now editing, holds the exclusive lease on {file} (token {}); the publisher tries to take the file mid-revision ...",
            editing.token()
        ),
    );
    match publisher
        .acquire_with(
            file,
            LeaseMode::Exclusive,
            scoped(Duration::from_secs(15), true),
        )
        .await
    {
        Err(e @ LeaseError::Held { .. }) => {
            println!(
                "           {}: {e}",
                paint("CAUGHT LEASE HELD", Color::Green)
            );
        }
        Ok(_) => anyhow::bail!("the publisher got the file while the editor held it"),
        Err(e) => return Err(e.into()),
    }
    let researcher_try = writer_a
        .acquire_with(
            file,
            LeaseMode::Shared,
            scoped(Duration::from_secs(15), true),
        )
        .await;
    if researcher_try.is_ok() {
        anyhow::bail!("a reader got the file while the editor held it");
    }
    editing.release("revision done").await?;
    let reader_1 = writer_a
        .acquire_with(
            file,
            LeaseMode::Shared,
            scoped(Duration::from_secs(15), true),
        )
        .await?;
    let reader_2 = publisher
        .acquire_with(
            file,
            LeaseMode::Shared,
            scoped(Duration::from_secs(15), true),
        )
        .await?;
    say(
        "5",
        "the reviewer released it; now writer-a (researching) and the publisher read it together (shared leases).",
    );
    reader_1.release("read").await?;
    reader_2.release("read").await?;
    let stuck = writer_b
        .acquire_with(
            file,
            LeaseMode::Exclusive,
            scoped(Duration::from_secs(2), false),
        )
        .await?;
    say(
        "5",
        &format!(
            "writer-b takes the file for another pass (token {}) and hangs without renewing its 2s lease ...",
            stuck.token()
        ),
    );
    let a = expect(&mut rx, AlertKind::LeaseExpired, AlertState::Firing, &draft).await?;
    caught(AlertKind::LeaseExpired, &a);
    let freed = publisher
        .acquire_with(
            file,
            LeaseMode::Exclusive,
            scoped(Duration::from_secs(15), true),
        )
        .await?;
    say(
        "5",
        &format!(
            "the file is free again: the publisher holds it with token {}; writer-b's late writes (token {}) are refused by fenced stores.",
            freed.token(),
            stuck.token()
        ),
    );
    freed.release("published").await?;
    stuck.detach();

    review
        .complete("s3://reviewed/launch.md", "reviewed")
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;

    for a in [
        &planner, &writer_a, &writer_b, &reviewer, &publisher, &intern,
    ] {
        a.close().await;
    }
    println!();
    println!(
        "{}",
        paint(
            "Demo complete: all five caught: the claim race (prevented), HANDOFF_NOT_ACCEPTED (then resolved), STALE_CONTEXT, OWNERSHIP_VIOLATION, and on the draft file a lease held (prevented) and LEASE_EXPIRED (freed).",
            Color::Green
        )
    );
    println!("Explore: baton task {draft}, baton alerts, baton status. Ctrl-C stops everything.");
    Ok(())
}
