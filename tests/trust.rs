//! Trust at the edges, against a real server and the real services: an
//! oversized event is dead-lettered and reported (never a silently stale
//! task), a forged event is refused by every reader, one bad decision-record
//! entry never makes a record unreadable, every reader folds with the
//! orchestrator's published policy, and an accept carries the new owner's
//! lease.

mod support;

use std::time::Duration;

use baton_agent::{Agent, AgentOptions};
use baton_core::{AlertKind, EventBody, Policy, TaskStatus, UnknownTaskPolicy, subjects};
use baton_proto::v1 as pb;
use support::*;

async fn agent(rig: &Rig, id: &str) -> Agent {
    let mut opts = AgentOptions::new(id, rig.server.url());
    opts.lease = Duration::from_secs(30);
    Agent::connect(opts).await.expect("agent connects")
}

#[tokio::test]
async fn an_oversized_event_is_dead_lettered_and_reported_naming_the_field() {
    let mut rig = Rig::new().await;
    rig.start_orchestrator(&[]).await;
    let mut ev = Events::new("w");
    publish(&rig.js, &ev.created("big", "maker")).await;
    publish(&rig.js, &ev.claimed("big", "writer")).await;
    // A client that is not ours completes with a 600 kB output location:
    // it fits the broker, but no reader accepts it.
    let huge = ev.make(
        "big",
        "writer",
        1,
        EventBody::Completed {
            output_location: "s3://".to_string() + &"x".repeat(600_000),
            summary: String::new(),
        },
    );
    let seq = publish(&rig.js, &huge).await;
    let (alert, _) = wait_alert(&rig.js, |a| {
        a.kind == AlertKind::MalformedEvent && a.event_seq == seq
    })
    .await;
    assert!(
        alert.summary.contains("completed.output_location"),
        "{}",
        alert.summary
    );
    assert_eq!(alert.task.as_ref().map(|t| t.as_str()), Some("big"));
    let dlq = read_all(&rig.js, subjects::DLQ_STREAM, subjects::DLQ_ALL).await;
    assert_eq!(
        dlq.iter().map(|m| m.subject.as_str()).collect::<Vec<_>>(),
        vec!["baton.dlq.too_large"]
    );
    // The task is what the accepted events say: still the writer's, with a
    // report saying why its completion did not count.
    rig.wait_caught_up().await;
    let task = stored_task(&rig.js, "big").await.expect("task");
    assert_eq!(task.status, TaskStatus::Working);
    // Every stored alert fits comfortably in the broker's max payload.
    for a in all_alerts(&rig.js).await {
        assert!(a.encode_to_vec().len() < 16 * 1024, "{}", a.id);
    }
}

#[tokio::test]
async fn a_forged_event_is_refused_by_the_query_api_and_the_sdk() {
    let mut rig = Rig::new().await;
    rig.start_orchestrator(&[]).await;
    let alice = agent(&rig, "alice").await;
    alice
        .create_task(baton_agent::NewTask::new("t1", "w").expect("ids"))
        .await
        .expect("create");
    let held = alice.claim(&task("t1")).await.expect("claim");
    // mallory publishes, on her own subject, an event that says alice
    // completed the task.
    let mut ev = Events::new("w");
    let forged = ev.make(
        "t1",
        "alice",
        1,
        EventBody::Completed {
            output_location: String::new(),
            summary: "not really".into(),
        },
    );
    let seq = publish_raw(
        &rig.js,
        "baton.evt.t1.mallory",
        forged.encode_to_vec(),
        Some(&forged.event_id),
    )
    .await;
    wait_alert(&rig.js, |a| {
        a.kind == AlertKind::MalformedEvent && a.event_seq == seq
    })
    .await;
    let tl: pb::TimelineResponse = request(
        &rig.client,
        "task.timeline",
        &pb::TimelineRequest {
            task_id: "t1".into(),
            limit: 0,
        },
    )
    .await;
    let forged_row = tl
        .entries
        .iter()
        .find(|e| e.seq == seq)
        .expect("the forged event is listed");
    assert_eq!(forged_row.kind, "malformed");
    assert!(
        forged_row.violation.contains("does not match"),
        "{}",
        forged_row.violation
    );
    assert!(
        tl.entries.iter().all(|e| e.kind != "completed"),
        "nobody completed the task"
    );
    // The SDK folds the same way: the task is still alice's and working.
    let state = alice
        .task(&task("t1"))
        .await
        .expect("read")
        .expect("exists");
    assert_eq!(state.status, TaskStatus::Working);
    assert_eq!(state.owner.as_ref().map(|o| o.as_str()), Some("alice"));
    drop(held);
}

