//! The stall detector's engine on virtual time: every stall alert kind,
//! resolution, re-notification, inhibition, silences and restore.

mod common;

use std::time::Duration;

use baton_core::{
    Alert, AlertKind, AlertState, Event, EventBody, EventMeta, HandoffTarget, Policy, TaskCreated,
    Time,
    rules::Rules,
    stall::{Detector, Silence},
};
use common::{agent, at, stage, task_id, workflow};

const RULES: &str = r#"
[defaults]
heartbeat = "30s"
accept = "60s"
start = "120s"
blocked = "300s"
renotify = "100s"
"#;

/// Drives a detector with events for task t1 on virtual time.
struct Rig {
    det: Detector,
    seq: u64,
    published: Vec<Alert>,
}

impl Rig {
    fn new(rules: &str) -> Rig {
        Rig {
            det: Detector::new(Rules::from_toml(rules).expect("rules"), Policy::default()),
            seq: 0,
            published: Vec::new(),
        }
    }

    /// Delivers an event stored at `secs`, firing what was due before it.
    fn send(&mut self, secs: u64, who: &str, epoch: u64, body: EventBody) -> Vec<Alert> {
        self.seq += 1;
        let stored_at = at(secs);
        let mut out = self
            .det
            .handle_timeout(stored_at.saturating_sub(Duration::from_nanos(1)));
        let event = Event::new(
            format!("e{}", self.seq),
            task_id("t1"),
            workflow("w1"),
            agent(who),
            body,
        )
        .with_epoch(epoch);
        out.extend(self.det.handle_event(
            &event,
            EventMeta {
                seq: self.seq,
                stored_at,
            },
        ));
        self.published.extend(out.clone());
        out
    }

    fn tick(&mut self, secs: u64) -> Vec<Alert> {
        let out = self.det.handle_timeout(at(secs));
        self.published.extend(out.clone());
        out
    }

    fn create(&mut self, secs: u64, c: TaskCreated) {
        self.send(secs, "maker", 0, EventBody::Created(c));
    }

    fn claim(&mut self, secs: u64, who: &str) {
        self.send(
            secs,
            who,
            0,
            EventBody::Claimed {
                heartbeat_within: None,
            },
        );
    }
}

fn kinds(alerts: &[Alert]) -> Vec<(AlertKind, AlertState)> {
    alerts.iter().map(|a| (a.kind, a.state)).collect()
}

fn hb(progress: bool) -> EventBody {
    EventBody::Heartbeat {
        note: String::new(),
        progress,
    }
}

/// Decision 9: a broker outage does not count against a deadline.
#[test]
fn a_broker_outage_extends_the_deadlines_it_overlaps() {
    let mut rig = Rig::new(RULES);
    rig.create(0, TaskCreated::default());
    rig.claim(10, "a1");
    assert_eq!(rig.det.poll_timeout(), Some(at(40)));
    // The cluster elects a leader from 30 s to 36 s: nothing could be stored.
    rig.det.record_outage(at(30), at(36));
    assert_eq!(
        rig.det.poll_timeout(),
        Some(at(46)),
        "the lease counts 30 s of up-time"
    );
    assert!(rig.tick(45).is_empty(), "not blamed for the election");
    let fired = rig.tick(47);
    assert_eq!(
        kinds(&fired),
        vec![(AlertKind::HeartbeatMissed, AlertState::Firing)]
    );
    assert_eq!(
        fired[0].due_at,
        Some(at(46)),
        "the report names the extended deadline"
    );
    // The same alert as without the outage: one page, whoever derives it.
    assert_eq!(fired[0].id, "heartbeat_missed.t1.e1.s2");
    // An outage before the expectation was armed changes nothing.
    let mut rig = Rig::new(RULES);
    rig.det.record_outage(at(1), at(5));
    rig.create(0, TaskCreated::default());
    rig.claim(10, "a1");
    assert_eq!(rig.det.poll_timeout(), Some(at(40)));
}

