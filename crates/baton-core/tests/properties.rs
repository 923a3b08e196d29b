//! Invariants of the fold over random event sequences.
//!
//! - never more than one owner: every owner-only event applied at epoch `e`
//!   comes from the agent that took ownership at `e`, and every ownership
//!   change gets a fresh epoch;
//! - folding the same sequence twice gives identical state and effects;
//! - re-applying an already-applied event (same stream sequence) changes
//!   nothing, wherever the redelivery lands;
//! - epochs never decrease, and refused events never change ownership;
//! - the stored form (TaskState protobuf) round-trips, so a fold resumed from
//!   a snapshot ends where the full fold ends.

mod common;

use std::{collections::HashMap, time::Duration};

use baton_core::{
    AgentId, Disposition, Event, EventBody, EventKind, EventMeta, HandoffTarget, Outcome, Policy,
    Task, TaskCreated, TaskWindows, Time, UnknownTaskPolicy, apply,
};
use baton_proto::v1 as pb;
use common::{T0, agent, stage, task_id, workflow};
use proptest::prelude::*;

const AGENTS: [&str; 4] = ["a1", "a2", "a3", "ops"];

fn arb_agent() -> impl Strategy<Value = AgentId> {
    prop::sample::select(AGENTS.to_vec()).prop_map(agent)
}

fn arb_window() -> impl Strategy<Value = Option<Duration>> {
    prop::option::of((1u64..600).prop_map(Duration::from_secs))
}

fn arb_body() -> impl Strategy<Value = EventBody> {
    let text = "[a-z ]{0,8}";
    prop_oneof![
        1 => (prop::option::of(prop::sample::select(vec!["draft", "review"])), prop::option::of(arb_agent()), arb_window(), arb_window(), arb_window(), arb_window(), text, prop::sample::subsequence(vec!["drafts/post.md", "assets", "notes/a b.md"], 0..=3))
            .prop_map(|(st, assignee, a, b, c, d, title, artifacts)| EventBody::Created(TaskCreated {
                stage: st.map(stage),
                title,
                assignee,
                windows: TaskWindows { start_within: a, deadline_within: b, heartbeat_within: c, progress_within: d },
                artifacts: artifacts.into_iter().map(|n| baton_core::lease::ArtifactName::new(n).unwrap()).collect(),
            })),
        4 => arb_window().prop_map(|heartbeat_within| EventBody::Claimed { heartbeat_within }),
        5 => (text, any::<bool>()).prop_map(|(note, progress)| EventBody::Heartbeat { note, progress }),
        1 => text.prop_map(|reason| EventBody::Blocked { reason }),
        3 => (prop_oneof![arb_agent().prop_map(HandoffTarget::Agent), prop::sample::select(vec!["draft", "review"]).prop_map(|s| HandoffTarget::Stage(stage(s)))], text, arb_window())
            .prop_map(|(to, output_location, accept_within)| EventBody::HandoffOffered { to, output_location, accept_within }),
        3 => arb_window().prop_map(|heartbeat_within| EventBody::HandoffAccepted { heartbeat_within }),
        1 => text.prop_map(|reason| EventBody::HandoffRejected { reason }),
        1 => (text, text).prop_map(|(output_location, summary)| EventBody::Completed { output_location, summary }),
        1 => (text, any::<bool>()).prop_map(|(reason, retryable)| EventBody::Failed { reason, retryable }),
        2 => text.prop_map(|reason| EventBody::Released { reason }),
        1 => text.prop_map(|reason| EventBody::Revoked { reason }),
        1 => text.prop_map(|reason| EventBody::Cancelled { reason }),
    ]
}

/// A sequence of (event, meta) for one task, usually starting with creation,
/// with increasing sequences (with gaps: other tasks interleave) and times.
fn arb_history() -> impl Strategy<Value = Vec<(Event, EventMeta)>> {
    let step = (arb_agent(), 0u64..5, 0u64..4, arb_body(), 1u64..4, 0u64..90);
    (any::<bool>(), prop::collection::vec(step, 1..60)).prop_map(|(create_first, steps)| {
        let mut seq = 0;
        let mut now = T0;
        let mut out = Vec::new();
        if create_first {
            seq += 1;
            let e = Event::new(
                "c",
                task_id("t1"),
                workflow("w1"),
                agent("a1"),
                EventBody::Created(TaskCreated::default()),
            );
            out.push((
                e,
                EventMeta {
                    seq,
                    stored_at: now,
                },
            ));
        }
        for (i, (who, epoch, ctx, body, gap, secs)) in steps.into_iter().enumerate() {
            seq += gap;
            now = now.saturating_add(Duration::from_secs(secs));
            let e = Event::new(format!("e{i}"), task_id("t1"), workflow("w1"), who, body)
                .with_epoch(epoch)
                .with_context_version(ctx);
            out.push((
                e,
                EventMeta {
                    seq,
                    stored_at: now,
                },
            ));
        }
        out
    })
}

fn arb_policy() -> impl Strategy<Value = Policy> {
    (any::<bool>(), any::<bool>()).prop_map(|(ops, auto)| Policy {
        operators: if ops { vec![agent("ops")] } else { Vec::new() },
        unknown_task: if auto {
            UnknownTaskPolicy::AutoCreate
        } else {
            UnknownTaskPolicy::Alert
        },
    })
}

