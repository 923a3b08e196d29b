//! Alert routing end to end (`baton notify`), against real parts: a real
//! nats-server, the orchestrator and the stall detector as child processes,
//! a real Alertmanager (Debian's `prometheus-alertmanager`, started here on a
//! free port with its own data directory) and a real HTTP webhook receiver
//! in the test; and `promtool` on the Prometheus rules file.
//!
//! Alertmanager and promtool come from `scripts/ensure-alertmanager` (which
//! `scripts/test` runs): without them these tests fail, saying so.

mod support;

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

use async_nats::jetstream;
use baton_core::{AlertKind, AlertState, EventBody, subjects};
use serde_json::Value;
use support::*;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

const RULES: &str =
    "[defaults]\nheartbeat = \"1h\"\nstart = \"1h\"\naccept = \"1h\"\nrenotify = \"1h\"\n";

/// A tool from `scripts/ensure-alertmanager`: `$var`, else the first of
/// `names` on PATH; fails loudly when missing.
fn tool(var: &str, names: &[&str]) -> PathBuf {
    if let Ok(p) = std::env::var(var) {
        return PathBuf::from(p);
    }
    for name in names {
        if let Ok(out) = Command::new("sh")
            .args(["-c", &format!("command -v {name}")])
            .output()
            && out.status.success()
        {
            return PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        }
    }
    panic!(
        "{} not found: run `eval \"$(scripts/ensure-alertmanager)\"` (Debian packages prometheus-alertmanager and prometheus), or set {var}",
        names[0]
    );
}

/// Polls `f` until it yields, at most `PATIENCE`.
async fn eventually<T, Fut>(what: &str, mut f: impl FnMut() -> Fut) -> T
where
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if let Some(t) = f().await {
            return t;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never happened: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// An HTTP/1.1 exchange with `Connection: close`; returns status and body
/// (chunked bodies decoded).
async fn http(addr: &str, method: &str, path: &str, body: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(addr).await.ok()?;
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.ok()?;
    let text = String::from_utf8_lossy(&buf).to_string();
    let (head, rest) = text.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        let mut out = String::new();
        let mut rest = rest;
        loop {
            let (size, after) = rest.split_once("\r\n")?;
            let size = usize::from_str_radix(size.trim(), 16).ok()?;
            if size == 0 {
                break;
            }
            out.push_str(after.get(..size)?);
            rest = after.get(size + 2..)?;
        }
        out
    } else {
        rest.to_string()
    };
    Some((status, body))
}

/// A real Alertmanager on a free port, killed on drop.
struct Alertmanager {
    child: Child,
    addr: String,
    _dir: tempfile::TempDir,
}

impl Alertmanager {
    async fn start() -> Alertmanager {
        let bin = tool(
            "BATON_ALERTMANAGER",
            &["prometheus-alertmanager", "alertmanager"],
        );
        let dir = tempfile::tempdir().expect("tmp");
        let config = dir.path().join("alertmanager.yml");
        std::fs::write(
            &config,
            "route:\n  receiver: 'null'\n  group_wait: 1s\nreceivers:\n  - name: 'null'\n",
        )
        .expect("config");
        let log = dir.path().join("alertmanager.log");
        let child = Command::new(&bin)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.path={}",
                dir.path().join("data").display()
            ))
            .arg("--web.listen-address=127.0.0.1:0")
            // No cluster listener (it would take a fixed port).
            .arg("--cluster.listen-address=")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log"))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let addr = eventually("Alertmanager listens", || {
            let log = log.clone();
            async move {
                let text = std::fs::read_to_string(&log).ok()?;
                let line = text.lines().find(|l| l.contains("msg=\"Listening on\""))?;
                let addr = line.split("address=").nth(1)?.split_whitespace().next()?;
                Some(addr.to_string())
            }
        })
        .await;
        let am = Alertmanager {
            child,
            addr,
            _dir: dir,
        };
        eventually("Alertmanager ready", || {
            let addr = am.addr.clone();
            async move {
                let (status, _) = http(&addr, "GET", "/-/ready", "").await?;
                (status == 200).then_some(())
            }
        })
        .await;
        am
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Alertmanager's alerts (API v2), as it lists them.
    async fn alerts(&self) -> Vec<Value> {
        let (status, body) = http(&self.addr, "GET", "/api/v2/alerts", "")
            .await
            .expect("Alertmanager answers");
        assert_eq!(status, 200, "{body}");
        serde_json::from_str::<Vec<Value>>(&body).expect("alerts JSON")
    }

    /// The alerts named `alertname` for `task`.
    async fn named(&self, alertname: &str, task: &str) -> Vec<Value> {
        self.alerts()
            .await
            .into_iter()
            .filter(|a| a["labels"]["alertname"] == alertname && a["labels"]["task"] == task)
            .collect()
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A webhook receiver: records every JSON body POSTed to it and answers
/// 200. Stopping it closes its port (connections are refused), as a
/// target that is down.
struct Receiver {
    addr: SocketAddr,
    got: Arc<Mutex<Vec<Value>>>,
    tasks: Option<tokio::task::JoinSet<()>>,
}

impl Receiver {
    async fn start(addr: SocketAddr, got: Arc<Mutex<Vec<Value>>>) -> Receiver {
        let listener = TcpListener::bind(addr).await.expect("bind receiver");
        let addr = listener.local_addr().expect("addr");
        let mut tasks = tokio::task::JoinSet::new();
        let record = got.clone();
        tasks.spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let record = record.clone();
                conns.spawn(async move {
                    let _ = serve(stream, record).await;
                });
            }
        });
        Receiver {
            addr,
            got,
            tasks: Some(tasks),
        }
    }

    /// Stops listening; returns the address to start again on.
    async fn stop(&mut self) -> SocketAddr {
        if let Some(mut t) = self.tasks.take() {
            t.abort_all();
            while t.join_next().await.is_some() {}
        }
        self.addr
    }

    fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    fn received(&self) -> Vec<Value> {
        self.got.lock().expect("lock").clone()
    }
}

