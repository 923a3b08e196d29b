//! What Baton's services share, so that each service is only its loop.
//!
//! - [`consumer`]: the durable pull consumer and batch reception: take
//!   what is ready, up to a bound, so that load turns into larger batches
//!   (and coalesced writes) rather than queueing.
//! - [`outbox`]: publishes a batch's effects (KV writes, alerts, dead
//!   letters) pipelined, retrying until every one is acknowledged; only then
//!   does the service acknowledge the batch.
//! - [`deadletter`]: the dead-letter record of an event that could not be
//!   used.
//! - [`leader`]: leadership with standbys: the campaign for the service's
//!   lease, its fences, and the terms the service runs (decision 8).
//! - [`liveness`]: the service's record in KV `baton-services`.
//! - [`http`]: `/metrics` (Prometheus) and `/healthz`.
//! - [`snapshot`]: the checkpoint a restarted service resumes from.
//! - [`shutdown`]: SIGTERM / ctrl-c.

pub mod consumer;
pub mod deadletter;
pub mod http;
pub mod leader;
pub mod liveness;
pub mod outbox;
pub mod shutdown;
pub mod snapshot;
