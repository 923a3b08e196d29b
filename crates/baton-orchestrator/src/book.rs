//! The orchestrator's state and the decisions it makes per message, with no
//! I/O: bytes in, the messages to publish out.
//!
//! `ingest` validates a delivered message, folds it with `baton-core`, and
//! records what must be published: protocol alerts, the dead letter of a
//! message that could not be used, and (at `finish`) the new state of every
//! task the batch touched, one KV write per task however many events it had.

use std::collections::HashMap;

use async_nats::HeaderMap;
use baton_core::{
    Alert, AlertKind, Disposition, Event, EventMeta, Policy, Task, TaskId,
    alert::{Malformed, malformed_alert},
    context::{ContextEntry, DecisionLog, MissingVersion, stale_context_alert},
    fold::apply_known,
    subjects,
    wire::{WireError, read_event},
};
use baton_jetstream::read;
use baton_service::{
    deadletter::{Rejected, dead_letter},
    outbox::Outgoing,
};
use bytes::Bytes;

/// One delivered message.
#[derive(Debug, Clone, Copy)]
pub struct Raw<'a> {
    pub subject: &'a str,
    pub payload: &'a Bytes,
    pub headers: Option<&'a HeaderMap>,
    pub meta: EventMeta,
}

/// What folding produced: the effects to publish before acknowledging
/// (alerts, dead letters), counts, and the tasks whose state must be
/// written at the next state flush.
#[derive(Debug, Default)]
pub struct BatchOut {
    /// Alerts and dead letters, to be durable before the events are acked.
    pub outgoing: Vec<Outgoing>,
    pub applied: u64,
    pub refused: u64,
    pub duplicates: u64,
    pub unknown_task: u64,
    pub dead_lettered: u64,
    pub alerts: Vec<AlertKind>,
    /// Tasks whose state must be written, each once.
    dirty: Vec<TaskId>,
}

impl BatchOut {
    /// Tasks whose state must be written.
    pub fn dirty_len(&self) -> usize {
        self.dirty.len()
    }

    /// Clears the per-batch effects and counts, keeping the dirty tasks.
    pub fn take_effects(&mut self) -> BatchOut {
        BatchOut {
            outgoing: std::mem::take(&mut self.outgoing),
            applied: std::mem::take(&mut self.applied),
            refused: std::mem::take(&mut self.refused),
            duplicates: std::mem::take(&mut self.duplicates),
            unknown_task: std::mem::take(&mut self.unknown_task),
            dead_lettered: std::mem::take(&mut self.dead_lettered),
            alerts: std::mem::take(&mut self.alerts),
            dirty: Vec::new(),
        }
    }

    fn raise(&mut self, alert: &Alert) {
        self.alerts.push(alert.kind);
        self.outgoing.push(alert_message(alert));
    }
}

/// The publish of an alert: its subject, payload and notification id.
pub fn alert_message(alert: &Alert) -> Outgoing {
    Outgoing::new(alert.raise_subject(), alert.encode_to_vec()).with_msg_id(alert.msg_id())
}

/// A task and the flush generation in which it was last marked dirty.
#[derive(Debug)]
struct Slot {
    task: Task,
    dirty_in: u64,
}

/// Every task's state, and the decision records, as far as applied.
#[derive(Debug)]
pub struct Book {
    tasks: HashMap<TaskId, Slot, foldhash::fast::RandomState>,
    /// Current flush generation: a task is in the unflushed set if its
    /// `dirty_in` equals this (one lookup instead of a second set).
    generation: u64,
    decisions: DecisionLog,
    policy: Policy,
    missing_version: MissingVersion,
    max_payload: usize,
    kv_prefix: String,
}

impl Book {
    pub fn new(policy: Policy, missing_version: MissingVersion, max_payload: usize) -> Book {
        Book {
            tasks: HashMap::default(),
            generation: 1,
            decisions: DecisionLog::default(),
            policy,
            missing_version,
            max_payload,
            kv_prefix: format!("$KV.{}.", subjects::TASKS_BUCKET),
        }
    }

