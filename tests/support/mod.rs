//! Shared helpers for the end-to-end scenarios: real servers, the `baton`
//! binary as a child process, publishing events as any client could, and
//! waiting for outcomes by watching the broker (never by sleeping).
#![allow(dead_code, clippy::print_stderr)]

use std::{
    process::{Child, Command, Stdio},
    time::Duration,
};

use async_nats::{
    HeaderMap,
    jetstream::{self, consumer::pull::OrderedConfig, kv},
};
use baton_core::{
    AgentId, Alert, AlertKind, AlertState, Event, EventBody, Task, TaskCreated, TaskId, WorkflowId,
    subjects,
};
use baton_proto::prost::Message;
use baton_proto::v1 as pb;
use baton_testkit::NatsServer;
use futures::StreamExt;

/// How long any awaited outcome may take before the test fails.
pub const PATIENCE: Duration = Duration::from_secs(30);

pub fn baton_bin() -> &'static str {
    env!("CARGO_BIN_EXE_baton")
}

/// A `baton` child process, killed on drop.
pub struct BatonProcess {
    pub child: Child,
    pub name: String,
}

impl BatonProcess {
    /// Starts `baton --nats <url> <args...>`, logging to `log`.
    pub fn spawn(url: &str, args: &[&str], log: &std::path::Path) -> BatonProcess {
        let file = std::fs::File::create(log).expect("log file");
        let child = Command::new(baton_bin())
            .arg("--nats")
            .arg(url)
            .args(args)
            .env("BATON_LOG", "info,baton=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("spawn baton");
        BatonProcess {
            child,
            name: args.first().copied().unwrap_or("baton").to_string(),
        }
    }

    /// SIGKILL: a crash.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then wait for exit; returns whether it exited cleanly.
    pub fn terminate(&mut self) -> bool {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = std::time::Instant::now() + PATIENCE;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill9();
        false
    }
}

impl Drop for BatonProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}

pub fn task(s: &str) -> TaskId {
    TaskId::new(s).expect("task id")
}
pub fn agent(s: &str) -> AgentId {
    AgentId::new(s).expect("agent id")
}
pub fn agent_id(s: &str) -> AgentId {
    agent(s)
}
pub fn workflow(s: &str) -> WorkflowId {
    WorkflowId::new(s).expect("workflow id")
}

/// Builds events for one workflow with unique ids.
pub struct Events {
    pub workflow: WorkflowId,
    n: u64,
    prefix: String,
}

impl Events {
    pub fn new(workflow_id: &str) -> Events {
        Events {
            workflow: workflow(workflow_id),
            n: 0,
            prefix: format!("{}-{}", workflow_id, std::process::id()),
        }
    }

    pub fn make(&mut self, task_id: &str, agent_id: &str, epoch: u64, body: EventBody) -> Event {
        self.n += 1;
        Event::new(
            format!("{}-{}", self.prefix, self.n),
            task(task_id),
            self.workflow.clone(),
            agent(agent_id),
            body,
        )
        .with_epoch(epoch)
    }

    pub fn created(&mut self, task_id: &str, agent_id: &str) -> Event {
        self.make(
            task_id,
            agent_id,
            0,
            EventBody::Created(TaskCreated::default()),
        )
    }

    pub fn claimed(&mut self, task_id: &str, agent_id: &str) -> Event {
        self.make(
            task_id,
            agent_id,
            0,
            EventBody::Claimed {
                heartbeat_within: None,
            },
        )
    }

    pub fn heartbeat(&mut self, task_id: &str, agent_id: &str, epoch: u64) -> Event {
        self.make(
            task_id,
            agent_id,
            epoch,
            EventBody::Heartbeat {
                note: String::new(),
                progress: true,
            },
        )
    }
}

/// Publishes an event on its own subject with `Nats-Msg-Id` = event id and
/// waits for the broker to store it; returns the stream sequence.
pub async fn publish(js: &jetstream::Context, event: &Event) -> u64 {
    publish_raw(
        js,
        &subjects::event(&event.task, &event.agent),
        event.encode_to_vec(),
        Some(&event.event_id),
    )
    .await
}