#[tokio::test]
async fn every_reader_folds_with_the_published_policy() {
    let mut rig = Rig::new().await;
    rig.start_orchestrator(&["--operators", "ops", "--unknown-task", "create"])
        .await;
    let store = wait_bucket(&rig.js, subjects::POLICY_BUCKET).await;
    let published = Policy::decode(
        &store
            .get(subjects::POLICY_KEY)
            .await
            .expect("get")
            .expect("published"),
    )
    .expect("decodes");
    assert_eq!(
        published
            .operators
            .iter()
            .map(|o| o.as_str())
            .collect::<Vec<_>>(),
        vec!["ops"]
    );
    assert_eq!(published.unknown_task, UnknownTaskPolicy::AutoCreate);

    let alice = agent(&rig, "alice").await;
    alice
        .create_task(baton_agent::NewTask::new("t1", "w").expect("ids"))
        .await
        .expect("create");
    let held = alice.claim(&task("t1")).await.expect("claim");
    // bob is no operator: his revoke must not make alice's SDK believe she
    // lost the task (the SDK reads the events after the stored state).
    let mut ev = Events::new("w");
    publish(
        &rig.js,
        &ev.make(
            "t1",
            "bob",
            0,
            EventBody::Revoked {
                reason: "mine now".into(),
            },
        ),
    )
    .await;
    let state = alice
        .task(&task("t1"))
        .await
        .expect("read")
        .expect("exists");
    assert_eq!(state.owner.as_ref().map(|o| o.as_str()), Some("alice"));
    assert_eq!(state.epoch, 1);
    // ops is an operator: the same act by ops moves ownership, for every
    // reader alike.
    let ops = agent(&rig, "ops").await;
    ops.revoke(&task("t1"), "rebalancing")
        .await
        .expect("revoke");
    let state = alice
        .task(&task("t1"))
        .await
        .expect("read")
        .expect("exists");
    assert_eq!(state.owner, None);
    rig.wait_caught_up().await;
    let kv = stored_task(&rig.js, "t1").await.expect("task");
    assert_eq!((kv.owner, kv.epoch), (None, 2));
    drop(held);
}

#[tokio::test]
async fn one_bad_decision_entry_never_poisons_the_record_and_is_reported_once() {
    let mut rig = Rig::new().await;
    rig.start_orchestrator(&[]).await;
    let alice = agent(&rig, "alice").await;
    let record = alice.context(&workflow("w"));
    record.read().await.expect("read");
    let good = record
        .record("Use British spelling", "en-GB", None)
        .await
        .expect("record");
    let junk = publish_raw(
        &rig.js,
        "baton.ctx.w.mallory",
        b"\xff\xff not protobuf".to_vec(),
        None,
    )
    .await;
    // mallory records a decision in alice's name.
    let forged = baton_core::context::ContextEntry {
        workflow: workflow("w"),
        author: agent_id("alice"),
        summary: "Use American spelling".into(),
        body: String::new(),
        supersedes: 0,
        recorded_at: None,
    };
    let forged_seq =
        publish_raw(&rig.js, "baton.ctx.w.mallory", forged.encode_to_vec(), None).await;

    let snapshot = record.read().await.expect("the record stays readable");
    assert_eq!(
        snapshot
            .decisions
            .iter()
            .map(|d| d.version)
            .collect::<Vec<_>>(),
        vec![good]
    );
    assert_eq!(
        snapshot
            .refused
            .iter()
            .map(|r| r.version)
            .collect::<Vec<_>>(),
        vec![junk, forged_seq]
    );
    record
        .record("Scope", "intro only", None)
        .await
        .expect("still writable");

    // The orchestrator reports each bad entry once (when it next reads the
    // record: a claim makes it catch up), and not again after a restart.
    let claim_task = baton_agent::NewTask::new("t1", "w").expect("ids");
    alice.create_task(claim_task).await.expect("create");
    let _held = alice.claim(&task("t1")).await.expect("claim");
    for seq in [junk, forged_seq] {
        wait_alert(&rig.js, |a| {
            a.kind == AlertKind::MalformedEvent && a.event_seq == seq
        })
        .await;
    }
    rig.orchestrator.as_mut().expect("running").terminate();
    rig.start_orchestrator(&[]).await;
    rig.wait_caught_up().await;
    let malformed = all_alerts(&rig.js)
        .await
        .into_iter()
        .filter(|a| a.kind == AlertKind::MalformedEvent)
        .count();
    assert_eq!(malformed, 2, "each bad entry reported exactly once");
    let dlq = read_all(&rig.js, subjects::DLQ_STREAM, subjects::DLQ_ALL).await;
    assert_eq!(
        dlq.iter().map(|m| m.subject.as_str()).collect::<Vec<_>>(),
        vec!["baton.dlq.undecodable", "baton.dlq.subject_mismatch"]
    );
}

