//! Baton's pure domain.
//!
//! Everything that matters about a task is a deterministic function of the
//! ordered event stream; this crate is that function. It has no I/O, no
//! async runtime and no clock: time comes in as an argument (the broker's
//! stored time of an event, or a `now` the caller passes), so the services,
//! the backtester and the tests all run the same code.
//!
//! # Layout
//!
//! - [`ids`]: validated task, agent, workflow and stage ids.
//! - [`event`], [`task`]: status events and task state as domain values.
//! - [`fold`]: the task state machine; returns effects as data.
//! - [`expect`]: the signals a state expects, with due times.
//! - [`rules`]: stall rules (defaults, per workflow and stage, TOML).
//! - [`stall`]: the stall detector's engine (deadlines, alert lifecycle).
//! - [`context`]: the decision record and stale-context detection.
//! - [`lease`]: leases on shared artifacts (files, records), their fold and
//!   the fencing rule stores apply.
//! - [`alert`]: alerts and their deterministic ids.
//! - [`catalogue`]: every alert Baton raises, with its fields and text.
//! - [`timeline`]: a task's events with the owner after each.
//! - [`wire`]: `TryFrom` conversions from and to `baton-proto`.
//! - [`subjects`]: subject, stream and bucket names.

pub mod alert;
pub mod catalogue;
pub mod context;
pub mod event;
pub mod expect;
pub mod fold;
pub mod ids;
pub mod lease;
pub mod rules;
pub mod stall;
pub mod subjects;
pub mod task;
pub mod time;
pub mod timeline;
pub mod watch;
pub mod wire;

pub use alert::{Alert, AlertKind, AlertState, Severity};
pub use event::{Event, EventBody, EventKind, EventMeta, HandoffTarget, TaskCreated, TaskWindows};
pub use fold::{
    Disposition, Effect, Outcome, Policy, UnknownTaskPolicy, Violation, ViolationReason, apply,
};
pub use ids::{AgentId, IdError, StageName, TaskId, WorkflowId};
pub use task::{Task, TaskStatus};
pub use time::Time;
pub use wire::WireError;
