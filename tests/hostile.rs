//! Hostile input end to end: a real nats-server, the real orchestrator and
//! stall detector binaries, and a few thousand payloads published with a
//! raw JetStream publish (no SDK, no checks): valid events (many of them
//! rule violations), truncated, bit-flipped and random bytes, invalid
//! fields, forged senders (subject agent != payload agent), subjects of the
//! wrong shape, and oversized text fields.
//!
//! Afterwards: both services are still running; every bad message is in
//! `BATON_DLQ` (found by its original `Nats-Msg-Id` and stream sequence,
//! with its original bytes) and has a `MALFORMED_EVENT` alert; nothing good
//! is dead-lettered; and KV `baton-tasks` equals the pure fold of the good
//! events in stream order, task by task, field by field.

mod support;

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    time::Duration,
};

use async_nats::jetstream;
use baton_core::{
    AlertKind, Event, EventBody, EventMeta, HandoffTarget, Policy, Task, TaskCreated, apply,
    subjects,
    wire::{check_subject, decode_event},
};
use baton_proto::{prost::Message, v1 as pb};
use futures::StreamExt;
use support::*;

/// Tasks the valid events are about.
const TASKS: usize = 40;
/// Messages of each kind.
const VALID: usize = 1500;
const TRUNCATED: usize = 300;
const FLIPPED: usize = 300;
const RANDOM: usize = 300;
const INVALID: usize = 200;
const FORGED: usize = 200;
const WRONG_SHAPE: usize = 150;
const OVERSIZED: usize = 12;

const AGENTS: [&str; 4] = ["a0", "a1", "a2", "ops"];

/// A small deterministic generator (splitmix64): the same run every time.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
        from[self.below(from.len())]
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// What a message is meant to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Valid,
    Truncated,
    Flipped,
    Random,
    Invalid,
    Forged,
    WrongShape,
    Oversized,
}

struct Msg {
    id: String,
    kind: Kind,
    subject: String,
    payload: Vec<u8>,
}

fn random_body(rng: &mut Rng) -> EventBody {
    let text = |rng: &mut Rng| format!("n{}", rng.below(1000));
    match rng.below(11) {
        10 => EventBody::Revoked { reason: text(rng) },
        0 => EventBody::Claimed {
            heartbeat_within: Some(Duration::from_secs(60)),
        },
        1 | 2 => EventBody::Heartbeat {
            note: text(rng),
            progress: rng.below(2) == 0,
        },
        3 => EventBody::Blocked { reason: text(rng) },
        4 => EventBody::HandoffOffered {
            to: if rng.below(2) == 0 {
                HandoffTarget::Agent(agent(rng.pick(&AGENTS)))
            } else {
                HandoffTarget::Stage(baton_core::StageName::new("review").expect("stage"))
            },
            output_location: format!("s3://out/{}", rng.below(100)),
            accept_within: None,
        },
        5 => EventBody::HandoffAccepted {
            heartbeat_within: None,
        },
        6 => EventBody::HandoffRejected { reason: text(rng) },
        7 => EventBody::Released { reason: text(rng) },
        8 => EventBody::Completed {
            output_location: "s3://done".into(),
            summary: text(rng),
        },
        _ => EventBody::Failed {
            reason: text(rng),
            retryable: rng.below(2) == 0,
        },
    }
}

/// A valid event for one of the (created) tasks: claims by contending
/// agents, and anything from anyone at a plausible epoch (many are refused
/// by the fold, which is also a valid outcome).
fn valid_event(rng: &mut Rng, ev: &mut Events) -> Event {
    let task_id = format!("h{}", rng.below(TASKS));
    let who = rng.pick(&AGENTS);
    let epoch = rng.below(4) as u64;
    let body = if rng.below(4) == 0 {
        EventBody::Claimed {
            heartbeat_within: None,
        }
    } else {
        random_body(rng)
    };
    ev.make(&task_id, who, epoch, body)
}

/// Valid protobuf of `baton.v1.Event` whose fields do not validate.
fn invalid_fields(rng: &mut Rng, ev: &mut Events) -> (String, Vec<u8>) {
    let e = ev.heartbeat("h0", "a0", 1);
    let mut w = pb::Event::from(&e);
    match rng.below(6) {
        0 => w.event_id.clear(),
        1 => w.event_id = "x".repeat(300),
        2 => w.body = None,
        3 => {
            w.body = Some(pb::event::Body::Claimed(pb::Claimed {
                heartbeat_within: Some(baton_proto::prost_types::Duration {
                    seconds: -5,
                    nanos: 0,
                }),
            }))
        }
        4 => {
            w.occurred_at = Some(baton_proto::prost_types::Timestamp {
                seconds: 1,
                nanos: 2_000_000_000,
            })
        }
        _ => {
            w.body = Some(pb::event::Body::HandoffOffered(pb::HandoffOffered {
                target: None,
                output_location: "x".into(),
                accept_within: None,
            }))
        }
    }
    (subjects::event(&e.task, &e.agent), w.encode_to_vec())
}

