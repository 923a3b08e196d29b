//! The orchestrator against a real server: state and ownership in KV,
//! protocol alerts, bad input, the query API, liveness, metrics, graceful
//! stop, and kill -9 restarts with the orchestrator as a child process.

mod support;

use std::time::Duration;

use async_nats::jetstream;
use baton_core::{AlertKind, EventBody, HandoffTarget, TaskStatus, subjects};
use baton_proto::{prost::Message, v1 as pb};
use futures::StreamExt;
use support::*;

#[tokio::test]
async fn creates_streams_and_buckets_idempotently() {
    let mut rig = Rig::new().await;
    rig.start_orchestrator(&[]).await;
    rig.orchestrator.as_mut().expect("running").terminate();
    // A second start over existing streams must succeed too.
    rig.start_orchestrator(&[]).await;
    for (name, subject) in [
        (subjects::EVENTS_STREAM, "baton.evt.>"),
        (subjects::CONTEXT_STREAM, "baton.ctx.>"),
        (subjects::ALERTS_STREAM, "baton.raise.>"),
        (subjects::DLQ_STREAM, "baton.dlq.>"),
    ] {
        let mut s = rig.js.get_stream(name).await.expect(name);
        let info = s.info().await.expect("info");
        // The data subjects first; fences of leadership terms after them.
        assert_eq!(
            info.config.subjects.first().map(String::as_str),
            Some(subject)
        );
        assert_eq!(info.config.num_replicas, 1);
        assert!(info.config.duplicate_window >= Duration::from_secs(120));
    }
    let mut ctx = rig
        .js
        .get_stream(subjects::CONTEXT_STREAM)
        .await
        .expect("ctx");
    let cfg = ctx.info().await.expect("info").config.clone();
    assert!(
        cfg.deny_delete && cfg.deny_purge && !cfg.allow_rollup,
        "decision record is append-only"
    );
    for bucket in [
        subjects::TASKS_BUCKET,
        subjects::SERVICES_BUCKET,
        subjects::SILENCES_BUCKET,
    ] {
        rig.js.get_key_value(bucket).await.expect(bucket);
    }
}

#[tokio::test]
async fn materialises_state_and_single_owner_in_kv() {
    let mut rig = Rig::new().await;
    rig.start_orchestrator(&[]).await;
    let mut ev = Events::new("blog");
    publish(&rig.js, &ev.created("post-1", "planner")).await;
    publish(&rig.js, &ev.claimed("post-1", "writer")).await;
    let t = wait_task(&rig.js, "post-1", |t| t.owner.is_some()).await;
    assert_eq!(
        (t.owner.as_ref().map(|o| o.to_string()), t.epoch, t.status),
        (Some("writer".into()), 1, TaskStatus::Working)
    );

    let offer = ev.make(
        "post-1",
        "writer",
        1,
        EventBody::HandoffOffered {
            to: HandoffTarget::Agent(agent("editor")),
            output_location: "s3://drafts/post-1.md".into(),
            accept_within: Some(Duration::from_secs(60)),
        },
    );
    publish(&rig.js, &offer).await;
    let t = wait_task(&rig.js, "post-1", |t| {
        t.status == TaskStatus::HandoffPending
    })
    .await;
    assert_eq!(
        t.owner.as_ref().map(|o| o.as_str()),
        Some("writer"),
        "sender owns it until accepted"
    );
    publish(
        &rig.js,
        &ev.make(
            "post-1",
            "editor",
            0,
            EventBody::HandoffAccepted {
                heartbeat_within: None,
            },
        ),
    )
    .await;
    let t = wait_task(&rig.js, "post-1", |t| t.epoch == 2).await;
    assert_eq!(t.owner.as_ref().map(|o| o.as_str()), Some("editor"));
    assert_eq!(t.output_location(), "s3://drafts/post-1.md");

    // The wire form other languages read has the same facts.
    let store = rig
        .js
        .get_key_value(subjects::TASKS_BUCKET)
        .await
        .expect("kv");
    let raw = store.get("post-1").await.expect("get").expect("value");
    let wire = pb::TaskState::decode(raw).expect("TaskState");
    assert_eq!(
        (wire.owner.as_str(), wire.epoch, wire.status),
        ("editor", 2, pb::TaskStatus::Working as i32)
    );
}

