//! Stored task state (`baton.v1.TaskState`, the KV `baton-tasks` value) as
//! the services load it back at start: the detector restores its snapshot
//! from these bytes, the CLI and the query API decode them, and anyone with
//! write access to the bucket can put anything there.
//!
//! Checks: nothing panics; an accepted state re-encodes to an equal state;
//! the stall detector can restore it and run its deadlines on it; folding
//! a further event on top of it keeps the fold's promises (epoch never
//! decreases, a terminal task stays terminal). Seeds:
//! testdata/vectors/task_state.bin.
#![no_main]

use std::time::Duration;

use baton_core::{
    Disposition, Event, EventBody, EventMeta, Policy, Task, apply, rules::Rules, stall::Detector,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let task = match Task::decode(data) {
        Ok(task) => task,
        Err(err) => {
            assert!(!err.to_string().is_empty());
            return;
        }
    };
    let again = Task::decode(&task.encode_to_vec()).expect("re-encoded state decodes");
    assert_eq!(again, task);

    // The detector restores snapshots and then runs their deadlines.
    let mut detector = Detector::new(Rules::default(), Policy::default());
    detector.restore(task.clone());
    assert_eq!(detector.len(), usize::from(!task.status.is_terminal()));
    let mut now = task.last_event.at;
    for _ in 0..4 {
        now = now.saturating_add(Duration::from_secs(3600));
        let _alerts = detector.handle_timeout(now);
    }

    // One more event from the owner (or anyone) on top of the stored state.
    let agent = task
        .owner
        .clone()
        .unwrap_or_else(|| task.last_event.agent.clone());
    let event = Event::new(
        "fuzz",
        task.id.clone(),
        task.workflow.clone(),
        agent,
        EventBody::Heartbeat {
            note: String::new(),
            progress: true,
        },
    )
    .with_epoch(task.epoch);
    let meta = EventMeta {
        seq: task.last_seq().saturating_add(1),
        stored_at: now,
    };
    let mut slot = Some(task.clone());
    let outcome = apply(&mut slot, &event, meta, &Policy::default());
    let after = slot.expect("a known task stays known");
    assert!(after.epoch >= task.epoch);
    if task.status.is_terminal() {
        assert_eq!(after.status, task.status, "a terminal task stays terminal");
        assert!(matches!(
            outcome.disposition,
            Disposition::Refused(_) | Disposition::Duplicate
        ));
    }
    let _alerts = detector.handle_event(&event, meta);
});