/// Events whose text fields are far over any limit the contract sets
/// (decision 7: an event over a limit is dead-lettered).
fn oversized(i: usize, ev: &mut Events) -> Event {
    let big = |n: usize| "x".repeat(n);
    let task_id = format!("big{i}");
    match i % 4 {
        0 => ev.make(
            &task_id,
            "planner",
            0,
            EventBody::Created(TaskCreated {
                title: big(600 * 1024),
                ..TaskCreated::default()
            }),
        ),
        1 => ev.make(
            "h1",
            "a0",
            1,
            EventBody::Heartbeat {
                note: big(200 * 1024),
                progress: true,
            },
        ),
        2 => ev.make(
            "h2",
            "a0",
            1,
            EventBody::Completed {
                output_location: big(100 * 1024),
                summary: big(100 * 1024),
            },
        ),
        _ => ev.make(
            "h3",
            "a1",
            0,
            EventBody::Blocked {
                reason: big(300 * 1024),
            },
        ),
    }
}

fn batch() -> Vec<Msg> {
    let mut rng = Rng(0x0BA7_0BAD_F00D);
    let mut ev = Events::new("hostile");
    let mut msgs = Vec::new();
    let mut push = |kind: Kind, subject: String, payload: Vec<u8>| {
        let id = format!("hostile-{}", msgs.len());
        msgs.push(Msg {
            id,
            kind,
            subject,
            payload,
        });
    };
    // Valid events keep their relative order (creation before the rest);
    // the bad ones are spread among them.
    let mut good: Vec<(String, Vec<u8>)> = (0..VALID)
        .map(|i| {
            // Creations first, then anything.
            let e = if i < TASKS {
                ev.make(
                    &format!("h{i}"),
                    "planner",
                    0,
                    EventBody::Created(TaskCreated {
                        title: format!("task {i}"),
                        ..TaskCreated::default()
                    }),
                )
            } else {
                valid_event(&mut rng, &mut ev)
            };
            (subjects::event(&e.task, &e.agent), e.encode_to_vec())
        })
        .collect();
    good.reverse();
    let mut bad: Vec<(Kind, String, Vec<u8>)> = Vec::new();
    for _ in 0..TRUNCATED {
        let e = valid_event(&mut rng, &mut ev);
        let bytes = e.encode_to_vec();
        let cut = rng.below(bytes.len());
        bad.push((
            Kind::Truncated,
            subjects::event(&e.task, &e.agent),
            bytes[..cut].to_vec(),
        ));
    }
    for _ in 0..FLIPPED {
        let e = valid_event(&mut rng, &mut ev);
        let mut bytes = e.encode_to_vec();
        for _ in 0..1 + rng.below(3) {
            let at = rng.below(bytes.len());
            bytes[at] ^= 1 << rng.below(8);
        }
        bad.push((Kind::Flipped, subjects::event(&e.task, &e.agent), bytes));
    }
    for _ in 0..RANDOM {
        let n = rng.below(200);
        let t = rng.below(TASKS);
        bad.push((
            Kind::Random,
            format!("baton.evt.h{t}.{}", rng.pick(&AGENTS)),
            rng.bytes(n),
        ));
    }
    for _ in 0..INVALID {
        let (subject, payload) = invalid_fields(&mut rng, &mut ev);
        bad.push((Kind::Invalid, subject, payload));
    }
    for _ in 0..FORGED {
        // A valid event from one agent, published under another's id.
        let e = valid_event(&mut rng, &mut ev);
        let other = AGENTS
            .iter()
            .chain(["planner"].iter())
            .find(|a| **a != e.agent.as_str())
            .expect("another agent");
        bad.push((
            Kind::Forged,
            format!("baton.evt.{}.{other}", e.task),
            e.encode_to_vec(),
        ));
    }
    for i in 0..WRONG_SHAPE {
        let e = valid_event(&mut rng, &mut ev);
        let subject = match i % 3 {
            0 => format!("baton.evt.{}", e.task),
            1 => format!("baton.evt.{}.{}.extra", e.task, e.agent),
            _ => format!("baton.evt.{}-x.{}", e.task, e.agent),
        };
        bad.push((Kind::WrongShape, subject, e.encode_to_vec()));
    }
    for i in 0..OVERSIZED {
        let e = oversized(i, &mut ev);
        bad.push((
            Kind::Oversized,
            subjects::event(&e.task, &e.agent),
            e.encode_to_vec(),
        ));
    }
    // Interleave: at each position take a good or a bad message at random,
    // in proportion to what is left.
    while !good.is_empty() || !bad.is_empty() {
        let take_good = !good.is_empty() && rng.below(good.len() + bad.len()) < good.len();
        if take_good {
            let (subject, payload) = good.pop().expect("good left");
            push(Kind::Valid, subject, payload);
        } else {
            let i = rng.below(bad.len());
            let (kind, subject, payload) = bad.swap_remove(i);
            push(kind, subject, payload);
        }
    }
    msgs
}