/// Publishes arbitrary bytes on a subject (for bad input).
pub async fn publish_raw(
    js: &jetstream::Context,
    subject: &str,
    payload: Vec<u8>,
    msg_id: Option<&str>,
) -> u64 {
    let mut headers = HeaderMap::new();
    if let Some(id) = msg_id {
        headers.insert("Nats-Msg-Id", id);
    }
    js.publish_with_headers(subject.to_string(), headers, payload.into())
        .await
        .expect("publish")
        .await
        .expect("stored")
        .sequence
}

/// Waits until KV `bucket` holds a value for `key` that satisfies `ok`,
/// watching the bucket (no polling). A watch that fails (on a cluster, while
/// the bucket's leader is being elected) is opened again, within PATIENCE.
pub async fn wait_kv<T>(
    js: &jetstream::Context,
    bucket: &str,
    key: &str,
    ok: impl FnMut(&[u8]) -> Option<T>,
) -> T {
    wait_kv_within(js, bucket, key, PATIENCE, ok).await
}

/// [`wait_kv`] with its own patience (faults on a cluster take longer).
pub async fn wait_kv_within<T>(
    js: &jetstream::Context,
    bucket: &str,
    key: &str,
    patience: Duration,
    mut ok: impl FnMut(&[u8]) -> Option<T>,
) -> T {
    let deadline = tokio::time::Instant::now() + patience;
    let mut last = String::from("no value yet");
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            panic!("KV {bucket}/{key} never reached the expected value ({last})");
        }
        let store = wait_bucket(js, bucket).await;
        let attempt = tokio::time::timeout(left, async {
            let mut watch = store
                .watch_with_history(key)
                .await
                .map_err(|e| format!("watch: {e}"))?;
            while let Some(entry) = watch.next().await {
                let entry = entry.map_err(|e| format!("watch entry: {e}"))?;
                if entry.operation == kv::Operation::Put
                    && let Some(t) = ok(&entry.value)
                {
                    return Ok(t);
                }
            }
            Err("the watch ended".to_string())
        })
        .await;
        match attempt {
            Ok(Ok(t)) => return t,
            Ok(Err(e)) => {
                last = e;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(_) => panic!("KV {bucket}/{key} never reached the expected value ({last})"),
        }
    }
}

