//! Every transition and every violation of the task state machine.

mod common;

use std::time::Duration;

use baton_core::{
    AlertKind, Disposition, EventBody, EventKind, HandoffTarget, Outcome, TaskCreated, TaskStatus,
    UnknownTaskPolicy, ViolationReason,
};
use common::{Sim, agent, at, stage, task_id, workflow};

fn claim() -> EventBody {
    EventBody::Claimed {
        heartbeat_within: None,
    }
}
fn heartbeat(progress: bool) -> EventBody {
    EventBody::Heartbeat {
        note: String::new(),
        progress,
    }
}
fn offer_to(agent_id: &str) -> EventBody {
    EventBody::HandoffOffered {
        to: HandoffTarget::Agent(agent(agent_id)),
        output_location: "s3://drafts/t1.md".into(),
        accept_within: Some(Duration::from_secs(60)),
    }
}
fn offer_stage(name: &str) -> EventBody {
    EventBody::HandoffOffered {
        to: HandoffTarget::Stage(stage(name)),
        output_location: "s3://drafts/t1.md".into(),
        accept_within: None,
    }
}
fn reason(s: &str) -> String {
    s.to_string()
}

/// Asserts the outcome is a refusal for `expected` and returns it.
fn refused(outcome: &Outcome, expected: ViolationReason) -> baton_core::Violation {
    match &outcome.disposition {
        Disposition::Refused(v) => {
            assert_eq!(v.reason, expected, "{v}");
            let alerts: Vec<_> = outcome.alerts().collect();
            assert_eq!(alerts.len(), 1, "one alert per violation");
            assert_eq!(alerts[0].kind, AlertKind::OwnershipViolation);
            assert!(outcome.must_persist(), "violation count must be stored");
            v.clone()
        }
        other => panic!("expected refusal {expected:?}, got {other:?}"),
    }
}

fn applied(outcome: &Outcome) {
    assert_eq!(outcome.disposition, Disposition::Applied, "{outcome:?}");
    assert!(outcome.must_persist());
    assert_eq!(outcome.alerts().count(), 0);
}

/// Snapshot of the ownership-relevant fields, to prove refusals change none.
fn ownership(
    sim: &Sim,
) -> (
    Option<String>,
    u64,
    TaskStatus,
    bool,
    Option<baton_core::StageName>,
) {
    let t = sim.task();
    (
        t.owner.as_ref().map(ToString::to_string),
        t.epoch,
        t.status,
        t.pending_handoff.is_some(),
        t.stage.clone(),
    )
}

#[test]
fn create_makes_an_unowned_submitted_task() {
    let sim = Sim::created();
    let t = sim.task();
    assert_eq!(t.status, TaskStatus::Submitted);
    assert_eq!(t.owner, None);
    assert_eq!(t.epoch, 0);
    assert_eq!(t.stage, Some(stage("draft")));
    assert_eq!(t.title(), "Draft the post");
    assert_eq!(t.waiting_since.map(|m| m.seq), Some(1));
}

#[test]
fn creating_twice_is_a_violation() {
    let mut sim = Sim::created();
    let v = refused(
        &sim.send("other", 0, EventBody::Created(TaskCreated::default())),
        ViolationReason::AlreadyExists,
    );
    assert_eq!(v.actor, agent("other"));
    assert_eq!(sim.task().title(), "Draft the post");
    assert_eq!(sim.task().violations, 1);
}

#[test]
fn claim_takes_an_unowned_task_at_the_next_epoch() {
    let mut sim = Sim::created();
    applied(&sim.send(
        "a1",
        0,
        EventBody::Claimed {
            heartbeat_within: Some(Duration::from_secs(5)),
        },
    ));
    let t = sim.task();
    assert_eq!(sim.owner(), Some("a1"));
    assert_eq!(t.epoch, 1);
    assert_eq!(t.status, TaskStatus::Working);
    assert_eq!(t.lease, Some(Duration::from_secs(5)));
    assert_eq!(t.owned_since.map(|m| m.seq), Some(2));
    assert_eq!(t.waiting_since, None);
}

