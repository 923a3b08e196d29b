//! The Rust agent SDK and the decision record against a real server and the
//! real orchestrator (child process).

mod support;

use std::time::Duration;

use baton_agent::{
    Agent, AgentOptions, ClaimError, ContextError, CreateError, HandoffError, NewTask,
    OwnershipError,
};
use baton_core::{AlertKind, EventBody, TaskStatus, subjects};
use futures::future::join_all;
use support::*;

async fn agent(rig: &Rig, id: &str) -> Agent {
    let mut opts = AgentOptions::new(id, rig.server.url());
    opts.lease = Duration::from_secs(30);
    Agent::connect(opts).await.expect("agent connects")
}

async fn rig() -> Rig {
    let mut rig = Rig::new().await;
    rig.start_orchestrator(&[]).await;
    rig
}

#[tokio::test]
async fn sixteen_concurrent_claimers_one_owner_fifteen_typed_losses() {
    let rig = rig().await;
    let planner = agent(&rig, "planner").await;
    planner
        .create_task(NewTask::new("hot", "w").expect("ids"))
        .await
        .expect("create");
    let agents = join_all((0..16).map(|i| {
        let url = rig.server.url();
        async move {
            Agent::connect(AgentOptions::new(format!("c{i}"), url))
                .await
                .expect("connect")
        }
    }))
    .await;
    let task = task("hot");
    let results = join_all(agents.iter().map(|a| a.claim(&task))).await;
    let winners: Vec<_> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    assert_eq!(winners.len(), 1, "exactly one claim succeeds");
    let winner = agents[results.iter().position(Result::is_ok).expect("winner")]
        .id()
        .clone();
    assert_eq!(winners[0].epoch(), 1);
    let losses: Vec<_> = results
        .iter()
        .filter_map(|r| match r {
            Err(ClaimError::Lost { owner, epoch, .. }) => Some((owner.clone(), *epoch)),
            Err(e) => panic!("unexpected error {e}"),
            Ok(_) => None,
        })
        .collect();
    assert_eq!(losses.len(), 15);
    assert!(
        losses
            .iter()
            .all(|(owner, epoch)| *owner == winner && *epoch == 1),
        "{losses:?}"
    );
    let t = wait_task(&rig.js, "hot", |t| t.owner.is_some()).await;
    assert_eq!(t.owner.as_ref(), Some(&winner));
    assert_eq!(t.violations, 0, "the losers' claims were never stored");
    // Exactly one claim reached the stream.
    let stored = read_all(
        &rig.js,
        subjects::EVENTS_STREAM,
        &subjects::task_events(&task),
    )
    .await;
    assert_eq!(stored.len(), 2, "created + one claim");
}

#[tokio::test]
async fn a_handoff_chain_across_three_agents() {
    let rig = rig().await;
    let (a, b, c) = (
        agent(&rig, "writer").await,
        agent(&rig, "editor").await,
        agent(&rig, "publisher").await,
    );
    a.create_task(
        NewTask::new("post", "blog")
            .expect("ids")
            .stage("draft")
            .expect("stage")
            .title("Post"),
    )
    .await
    .expect("create");
    let t = task("post");
    let owned = a.claim(&t).await.expect("claim");
    owned.heartbeat("outline", true).await.expect("heartbeat");
    let offer = owned
        .offer_to_agent(b.id(), "s3://d/1", None)
        .await
        .expect("offer");
    assert_eq!(offer.epoch, 1);
    let kv = wait_task(&rig.js, "post", |t| t.status == TaskStatus::HandoffPending).await;
    assert_eq!(
        (kv.owner.as_ref(), kv.epoch),
        (Some(a.id()), 1),
        "the writer owns it until accepted"
    );

    let owned = b.accept_handoff(&t).await.expect("accept");
    assert_eq!(owned.epoch(), 2);
    let kv = wait_task(&rig.js, "post", |t| t.epoch == 2).await;
    assert_eq!(kv.owner.as_ref(), Some(b.id()));
    let stage = baton_core::StageName::new("publish").expect("stage");
    owned
        .offer_to_stage(&stage, "s3://d/2", None)
        .await
        .expect("offer to stage");

    let owned = c
        .accept_handoff(&t)
        .await
        .expect("any agent of the stage may accept");
    assert_eq!(owned.epoch(), 3);
    let kv = wait_task(&rig.js, "post", |t| t.epoch == 3).await;
    assert_eq!(
        (kv.owner.as_ref(), kv.stage.as_ref()),
        (Some(c.id()), Some(&stage))
    );
    assert_eq!(kv.output_location(), "s3://d/2");
    owned
        .complete("https://blog/post", "published")
        .await
        .expect("complete");
    let kv = wait_task(&rig.js, "post", |t| t.status == TaskStatus::Completed).await;
    assert_eq!(
        (kv.owner.as_ref(), kv.epoch, kv.violations),
        (Some(c.id()), 3, 0)
    );
}

