//! Baton's web console: the pipeline, the alerts, each task's history and
//! Baton's own health, in a browser, live — served by the `baton` binary
//! itself (`baton console`, and `baton dev`), with its page, style sheet and
//! script embedded (plain HTML, CSS and JavaScript: no build step, no
//! framework, nothing fetched from the network).
//!
//! It reads only through NATS, with what a viewer may read: KV
//! `baton-tasks` (watched), `BATON_ALERTS`, KV `baton-silences`, KV
//! `baton-services`, `BATON_CONTEXT`, stream and consumer info, and the
//! orchestrator's query API. The one thing it writes is silences, through
//! the same code as `baton silence` (`baton_jetstream::silences`), and only
//! when started with an operator's connection.
//!
//! The server keeps the state ([`model`]); the page loads a workflow's
//! board (the first cards of each column) and then gets only deltas over
//! server-sent events, so 10,000 live tasks cost the page what it shows.
//!
//! # Layout
//!
//! - [`model`]: what the console knows and the views of it (pure).
//! - [`feed`]: NATS → model, and the flusher that sends the deltas.
//! - [`api`]: the routes, the JSON API, the live stream, silences.
//! - [`http`]: a small HTTP/1.1 server with server-sent events.

pub mod api;
pub mod feed;
pub mod http;
pub mod model;

use std::{net::SocketAddr, sync::Arc};

use async_nats::jetstream;
use baton_core::{Time, subjects};
use baton_jetstream::{ConnectError, NatsOptions};
use baton_service::shutdown::Shutdown;
use tokio::sync::broadcast;

/// The address `baton console` listens on unless told otherwise.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9470";

/// Which connection, if any, may make and end silences.
// One per console: variant sizes do not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum OperatorAccess {
    /// Read-only: the silence buttons are disabled, with this reason.
    None,
    /// The reading connection may also write silences (a server without
    /// identities, e.g. `baton dev`). Silences are made as `name`.
    SameConnection { name: String },
    /// A second connection with an operator identity writes silences.
    Identity { nats: NatsOptions, name: String },
}

/// How to run the console.
#[derive(Debug, Clone)]
pub struct Config {
    /// The reading connection (a viewer identity is enough).
    pub nats: NatsOptions,
    pub operator: OperatorAccess,
    /// Where to serve (port 0 picks a free one).
    pub listen: SocketAddr,
}

impl Config {
    pub fn new(nats: NatsOptions) -> Config {
        Config {
            nats,
            operator: OperatorAccess::None,
            listen: DEFAULT_LISTEN
                .parse()
                .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 9470))),
        }
    }
}

/// Why the console could not start.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error("operator connection: {0}")]
    OperatorConnect(ConnectError),
    #[error(
        "no Baton streams on this server (stream {stream} not found): start the services with `baton dev` or `baton orchestrator`"
    )]
    NoBaton { stream: &'static str },
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// A running console.
#[derive(Debug)]
pub struct Running {
    /// Where it serves (`http://{addr}/`).
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    /// The page's address.
    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    /// Completes when the server stopped (after shutdown).
    pub async fn wait(self) {
        let _ = self.task.await;
    }
}

/// Wall-clock now, for ages shown to people.
pub(crate) fn now() -> Time {
    baton_service::liveness::wall_now()
}

/// Connects, starts the feeds and serves until `shutdown`.
pub async fn start(config: Config, shutdown: Shutdown) -> Result<Running, ConsoleError> {
    let client = config.nats.connect().await?;
    let js = jetstream::new(client.clone());
    js.get_stream(subjects::EVENTS_STREAM)
        .await
        .map_err(|_| ConsoleError::NoBaton {
            stream: subjects::EVENTS_STREAM,
        })?;
    let operator = match config.operator {
        OperatorAccess::None => api::Operator::Disabled {
            why: "This console is read-only: start it with an operator identity (baton console --operator-nkey FILE) to silence alerts.".into(),
        },
        OperatorAccess::SameConnection { name } => api::Operator::Enabled {
            js: js.clone(),
            name,
        },
        OperatorAccess::Identity { nats, name } => {
            let op = nats.connect().await.map_err(ConsoleError::OperatorConnect)?;
            api::Operator::Enabled {
                js: jetstream::new(op),
                name,
            }
        }
    };
    let model = feed::Shared::default();
    // A slow page that misses this many batches reloads its data instead.
    let (deltas, _) = broadcast::channel(256);
    feed::start(js.clone(), model.clone(), deltas.clone(), shutdown.clone());
    let app = api::App {
        model,
        client,
        js,
        operator: Arc::new(operator),
        deltas,
        shutdown: shutdown.clone(),
        loopback: config.listen.ip().is_loopback(),
    };
    let (addr, task) = http::serve(
        config.listen,
        move |req| api::handle(app.clone(), req),
        shutdown,
    )
    .await
    .map_err(|source| ConsoleError::Listen {
        addr: config.listen,
        source,
    })?;
    tracing::info!(%addr, "console serving");
    Ok(Running { addr, task })
}
