//! `baton mcp --http ADDR`: the MCP streamable HTTP transport (rmcp's
//! `StreamableHttpService`, a tower service) served by hyper at
//! `http://ADDR/mcp`, for hosts that take a URL instead of a command.
//!
//! One process, one agent identity, as on stdio: every HTTP client of the
//! process (an older host's sessions, a 2026-07-28 host's self-contained
//! requests) shares one [`Desk`], so a host that reconnects finds its
//! tasks and every exchange acts as the same agent. Heartbeats run while
//! the host is present (see [`crate::presence`]); when it is gone they
//! stop without releasing, exactly as when a stdio host exits, so the
//! stall detector raises `HEARTBEAT_MISSED` for a crashed HTTP host too.
//!
//! What guards the endpoint, in order: the listening address (loopback
//! unless the operator says otherwise), a bearer token when one is
//! configured (every request), and rmcp's `Host` and `Origin` checks
//! against DNS rebinding (a request naming a host that is not this server
//! is refused; a request with an `Origin` header is refused unless that
//! origin is allowed, and none is by default). No TLS: put a TLS proxy in
//! front for anything beyond one machine.

use std::{
    convert::Infallible,
    net::SocketAddr,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode, header};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt as _, Full, combinators::BoxBody};
use hyper::{body::Incoming, server::conn::http1, service::service_fn};
use hyper_util::{rt::TokioIo, server::graceful::GracefulShutdown};
use rmcp::transport::{
    StreamableHttpServerConfig, StreamableHttpService,
    streamable_http_server::session::local::LocalSessionManager,
};
use tokio::{net::TcpListener, sync::Notify, time::Instant};
use tokio_util::sync::CancellationToken;

use crate::{BatonMcp, Config, Desk, McpError, presence::Presence};

/// The path the MCP endpoint is served at.
pub const MCP_PATH: &str = "/mcp";
/// The session header of older (before 2026-07-28) hosts.
const SESSION_HEADER: &str = "mcp-session-id";
/// How long a graceful stop waits for open exchanges to finish.
const DRAIN: Duration = Duration::from_secs(5);

/// How to serve over HTTP.
#[derive(Debug, Clone)]
pub struct HttpOptions {
    /// Where to listen (port 0: a free port).
    pub listen: SocketAddr,
    /// Listening on a non-loopback address is refused without this.
    pub allow_remote: bool,
    /// When set, every request must carry `Authorization: Bearer <token>`.
    pub token: Option<String>,
    /// How long heartbeats go on after the host's last exchange ended
    /// while none is open.
    pub keep_alive: Duration,
    /// Origins allowed to call (`https://app.example:443`, `http://localhost:*`);
    /// requests with any other `Origin` header are refused.
    pub allowed_origins: Vec<String>,
    /// Host names (or `host:port`) requests may name besides the loopback
    /// names and the listening address.
    pub allowed_hosts: Vec<String>,
}

impl HttpOptions {
    pub fn new(listen: SocketAddr) -> HttpOptions {
        HttpOptions {
            listen,
            allow_remote: false,
            token: None,
            keep_alive: Duration::from_secs(60),
            allowed_origins: Vec::new(),
            allowed_hosts: Vec::new(),
        }
    }

    /// Refuses what would be unsafe by surprise; returns warnings to show
    /// the operator.
    pub fn check(&self) -> Result<Vec<String>, McpError> {
        let mut warnings = Vec::new();
        let ip = self.listen.ip();
        if !ip.is_loopback() {
            if !self.allow_remote {
                return Err(McpError::Config(format!(
                    "refusing to serve MCP on {}, which is not a loopback address: anyone who can reach it could act as this agent. Listen on 127.0.0.1, or pass --http-allow-remote (with --http-token-file, behind a TLS proxy)",
                    self.listen
                )));
            }
            if self.token.is_none() {
                warnings.push(format!(
                    "WARNING: serving MCP on {} without a token (--http-token-file): anyone who can reach this address acts as this agent",
                    self.listen
                ));
            }
        }
        if self.token.as_deref().is_some_and(str::is_empty) {
            return Err(McpError::Config("the HTTP token is empty".into()));
        }
        if self.keep_alive.is_zero() {
            return Err(McpError::Config(
                "the HTTP keep-alive must be above zero".into(),
            ));
        }
        Ok(warnings)
    }

    fn hosts(&self, bound: SocketAddr) -> Vec<String> {
        let mut hosts: Vec<String> = vec!["localhost".into(), "127.0.0.1".into(), "::1".into()];
        if !bound.ip().is_unspecified() && !bound.ip().is_loopback() {
            hosts.push(bound.ip().to_string());
        }
        hosts.extend(self.allowed_hosts.iter().cloned());
        hosts
    }
}

/// The server, bound and connected, not yet serving.
pub struct HttpServer {
    listener: TcpListener,
    addr: SocketAddr,
    desk: Arc<Desk>,
    front: Arc<Front>,
    cancel: CancellationToken,
}