#[tokio::test]
async fn the_wrong_agent_is_refused_by_the_sdk_and_caught_by_the_orchestrator() {
    let rig = rig().await;
    let (a, b, intruder) = (
        agent(&rig, "a").await,
        agent(&rig, "b").await,
        agent(&rig, "intruder").await,
    );
    a.create_task(NewTask::new("t", "w").expect("ids"))
        .await
        .expect("create");
    let t = task("t");
    let owned = a.claim(&t).await.expect("claim");
    owned
        .offer_to_agent(b.id(), "out", None)
        .await
        .expect("offer");
    match intruder.accept_handoff(&t).await {
        Err(HandoffError::NotForYou { recipient, .. }) => assert_eq!(&recipient, b.id()),
        other => panic!("expected NotForYou, got {other:?}"),
    }
    // Forced past the SDK: a raw accept from the intruder.
    let mut ev = Events::new("w");
    let forced = ev.make(
        "t",
        "intruder",
        0,
        EventBody::HandoffAccepted {
            heartbeat_within: None,
        },
    );
    publish(&rig.js, &forced).await;
    let (alert, _) = wait_alert(&rig.js, is_alert(AlertKind::OwnershipViolation, "t")).await;
    assert_eq!(alert.agents, vec![agent_id("intruder"), agent_id("b")]);
    assert!(
        alert.summary.contains("offer is for b, not intruder"),
        "{}",
        alert.summary
    );
    let kv = wait_task(&rig.js, "t", |t| t.violations == 1).await;
    assert_eq!(kv.owner.as_ref(), Some(a.id()), "nothing moved");
    // The real recipient still can.
    let owned = b.accept_handoff(&t).await.expect("accept");
    assert_eq!(owned.epoch(), 2);
}

#[tokio::test]
async fn a_dropped_handle_releases_the_task() {
    let rig = rig().await;
    let a = agent(&rig, "a").await;
    a.create_task(NewTask::new("t", "w").expect("ids"))
        .await
        .expect("create");
    {
        let _owned = a.claim(&task("t")).await.expect("claim");
        // Dropped here without complete/release/offer.
    }
    a.close().await;
    let kv = wait_task(&rig.js, "t", |t| {
        t.status == TaskStatus::Submitted && t.epoch == 2
    })
    .await;
    assert_eq!(kv.owner, None);
    assert_eq!(kv.last_event.kind, baton_core::EventKind::Released);
    let last = read_all(&rig.js, subjects::EVENTS_STREAM, "baton.evt.t.a").await;
    let release =
        baton_core::wire::decode_event(&last.last().expect("events").payload).expect("event");
    assert_eq!(
        release.body,
        EventBody::Released {
            reason: "dropped".into()
        }
    );
    // Someone else can take it now.
    let b = agent(&rig, "b").await;
    assert_eq!(b.claim(&task("t")).await.expect("claim").epoch(), 3);
}

#[tokio::test]
async fn heartbeats_are_automatic_and_a_revoked_agent_finds_out() {
    let rig = rig().await;
    let mut opts = AgentOptions::new("worker", rig.server.url());
    opts.lease = Duration::from_millis(300);
    let worker = Agent::connect(opts).await.expect("connect");
    worker
        .create_task(NewTask::new("t", "w").expect("ids"))
        .await
        .expect("create");
    let owned = worker.claim(&task("t")).await.expect("claim");
    // Without any call from the agent, heartbeats arrive.
    wait_task(&rig.js, "t", |t| {
        t.last_event.kind == baton_core::EventKind::Heartbeat
    })
    .await;
    let ops = agent(&rig, "ops").await;
    let mut ev = Events::new("w");
    let revoke = ev.make(
        "t",
        "ops",
        0,
        EventBody::Revoked {
            reason: "stuck".into(),
        },
    );
    publish(&rig.js, &revoke).await;
    let _ = &ops;
    tokio::time::timeout(PATIENCE, owned.lost())
        .await
        .expect("the handle learns it lost the task");
    match owned.heartbeat("still here?", false).await {
        Err(OwnershipError::Lost { owner, epoch, .. }) => assert_eq!((owner, epoch), (None, 2)),
        other => panic!("expected Lost, got {other:?}"),
    }
    let kv = wait_task(&rig.js, "t", |t| t.epoch == 2).await;
    assert_eq!(
        kv.violations, 0,
        "the SDK sent nothing after losing the task"
    );
}

