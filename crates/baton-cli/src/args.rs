//! Flags every command shares: how to reach NATS, and output format.

use std::path::PathBuf;

use baton_jetstream::NatsOptions;
use clap::Args;

/// The NATS URL used when none is given.
pub const DEFAULT_NATS_URL: &str = "nats://127.0.0.1:4222";

/// How to reach NATS.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Connection")]
pub struct NatsArgs {
    /// NATS server URL(s), comma-separated [default: nats://127.0.0.1:4222]
    #[arg(
        long = "nats",
        env = "BATON_NATS_URL",
        global = true,
        value_name = "URL"
    )]
    pub url: Option<String>,
    /// NATS credentials file (.creds)
    #[arg(long, env = "BATON_NATS_CREDS", global = true, value_name = "FILE")]
    pub creds: Option<PathBuf>,
    /// File holding an nkey seed
    #[arg(long, env = "BATON_NATS_NKEY", global = true, value_name = "FILE")]
    pub nkey: Option<PathBuf>,
    /// CA certificate to trust for TLS
    #[arg(long, env = "BATON_TLS_CA", global = true, value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,
    /// Client certificate for mutual TLS (with --tls-key)
    #[arg(
        long,
        env = "BATON_TLS_CERT",
        global = true,
        value_name = "FILE",
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,
    /// Client key for mutual TLS (with --tls-cert)
    #[arg(
        long,
        env = "BATON_TLS_KEY",
        global = true,
        value_name = "FILE",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,
}

impl NatsArgs {
    /// The URL given, or the default.
    pub fn url(&self) -> String {
        self.url
            .clone()
            .unwrap_or_else(|| DEFAULT_NATS_URL.to_string())
    }

    /// Connection options for `url` with these credentials.
    pub fn options_for(&self, url: &str, name: &str) -> NatsOptions {
        let mut o = NatsOptions::new(url);
        o.creds_file = self.creds.clone();
        o.nkey_seed_file = self.nkey.clone();
        o.tls_ca = self.tls_ca.clone();
        o.require_tls = self.tls_ca.is_some() || self.tls_cert.is_some();
        o.tls_client = self.tls_cert.clone().zip(self.tls_key.clone());
        o.name = Some(name.to_string());
        o
    }

    pub fn options(&self, name: &str) -> NatsOptions {
        self.options_for(&self.url(), name)
    }
}