#[tokio::test]
async fn an_accept_carries_the_new_owners_lease_and_a_sender_cannot_take_its_own_offer() {
    let mut rig = Rig::new().await;
    rig.start_orchestrator(&[]).await;
    let writer = agent(&rig, "writer").await;
    let mut opts = AgentOptions::new("editor", rig.server.url());
    opts.lease = Duration::from_secs(90);
    let editor = Agent::connect(opts).await.expect("editor connects");
    writer
        .create_task(baton_agent::NewTask::new("t1", "w").expect("ids"))
        .await
        .expect("create");
    let held = writer.claim(&task("t1")).await.expect("claim");
    let review = baton_core::StageName::new("review").expect("stage");
    held.offer_to_stage(&review, "s3://drafts/t1.md", None)
        .await
        .expect("offer");
    let err = writer
        .accept_handoff(&task("t1"))
        .await
        .expect_err("the sender cannot accept its own stage offer");
    assert!(
        matches!(err, baton_agent::HandoffError::OwnOffer { .. }),
        "{err}"
    );
    let taken = editor.accept_handoff(&task("t1")).await.expect("accept");
    let kv = wait_task(&rig.js, "t1", |t| {
        t.owner.as_ref().map(|o| o.as_str()) == Some("editor")
    })
    .await;
    assert_eq!(kv.lease, Some(Duration::from_secs(90)));
    drop(taken);
}

/// Polls `/healthz` until its status is `want`; returns the body.
async fn wait_health(addr: &str, want: u16) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (code, body) = http_get(addr, "/healthz").await;
        if code == want {
            return body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "/healthz stayed {code} ({body}), want {want}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn healthz_says_so_while_effects_are_not_being_stored() {
    let mut rig = Rig::new().await;
    let status = rig.start_orchestrator(&[]).await;
    let addr = status.http_addr.clone();
    wait_health(&addr, 200).await;
    // Alerts cannot be stored: their stream is gone.
    rig.js
        .delete_stream(subjects::ALERTS_STREAM)
        .await
        .expect("delete alerts stream");
    let mut ev = Events::new("w");
    publish(&rig.js, &ev.created("t1", "maker")).await;
    publish(&rig.js, &ev.claimed("t1", "writer")).await;
    publish(&rig.js, &ev.heartbeat("t1", "intruder", 0)).await; // a violation
    let body = wait_health(&addr, 503).await;
    assert!(body.contains("effects not stored"), "{body}");
    // The stream comes back: the outbox delivers and the service is healthy.
    baton_jetstream::ensure(&rig.js, &baton_jetstream::Topology::default())
        .await
        .expect("recreate");
    wait_health(&addr, 200).await;
    wait_alert(&rig.js, |a| a.kind == AlertKind::OwnershipViolation).await;
}

#[tokio::test]
async fn list_replies_page_by_size_and_always_fit_the_broker() {
    let mut rig = Rig::new().await;
    rig.start_orchestrator(&[]).await;
    let mut ev = Events::new("w");
    // 1,000 tasks with 1 KiB titles: one reply with all of them would be
    // over the broker's 1 MiB max payload.
    for i in 0..1000 {
        let mut created = ev.created(&format!("t{i:04}"), "maker");
        if let EventBody::Created(c) = &mut created.body {
            c.title = "x".repeat(baton_core::wire::limits::TITLE);
        }
        publish(&rig.js, &created).await;
    }
    rig.wait_caught_up().await;
    let mut seen = 0;
    let mut after = String::new();
    let mut pages = 0;
    loop {
        let page: pb::ListTasksResponse = request(
            &rig.client,
            "task.list",
            &pb::ListTasksRequest {
                limit: 1000,
                after_task_id: after.clone(),
                ..Default::default()
            },
        )
        .await;
        assert!(page.error.is_empty(), "{}", page.error);
        assert_eq!(page.total, 1000);
        assert!(!page.tasks.is_empty());
        seen += page.tasks.len();
        pages += 1;
        after = page.tasks.last().expect("a task").task_id.clone();
        if !page.truncated {
            break;
        }
        assert!(pages < 10, "paging must end");
    }
    assert_eq!(seen, 1000, "paging by size loses no task");
    assert!(pages >= 2, "a page holds less than the whole 1.2 MB");
}
