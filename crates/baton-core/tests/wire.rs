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
