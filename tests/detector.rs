//! The stall detector against a real server: every alert kind, resolution,
//! re-notification, inhibition, silences (in-process, on virtual time), a
//! kill -9 restart (child process, real time), and a backtest.

mod support;

use std::{sync::Arc, time::Duration};

use async_nats::jetstream;
use baton_core::{
    AlertKind, AlertState, EventBody, HandoffTarget, TaskCreated, TaskWindows, Time, rules::Rules,
    subjects,
};
use baton_proto::{prost::Message, v1 as pb};
use baton_service::shutdown;
use baton_stall::{Clock, ManualClock};
use baton_testkit::NatsServer;
use futures::StreamExt;
use support::*;

const RULES: &str = r#"
[defaults]
heartbeat = "30s"
accept = "60s"
start = "120s"
blocked = "300s"
progress = "off"
renotify = "100s"
"#;

/// A server and an in-process detector on a manual clock.
struct Virtual {
    _server: NatsServer,
    js: jetstream::Context,
    clock: Arc<ManualClock>,
    trigger: shutdown::Trigger,
    running: Option<baton_stall::Running>,
    alerts: async_nats::Subscriber,
}

fn wall_now() -> Time {
    baton_service::liveness::wall_now()
}

impl Virtual {
    async fn start(rules: &str, tweak: impl FnOnce(&mut baton_stall::Config)) -> Virtual {
        let server = NatsServer::start().await.expect("server");
        let client = async_nats::connect(server.url()).await.expect("connect");
        let js = jetstream::new(client.clone());
        // Every alert as published (not only as stored: a duplicate page
        // would reach subscribers even if the stream dropped it).
        let alerts = client.subscribe("baton.alert.>").await.expect("subscribe");
        let clock = ManualClock::new(wall_now());
        let mut config = baton_stall::Config::new(baton_jetstream::NatsOptions::new(server.url()));
        config.rules = Rules::from_toml(rules).expect("rules");
        config.clock = Clock::Manual(clock.clone());
        config.grace = Duration::ZERO;
        config.consumer_check_interval = Duration::from_millis(100);
        tweak(&mut config);
        let (trigger, shutdown) = shutdown::channel();
        let running = baton_stall::start(config, shutdown)
            .await
            .expect("detector starts");
        Virtual {
            _server: server,
            js,
            clock,
            trigger,
            running: Some(running),
            alerts,
        }
    }

    /// Publishes and waits until the detector has folded it.
    async fn send(&self, event: &baton_core::Event) -> u64 {
        let seq = publish(&self.js, event).await;
        let progress = self.running.as_ref().expect("running").progress.clone();
        let metrics = self.running.as_ref().expect("running").metrics.clone();
        // The detector acknowledges each event after folding it.
        wait_until(|| async {
            let stream = self
                .js
                .get_stream_no_info(subjects::EVENTS_STREAM)
                .await
                .ok()?;
            let info = stream
                .consumer_info(subjects::DETECTOR_CONSUMER)
                .await
                .ok()?;
            (info.ack_floor.stream_sequence >= seq).then_some(())
        })
        .await;
        let _ = (progress, metrics);
        seq
    }

    /// Moves virtual time forward.
    fn advance(&self, secs: u64) {
        self.clock.advance(Duration::from_secs(secs));
    }

    /// The next alert notification published.
    async fn next_alert(&mut self) -> baton_core::Alert {
        let msg = tokio::time::timeout(PATIENCE, self.alerts.next())
            .await
            .expect("an alert in time")
            .expect("subscription open");
        baton_core::Alert::decode(&msg.payload).expect("alert decodes")
    }

    /// Asserts nothing is published while the detector handles `advance`.
    async fn quiet_after(&mut self, secs: u64) {
        // Make the detector do a full loop turn after the clock moved: send
        // a marker (an event for a task that does not exist, which the
        // detector folds to nothing) and wait until it is acknowledged.
        self.advance(secs);
        let mut ev = Events::new("marker");
        let marker = ev.heartbeat(&format!("marker-{}", nuid::next()), "m", 1);
        self.send(&marker).await;
        if let Ok(Some(msg)) =
            tokio::time::timeout(Duration::from_millis(200), self.alerts.next()).await
        {
            let a = baton_core::Alert::decode(&msg.payload).expect("alert");
            panic!("unexpected alert {} {:?}: {}", a.kind, a.state, a.summary);
        }
    }

