//! The orchestrator's CPU cost per event without a broker: decode, fold,
//! and encode of the stored state, over 1M events on 100k tasks. Prints
//! figures (not a pass/fail test).
//!
//! Besides the human line, one JSON line per measure
//! (`baton_testkit::bench::Figures`; `scripts/bench` collects them).
//!
//! Run: `cargo bench -p baton-orchestrator --bench fold`
#![allow(clippy::print_stdout)]
use baton_core::{
    AgentId, Event, EventBody, EventMeta, Policy, TaskCreated, TaskId, Time, WorkflowId,
    context::MissingVersion,
};
use baton_orchestrator::book::{BatchOut, Book, Raw};
use baton_testkit::bench::Figures;
use bytes::Bytes;
use std::time::Instant;

fn main() {
    let tasks = 100_000usize;
    let wf = WorkflowId::new("bench").expect("valid");
    let agents: Vec<AgentId> = (0..64)
        .map(|i| AgentId::new(format!("agent-{i}")).expect("valid"))
        .collect();
    let mut msgs: Vec<(String, Bytes)> = Vec::new();
    for t in 0..tasks {
        let e = Event::new(
            format!("c{t}"),
            TaskId::new(format!("task-{t:06}")).expect("valid"),
            wf.clone(),
            agents[0].clone(),
            EventBody::Created(TaskCreated::default()),
        );
        msgs.push((
            format!("baton.evt.task-{t:06}.agent-0"),
            e.encode_to_vec().into(),
        ));
    }
    for t in 0..tasks {
        let a = &agents[t % 64];
        let e = Event::new(
            format!("k{t}"),
            TaskId::new(format!("task-{t:06}")).expect("valid"),
            wf.clone(),
            a.clone(),
            EventBody::Claimed {
                heartbeat_within: None,
            },
        );
        msgs.push((
            format!("baton.evt.task-{t:06}.{a}"),
            e.encode_to_vec().into(),
        ));
    }
    let mut i = 0usize;
    while msgs.len() < 1_000_000 {
        let t = (i * 7919) % tasks;
        let a = &agents[t % 64];
        let e = Event::new(
            format!("h{i}"),
            TaskId::new(format!("task-{t:06}")).expect("valid"),
            wf.clone(),
            a.clone(),
            EventBody::Heartbeat {
                note: String::new(),
                progress: i.is_multiple_of(3),
            },
        )
        .with_epoch(1);
        msgs.push((
            format!("baton.evt.task-{t:06}.{a}"),
            e.encode_to_vec().into(),
        ));
        i += 1;
    }
    let raws: Vec<Raw<'_>> = msgs
        .iter()
        .enumerate()
        .map(|(i, (s, p))| Raw {
            subject: s,
            payload: p,
            headers: None,
            meta: EventMeta {
                seq: i as u64 + 1,
                stored_at: Time::from_unix_millis(1_700_000_000_000 + i as u64),
            },
        })
        .collect();
    let t = Instant::now();
    let decoded: Vec<_> = raws.iter().map(|r| Book::decode(*r)).collect();
    let d = t.elapsed();
    let mut book = Book::new(Policy::default(), MissingVersion::Stale, 1 << 20);
    let mut out = BatchOut::default();
    let t = Instant::now();
    for (r, e) in raws.iter().zip(decoded) {
        book.ingest_decoded(*r, e, &mut out);
    }
    let f = t.elapsed();
    let t = Instant::now();
    let writes = book.state_writes(&mut out);
    let e = t.elapsed();
    println!(
        "decode {:.0} ns/event, fold {:.0} ns/event, state encode {:.0} ns/task ({} tasks)",
        d.as_nanos() as f64 / 1e6,
        f.as_nanos() as f64 / 1e6,
        e.as_nanos() as f64 / writes.len() as f64,
        writes.len()
    );
    let figures = Figures::new("fold", "1000000 events over 100000 tasks, no broker");
    figures.emit("decode", d.as_nanos() as f64 / 1e6, "ns/event");
    figures.emit("fold", f.as_nanos() as f64 / 1e6, "ns/event");
    figures.emit(
        "state_encode",
        e.as_nanos() as f64 / writes.len() as f64,
        "ns/task",
    );
}
