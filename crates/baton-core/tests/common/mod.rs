//! A tiny driver for folding hand-written event sequences on virtual time.
#![allow(dead_code)]

use std::time::Duration;

use baton_core::{
    AgentId, Event, EventBody, EventMeta, Outcome, Policy, StageName, Task, TaskCreated, TaskId,
    Time, WorkflowId, apply,
};

pub fn agent(s: &str) -> AgentId {
    AgentId::new(s).expect("valid agent id")
}

pub fn stage(s: &str) -> StageName {
    StageName::new(s).expect("valid stage")
}

pub fn task_id(s: &str) -> TaskId {
    TaskId::new(s).expect("valid task id")
}

pub fn workflow(s: &str) -> WorkflowId {
    WorkflowId::new(s).expect("valid workflow id")
}

/// Start of virtual time in these tests: 2026-11-23T00:00:00Z.
pub const T0: Time = Time::from_unix_nanos(1_795_392_000_000_000_000);

pub fn at(secs: u64) -> Time {
    T0.saturating_add(Duration::from_secs(secs))
}

/// One task, events applied in order with increasing sequence numbers.
pub struct Sim {
    pub slot: Option<Task>,
    pub policy: Policy,
    pub seq: u64,
    pub now: Time,
    pub task: TaskId,
    pub workflow: WorkflowId,
}

impl Sim {
    pub fn new() -> Sim {
        Sim {
            slot: None,
            policy: Policy::default(),
            seq: 0,
            now: T0,
            task: task_id("t1"),
            workflow: workflow("w1"),
        }
    }

    /// A sim whose task was created (stage `draft`).
    pub fn created() -> Sim {
        let mut sim = Sim::new();
        sim.send(
            "maker",
            0,
            EventBody::Created(TaskCreated {
                stage: Some(stage("draft")),
                title: "Draft the post".into(),
                ..Default::default()
            }),
        );
        sim
    }

    /// A sim whose task is owned by `owner` at epoch 1.
    pub fn owned_by(owner: &str) -> Sim {
        let mut sim = Sim::created();
        sim.send(
            owner,
            0,
            EventBody::Claimed {
                heartbeat_within: None,
            },
        );
        sim
    }

    pub fn event(&self, agent_id: &str, epoch: u64, body: EventBody) -> Event {
        Event::new(
            format!("e{}", self.seq + 1),
            self.task.clone(),
            self.workflow.clone(),
            agent(agent_id),
            body,
        )
        .with_epoch(epoch)
    }

    pub fn advance(&mut self, secs: u64) {
        self.now = self.now.saturating_add(Duration::from_secs(secs));
    }

    /// Applies an event as the next one in the stream, one second later.
    pub fn send(&mut self, agent_id: &str, epoch: u64, body: EventBody) -> Outcome {
        let event = self.event(agent_id, epoch, body);
        self.deliver(&event)
    }

    pub fn deliver(&mut self, event: &Event) -> Outcome {
        self.seq += 1;
        self.advance(1);
        let meta = EventMeta {
            seq: self.seq,
            stored_at: self.now,
        };
        apply(&mut self.slot, event, meta, &self.policy)
    }

    pub fn task(&self) -> &Task {
        self.slot.as_ref().expect("task exists")
    }

    pub fn owner(&self) -> Option<&str> {
        self.task().owner.as_ref().map(AgentId::as_str)
    }

    pub fn epoch(&self) -> u64 {
        self.task().epoch
    }
}
