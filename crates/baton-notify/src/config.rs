//! Where alerts go and how hard to try: the routing configuration, from a
//! TOML file and/or flags, validated before anything starts (a bad target
//! is an error naming the field, never a router that silently drops pages).
//!
//! ```toml
//! console_url = "http://127.0.0.1:8080"   # links in annotations and messages
//! resend_interval = "60s"                 # firing alerts re-sent to Alertmanager
//! report_ttl = "1h"                       # how long a one-shot report stays active there
//! tls_ca = "/etc/baton/hooks-ca.pem"      # optional: trusted for https targets, besides the system's
//!
//! [[alertmanager]]                        # every one gets every alert (HA: never balanced)
//! url = "http://alertmanager-1:9093"
//!
//! [[webhook]]
//! name = "ops"                            # its durable consumer: baton-notify-ops
//! url = "http://hooks.internal/baton"
//! format = "json"                         # or "slack": {"text": "..."}
//! min_severity = "warning"                # optional
//! kinds = ["heartbeat_missed"]            # optional; every kind when absent
//! headers = { Authorization = "Bearer s3cret" }
//! start = "new"                           # a new webhook starts at new alerts ("all": history too)
//!
//! [watchdog]
//! interval = "15s"
//! services = ["orchestrator", "stall-detector"]
//!
//! [retry]
//! initial = "500ms"
//! max = "30s"
//! give_up_after = "24h"                   # an alert older than this is dropped (counted, logged)
//! refused_attempts = 3                    # a 4xx refusal is retried this often, then dropped
//! ```

use std::time::Duration;

use baton_core::{AlertKind, Severity, rules::parse_duration};
use serde::Deserialize;

use crate::client::Endpoint;

/// Why the routing configuration is not usable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0}")]
    Toml(String),
    #[error("{field}: {message}")]
    Field { field: String, message: String },
}

fn field(field: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Field {
        field: field.into(),
        message: message.into(),
    }
}

/// The message format of a webhook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `{"version": ..., "delivery_id": ..., "alert": {...}, "text": ...}`
    Json,
    /// Slack-compatible: `{"text": "..."}`.
    Slack,
}

/// Where a new webhook's consumer starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// Alerts stored from now on.
    New,
    /// Every alert the stream holds.
    All,
}

/// One Alertmanager.
#[derive(Debug, Clone)]
pub struct AlertmanagerTarget {
    /// Label in metrics and logs.
    pub name: String,
    /// Its base URL; alerts go to `<url>/api/v2/alerts`.
    pub endpoint: Endpoint,
    pub headers: Vec<(String, String)>,
}

/// One webhook.
#[derive(Debug, Clone)]
pub struct WebhookTarget {
    /// Names its durable consumer (`baton-notify-<name>`) and its metrics.
    pub name: String,
    pub endpoint: Endpoint,
    pub format: Format,
    pub headers: Vec<(String, String)>,
    /// Deliver only alerts at least this severe.
    pub min_severity: Option<Severity>,
    /// Deliver only these kinds (all when empty).
    pub kinds: Vec<AlertKind>,
    pub start: Start,
}

impl WebhookTarget {
    /// Whether an alert of `kind` and `severity` goes to this webhook.
    pub fn wants(&self, kind: AlertKind, severity: Severity) -> bool {
        (self.kinds.is_empty() || self.kinds.contains(&kind))
            && self.min_severity.is_none_or(|min| severity >= min)
    }

    /// The durable consumer on `BATON_ALERTS` that is this webhook's
    /// "delivered up to" mark.
    pub fn consumer(&self) -> String {
        format!("baton-notify-{}", self.name)
    }
}

/// The watchdog: an always-firing alert while Baton is healthy.
#[derive(Debug, Clone)]
pub struct Watchdog {
    pub enabled: bool,
    /// How often liveness is checked and the watchdog sent.
    pub interval: Duration,
    /// Services (KV `baton-services` key prefix) that must each have a
    /// fresh liveness record.
    pub services: Vec<String>,
}

/// Retries of a delivery.
#[derive(Debug, Clone, Copy)]
pub struct Retry {
    pub initial: Duration,
    pub max: Duration,
    /// An alert stored longer ago than this that still cannot be delivered
    /// is given up (acknowledged, counted, logged).
    pub give_up_after: Duration,
    /// A target that refuses an alert (HTTP 4xx other than 408/425/429) is
    /// asked this many times before the alert is given up.
    pub refused_attempts: u32,
}

/// Everything about where alerts go.
#[derive(Debug, Clone)]
pub struct Routes {
    pub console_url: Option<String>,
    pub resend_interval: Duration,
    pub report_ttl: Duration,
    pub request_timeout: Duration,
    pub alertmanagers: Vec<AlertmanagerTarget>,
    pub webhooks: Vec<WebhookTarget>,
    pub watchdog: Watchdog,
    pub retry: Retry,
    /// CA certificates (PEM) trusted for https targets, besides the
    /// system's.
    pub tls_ca: Option<std::path::PathBuf>,
}

