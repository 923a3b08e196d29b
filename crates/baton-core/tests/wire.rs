//! Wire-to-domain conversion names the field that is wrong.

use baton_core::{
    WireError,
    wire::{check_subject, decode_event},
};
use baton_proto::{prost::Message, prost_types, v1 as pb};

fn valid() -> pb::Event {
    pb::Event {
        event_id: "e1".into(),
        task_id: "t1".into(),
        workflow_id: "w1".into(),
        agent_id: "a1".into(),
        epoch: 0,
        context_version: 0,
        occurred_at: None,
        body: Some(pb::event::Body::Claimed(pb::Claimed::default())),
    }
}

fn field_error(wire: pb::Event) -> (String, String) {
    match decode_event(&wire.encode_to_vec()) {
        Err(WireError::Field { field, message }) => (field, message),
        other => panic!("expected a field error, got {other:?}"),
    }
}

#[test]
fn a_valid_event_decodes() {
    let event = decode_event(&valid().encode_to_vec()).expect("valid");
    assert_eq!(event.task.as_str(), "t1");
    assert_eq!(event.kind(), baton_core::EventKind::Claimed);
}

#[test]
fn garbage_is_a_decode_error() {
    let err = decode_event(b"\xff\xff\xff not protobuf").expect_err("garbage");
    assert!(matches!(err, WireError::Decode { .. }), "{err:?}");
    assert_eq!(err.reason(), "undecodable");
    assert!(
        err.to_string().starts_with("cannot decode baton.v1.Event"),
        "{err}"
    );
}

#[test]
fn each_invalid_field_is_named() {
    type Mutation = Box<dyn Fn(&mut pb::Event)>;
    let cases: Vec<(Mutation, &str, &str)> = vec![
        (Box::new(|e| e.event_id.clear()), "event_id", "required"),
        (
            Box::new(|e| e.event_id = "x".repeat(300)),
            "event_id",
            "longer than",
        ),
        (
            Box::new(|e| e.task_id = "a.b".into()),
            "task_id",
            "'.' is not allowed",
        ),
        (Box::new(|e| e.task_id.clear()), "task_id", "empty"),
        (
            Box::new(|e| e.workflow_id = "w*".into()),
            "workflow_id",
            "'*'",
        ),
        (
            Box::new(|e| e.agent_id = "_system".into()),
            "agent_id",
            "start with a letter",
        ),
        (Box::new(|e| e.body = None), "body", "exactly one"),
        (
            Box::new(|e| {
                e.occurred_at = Some(prost_types::Timestamp {
                    seconds: -5,
                    nanos: 0,
                })
            }),
            "occurred_at",
            "before 1970",
        ),
        (
            Box::new(|e| {
                e.body = Some(pb::event::Body::HandoffOffered(pb::HandoffOffered {
                    target: None,
                    ..Default::default()
                }))
            }),
            "handoff_offered.target",
            "to_agent or to_stage",
        ),
        (
            Box::new(|e| {
                e.body = Some(pb::event::Body::HandoffOffered(pb::HandoffOffered {
                    target: Some(pb::handoff_offered::Target::ToAgent("b 2".into())),
                    ..Default::default()
                }))
            }),
            "handoff_offered.to_agent",
            "' '",
        ),
        (
            Box::new(|e| {
                e.body = Some(pb::event::Body::Claimed(pb::Claimed {
                    heartbeat_within: Some(prost_types::Duration {
                        seconds: -1,
                        nanos: 0,
                    }),
                }))
            }),
            "claimed.heartbeat_within",
            "negative",
        ),
        (
            Box::new(|e| {
                e.body = Some(pb::event::Body::Created(pb::TaskCreated {
                    stage: "re view".into(),
                    ..Default::default()
                }))
            }),
            "created.stage",
            "' '",
        ),
    ];
    for (mutate, field, needle) in cases {
        let mut wire = valid();
        mutate(&mut wire);
        let (got_field, message) = field_error(wire);
        assert_eq!(got_field, field);
        assert!(message.contains(needle), "{field}: {message}");
    }
}

#[test]
fn the_subject_must_match_the_payload() {
    let event = decode_event(&valid().encode_to_vec()).expect("valid");
    assert_eq!(check_subject(&event, "baton.evt.t1.a1"), Ok(()));
    for (subject, needle) in [
        ("baton.evt.t2.a1", "subject task \"t2\""),
        ("baton.evt.t1.b2", "subject agent \"b2\""),
        ("baton.other.t1.a1", "not of the form"),
    ] {
        let err = check_subject(&event, subject).expect_err(subject);
        assert_eq!(err.reason(), "subject_mismatch");
        assert!(err.to_string().contains(needle), "{err}");
    }
}

#[test]
fn zero_windows_mean_unset() {
    let mut wire = valid();
    wire.body = Some(pb::event::Body::Claimed(pb::Claimed {
        heartbeat_within: Some(prost_types::Duration::default()),
    }));
    let event = decode_event(&wire.encode_to_vec()).expect("valid");
    assert_eq!(
        event.body,
        baton_core::EventBody::Claimed {
            heartbeat_within: None
        }
    );
}

mod trust_at_the_edges {
    use baton_core::{
        Policy, UnknownTaskPolicy,
        wire::{check_limits, limits, read_context_entry, read_event},
    };
    use baton_proto::{prost::Message, v1 as pb};

