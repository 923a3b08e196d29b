//! Alert routing: `baton notify` gets Baton's fault reports to where people
//! are paged — every configured Alertmanager and any number of webhooks —
//! and tells a dead-man's switch that Baton itself is alive.
//!
//! # Why a service of its own (not part of the stall detector)
//!
//! - **The watchdog must not depend on what it watches.** Its alert says
//!   "Baton is healthy"; if the detector sent it, a detector that hangs in
//!   a way that keeps its process up would keep vouching for itself. The
//!   router judges the detector and the orchestrator from their liveness
//!   records like any outside observer, and its own death stops the
//!   watchdog too.
//! - **Slow, failing HTTP targets must not hold up detection.** The
//!   detector acknowledges an event only when its alerts are stored; a
//!   webhook that is down for an hour would stall it if delivery were on
//!   that path. Here every target has its own queue (its own durable
//!   consumer) and only that target waits.
//! - **Least privilege.** The router needs outbound HTTP and read access to
//!   `BATON_ALERTS` and KV `baton-services`; the detector needs neither
//!   outbound HTTP nor credentials for pagers.
//! - It runs, restarts and scales independently; `baton dev` and Compose
//!   can leave it out when nothing is configured.
//!
//! # How it delivers
//!
//! - **Alertmanager** ([`alertmanager`]): the router keeps the set of
//!   alerts Alertmanager must keep hearing about (a [`alertmanager::Book`]),
//!   rebuilt at start from the latest alert per subject in `BATON_ALERTS`
//!   and then followed live. Every Alertmanager gets every change at once
//!   and the whole set every `resend_interval`; each is sent to on its own
//!   (never load-balanced). Sends are idempotent in Alertmanager (labels
//!   identify an alert), so no delivery mark is needed: a restart re-sends
//!   the same labels and nothing is doubled.
//! - **Webhooks** ([`webhook`]): each has a durable consumer on
//!   `BATON_ALERTS` (`baton-notify-<name>`), and that consumer's ack floor
//!   is its "delivered up to" mark. Alerts go out one at a time in stream
//!   order; a notification is acknowledged (and the server's confirmation
//!   awaited) only once the webhook answered 2xx, or once the documented
//!   give-up rule drops it ([`webhook::judge`]). While a webhook is down
//!   the router retries with backoff, its queue is the stream (at most
//!   `max_batch` buffered here), and it catches up in order when the
//!   webhook is back. A graceful stop finishes the request in flight and
//!   acknowledges it, so a restart delivers nothing twice; after a crash
//!   (kill -9) at most the one notification in flight per webhook can be
//!   delivered again, with the same `delivery_id` for receivers to drop.
//! - **The watchdog** ([`watchdog`]): every `interval`, if every required
//!   service (default: orchestrator and stall detector) has a fresh
//!   liveness record, the `BatonWatchdog` alert (task `_system`) is sent to
//!   every Alertmanager with `endsAt` three intervals ahead; otherwise it is
//!   not, and it lapses.
//!
//! Targets are `http://` or `https://` ([`client`]: one small HTTP/1.1
//! client, rustls for TLS). Measured here (2 shared cores, debug build): a
//! burst of 2000 alerts reached a local webhook at ~350/s (one request and
//! one confirmed acknowledgement each, in order) and was all listed by
//! Alertmanager 0.2 s after the last webhook delivery.
//!
//! Run one router per Baton (like the other services today): two would
//! share each webhook's consumer and split its deliveries.

pub mod alertmanager;
pub mod client;
pub mod config;
pub mod metrics;
pub mod watchdog;
pub mod webhook;

mod run;

use std::{net::SocketAddr, time::Duration};

use baton_jetstream::{NatsOptions, Topology};

pub use config::{ConfigError, Format, Routes};
pub use run::{Running, start};

/// How the router runs.
#[derive(Debug, Clone)]
pub struct Config {
    pub nats: NatsOptions,
    pub topology: Topology,
    pub routes: Routes,
    pub http_addr: Option<SocketAddr>,
    pub instance: String,
    pub liveness_interval: Duration,
    /// Most notifications buffered per webhook.
    pub max_batch: usize,
}

impl Config {
    pub fn new(nats: NatsOptions, routes: Routes) -> Config {
        Config {
            nats,
            topology: Topology::default(),
            routes,
            http_addr: None,
            instance: format!("local-{}", std::process::id()),
            liveness_interval: Duration::from_secs(2),
            max_batch: 64,
        }
    }
}

/// Why the router stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error(transparent)]
    Connect(#[from] baton_jetstream::ConnectError),
    #[error(transparent)]
    Topology(#[from] baton_jetstream::TopologyError),
    #[error(transparent)]
    Read(#[from] baton_jetstream::read::ReadError),
    #[error(transparent)]
    Consumer(#[from] baton_service::consumer::ConsumerError),
    #[error("{0}")]
    Setup(String),
}

/// The service name in KV `baton-services`.
pub const SERVICE: &str = "notify";