#[test]
fn outage_windows_merge_and_count_only_their_overlap() {
    use baton_core::stall::Outages;
    let mut o = Outages::default();
    let secs = Duration::from_secs;
    assert_eq!(o.due(at(0), secs(10)), at(10));
    o.record(at(20), at(25));
    o.record(at(5), at(8));
    assert_eq!(
        o.due(at(0), secs(10)),
        at(13),
        "3 s of outage inside the window"
    );
    assert_eq!(o.due(at(0), secs(30)), at(38), "both outages");
    assert_eq!(
        o.due(at(6), secs(1)),
        at(9),
        "armed inside an outage: counts from its end"
    );
    assert_eq!(o.due(at(30), secs(10)), at(40), "after every outage");
    // Touching windows merge; an empty one is ignored.
    o.record(at(8), at(10));
    o.record(at(50), at(50));
    assert_eq!(o.due(at(0), secs(10)), at(15));
}

#[test]
fn heartbeat_missed_fires_at_the_lease_and_resolves_on_the_next_heartbeat() {
    let mut rig = Rig::new(RULES);
    rig.create(0, TaskCreated::default());
    rig.claim(10, "a1");
    assert_eq!(rig.det.poll_timeout(), Some(at(40)));
    assert!(rig.tick(39).is_empty(), "not before the lease ends");
    let fired = rig.tick(41);
    assert_eq!(
        kinds(&fired),
        vec![(AlertKind::HeartbeatMissed, AlertState::Firing)]
    );
    let alert = &fired[0];
    assert_eq!(alert.id, "heartbeat_missed.t1.e1.s2");
    assert_eq!(alert.agents, vec![agent("a1")]);
    assert_eq!(alert.due_at, Some(at(40)));
    assert_eq!(alert.late_by, Some(Duration::from_secs(1)));
    assert_eq!(alert.last_event.as_ref().map(|e| e.seq), Some(2));
    assert!(
        alert
            .summary
            .contains("owner a1 has sent no heartbeat for 31s"),
        "{}",
        alert.summary
    );

    let resolved = rig.send(50, "a1", 1, hb(false));
    assert_eq!(
        kinds(&resolved),
        vec![(AlertKind::HeartbeatMissed, AlertState::Resolved)]
    );
    assert_eq!(
        resolved[0].resolves.as_deref(),
        Some("heartbeat_missed.t1.e1.s2")
    );
    assert_eq!(resolved[0].msg_id(), "heartbeat_missed.t1.e1.s2.resolved");
    assert_eq!(resolved[0].observed_at, at(50));
    // Re-armed from the heartbeat.
    assert_eq!(rig.det.poll_timeout(), Some(at(80)));
}

#[test]
fn a_late_event_in_a_backlog_still_fires_then_resolves() {
    let mut rig = Rig::new(RULES);
    rig.create(0, TaskCreated::default());
    rig.claim(10, "a1");
    // The next heartbeat was stored 20 s after the lease ended.
    let out = rig.send(60, "a1", 1, hb(false));
    assert_eq!(
        kinds(&out),
        vec![
            (AlertKind::HeartbeatMissed, AlertState::Firing),
            (AlertKind::HeartbeatMissed, AlertState::Resolved)
        ]
    );
}

#[test]
fn firing_alerts_are_renotified_at_the_interval_until_resolved() {
    let mut rig = Rig::new(RULES);
    rig.create(0, TaskCreated::default());
    rig.claim(0, "a1");
    assert_eq!(rig.tick(30).len(), 1);
    assert!(rig.tick(129).is_empty());
    let again = rig.tick(130);
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].notification, 1);
    assert_eq!(again[0].msg_id(), "heartbeat_missed.t1.e1.s2.n1");
    assert_eq!(again[0].id, "heartbeat_missed.t1.e1.s2");
    assert_eq!(rig.tick(230)[0].notification, 2);
    rig.send(240, "a1", 1, hb(false));
    assert!(
        rig.tick(400)
            .iter()
            .all(|a| a.id != "heartbeat_missed.t1.e1.s2")
    );
}

