//! Event payloads from the wire, with the subject they arrived on: the one
//! path every reader (orchestrator, detector, query API, backtester) takes
//! before it trusts an event.
//!
//! Input: one byte `n`, then `n` bytes of subject (lossy UTF-8), then the
//! payload. The seeds (fuzz/corpus/event_decode) are the test vectors in
//! testdata/vectors on their own subjects.
//!
//! Checks: nothing panics; a decoded event re-encodes to an equal event and
//! is within every size limit; `check_subject` accepts exactly the canonical
//! subject `baton.evt.<task>.<agent>`, and `read_event` (the one read path)
//! agrees with decode + subject check; errors render (they become DLQ
//! headers).
#![no_main]

use baton_core::{
    Event, subjects,
    wire::{WireError, check_limits, check_subject, decode_event, read_event},
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
    assert!(["undecodable", "invalid", "subject_mismatch", "too_large"].contains(&err.reason()));
}

fuzz_target!(|data: &[u8]| {
    let (subject, payload) = split(data);
    let read = read_event(&subject, payload);
    let event = match decode_event(payload) {
        Ok(event) => event,
        Err(err) => {
            assert_ne!(err.reason(), "subject_mismatch");
            assert_eq!(read.as_ref().err(), Some(&err), "read_event refuses as decode does");
            return rendered(&err);
        }
    };
    check_limits(&event).expect("an accepted event is within every limit");
    assert_eq!(
        read.as_ref().ok(),
        check_subject(&event, &subject).ok().map(|()| &event),
        "read_event = decode + subject check"
    );
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
