//! Event payloads from the wire, with the subject they arrived on: the one
//! path every reader (orchestrator, detector, query API, backtester) takes
//! before it trusts an event.
//!
//! Input: one byte `n`, then `n` bytes of subject (lossy UTF-8), then the
//! payload. The seeds (fuzz/corpus/event_decode) are the test vectors in
//! testdata/vectors on their own subjects.
//!
//! Checks: nothing panics; a decoded event re-encodes to an equal event;
//! `check_subject` accepts exactly the canonical subject
//! `baton.evt.<task>.<agent>`; errors render (they become DLQ headers).
//!
//! TODO(merge): once `baton_core::wire::read_event(subject, payload)` lands
//! (the one decode path that also enforces the size limits), call it here
//! instead of `decode_event` + `check_subject`, and check that every text
//! field of an accepted event is within its limit.
#![no_main]

use baton_core::{
    Event, subjects,
    wire::{WireError, check_subject, decode_event},
};
use libfuzzer_sys::fuzz_target;

fn split(data: &[u8]) -> (String, &[u8]) {
    let Some((&n, rest)) = data.split_first() else {
        return (String::new(), data);
    };
    let n = usize::from(n).min(rest.len());
    let (subject, payload) = rest.split_at(n);
    (String::from_utf8_lossy(subject).into_owned(), payload)
}

fn rendered(err: &WireError) {
    let text = err.to_string();
    assert!(!text.is_empty());
    assert!(["undecodable", "invalid", "subject_mismatch"].contains(&err.reason()));
}

fuzz_target!(|data: &[u8]| {
    let (subject, payload) = split(data);
    let event = match decode_event(payload) {
        Ok(event) => event,
        Err(err) => {
            assert_ne!(err.reason(), "subject_mismatch");
            return rendered(&err);
        }
    };
    // What was accepted is a well-formed event: it survives the wire.
    let again: Event = decode_event(&event.encode_to_vec()).expect("re-encoded event decodes");
    assert_eq!(again, event);
    let _ = event.body.describe();

    let canonical = subjects::event(&event.task, &event.agent);
    assert_eq!(
        subjects::parse_event(&canonical),
        Some((event.task.as_str(), event.agent.as_str()))
    );
    check_subject(&event, &canonical).expect("an event's own subject is accepted");
    match check_subject(&event, &subject) {
        Ok(()) => assert_eq!(subject, canonical, "accepted a subject that is not its own"),
        Err(err) => {
            assert_ne!(subject, canonical);
            assert_eq!(err.reason(), "subject_mismatch");
            rendered(&err);
        }
    }
});
