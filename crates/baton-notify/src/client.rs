//! A minimal HTTP/1.1 client for the one request the router makes: `POST`
//! a JSON body and read the status. Alertmanager and webhooks need nothing
//! more, so this avoids an HTTP stack (as `baton_service::http` does on the
//! serving side). One connection per request (`Connection: close`): alert
//! rates are low, and a fresh connection never carries a half-read reply.

use std::{fmt, time::Duration};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

/// Where a request goes: `http://host[:port]/path?query`.
#[derive(Clone, PartialEq, Eq)]
pub struct Endpoint {
    host: String,
    port: u16,
    /// Path and query, starting with `/`.
    path: String,
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "http://{}{}", self.authority(), self.path)
    }
}

impl Endpoint {
    /// Parses an `http://` URL; says what is wrong otherwise.
    pub fn parse(url: &str) -> Result<Endpoint, String> {
        let url = url.trim();
        let rest = if let Some(rest) = url.strip_prefix("http://") {
            rest
        } else if url.starts_with("https://") {
            return Err(format!(
                "{url:?}: https is not supported yet; point Baton at a local TLS-terminating proxy (or an http listener)"
            ));
        } else {
            return Err(format!("{url:?} is not an http:// URL"));
        };
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) if rest.as_bytes()[i] == b'/' => (&rest[..i], rest[i..].to_string()),
            Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
            None => (rest, "/".to_string()),
        };
        if authority.contains('@') {
            return Err(format!(
                "{url:?}: credentials in the URL are not supported; use headers (e.g. Authorization)"
            ));
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, after) = v6
                .split_once(']')
                .ok_or_else(|| format!("{url:?}: unclosed [ in the host"))?;
            (format!("[{h}]"), after.strip_prefix(':'))
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), Some(p)),
                None => (authority.to_string(), None),
            }
        };
        if host.is_empty() || host == "[]" {
            return Err(format!("{url:?} has no host"));
        }
        if host
            .bytes()
            .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
        {
            return Err(format!("{url:?}: the host contains spaces"));
        }
        let port = match port {
            None => 80,
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| format!("{url:?}: bad port {p:?}"))?,
        };
        if path
            .bytes()
            .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
        {
            return Err(format!("{url:?}: the path contains spaces"));
        }
        Ok(Endpoint { host, port, path })
    }

    /// `host:port` (the Host header and the address to connect to).
    pub fn authority(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    pub fn path(&self) -> &str {
        &self.path
    }

    /// This endpoint with `segment` appended to its path.
    pub fn join(&self, segment: &str) -> Endpoint {
        let (path, query) = match self.path.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (self.path.as_str(), None),
        };
        let mut joined = format!("{}/{}", path.trim_end_matches('/'), segment);
        if let Some(q) = query {
            joined.push('?');
            joined.push_str(q);
        }
        Endpoint {
            path: joined,
            ..self.clone()
        }
    }
}

/// Why a request did not get a reply.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("cannot connect to {to}: {source}")]
    Connect { to: String, source: std::io::Error },
    #[error("{to}: {source}")]
    Io { to: String, source: std::io::Error },
    #[error("{to}: no reply within {timeout:?}")]
    Timeout { to: String, timeout: Duration },
    #[error("{to}: not an HTTP reply: {head:?}")]
    BadReply { to: String, head: String },
}

/// A reply: its status and the start of its body (for error messages).
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub body: String,
}

impl Reply {
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// A refusal that asking again will not change: 4xx other than request
    /// timeout (408), too early (425) and too many requests (429).
    pub fn is_refusal(&self) -> bool {
        (400..500).contains(&self.status) && !matches!(self.status, 408 | 425 | 429)
    }
}

/// Most of a reply body kept for messages.
const BODY_KEPT: usize = 2048;

/// `POST`s `body` as JSON to `to` with extra `headers`, within `timeout`.
pub async fn post_json(
    to: &Endpoint,
    headers: &[(String, String)],
    body: &[u8],
    timeout: Duration,
) -> Result<Reply, HttpError> {
    match tokio::time::timeout(timeout, post(to, headers, body)).await {
        Ok(r) => r,
        Err(_) => Err(HttpError::Timeout {
            to: to.to_string(),
            timeout,
        }),
    }
}

async fn post(
    to: &Endpoint,
    headers: &[(String, String)],
    body: &[u8],
) -> Result<Reply, HttpError> {
    let io = |source| HttpError::Io {
        to: to.to_string(),
        source,
    };
    let addr = to.authority();
    let connect_to = if to.host.starts_with('[') {
        addr.clone()
    } else {
        format!("{}:{}", to.host, to.port)
    };
    let mut stream = TcpStream::connect(connect_to)
        .await
        .map_err(|source| HttpError::Connect {
            to: to.to_string(),
            source,
        })?;
    let _ = stream.set_nodelay(true);
    let mut head = format!(
        "POST {} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: baton-notify/{}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
        to.path,
        env!("CARGO_PKG_VERSION"),
        body.len()
    );
    for (k, v) in headers {
        head.push_str(k);
        head.push_str(": ");
        head.push_str(v);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await.map_err(io)?;
    stream.write_all(body).await.map_err(io)?;
    stream.flush().await.map_err(io)?;
    // The status line and headers, then as much body as we keep.
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    let header_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > 64 * 1024 {
            return Err(HttpError::BadReply {
                to: to.to_string(),
                head: String::from_utf8_lossy(&buf[..200]).into_owned(),
            });
        }
        let n = stream.read(&mut chunk).await.map_err(io)?;
        if n == 0 {
            break buf.len();
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head_text = String::from_utf8_lossy(&buf[..header_end]).into_owned();
    let status = head_text
        .lines()
        .next()
        .filter(|l| l.starts_with("HTTP/1."))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| HttpError::BadReply {
            to: to.to_string(),
            head: head_text.chars().take(200).collect(),
        })?;
    let mut rest = buf[header_end..].to_vec();
    while rest.len() < BODY_KEPT {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => rest.extend_from_slice(&chunk[..n]),
        }
    }
    rest.truncate(BODY_KEPT);
    Ok(Reply {
        status,
        body: String::from_utf8_lossy(&rest).trim().to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        let e = Endpoint::parse("http://127.0.0.1:9093").expect("ok");
        assert_eq!((e.authority().as_str(), e.path()), ("127.0.0.1:9093", "/"));
        assert_eq!(e.join("api/v2/alerts").path(), "/api/v2/alerts");
        let e = Endpoint::parse("http://hooks/x/y?token=1").expect("ok");
        assert_eq!(
            (e.authority().as_str(), e.path()),
            ("hooks:80", "/x/y?token=1")
        );
        assert_eq!(e.join("z").path(), "/x/y/z?token=1");
        let e = Endpoint::parse("http://[::1]:8080/p").expect("ok");
        assert_eq!(e.authority(), "[::1]:8080");
        assert_eq!(Endpoint::parse("http://h?q=1").expect("ok").path(), "/?q=1");
        for bad in [
            "",
            "h:80",
            "ftp://h",
            "http://",
            "http://h:0",
            "http://h:99999",
            "http://u:p@h",
            "http://h/a b",
            "https://hooks.slack.com/x",
        ] {
            assert!(Endpoint::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn classifies_replies() {
        let r = |status| Reply {
            status,
            body: String::new(),
        };
        assert!(r(200).is_success() && r(204).is_success());
        assert!(r(400).is_refusal() && r(404).is_refusal());
        assert!(!r(429).is_refusal() && !r(408).is_refusal() && !r(503).is_refusal());
    }
}