#[test]
fn claim_of_an_owned_task_names_owner_and_claimer() {
    let mut sim = Sim::owned_by("a1");
    let before = ownership(&sim);
    let outcome = sim.send("b2", 0, claim());
    let v = refused(&outcome, ViolationReason::AlreadyOwned);
    assert_eq!(v.actor, agent("b2"));
    assert_eq!(v.counterpart, Some(agent("a1")));
    let alert = outcome.alerts().next().expect("alert");
    assert_eq!(alert.agents, vec![agent("b2"), agent("a1")]);
    assert!(
        alert.summary.contains("b2") && alert.summary.contains("a1"),
        "{}",
        alert.summary
    );
    assert_eq!(ownership(&sim), before);
    // Even the owner claiming again is refused: ownership never silently resets.
    refused(&sim.send("a1", 1, claim()), ViolationReason::AlreadyOwned);
    assert_eq!(sim.epoch(), 1);
}

#[test]
fn only_the_assignee_may_claim() {
    let mut sim = Sim::new();
    sim.send(
        "maker",
        0,
        EventBody::Created(TaskCreated {
            assignee: Some(agent("a1")),
            ..Default::default()
        }),
    );
    let v = refused(&sim.send("b2", 0, claim()), ViolationReason::NotAssignee);
    assert_eq!(v.counterpart, Some(agent("a1")));
    assert_eq!(sim.owner(), None);
    applied(&sim.send("a1", 0, claim()));
    assert_eq!(sim.owner(), Some("a1"));
}

#[test]
fn heartbeat_from_the_owner_moves_liveness_and_progress_separately() {
    let mut sim = Sim::owned_by("a1");
    applied(&sim.send("a1", 1, heartbeat(false)));
    let t = sim.task();
    assert_eq!(t.last_heartbeat_at, Some(sim.now));
    assert_eq!(t.alive_since.map(|m| m.seq), Some(3));
    assert_eq!(t.last_progress_at, None);
    assert_eq!(
        t.progress_since.map(|m| m.seq),
        Some(2),
        "progress clock from the claim"
    );
    applied(&sim.send("a1", 1, heartbeat(true)));
    assert_eq!(sim.task().last_progress_at, Some(sim.now));
    assert_eq!(sim.task().progress_since.map(|m| m.seq), Some(4));
}

#[test]
fn heartbeat_from_a_non_owner_is_refused() {
    let mut sim = Sim::owned_by("a1");
    let before = ownership(&sim);
    let v = refused(
        &sim.send("b2", 1, heartbeat(true)),
        ViolationReason::NotOwner,
    );
    assert_eq!((v.actor, v.counterpart), (agent("b2"), Some(agent("a1"))));
    assert_eq!(ownership(&sim), before);
    assert_eq!(sim.task().last_heartbeat_at, None);
}

#[test]
fn events_on_an_unowned_task_name_nobody_as_owner() {
    let mut sim = Sim::created();
    let v = refused(
        &sim.send("a1", 0, heartbeat(false)),
        ViolationReason::NotOwner,
    );
    assert_eq!(v.counterpart, None);
    assert!(v.to_string().contains("owner: nobody"), "{v}");
}

#[test]
fn a_stale_epoch_is_refused_even_from_the_same_agent() {
    let mut sim = Sim::owned_by("a1");
    applied(&sim.send(
        "a1",
        1,
        EventBody::Released {
            reason: reason("lunch"),
        },
    ));
    applied(&sim.send("a1", 0, claim()));
    assert_eq!(sim.epoch(), 3);
    // A delayed message from the first tenure.
    let v = refused(
        &sim.send("a1", 1, heartbeat(true)),
        ViolationReason::StaleEpoch,
    );
    assert_eq!((v.held_epoch, v.current_epoch), (1, 3));
    let v = refused(
        &sim.send(
            "a1",
            1,
            EventBody::Completed {
                output_location: String::new(),
                summary: String::new(),
            },
        ),
        ViolationReason::StaleEpoch,
    );
    assert!(v.to_string().contains("epoch 1") && v.to_string().contains("epoch 3"));
    assert_eq!(sim.task().status, TaskStatus::Working);
}