impl std::fmt::Debug for HttpServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpServer")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

/// What every request goes through before and after rmcp.
struct Front {
    mcp: StreamableHttpService<BatonMcp, LocalSessionManager>,
    token: Option<Vec<u8>>,
    presence: Mutex<Presence>,
    /// Wakes the presence watcher when an exchange ends.
    ended: Notify,
}

/// Checks the options, connects as the agent and binds the address.
pub async fn bind(config: Config, options: HttpOptions) -> Result<HttpServer, McpError> {
    for warning in options.check()? {
        tracing::warn!("{warning}");
    }
    let listener = TcpListener::bind(options.listen)
        .await
        .map_err(|e| McpError::Start(format!("cannot listen on {}: {e}", options.listen)))?;
    let addr = listener
        .local_addr()
        .map_err(|e| McpError::Start(e.to_string()))?;
    let desk = crate::start(config).await?;
    let cancel = CancellationToken::new();
    // SSE comments often enough that a stream to a host that died fails a
    // write (and ends) well within the keep-alive.
    let ping = (options.keep_alive / 3).clamp(Duration::from_millis(200), Duration::from_secs(15));
    let mut mcp_config = StreamableHttpServerConfig::default()
        .with_allowed_hosts(options.hosts(addr))
        .with_allowed_origins(options.allowed_origins.clone())
        .enforce_origin_validation()
        .with_sse_keep_alive(Some(ping))
        .with_cancellation_token(cancel.clone());
    mcp_config.legacy_session_mode = true; // hosts before 2026-07-28 need sessions
    let handler_desk = desk.clone();
    let mcp = StreamableHttpService::new(
        move || Ok(BatonMcp::new(handler_desk.clone())),
        Arc::new(LocalSessionManager::default()),
        mcp_config,
    );
    let front = Arc::new(Front {
        mcp,
        token: options.token.map(String::into_bytes),
        presence: Mutex::new(Presence::new(options.keep_alive)),
        ended: Notify::new(),
    });
    Ok(HttpServer {
        listener,
        addr,
        desk,
        front,
        cancel,
    })
}

impl HttpServer {
    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The MCP endpoint's URL.
    pub fn url(&self) -> String {
        format!("http://{}{MCP_PATH}", self.addr)
    }

    /// Serves until `shutdown` completes; then stops accepting, ends the
    /// sessions and streams, waits a little for open exchanges, and stops
    /// heartbeating without releasing (as when a stdio host exits).
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), McpError> {
        let HttpServer {
            listener,
            addr,
            desk,
            front,
            cancel,
        } = self;
        tracing::info!(%addr, agent = %desk.me(), "serving MCP over HTTP");
        let watcher = tokio::spawn(watch_presence(front.clone(), desk.clone()));
        let graceful = GracefulShutdown::new();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, _peer)) => {
                        let front = front.clone();
                        let service = service_fn(move |req| exchange(front.clone(), req));
                        let conn = http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service);
                        let conn = graceful.watch(conn);
                        tokio::spawn(async move {
                            if let Err(e) = conn.await {
                                tracing::debug!(error = %e, "HTTP connection ended with an error");
                            }
                        });
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "accepting a connection failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
                () = &mut shutdown => break,
            }
        }
        tracing::info!("stopping: no new connections; ending MCP sessions and streams");
        drop(listener);
        cancel.cancel();
        if tokio::time::timeout(DRAIN, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!("some HTTP connections were still open after {DRAIN:?}");
        }
        watcher.abort();
        desk.detach_all().await;
        Ok(())
    }
}

/// Stops heartbeats (without releasing) each time the host is judged gone.
async fn watch_presence(front: Arc<Front>, desk: Arc<Desk>) {
    loop {
        // Registered before reading the deadline, so an exchange ending
        // in between still wakes us.
        let ended = front.ended.notified();
        let deadline = lock(&front.presence).deadline();
        match deadline {
            None => ended.await,
            Some(deadline) => {
                tokio::select! {
                    () = ended => continue,
                    () = tokio::time::sleep_until(deadline) => {}
                }
            }
        }
        let Some(absence) = lock(&front.presence).absent(Instant::now()) else {
            continue;
        };
        let stopped = desk
            .detach_held_if(|| lock(&front.presence).still_absent(absence))
            .await;
        if stopped > 0 {
            tracing::info!(
                tasks = stopped,
                "no HTTP exchange with the host within the keep-alive: heartbeats stop, the tasks stay owned"
            );
        }
    }
}