    use super::valid;

    fn created_with_title(len: usize) -> pb::Event {
        let mut e = valid();
        e.body = Some(pb::event::Body::Created(pb::TaskCreated {
            title: "x".repeat(len),
            ..Default::default()
        }));
        e
    }

    #[test]
    fn a_field_over_its_limit_is_refused_naming_the_field() {
        let ok = created_with_title(limits::TITLE);
        read_event("baton.evt.t1.a1", &ok.encode_to_vec()).expect("at the limit is fine");
        let over = created_with_title(limits::TITLE + 1);
        let err = read_event("baton.evt.t1.a1", &over.encode_to_vec()).expect_err("over");
        assert_eq!(err.reason(), "too_large");
        assert!(err.to_string().contains("created.title"), "{err}");
        let mut completed = valid();
        completed.body = Some(pb::event::Body::Completed(pb::Completed {
            output_location: "s".repeat(600_000),
            summary: String::new(),
        }));
        let err = read_event("baton.evt.t1.a1", &completed.encode_to_vec()).expect_err("huge");
        assert_eq!(err.reason(), "too_large");
    }

    #[test]
    fn senders_check_the_same_limits_readers_enforce() {
        let over = created_with_title(limits::TITLE + 1);
        let event = baton_core::Event::try_from(created_with_title(1)).expect("valid");
        check_limits(&event).expect("small is fine");
        let mut big = event.clone();
        if let baton_core::EventBody::Created(c) = &mut big.body {
            c.title = "x".repeat(limits::TITLE + 1);
        }
        let err = check_limits(&big).expect_err("over");
        assert!(err.to_string().contains("created.title"), "{err}");
        // The same event on the wire is refused by readers.
        assert!(read_event("baton.evt.t1.a1", &over.encode_to_vec()).is_err());
    }

    #[test]
    fn a_forged_event_is_refused_by_the_one_read_path() {
        let bytes = valid().encode_to_vec();
        read_event("baton.evt.t1.a1", &bytes).expect("own subject");
        let err = read_event("baton.evt.t1.mallory", &bytes).expect_err("forged");
        assert_eq!(err.reason(), "subject_mismatch");
        let err = read_event("baton.evt.t2.a1", &bytes).expect_err("other task");
        assert_eq!(err.reason(), "subject_mismatch");
    }

    fn entry(author: &str) -> pb::ContextEntry {
        pb::ContextEntry {
            workflow_id: "w1".into(),
            author: author.into(),
            summary: "use British spelling".into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_decision_recorded_as_someone_else_is_refused() {
        let bytes = entry("alice").encode_to_vec();
        read_context_entry("baton.ctx.w1.alice", &bytes).expect("own subject");
        let err = read_context_entry("baton.ctx.w1.mallory", &bytes).expect_err("forged");
        assert_eq!(err.reason(), "subject_mismatch");
        let err = read_context_entry("baton.ctx.w2.alice", &bytes).expect_err("other workflow");
        assert_eq!(err.reason(), "subject_mismatch");
        let err = read_context_entry("baton.ctx.w1", &bytes).expect_err("old subject form");
        assert_eq!(err.reason(), "subject_mismatch");
        let mut big = entry("alice");
        big.body = "b".repeat(limits::DECISION_BODY + 1);
        let err = read_context_entry("baton.ctx.w1.alice", &big.encode_to_vec()).expect_err("big");
        assert_eq!(err.reason(), "too_large");
    }

    #[test]
    fn a_silence_without_a_matcher_is_refused() {
        let silence = pb::Silence {
            silence_id: "s1".into(),
            until: Some(baton_proto::prost_types::Timestamp {
                seconds: 2_000_000_000,
                nanos: 0,
            }),
            ..Default::default()
        };
        let err = baton_core::stall::Silence::try_from(silence.clone()).expect_err("mutes all");
        assert!(err.to_string().contains("at least one matcher"), "{err}");
        let with_kind = pb::Silence {
            kind: pb::AlertKind::HeartbeatMissed as i32,
            ..silence
        };
        baton_core::stall::Silence::try_from(with_kind).expect("one matcher is enough");
    }

    #[test]
    fn the_published_policy_round_trips() {
        let policy = Policy {
            operators: vec![baton_core::AgentId::new("ops").expect("id")],
            unknown_task: UnknownTaskPolicy::AutoCreate,
        };
        let back = Policy::decode(&policy.encode_to_vec()).expect("decode");
        assert_eq!(back.operators, policy.operators);
        assert_eq!(back.unknown_task, policy.unknown_task);
        assert_eq!(
            Policy::decode(&[]).expect("empty = default").unknown_task,
            UnknownTaskPolicy::Alert
        );
    }

    #[test]
    fn alert_texts_are_cut_on_the_wire() {
        let mut alert = baton_core::Alert::firing(
            baton_core::AlertKind::OwnershipViolation,
            "id".into(),
            None,
            baton_core::Time::default(),
        );
        alert.summary = "é".repeat(10_000);
        let back = baton_core::Alert::decode(&alert.encode_to_vec()).expect("decode");
        assert!(back.summary.len() <= baton_core::alert::MAX_ALERT_TEXT);
        assert!(back.summary.ends_with('…'));
    }
}