#[test]
fn block_pauses_and_heartbeat_resumes() {
    let mut sim = Sim::owned_by("a1");
    applied(&sim.send(
        "a1",
        1,
        EventBody::Blocked {
            reason: reason("need the brief"),
        },
    ));
    assert_eq!(sim.task().status, TaskStatus::InputRequired);
    assert_eq!(sim.task().blocked_since.map(|m| m.seq), Some(3));
    assert_eq!(sim.task().blocked_reason(), "need the brief");
    // Blocking again keeps the original start of the block.
    applied(&sim.send(
        "a1",
        1,
        EventBody::Blocked {
            reason: reason("still"),
        },
    ));
    assert_eq!(sim.task().blocked_since.map(|m| m.seq), Some(3));
    applied(&sim.send("a1", 1, heartbeat(false)));
    let t = sim.task();
    assert_eq!(t.status, TaskStatus::Working);
    assert_eq!(t.blocked_since, None);
    assert_eq!(
        t.progress_since.map(|m| m.seq),
        Some(5),
        "resuming restarts the progress clock"
    );
    assert_eq!(sim.epoch(), 1, "blocking is not an ownership change");
}

#[test]
fn block_by_a_non_owner_or_during_a_handoff_is_refused() {
    let mut sim = Sim::owned_by("a1");
    refused(
        &sim.send(
            "b2",
            1,
            EventBody::Blocked {
                reason: String::new(),
            },
        ),
        ViolationReason::NotOwner,
    );
    applied(&sim.send("a1", 1, offer_to("b2")));
    refused(
        &sim.send(
            "a1",
            1,
            EventBody::Blocked {
                reason: String::new(),
            },
        ),
        ViolationReason::HandoffPending,
    );
    assert_eq!(sim.task().status, TaskStatus::HandoffPending);
}

#[test]
fn offer_keeps_the_sender_as_owner_until_accepted() {
    let mut sim = Sim::owned_by("a1");
    applied(&sim.send("a1", 1, offer_to("b2")));
    let t = sim.task();
    assert_eq!(t.status, TaskStatus::HandoffPending);
    assert_eq!(sim.owner(), Some("a1"));
    assert_eq!(t.epoch, 1);
    let p = t.pending_handoff.as_deref().expect("pending");
    assert_eq!(p.from, agent("a1"));
    assert_eq!(p.to, HandoffTarget::Agent(agent("b2")));
    assert_eq!(
        p.accept_by(),
        Some(sim.now.saturating_add(Duration::from_secs(60)))
    );
}

#[test]
fn offer_rules() {
    let mut sim = Sim::owned_by("a1");
    refused(
        &sim.send("b2", 1, offer_to("c3")),
        ViolationReason::NotOwner,
    );
    refused(
        &sim.send("a1", 0, offer_to("c3")),
        ViolationReason::StaleEpoch,
    );
    refused(
        &sim.send("a1", 1, offer_to("a1")),
        ViolationReason::OfferToSelf,
    );
    applied(&sim.send("a1", 1, offer_to("b2")));
    refused(
        &sim.send("a1", 1, offer_to("c3")),
        ViolationReason::HandoffPending,
    );
    assert_eq!(
        sim.task().pending_handoff.as_deref().map(|p| p.to.clone()),
        Some(HandoffTarget::Agent(agent("b2")))
    );
}