#[tokio::test]
async fn ownership_violations_raise_alerts_naming_both_agents() {
    let mut rig = Rig::new().await;
    rig.start_orchestrator(&[]).await;
    let mut ev = Events::new("blog");
    publish(&rig.js, &ev.created("draft-7", "planner")).await;
    publish(&rig.js, &ev.claimed("draft-7", "editor")).await;
    // The publisher was told the article is ready and acts on a task it
    // never owned.
    let rogue = ev.make(
        "draft-7",
        "publisher",
        0,
        EventBody::Completed {
            output_location: "https://blog/post".into(),
            summary: "published".into(),
        },
    );
    let seq = publish(&rig.js, &rogue).await;
    let (alert, headers) =
        wait_alert(&rig.js, is_alert(AlertKind::OwnershipViolation, "draft-7")).await;
    assert_eq!(alert.agents, vec![agent("publisher"), agent("editor")]);
    assert_eq!(alert.event_seq, seq);
    assert!(
        alert.summary.contains("publisher") && alert.summary.contains("editor"),
        "{}",
        alert.summary
    );
    assert_eq!(
        headers.get("Nats-Msg-Id").map(|v| v.as_str().to_string()),
        Some(alert.id.clone()),
        "the alert id is the Nats-Msg-Id"
    );
    let t = wait_task(&rig.js, "draft-7", |t| t.violations == 1).await;
    assert_eq!(
        t.status,
        TaskStatus::Working,
        "the rogue completion changed nothing"
    );
    assert_eq!(t.owner.as_ref().map(|o| o.as_str()), Some("editor"));

    // Stale epoch, claim of an owned task, accept by the wrong agent, and
    // an event after the end are each a violation.
    publish(&rig.js, &ev.claimed("draft-7", "thief")).await;
    publish(&rig.js, &ev.heartbeat("draft-7", "editor", 0)).await;
    let offer = ev.make(
        "draft-7",
        "editor",
        1,
        EventBody::HandoffOffered {
            to: HandoffTarget::Agent(agent("reviewer")),
            output_location: String::new(),
            accept_within: None,
        },
    );
    publish(&rig.js, &offer).await;
    publish(
        &rig.js,
        &ev.make(
            "draft-7",
            "intern",
            0,
            EventBody::HandoffAccepted {
                heartbeat_within: None,
            },
        ),
    )
    .await;
    publish(
        &rig.js,
        &ev.make(
            "draft-7",
            "editor",
            1,
            EventBody::Completed {
                output_location: String::new(),
                summary: String::new(),
            },
        ),
    )
    .await;
    publish(&rig.js, &ev.heartbeat("draft-7", "editor", 1)).await;
    let t = wait_task(&rig.js, "draft-7", |t| t.violations == 5).await;
    assert_eq!(t.status, TaskStatus::Completed);
    let alerts: Vec<_> = all_alerts(&rig.js)
        .await
        .into_iter()
        .filter(|a| a.kind == AlertKind::OwnershipViolation)
        .collect();
    assert_eq!(alerts.len(), 5);
    let summaries: Vec<_> = alerts.iter().map(|a| a.summary.as_str()).collect();
    assert!(
        summaries
            .iter()
            .any(|s| s.contains("already owned by editor")),
        "{summaries:?}"
    );
    assert!(
        summaries
            .iter()
            .any(|s| s.contains("holds epoch 0 but the task is at epoch 1")),
        "{summaries:?}"
    );
    assert!(
        summaries
            .iter()
            .any(|s| s.contains("offer is for reviewer, not intern")),
        "{summaries:?}"
    );
    assert!(
        summaries.iter().any(|s| s.contains("already completed")),
        "{summaries:?}"
    );
}

#[tokio::test]
async fn unknown_tasks_alert_or_are_created_by_policy() {
    let mut rig = Rig::new().await;
    rig.start_orchestrator(&[]).await;
    let mut ev = Events::new("w");
    publish(&rig.js, &ev.claimed("ghost", "a1")).await;
    let (alert, _) = wait_alert(&rig.js, is_alert(AlertKind::UnknownTask, "ghost")).await;
    assert!(alert.summary.contains("was ignored"), "{}", alert.summary);
    rig.wait_caught_up().await;
    assert!(stored_task(&rig.js, "ghost").await.is_none());

    rig.orchestrator.as_mut().expect("running").terminate();
    rig.start_orchestrator(&["--unknown-task", "create"]).await;
    publish(&rig.js, &ev.claimed("ghost2", "a1")).await;
    let (alert, _) = wait_alert(&rig.js, is_alert(AlertKind::UnknownTask, "ghost2")).await;
    assert!(
        alert.summary.contains("created from it"),
        "{}",
        alert.summary
    );
    let t = wait_task(&rig.js, "ghost2", |_| true).await;
    assert_eq!(t.owner.as_ref().map(|o| o.as_str()), Some("a1"));
}