#[test]
fn handoff_not_accepted_names_sender_and_recipient_and_resolves_on_accept() {
    let mut rig = Rig::new(RULES);
    rig.create(
        0,
        TaskCreated {
            stage: Some(stage("draft")),
            ..Default::default()
        },
    );
    rig.claim(0, "editor");
    rig.send(
        5,
        "editor",
        1,
        EventBody::HandoffOffered {
            to: HandoffTarget::Agent(agent("reviewer")),
            output_location: "s3://d/1.md".into(),
            accept_within: None,
        },
    );
    // No heartbeat is expected while the offer is pending.
    let fired = rig.tick(65);
    assert_eq!(
        kinds(&fired),
        vec![(AlertKind::HandoffNotAccepted, AlertState::Firing)]
    );
    let a = &fired[0];
    assert_eq!(a.agents, vec![agent("reviewer"), agent("editor")]);
    assert!(
        a.summary
            .contains("editor offered it to agent reviewer with output s3://d/1.md"),
        "{}",
        a.summary
    );
    assert!(
        a.summary
            .contains("stalled between editor and agent reviewer"),
        "{}",
        a.summary
    );
    assert_eq!(a.stage, Some(stage("draft")));

    let resolved = rig.send(
        70,
        "reviewer",
        0,
        EventBody::HandoffAccepted {
            heartbeat_within: None,
        },
    );
    assert_eq!(
        kinds(&resolved),
        vec![(AlertKind::HandoffNotAccepted, AlertState::Resolved)]
    );
    assert!(
        resolved[0]
            .summary
            .contains("handoff_accepted from reviewer"),
        "{}",
        resolved[0].summary
    );
}

#[test]
fn the_offer_states_its_own_acceptance_window() {
    let mut rig = Rig::new(RULES);
    rig.create(0, TaskCreated::default());
    rig.claim(0, "a1");
    rig.send(
        0,
        "a1",
        1,
        EventBody::HandoffOffered {
            to: HandoffTarget::Stage(stage("review")),
            output_location: String::new(),
            accept_within: Some(Duration::from_secs(5)),
        },
    );
    assert_eq!(rig.det.poll_timeout(), Some(at(5)));
    assert_eq!(
        kinds(&rig.tick(5)),
        vec![(AlertKind::HandoffNotAccepted, AlertState::Firing)]
    );
}

#[test]
fn downstream_not_started_is_inhibited_while_the_handoff_alert_fires() {
    let mut rig = Rig::new(RULES);
    rig.create(0, TaskCreated::default());
    rig.claim(0, "a1");
    rig.send(
        0,
        "a1",
        1,
        EventBody::HandoffOffered {
            to: HandoffTarget::Agent(agent("b2")),
            output_location: String::new(),
            accept_within: None,
        },
    );
    assert_eq!(
        kinds(&rig.tick(60)),
        vec![(AlertKind::HandoffNotAccepted, AlertState::Firing)]
    );
    // Start was due at 120 s: same handoff, so no separate page.
    assert!(rig.tick(125).is_empty());
    assert_eq!(rig.det.stats().inhibited, 1);
    let resolved = rig.send(
        130,
        "b2",
        0,
        EventBody::HandoffAccepted {
            heartbeat_within: None,
        },
    );
    assert_eq!(
        kinds(&resolved),
        vec![(AlertKind::HandoffNotAccepted, AlertState::Resolved)]
    );
}

#[test]
fn not_started_fires_for_an_unclaimed_task_and_resolves_on_claim() {
    let mut rig = Rig::new(RULES);
    rig.create(
        0,
        TaskCreated {
            assignee: Some(agent("a1")),
            ..Default::default()
        },
    );
    let fired = rig.tick(120);
    assert_eq!(
        kinds(&fired),
        vec![(AlertKind::NotStarted, AlertState::Firing)]
    );
    assert_eq!(fired[0].agents, vec![agent("a1")]);
    assert!(
        fired[0].summary.contains("assignee a1 to claim it"),
        "{}",
        fired[0].summary
    );
    rig.claim(130, "a1");
    assert_eq!(
        kinds(&rig.published[1..]),
        vec![(AlertKind::NotStarted, AlertState::Resolved)]
    );
}

