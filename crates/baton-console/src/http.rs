//! A small HTTP/1.1 server: one request per connection, bodies with a
//! `Content-Length`, and server-sent event streams. The console serves a
//! handful of routes to a browser on the operator's machine; like
//! `baton_service::http` this needs no web framework.
//!
//! Bad requests get a 4xx with a reason; nothing a client sends can stop
//! the server.

use std::{net::SocketAddr, time::Duration};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

/// Largest request head (request line and headers).
pub const MAX_HEAD: usize = 16 * 1024;
/// Largest request body.
pub const MAX_BODY: usize = 64 * 1024;
/// How long a client may take to send its request.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// A parsed request.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    /// The path, percent-decoded, without the query.
    pub path: String,
    /// Query parameters, percent-decoded, in order.
    pub query: Vec<(String, String)>,
    /// Header names in lower case.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    /// The first value of query parameter `name`, if non-empty.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }

    /// The first value of header `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// What a handler answers.
#[derive(Debug)]
pub enum Reply {
    /// A whole response.
    Full {
        status: u16,
        content_type: &'static str,
        body: Vec<u8>,
        /// Extra headers (name, value).
        headers: Vec<(&'static str, String)>,
    },
    /// A server-sent event stream; the handler writes to the socket.
    Stream(Box<dyn StreamBody>),
}

/// The writer of a streamed response (after the server sent its head).
pub trait StreamBody: Send + std::fmt::Debug {
    fn run(
        self: Box<Self>,
        socket: TcpStream,
    ) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;
}

impl Reply {
    pub fn json(status: u16, value: &impl serde::Serialize) -> Reply {
        match serde_json::to_vec(value) {
            Ok(body) => Reply::Full {
                status,
                content_type: "application/json",
                body,
                headers: Vec::new(),
            },
            Err(e) => Reply::error(500, &format!("cannot encode the reply: {e}")),
        }
    }

    /// `{"error": why}` with `status`.
    pub fn error(status: u16, why: &str) -> Reply {
        Reply::Full {
            status,
            content_type: "application/json",
            body: serde_json::json!({ "error": why }).to_string().into_bytes(),
            headers: Vec::new(),
        }
    }

    pub fn asset(content_type: &'static str, body: &'static [u8]) -> Reply {
        Reply::Full {
            status: 200,
            content_type,
            body: body.to_vec(),
            headers: vec![("Cache-Control", "no-cache".into())],
        }
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        413 => "Payload Too Large",
        415 => "Unsupported Media Type",
        431 => "Request Header Fields Too Large",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Internal Server Error",
    }
}

/// Percent-decodes `s` (`+` as space in queries).
pub fn percent_decode(s: &str, plus_is_space: bool) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            b'+' if plus_is_space => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Why a request could not be read.
#[derive(Debug)]
enum BadRequest {
    Closed,
    Status(u16, &'static str),
}

async fn read_request(stream: &mut TcpStream) -> Result<Request, BadRequest> {
    let mut buf = Vec::with_capacity(2048);
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        if buf.len() > MAX_HEAD {
            return Err(BadRequest::Status(431, "request head too large"));
        }
        let n = stream
            .read(&mut chunk)
            .await
            .map_err(|_| BadRequest::Closed)?;
        if n == 0 {
            return Err(BadRequest::Closed);
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = std::str::from_utf8(&buf[..head_end])
        .map_err(|_| BadRequest::Status(400, "request head is not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let mut first = lines.next().unwrap_or_default().split(' ');
    let (method, target) = match (first.next(), first.next(), first.next()) {
        (Some(m), Some(t), Some(v)) if v.starts_with("HTTP/1.") && !m.is_empty() => (m, t),
        _ => return Err(BadRequest::Status(400, "malformed request line")),
    };
    let mut headers = Vec::new();
    for line in lines {
        let Some((k, v)) = line.split_once(':') else {
            return Err(BadRequest::Status(400, "malformed header line"));
        };
        headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
    }
    let length = match headers.iter().find(|(k, _)| k == "content-length") {
        Some((_, v)) => v
            .parse::<usize>()
            .map_err(|_| BadRequest::Status(400, "bad Content-Length"))?,
        None => 0,
    };
    if headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && !v.eq_ignore_ascii_case("identity"))
    {
        return Err(BadRequest::Status(
            400,
            "chunked bodies are not accepted; send a Content-Length",
        ));
    }
    if length > MAX_BODY {
        return Err(BadRequest::Status(413, "request body too large"));
    }
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < length {
        let n = stream
            .read(&mut chunk)
            .await
            .map_err(|_| BadRequest::Closed)?;
        if n == 0 {
            return Err(BadRequest::Closed);
        }
        body.extend_from_slice(&chunk[..n]);
    }
    body.truncate(length);
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let query = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k, true), percent_decode(v, true))
        })
        .collect();
    Ok(Request {
        method: method.to_string(),
        path: percent_decode(path, false),
        query,
        headers,
        body,
    })
}

async fn write_reply(mut stream: TcpStream, reply: Reply) {
    match reply {
        Reply::Full {
            status,
            content_type,
            body,
            headers,
        } => {
            let mut head = format!(
                "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\nX-Content-Type-Options: nosniff\r\n",
                reason(status),
                body.len()
            );
            for (k, v) in headers {
                head.push_str(&format!("{k}: {v}\r\n"));
            }
            head.push_str("\r\n");
            if stream.write_all(head.as_bytes()).await.is_ok() {
                let _ = stream.write_all(&body).await;
            }
            let _ = stream.shutdown().await;
        }
        Reply::Stream(body) => {
            let head = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\nConnection: close\r\nX-Accel-Buffering: no\r\n\r\n";
            if stream.write_all(head.as_bytes()).await.is_ok() {
                body.run(stream).await;
            }
        }
    }
}

/// Binds `addr` and serves `handle` until `shutdown`; returns the bound
/// address (port 0 picks a free one) and the server task.
pub async fn serve<H, F>(
    addr: SocketAddr,
    handle: H,
    mut shutdown: baton_service::shutdown::Shutdown,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)>
where
    H: Fn(Request) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Reply> + Send + 'static,
{
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let task = tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = shutdown.wait() => break,
                accepted = listener.accept() => {
                    let Ok((mut stream, _)) = accepted else { continue };
                    let handle = handle.clone();
                    let mut stop = shutdown.clone();
                    tokio::spawn(async move {
                        let request = tokio::time::timeout(READ_TIMEOUT, read_request(&mut stream)).await;
                        let reply = match request {
                            Ok(Ok(r)) => handle(r).await,
                            Ok(Err(BadRequest::Status(status, why))) => Reply::error(status, why),
                            Ok(Err(BadRequest::Closed)) | Err(_) => return,
                        };
                        tokio::select! {
                            _ = stop.wait() => {}
                            _ = write_reply(stream, reply) => {}
                        }
                    });
                }
            }
        }
    });
    Ok((bound, task))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%20b+c", true), "a b c");
        assert_eq!(percent_decode("a+b", false), "a+b");
        assert_eq!(percent_decode("100%", true), "100%");
        assert_eq!(percent_decode("%zz%4", true), "%zz%4");
        assert_eq!(percent_decode("%e2%86%92", true), "→");
    }
}