#[test]
fn accept_by_the_recipient_moves_ownership() {
    let mut sim = Sim::owned_by("a1");
    sim.send("a1", 1, offer_to("b2"));
    applied(&sim.send(
        "b2",
        0,
        EventBody::HandoffAccepted {
            heartbeat_within: None,
        },
    ));
    let t = sim.task();
    assert_eq!(sim.owner(), Some("b2"));
    assert_eq!(t.epoch, 2);
    assert_eq!(t.status, TaskStatus::Working);
    assert_eq!(t.pending_handoff, None);
    assert_eq!(t.output_location(), "s3://drafts/t1.md");
    assert_eq!(
        t.stage,
        Some(stage("draft")),
        "an agent offer keeps the stage"
    );
    // The previous owner is now a non-owner.
    refused(
        &sim.send("a1", 1, heartbeat(false)),
        ViolationReason::NotOwner,
    );
    applied(&sim.send("b2", 2, heartbeat(false)));
}

#[test]
fn accept_by_the_wrong_agent_names_the_recipient() {
    let mut sim = Sim::owned_by("a1");
    sim.send("a1", 1, offer_to("b2"));
    let before = ownership(&sim);
    let outcome = sim.send(
        "c3",
        0,
        EventBody::HandoffAccepted {
            heartbeat_within: None,
        },
    );
    let v = refused(&outcome, ViolationReason::NotRecipient);
    assert_eq!((v.actor, v.counterpart), (agent("c3"), Some(agent("b2"))));
    assert_eq!(ownership(&sim), before);
    assert!(
        outcome
            .alerts()
            .next()
            .expect("alert")
            .summary
            .contains("for b2, not c3")
    );
}

#[test]
fn accept_without_an_offer_is_refused() {
    let mut sim = Sim::owned_by("a1");
    let v = refused(
        &sim.send(
            "b2",
            0,
            EventBody::HandoffAccepted {
                heartbeat_within: None,
            },
        ),
        ViolationReason::NoPendingHandoff,
    );
    assert_eq!(v.counterpart, Some(agent("a1")));
    assert_eq!(sim.owner(), Some("a1"));
}

#[test]
fn a_stage_offer_may_be_accepted_by_any_agent_and_moves_the_stage() {
    let mut sim = Sim::owned_by("a1");
    applied(&sim.send("a1", 1, offer_stage("review")));
    applied(&sim.send(
        "r9",
        0,
        EventBody::HandoffAccepted {
            heartbeat_within: None,
        },
    ));
    assert_eq!(sim.owner(), Some("r9"));
    assert_eq!(sim.task().stage, Some(stage("review")));
    assert_eq!(sim.epoch(), 2);
}

#[test]
fn the_sender_may_not_accept_or_reject_its_own_stage_offer() {
    let mut sim = Sim::owned_by("a1");
    applied(&sim.send("a1", 1, offer_stage("review")));
    let before = ownership(&sim);
    refused(
        &sim.send(
            "a1",
            1,
            EventBody::HandoffAccepted {
                heartbeat_within: None,
            },
        ),
        ViolationReason::NotRecipient,
    );
    refused(
        &sim.send(
            "a1",
            1,
            EventBody::HandoffRejected {
                reason: String::new(),
            },
        ),
        ViolationReason::NotRecipient,
    );
    assert_eq!(ownership(&sim), before, "still a1's, offer still pending");
    assert_eq!(sim.task().status, TaskStatus::HandoffPending);
    // Any other agent may reject it; the sender keeps the task.
    applied(&sim.send(
        "r9",
        0,
        EventBody::HandoffRejected {
            reason: "busy".into(),
        },
    ));
    assert_eq!(sim.owner(), Some("a1"));
}

#[test]
fn an_accept_sets_the_new_owners_lease() {
    let mut sim = Sim::owned_by("a1");
    sim.send("a1", 1, offer_to("b2"));
    applied(&sim.send(
        "b2",
        0,
        EventBody::HandoffAccepted {
            heartbeat_within: Some(std::time::Duration::from_secs(90)),
        },
    ));
    assert_eq!(sim.task().lease, Some(std::time::Duration::from_secs(90)));
}