#[test]
fn a_release_arms_not_started_again() {
    let mut rig = Rig::new(RULES);
    rig.create(
        0,
        TaskCreated {
            windows: baton_core::TaskWindows {
                start_within: Some(Duration::from_secs(10)),
                ..Default::default()
            },
            ..Default::default()
        },
    );
    rig.claim(5, "a1");
    rig.send(
        6,
        "a1",
        1,
        EventBody::Released {
            reason: "dropped".into(),
        },
    );
    assert_eq!(rig.det.poll_timeout(), Some(at(16)));
    assert_eq!(rig.tick(16)[0].id, "not_started.t1.e2.s3");
}

#[test]
fn deadline_exceeded_fires_and_resolves_when_the_task_ends() {
    let mut rig = Rig::new(RULES);
    rig.create(
        0,
        TaskCreated {
            windows: baton_core::TaskWindows {
                deadline_within: Some(Duration::from_secs(50)),
                ..Default::default()
            },
            ..Default::default()
        },
    );
    rig.claim(0, "a1");
    for t in [20, 40] {
        rig.send(t, "a1", 1, hb(true));
    }
    let fired = rig.tick(51);
    assert_eq!(
        kinds(&fired),
        vec![(AlertKind::DeadlineExceeded, AlertState::Firing)]
    );
    assert_eq!(fired[0].id, "deadline_exceeded.t1.e0.s1");
    let out = rig.send(
        55,
        "a1",
        1,
        EventBody::Completed {
            output_location: String::new(),
            summary: String::new(),
        },
    );
    assert_eq!(
        kinds(&out),
        vec![(AlertKind::DeadlineExceeded, AlertState::Resolved)]
    );
    assert!(
        out[0].summary.contains("the task is completed"),
        "{}",
        out[0].summary
    );
    assert!(rig.det.is_empty(), "ended tasks are no longer tracked");
    assert_eq!(rig.det.poll_timeout(), None);
}

#[test]
fn no_progress_is_a_separate_limit_from_liveness() {
    let mut rig = Rig::new(&format!("{RULES}progress = \"60s\"\n"));
    rig.create(0, TaskCreated::default());
    rig.claim(0, "a1");
    for t in (20..=80).step_by(20) {
        rig.send(t, "a1", 1, hb(false));
    }
    assert_eq!(
        kinds(&rig.published),
        vec![(AlertKind::NoProgress, AlertState::Firing)]
    );
    assert!(
        rig.published[0]
            .summary
            .contains("alive but reported no progress")
    );
    let out = rig.send(90, "a1", 1, hb(true));
    assert_eq!(
        kinds(&out),
        vec![(AlertKind::NoProgress, AlertState::Resolved)]
    );
}

#[test]
fn blocked_too_long_replaces_the_heartbeat_expectation() {
    let mut rig = Rig::new(RULES);
    rig.create(0, TaskCreated::default());
    rig.claim(0, "a1");
    rig.send(
        10,
        "a1",
        1,
        EventBody::Blocked {
            reason: "need the brief".into(),
        },
    );
    assert!(
        rig.tick(300).is_empty(),
        "no heartbeat is expected while blocked"
    );
    let fired = rig.tick(310);
    assert_eq!(
        kinds(&fired),
        vec![(AlertKind::BlockedTooLong, AlertState::Firing)]
    );
    assert!(fired[0].summary.contains("need the brief"));
    let out = rig.send(320, "a1", 1, hb(false));
    assert_eq!(
        kinds(&out),
        vec![(AlertKind::BlockedTooLong, AlertState::Resolved)]
    );
}

