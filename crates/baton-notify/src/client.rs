//! A minimal HTTP/1.1 client for the one request the router makes: `POST`
//! a JSON body and read the status. Alertmanager and webhooks need nothing
//! more, so this avoids an HTTP stack (as `baton_service::http` does on the
//! serving side). One connection per request (`Connection: close`): alert
//! rates are low, and a fresh connection never carries a half-read reply.
//! `https://` goes through rustls (the TLS stack async-nats uses), trusting
//! the system's roots plus an optional CA file.

use std::{fmt, path::Path, sync::Arc, time::Duration};

use rustls_pki_types::{CertificateDer, ServerName, pem::PemObject};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::TcpStream,
};
use tokio_rustls::{TlsConnector, rustls};

/// Where a request goes: `http[s]://host[:port]/path?query`.
#[derive(Clone, PartialEq, Eq)]
pub struct Endpoint {
    tls: bool,
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
        let scheme = if self.tls { "https" } else { "http" };
        write!(f, "{scheme}://{}{}", self.authority(), self.path)
    }
}

impl Endpoint {
    /// Parses an `http://` or `https://` URL; says what is wrong otherwise.
    pub fn parse(url: &str) -> Result<Endpoint, String> {
        let url = url.trim();
        let (tls, rest) = if let Some(rest) = url.strip_prefix("http://") {
            (false, rest)
        } else if let Some(rest) = url.strip_prefix("https://") {
            (true, rest)
        } else {
            return Err(format!("{url:?} is not an http:// or https:// URL"));
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
            None if tls => 443,
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
        if tls {
            ServerName::try_from(host.trim_start_matches('[').trim_end_matches(']'))
                .map_err(|e| format!("{url:?}: {e}"))?;
        }
        Ok(Endpoint {
            tls,
            host,
            port,
            path,
        })
    }

    /// Whether requests go over TLS.
    pub fn is_tls(&self) -> bool {
        self.tls
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

/// Why the TLS set-up failed.
#[derive(Debug, thiserror::Error)]
#[error("TLS: {0}")]
pub struct TlsError(String);

/// Makes requests: holds the TLS configuration, built once.
#[derive(Clone)]
pub struct Client {
    tls: TlsConnector,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client").finish_non_exhaustive()
    }
}

impl Client {
    /// A client trusting the system's root certificates and, when given,
    /// the CA certificates (PEM) in `ca_file`.
    pub fn new(ca_file: Option<&Path>) -> Result<Client, TlsError> {
        let mut roots = rustls::RootCertStore::empty();
        let native = rustls_native_certs::load_native_certs();
        for cert in native.certs {
            // A system root rustls cannot use is skipped, as browsers do.
            let _ = roots.add(cert);
        }
        if let Some(path) = ca_file {
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
                .map_err(|e| TlsError(format!("cannot read CA file {}: {e}", path.display())))?
                .collect::<Result<_, _>>()
                .map_err(|e| TlsError(format!("CA file {}: {e}", path.display())))?;
            if certs.is_empty() {
                return Err(TlsError(format!(
                    "CA file {} holds no certificate",
                    path.display()
                )));
            }
            for cert in certs {
                roots
                    .add(cert)
                    .map_err(|e| TlsError(format!("CA file {}: {e}", path.display())))?;
            }
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
        Ok(Client {
            tls: TlsConnector::from(Arc::new(config)),
        })
    }

    /// `POST`s `body` as JSON to `to` with extra `headers`, within `timeout`.
    pub async fn post_json(
        &self,
        to: &Endpoint,
        headers: &[(String, String)],
        body: &[u8],
        timeout: Duration,
    ) -> Result<Reply, HttpError> {
        match tokio::time::timeout(timeout, self.post(to, headers, body)).await {
            Ok(r) => r,
            Err(_) => Err(HttpError::Timeout {
                to: to.to_string(),
                timeout,
            }),
        }
    }

    async fn post(
        &self,
        to: &Endpoint,
        headers: &[(String, String)],
        body: &[u8],
    ) -> Result<Reply, HttpError> {
        let connect = |source| HttpError::Connect {
            to: to.to_string(),
            source,
        };
        let stream = TcpStream::connect(to.authority()).await.map_err(connect)?;
        let _ = stream.set_nodelay(true);
        if !to.tls {
            return exchange(stream, to, headers, body).await;
        }
        let name = ServerName::try_from(
            to.host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string(),
        )
        .map_err(|e| connect(std::io::Error::other(e)))?;
        let tls = self.tls.connect(name, stream).await.map_err(connect)?;
        exchange(tls, to, headers, body).await
    }
}

/// One request and its reply over `stream`.
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    to: &Endpoint,
    headers: &[(String, String)],
    body: &[u8],
) -> Result<Reply, HttpError> {
    let io = |source| HttpError::Io {
        to: to.to_string(),
        source,
    };
    let mut head = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: baton-notify/{}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
        to.path,
        to.authority(),
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
            "https://",
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
