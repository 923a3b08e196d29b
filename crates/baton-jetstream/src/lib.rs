//! Baton's broker layout and the plumbing every Baton process shares.
//!
//! - [`topology`]: the streams and KV buckets, created or updated
//!   idempotently at start.
//! - [`auth`]: the roles the server enforces (agent, operator, service,
//!   viewer), their permissions, the server configuration and identity
//!   files `baton auth` writes.
//! - [`connect`]: connection options (credentials, nkey, TLS, inbox prefix)
//!   and connection errors that say what to do.
//! - [`publish`]: durable publishing with idempotent retries and
//!   compare-and-set.
//! - [`read`]: reading a stream's history for one subject.
//! - [`policy`]: the orchestrator's fold policy, published in KV for every
//!   reader.
//! - [`silences`]: adding, ending and listing silences (KV
//!   `baton-silences`), for every operator surface.
//! - [`leadership`]: the services' leadership lease and the fences that
//!   make the broker refuse a deposed instance's writes (decision 8).

pub mod auth;
pub mod connect;
pub mod leadership;
pub mod policy;
pub mod publish;
pub mod read;
pub mod silences;
pub mod topology;

pub use connect::{ConnectError, Denials, Denied, NatsOptions};
pub use publish::{Cas, PublishError, Retry, publish_durable, publish_durable_watched};
pub use topology::{Topology, TopologyError, ensure};