    async fn stop(mut self) {
        self.trigger.trigger();
        if let Some(r) = self.running.take() {
            r.wait().await.expect("clean stop");
        }
    }
}

/// Polls an observable condition (consumer ack floor) with a deadline.
async fn wait_until<F, Fut, T>(mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if let Some(t) = f().await {
            return t;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition never held"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn created(
    ev: &mut Events,
    task: &str,
    windows: TaskWindows,
    assignee: Option<&str>,
) -> baton_core::Event {
    ev.make(
        task,
        "planner",
        0,
        EventBody::Created(TaskCreated {
            stage: Some(baton_core::StageName::new("draft").expect("stage")),
            title: String::new(),
            assignee: assignee.map(agent),
            windows,
            artifacts: Vec::new(),
        }),
    )
}

#[tokio::test]
async fn heartbeat_missed_fires_renotifies_and_resolves() {
    let mut v = Virtual::start(RULES, |_| {}).await;
    let mut ev = Events::new("w");
    v.send(&ev.created("t1", "planner")).await;
    v.send(&ev.claimed("t1", "a1")).await;
    v.quiet_after(29).await;
    v.advance(2);
    let a = v.next_alert().await;
    assert_eq!(
        (a.kind, a.state, a.notification),
        (AlertKind::HeartbeatMissed, AlertState::Firing, 0)
    );
    assert_eq!(a.agents, vec![agent("a1")]);
    assert!(
        a.summary.contains("owner a1 has sent no heartbeat"),
        "{}",
        a.summary
    );
    assert_eq!(
        a.last_event.as_ref().map(|e| e.kind),
        Some(baton_core::EventKind::Claimed)
    );
    assert!(a.due_at.is_some() && a.late_by.is_some());
    v.advance(100);
    let again = v.next_alert().await;
    assert_eq!((again.id.as_str(), again.notification), (a.id.as_str(), 1));
    v.send(&ev.heartbeat("t1", "a1", 1)).await;
    let resolved = v.next_alert().await;
    assert_eq!(
        (resolved.kind, resolved.state),
        (AlertKind::HeartbeatMissed, AlertState::Resolved)
    );
    assert_eq!(resolved.resolves.as_deref(), Some(a.id.as_str()));
    v.stop().await;
}

#[tokio::test]
async fn a_handoff_nobody_accepts_names_sender_and_recipient_and_inhibits_not_started() {
    let mut v = Virtual::start(RULES, |_| {}).await;
    let mut ev = Events::new("w");
    v.send(&ev.created("t1", "planner")).await;
    v.send(&ev.claimed("t1", "editor")).await;
    v.send(&ev.make(
        "t1",
        "editor",
        1,
        EventBody::HandoffOffered {
            to: HandoffTarget::Agent(agent("reviewer")),
            output_location: "s3://drafts/t1.md".into(),
            accept_within: None,
        },
    ))
    .await;
    v.advance(61);
    let a = v.next_alert().await;
    assert_eq!(
        (a.kind, a.state),
        (AlertKind::HandoffNotAccepted, AlertState::Firing)
    );
    assert_eq!(a.agents, vec![agent("reviewer"), agent("editor")]);
    assert!(
        a.summary
            .contains("stalled between editor and agent reviewer"),
        "{}",
        a.summary
    );
    // NOT_STARTED for the same handoff would be due at 120 s: inhibited.
    v.quiet_after(70).await;
    v.send(&ev.make(
        "t1",
        "reviewer",
        0,
        EventBody::HandoffAccepted {
            heartbeat_within: None,
        },
    ))
    .await;
    let r = v.next_alert().await;
    assert_eq!(
        (r.kind, r.state),
        (AlertKind::HandoffNotAccepted, AlertState::Resolved)
    );
    v.stop().await;
}

// Stored times are real (the broker's), the detector's clock is virtual:
// each scenario publishes its events first, then moves the clock.

#[tokio::test]
async fn not_started_names_the_assignee_and_resolves_on_claim() {
    let mut v = Virtual::start(RULES, |_| {}).await;
    let mut ev = Events::new("w");
    v.send(&created(
        &mut ev,
        "idle",
        TaskWindows {
            start_within: Some(Duration::from_secs(10)),
            ..Default::default()
        },
        Some("a9"),
    ))
    .await;
    v.quiet_after(9).await;
    v.advance(2);
    let a = v.next_alert().await;
    assert_eq!(
        (a.kind, a.agents.clone()),
        (AlertKind::NotStarted, vec![agent("a9")])
    );
    assert!(
        a.summary.contains("assignee a9 to claim it"),
        "{}",
        a.summary
    );
    v.send(&ev.claimed("idle", "a9")).await;
    let r = v.next_alert().await;
    assert_eq!(
        (r.kind, r.state),
        (AlertKind::NotStarted, AlertState::Resolved)
    );
    v.stop().await;
}

#[tokio::test]
async fn deadline_exceeded_resolves_when_the_task_ends() {
    let mut v = Virtual::start(RULES, |_| {}).await;
    let mut ev = Events::new("w");
    v.send(&created(
        &mut ev,
        "due",
        TaskWindows {
            deadline_within: Some(Duration::from_secs(20)),
            heartbeat_within: Some(Duration::from_secs(1000)),
            ..Default::default()
        },
        None,
    ))
    .await;
    v.send(&ev.claimed("due", "a1")).await;
    v.advance(21);
    let a = v.next_alert().await;
    assert_eq!(a.kind, AlertKind::DeadlineExceeded);
    assert!(a.summary.contains("past its deadline"), "{}", a.summary);
    v.send(&ev.make(
        "due",
        "a1",
        1,
        EventBody::Completed {
            output_location: String::new(),
            summary: String::new(),
        },
    ))
    .await;
    let r = v.next_alert().await;
    assert_eq!(
        (r.kind, r.state),
        (AlertKind::DeadlineExceeded, AlertState::Resolved)
    );
    assert!(r.summary.contains("the task is completed"), "{}", r.summary);
    v.stop().await;
}

#[tokio::test]
async fn no_progress_is_separate_from_liveness() {
    let rules = format!("{RULES}\n[workflows.strict]\nprogress = \"50s\"\nheartbeat = \"1000s\"\n");
    let mut v = Virtual::start(&rules, |_| {}).await;
    let mut ev = Events::new("strict");
    v.send(&ev.created("busy", "planner")).await;
    v.send(&ev.claimed("busy", "a2")).await;
    for _ in 0..3 {
        v.send(&ev.make(
            "busy",
            "a2",
            1,
            EventBody::Heartbeat {
                note: "thinking".into(),
                progress: false,
            },
        ))
        .await;
    }
    v.advance(51);
    let a = v.next_alert().await;
    assert_eq!(
        (a.kind, a.agents.clone()),
        (AlertKind::NoProgress, vec![agent("a2")])
    );
    assert!(
        a.summary.contains("alive but reported no progress"),
        "{}",
        a.summary
    );
    v.send(&ev.make(
        "busy",
        "a2",
        1,
        EventBody::Heartbeat {
            note: "section 1".into(),
            progress: true,
        },
    ))
    .await;
    let r = v.next_alert().await;
    assert_eq!(
        (r.kind, r.state),
        (AlertKind::NoProgress, AlertState::Resolved)
    );
    v.stop().await;
}

#[tokio::test]
async fn blocked_too_long_replaces_the_heartbeat_rule() {
    let mut v = Virtual::start(RULES, |_| {}).await;
    let mut ev = Events::new("w");
    v.send(&ev.created("stuck", "planner")).await;
    v.send(&ev.claimed("stuck", "a3")).await;
    v.send(&ev.make(
        "stuck",
        "a3",
        1,
        EventBody::Blocked {
            reason: "needs the brand guide".into(),
        },
    ))
    .await;
    // 30 s lease: no heartbeat is expected while blocked.
    v.quiet_after(299).await;
    v.advance(2);
    let a = v.next_alert().await;
    assert_eq!(a.kind, AlertKind::BlockedTooLong);
    assert!(a.summary.contains("needs the brand guide"), "{}", a.summary);
    v.stop().await;
}

#[tokio::test]
async fn silences_in_kv_are_honoured() {
    let mut v = Virtual::start(RULES, |_| {}).await;
    let mut ev = Events::new("w");
    let silences = wait_bucket(&v.js, subjects::SILENCES_BUCKET).await;
    let until = v.clock.now().saturating_add(Duration::from_secs(200));
    let silence = pb::Silence {
        silence_id: "s1".into(),
        kind: pb::AlertKind::HeartbeatMissed as i32,
        agent_id: "a1".into(),
        until: Some(baton_core::wire::time_to_wire(until)),
        ..Default::default()
    };
    silences
        .put("s1", silence.encode_to_vec().into())
        .await
        .expect("silence");
    v.send(&ev.created("t1", "planner")).await;
    v.send(&ev.claimed("t1", "a1")).await;
    v.quiet_after(60).await;
    // The silence ends; the still-firing alert pages then.
    v.advance(150);
    let a = v.next_alert().await;
    assert_eq!(
        (a.kind, a.state, a.notification),
        (AlertKind::HeartbeatMissed, AlertState::Firing, 0)
    );
    v.stop().await;
}

#[tokio::test]
async fn watches_the_watchers() {
    let mut v = Virtual::start(RULES, |c| {
        c.watch.stall_after = Duration::from_secs(30);
    })
    .await;
    // An orchestrator that renews its leadership lease, then stops.
    let leaders = wait_bucket(&v.js, subjects::LEADERS_BUCKET).await;
    let lease = pb::Leadership {
        service: "orchestrator".into(),
        instance: "o1".into(),
        term: 1,
        ttl_ms: 1000,
        ..Default::default()
    };
    leaders
        .put("orchestrator", lease.encode_to_vec().into())
        .await
        .expect("lease");
    v.advance(10);
    let a = loop {
        let a = v.next_alert().await;
        if a.kind == AlertKind::OrchestratorDown {
            break a;
        }
    };
    assert!(a.task.is_none());
    assert!(
        a.summary.contains("No active orchestrator for"),
        "{}",
        a.summary
    );
    leaders
        .put("orchestrator", lease.encode_to_vec().into())
        .await
        .expect("lease renewed");
    let r = loop {
        let r = v.next_alert().await;
        if r.kind == AlertKind::OrchestratorDown {
            break r;
        }
    };
    assert_eq!(r.state, AlertState::Resolved);

    // A consumer stuck at its max_ack_pending.
    let stream =
        v.js.get_stream(subjects::EVENTS_STREAM)
            .await
            .expect("stream");
    let stuck = stream
        .create_consumer(jetstream::consumer::pull::Config {
            durable_name: Some(subjects::ORCHESTRATOR_CONSUMER.into()),
            ack_policy: jetstream::consumer::AckPolicy::Explicit,
            max_ack_pending: 2,
            ..Default::default()
        })
        .await
        .expect("consumer");
    let mut ev = Events::new("w");
    for i in 0..4 {
        v.send(&ev.created(&format!("c{i}"), "p")).await;
    }
    let mut batch = stuck
        .fetch()
        .max_messages(2)
        .messages()
        .await
        .expect("fetch");
    while batch.next().await.is_some() {}
    let a = loop {
        let a = v.next_alert().await;
        if a.kind == AlertKind::ConsumerStalled {
            break a;
        }
    };
    assert!(a.summary.contains("max_ack_pending"), "{}", a.summary);
    v.stop().await;
}

/// The detector as a child process on real time: kill -9, events while it
/// is down, restart. No duplicate page, nothing missed.
#[tokio::test]
async fn kill_9_restart_neither_repages_nor_misses() {
    let server = NatsServer::start().await.expect("server");
    let client = async_nats::connect(server.url()).await.expect("connect");
    let js = jetstream::new(client.clone());
    let dir = tempfile::tempdir().expect("tmp");
    let rules = dir.path().join("rules.toml");
    std::fs::write(
        &rules,
        "[defaults]\nheartbeat = \"1s\"\nstart = \"1h\"\nrenotify = \"1h\"\n",
    )
    .expect("rules");
    let rules = rules.to_string_lossy().to_string();
    let args = [
        "stall-detector",
        "--rules",
        rules.as_str(),
        "--grace",
        "50ms",
        "--liveness-interval",
        "200ms",
        "--instance",
        "d",
    ];
    let mut pages = client.subscribe("baton.alert.>").await.expect("subscribe");
    let mut detector = BatonProcess::spawn(&server.url(), &args, &dir.path().join("d1.log"));
    wait_kv(&js, subjects::SERVICES_BUCKET, "stall-detector.d", |_| {
        Some(())
    })
    .await;
    let mut ev = Events::new("w");
    publish(&js, &ev.created("a", "p")).await;
    publish(&js, &ev.claimed("a", "w1")).await;
    let first = tokio::time::timeout(PATIENCE, pages.next())
        .await
        .expect("page")
        .expect("open");
    let first = baton_core::Alert::decode(&first.payload).expect("alert");
    assert_eq!(
        (first.kind, first.task.as_ref().map(|t| t.to_string())),
        (AlertKind::HeartbeatMissed, Some("a".into()))
    );

    detector.kill9();
    // While it is down, task b's lease runs out.
    publish(&js, &ev.created("b", "p")).await;
    let b_claim = publish(&js, &ev.claimed("b", "w2")).await;
    let stored = read_all(&js, subjects::EVENTS_STREAM, "baton.evt.b.w2").await;
    let b_due = stored
        .iter()
        .find(|m| m.seq == b_claim)
        .expect("claim")
        .stored_at
        .saturating_add(Duration::from_secs(1));
    // Let b's deadline pass in real time (this detector runs on real time).
    tokio::time::sleep(b_due.since(wall_now()) + Duration::from_millis(50)).await;

    let mut detector2 = BatonProcess::spawn(&server.url(), &args, &dir.path().join("d2.log"));
    let mut seen = Vec::new();
    let b_alert = loop {
        let m = tokio::time::timeout(PATIENCE, pages.next())
            .await
            .expect("page after restart")
            .expect("open");
        let a = baton_core::Alert::decode(&m.payload).expect("alert");
        seen.push((a.id.clone(), a.state, a.notification));
        if a.task.as_ref().is_some_and(|t| t.as_str() == "b") {
            break a;
        }
    };
    assert_eq!(
        (b_alert.kind, b_alert.state),
        (AlertKind::HeartbeatMissed, AlertState::Firing),
        "due while down: fired on recovery"
    );
    assert!(
        !seen.iter().any(|(id, _, _)| *id == first.id),
        "task a's alert was not paged again after the restart: {seen:?}"
    );
    // And it still resolves when a's owner shows up.
    publish(&js, &ev.heartbeat("a", "w1", 1)).await;
    let resolved = loop {
        let m = tokio::time::timeout(PATIENCE, pages.next())
            .await
            .expect("resolution")
            .expect("open");
        let a = baton_core::Alert::decode(&m.payload).expect("alert");
        if a.task.as_ref().is_some_and(|t| t.as_str() == "a") {
            break a;
        }
    };
    assert_eq!(
        (resolved.state, resolved.resolves.as_deref()),
        (AlertState::Resolved, Some(first.id.as_str()))
    );

    // A restart with nothing new to read (the checkpoint is at the end of
    // the stream) still judges the deadlines it restored: task c's lease
    // runs out after the restart, with no event arriving.
    let within = Duration::from_secs(5);
    publish(&js, &ev.created("c", "p")).await;
    let claim = ev.make(
        "c",
        "w3",
        0,
        EventBody::Claimed {
            heartbeat_within: Some(within),
        },
    );
    let claimed_at = std::time::Instant::now();
    let c_claim = publish(&js, &claim).await;
    wait_kv(
        &js,
        subjects::CHECKPOINTS_BUCKET,
        subjects::DETECTOR_CONSUMER,
        |b| {
            let at: u64 = std::str::from_utf8(b).ok()?.trim().parse().ok()?;
            (at >= c_claim).then_some(())
        },
    )
    .await;
    detector2.kill9();
    assert!(
        claimed_at.elapsed() < within,
        "the detector took longer than c's lease to checkpoint its claim; this step needs a longer lease"
    );
    let _detector3 = BatonProcess::spawn(&server.url(), &args, &dir.path().join("d3.log"));
    let c_alert = loop {
        let m = tokio::time::timeout(PATIENCE, pages.next())
            .await
            .expect("c paged by the restarted detector")
            .expect("open");
        let a = baton_core::Alert::decode(&m.payload).expect("alert");
        if a.task.as_ref().is_some_and(|t| t.as_str() == "c") {
            break a;
        }
    };
    assert_eq!(
        (c_alert.kind, c_alert.state),
        (AlertKind::HeartbeatMissed, AlertState::Firing)
    );
}

/// `baton rules backtest` over a recorded scenario, with two rule sets.
#[tokio::test]
async fn backtest_replays_history_with_other_rules() {
    let server = NatsServer::start().await.expect("server");
    let client = async_nats::connect(server.url()).await.expect("connect");
    let js = jetstream::new(client);
    baton_jetstream::ensure(&js, &baton_jetstream::Topology::default())
        .await
        .expect("topology");
    let mut ev = Events::new("blog");
    // t1: claimed and never heard from again; t2: offered, never accepted;
    // t3: done properly.
    publish(&js, &ev.created("t1", "p")).await;
    publish(&js, &ev.claimed("t1", "a1")).await;
    publish(&js, &ev.created("t2", "p")).await;
    publish(&js, &ev.claimed("t2", "a2")).await;
    publish(
        &js,
        &ev.make(
            "t2",
            "a2",
            1,
            EventBody::HandoffOffered {
                to: HandoffTarget::Agent(agent("a3")),
                output_location: "o".into(),
                accept_within: None,
            },
        ),
    )
    .await;
    publish(&js, &ev.created("t3", "p")).await;
    publish(&js, &ev.claimed("t3", "a4")).await;
    publish(
        &js,
        &ev.make(
            "t3",
            "a4",
            1,
            EventBody::Completed {
                output_location: String::new(),
                summary: String::new(),
            },
        ),
    )
    .await;

    let dir = tempfile::tempdir().expect("tmp");
    let strict = dir.path().join("strict.toml");
    std::fs::write(
        &strict,
        "[defaults]\nheartbeat = \"30s\"\naccept = \"5m\"\nstart = \"off\"\n",
    )
    .expect("write");
    let lax = dir.path().join("lax.toml");
    std::fs::write(
        &lax,
        "[defaults]\nheartbeat = \"off\"\naccept = \"2h\"\nstart = \"off\"\n",
    )
    .expect("write");
    let run = |rules: &std::path::Path| {
        let out = std::process::Command::new(baton_bin())
            .args(["--nats", &server.url(), "rules", "backtest", "--rules"])
            .arg(rules)
            .args(["--then", "1h", "--json"])
            .output()
            .expect("run backtest");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<serde_json::Value>(&out.stdout).expect("json")
    };
    let strict = run(&strict);
    assert_eq!(strict["events"], 8);
    let firing: Vec<(String, String)> = strict["alerts"]
        .as_array()
        .expect("alerts")
        .iter()
        .filter(|a| a["state"] == "firing" && a["notification"] == 0)
        .map(|a| {
            (
                a["kind"].as_str().unwrap_or("").to_string(),
                a["task_id"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    assert_eq!(
        firing,
        vec![
            ("heartbeat_missed".into(), "t1".into()),
            ("handoff_not_accepted".into(), "t2".into())
        ]
    );
    // Each fires when it was due, as the live detector's timers fire it, not
    // when the next event (or the end of `--then`) comes along.
    for a in strict["alerts"].as_array().expect("alerts") {
        if a["state"] == "firing" && a["notification"] == 0 {
            assert_eq!(a["observed_at"], a["due_at"], "{a}");
            assert!(
                a["late_by_ms"].is_null() || a["late_by_ms"] == 0,
                "not late: {a}"
            );
        }
    }
    let lax = run(&lax);
    assert!(
        lax["alerts"].as_array().expect("alerts").is_empty(),
        "{lax}"
    );
}

#[test]
fn rules_check_names_the_line_and_field() {
    let dir = tempfile::tempdir().expect("tmp");
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[defaults]\nheartbeat = \"30s\"\n\n[stages.review]\naccept = \"2 fortnights\"\n",
    )
    .expect("write");
    let out = std::process::Command::new(baton_bin())
        .args(["rules", "check"])
        .arg(&bad)
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("line 5")
            && err.contains("stages.review.accept")
            && err.contains("fortnights"),
        "{err}"
    );
    let good = dir.path().join("good.toml");
    std::fs::write(&good, "[defaults]\nheartbeat = \"45s\"\n").expect("write");
    let out = std::process::Command::new(baton_bin())
        .args(["rules", "check"])
        .arg(&good)
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("heartbeat 45s"));
}

/// Decision 9: while the broker cannot store events (here: the server is
/// frozen with SIGSTOP for longer than the lease), the agent's deadline does
/// not run; once it answers again and the agent's heartbeats arrive, no
/// HEARTBEAT_MISSED is paged. A task whose agent really went quiet is
/// paged all the same.
#[tokio::test]
async fn a_broker_outage_is_not_an_agents_fault() {
    let server = NatsServer::start().await.expect("server");
    let client = async_nats::connect(server.url()).await.expect("connect");
    let js = jetstream::new(client.clone());
    let dir = tempfile::tempdir().expect("tmp");
    let rules = dir.path().join("rules.toml");
    std::fs::write(
        &rules,
        "[defaults]\nheartbeat = \"3s\"\nstart = \"1h\"\nrenotify = \"1h\"\n",
    )
    .expect("rules");
    let rules = rules.to_string_lossy().to_string();
    let log = dir.path().join("d.log");
    let _detector = BatonProcess::spawn(
        &server.url(),
        &[
            "stall-detector",
            "--rules",
            rules.as_str(),
            "--grace",
            "50ms",
            "--instance",
            "d",
            "--lease-ttl",
            TEST_LEASE_TTL,
        ],
        &log,
    );
    wait_liveness(&js, "stall-detector.d").await;
    let mut pages = client
        .subscribe(subjects::ALERTS_ALL)
        .await
        .expect("subscribe");
    let mut ev = Events::new("w");
    for (task, agent) in [("steady", "w1"), ("quiet", "w2")] {
        publish(&js, &ev.created(task, "p")).await;
        publish(&js, &ev.claimed(task, agent)).await;
    }
    // w1 heartbeats every second (a third of its 3 s lease); a heartbeat
    // the broker does not take is dropped, the next tick sends a new one.
    // After the outage its next heartbeat comes up to a second later: only
    // the extended deadline covers that.
    let beats = {
        let js = js.clone();
        let mut ev = Events::new("beats");
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                let hb = ev.heartbeat("steady", "w1", 1);
                let _ = baton_jetstream::publish_durable(
                    &js,
                    &subjects::event(&hb.task, &hb.agent),
                    hb.encode_to_vec().into(),
                    &hb.event_id,
                    None,
                    baton_jetstream::Retry {
                        budget: Duration::from_millis(300),
                        attempt_timeout: Duration::from_millis(300),
                    },
                )
                .await;
            }
        })
    };
    let missed = |a: &baton_core::Alert, task: &str| {
        a.kind == AlertKind::HeartbeatMissed
            && a.state == AlertState::Firing
            && a.task.as_ref().is_some_and(|t| t.as_str() == task)
    };
    // The detector works: the quiet task is paged.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let msg = tokio::time::timeout_at(deadline, pages.next())
            .await
            .expect("the quiet task is paged")
            .expect("open");
        let a = baton_core::Alert::decode(&msg.payload).expect("alert");
        assert!(
            !missed(&a, "steady"),
            "steady was paged before any outage: {a:?}"
        );
        if missed(&a, "quiet") {
            break;
        }
    }
    // The broker freezes for as long as the lease: w1's deadline passes
    // while nothing can be stored.
    let pid = server.pid().expect("server pid").to_string();
    let signal = |sig: &str| {
        let ok = std::process::Command::new("kill")
            .args([sig, &pid])
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill {sig} {pid}");
    };
    signal("-STOP");
    tokio::time::sleep(Duration::from_secs(3)).await;
    signal("-CONT");
    // The outage is seen, and the steady task is not blamed for it.
    wait_until(|| async {
        std::fs::read_to_string(&log)
            .ok()?
            .contains("the broker answers again")
            .then_some(())
    })
    .await;
    let quiet_for = tokio::time::Instant::now() + Duration::from_secs(5);
    while let Ok(Some(msg)) = tokio::time::timeout_at(quiet_for, pages.next()).await {
        let a = baton_core::Alert::decode(&msg.payload).expect("alert");
        assert!(
            !missed(&a, "steady"),
            "the broker's outage was counted against w1: {}",
            a.summary
        );
    }
    beats.abort();
}