fn fold(history: &[(Event, EventMeta)], policy: &Policy) -> (Option<Task>, Vec<Outcome>) {
    let mut slot = None;
    let outcomes = history
        .iter()
        .map(|(e, m)| apply(&mut slot, e, *m, policy))
        .collect();
    (slot, outcomes)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn at_most_one_owner_per_epoch(history in arb_history(), policy in arb_policy()) {
        let mut slot: Option<Task> = None;
        let mut holder: HashMap<u64, AgentId> = HashMap::new();
        for (event, meta) in &history {
            let before = slot.as_ref().map(|t| (t.owner.clone(), t.epoch));
            let outcome = apply(&mut slot, event, *meta, &policy);
            let Some(task) = slot.as_ref() else { continue };
            if outcome.disposition != Disposition::Applied {
                continue;
            }
            match event.kind() {
                EventKind::Claimed | EventKind::HandoffAccepted => {
                    // A fresh epoch, never handed out before, to the sender.
                    prop_assert_eq!(task.owner.as_ref(), Some(&event.agent));
                    prop_assert!(holder.insert(task.epoch, event.agent.clone()).is_none(),
                        "epoch {} handed out twice", task.epoch);
                }
                EventKind::Heartbeat | EventKind::Blocked | EventKind::HandoffOffered
                | EventKind::Completed | EventKind::Failed | EventKind::Released => {
                    prop_assert_eq!(holder.get(&event.epoch), Some(&event.agent),
                        "{} at epoch {} from a non-holder", event.kind(), event.epoch);
                    prop_assert_eq!(before.and_then(|b| b.0), Some(event.agent.clone()));
                }
                _ => {}
            }
        }
    }

    #[test]
    fn ownership_changes_only_by_explicit_acts_and_epochs_never_decrease(history in arb_history(), policy in arb_policy()) {
        let mut slot: Option<Task> = None;
        for (event, meta) in &history {
            let before = slot.clone();
            let outcome = apply(&mut slot, event, *meta, &policy);
            let (Some(b), Some(a)) = (before.as_ref(), slot.as_ref()) else { continue };
            prop_assert!(a.epoch >= b.epoch);
            match &outcome.disposition {
                Disposition::Refused(v) => {
                    prop_assert_eq!(&a.owner, &b.owner);
                    prop_assert_eq!(a.epoch, b.epoch);
                    prop_assert_eq!(a.status, b.status);
                    prop_assert_eq!(&a.pending_handoff, &b.pending_handoff);
                    prop_assert_eq!(a.violations, b.violations + 1);
                    prop_assert_eq!(&v.actor, &event.agent);
                    let alert = outcome.alerts().next().expect("a violation raises an alert");
                    prop_assert_eq!(alert.agents.first(), Some(&event.agent));
                }
                Disposition::Applied => {
                    let moved = a.owner != b.owner || a.epoch != b.epoch;
                    let explicit = match &event.body {
                        EventBody::Claimed { .. } | EventBody::HandoffAccepted { .. }
                        | EventBody::Released { .. } | EventBody::Revoked { .. } => true,
                        EventBody::Failed { retryable, .. } => *retryable,
                        _ => false,
                    };
                    prop_assert_eq!(moved, explicit, "{:?}", event.body);
                    if moved {
                        prop_assert_eq!(a.epoch, b.epoch + 1);
                    }
                }
                Disposition::Duplicate | Disposition::UnknownTask => prop_assert_eq!(&before, &slot),
            }
        }
    }

    #[test]
    fn folding_twice_gives_the_same_result(history in arb_history(), policy in arb_policy()) {
        let (s1, o1) = fold(&history, &policy);
        let (s2, o2) = fold(&history, &policy);
        prop_assert_eq!(s1, s2);
        prop_assert_eq!(o1, o2);
    }

    #[test]
    fn redelivery_changes_nothing(history in arb_history(), policy in arb_policy(), picks in prop::collection::vec((any::<prop::sample::Index>(), any::<prop::sample::Index>()), 0..20)) {
        let (clean, _) = fold(&history, &policy);
        // Insert redeliveries of earlier events at later positions.
        let mut delivery: Vec<(usize, bool)> = (0..history.len()).map(|i| (i, false)).collect();
        for (which, at) in picks {
            let original = which.index(history.len());
            let earliest = delivery.iter().position(|(i, _)| *i == original).unwrap_or(0) + 1;
            let pos = earliest + at.index(delivery.len() - earliest + 1);
            delivery.insert(pos.min(delivery.len()), (original, true));
        }
        let mut slot = None;
        for (i, redelivered) in delivery {
            let (e, m) = &history[i];
            let before = slot.clone();
            let outcome = apply(&mut slot, e, *m, &policy);
            if redelivered && before.is_some() {
                prop_assert_eq!(&outcome.disposition, &Disposition::Duplicate);
                prop_assert!(outcome.effects.is_empty());
                prop_assert_eq!(&before, &slot);
            }
        }
        prop_assert_eq!(clean, slot);
    }

    #[test]
    fn the_stored_form_round_trips_and_resumes(history in arb_history(), policy in arb_policy(), cut in any::<prop::sample::Index>()) {
        let (full, _) = fold(&history, &policy);
        let cut = cut.index(history.len() + 1);
        let (mut slot, _) = fold(&history[..cut], &policy);
        if let Some(task) = &slot {
            let restored = Task::decode(&task.encode_to_vec()).expect("stored state decodes");
            prop_assert_eq!(&restored, task);
            slot = Some(restored);
        }
        for (e, m) in &history[cut..] {
            apply(&mut slot, e, *m, &policy);
        }
        prop_assert_eq!(slot, full);
    }

    #[test]
    fn events_round_trip_through_the_wire(history in arb_history()) {
        for (mut event, _) in history {
            event.occurred_at = Some(Time::from_unix_nanos(1_795_392_000_123_456_789));
            let wire = pb::Event::from(&event);
            let back = Event::try_from(wire).expect("valid event");
            prop_assert_eq!(back, event);
        }
    }
}
