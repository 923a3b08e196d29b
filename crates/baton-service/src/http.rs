//! A minimal HTTP endpoint for `/metrics` (Prometheus text format) and
//! `/healthz`. Scrapers and probes need nothing more, so this avoids a web
//! framework.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use prometheus_client::{encoding::text::encode, registry::Registry};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

use crate::shutdown::Shutdown;

/// What `/healthz` reports: healthy, or every reason why not. Each concern
/// (storing effects, a watch, the decision record) sets and clears its own
/// condition, so one recovering never hides another.
#[derive(Debug, Clone, Default)]
pub struct Health {
    problems: Arc<Mutex<std::collections::BTreeMap<&'static str, String>>>,
}

impl Health {
    /// Marks the service unhealthy with a reason (`None` = healthy) for the
    /// general concern of storing its effects.
    pub fn set_problem(&self, problem: Option<String>) {
        self.set_condition("effects", problem);
    }

    /// Sets (`Some`) or clears (`None`) the problem of one concern.
    pub fn set_condition(&self, concern: &'static str, problem: Option<String>) {
        if let Ok(mut p) = self.problems.lock() {
            match problem {
                Some(why) => p.insert(concern, why),
                None => p.remove(concern),
            };
        }
    }

    /// The current problems, if any, in one line.
    pub fn problem(&self) -> Option<String> {
        let p = self.problems.lock().ok()?;
        (!p.is_empty()).then(|| p.values().cloned().collect::<Vec<_>>().join("; "))
    }
}

/// Binds `addr` and serves until shutdown. Returns the bound address (port 0
/// picks a free one).
pub async fn serve(
    addr: SocketAddr,
    registry: Arc<Registry>,
    health: Health,
    mut shutdown: Shutdown,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let task = tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = shutdown.wait() => break,
                accepted = listener.accept() => {
                    let Ok((stream, _)) = accepted else { continue };
                    let registry = registry.clone();
                    let health = health.clone();
                    tokio::spawn(async move {
                        let _ = tokio::time::timeout(
                            Duration::from_secs(5),
                            respond(stream, &registry, &health),
                        )
                        .await;
                    });
                }
            }
        }
    });
    Ok((bound, task))
}

async fn respond(
    mut stream: TcpStream,
    registry: &Registry,
    health: &Health,
) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 8192 {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let head = String::from_utf8_lossy(&buf);
    let mut parts = head.lines().next().unwrap_or_default().split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = path.split('?').next().unwrap_or("");
    let (status, content_type, body) = match (method, path) {
        ("GET", "/metrics") => {
            let mut body = String::new();
            match encode(&mut body, registry) {
                Ok(()) => (
                    "200 OK",
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    body,
                ),
                Err(e) => ("500 Internal Server Error", "text/plain", e.to_string()),
            }
        }
        ("GET", "/healthz") => match health.problem() {
            None => ("200 OK", "text/plain", "ok\n".to_string()),
            Some(p) => ("503 Service Unavailable", "text/plain", format!("{p}\n")),
        },
        ("GET", _) => (
            "404 Not Found",
            "text/plain",
            "try /metrics or /healthz\n".to_string(),
        ),
        _ => (
            "405 Method Not Allowed",
            "text/plain",
            "GET only\n".to_string(),
        ),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}