#[test]
fn reject_returns_the_task_to_its_sender() {
    let mut sim = Sim::owned_by("a1");
    sim.send("a1", 1, offer_to("b2"));
    applied(&sim.send(
        "b2",
        0,
        EventBody::HandoffRejected {
            reason: reason("not mine"),
        },
    ));
    let t = sim.task();
    assert_eq!(t.status, TaskStatus::Working);
    assert_eq!(sim.owner(), Some("a1"));
    assert_eq!(t.epoch, 1, "no ownership change");
    assert_eq!(t.pending_handoff, None);
    assert_eq!(
        t.alive_since.map(|m| m.seq),
        Some(4),
        "the lease restarts at the rejection"
    );
}

#[test]
fn reject_rules() {
    let mut sim = Sim::owned_by("a1");
    refused(
        &sim.send(
            "b2",
            0,
            EventBody::HandoffRejected {
                reason: String::new(),
            },
        ),
        ViolationReason::NoPendingHandoff,
    );
    sim.send("a1", 1, offer_to("b2"));
    let v = refused(
        &sim.send(
            "c3",
            0,
            EventBody::HandoffRejected {
                reason: String::new(),
            },
        ),
        ViolationReason::NotRecipient,
    );
    assert_eq!(v.counterpart, Some(agent("b2")));
    assert_eq!(sim.task().status, TaskStatus::HandoffPending);

    let mut sim = Sim::owned_by("a1");
    sim.send("a1", 1, offer_stage("review"));
    // The sender cannot "reject" its own stage offer.
    refused(
        &sim.send(
            "a1",
            1,
            EventBody::HandoffRejected {
                reason: String::new(),
            },
        ),
        ViolationReason::NotRecipient,
    );
    applied(&sim.send(
        "r9",
        0,
        EventBody::HandoffRejected {
            reason: String::new(),
        },
    ));
}

#[test]
fn complete_ends_the_task_and_keeps_the_owner_of_record() {
    let mut sim = Sim::owned_by("a1");
    applied(&sim.send(
        "a1",
        1,
        EventBody::Completed {
            output_location: "s3://final.md".into(),
            summary: "published".into(),
        },
    ));
    let t = sim.task();
    assert_eq!(t.status, TaskStatus::Completed);
    assert_eq!(sim.owner(), Some("a1"));
    assert_eq!(t.active_owner(), None);
    assert_eq!(t.output_location(), "s3://final.md");
    assert_eq!(t.outcome(), "published");
}

#[test]
fn complete_during_a_pending_offer_withdraws_it() {
    let mut sim = Sim::owned_by("a1");
    sim.send("a1", 1, offer_to("b2"));
    applied(&sim.send(
        "a1",
        1,
        EventBody::Completed {
            output_location: String::new(),
            summary: String::new(),
        },
    ));
    assert_eq!(sim.task().pending_handoff, None);
    refused(
        &sim.send(
            "b2",
            0,
            EventBody::HandoffAccepted {
                heartbeat_within: None,
            },
        ),
        ViolationReason::AfterTerminal,
    );
}

#[test]
fn complete_by_a_non_owner_is_refused() {
    let mut sim = Sim::owned_by("a1");
    let v = refused(
        &sim.send(
            "pub",
            0,
            EventBody::Completed {
                output_location: String::new(),
                summary: String::new(),
            },
        ),
        ViolationReason::NotOwner,
    );
    assert_eq!((v.actor, v.counterpart), (agent("pub"), Some(agent("a1"))));
    assert_eq!(sim.task().status, TaskStatus::Working);
}