#[test]
fn silences_mute_until_they_end() {
    let mut rig = Rig::new(RULES);
    rig.create(0, TaskCreated::default());
    rig.claim(0, "a1");
    let silence = Silence {
        id: "s1".into(),
        task: None,
        kind: Some(AlertKind::HeartbeatMissed),
        agent: Some(agent("a1")),
        until: at(200),
        created_by: "ops".into(),
        reason: "maintenance".into(),
        created_at: at(0),
    };
    rig.det.set_silences(vec![silence.clone()], at(0));
    assert!(rig.tick(150).is_empty());
    assert_eq!(
        rig.det.firing_count(),
        1,
        "tracked as firing, just not paged"
    );
    let paged = rig.tick(200);
    assert_eq!(
        kinds(&paged),
        vec![(AlertKind::HeartbeatMissed, AlertState::Firing)]
    );
    assert_eq!(paged[0].notification, 0, "the first page after the silence");

    // A silence for another agent does not mute.
    let mut rig = Rig::new(RULES);
    rig.create(0, TaskCreated::default());
    rig.claim(0, "a1");
    rig.det.set_silences(
        vec![Silence {
            agent: Some(agent("zz")),
            ..silence.clone()
        }],
        at(0),
    );
    assert_eq!(rig.tick(30).len(), 1);

    // Lifting a silence pages at once.
    let mut rig = Rig::new(RULES);
    rig.create(0, TaskCreated::default());
    rig.claim(0, "a1");
    rig.det.set_silences(vec![silence], at(0));
    assert!(rig.tick(50).is_empty());
    rig.det.set_silences(Vec::new(), at(60));
    assert_eq!(rig.tick(60).len(), 1);
}

#[test]
fn a_resolution_of_a_muted_alert_is_not_paged() {
    let mut rig = Rig::new(RULES);
    rig.create(0, TaskCreated::default());
    rig.claim(0, "a1");
    rig.det.set_silences(
        vec![Silence {
            id: "s".into(),
            task: Some(task_id("t1")),
            kind: None,
            agent: None,
            until: at(1000),
            created_by: String::new(),
            reason: String::new(),
            created_at: at(0),
        }],
        at(0),
    );
    rig.tick(40);
    assert!(rig.send(50, "a1", 1, hb(false)).is_empty());
}

#[test]
fn restored_state_neither_repages_nor_forgets() {
    // Run once without interruption.
    let mut whole = Rig::new(RULES);
    whole.create(0, TaskCreated::default());
    whole.claim(0, "a1");
    whole.tick(30);
    whole.tick(130);

    // Run again, "crash" after the first page, restore from snapshot + alerts.
    let mut first = Rig::new(RULES);
    first.create(0, TaskCreated::default());
    first.claim(0, "a1");
    let paged = first.tick(30);
    let snapshot: Vec<_> = first.det.tasks().cloned().collect();

    let mut second = Rig::new(RULES);
    second.seq = first.seq;
    for task in snapshot {
        second.det.restore(task);
    }
    assert!(second.det.restore_firing(&paged[0]));
    assert!(
        second.tick(31).is_empty(),
        "no duplicate page after restart"
    );
    let again = second.tick(130);
    assert_eq!(
        again,
        whole.published[1..].to_vec(),
        "re-notification continues where it was"
    );
}

#[test]
fn alerts_that_became_due_while_down_fire_on_recovery() {
    let mut first = Rig::new(RULES);
    first.create(0, TaskCreated::default());
    first.claim(0, "a1");
    let snapshot: Vec<_> = first.det.tasks().cloned().collect();
    let mut second = Rig::new(RULES);
    for task in snapshot {
        second.det.restore(task);
    }
    // Down from 10 s to 500 s.
    let out = second.tick(500);
    assert_eq!(
        kinds(&out),
        vec![(AlertKind::HeartbeatMissed, AlertState::Firing)]
    );
    assert_eq!(out[0].late_by, Some(Duration::from_secs(470)));
}

