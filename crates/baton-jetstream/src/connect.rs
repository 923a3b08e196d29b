//! Connecting to NATS with the options every Baton process accepts, and
//! errors that say what to do.

use std::{path::PathBuf, time::Duration};

use async_nats::{Client, ConnectErrorKind, ConnectOptions, Event, ServerError};
use tokio::sync::broadcast;

use crate::auth::IdentityFile;

/// How to reach and authenticate to NATS.
#[derive(Debug, Clone)]
pub struct NatsOptions {
    /// Server URL(s), comma-separated (`nats://127.0.0.1:4222`).
    pub servers: String,
    /// A `.creds` file (JWT + nkey seed).
    pub creds_file: Option<PathBuf>,
    /// A file holding an nkey seed (`SU...`), such as an identity file
    /// from `baton auth`: its `# inbox:` line sets the inbox prefix when
    /// [`inbox_prefix`](Self::inbox_prefix) is not set.
    pub nkey_seed_file: Option<PathBuf>,
    /// User and password.
    pub user: Option<(String, String)>,
    pub token: Option<String>,
    /// Require TLS.
    pub require_tls: bool,
    /// CA certificate(s) to trust.
    pub tls_ca: Option<PathBuf>,
    /// Client certificate and key for mutual TLS.
    pub tls_client: Option<(PathBuf, PathBuf)>,
    /// Inbox prefix for replies; needed when permissions restrict
    /// subscriptions to e.g. `_INBOX_<agent>.>`.
    pub inbox_prefix: Option<String>,
    /// Connection name shown in server monitoring.
    pub name: Option<String>,
    pub connect_timeout: Duration,
    /// JetStream API request timeout.
    pub request_timeout: Duration,
    /// How often to ping the server. A connection whose server stops
    /// answering (a node cut off by a partition: no reset, just silence) is
    /// given up after three unanswered pings, and the client moves to
    /// another node; with async-nats' default of 60 s that took minutes.
    pub ping_interval: Duration,
}

impl NatsOptions {
    /// Options for `servers` with defaults for everything else.
    pub fn new(servers: impl Into<String>) -> NatsOptions {
        NatsOptions {
            servers: servers.into(),
            creds_file: None,
            nkey_seed_file: None,
            user: None,
            token: None,
            require_tls: false,
            tls_ca: None,
            tls_client: None,
            inbox_prefix: None,
            name: None,
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(5),
            ping_interval: Duration::from_secs(5),
        }
    }

    /// The server URLs as a list.
    pub fn server_list(&self) -> Vec<String> {
        self.servers
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect()
    }

    /// Builds async-nats connect options.
    pub async fn connect_options(&self) -> Result<ConnectOptions, ConnectError> {
        self.connect_options_with(&Denials::new()).await
    }

    /// Connect options that report the server's permission violations to
    /// `denials`.
    pub async fn connect_options_with(
        &self,
        denials: &Denials,
    ) -> Result<ConnectOptions, ConnectError> {
        let mut file_inbox = None;
        let mut opts = match (&self.creds_file, &self.nkey_seed_file) {
            (Some(creds), _) => ConnectOptions::with_credentials_file(creds.clone())
                .await
                .map_err(|e| {
                    ConnectError::Config(format!("credentials file {}: {e}", creds.display()))
                })?,
            (None, Some(seed_file)) => {
                let text = tokio::fs::read_to_string(seed_file).await.map_err(|e| {
                    ConnectError::Config(format!("nkey seed file {}: {e}", seed_file.display()))
                })?;
                let identity = IdentityFile::parse(&text).map_err(|e| {
                    ConnectError::Config(format!("nkey seed file {}: {e}", seed_file.display()))
                })?;
                file_inbox = identity.inbox;
                ConnectOptions::with_nkey(identity.seed)
            }
            (None, None) => ConnectOptions::new(),
        };
        if let Some((user, password)) = &self.user {
            opts = opts.user_and_password(user.clone(), password.clone());
        }
        if let Some(token) = &self.token {
            opts = opts.token(token.clone());
        }
        if self.require_tls {
            opts = opts.require_tls(true);
        }
        if let Some(ca) = &self.tls_ca {
            opts = opts.add_root_certificates(ca.clone());
        }
        if let Some((cert, key)) = &self.tls_client {
            opts = opts.add_client_certificate(cert.clone(), key.clone());
        }
        if let Some(prefix) = self.inbox_prefix.clone().or(file_inbox) {
            opts = opts.custom_inbox_prefix(prefix);
        }
        if let Some(name) = &self.name {
            opts = opts.name(name.clone());
        }
        let denials = denials.clone();
        Ok(opts
            .event_callback(move |event| {
                denials.observe(&event);
                async {}
            })
            .connection_timeout(self.connect_timeout)
            .request_timeout(Some(self.request_timeout))
            .ping_interval(self.ping_interval))
    }