#[tokio::test]
async fn a_poison_message_among_good_ones_is_dead_lettered_and_never_blocks() {
    let mut rig = Rig::new().await;
    rig.start_orchestrator(&[]).await;
    let mut ev = Events::new("w");
    publish(&rig.js, &ev.created("t1", "a")).await;
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", "poison-1");
    headers.insert("X-Sender", "legacy-bot");
    let poison = b"\x08\x96\x01 this is not a baton event".to_vec();
    let poison_seq = rig
        .js
        .publish_with_headers("baton.evt.t1.a", headers, poison.clone().into())
        .await
        .expect("publish")
        .await
        .expect("stored")
        .sequence;
    // Valid protobuf, but the payload names another agent than the subject.
    let mismatched = ev.claimed("t1", "mallory");
    let mismatch_seq = publish_raw(
        &rig.js,
        "baton.evt.t1.a",
        mismatched.encode_to_vec(),
        Some("mismatch-1"),
    )
    .await;
    // An id that is not a subject token.
    let mut bad_id = pb::Event::from(&ev.claimed("t1", "a"));
    bad_id.task_id = "t1.oops".into();
    publish_raw(
        &rig.js,
        "baton.evt.t1.a",
        bad_id.encode_to_vec(),
        Some("badid-1"),
    )
    .await;
    for _ in 0..3 {
        publish(&rig.js, &ev.heartbeat("t1", "a", 0)).await;
    }
    publish(&rig.js, &ev.claimed("t1", "a")).await;
    let t = wait_task(&rig.js, "t1", |t| t.owner.is_some()).await;
    assert_eq!(
        t.violations, 3,
        "the good events after the poison were applied"
    );

    let dlq = read_all(&rig.js, subjects::DLQ_STREAM, subjects::DLQ_ALL).await;
    assert_eq!(dlq.len(), 3);
    let first = &dlq[0];
    assert_eq!(first.subject, "baton.dlq.undecodable");
    assert_eq!(&first.payload[..], &poison[..], "original bytes");
    let h = first.headers.as_ref().expect("headers");
    assert_eq!(
        h.get("X-Sender").map(|v| v.as_str()),
        Some("legacy-bot"),
        "original headers"
    );
    assert_eq!(
        h.get("Baton-Dlq-Source").map(|v| v.as_str().to_string()),
        Some(format!("BATON_EVENTS:{poison_seq}"))
    );
    assert_eq!(
        h.get("Baton-Dlq-Subject").map(|v| v.as_str()),
        Some("baton.evt.t1.a")
    );
    assert!(
        h.get("Baton-Dlq-Reason")
            .is_some_and(|r| r.as_str().contains("cannot decode"))
    );
    assert_eq!(dlq[1].subject, "baton.dlq.subject_mismatch");
    assert!(
        dlq[1]
            .headers
            .as_ref()
            .and_then(|h| h.get("Baton-Dlq-Reason"))
            .is_some_and(|r| r.as_str().contains("mallory"))
    );
    assert_eq!(dlq[2].subject, "baton.dlq.invalid");
    assert!(
        dlq[2]
            .headers
            .as_ref()
            .and_then(|h| h.get("Baton-Dlq-Reason"))
            .is_some_and(|r| r.as_str().contains("task_id"))
    );

    let malformed: Vec<_> = all_alerts(&rig.js)
        .await
        .into_iter()
        .filter(|a| a.kind == AlertKind::MalformedEvent)
        .collect();
    assert_eq!(malformed.len(), 3);
    assert!(malformed.iter().any(|a| a.event_seq == mismatch_seq));
    assert!(
        malformed[0].summary.contains("BATON_DLQ"),
        "{}",
        malformed[0].summary
    );
    assert!(
        rig.orchestrator
            .as_mut()
            .expect("running")
            .child
            .try_wait()
            .expect("status")
            .is_none(),
        "still running"
    );
}

