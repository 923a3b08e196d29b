//! Real `nats-server` processes on free loopback ports.
//!
//! Every test that crosses a process boundary talks to a real broker: this
//! crate starts one (a single JetStream node, or a JetStream cluster), each
//! node with its own temporary store directory and ports the OS picked, and
//! stops and removes everything on drop, so tests can run in parallel
//! without clashing. `baton dev` uses the same launcher for its local
//! server.
//!
//! The binary is found via `BATON_NATS_SERVER`, then the project's tools
//! dir (`.tools/nats-server/bin/nats-server`, where
//! `scripts/ensure-nats-server` installs the pinned release), then `PATH`;
//! it must be at least [`MIN_VERSION`].
//!
//! A small watchdog shell process kills each server if the process that
//! started it dies without cleaning up (e.g. a test runner's timeout), so no
//! broker outlives its test.

mod binary;
mod cluster;
mod server;

pub use binary::{MIN_VERSION, PINNED_VERSION, find_nats_server, nats_server_version};
pub use cluster::NatsCluster;
pub use server::{ClusterSettings, NatsServer, ServerOptions};

/// Why a server could not be started or used.
#[derive(Debug, thiserror::Error)]
pub enum TestkitError {
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

impl TestkitError {
    fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        TestkitError::Io {
            what: what.into(),
            source,
        }
    }
}