#[test]
fn fail_is_terminal_unless_retryable() {
    let mut sim = Sim::owned_by("a1");
    applied(&sim.send(
        "a1",
        1,
        EventBody::Failed {
            reason: reason("model refused"),
            retryable: false,
        },
    ));
    assert_eq!(sim.task().status, TaskStatus::Failed);
    assert_eq!(sim.task().outcome(), "model refused");

    let mut sim = Sim::owned_by("a1");
    applied(&sim.send(
        "a1",
        1,
        EventBody::Failed {
            reason: reason("rate limited"),
            retryable: true,
        },
    ));
    let t = sim.task();
    assert_eq!(
        (t.status, t.owner.clone(), t.epoch),
        (TaskStatus::Submitted, None, 2)
    );
    assert_eq!(t.waiting_since.map(|m| m.seq), Some(3));
    applied(&sim.send("b2", 0, claim()));
    assert_eq!(sim.epoch(), 3);

    let mut sim = Sim::owned_by("a1");
    refused(
        &sim.send(
            "b2",
            1,
            EventBody::Failed {
                reason: String::new(),
                retryable: true,
            },
        ),
        ViolationReason::NotOwner,
    );
}

#[test]
fn release_lets_go_at_the_next_epoch() {
    let mut sim = Sim::owned_by("a1");
    sim.send("a1", 1, offer_to("b2"));
    applied(&sim.send(
        "a1",
        1,
        EventBody::Released {
            reason: reason("dropped"),
        },
    ));
    let t = sim.task();
    assert_eq!(
        (t.status, t.owner.clone(), t.epoch),
        (TaskStatus::Submitted, None, 2)
    );
    assert_eq!(t.pending_handoff, None, "releasing withdraws the offer");
    refused(
        &sim.send(
            "b2",
            0,
            EventBody::HandoffAccepted {
                heartbeat_within: None,
            },
        ),
        ViolationReason::NoPendingHandoff,
    );
    refused(
        &sim.send(
            "a1",
            2,
            EventBody::Released {
                reason: String::new(),
            },
        ),
        ViolationReason::NotOwner,
    );
}

#[test]
fn revoke_and_cancel_belong_to_operators() {
    let mut sim = Sim::owned_by("a1");
    sim.policy.operators = vec![agent("ops")];
    let v = refused(
        &sim.send(
            "b2",
            0,
            EventBody::Revoked {
                reason: String::new(),
            },
        ),
        ViolationReason::NotOperator,
    );
    assert_eq!(v.counterpart, Some(agent("a1")));
    refused(
        &sim.send(
            "a1",
            1,
            EventBody::Cancelled {
                reason: String::new(),
            },
        ),
        ViolationReason::NotOperator,
    );
    assert_eq!(sim.owner(), Some("a1"));

    applied(&sim.send(
        "ops",
        0,
        EventBody::Revoked {
            reason: reason("stuck"),
        },
    ));
    let t = sim.task();
    assert_eq!(
        (t.status, t.owner.clone(), t.epoch),
        (TaskStatus::Submitted, None, 2)
    );
    refused(
        &sim.send(
            "ops",
            0,
            EventBody::Revoked {
                reason: String::new(),
            },
        ),
        ViolationReason::NotOwned,
    );
    refused(
        &sim.send("a1", 1, heartbeat(false)),
        ViolationReason::NotOwner,
    );

    applied(&sim.send(
        "ops",
        0,
        EventBody::Cancelled {
            reason: reason("dropped idea"),
        },
    ));
    assert_eq!(sim.task().status, TaskStatus::Canceled);
    assert_eq!(sim.task().outcome(), "dropped idea");
}

#[test]
fn without_configured_operators_anyone_may_revoke() {
    let mut sim = Sim::owned_by("a1");
    applied(&sim.send(
        "anyone",
        0,
        EventBody::Revoked {
            reason: String::new(),
        },
    ));
    assert_eq!(sim.owner(), None);
}