#[tokio::test]
async fn stale_context_is_caught_and_named() {
    let rig = rig().await;
    let (editor, publisher) = (agent(&rig, "editor").await, agent(&rig, "publisher").await);
    let blog = workflow("blog");
    editor
        .context(&blog)
        .record("Audience: engineers", "", None)
        .await
        .expect("first decision");
    // The publisher reads the record, then the editor changes course.
    let seen = publisher.context(&blog).read().await.expect("read");
    assert_eq!(seen.decisions.len(), 1);
    editor.context(&blog).read().await.expect("read");
    let v2 = editor
        .context(&blog)
        .record(
            "Embargo until Monday",
            "Do not publish before Monday.",
            None,
        )
        .await
        .expect("second decision");
    publisher
        .create_task(NewTask::new("launch", "blog").expect("ids"))
        .await
        .expect("create");
    let owned = publisher.claim(&task("launch")).await.expect("claim");
    let (alert, _) = wait_alert(&rig.js, is_alert(AlertKind::StaleContext, "launch")).await;
    assert_eq!(alert.missed_versions, vec![v2]);
    assert!(
        alert.summary.contains("Embargo until Monday") && alert.summary.contains("publisher"),
        "{}",
        alert.summary
    );
    assert_eq!(
        alert.agents,
        vec![agent_id("publisher"), agent_id("editor")]
    );
    // After re-reading, acting raises nothing more.
    publisher.context(&blog).read().await.expect("re-read");
    owned
        .complete("out", "done after re-reading")
        .await
        .expect("complete");
    wait_task(&rig.js, "launch", |t| t.status == TaskStatus::Completed).await;
    let stale = all_alerts(&rig.js)
        .await
        .into_iter()
        .filter(|a| a.kind == AlertKind::StaleContext)
        .count();
    assert_eq!(stale, 1);
}

#[tokio::test]
async fn recording_over_an_unread_decision_is_refused() {
    let rig = rig().await;
    let (a, b) = (agent(&rig, "a").await, agent(&rig, "b").await);
    let w = workflow("w");
    a.context(&w).read().await.expect("read");
    b.context(&w).read().await.expect("read");
    let v = a
        .context(&w)
        .record("Use Postgres", "", None)
        .await
        .expect("record");
    match b.context(&w).record("Use MySQL", "", None).await {
        Err(ContextError::Stale { latest, .. }) => assert_eq!(latest, v),
        other => panic!("expected Stale, got {other:?}"),
    }
    let snapshot = b.context(&w).read().await.expect("re-read");
    assert_eq!(
        snapshot
            .decisions
            .iter()
            .map(|d| d.entry.summary.as_str())
            .collect::<Vec<_>>(),
        vec!["Use Postgres"]
    );
    let superseding = b
        .context(&w)
        .record("Use MySQL after all", "benchmarks", Some(v))
        .await
        .expect("record");
    assert!(superseding > v);
    let entries = b.context(&w).read().await.expect("read").decisions;
    assert_eq!(entries.last().map(|d| d.entry.supersedes), Some(v));
}

#[tokio::test]
async fn events_carry_the_epoch_held_and_the_context_version_read() {
    let rig = rig().await;
    let a = agent(&rig, "a").await;
    let w = workflow("w");
    a.context(&w).record("d1", "", None).await.expect("record");
    let version = a.context(&w).read().await.expect("read").version;
    a.create_task(NewTask::new("t", "w").expect("ids"))
        .await
        .expect("create");
    let owned = a.claim(&task("t")).await.expect("claim");
    owned.heartbeat("", true).await.expect("hb");
    let events: Vec<_> = read_all(&rig.js, subjects::EVENTS_STREAM, "baton.evt.t.a")
        .await
        .iter()
        .map(|m| baton_core::wire::decode_event(&m.payload).expect("event"))
        .collect();
    let hb = events.last().expect("heartbeat");
    assert_eq!((hb.epoch, hb.context_version), (1, version));
    assert!(events.iter().all(|e| e.context_version == version));
}

#[tokio::test]
async fn a_publish_during_a_broker_outage_is_retried_and_stored_once() {
    let mut rig = rig().await;
    let a = agent(&rig, "a").await;
    a.create_task(NewTask::new("t", "w").expect("ids"))
        .await
        .expect("create");
    let owned = a.claim(&task("t")).await.expect("claim");
    rig.orchestrator.as_mut().expect("running").kill9();
    rig.server.kill();
    let beat = tokio::spawn(async move {
        let r = owned.heartbeat("through the outage", true).await;
        (r, owned)
    });
    // The heartbeat is now being retried against a dead server.
    rig.server.restart().await.expect("server back");
    let (result, owned) = beat.await.expect("task");
    result.expect("delivered after the restart");
    let events = read_all(&rig.js, subjects::EVENTS_STREAM, "baton.evt.t.a").await;
    let notes: Vec<_> = events
        .iter()
        .filter_map(
            |m| match baton_core::wire::decode_event(&m.payload).ok()?.body {
                EventBody::Heartbeat { note, .. } if note == "through the outage" => Some(m.seq),
                _ => None,
            },
        )
        .collect();
    assert_eq!(notes.len(), 1, "stored exactly once");
    owned.complete("out", "").await.expect("complete");
}