    /// Connects, or explains why not.
    pub async fn connect(&self) -> Result<Client, ConnectError> {
        Ok(self.connect_watched().await?.0)
    }

    /// Connects, and reports the server's permission violations on this
    /// connection to the returned [`Denials`] (a publish outside the
    /// permissions is answered only by such a report, never by an ack).
    pub async fn connect_watched(&self) -> Result<(Client, Denials), ConnectError> {
        let servers = self.server_list();
        if servers.is_empty() {
            return Err(ConnectError::Config("no NATS server URL given".into()));
        }
        let denials = Denials::new();
        let opts = self.connect_options_with(&denials).await?;
        let client = opts
            .connect(servers.clone())
            .await
            .map_err(|e| explain(&self.servers, &e))?;
        Ok((client, denials))
    }
}

/// What the server refused on a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    /// A publish to this subject (the server dropped the message).
    Publish(String),
    /// A subscription to this subject.
    Subscribe(String),
}

impl Denied {
    /// Reads a server error such as `Permissions Violation for Publish to
    /// "baton.evt.t1.bob"`.
    pub fn parse(error: &str) -> Option<Denied> {
        let lower = error.to_ascii_lowercase();
        let rest_at = |marker: &str| lower.find(marker).map(|i| i + marker.len());
        let (publish, at) = if let Some(at) = rest_at("permissions violation for publish to ") {
            (true, at)
        } else if let Some(at) = rest_at("permissions violation for subscription to ") {
            (false, at)
        } else {
            return None;
        };
        let subject = error[at..]
            .trim()
            .trim_matches(|c| c == '"' || c == '\'')
            .to_string();
        Some(if publish {
            Denied::Publish(subject)
        } else {
            Denied::Subscribe(subject)
        })
    }
}

/// Permission violations the server reported on one connection, for
/// whoever is waiting on an operation they explain (see
/// [`publish_durable_watched`](crate::publish::publish_durable_watched)).
#[derive(Debug, Clone)]
pub struct Denials {
    tx: broadcast::Sender<Denied>,
}

impl Default for Denials {
    fn default() -> Self {
        Denials::new()
    }
}

impl Denials {
    pub fn new() -> Denials {
        Denials {
            tx: broadcast::channel(256).0,
        }
    }

    /// Reports from now on.
    pub fn watch(&self) -> broadcast::Receiver<Denied> {
        self.tx.subscribe()
    }

    fn observe(&self, event: &Event) {
        match event {
            Event::ServerError(ServerError::Other(message)) => match Denied::parse(message) {
                Some(denied) => {
                    tracing::warn!(error = %message, "the NATS server refused an operation");
                    let _ = self.tx.send(denied);
                }
                None => tracing::warn!(error = %message, "NATS server error"),
            },
            Event::ServerError(e) => tracing::warn!(error = %e, "NATS server error"),
            other => tracing::debug!(event = %other, "NATS connection event"),
        }
    }
}

/// Why a connection could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// A bad option (unreadable credentials, ...).
    #[error("{0}")]
    Config(String),
    /// Nothing answered at the URL.
    #[error(
        "cannot reach NATS at {url}: {reason}. Is a server running there? Start a local one with \
         `baton dev`, or pass --nats URL (env BATON_NATS_URL)."
    )]
    Unreachable { url: String, reason: String },
    /// The server refused the credentials.
    #[error("NATS at {url} refused the credentials: {reason}. Check --creds / --nkey / --user.")]
    Auth { url: String, reason: String },
    /// TLS failed.
    #[error("TLS to NATS at {url} failed: {reason}. Check --tls-ca / --tls-cert / --tls-key.")]
    Tls { url: String, reason: String },
}

fn explain(url: &str, e: &async_nats::ConnectError) -> ConnectError {
    let url = url.to_string();
    let reason = e.to_string();
    match e.kind() {
        ConnectErrorKind::Authentication | ConnectErrorKind::AuthorizationViolation => {
            ConnectError::Auth { url, reason }
        }
        ConnectErrorKind::Tls => ConnectError::Tls { url, reason },
        ConnectErrorKind::ServerParse => {
            ConnectError::Config(format!("invalid NATS URL {url:?}: {reason}"))
        }
        _ => ConnectError::Unreachable { url, reason },
    }
}