#[test]
fn every_event_after_a_terminal_state_is_a_violation() {
    let bodies = [
        EventBody::Created(TaskCreated::default()),
        claim(),
        heartbeat(true),
        EventBody::Blocked {
            reason: String::new(),
        },
        offer_to("b2"),
        EventBody::HandoffAccepted {
            heartbeat_within: None,
        },
        EventBody::HandoffRejected {
            reason: String::new(),
        },
        EventBody::Completed {
            output_location: String::new(),
            summary: String::new(),
        },
        EventBody::Failed {
            reason: String::new(),
            retryable: true,
        },
        EventBody::Released {
            reason: String::new(),
        },
        EventBody::Revoked {
            reason: String::new(),
        },
        EventBody::Cancelled {
            reason: String::new(),
        },
    ];
    assert_eq!(bodies.len(), EventKind::ALL.len());
    for terminal in [
        EventBody::Completed {
            output_location: String::new(),
            summary: String::new(),
        },
        EventBody::Failed {
            reason: String::new(),
            retryable: false,
        },
        EventBody::Cancelled {
            reason: String::new(),
        },
    ] {
        for body in &bodies {
            let mut sim = Sim::owned_by("a1");
            applied(&sim.send("a1", 1, terminal.clone()));
            let status = sim.task().status;
            let v = refused(
                &sim.send("a1", 1, body.clone()),
                ViolationReason::AfterTerminal,
            );
            assert!(v.to_string().contains(status.as_str()), "{v}");
            assert_eq!(sim.task().status, status);
            assert_eq!(sim.epoch(), 1);
        }
    }
}

#[test]
fn unknown_task_is_ignored_with_an_alert_by_default() {
    let mut sim = Sim::new();
    let outcome = sim.send("a1", 0, claim());
    assert_eq!(outcome.disposition, Disposition::UnknownTask);
    assert!(sim.slot.is_none());
    let alert = outcome.alerts().next().expect("alert");
    assert_eq!(alert.kind, AlertKind::UnknownTask);
    assert_eq!(alert.agents, vec![agent("a1")]);
    assert!(alert.summary.contains("never created"), "{}", alert.summary);
    assert!(!outcome.must_persist());
}

#[test]
fn unknown_task_can_be_created_from_the_event() {
    let mut sim = Sim::new();
    sim.policy.unknown_task = UnknownTaskPolicy::AutoCreate;
    let outcome = sim.send("a1", 0, claim());
    assert_eq!(outcome.disposition, Disposition::Applied);
    assert!(outcome.must_persist());
    assert_eq!(
        outcome.alerts().map(|a| a.kind).collect::<Vec<_>>(),
        vec![AlertKind::UnknownTask]
    );
    assert_eq!(sim.owner(), Some("a1"));
    assert_eq!(sim.epoch(), 1);
    assert_eq!(sim.task().last_event.seq, 1);
}

#[test]
fn a_refused_event_is_never_the_tasks_last_event() {
    let mut sim = Sim::owned_by("a1");
    let before = sim.task().last_event.clone();
    let outcome = sim.send("intruder", 0, heartbeat(false));
    refused(&outcome, ViolationReason::NotOwner);
    assert_eq!(
        sim.task().last_event,
        before,
        "the last applied event stays"
    );
    let alert = outcome.alerts().next().expect("violation alert");
    assert_eq!(alert.last_event.as_ref(), Some(&before));
    assert!(
        sim.task().last_seq() > before.seq,
        "but it counts as seen, so its redelivery is a duplicate"
    );
    let seen = sim.task().last_seq();
    let again = baton_core::apply(
        &mut Some(sim.task().clone()),
        &baton_core::Event::new(
            "again",
            task_id("t1"),
            workflow("w1"),
            agent("intruder"),
            heartbeat(false),
        ),
        baton_core::EventMeta {
            seq: seen,
            stored_at: at(1),
        },
        &sim.policy,
    );
    assert_eq!(again.disposition, Disposition::Duplicate);
}