#[tokio::test]
async fn a_forged_event_does_not_fool_the_sdk() {
    let rig = rig().await;
    let (planner, bob) = (agent(&rig, "planner").await, agent(&rig, "bob").await);
    planner
        .create_task(NewTask::new("t1", "w").expect("ids"))
        .await
        .expect("create");
    // Mallory publishes on her own subject a claim that names alice.
    let mut ev = Events::new("w");
    let forged = ev.claimed("t1", "alice");
    publish_raw(
        &rig.js,
        "baton.evt.t1.mallory",
        forged.encode_to_vec(),
        Some("forged-1"),
    )
    .await;
    let state = bob.task(&task("t1")).await.expect("read").expect("exists");
    assert_eq!(
        state.owner, None,
        "the forgery is not part of the task's history"
    );
    let owned = bob.claim(&task("t1")).await.expect("bob can still claim");
    assert_eq!(owned.epoch(), 1);
}

#[tokio::test]
async fn creating_a_task_that_exists_is_refused_and_nothing_is_stored() {
    let rig = rig().await;
    let a = agent(&rig, "a").await;
    let first = a
        .create_task(NewTask::new("t", "w").expect("ids"))
        .await
        .expect("create");
    let owned = a.claim(&task("t")).await.expect("claim");
    owned.complete("out", "done").await.expect("complete");
    // As when a script (or the README example) runs a second time.
    let again = a.create_task(NewTask::new("t", "w").expect("ids")).await;
    match again {
        Err(CreateError::Exists { task: t, status }) => {
            assert_eq!(t.as_str(), "t");
            assert_eq!(status, Some(TaskStatus::Completed));
        }
        other => panic!("expected CreateError::Exists, got {other:?}"),
    }
    let created: Vec<u64> = read_all(&rig.js, subjects::EVENTS_STREAM, "baton.evt.t.*")
        .await
        .iter()
        .filter(|m| {
            matches!(
                baton_core::wire::decode_event(&m.payload).map(|e| e.body),
                Ok(EventBody::Created(_))
            )
        })
        .map(|m| m.seq)
        .collect();
    assert_eq!(created, vec![first], "the second creation was not stored");
    rig.wait_caught_up().await;
    let state = stored_task(&rig.js, "t").await.expect("state");
    assert_eq!(
        state.violations, 0,
        "nothing for the orchestrator to refuse"
    );
}

/// Every thread of `pid` is stopped (SIGSTOP takes effect asynchronously).
fn stopped(pid: u32) -> bool {
    let states: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("stat")).ok())
        .filter_map(|s| Some(s.rsplit_once(')')?.1.split_whitespace().next()?.to_string()))
        .collect();
    !states.is_empty() && states.iter().all(|s| s == "T" || s == "t")
}

/// A creation whose first attempt was stored but not acknowledged in time
/// (the broker was paused): the retry finds its own event and succeeds.
#[tokio::test]
async fn a_create_whose_ack_was_lost_succeeds_once() {
    let rig = rig().await;
    let mut opts = AgentOptions::new("a", rig.server.url());
    opts.retry = baton_jetstream::Retry {
        budget: Duration::from_secs(30),
        attempt_timeout: Duration::from_millis(300),
    };
    let a = Agent::connect(opts).await.expect("connect");
    let pid = rig.server.pid().expect("pid").to_string();
    let signal = |sig: &str| {
        std::process::Command::new("kill")
            .args([sig, &pid])
            .status()
            .expect("kill")
    };
    signal("-STOP");
    let deadline = std::time::Instant::now() + PATIENCE;
    while !stopped(rig.server.pid().expect("pid")) {
        assert!(std::time::Instant::now() < deadline, "server never stopped");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let create =
        tokio::spawn(async move { a.create_task(NewTask::new("t", "w").expect("ids")).await });
    // Several attempts time out while the server is paused; each is queued.
    let early = tokio::time::timeout(Duration::from_secs(1), async {
        while !create.is_finished() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    signal("-CONT");
    assert!(
        early.is_err(),
        "the create cannot finish while the broker is paused"
    );
    let seq = create
        .await
        .expect("join")
        .expect("the retried create succeeds");
    let events = read_all(&rig.js, subjects::EVENTS_STREAM, "baton.evt.t.*").await;
    assert_eq!(
        events.iter().map(|m| m.seq).collect::<Vec<_>>(),
        vec![seq],
        "stored once"
    );
    rig.wait_caught_up().await;
    let state = stored_task(&rig.js, "t").await.expect("state");
    assert_eq!(state.violations, 0);
}