async fn serve(mut stream: TcpStream, record: Arc<Mutex<Vec<Value>>>) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + len {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let body: Value = serde_json::from_slice(&buf[head_end..head_end + len]).unwrap_or(Value::Null);
    record.lock().expect("lock").push(body);
    stream
        .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        .await?;
    stream.shutdown().await
}

/// The stall detector as a child process serving /metrics; returns its
/// HTTP address.
async fn start_detector(rig: &mut Rig) -> String {
    let rules = rig.dir.path().join("rules.toml");
    std::fs::write(&rules, RULES).expect("rules");
    let rules = rules.to_string_lossy().to_string();
    let log = rig.dir.path().join("detector.log");
    let detector = BatonProcess::spawn(
        &rig.server.url(),
        &[
            "stall-detector",
            "--rules",
            &rules,
            "--instance",
            "d",
            "--liveness-interval",
            "200ms",
            "--http",
            "127.0.0.1:0",
        ],
        &log,
    );
    rig.extra.push(detector);
    wait_liveness(&rig.js, "stall-detector.d").await.http_addr
}

/// Every metric family a service exposes is in docs/metrics.md.
async fn assert_documented(addr: &str) {
    let docs = std::fs::read_to_string(repo().join("docs/metrics.md")).expect("docs/metrics.md");
    let (_, body) = http_get(addr, "/metrics").await;
    let mut seen = 0;
    for line in body.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let mut parts = rest.split_whitespace();
        let (name, kind) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        let exposed = match kind {
            "counter" => format!("`{name}_total"),
            _ => format!("`{name}"),
        };
        assert!(
            docs.contains(&exposed),
            "{name} ({kind}, served by {addr}) is not listed in docs/metrics.md"
        );
        seen += 1;
    }
    assert!(seen > 5, "only {seen} metric families at {addr}");
}

/// The router as a child process.
fn start_router(rig: &Rig, instance: &str, args: &[&str]) -> BatonProcess {
    let log = rig.dir.path().join(format!("notify-{instance}.log"));
    let mut all = vec![
        "notify",
        "--instance",
        instance,
        "--liveness-interval",
        "200ms",
        "--http",
        "127.0.0.1:0",
        "--console-url",
        "http://console.test:8080",
    ];
    all.extend_from_slice(args);
    BatonProcess::spawn(&rig.server.url(), &all, &log)
}