/// Whether a stored message is usable by every reader: what the
/// orchestrator must fold (everything else it must dead-letter).
fn usable(kind: Kind, subject: &str, payload: &[u8]) -> Option<Event> {
    if kind == Kind::Oversized {
        return None;
    }
    decode_event(payload)
        .and_then(|e| check_subject(&e, subject).map(|()| e))
        .ok()
}

#[tokio::test]
async fn hostile_payloads_are_dead_lettered_and_good_ones_folded() {
    let mut rig = Rig::new().await;
    rig.start_orchestrator(&[]).await;
    rig.start_detector("").await;

    let msgs = batch();
    let kinds: HashMap<&str, Kind> = msgs.iter().map(|m| (m.id.as_str(), m.kind)).collect();
    let mut acks = futures::stream::FuturesUnordered::new();
    for m in &msgs {
        let publish = jetstream::message::PublishMessage::build()
            .payload(m.payload.clone().into())
            .message_id(m.id.as_str());
        let ack = rig
            .js
            .send_publish(m.subject.clone(), publish)
            .await
            .expect("send");
        acks.push(ack.into_future());
        if acks.len() > 256 {
            acks.next().await.expect("ack").expect("stored");
        }
    }
    while let Some(a) = acks.next().await {
        a.expect("stored");
    }
    let last = rig.last_seq().await;
    assert_eq!(last, msgs.len() as u64, "every message was stored once");

    // The stream as stored: which sequence each message got, and the good
    // ones (by the one decode path) in stream order.
    let stored = read_all(&rig.js, subjects::EVENTS_STREAM, subjects::EVENTS_ALL).await;
    assert_eq!(stored.len(), msgs.len());
    let mut bad_seqs: BTreeMap<u64, (String, Kind)> = BTreeMap::new();
    let mut good = Vec::new();
    let mut per_kind: BTreeMap<Kind, (usize, usize)> = BTreeMap::new();
    for s in &stored {
        let id = s
            .headers
            .as_ref()
            .and_then(|h| h.get("Nats-Msg-Id"))
            .map(|v| v.as_str().to_string())
            .expect("msg id");
        let kind = kinds[id.as_str()];
        let counts = per_kind.entry(kind).or_default();
        match usable(kind, &s.subject, &s.payload) {
            Some(event) => {
                counts.0 += 1;
                good.push((
                    event,
                    EventMeta {
                        seq: s.seq,
                        stored_at: s.stored_at,
                    },
                ));
            }
            None => {
                counts.1 += 1;
                bad_seqs.insert(s.seq, (id, kind));
            }
        }
    }
    assert_eq!(
        per_kind[&Kind::Valid],
        (VALID, 0),
        "valid events are usable"
    );
    for kind in [
        Kind::Random,
        Kind::Invalid,
        Kind::Forged,
        Kind::WrongShape,
        Kind::Oversized,
    ] {
        let usable = per_kind.get(&kind).map_or(0, |c| c.0);
        assert_eq!(usable, 0, "{kind:?} messages must all be bad");
    }
    assert!(
        bad_seqs.len() > 1000,
        "a hostile batch: (usable, bad) per kind {per_kind:?}"
    );

    rig.wait_caught_up().await;
    wait_kv(
        &rig.js,
        subjects::SERVICES_BUCKET,
        "stall-detector.d",
        |b| {
            let s = pb::ServiceStatus::decode(b).ok()?;
            (s.applied_seq >= last).then_some(())
        },
    )
    .await;
    for (name, process) in rig
        .orchestrator
        .iter_mut()
        .chain(rig.extra.iter_mut())
        .map(|p| (p.name.clone(), p))
    {
        assert!(
            process.child.try_wait().expect("status").is_none(),
            "{name} exited under hostile input"
        );
    }

    // Every bad message is dead-lettered once, with its original bytes, its
    // original msg id and its place in BATON_EVENTS; nothing else is.
    let dlq = read_all(&rig.js, subjects::DLQ_STREAM, subjects::DLQ_ALL).await;
    let mut lettered: BTreeMap<u64, String> = BTreeMap::new();
    for d in &dlq {
        let h = d.headers.as_ref().expect("dead letter headers");
        let source = h
            .get("Baton-Dlq-Source")
            .map(|v| v.as_str().to_string())
            .expect("Baton-Dlq-Source");
        let seq: u64 = source
            .strip_prefix("BATON_EVENTS:")
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("Baton-Dlq-Source {source:?}"));
        let msg_id = h
            .get("Baton-Dlq-Msg-Id")
            .map(|v| v.as_str().to_string())
            .expect("Baton-Dlq-Msg-Id");
        let original = &stored[(seq - 1) as usize];
        assert_eq!(original.seq, seq);
        assert_eq!(
            h.get("Baton-Dlq-Subject").map(|v| v.as_str()),
            Some(original.subject.as_str())
        );
        assert_eq!(&d.payload[..], &original.payload[..], "original bytes");
        assert!(
            lettered.insert(seq, msg_id).is_none(),
            "seq {seq} dead-lettered twice"
        );
    }
    let missing: Vec<_> = bad_seqs
        .iter()
        .filter(|(seq, _)| !lettered.contains_key(seq))
        .map(|(seq, (id, kind))| format!("{id} (seq {seq}, {kind:?})"))
        .collect();
    let missing_not_oversized: Vec<_> = missing
        .iter()
        .filter(|m| !m.ends_with("Oversized)"))
        .collect();
    assert!(
        missing_not_oversized.is_empty(),
        "bad messages not dead-lettered: {missing_not_oversized:?}"
    );
    assert!(
        missing.is_empty(),
        "events with oversized text fields were not dead-lettered \
         (decision 7: size limits in the one decode path): {missing:?}"
    );
    let wrongly: Vec<_> = lettered
        .iter()
        .filter(|(seq, _)| !bad_seqs.contains_key(seq))
        .collect();
    assert!(wrongly.is_empty(), "good events dead-lettered: {wrongly:?}");
    for (seq, msg_id) in &lettered {
        assert_eq!(&bad_seqs[seq].0, msg_id, "Baton-Dlq-Msg-Id of seq {seq}");
    }

    // One MALFORMED_EVENT alert per dead letter, naming its sequence.
    let malformed: BTreeSet<u64> = all_alerts(&rig.js)
        .await
        .into_iter()
        .filter(|a| a.kind == AlertKind::MalformedEvent)
        .map(|a| a.event_seq)
        .collect();
    let bad: BTreeSet<u64> = bad_seqs.keys().copied().collect();
    assert_eq!(malformed, bad, "a MALFORMED_EVENT alert for each bad one");

    // KV equals the pure fold of the good events in stream order.
    let mut expected: BTreeMap<String, Option<Task>> = BTreeMap::new();
    for (event, meta) in &good {
        let slot = expected.entry(event.task.to_string()).or_default();
        apply(slot, event, *meta, &Policy::default());
    }
    let expected: BTreeMap<String, Task> = expected
        .into_iter()
        .filter_map(|(k, v)| v.map(|t| (k, t)))
        .collect();
    assert_eq!(expected.len(), TASKS, "every task was created");
    let store = rig
        .js
        .get_key_value(subjects::TASKS_BUCKET)
        .await
        .expect("bucket");
    let mut keys: Vec<String> = store
        .keys()
        .await
        .expect("keys")
        .map(|k| k.expect("key"))
        // Reserved keys (`_fence.orchestrator`, the leadership fence) are not tasks.
        .filter(|k| std::future::ready(!subjects::is_reserved_key(k)))
        .collect()
        .await;
    keys.sort();
    assert_eq!(
        keys,
        expected.keys().cloned().collect::<Vec<_>>(),
        "KV holds exactly the folded tasks"
    );
    for (id, want) in &expected {
        let got = stored_task(&rig.js, id).await.expect("stored");
        assert_eq!(got.status, want.status, "task {id}: status");
        assert_eq!(got.owner, want.owner, "task {id}: owner");
        assert_eq!(got.epoch, want.epoch, "task {id}: epoch");
        assert_eq!(got.violations, want.violations, "task {id}: violations");
        assert_eq!(got.last_event, want.last_event, "task {id}: last event");
        assert_eq!(&got, want, "task {id}: every field");
    }
}