    /// Adds a task from the KV snapshot.
    pub fn restore(&mut self, task: Task) {
        self.tasks
            .insert(task.id.clone(), Slot { task, dirty_in: 0 });
    }

    /// Records a decision-record entry.
    pub fn record_decision(&mut self, entry: &ContextEntry, seq: u64, stored_at: baton_core::Time) {
        self.decisions.record(entry, seq, stored_at);
    }

    /// Notes a decision-record sequence that could not be decoded.
    pub fn skip_decision(&mut self, seq: u64) {
        self.decisions.skip(seq);
    }

    /// The dead letter and `MALFORMED_EVENT` report of a decision-record
    /// entry that cannot be used. Both carry ids derived from its sequence,
    /// so a repeat within the duplicate windows is stored once.
    pub fn refuse_decision(&self, stored: &read::Stored, err: &WireError) -> [Outgoing; 2] {
        let letter = dead_letter(
            Rejected {
                stream: subjects::CONTEXT_STREAM,
                seq: stored.seq,
                subject: &stored.subject,
                payload: &stored.payload,
                headers: stored.headers.as_ref(),
            },
            err.reason(),
            &err.to_string(),
            self.max_payload,
        )
        .with_msg_id(format!("dlq.{}.{}", subjects::CONTEXT_STREAM, stored.seq));
        let alert = malformed_alert(
            Malformed {
                stream: subjects::CONTEXT_STREAM,
                seq: stored.seq,
                subject: &stored.subject,
                stored_at: stored.stored_at,
                reason: err.reason(),
            },
            err,
        );
        [letter, alert_message(&alert)]
    }

    /// Highest decision-record sequence known.
    pub fn decisions_seq(&self) -> u64 {
        self.decisions.last_seq()
    }

    pub fn task(&self, id: &str) -> Option<&Task> {
        self.tasks.get(id).map(|s| &s.task)
    }

    pub fn tasks(&self) -> impl Iterator<Item = &Task> {
        self.tasks.values().map(|s| &s.task)
    }

