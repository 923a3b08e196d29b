//! Real `nats-server` processes on free loopback ports.
//!
//! `baton dev` needs a broker on the user's machine, and every test that
//! crosses a process boundary talks to a real one: this crate starts one (a
//! single JetStream node, or a JetStream cluster), each node with its own
//! store directory (temporary unless given) and ports the OS picked, and
//! stops and removes everything on drop, so several can run side by side
//! without clashing. The tests reach it through `baton-testkit`.
//!
//! The binary is found via `BATON_NATS_SERVER`, then the project's tools
//! dir (`.tools/nats-server/bin/nats-server`, where
//! `scripts/ensure-nats-server` installs the pinned release), then `PATH`;
//! it must be at least [`MIN_VERSION`].
//!
//! A small watchdog shell process kills each server if the process that
//! started it dies without cleaning up (e.g. a test runner's timeout, or a
//! `kill -9` of `baton dev`), so no broker outlives its owner.

mod binary;
mod cluster;
mod server;

pub use binary::{MIN_VERSION, PINNED_VERSION, find_nats_server, nats_server_version};
pub use cluster::{ClusterOptions, NatsCluster};
pub use server::{ClusterSettings, NatsServer, ServerOptions};

/// Why a server could not be started or used.
#[derive(Debug, thiserror::Error)]
pub enum NatsServerError {
    /// No usable binary: the message says how to install one.
    #[error("{0}")]
    NotInstalled(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// The server did not become ready; `log` is the tail of its log.
    #[error("nats-server did not become ready: {reason}\n--- server log (tail) ---\n{log}")]
    NotReady { reason: String, log: String },
}

impl NatsServerError {
    fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        NatsServerError::Io {
            what: what.into(),
            source,
        }
    }
}