/// One HTTP request: the endpoint, the token, then rmcp; the host counts
/// as present until the answer's body ends.
async fn exchange(
    front: Arc<Front>,
    req: Request<Incoming>,
) -> Result<Response<Tracked>, Infallible> {
    if req.uri().path() != MCP_PATH {
        return Ok(plain(
            StatusCode::NOT_FOUND,
            format!("Not Found: the MCP endpoint is {MCP_PATH}"),
        ));
    }
    if let Some(token) = &front.token
        && !bearer_matches(req.headers(), token)
    {
        let mut response = plain(
            StatusCode::UNAUTHORIZED,
            "Unauthorized: this MCP server needs Authorization: Bearer <token> (the token of --http-token-file)".into(),
        );
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            http::HeaderValue::from_static("Bearer realm=\"baton-mcp\""),
        );
        return Ok(response);
    }
    let session = req
        .headers()
        .get(SESSION_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let delete = req.method() == Method::DELETE;
    lock(&front.presence).begin();
    let mut open = Open {
        front: front.clone(),
        session,
        answered: false,
        deleted: false,
    };
    let response = front.mcp.handle(req).await;
    open.answered = response.status().is_success();
    if open.answered {
        if open.session.is_none()
            && let Some(id) = response
                .headers()
                .get(SESSION_HEADER)
                .and_then(|v| v.to_str().ok())
        {
            lock(&front.presence).session_opened(id);
        }
        open.deleted = delete;
    }
    let (parts, body) = response.into_parts();
    Ok(Response::from_parts(
        parts,
        Tracked {
            body,
            _open: Some(open),
        },
    ))
}

/// An exchange in progress; ends when dropped (with its answer's body, or
/// with the request when the client went away first).
struct Open {
    front: Arc<Front>,
    session: Option<String>,
    answered: bool,
    deleted: bool,
}

impl Drop for Open {
    fn drop(&mut self) {
        let now = Instant::now();
        {
            let mut presence = lock(&self.front.presence);
            presence.end(now, self.answered, self.session.as_deref());
            if self.deleted
                && let Some(id) = &self.session
            {
                presence.session_deleted(now, id);
            }
        }
        self.front.ended.notify_one();
    }
}

/// An answer's body that keeps its exchange open while it lasts (an SSE
/// stream lasts as long as the host listens).
struct Tracked {
    body: BoxBody<Bytes, Infallible>,
    _open: Option<Open>,
}

impl Body for Tracked {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

fn plain(status: StatusCode, text: String) -> Response<Tracked> {
    let mut response = Response::new(Tracked {
        body: Full::new(Bytes::from(text)).boxed(),
        _open: None,
    });
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// Whether the request carries `Authorization: Bearer <token>`, compared
/// in constant time.
fn bearer_matches(headers: &HeaderMap, token: &[u8]) -> bool {
    headers
        .get_all(header::AUTHORIZATION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| {
            let (scheme, credentials) = v.trim().split_once(' ')?;
            scheme
                .eq_ignore_ascii_case("bearer")
                .then(|| credentials.trim())
        })
        .any(|given| constant_time_eq(given.as_bytes(), token))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(header::AUTHORIZATION, v.parse().expect("header"));
        }
        h
    }

    #[test]
    fn the_bearer_token_must_match_exactly() {
        let token = b"s3cret-token";
        assert!(bearer_matches(&headers(&["Bearer s3cret-token"]), token));
        assert!(bearer_matches(&headers(&["bearer  s3cret-token "]), token));
        assert!(!bearer_matches(&headers(&[]), token));
        assert!(!bearer_matches(&headers(&["Bearer s3cret-toke"]), token));
        assert!(!bearer_matches(&headers(&["Bearer s3cret-token2"]), token));
        assert!(!bearer_matches(&headers(&["Basic s3cret-token"]), token));
        assert!(!bearer_matches(&headers(&["s3cret-token"]), token));
    }

    #[test]
    fn non_loopback_addresses_are_refused_unless_allowed() {
        let mut options = HttpOptions::new("0.0.0.0:7000".parse().expect("addr"));
        let refused = options.check().expect_err("refused");
        assert!(
            refused.to_string().contains("--http-allow-remote"),
            "{refused}"
        );
        options.allow_remote = true;
        let warnings = options.check().expect("allowed");
        assert!(warnings[0].contains("without a token"), "{warnings:?}");
        options.token = Some("t".into());
        assert!(options.check().expect("allowed").is_empty());
        let local = HttpOptions::new("127.0.0.1:0".parse().expect("addr"));
        assert!(local.check().expect("loopback").is_empty());
        let v6 = HttpOptions::new("[::1]:0".parse().expect("addr"));
        assert!(v6.check().expect("loopback").is_empty());
    }

    #[test]
    fn the_listening_address_is_an_allowed_host() {
        let options = HttpOptions::new("0.0.0.0:7000".parse().expect("addr"));
        let hosts = options.hosts("192.0.2.7:7000".parse().expect("addr"));
        assert!(hosts.contains(&"192.0.2.7".to_string()));
        assert!(hosts.contains(&"localhost".to_string()));
        let any = options.hosts("0.0.0.0:7000".parse().expect("addr"));
        assert!(!any.contains(&"0.0.0.0".to_string()));
    }
}