#[test]
fn many_tasks_fire_in_due_order() {
    let mut det = Detector::new(Rules::from_toml(RULES).expect("rules"), Policy::default());
    let mut seq = 0;
    for i in (0..50u64).rev() {
        let id = task_id(&format!("t{i}"));
        for body in [
            EventBody::Created(TaskCreated::default()),
            EventBody::Claimed {
                heartbeat_within: Some(Duration::from_secs(10 + i)),
            },
        ] {
            seq += 1;
            let e = Event::new(
                format!("e{seq}"),
                id.clone(),
                workflow("w"),
                agent("a"),
                body,
            );
            det.handle_event(
                &e,
                EventMeta {
                    seq,
                    stored_at: Time::from_unix_nanos(common::T0.unix_nanos()),
                },
            );
        }
    }
    let mut fired = Vec::new();
    let mut now = common::T0;
    while let Some(next) = det.poll_timeout() {
        if next > at(100) {
            break;
        }
        now = now.max(next);
        fired.extend(
            det.handle_timeout(now)
                .into_iter()
                .map(|a| (a.due_at, a.task)),
        );
    }
    assert_eq!(fired.len(), 50);
    assert!(
        fired.windows(2).all(|w| w[0].0 <= w[1].0),
        "fired in due order"
    );
    assert!(fired.iter().all(|(due, _)| *due <= Some(now)));
}

mod restart_property {
    use std::collections::HashMap;

    use proptest::prelude::*;

    use super::*;

    #[derive(Debug, Clone)]
    enum Step {
        Event {
            who: &'static str,
            epoch: u64,
            body: EventBody,
            after: u64,
        },
        Tick {
            after: u64,
        },
    }

    fn arb_step() -> impl Strategy<Value = Step> {
        let who = prop::sample::select(vec!["a1", "a2"]);
        let body = prop_oneof![
            3 => Just(EventBody::Claimed { heartbeat_within: None }),
            6 => any::<bool>().prop_map(|progress| EventBody::Heartbeat { note: String::new(), progress }),
            1 => Just(EventBody::Blocked { reason: "input".into() }),
            2 => prop::sample::select(vec!["a1", "a2"]).prop_map(|to| EventBody::HandoffOffered {
                to: HandoffTarget::Agent(agent(to)),
                output_location: String::new(),
                accept_within: None,
            }),
            2 => Just(EventBody::HandoffAccepted { heartbeat_within: None }),
            1 => Just(EventBody::Released { reason: String::new() }),
            1 => Just(EventBody::Completed { output_location: String::new(), summary: String::new() }),
        ];
        prop_oneof![
            (who, 0u64..4, body, 0u64..200).prop_map(|(who, epoch, body, after)| Step::Event {
                who,
                epoch,
                body,
                after
            }),
            (0u64..300).prop_map(|after| Step::Tick { after }),
        ]
    }

    fn run(rig: &mut Rig, steps: &[Step], clock: &mut u64) -> Vec<Alert> {
        let start = rig.published.len();
        for step in steps {
            match step {
                Step::Event {
                    who,
                    epoch,
                    body,
                    after,
                } => {
                    *clock += after;
                    rig.send(*clock, who, *epoch, body.clone());
                }
                Step::Tick { after } => {
                    *clock += after;
                    rig.tick(*clock);
                }
            }
        }
        rig.published[start..].to_vec()
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        /// A detector restored from its task snapshot and the latest alert
        /// per (kind, task) publishes exactly what an uninterrupted one does.
        #[test]
        fn restart_publishes_what_an_uninterrupted_run_publishes(
            steps in prop::collection::vec(arb_step(), 1..40),
            cut in any::<prop::sample::Index>(),
        ) {
            let rules = format!("{RULES}progress = \"90s\"\ndeadline = \"900s\"\n");
            let cut = cut.index(steps.len() + 1);
            let mut whole = Rig::new(&rules);
            whole.create(0, TaskCreated::default());
            let mut clock = 0;
            run(&mut whole, &steps[..cut], &mut clock);
            let after_cut_clock = clock;
            let expected = run(&mut whole, &steps[cut..], &mut clock);

            let mut first = Rig::new(&rules);
            first.create(0, TaskCreated::default());
            let mut clock = 0;
            run(&mut first, &steps[..cut], &mut clock);
            let mut latest: HashMap<(AlertKind, Option<baton_core::TaskId>), Alert> = HashMap::new();
            for a in &first.published {
                latest.insert((a.kind, a.task.clone()), a.clone());
            }
            let mut second = Rig::new(&rules);
            second.seq = first.seq;
            for task in first.det.tasks().cloned() {
                second.det.restore(task);
            }
            for a in latest.values().filter(|a| a.state == AlertState::Firing) {
                second.det.restore_firing(a);
            }
            let mut clock = after_cut_clock;
            let got = run(&mut second, &steps[cut..], &mut clock);
            prop_assert_eq!(got, expected);
        }
    }
}