#[tokio::test]
async fn answers_queries_over_the_service_api() {
    let mut rig = Rig::new().await;
    rig.start_orchestrator(&[]).await;
    let mut ev = Events::new("blog");
    for i in 0..5 {
        publish(&rig.js, &ev.created(&format!("t{i}"), "planner")).await;
    }
    publish(&rig.js, &ev.claimed("t1", "writer")).await;
    publish(&rig.js, &ev.claimed("t3", "writer")).await;
    publish(&rig.js, &ev.claimed("t3", "other")).await;
    rig.wait_caught_up().await;

    // Discovery through the service framework.
    let ping = tokio::time::timeout(
        PATIENCE,
        rig.client
            .request("$SRV.INFO.baton-orchestrator", "".into()),
    )
    .await
    .expect("in time")
    .expect("info");
    let info: serde_json::Value = serde_json::from_slice(&ping.payload).expect("json");
    let endpoints: Vec<_> = info["endpoints"]
        .as_array()
        .expect("endpoints")
        .iter()
        .map(|e| e["subject"].as_str().unwrap_or_default().to_string())
        .collect();
    for e in [
        "baton.api.v1.task.get",
        "baton.api.v1.task.list",
        "baton.api.v1.task.timeline",
    ] {
        assert!(endpoints.contains(&e.to_string()), "{endpoints:?}");
    }

    let got: pb::GetTaskResponse = request(
        &rig.client,
        "task.get",
        &pb::GetTaskRequest {
            task_id: "t1".into(),
        },
    )
    .await;
    assert_eq!(got.task.expect("task").owner, "writer");
    let missing: pb::GetTaskResponse = request(
        &rig.client,
        "task.get",
        &pb::GetTaskRequest {
            task_id: "nope".into(),
        },
    )
    .await;
    assert!(missing.task.is_none());
    assert_eq!(missing.error, "unknown task \"nope\"");

    let by_owner: pb::ListTasksResponse = request(
        &rig.client,
        "task.list",
        &pb::ListTasksRequest {
            owner: "writer".into(),
            ..Default::default()
        },
    )
    .await;
    let ids: Vec<_> = by_owner.tasks.iter().map(|t| t.task_id.as_str()).collect();
    assert_eq!(ids, vec!["t1", "t3"]);
    let submitted: pb::ListTasksResponse = request(
        &rig.client,
        "task.list",
        &pb::ListTasksRequest {
            status: pb::TaskStatus::Submitted as i32,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(submitted.total, 3);
    let page: pb::ListTasksResponse = request(
        &rig.client,
        "task.list",
        &pb::ListTasksRequest {
            workflow_id: "blog".into(),
            limit: 2,
            ..Default::default()
        },
    )
    .await;
    assert_eq!((page.tasks.len(), page.truncated, page.total), (2, true, 5));
    let next: pb::ListTasksResponse = request(
        &rig.client,
        "task.list",
        &pb::ListTasksRequest {
            workflow_id: "blog".into(),
            limit: 2,
            after_task_id: "t1".into(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(
        next.tasks
            .iter()
            .map(|t| t.task_id.as_str())
            .collect::<Vec<_>>(),
        vec!["t2", "t3"]
    );

    let tl: pb::TimelineResponse = request(
        &rig.client,
        "task.timeline",
        &pb::TimelineRequest {
            task_id: "t3".into(),
            limit: 0,
        },
    )
    .await;
    let rows: Vec<_> = tl
        .entries
        .iter()
        .map(|e| {
            (
                e.kind.as_str(),
                e.agent_id.as_str(),
                e.owner.as_str(),
                e.epoch,
                !e.violation.is_empty(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        vec![
            ("created", "planner", "", 0, false),
            ("claimed", "writer", "writer", 1, false),
            ("claimed", "other", "writer", 1, true)
        ]
    );
    assert_eq!(tl.entries[2].violation, "task is already owned by writer");
}

#[tokio::test]
async fn reports_liveness_metrics_and_health_and_stops_gracefully() {
    let mut rig = Rig::new().await;
    let status = rig.start_orchestrator(&[]).await;
    assert_eq!(status.service, "orchestrator");
    let addr = status.http_addr.clone();
    let mut ev = Events::new("w");
    publish(&rig.js, &ev.created("t1", "a")).await;
    publish(&rig.js, &ev.heartbeat("t1", "b", 0)).await;
    publish_raw(&rig.js, "baton.evt.t1.a", b"junk".to_vec(), None).await;
    rig.wait_caught_up().await;
    let (code, body) = http_get(&addr, "/healthz").await;
    assert_eq!((code, body.trim()), (200, "ok"));
    let (code, metrics) = http_get(&addr, "/metrics").await;
    assert_eq!(code, 200);
    for needle in [
        "baton_orchestrator_events_applied_total 1",
        "baton_orchestrator_violations_total 1",
        "baton_orchestrator_dead_lettered_total 1",
        "baton_orchestrator_consumer_pending 0",
        "baton_orchestrator_apply_latency_seconds_count 3",
    ] {
        assert!(metrics.contains(needle), "missing {needle:?} in\n{metrics}");
    }
    let live = wait_kv(&rig.js, subjects::SERVICES_BUCKET, "orchestrator.o1", |b| {
        let s = pb::ServiceStatus::decode(b).ok()?;
        (s.applied_seq >= 3).then_some(s)
    })
    .await;
    assert_eq!(live.pending, 0);

    assert!(
        rig.orchestrator.as_mut().expect("running").terminate(),
        "exits 0 on SIGTERM"
    );
    assert!(
        rig.log(1).contains("orchestrator stopped"),
        "{}",
        rig.log(1)
    );
}

/// kill -9 at arbitrary moments while events stream in, restart each time:
/// the stored state equals the fold of the whole stream, with no event lost
/// or applied twice, and each violation alerted exactly once.
#[tokio::test]
async fn kill_9_and_restart_loses_nothing_and_applies_nothing_twice() {
    let mut rig = Rig::new().await;
    // Small batches: many flushes, so a kill lands between and during them.
    let flags = ["--max-batch", "64", "--max-lag", "20ms"];
    rig.start_orchestrator(&flags).await;
    let js = rig.js.clone();
    let tasks = 150;
    let rounds = 12;
    // Agents contend: a0 claims, a1 tries too (violation), heartbeats from
    // both, handoffs, releases and re-claims, completion.
    let publisher = tokio::spawn(async move {
        let mut ev = Events::new("w");
        let mut acks = futures::stream::FuturesUnordered::new();
        let mut sent = 0usize;
        for round in 0..rounds {
            // Pace the load so the orchestrator is busy throughout: each
            // restart waits out the killed instance's lease (1 s here).
            tokio::time::sleep(Duration::from_millis(500)).await;
            for t in 0..tasks {
                let id = format!("t{t}");
                let batch = match round {
                    0 => vec![ev.created(&id, "planner")],
                    1 => vec![ev.claimed(&id, "a0"), ev.claimed(&id, "a1")],
                    r if r % 4 == 2 => vec![ev.heartbeat(&id, "a0", 1), ev.heartbeat(&id, "a1", 1)],
                    r if r % 4 == 3 => vec![ev.make(
                        &id,
                        "a0",
                        1,
                        EventBody::HandoffOffered {
                            to: HandoffTarget::Agent(agent("a1")),
                            output_location: format!("out/{r}"),
                            accept_within: None,
                        },
                    )],
                    r if r % 4 == 0 => vec![
                        ev.make(
                            &id,
                            "a1",
                            0,
                            EventBody::HandoffAccepted {
                                heartbeat_within: None,
                            },
                        ),
                        ev.heartbeat(&id, "a1", 2),
                    ],
                    _ => vec![
                        ev.make(
                            &id,
                            "a1",
                            2,
                            EventBody::Released {
                                reason: "next".into(),
                            },
                        ),
                        ev.claimed(&id, "a0"),
                    ],
                };
                for e in batch {
                    let msg = jetstream::message::PublishMessage::build()
                        .payload(e.encode_to_vec().into())
                        .message_id(e.event_id.as_str());
                    let ack = js
                        .send_publish(subjects::event(&e.task, &e.agent), msg)
                        .await
                        .expect("send");
                    acks.push(ack.into_future());
                    sent += 1;
                    if acks.len() > 256 {
                        acks.next().await.expect("ack").expect("stored");
                    }
                }
            }
        }
        while let Some(a) = acks.next().await {
            a.expect("stored");
        }
        sent
    });
    // Crash the orchestrator four times while events arrive, each time
    // some way into a new stretch of work.
    let mut seen = 0;
    for k in 0..4u64 {
        seen = wait_kv(
            &rig.js,
            subjects::SERVICES_BUCKET,
            &format!("orchestrator.o{}", rig.starts),
            |b| {
                let s = pb::ServiceStatus::decode(b).ok()?;
                (s.applied_seq > seen).then_some(s.applied_seq)
            },
        )
        .await;
        tokio::time::sleep(Duration::from_millis(37 * k)).await;
        rig.orchestrator.as_mut().expect("running").kill9();
        rig.start_orchestrator(&flags).await;
    }
    let mut sent = publisher.await.expect("publisher");
    assert_eq!(rig.last_seq().await, sent as u64);
    rig.wait_caught_up().await;

    // Now a backlog: more events while the orchestrator is down, then
    // crashes while it replays them (state is flushed rarely then).
    rig.orchestrator.as_mut().expect("running").kill9();
    let mut ev = Events::new("w2");
    let mut acks = futures::stream::FuturesUnordered::new();
    // Big enough that its replay outlasts several state flushes.
    for round in 0..200 {
        for t in 0..tasks {
            let id = format!("t{t}");
            let e = if round % 2 == 0 {
                ev.heartbeat(&id, "a0", 3)
            } else {
                ev.heartbeat(&id, "a1", 2)
            };
            let msg = jetstream::message::PublishMessage::build()
                .payload(e.encode_to_vec().into())
                .message_id(e.event_id.as_str());
            let ack = rig
                .js
                .send_publish(subjects::event(&e.task, &e.agent), msg)
                .await
                .expect("send");
            acks.push(ack.into_future());
            sent += 1;
            if acks.len() > 256 {
                acks.next().await.expect("ack").expect("stored");
            }
        }
    }
    while let Some(a) = acks.next().await {
        a.expect("stored");
    }
    let backlog_flags = ["--max-batch", "64", "--catch-up-lag", "50ms"];
    rig.start_orchestrator(&backlog_flags).await;
    // Kill it each time its checkpoint moves (after a state flush), while
    // the replay is still under way.
    let mut replay_kills = 0;
    for _ in 0..3 {
        let from = seen;
        seen = wait_kv(
            &rig.js,
            subjects::CHECKPOINTS_BUCKET,
            subjects::ORCHESTRATOR_CONSUMER,
            |b| {
                let checkpoint: u64 = std::str::from_utf8(b).ok()?.trim().parse().ok()?;
                (checkpoint > from).then_some(checkpoint)
            },
        )
        .await;
        if seen >= sent as u64 {
            break;
        }
        rig.orchestrator.as_mut().expect("running").kill9();
        rig.start_orchestrator(&backlog_flags).await;
        replay_kills += 1;
    }
    assert!(
        replay_kills > 0,
        "the whole backlog was replayed before its first state flush: make it bigger"
    );
    assert_eq!(rig.last_seq().await, sent as u64);
    rig.wait_caught_up().await;

    let (expected, refused) = fold_of_stream(&rig.js).await;
    assert_eq!(expected.len(), tasks);
    for (id, want) in &expected {
        let got = stored_task(&rig.js, id).await.expect("stored");
        assert_eq!(&got, want, "task {id}");
    }
    let violation_ids: std::collections::HashSet<_> = all_alerts(&rig.js)
        .await
        .into_iter()
        .filter(|a| a.kind == AlertKind::OwnershipViolation)
        .map(|a| a.id)
        .collect();
    assert_eq!(violation_ids.len(), refused, "each violation alerted once");
    let alerts_total = all_alerts(&rig.js)
        .await
        .iter()
        .filter(|a| a.kind == AlertKind::OwnershipViolation)
        .count();
    assert_eq!(alerts_total, refused, "no violation alerted twice");
}

/// Stopping while an event's alert cannot be stored loses nothing: the
/// checkpoint stays before that event, and the next start raises the alert.
#[tokio::test]
async fn an_alert_not_stored_before_a_stop_is_raised_after_the_restart() {
    let mut rig = Rig::new().await;
    rig.start_orchestrator(&[]).await;
    let mut ev = Events::new("w");
    publish(&rig.js, &ev.created("t1", "planner")).await;
    publish(&rig.js, &ev.claimed("t1", "owner")).await;
    wait_task(&rig.js, "t1", |t| t.owner.is_some()).await;

    // Alerts cannot be stored while their stream is gone.
    rig.js
        .delete_stream(subjects::ALERTS_STREAM)
        .await
        .expect("delete BATON_ALERTS");
    let seq = publish(&rig.js, &ev.claimed("t1", "intruder")).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !rig.log(1).contains("publish not acknowledged; retrying") {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the orchestrator never tried to publish the alert:\n{}",
            rig.log(1)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        rig.orchestrator.as_mut().expect("running").terminate(),
        "stops cleanly on SIGTERM"
    );

    // The next start re-creates the stream and re-reads the event.
    rig.start_orchestrator(&[]).await;
    let (alert, _) = wait_alert(&rig.js, is_alert(AlertKind::OwnershipViolation, "t1")).await;
    assert_eq!(alert.event_seq, seq);
    assert_eq!(alert.agents, vec![agent("intruder"), agent("owner")]);
}