#[test]
fn redelivery_of_an_applied_event_changes_nothing() {
    let mut sim = Sim::owned_by("a1");
    let event = sim.event("a1", 1, heartbeat(true));
    let meta = baton_core::EventMeta {
        seq: 3,
        stored_at: sim.now.saturating_add(Duration::from_secs(1)),
    };
    let first = baton_core::apply(&mut sim.slot, &event, meta, &sim.policy);
    applied(&first);
    let after = sim.task().clone();
    let again = baton_core::apply(&mut sim.slot, &event, meta, &sim.policy);
    assert_eq!(again.disposition, Disposition::Duplicate);
    assert!(again.effects.is_empty());
    assert_eq!(sim.task(), &after);
    // A redelivered violation is not counted twice either.
    let bad = sim.event("b2", 1, heartbeat(false));
    let meta = baton_core::EventMeta {
        seq: 4,
        stored_at: meta.stored_at,
    };
    baton_core::apply(&mut sim.slot, &bad, meta, &sim.policy);
    baton_core::apply(&mut sim.slot, &bad, meta, &sim.policy);
    assert_eq!(sim.task().violations, 1);
}

#[test]
fn violation_alert_ids_are_deterministic() {
    let run = || {
        let mut sim = Sim::owned_by("a1");
        sim.send("b2", 0, claim())
            .alerts()
            .next()
            .expect("alert")
            .clone()
    };
    let (a, b) = (run(), run());
    assert_eq!(a, b);
    assert_eq!(a.id, "ownership_violation.t1.e1.s3");
    assert_eq!(a.msg_id(), a.id);
    assert_eq!(a.subject(), "baton.alert.ownership_violation.t1");
}

#[test]
fn context_version_tracks_the_highest_applied() {
    let mut sim = Sim::owned_by("a1");
    let e = sim.event("a1", 1, heartbeat(false)).with_context_version(7);
    sim.deliver(&e);
    let e = sim.event("a1", 1, heartbeat(false)).with_context_version(5);
    sim.deliver(&e);
    assert_eq!(sim.task().context_version, 7);
    // Refused events do not move it.
    let e = sim
        .event("b2", 1, heartbeat(false))
        .with_context_version(99);
    sim.deliver(&e);
    assert_eq!(sim.task().context_version, 7);
}

#[test]
fn timeline_shows_owner_and_epoch_after_each_event() {
    let mut sim = Sim::owned_by("a1");
    let mut events = Vec::new();
    let mut push = |sim: &mut Sim, who: &str, epoch: u64, body: EventBody| {
        let e = sim.event(who, epoch, body);
        sim.seq += 1;
        events.push((
            e,
            baton_core::EventMeta {
                seq: sim.seq,
                stored_at: common::at(sim.seq),
            },
        ));
    };
    // Rebuild the history from scratch for the timeline.
    sim.seq = 0;
    push(
        &mut sim,
        "maker",
        0,
        EventBody::Created(TaskCreated::default()),
    );
    push(&mut sim, "a1", 0, claim());
    push(&mut sim, "b2", 0, claim());
    push(&mut sim, "a1", 1, offer_to("b2"));
    push(
        &mut sim,
        "b2",
        0,
        EventBody::HandoffAccepted {
            heartbeat_within: None,
        },
    );
    let tl = baton_core::timeline::timeline(events, &sim.policy);
    let rows: Vec<_> = tl
        .iter()
        .map(|e| {
            (
                e.owner.as_ref().map(ToString::to_string),
                e.epoch,
                e.refused.is_some(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        vec![
            (None, 0, false),
            (Some("a1".into()), 1, false),
            (Some("a1".into()), 1, true),
            (Some("a1".into()), 1, false),
            (Some("b2".into()), 2, false),
        ]
    );
    assert_eq!(
        tl[2].refused.as_deref(),
        Some("task is already owned by a1")
    );
}