/// The router's metrics: `name{labels}` → value.
async fn scrape(addr: &str) -> BTreeMap<String, f64> {
    let (status, body) = http_get(addr, "/metrics").await;
    assert_eq!(status, 200);
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

fn sum(metrics: &BTreeMap<String, f64>, prefix: &str, needle: &str) -> f64 {
    metrics
        .iter()
        .filter(|(k, _)| k.starts_with(prefix) && k.contains(needle))
        .map(|(_, v)| v)
        .sum()
}

/// An agent claims `task` with a 1 s lease and then says nothing.
async fn claim_and_go_quiet(js: &jetstream::Context, ev: &mut Events, task: &str, agent_id: &str) {
    publish(js, &ev.created(task, "planner")).await;
    let claim = ev.make(
        task,
        agent_id,
        0,
        EventBody::Claimed {
            heartbeat_within: Some(Duration::from_secs(1)),
        },
    );
    publish(js, &claim).await;
}

/// Alerts in BATON_ALERTS, with their `Nats-Msg-Id`s, in stream order.
async fn stored_alerts(js: &jetstream::Context) -> Vec<(String, baton_core::Alert)> {
    read_all(js, subjects::ALERTS_STREAM, subjects::ALERTS_RAISE_ALL)
        .await
        .into_iter()
        .filter_map(|m| {
            // Garbage a test put there is no alert (and is not delivered).
            let alert = baton_core::Alert::decode(&m.payload).ok()?;
            Some((m.msg_id().unwrap_or_default().to_string(), alert))
        })
        .collect()
}

/// Waits until the webhook's consumer has every alert acknowledged.
async fn webhook_caught_up(js: &jetstream::Context, consumer: &str) {
    eventually("webhook consumer caught up", || async {
        let stream = js.get_stream_no_info(subjects::ALERTS_STREAM).await.ok()?;
        let info = stream.consumer_info(consumer).await.ok()?;
        (info.num_pending == 0 && info.num_ack_pending == 0).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alertmanager_gets_the_real_heartbeat_missed_resolves_it_and_never_doubles_it() {
    let mut rig = Rig::new().await;
    let orchestrator = rig.start_orchestrator(&[]).await;
    let detector_http = start_detector(&mut rig).await;
    // Two Alertmanagers (an HA pair): each must get every alert.
    let am = Alertmanager::start().await;
    let am2 = Alertmanager::start().await;
    let got = Arc::new(Mutex::new(Vec::new()));
    let receiver = Receiver::start("127.0.0.1:0".parse().expect("addr"), got).await;
    let am_url = format!("{},{}", am.url(), am2.url());
    let hook = format!("hook={}", receiver.url());
    let router_args = [
        "--alertmanager",
        am_url.as_str(),
        "--webhook",
        hook.as_str(),
        // Longer than the test's patience: a resolution must come as an
        // explicit endsAt, not by Alertmanager expiring an alert it stopped
        // hearing about (after 4 x resend interval).
        "--resend-interval",
        "60s",
        "--watchdog-interval",
        "500ms",
    ];
    let mut router = start_router(&rig, "n1", &router_args);
    wait_liveness(&rig.js, "notify.n1").await;

    // The watchdog fires while the orchestrator and the detector are alive.
    eventually("watchdog in Alertmanager", || async {
        (!am.named("BatonWatchdog", "_system").await.is_empty()).then_some(())
    })
    .await;

    let mut ev = Events::new("blog");
    claim_and_go_quiet(&rig.js, &mut ev, "draft-1", "writer").await;
    let fired = eventually("HEARTBEAT_MISSED in Alertmanager", || async {
        am.named("HEARTBEAT_MISSED", "draft-1")
            .await
            .into_iter()
            .next()
    })
    .await;
    let (stored, _) = wait_alert(&rig.js, is_alert(AlertKind::HeartbeatMissed, "draft-1")).await;
    let labels = &fired["labels"];
    assert_eq!(labels["workflow"], "blog");
    assert_eq!(labels["severity"], "critical");
    assert_eq!(labels["agents"], "writer");
    assert_eq!(labels["alert_id"], stored.id.as_str());
    assert_eq!(fired["status"]["state"], "active", "{fired}");
    let notes = &fired["annotations"];
    assert!(
        notes["summary"]
            .as_str()
            .is_some_and(|s| s.contains("owner writer has sent no heartbeat")),
        "{notes}"
    );
    assert!(
        notes["expected"]
            .as_str()
            .is_some_and(|s| s.contains("heartbeat from writer"))
    );
    assert!(
        notes["due"].is_string()
            && notes["last_event"]
                .as_str()
                .is_some_and(|s| s.contains("claimed from writer"))
    );
    assert_eq!(notes["console"], "http://console.test:8080/#/task/draft-1");
    let other = eventually("HEARTBEAT_MISSED in the second Alertmanager", || async {
        am2.named("HEARTBEAT_MISSED", "draft-1")
            .await
            .into_iter()
            .next()
    })
    .await;
    assert_eq!(other["labels"], fired["labels"]);

    // A restart of the router re-sends the same alert: still one.
    assert!(router.terminate(), "router stops cleanly");
    let mut router = start_router(&rig, "n2", &router_args);
    let status2 = wait_liveness(&rig.js, "notify.n2").await;
    eventually("restarted router re-sent to Alertmanager", || async {
        let m = scrape(&status2.http_addr).await;
        (sum(&m, "baton_notify_delivered_total", "kind=\"alertmanager\"") >= 4.0).then_some(())
    })
    .await;
    let after = am.named("HEARTBEAT_MISSED", "draft-1").await;
    assert_eq!(after.len(), 1, "one alert after the restart: {after:?}");
    assert_eq!(am2.named("HEARTBEAT_MISSED", "draft-1").await.len(), 1);
    assert_eq!(after[0]["fingerprint"], fired["fingerprint"]);
    assert_eq!(am.named("BatonWatchdog", "_system").await.len(), 1);

    // The heartbeat comes back: the detector resolves, Alertmanager too.
    publish(&rig.js, &ev.heartbeat("draft-1", "writer", 1)).await;
    wait_alert(&rig.js, |a| {
        a.kind == AlertKind::HeartbeatMissed && a.state == AlertState::Resolved
    })
    .await;
    eventually("resolved in both Alertmanagers", || async {
        (am.named("HEARTBEAT_MISSED", "draft-1").await.is_empty()
            && am2.named("HEARTBEAT_MISSED", "draft-1").await.is_empty())
        .then_some(())
    })
    .await;

    // The webhook got the firing and the resolution, once each, across
    // the restart.
    webhook_caught_up(&rig.js, "baton-notify-hook").await;
    let ids: Vec<String> = receiver
        .received()
        .iter()
        .map(|b| b["delivery_id"].as_str().unwrap_or_default().to_string())
        .collect();
    let expected: Vec<String> = stored_alerts(&rig.js)
        .await
        .into_iter()
        .map(|(id, _)| format!("hook:{id}"))
        .collect();
    assert_eq!(ids, expected, "every alert once, in order");
    assert!(ids.iter().any(|i| i.ends_with(".resolved")), "{ids:?}");

    // What each service exposes is documented.
    for addr in [&orchestrator.http_addr, &detector_http, &status2.http_addr] {
        assert_documented(addr).await;
    }

    // The detector dies: the watchdog stops, and lapses in Alertmanager
    // (the dead-man's switch behind it pages), while the router runs on.
    rig.extra.iter_mut().for_each(BatonProcess::kill9);
    eventually("watchdog lapsed in Alertmanager", || async {
        am.named("BatonWatchdog", "_system")
            .await
            .is_empty()
            .then_some(())
    })
    .await;
    let m = scrape(&status2.http_addr).await;
    assert_eq!(m.get("baton_notify_watchdog_healthy"), Some(&0.0));
    assert!(router.terminate());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_that_is_down_gets_every_alert_afterwards_once() {
    // The scenario is a 30 s outage; BATON_NOTIFY_TEST_OUTAGE_SECS
    // sets it (default 5 s).
    let outage = Duration::from_secs(
        std::env::var("BATON_NOTIFY_TEST_OUTAGE_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(5),
    );
    let mut rig = Rig::new().await;
    rig.start_orchestrator(&[]).await;
    rig.start_detector(RULES).await;
    let got = Arc::new(Mutex::new(Vec::new()));
    let mut receiver = Receiver::start("127.0.0.1:0".parse().expect("addr"), got.clone()).await;
    let hook = format!("ops={}", receiver.url());
    let slack = format!("chat={}", receiver.url());
    let router_args = [
        "--webhook",
        hook.as_str(),
        "--slack-webhook",
        slack.as_str(),
        "--retry-initial",
        "100ms",
        "--retry-max",
        "500ms",
    ];
    let mut router = start_router(&rig, "n1", &router_args);
    let status = wait_liveness(&rig.js, "notify.n1").await;

    let mut ev = Events::new("site");
    claim_and_go_quiet(&rig.js, &mut ev, "page-1", "builder").await;
    wait_alert(&rig.js, is_alert(AlertKind::HeartbeatMissed, "page-1")).await;
    webhook_caught_up(&rig.js, "baton-notify-ops").await;
    webhook_caught_up(&rig.js, "baton-notify-chat").await;
    assert_eq!(receiver.received().len(), 2, "JSON and Slack form");

    // The receiver goes down; alerts keep coming.
    let addr = receiver.stop().await;
    let down_since = tokio::time::Instant::now();
    claim_and_go_quiet(&rig.js, &mut ev, "page-2", "builder").await;
    claim_and_go_quiet(&rig.js, &mut ev, "page-3", "checker").await;
    publish(&rig.js, &ev.heartbeat("page-1", "builder", 1)).await;
    wait_alert(&rig.js, is_alert(AlertKind::HeartbeatMissed, "page-2")).await;
    wait_alert(&rig.js, is_alert(AlertKind::HeartbeatMissed, "page-3")).await;
    wait_alert(&rig.js, |a| {
        a.state == AlertState::Resolved && a.task.as_ref().is_some_and(|t| t.as_str() == "page-1")
    })
    .await;
    // Garbage on an alert subject (after the last wait_alert, which
    // decodes everything) is skipped, not a crash.
    publish_raw(
        &rig.js,
        "baton.raise.heartbeat_missed.bogus",
        b"\xff\xfe not an alert".to_vec(),
        Some("garbage-1"),
    )
    .await;
    // The router is retrying...
    eventually("router retries", || async {
        let m = scrape(&status.http_addr).await;
        (sum(&m, "baton_notify_requests_total", "outcome=\"error\"") >= 3.0).then_some(())
    })
    .await;
    // ...and crashes meanwhile (kill -9): the new one picks up where the
    // acknowledged deliveries end. (A graceful restart with the webhook up
    // is in the Alertmanager test.)
    router.kill9();
    let mut router = start_router(&rig, "n2", &router_args);
    let status = wait_liveness(&rig.js, "notify.n2").await;
    eventually("restarted router retries", || async {
        let m = scrape(&status.http_addr).await;
        (sum(&m, "baton_notify_requests_total", "outcome=\"error\"") >= 2.0).then_some(())
    })
    .await;
    // The outage lasts its full length (the scenario, not a synchronisation).
    let left = outage.saturating_sub(down_since.elapsed());
    tokio::time::sleep(left).await;
    assert!(receiver.received().len() == 2, "nothing arrives while down");

    let receiver = Receiver::start(addr, got).await;
    webhook_caught_up(&rig.js, "baton-notify-ops").await;
    webhook_caught_up(&rig.js, "baton-notify-chat").await;
    let stored = stored_alerts(&rig.js).await;
    assert!(stored.len() >= 4, "{} alerts", stored.len());
    let bodies = receiver.received();
    let json: Vec<String> = bodies
        .iter()
        .filter_map(|b| b["delivery_id"].as_str().map(str::to_string))
        .collect();
    let expected: Vec<String> = stored.iter().map(|(id, _)| format!("ops:{id}")).collect();
    assert_eq!(json, expected, "every alert once, in order");
    let texts: Vec<&str> = bodies
        .iter()
        .filter(|b| b.get("delivery_id").is_none())
        .filter_map(|b| b["text"].as_str())
        .collect();
    assert_eq!(
        texts.len(),
        stored.len(),
        "Slack form: every alert once: {texts:#?}"
    );
    for ((_, alert), text) in stored.iter().zip(&texts) {
        let task = alert.task.as_ref().map_or("_system", |t| t.as_str());
        assert!(text.contains(&format!("on task {task}")), "{text}");
        let head = if alert.state == AlertState::Resolved {
            "[RESOLVED]"
        } else {
            "[FIRING]"
        };
        assert!(text.starts_with(head), "{text}");
    }
    assert!(router.terminate());
}

#[test]
fn bad_routing_config_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("tmp");
    let bad = dir.path().join("routes.toml");
    for (text, needle) in [
        (
            "[[webhook]]\nurl = \"http://h/x\"\nformat = \"xml\"\n",
            "webhook[0].format",
        ),
        (
            "[[alertmanager]]\nurl = \"am:9093\"\n",
            "alertmanager[0].url",
        ),
        ("resend_interval = \"often\"\n", "resend_interval"),
        ("", "no target"),
    ] {
        std::fs::write(&bad, text).expect("write");
        let out = Command::new(baton_bin())
            .args(["--nats", "nats://127.0.0.1:1", "notify", "--config"])
            .arg(&bad)
            .output()
            .expect("run");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{text:?} was accepted");
        assert!(err.contains(needle), "{text:?}: {err}");
    }
    let out = Command::new(baton_bin())
        .args(["notify", "--webhook", "ftp://x"])
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--webhook.url"));
}

fn repo() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

#[test]
fn promtool_accepts_the_rules_and_their_tests_pass() {
    let promtool = tool("BATON_PROMTOOL", &["promtool"]);
    let rules = repo().join("deploy/prometheus/baton-rules.yml");
    let out = Command::new(&promtool)
        .args(["check", "rules"])
        .arg(&rules)
        .output()
        .expect("run promtool");
    assert!(
        out.status.success(),
        "promtool check rules:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let tests = repo().join("deploy/prometheus/baton-rules.test.yml");
    let out = Command::new(&promtool)
        .args(["test", "rules"])
        .arg(&tests)
        .output()
        .expect("run promtool");
    assert!(
        out.status.success(),
        "promtool test rules:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
