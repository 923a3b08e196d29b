//! Regressions found by the fuzz targets in fuzz/ (scripts/fuzz), all by
//! fuzz/fuzz_targets/fold_sequence.rs. Ignored until fixed (each names the
//! bug); see the fuzzing report of issue 11.
//!
//! 1. The stall detector forgets a task once it ends, so a later event for
//!    it starts tracking a fresh task, which then raises stall alerts
//!    (`NOT_STARTED`, ...) for a task that is finished. The fold refuses
//!    such events (decision 10: a terminal task stays terminal in every
//!    reader).
//! 2. `Detector::handle_timeout` never returns once a paged alert's
//!    re-notification is due but muted (inhibited, or silenced): `evaluate`
//!    skips the page without moving `last_sent`, and `next_check` schedules
//!    the same past instant again, forever.

mod common;

use std::{sync::mpsc, thread, time::Duration};

use baton_core::{
    AlertKind, Event, EventBody, EventMeta, HandoffTarget, Policy, TaskCreated, Time,
    UnknownTaskPolicy,
    rules::Rules,
    stall::{Detector, Silence},
};
use common::{agent, at, task_id, workflow};

fn event(n: u64, who: &str, epoch: u64, body: EventBody) -> (Event, EventMeta) {
    let e = Event::new(
        format!("e{n}"),
        task_id("t1"),
        workflow("w1"),
        agent(who),
        body,
    )
    .with_epoch(epoch);
    (
        e,
        EventMeta {
            seq: n,
            stored_at: at(n),
        },
    )
}

fn completed_then(policy: Policy, late: EventBody) -> Detector {
    let mut det = Detector::new(Rules::default(), policy);
    let history = [
        event(1, "maker", 0, EventBody::Created(TaskCreated::default())),
        event(
            2,
            "a1",
            0,
            EventBody::Claimed {
                heartbeat_within: None,
            },
        ),
        event(
            3,
            "a1",
            1,
            EventBody::Completed {
                output_location: "out".into(),
                summary: String::new(),
            },
        ),
        event(4, "a2", 0, late),
    ];
    for (e, m) in &history {
        det.handle_timeout(m.stored_at.saturating_sub(Duration::from_nanos(1)));
        det.handle_event(e, *m);
    }
    det
}

#[test]
#[ignore = "known bug (fuzz report, issue 11): Detector forgets ended tasks; un-ignore with the fix"]
fn a_second_creation_does_not_revive_an_ended_task_in_the_detector() {
    let mut det = completed_then(
        Policy::default(),
        EventBody::Created(TaskCreated::default()),
    );
    assert!(
        det.task(&task_id("t1")).is_none(),
        "the detector tracks a completed task again: {:?}",
        det.task(&task_id("t1"))
    );
    let alerts = det.handle_timeout(at(24 * 3600));
    assert!(
        alerts.is_empty(),
        "stall alerts for a finished task: {alerts:?}"
    );
}

#[test]
#[ignore = "known bug (fuzz report, issue 11): Detector forgets ended tasks; un-ignore with the fix"]
fn a_late_event_does_not_revive_an_ended_task_under_auto_create() {
    let policy = Policy {
        unknown_task: UnknownTaskPolicy::AutoCreate,
        ..Policy::default()
    };
    let mut det = completed_then(
        policy,
        EventBody::Heartbeat {
            note: String::new(),
            progress: true,
        },
    );
    assert!(
        det.task(&task_id("t1")).is_none(),
        "the detector tracks a completed task again: {:?}",
        det.task(&task_id("t1"))
    );
    let alerts = det.handle_timeout(at(24 * 3600));
    assert!(
        alerts.is_empty(),
        "stall alerts for a finished task: {alerts:?}"
    );
}

/// Runs `handle_timeout(now)` on another thread; fails if it does not
/// return within a few seconds (the thread is left spinning then).
fn returns_in_time(mut det: Detector, now: Time) -> (Detector, usize) {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let paged = det.handle_timeout(now).len();
        let _ = tx.send((det, paged));
    });
    rx.recv_timeout(Duration::from_secs(10))
        .expect("Detector::handle_timeout did not return (a busy loop)")
}

fn step(det: &mut Detector, n: u64, secs: u64, who: &str, epoch: u64, body: EventBody) {
    let stored_at = at(secs);
    det.handle_timeout(stored_at.saturating_sub(Duration::from_nanos(1)));
    let e = Event::new(
        format!("e{n}"),
        task_id("t1"),
        workflow("w1"),
        agent(who),
        body,
    )
    .with_epoch(epoch);
    det.handle_event(&e, EventMeta { seq: n, stored_at });
}

#[test]
#[ignore = "known bug (fuzz report, issue 11): handle_timeout loops forever on an inhibited re-notification"]
fn an_inhibited_renotification_does_not_hang_the_detector() {
    // Built-in rules: start 10m, renotify 15m. The offer states a longer
    // acceptance window (20m) than the start window.
    let mut det = Detector::new(Rules::default(), Policy::default());
    step(
        &mut det,
        1,
        0,
        "maker",
        0,
        EventBody::Created(TaskCreated::default()),
    );
    step(
        &mut det,
        2,
        0,
        "a1",
        0,
        EventBody::Claimed {
            heartbeat_within: None,
        },
    );
    step(
        &mut det,
        3,
        10,
        "a1",
        1,
        EventBody::HandoffOffered {
            to: HandoffTarget::Agent(agent("a2")),
            output_location: "out".into(),
            accept_within: Some(Duration::from_secs(20 * 60)),
        },
    );
    // NOT_STARTED is paged at 10m, HANDOFF_NOT_ACCEPTED at 20m (from then
    // on it inhibits NOT_STARTED), NOT_STARTED's re-notification is due at
    // 25m and inhibited.
    let (det, paged) = returns_in_time(det, at(11 * 60));
    assert_eq!(paged, 1, "NOT_STARTED");
    let (det, paged) = returns_in_time(det, at(21 * 60));
    assert_eq!(paged, 1, "HANDOFF_NOT_ACCEPTED");
    let (_, paged) = returns_in_time(det, at(26 * 60));
    assert_eq!(paged, 0, "the inhibited NOT_STARTED is not paged again");
}

#[test]
#[ignore = "known bug (fuzz report, issue 11): handle_timeout loops forever on a silenced re-notification"]
fn silencing_a_paged_alert_does_not_hang_the_detector() {
    let mut det = Detector::new(Rules::default(), Policy::default());
    step(
        &mut det,
        1,
        0,
        "maker",
        0,
        EventBody::Created(TaskCreated::default()),
    );
    step(
        &mut det,
        2,
        0,
        "a1",
        0,
        EventBody::Claimed {
            heartbeat_within: None,
        },
    );
    // HEARTBEAT_MISSED is paged at 30s (built-in lease) ...
    let (mut det, paged) = returns_in_time(det, at(31));
    assert_eq!(paged, 1);
    // ... then an operator silences it, before its re-notification (15m).
    det.set_silences(
        vec![Silence {
            id: "s1".into(),
            task: Some(task_id("t1")),
            kind: Some(AlertKind::HeartbeatMissed),
            agent: None,
            until: at(3600),
            created_by: "ops".into(),
            reason: "known".into(),
            created_at: at(60),
        }],
        at(60),
    );
    let (_, paged) = returns_in_time(det, at(16 * 60 + 31));
    assert_eq!(paged, 0, "silenced: not paged again");
}
