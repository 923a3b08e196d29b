//! Real `nats-server` processes for tests.
//!
//! Every test that crosses a process boundary talks to a real broker: this
//! crate gives tests one (a single JetStream node, or a JetStream cluster),
//! each node with its own temporary store directory and ports the OS
//! picked, stopped and removed on drop, so tests can run in parallel without
//! clashing. The launcher itself is the product crate `baton-nats-server`
//! (which `baton dev` uses too); this crate is the tests' door to it, so
//! tests do not depend on where the launcher lives.
//!
//! The binary is found via `BATON_NATS_SERVER`, then the project's tools
//! dir (`.tools/nats-server/bin/nats-server`, where
//! `scripts/ensure-nats-server` installs the pinned release), then `PATH`;
//! it must be at least [`MIN_VERSION`].
//!
//! [`bench`] holds what the benchmarks share (the broker from
//! `BATON_BENCH_CLUSTER`, the raw-consume baseline, figure lines).

pub mod bench;

pub use baton_nats_server::{
    ClusterOptions, ClusterSettings, MIN_VERSION, NatsCluster, NatsServer,
    NatsServerError as TestkitError, PINNED_VERSION, ServerOptions, find_nats_server,
    nats_server_version,
};