#[test]
fn a_late_create_for_a_completed_task_never_pages() {
    let mut rig = Rig::new(RULES);
    rig.create(0, TaskCreated::default());
    rig.claim(10, "a1");
    rig.send(
        20,
        "a1",
        1,
        EventBody::Completed {
            output_location: String::new(),
            summary: String::new(),
        },
    );
    assert!(rig.det.has_ended(&task_id("t1")));
    // A buggy client creates the task again; the orchestrator refuses it.
    rig.create(30, TaskCreated::default());
    assert!(rig.det.task(&task_id("t1")).is_none(), "not tracked again");
    assert_eq!(rig.det.poll_timeout(), None, "nothing armed");
    assert!(
        rig.tick(10_000).is_empty(),
        "no NOT_STARTED for a completed task"
    );

    // The same holds after a restart from the snapshot's ended marker.
    let mut restarted = Rig::new(RULES);
    restarted.seq = rig.seq;
    restarted.det.restore_ended(task_id("t1"));
    restarted.create(40, TaskCreated::default());
    assert!(restarted.tick(10_000).is_empty());
}

#[test]
fn an_accept_carries_the_new_owners_lease() {
    let mut rig = Rig::new(RULES);
    rig.create(0, TaskCreated::default());
    rig.claim(0, "a1");
    rig.send(
        5,
        "a1",
        1,
        EventBody::HandoffOffered {
            to: HandoffTarget::Agent(agent("b2")),
            output_location: String::new(),
            accept_within: None,
        },
    );
    // b2 commits to a 90 s lease, longer than the rules' 30 s default.
    rig.send(
        10,
        "b2",
        0,
        EventBody::HandoffAccepted {
            heartbeat_within: Some(Duration::from_secs(90)),
        },
    );
    assert_eq!(
        rig.det.task(&task_id("t1")).and_then(|t| t.lease),
        Some(Duration::from_secs(90))
    );
    assert!(
        rig.tick(99).is_empty(),
        "no false HEARTBEAT_MISSED inside the lease"
    );
    assert_eq!(
        kinds(&rig.tick(101)),
        vec![(AlertKind::HeartbeatMissed, AlertState::Firing)]
    );
}

mod agreement_property {
    //! The orchestrator's fold and the detector's engine must agree about
    //! every task, whatever arrives: forged owners, stale epochs, late and
    //! duplicate deliveries, and more events after a task ended.

    use std::collections::HashMap;

    use baton_core::{Task, TaskId, UnknownTaskPolicy, apply};
    use proptest::prelude::*;

    use super::*;

    fn arb_body() -> impl Strategy<Value = EventBody> {
        let window = prop_oneof![
            Just(None),
            (1u64..200).prop_map(|s| Some(Duration::from_secs(s)))
        ];
        prop_oneof![
            2 => Just(EventBody::Created(TaskCreated::default())),
            3 => window.clone().prop_map(|heartbeat_within| EventBody::Claimed { heartbeat_within }),
            4 => any::<bool>().prop_map(|progress| EventBody::Heartbeat { note: String::new(), progress }),
            1 => Just(EventBody::Blocked { reason: "input".into() }),
            2 => prop_oneof![
                prop::sample::select(vec!["a1", "a2", "a3"]).prop_map(|a| HandoffTarget::Agent(agent(a))),
                Just(HandoffTarget::Stage(stage("review"))),
            ].prop_map(|to| EventBody::HandoffOffered { to, output_location: String::new(), accept_within: None }),
            2 => window.prop_map(|heartbeat_within| EventBody::HandoffAccepted { heartbeat_within }),
            1 => Just(EventBody::HandoffRejected { reason: String::new() }),
            1 => Just(EventBody::Completed { output_location: String::new(), summary: String::new() }),
            1 => any::<bool>().prop_map(|retryable| EventBody::Failed { reason: String::new(), retryable }),
            1 => Just(EventBody::Released { reason: String::new() }),
            1 => Just(EventBody::Revoked { reason: String::new() }),
            1 => Just(EventBody::Cancelled { reason: String::new() }),
        ]
    }