impl Default for Routes {
    fn default() -> Self {
        Routes {
            console_url: None,
            resend_interval: Duration::from_secs(60),
            report_ttl: Duration::from_secs(3600),
            request_timeout: Duration::from_secs(10),
            alertmanagers: Vec::new(),
            webhooks: Vec::new(),
            watchdog: Watchdog {
                enabled: true,
                interval: Duration::from_secs(15),
                services: vec!["orchestrator".into(), "stall-detector".into()],
            },
            retry: Retry {
                initial: Duration::from_millis(500),
                max: Duration::from_secs(30),
                give_up_after: Duration::from_secs(24 * 3600),
                refused_attempts: 3,
            },
            tls_ca: None,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileRoutes {
    console_url: Option<String>,
    resend_interval: Option<String>,
    report_ttl: Option<String>,
    request_timeout: Option<String>,
    tls_ca: Option<std::path::PathBuf>,
    #[serde(default)]
    alertmanager: Vec<FileAlertmanager>,
    #[serde(default)]
    webhook: Vec<FileWebhook>,
    watchdog: Option<FileWatchdog>,
    retry: Option<FileRetry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileAlertmanager {
    name: Option<String>,
    url: String,
    #[serde(default)]
    headers: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileWebhook {
    name: Option<String>,
    url: String,
    format: Option<String>,
    min_severity: Option<String>,
    #[serde(default)]
    kinds: Vec<String>,
    #[serde(default)]
    headers: std::collections::BTreeMap<String, String>,
    start: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileWatchdog {
    enabled: Option<bool>,
    interval: Option<String>,
    services: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileRetry {
    initial: Option<String>,
    max: Option<String>,
    give_up_after: Option<String>,
    refused_attempts: Option<u32>,
}

fn dur(name: &str, v: Option<&String>, default: Duration) -> Result<Duration, ConfigError> {
    match v {
        None => Ok(default),
        Some(s) => {
            let d = parse_duration(s).map_err(|e| field(name, e))?;
            if d.is_zero() {
                return Err(field(name, "must be more than zero"));
            }
            Ok(d)
        }
    }
}

/// A target name: it becomes a consumer name token.
fn check_name(name: &str, at: &str) -> Result<(), ConfigError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(field(
            at,
            format!("{name:?} is not a valid name: use 1-64 of A-Z a-z 0-9 - _"),
        ))
    }
}

/// A stable name for a target given only by URL (FNV-1a of the URL), so
/// its consumer, and thus its delivery mark, survives restarts.
pub fn name_for_url(prefix: &str, url: &str) -> String {
    let mut h: u32 = 0x811c_9dc5;
    for b in url.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    format!("{prefix}-{h:08x}")
}

fn headers(
    at: &str,
    map: std::collections::BTreeMap<String, String>,
) -> Result<Vec<(String, String)>, ConfigError> {
    map.into_iter()
        .map(|(k, v)| {
            let bad_name = k.is_empty()
                || !k
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if bad_name {
                return Err(field(
                    format!("{at}.headers"),
                    format!("bad header name {k:?}"),
                ));
            }
            if v.bytes().any(|b| b == b'\r' || b == b'\n') {
                return Err(field(
                    format!("{at}.headers.{k}"),
                    "a header value cannot contain a line break",
                ));
            }
            Ok((k, v))
        })
        .collect()
}

impl Routes {
    /// Parses a routing file; defaults for what it leaves out.
    pub fn from_toml(text: &str) -> Result<Routes, ConfigError> {
        let file: FileRoutes =
            toml::from_str(text).map_err(|e| ConfigError::Toml(e.to_string()))?;
        let d = Routes::default();
        let mut routes = Routes {
            console_url: file.console_url,
            resend_interval: dur(
                "resend_interval",
                file.resend_interval.as_ref(),
                d.resend_interval,
            )?,
            report_ttl: dur("report_ttl", file.report_ttl.as_ref(), d.report_ttl)?,
            request_timeout: dur(
                "request_timeout",
                file.request_timeout.as_ref(),
                d.request_timeout,
            )?,
            tls_ca: file.tls_ca,
            ..d.clone()
        };
        if let Some(w) = file.watchdog {
            routes.watchdog.enabled = w.enabled.unwrap_or(true);
            routes.watchdog.interval = dur(
                "watchdog.interval",
                w.interval.as_ref(),
                d.watchdog.interval,
            )?;
            if let Some(s) = w.services {
                routes.watchdog.services = s;
            }
        }
        if let Some(r) = file.retry {
            routes.retry.initial = dur("retry.initial", r.initial.as_ref(), d.retry.initial)?;
            routes.retry.max = dur("retry.max", r.max.as_ref(), d.retry.max)?;
            routes.retry.give_up_after = dur(
                "retry.give_up_after",
                r.give_up_after.as_ref(),
                d.retry.give_up_after,
            )?;
            routes.retry.refused_attempts = r.refused_attempts.unwrap_or(d.retry.refused_attempts);
        }
        for (i, a) in file.alertmanager.into_iter().enumerate() {
            let at = format!("alertmanager[{i}]");
            let name = a.name.unwrap_or_else(|| name_for_url("am", &a.url));
            routes.add_alertmanager_named(&at, &name, &a.url, headers(&at, a.headers)?)?;
        }
        for (i, w) in file.webhook.into_iter().enumerate() {
            let at = format!("webhook[{i}]");
            let format = match w.format.as_deref() {
                None | Some("json") => Format::Json,
                Some("slack") => Format::Slack,
                Some(other) => {
                    return Err(field(
                        format!("{at}.format"),
                        format!("{other:?}: use \"json\" or \"slack\""),
                    ));
                }
            };
            let name = w.name.unwrap_or_else(|| name_for_url("webhook", &w.url));
            let mut target = webhook(&at, &name, &w.url, format)?;
            target.headers = headers(&at, w.headers)?;
            target.min_severity = match w.min_severity.as_deref() {
                None => None,
                Some("info") => Some(Severity::Info),
                Some("warning") => Some(Severity::Warning),
                Some("critical") => Some(Severity::Critical),
                Some(other) => {
                    return Err(field(
                        format!("{at}.min_severity"),
                        format!("{other:?}: use info, warning or critical"),
                    ));
                }
            };
            target.kinds = w
                .kinds
                .iter()
                .map(|k| {
                    AlertKind::parse(k).ok_or_else(|| {
                        field(
                            format!("{at}.kinds"),
                            format!("unknown alert kind {k:?} (e.g. heartbeat_missed)"),
                        )
                    })
                })
                .collect::<Result<_, _>>()?;
            target.start = match w.start.as_deref() {
                None | Some("new") => Start::New,
                Some("all") => Start::All,
                Some(other) => {
                    return Err(field(
                        format!("{at}.start"),
                        format!("{other:?}: use \"new\" or \"all\""),
                    ));
                }
            };
            routes.add_webhook_target(&at, target)?;
        }
        routes.check()?;
        Ok(routes)
    }

    /// Adds an Alertmanager by base URL (a flag's value).
    pub fn add_alertmanager(&mut self, url: &str) -> Result<(), ConfigError> {
        let name = name_for_url("am", url);
        self.add_alertmanager_named("--alertmanager", &name, url, Vec::new())
    }

    fn add_alertmanager_named(
        &mut self,
        at: &str,
        name: &str,
        url: &str,
        headers: Vec<(String, String)>,
    ) -> Result<(), ConfigError> {
        check_name(name, &format!("{at}.name"))?;
        let endpoint = Endpoint::parse(url).map_err(|e| field(format!("{at}.url"), e))?;
        if self.alertmanagers.iter().any(|a| a.name == name) {
            return Err(field(at, format!("a second Alertmanager named {name:?}")));
        }
        self.alertmanagers.push(AlertmanagerTarget {
            name: name.to_string(),
            endpoint: endpoint.join("api/v2/alerts"),
            headers,
        });
        Ok(())
    }

    /// Adds a webhook from a flag's value: `URL` or `NAME=URL`.
    pub fn add_webhook(&mut self, spec: &str, format: Format) -> Result<(), ConfigError> {
        let flag = match format {
            Format::Json => "--webhook",
            Format::Slack => "--slack-webhook",
        };
        let (name, url) = match spec.split_once('=') {
            Some((n, u)) if !n.contains(':') && !n.contains('/') => (n.to_string(), u),
            _ => (name_for_url("webhook", spec), spec),
        };
        let target = webhook(flag, &name, url, format)?;
        self.add_webhook_target(flag, target)
    }

    fn add_webhook_target(&mut self, at: &str, target: WebhookTarget) -> Result<(), ConfigError> {
        if self.webhooks.iter().any(|w| w.name == target.name) {
            return Err(field(
                at,
                format!(
                    "a second webhook named {:?} (names must be unique: each is a consumer)",
                    target.name
                ),
            ));
        }
        self.webhooks.push(target);
        Ok(())
    }

    /// Checks what individual fields cannot.
    pub fn check(&self) -> Result<(), ConfigError> {
        if self.retry.max < self.retry.initial {
            return Err(field("retry.max", "must be at least retry.initial"));
        }
        if self.retry.refused_attempts == 0 {
            return Err(field("retry.refused_attempts", "must be at least 1"));
        }
        if let Some(url) = &self.console_url {
            Endpoint::parse(url).map_err(|e| field("console_url", e))?;
        }
        if self.watchdog.enabled && self.watchdog.services.is_empty() {
            return Err(field(
                "watchdog.services",
                "name at least one service (or set watchdog.enabled = false)",
            ));
        }
        for s in &self.watchdog.services {
            check_name(s, "watchdog.services")?;
        }
        Ok(())
    }

    /// A link into the console for a task (or the alerts page for `None`).
    pub fn console_link(&self, task: Option<&str>) -> Option<String> {
        let base = self.console_url.as_deref()?.trim_end_matches('/');
        Some(match task {
            Some(t) => format!("{base}/#/task/{t}"),
            None => format!("{base}/#/alerts"),
        })
    }
}

fn webhook(at: &str, name: &str, url: &str, format: Format) -> Result<WebhookTarget, ConfigError> {
    check_name(name, &format!("{at}.name"))?;
    let endpoint = Endpoint::parse(url).map_err(|e| field(format!("{at}.url"), e))?;
    Ok(WebhookTarget {
        name: name.to_string(),
        endpoint,
        format,
        headers: Vec::new(),
        min_severity: None,
        kinds: Vec::new(),
        start: Start::New,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_file_parses() {
        let r = Routes::from_toml(
            r#"
console_url = "http://console:8080/"
resend_interval = "30s"
[[alertmanager]]
url = "http://am1:9093"
[[alertmanager]]
name = "am2"
url = "http://am2:9093/prefix/"
[[webhook]]
name = "ops"
url = "http://hooks:8000/baton"
format = "slack"
min_severity = "warning"
kinds = ["HEARTBEAT_MISSED", "handoff_not_accepted"]
headers = { Authorization = "Bearer x" }
[watchdog]
interval = "5s"
services = ["orchestrator"]
[retry]
give_up_after = "1h"
"#,
        )
        .expect("parses");
        assert_eq!(r.resend_interval, Duration::from_secs(30));
        assert_eq!(r.alertmanagers.len(), 2);
        assert_eq!(r.alertmanagers[1].endpoint.path(), "/prefix/api/v2/alerts");
        assert_eq!(r.alertmanagers[0].endpoint.path(), "/api/v2/alerts");
        let w = &r.webhooks[0];
        assert_eq!((w.name.as_str(), w.format), ("ops", Format::Slack));
        assert_eq!(w.consumer(), "baton-notify-ops");
        assert!(w.wants(AlertKind::HeartbeatMissed, Severity::Critical));
        assert!(!w.wants(AlertKind::NotStarted, Severity::Critical));
        assert_eq!(
            r.console_link(Some("t1")).as_deref(),
            Some("http://console:8080/#/task/t1")
        );
        assert_eq!(r.watchdog.interval, Duration::from_secs(5));
        assert_eq!(r.retry.give_up_after, Duration::from_secs(3600));
    }

    #[test]
    fn bad_files_name_the_field() {
        for (text, needle) in [
            ("[[webhook]]\nurl = \"ftp://x\"", "webhook[0].url"),
            (
                "[[webhook]]\nurl = \"http://x\"\nformat = \"xml\"",
                "webhook[0].format",
            ),
            (
                "[[webhook]]\nurl = \"http://x\"\nkinds = [\"nope\"]",
                "webhook[0].kinds",
            ),
            (
                "[[webhook]]\nname = \"a b\"\nurl = \"http://x\"",
                "webhook[0].name",
            ),
            (
                "[[webhook]]\nname = \"a\"\nurl = \"http://x\"\n[[webhook]]\nname = \"a\"\nurl = \"http://y\"",
                "a second webhook",
            ),
            ("resend_interval = \"soon\"", "resend_interval"),
            ("resend_interval = \"0s\"", "resend_interval"),
            ("[[alertmanager]]\nurl = \"am:9093\"", "alertmanager[0].url"),
            ("typo = 1", "unknown field"),
            ("[watchdog]\nservices = []", "watchdog.services"),
        ] {
            let e = Routes::from_toml(text).expect_err(text).to_string();
            assert!(e.contains(needle), "{text:?}: {e}");
        }
    }

    #[test]
    fn flag_targets_get_stable_names() {
        let mut r = Routes::default();
        r.add_webhook("http://h:1/x", Format::Json).expect("ok");
        r.add_webhook("ops=http://h:2/x", Format::Slack)
            .expect("ok");
        r.add_alertmanager("http://am:9093").expect("ok");
        assert_eq!(r.webhooks[0].name, name_for_url("webhook", "http://h:1/x"));
        assert_eq!(r.webhooks[1].name, "ops");
        assert!(r.add_webhook("ops=http://h:3/x", Format::Json).is_err());
        assert!(r.add_alertmanager("not a url").is_err());
    }
}
