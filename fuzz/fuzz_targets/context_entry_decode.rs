//! Decision-record entries (`baton.v1.ContextEntry`) as read from
//! `BATON_CONTEXT`: anyone who can publish there can write these bytes.
//!
//! Checks: nothing panics; an accepted entry re-encodes to an equal entry;
//! recording it in a decision log, asking what an event missed and raising
//! the `STALE_CONTEXT` alert that quotes it all work on whatever was
//! accepted. Seeds: testdata/vectors/context_entry.bin.
#![no_main]

use baton_core::{
    Alert, Event, EventBody, EventMeta,
    context::{ContextEntry, DecisionLog, MissingVersion, stale_context_alert},
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let entry = match ContextEntry::decode(data) {
        Ok(entry) => entry,
        Err(err) => {
            assert!(!err.to_string().is_empty());
            return;
        }
    };
    let again = ContextEntry::decode(&entry.encode_to_vec()).expect("re-encoded entry decodes");
    assert_eq!(again, entry);

    let mut log = DecisionLog::default();
    let at = entry.recorded_at.unwrap_or_default();
    log.record(&entry, 1, at);
    log.record(&entry, 1, at); // a redelivery is ignored
    assert_eq!(log.decisions(&entry.workflow).len(), 1);
    assert_eq!(log.last_seq(), 1);
    let claim = Event::new(
        "fuzz",
        "t".parse().expect("task id"),
        entry.workflow.clone(),
        entry.author.clone(),
        EventBody::Claimed {
            heartbeat_within: None,
        },
    );
    let meta = EventMeta {
        seq: 2,
        stored_at: at.saturating_add(std::time::Duration::from_secs(1)),
    };
    // The event read nothing, so it missed the one decision.
    let missed = log.missed(&claim, meta, MissingVersion::Stale);
    assert_eq!(missed.len(), 1);
    // The alert naming it (with the entry's summary in it) is storable.
    let alert = stale_context_alert(&claim, meta, None, &missed);
    let stored = Alert::decode(&alert.encode_to_vec()).expect("the alert decodes");
    assert_eq!(stored.summary, alert.summary);
    assert_eq!(stored.agents, alert.agents);
});