    #[derive(Debug, Clone)]
    struct Step {
        task: &'static str,
        who: &'static str,
        epoch: u64,
        body: EventBody,
        after: u64,
        /// Deliver this event twice (a redelivery after a lost ack).
        redeliver: bool,
    }

    fn arb_step() -> impl Strategy<Value = Step> {
        (
            prop::sample::select(vec!["t1", "t2", "t3"]),
            prop::sample::select(vec!["a1", "a2", "a3", "ops"]),
            0u64..5,
            arb_body(),
            0u64..120,
            prop::bool::weighted(0.1),
        )
            .prop_map(|(task, who, epoch, body, after, redeliver)| Step {
                task,
                who,
                epoch,
                body,
                after,
                redeliver,
            })
    }

    fn arb_policy() -> impl Strategy<Value = Policy> {
        (any::<bool>(), any::<bool>()).prop_map(|(ops, create)| Policy {
            operators: if ops { vec![agent("ops")] } else { Vec::new() },
            unknown_task: if create {
                UnknownTaskPolicy::AutoCreate
            } else {
                UnknownTaskPolicy::Alert
            },
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        #[test]
        fn detector_and_orchestrator_agree_on_every_task(
            steps in prop::collection::vec(arb_step(), 1..60),
            policy in arb_policy(),
        ) {
            let rules = Rules::from_toml(RULES).expect("rules");
            let mut det = Detector::new(rules, policy.clone());
            let mut orchestrator: HashMap<TaskId, Option<Task>> = HashMap::new();
            let mut secs = 0;
            for (i, step) in steps.iter().enumerate() {
                secs += step.after;
                let event = Event::new(
                    format!("e{i}"),
                    task_id(step.task),
                    workflow("w1"),
                    agent(step.who),
                    step.body.clone(),
                )
                .with_epoch(step.epoch);
                let meta = EventMeta { seq: i as u64 + 1, stored_at: at(secs) };
                let deliveries = if step.redeliver { 2 } else { 1 };
                for _ in 0..deliveries {
                    let slot = orchestrator.entry(event.task.clone()).or_default();
                    apply(slot, &event, meta, &policy);
                    det.handle_timeout(meta.stored_at.saturating_sub(Duration::from_nanos(1)));
                    det.handle_event(&event, meta);
                }
                for (id, slot) in &orchestrator {
                    match slot {
                        None => prop_assert!(det.task(id).is_none() && !det.has_ended(id)),
                        Some(task) if task.status.is_terminal() => {
                            prop_assert!(det.task(id).is_none(), "{id} ended but is tracked");
                            prop_assert!(det.has_ended(id), "{id} ended but is not remembered");
                        }
                        Some(task) => {
                            let tracked = det.task(id);
                            prop_assert!(tracked.is_some(), "{id} is live but not tracked");
                            let tracked = tracked.expect("tracked");
                            prop_assert_eq!(tracked.status, task.status);
                            prop_assert_eq!(&tracked.owner, &task.owner);
                            prop_assert_eq!(tracked.epoch, task.epoch);
                            prop_assert_eq!(tracked.lease, task.lease);
                            prop_assert_eq!(&tracked.pending_handoff, &task.pending_handoff);
                            prop_assert_eq!(tracked, task);
                        }
                    }
                }
            }
        }
    }
}
