//! The router's HTTP client over TLS, against a real TLS server in the
//! test (certificates made with the `openssl` command): an https webhook
//! is reached when its CA is trusted, and refused when it is not.

use std::{path::Path, process::Command, sync::Arc, time::Duration};

use baton_notify::client::{Client, Endpoint};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};
use tokio_rustls::{TlsAcceptor, rustls};

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("the openssl command (Debian package openssl) makes the test certificates");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA and a server certificate for localhost / 127.0.0.1 signed by it.
fn certificates(dir: &Path) {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509"];
    ca.extend(ec);
    ca.extend([
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-subj",
        "/CN=baton-test-ca",
        "-days",
        "1",
    ]);
    openssl(dir, &ca);
    let mut csr = vec!["req"];
    csr.extend(ec);
    csr.extend([
        "-keyout",
        "leaf.key",
        "-out",
        "leaf.csr",
        "-subj",
        "/CN=localhost",
    ]);
    openssl(dir, &csr);
    std::fs::write(
        dir.join("leaf.ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .expect("ext");
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "leaf.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "leaf.pem",
            "-days",
            "1",
            "-extfile",
            "leaf.ext",
        ],
    );
}

/// Serves TLS on a free port; every request is answered 202 and its body
/// sent on the channel.
async fn serve(dir: &Path) -> (u16, tokio::sync::mpsc::UnboundedReceiver<String>) {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(dir.join("leaf.pem"))
        .expect("leaf")
        .collect::<Result<_, _>>()
        .expect("leaf certs");
    let key = PrivateKeyDer::from_pem_file(dir.join("leaf.key")).expect("key");
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .expect("server config");
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let Ok(n) = tls.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf).to_string();
                    if let Some((head, body)) = text.split_once("\r\n\r\n") {
                        let len: usize = head
                            .to_ascii_lowercase()
                            .lines()
                            .find_map(|l| {
                                l.strip_prefix("content-length:")
                                    .map(|v| v.trim().to_string())
                            })
                            .and_then(|v| v.parse().ok())
                            .unwrap_or(0);
                        if body.len() >= len {
                            let _ = tx.send(body.to_string());
                            let _ = tls
                                .write_all(b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                                .await;
                            let _ = tls.shutdown().await;
                            return;
                        }
                    }
                }
            });
        }
    });
    (port, rx)
}

#[tokio::test]
async fn https_targets_are_verified_against_the_trusted_cas() {
    let dir = tempfile::tempdir().expect("tmp");
    certificates(dir.path());
    let (port, mut bodies) = serve(dir.path()).await;
    let to = Endpoint::parse(&format!("https://localhost:{port}/hook")).expect("url");
    let trusting = Client::new(Some(&dir.path().join("ca.pem"))).expect("client");
    let reply = trusting
        .post_json(&to, &[], br#"{"text":"hello"}"#, Duration::from_secs(10))
        .await
        .expect("delivered over TLS");
    assert_eq!(reply.status, 202);
    assert_eq!(bodies.recv().await.as_deref(), Some(r#"{"text":"hello"}"#));

    // Without the test CA the server is a stranger: refused, nothing sent.
    let stranger = Client::new(None).expect("client");
    let err = stranger
        .post_json(&to, &[], b"{}", Duration::from_secs(10))
        .await
        .expect_err("an untrusted certificate is refused");
    assert!(err.to_string().contains("cannot connect"), "{err}");
    assert!(bodies.try_recv().is_err());

    // A CA file that holds no certificate is a set-up error.
    std::fs::write(dir.path().join("empty.pem"), "").expect("write");
    assert!(Client::new(Some(&dir.path().join("empty.pem"))).is_err());
}