    pub fn len(&self) -> usize {
        self.tasks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    /// The most bytes a query reply may hold: half the broker's max payload,
    /// leaving room for headers and framing.
    pub fn reply_budget(&self) -> usize {
        self.max_payload / 2
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Decodes and validates a message (no state needed: done before
    /// taking the lock).
    pub fn decode(raw: Raw<'_>) -> Result<Event, WireError> {
        read_event(raw.subject, raw.payload)
    }

    /// Validates and folds one message.
    pub fn ingest(&mut self, raw: Raw<'_>, out: &mut BatchOut) {
        let decoded = Self::decode(raw);
        self.ingest_decoded(raw, decoded, out);
    }

    /// Folds a message decoded with [`Book::decode`].
    pub fn ingest_decoded(
        &mut self,
        raw: Raw<'_>,
        decoded: Result<Event, WireError>,
        out: &mut BatchOut,
    ) {
        let event = match decoded {
            Ok(e) => e,
            Err(err) => return self.dead_letter(raw, &err, out),
        };
        let meta = raw.meta;
        let generation = self.generation;
        let (outcome, fresh_dirty) = match self.tasks.get_mut(&event.task) {
            Some(slot) => {
                let outcome = apply_known(&mut slot.task, &event, meta, &self.policy);
                let fresh = outcome.must_persist() && slot.dirty_in != generation;
                if outcome.must_persist() {
                    slot.dirty_in = generation;
                }
                (outcome, fresh)
            }
            None => {
                let mut created = None;
                let outcome = baton_core::apply(&mut created, &event, meta, &self.policy);
                let fresh = created.is_some();
                if let Some(task) = created {
                    self.tasks.insert(
                        task.id.clone(),
                        Slot {
                            task,
                            dirty_in: generation,
                        },
                    );
                }
                (outcome, fresh)
            }
        };
        match &outcome.disposition {
            Disposition::Applied => out.applied += 1,
            Disposition::Refused(_) => out.refused += 1,
            Disposition::Duplicate => {
                out.duplicates += 1;
                return;
            }
            Disposition::UnknownTask => out.unknown_task += 1,
        }
        if fresh_dirty {
            out.dirty.push(event.task.clone());
        }
        for alert in outcome.alerts() {
            out.raise(alert);
        }
        self.check_context(&event, meta, out);
    }

    /// Raises `STALE_CONTEXT` if the event acted on an outdated record.
    fn check_context(&self, event: &Event, meta: EventMeta, out: &mut BatchOut) {
        let missed = self.decisions.missed(event, meta, self.missing_version);
        if !missed.is_empty() {
            let alert = stale_context_alert(event, meta, self.task(event.task.as_str()), &missed);
            out.raise(&alert);
        }
    }

    /// Whether a batch holding `event` needs the decision record caught up
    /// to its stored time first.
    pub fn needs_decisions(event_kind: baton_core::EventKind) -> bool {
        matches!(
            event_kind,
            baton_core::EventKind::Claimed
                | baton_core::EventKind::HandoffAccepted
                | baton_core::EventKind::HandoffOffered
                | baton_core::EventKind::Completed
        )
    }

    fn dead_letter(&self, raw: Raw<'_>, err: &WireError, out: &mut BatchOut) {
        out.dead_lettered += 1;
        out.outgoing.push(dead_letter(
            Rejected {
                stream: subjects::EVENTS_STREAM,
                seq: raw.meta.seq,
                subject: raw.subject,
                payload: raw.payload,
                headers: raw.headers,
            },
            err.reason(),
            &err.to_string(),
            self.max_payload,
        ));
        let alert = malformed_alert(
            Malformed {
                stream: subjects::EVENTS_STREAM,
                seq: raw.meta.seq,
                subject: raw.subject,
                stored_at: raw.meta.stored_at,
                reason: err.reason(),
            },
            err,
        );
        out.raise(&alert);
    }

    /// The KV writes for every task touched since the last state flush
    /// (one per task), and a new flush generation.
    pub fn state_writes(&mut self, out: &mut BatchOut) -> Vec<Outgoing> {
        let writes = std::mem::take(&mut out.dirty)
            .into_iter()
            .filter_map(|id| {
                let slot = self.tasks.get(&id)?;
                Some(Outgoing::new(
                    format!("{}{}", self.kv_prefix, id),
                    slot.task.encode_to_vec(),
                ))
            })
            .collect();
        self.generation += 1;
        writes
    }
}

#[cfg(test)]
mod tests {
    use baton_core::{AgentId, EventBody, TaskCreated, Time, WorkflowId};
    use baton_proto::prost::Message;

    use super::*;

    fn book() -> Book {
        Book::new(Policy::default(), MissingVersion::Stale, 1 << 20)
    }

    fn event(task: &str, agent: &str, body: EventBody) -> Event {
        Event::new(
            format!("{task}-{agent}"),
            TaskId::new(task).expect("id"),
            WorkflowId::new("w").expect("id"),
            AgentId::new(agent).expect("id"),
            body,
        )
    }

    fn feed(book: &mut Book, seq: u64, subject: &str, payload: Vec<u8>, out: &mut BatchOut) {
        let payload = Bytes::from(payload);
        book.ingest(
            Raw {
                subject,
                payload: &payload,
                headers: None,
                meta: EventMeta {
                    seq,
                    stored_at: Time::from_unix_millis(seq * 1000),
                },
            },
            out,
        );
    }

    #[test]
    fn one_kv_write_per_touched_task_per_batch() {
        let mut book = book();
        let mut out = BatchOut::default();
        let create = event("t1", "a", EventBody::Created(TaskCreated::default()));
        feed(
            &mut book,
            1,
            "baton.evt.t1.a",
            create.encode_to_vec(),
            &mut out,
        );
        let claim = event(
            "t1",
            "a",
            EventBody::Claimed {
                heartbeat_within: None,
            },
        );
        feed(
            &mut book,
            2,
            "baton.evt.t1.a",
            claim.encode_to_vec(),
            &mut out,
        );
        for seq in 3..10 {
            let hb = event(
                "t1",
                "a",
                EventBody::Heartbeat {
                    note: String::new(),
                    progress: true,
                },
            )
            .with_epoch(1);
            feed(
                &mut book,
                seq,
                "baton.evt.t1.a",
                hb.encode_to_vec(),
                &mut out,
            );
        }
        let writes = book.state_writes(&mut out);
        assert_eq!(out.applied, 9);
        assert!(out.outgoing.is_empty(), "no alerts");
        assert_eq!(writes.len(), 1);
        assert_eq!(writes[0].subject, "$KV.baton-tasks.t1");
        let stored = Task::decode(&writes[0].payload).expect("state");
        assert_eq!(stored.last_seq(), 9);
        assert_eq!(stored.owner.as_ref().map(AgentId::as_str), Some("a"));
    }

    #[test]
    fn bad_input_is_dead_lettered_with_an_alert() {
        let mut book = book();
        let mut out = BatchOut::default();
        feed(
            &mut book,
            7,
            "baton.evt.t1.a",
            b"not protobuf \xff".to_vec(),
            &mut out,
        );
        let ok = event("t1", "a", EventBody::Created(TaskCreated::default()));
        feed(&mut book, 8, "baton.evt.t1.b", ok.encode_to_vec(), &mut out);
        assert_eq!(out.dead_lettered, 2);
        assert_eq!(
            out.alerts,
            vec![AlertKind::MalformedEvent, AlertKind::MalformedEvent]
        );
        let dlq: Vec<_> = out
            .outgoing
            .iter()
            .filter(|o| o.subject.starts_with("baton.dlq."))
            .collect();
        assert_eq!(dlq[0].subject, "baton.dlq.undecodable");
        assert_eq!(dlq[1].subject, "baton.dlq.subject_mismatch");
        assert_eq!(
            &dlq[0].payload[..],
            b"not protobuf \xff",
            "original bytes kept"
        );
        let headers = dlq[1].headers.as_ref().expect("headers");
        assert!(
            headers
                .get("Baton-Dlq-Reason")
                .expect("reason")
                .as_str()
                .contains("subject agent \"b\"")
        );
        assert_eq!(
            headers.get("Baton-Dlq-Source").expect("source").as_str(),
            "BATON_EVENTS:8"
        );
        let alert = out
            .outgoing
            .iter()
            .find(|o| o.subject == "baton.raise.malformed_event.t1")
            .expect("alert");
        let alert = baton_proto::v1::Alert::decode(alert.payload.clone()).expect("alert");
        assert!(alert.summary.contains("BATON_DLQ"), "{}", alert.summary);
        assert!(book.is_empty(), "nothing applied");
    }

    #[test]
    fn stale_context_names_the_missed_decisions() {
        let mut book = book();
        let entry = ContextEntry {
            workflow: WorkflowId::new("w").expect("id"),
            author: AgentId::new("editor").expect("id"),
            summary: "British spelling".into(),
            body: String::new(),
            supersedes: 0,
            recorded_at: None,
        };
        book.record_decision(&entry, 5, Time::from_unix_millis(1500));
        let mut out = BatchOut::default();
        feed(
            &mut book,
            1,
            "baton.evt.t1.a",
            event("t1", "a", EventBody::Created(TaskCreated::default())).encode_to_vec(),
            &mut out,
        );
        let claim = event(
            "t1",
            "a",
            EventBody::Claimed {
                heartbeat_within: None,
            },
        )
        .with_context_version(3);
        feed(
            &mut book,
            2,
            "baton.evt.t1.a",
            claim.encode_to_vec(),
            &mut out,
        );
        assert_eq!(out.alerts, vec![AlertKind::StaleContext]);
        let alert = out
            .outgoing
            .iter()
            .find(|o| o.subject.starts_with("baton.raise.stale_context"))
            .expect("alert");
        let alert = baton_proto::v1::Alert::decode(alert.payload.clone()).expect("alert");
        assert_eq!(alert.missed_versions, vec![5]);
        assert!(
            alert.summary.contains("British spelling"),
            "{}",
            alert.summary
        );
    }
}