/// The bucket, once a service has created it. There is no notification for
/// bucket creation, so this polls the JetStream API briefly.
pub async fn wait_bucket(js: &jetstream::Context, bucket: &str) -> kv::Store {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        match js.get_key_value(bucket).await {
            Ok(store) => return store,
            Err(e) if tokio::time::Instant::now() > deadline => {
                panic!("bucket {bucket} never appeared: {e}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// Waits for the task's stored state to satisfy `ok`.
pub async fn wait_task(
    js: &jetstream::Context,
    task_id: &str,
    mut ok: impl FnMut(&Task) -> bool,
) -> Task {
    wait_kv(js, subjects::TASKS_BUCKET, task_id, |bytes| {
        let t = Task::decode(bytes).expect("task state decodes");
        ok(&t).then_some(t)
    })
    .await
}

/// The task's stored state now, if any.
pub async fn stored_task(js: &jetstream::Context, task_id: &str) -> Option<Task> {
    let store = js
        .get_key_value(subjects::TASKS_BUCKET)
        .await
        .expect("bucket");
    store
        .get(task_id)
        .await
        .expect("kv get")
        .map(|b| Task::decode(&b).expect("task state decodes"))
}

/// Reads `BATON_ALERTS` from the start until an alert satisfies `ok`.
pub async fn wait_alert(
    js: &jetstream::Context,
    mut ok: impl FnMut(&Alert) -> bool,
) -> (Alert, HeaderMap) {
    let stream = js
        .get_stream(subjects::ALERTS_STREAM)
        .await
        .expect("alerts stream");
    let consumer = stream
        .create_consumer(OrderedConfig {
            filter_subject: subjects::ALERTS_RAISE_ALL.into(),
            ..Default::default()
        })
        .await
        .expect("consumer");
    let mut messages = consumer.messages().await.expect("messages");
    let found = tokio::time::timeout(PATIENCE, async {
        while let Some(m) = messages.next().await {
            let m = m.expect("message");
            let alert = Alert::decode(&m.payload).expect("alert decodes");
            if ok(&alert) {
                return Some((alert, m.headers.clone().unwrap_or_default()));
            }
        }
        None
    })
    .await;
    match found {
        Ok(Some(found)) => found,
        _ => panic!("no matching alert arrived"),
    }
}

/// Every alert stored so far.
pub async fn all_alerts(js: &jetstream::Context) -> Vec<Alert> {
    read_all(js, subjects::ALERTS_STREAM, subjects::ALERTS_RAISE_ALL)
        .await
        .into_iter()
        .map(|m| Alert::decode(&m.payload).expect("alert decodes"))
        .collect()
}

/// Every message of `stream` on `filter`, in order.
pub async fn read_all(
    js: &jetstream::Context,
    stream: &str,
    filter: &str,
) -> Vec<baton_jetstream::read::Stored> {
    baton_jetstream::read::read_subject(js, stream, filter, 0, None)
        .await
        .expect("read stream")
}

pub fn is_alert(kind: AlertKind, task_id: &str) -> impl FnMut(&Alert) -> bool + '_ {
    move |a| {
        a.kind == kind
            && a.task.as_ref().is_some_and(|t| t.as_str() == task_id)
            && a.state == AlertState::Firing
    }
}

/// Sends a protobuf request to the query API and decodes the reply.
pub async fn request<Req: Message, Resp: Message + Default>(
    client: &async_nats::Client,
    endpoint: &str,
    req: &Req,
) -> Resp {
    let reply = tokio::time::timeout(
        PATIENCE,
        client.request(
            format!("{}.{endpoint}", subjects::API_PREFIX),
            req.encode_to_vec().into(),
        ),
    )
    .await
    .expect("reply in time")
    .expect("request");
    Resp::decode(reply.payload).expect("reply decodes")
}

/// Waits until `url` answers HTTP GET `path` with a body containing `needle`.
pub async fn http_get(addr: &str, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect http");
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .expect("write");
    let mut buf = String::new();
    stream.read_to_string(&mut buf).await.expect("read");
    let status = buf
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = buf.split("\r\n\r\n").nth(1).unwrap_or_default().to_string();
    (status, body)
}

/// Waits for a service's liveness record and returns it.
/// Waits until the service instance at `key` reports itself active (it
/// holds the leadership lease and consumes).
pub async fn wait_liveness(js: &jetstream::Context, key: &str) -> baton_proto::v1::ServiceStatus {
    wait_kv(js, subjects::SERVICES_BUCKET, key, |b| {
        baton_proto::v1::ServiceStatus::decode(b)
            .ok()
            // Active, or a service without leadership (empty role).
            .filter(|s| s.role != "standby")
    })
    .await
}

/// The leadership lease ttl the tests' service processes run with: short,
/// so that a restart after a kill takes over quickly.
pub const TEST_LEASE_TTL: &str = "1s";

/// A server plus the `baton` services as child processes.
pub struct Rig {
    pub server: NatsServer,
    pub client: async_nats::Client,
    pub js: jetstream::Context,
    pub dir: tempfile::TempDir,
    pub orchestrator: Option<BatonProcess>,
    pub starts: usize,
    /// Other services started for the test (killed on drop).
    pub extra: Vec<BatonProcess>,
}

impl Rig {
    pub async fn new() -> Rig {
        let server = NatsServer::start().await.expect("server");
        let client = async_nats::connect(server.url()).await.expect("connect");
        let js = jetstream::new(client.clone());
        Rig {
            server,
            client,
            js,
            dir: tempfile::tempdir().expect("tmp"),
            orchestrator: None,
            starts: 0,
            extra: Vec::new(),
        }
    }

    /// Starts the orchestrator as a child process and waits until it has
    /// written a fresh liveness record.
    pub async fn start_orchestrator(&mut self, extra: &[&str]) -> pb::ServiceStatus {
        self.starts += 1;
        let instance = format!("o{}", self.starts);
        let log = self.dir.path().join(format!("orchestrator-{instance}.log"));
        let mut args = vec![
            "orchestrator",
            "--http",
            "127.0.0.1:0",
            "--instance",
            &instance,
            "--liveness-interval",
            "200ms",
            "--lease-ttl",
            TEST_LEASE_TTL,
        ];
        args.extend_from_slice(extra);
        self.orchestrator = Some(BatonProcess::spawn(&self.server.url(), &args, &log));
        wait_liveness(&self.js, &format!("orchestrator.{instance}")).await
    }

    /// Starts the stall detector (instance `d`) with these rules and waits
    /// for its liveness record.
    pub async fn start_detector(&mut self, rules: &str) {
        let path = self.dir.path().join("rules.toml");
        std::fs::write(&path, rules).expect("write rules");
        let log = self.dir.path().join("detector.log");
        let path = path.to_string_lossy().to_string();
        let detector = BatonProcess::spawn(
            &self.server.url(),
            &[
                "stall-detector",
                "--rules",
                &path,
                "--instance",
                "d",
                "--liveness-interval",
                "200ms",
                "--lease-ttl",
                TEST_LEASE_TTL,
            ],
            &log,
        );
        self.extra.push(detector);
        wait_liveness(&self.js, "stall-detector.d").await;
    }

    pub fn log(&self, instance: usize) -> String {
        std::fs::read_to_string(
            self.dir
                .path()
                .join(format!("orchestrator-o{instance}.log")),
        )
        .unwrap_or_default()
    }

    /// Waits until the orchestrator reports (in its liveness record) that
    /// everything in the stream is durable and acknowledged.
    pub async fn wait_caught_up(&self) {
        let last = self.last_seq().await;
        wait_kv(
            &self.js,
            subjects::SERVICES_BUCKET,
            &format!("orchestrator.o{}", self.starts),
            |b| {
                let s = pb::ServiceStatus::decode(b).ok()?;
                (s.applied_seq >= last).then_some(())
            },
        )
        .await;
    }

    pub async fn last_seq(&self) -> u64 {
        let mut s = self
            .js
            .get_stream(subjects::EVENTS_STREAM)
            .await
            .expect("stream");
        s.info().await.expect("info").state.last_sequence
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        // A failing test shows what the services logged.
        if std::thread::panicking() {
            eprint!("{}", log_tails(self.dir.path()));
        }
    }
}

/// The last 40 lines of every `*.log` file in `dir`, in name order: what
/// the services of a failed test logged.
pub fn log_tails(dir: &std::path::Path) -> String {
    let mut paths: Vec<_> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    paths.sort();
    let mut out = String::new();
    for path in paths {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(40).collect();
        out.push_str(&format!("--- {} (last 40 lines) ---\n", path.display()));
        for line in tail.into_iter().rev() {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// The state the orchestrator should have materialised: the pure fold of
/// the whole events stream, and how many events the fold refused (each
/// refusal is one `OWNERSHIP_VIOLATION`).
pub async fn fold_of_stream(
    js: &jetstream::Context,
) -> (std::collections::HashMap<String, Task>, usize) {
    use baton_core::{Disposition, EventMeta, Policy, apply, wire::read_event};
    let mut tasks: std::collections::HashMap<String, Option<Task>> = Default::default();
    let mut refused = 0;
    for m in read_all(js, subjects::EVENTS_STREAM, subjects::EVENTS_ALL).await {
        let Ok(event) = read_event(&m.subject, &m.payload) else {
            continue;
        };
        let slot = tasks.entry(event.task.to_string()).or_default();
        let outcome = apply(
            slot,
            &event,
            EventMeta {
                seq: m.seq,
                stored_at: m.stored_at,
            },
            &Policy::default(),
        );
        if matches!(outcome.disposition, Disposition::Refused(_)) {
            refused += 1;
        }
    }
    (
        tasks
            .into_iter()
            .filter_map(|(k, v)| v.map(|t| (k, t)))
            .collect(),
        refused,
    )
}
