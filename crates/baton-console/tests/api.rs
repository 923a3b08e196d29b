//! The console's JSON API against a real nats-server with the real
//! orchestrator and stall detector (in-process), events published as an
//! agent would, and plain HTTP requests: what scripts rely on.

// The 10,000-task test prints what it measured.
#![allow(clippy::print_stderr)]

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use async_nats::{HeaderMap, jetstream};
use baton_console::{Config, OperatorAccess, Running};
use baton_core::{
    AgentId, Event, EventBody, StageName, TaskCreated, TaskId, WorkflowId, rules::Rules, subjects,
};
use baton_jetstream::NatsOptions;
use baton_service::shutdown;
use baton_testkit::NatsServer;
use serde_json::{Value, json};
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::TcpStream,
};

struct Rig {
    _server: NatsServer,
    js: jetstream::Context,
    console: SocketAddr,
    readonly: SocketAddr,
    _trigger: shutdown::Trigger,
    _running: Vec<Running>,
    _services: (baton_orchestrator::Running, baton_stall::Running),
    n: u64,
}

impl Rig {
    async fn start() -> Rig {
        let server = NatsServer::start().await.expect("nats-server");
        let url = server.url();
        let client = async_nats::connect(&url).await.expect("connect");
        let js = jetstream::new(client);
        let (trigger, shutdown) = shutdown::channel();
        let mut orch = baton_orchestrator::Config::new(NatsOptions::new(&url));
        orch.instance = "api-test".into();
        orch.liveness_interval = Duration::from_millis(200);
        let _orch = baton_orchestrator::start(orch, shutdown.clone())
            .await
            .expect("orchestrator");
        let mut det = baton_stall::Config::new(NatsOptions::new(&url));
        det.instance = "api-test".into();
        det.rules = Rules::from_toml("[defaults]\nrenotify = \"1s\"\n").expect("rules");
        det.grace = Duration::from_millis(20);
        det.liveness_interval = Duration::from_millis(200);
        let _det = baton_stall::start(det, shutdown.clone())
            .await
            .expect("detector");
        let console = |operator| {
            let mut c = Config::new(NatsOptions::new(&url));
            c.listen = ([127, 0, 0, 1], 0).into();
            c.operator = operator;
            baton_console::start(c, shutdown.clone())
        };
        let op = console(OperatorAccess::SameConnection { name: "ops".into() })
            .await
            .expect("console");
        let ro = console(OperatorAccess::None).await.expect("console");
        Rig {
            _server: server,
            js,
            console: op.addr,
            readonly: ro.addr,
            _trigger: trigger,
            _running: vec![op, ro],
            _services: (_orch, _det),
            n: 0,
        }
    }

    /// Publishes an event as agent `agent` on its own subject.
    async fn publish(
        &mut self,
        task: &str,
        workflow: &str,
        agent: &str,
        epoch: u64,
        body: EventBody,
    ) {
        self.n += 1;
        let event = Event::new(
            format!("api-{}-{}", std::process::id(), self.n),
            TaskId::new(task).unwrap(),
            WorkflowId::new(workflow).unwrap(),
            AgentId::new(agent).unwrap(),
            body,
        )
        .with_epoch(epoch);
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Msg-Id", event.event_id.as_str());
        self.js
            .publish_with_headers(
                subjects::event(&event.task, &event.agent),
                headers,
                event.encode_to_vec().into(),
            )
            .await
            .expect("publish")
            .await
            .expect("stored");
    }
}

fn created(stage: &str) -> EventBody {
    EventBody::Created(TaskCreated {
        stage: Some(StageName::new(stage).unwrap()),
        title: format!("a task in {stage}"),
        ..TaskCreated::default()
    })
}

fn claimed(lease: Duration) -> EventBody {
    EventBody::Claimed {
        heartbeat_within: Some(lease),
    }
}

/// One HTTP request; the status and the body.
async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<(&str, &str)>,
) -> (u16, String) {
    let mut s = TcpStream::connect(addr)
        .await
        .expect("connect to the console");
    let (ctype, body) = body.unwrap_or(("application/json", ""));
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    let (head, body) = out.split_once("\r\n\r\n").expect("a response head");
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, body.to_string())
}

async fn get(addr: SocketAddr, path: &str) -> (u16, Value) {
    let (status, body) = request(addr, "GET", path, None).await;
    (
        status,
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}")),
    )
}

async fn post(addr: SocketAddr, path: &str, body: &Value) -> (u16, Value) {
    let (status, body) = request(
        addr,
        "POST",
        path,
        Some(("application/json", &body.to_string())),
    )
    .await;
    (status, serde_json::from_str(&body).unwrap())
}

/// Polls `GET path` until `ok` holds (the console's state follows NATS).
async fn until(addr: SocketAddr, path: &str, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body) = get(addr, path).await;
        if status == 200 && ok(&body) {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: never true; last: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn has_task(list: &Value, task: &str) -> bool {
    list.as_array()
        .is_some_and(|l| l.iter().any(|a| a["task"] == task))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_json_api_shows_tasks_alerts_health_and_makes_silences() {
    let mut rig = Rig::start().await;
    let c = rig.console;
    rig.publish("t1", "w", "planner", 0, created("draft")).await;
    rig.publish("t1", "w", "a1", 0, claimed(Duration::from_secs(1)))
        .await;

    // The board: the stage as a column, the task as a card.
    let board = until(
        c,
        "/api/pipeline?workflow=w",
        "t1 owned on the board",
        |b| b["columns"][0]["cards"][0]["owner"] == "a1",
    )
    .await;
    let card = &board["columns"][0]["cards"][0];
    assert_eq!(board["columns"][0]["column"], "draft");
    assert_eq!(
        (card["id"].as_str(), card["epoch"].as_u64()),
        (Some("t1"), Some(1))
    );
    assert_eq!(card["status"], "working");
    assert_eq!(card["last_event"]["kind"], "claimed");

    // No heartbeat within the 1s lease: the alert, and the card stalled.
    let alerts = until(c, "/api/alerts", "heartbeat_missed firing", |a| {
        has_task(&a["firing"], "t1")
    })
    .await;
    let alert = &alerts["firing"][0];
    assert_eq!(alert["kind"], "heartbeat_missed");
    assert_eq!(alert["agents"], json!(["a1"]));
    assert!(
        alert["expected"].as_str().unwrap().contains("heartbeat"),
        "{alert}"
    );
    assert!(alert["due_at"].is_string() && alert["last_event"]["kind"] == "claimed");
    let (_, stalled) = get(c, "/api/tasks?stalled=true").await;
    assert_eq!(stalled["tasks"][0]["id"], "t1");
    assert_eq!(stalled["tasks"][0]["stalled"], true);

    // Someone else's heartbeat is refused; the task page says why.
    rig.publish(
        "t1",
        "w",
        "mallory",
        1,
        EventBody::Heartbeat {
            note: "mine".into(),
            progress: false,
        },
    )
    .await;
    let page = until(c, "/api/tasks/t1", "the refused event", |p| {
        p["timeline"].as_array().is_some_and(|t| t.len() == 3)
    })
    .await;
    let tl = page["timeline"].as_array().unwrap();
    assert_eq!(
        (tl[1]["owner"].as_str(), tl[1]["epoch"].as_u64()),
        (Some("a1"), Some(1))
    );
    assert!(tl[1]["refused"].is_null());
    let why = tl[2]["refused"].as_str().expect("refused with a reason");
    assert!(why.contains("mallory") && why.contains("a1"), "{why}");
    assert_eq!(page["task"]["owner"], "a1");

    // Health: both services, the streams, the services' consumers.
    let health = until(c, "/api/health", "both services and consumers", |h| {
        h["services"].as_array().is_some_and(|s| s.len() == 2)
            && h["consumers"].as_array().is_some_and(|s| s.len() == 2)
    })
    .await;
    let services: Vec<&str> = health["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["service"].as_str().unwrap())
        .collect();
    assert_eq!(services, ["orchestrator", "stall-detector"]);
    assert!(
        health["services"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["alive"] == true && s["role"] == "active")
    );
    assert!(
        health["streams"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["stream"] == "BATON_EVENTS")
    );
    assert_eq!(health["last_alert"]["task"], "t1");

    // An operator silences it, as `baton silence add` would.
    let (status, s) = post(
        c,
        "/api/silences",
        &json!({"task": "t1", "kind": "heartbeat_missed", "for": "10m", "reason": "known"}),
    )
    .await;
    assert_eq!(status, 201, "{s}");
    let id = s["id"].as_str().unwrap().to_string();
    assert_eq!(
        (s["created_by"].as_str(), s["active"].as_bool()),
        (Some("ops"), Some(true))
    );
    let stored = baton_jetstream::silences::list(&rig.js).await.unwrap();
    assert!(
        stored
            .iter()
            .any(|x| x.id == id && x.task.as_ref().is_some_and(|t| t.as_str() == "t1"))
    );
    until(c, "/api/alerts", "the alert shown silenced", |a| {
        a["firing"][0]["silenced_by"] == id.as_str()
    })
    .await;
    // ... and ends it.
    let (status, e) = post(c, &format!("/api/silences/{id}/expire"), &json!({})).await;
    assert_eq!((status, e["active"].as_bool()), (200, Some(false)), "{e}");
    until(c, "/api/alerts", "the silence ended", |a| {
        a["firing"][0]["silenced_by"].is_null()
    })
    .await;

    // A read-only console may not.
    let (status, e) = post(
        rig.readonly,
        "/api/silences",
        &json!({"task": "t1", "for": "1h"}),
    )
    .await;
    assert_eq!(status, 403);
    assert!(e["error"].as_str().unwrap().contains("read-only"), "{e}");
    let (_, me) = get(rig.readonly, "/api/me").await;
    assert_eq!(me["operator"], false);

    // Bad input gets a clear error.
    for (body, status, says) in [
        (
            json!({"for": "1h"}),
            400,
            "at least one of task, kind, agent",
        ),
        (json!({"task": "t1", "for": "0s"}), 400, "longer than 0s"),
        (
            json!({"kind": "nope", "for": "1h"}),
            400,
            "unknown alert kind",
        ),
        (json!({"task": "a b", "for": "1h"}), 400, "invalid task"),
        (json!({"task": "t1", "for": "soon"}), 400, "bad \"for\""),
        (
            json!({"task": "t1", "for": "1h", "color": "red"}),
            400,
            "unknown field",
        ),
    ] {
        let (got, e) = post(c, "/api/silences", &body).await;
        assert_eq!(got, status, "{body}: {e}");
        assert!(e["error"].as_str().unwrap().contains(says), "{body}: {e}");
    }
    let (status, _) = request(c, "POST", "/api/silences", Some(("text/plain", "{}"))).await;
    assert_eq!(status, 415);
    let (status, _) = request(
        c,
        "POST",
        "/api/silences",
        Some(("application/json", "{not json")),
    )
    .await;
    assert_eq!(status, 400);
    let (status, _) = post(c, "/api/silences/nope/expire", &json!({})).await;
    assert_eq!(status, 404);
    for (path, status) in [
        ("/api/tasks/bad%20id", 400),
        ("/api/tasks/never-made", 404),
        ("/api/tasks?status=zzz", 400),
        ("/api/pipeline?limit=many", 400),
        ("/api/nope", 404),
    ] {
        let (got, e) = get(c, path).await;
        assert_eq!(got, status, "{path}: {e}");
        assert!(e["error"].is_string(), "{path}: {e}");
    }
    // A page elsewhere that rebinds its name to 127.0.0.1 gets nothing.
    let mut s = TcpStream::connect(c).await.unwrap();
    s.write_all(b"GET /api/alerts HTTP/1.1\r\nHost: evil.example\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    assert!(out.starts_with("HTTP/1.1 403"), "{out}");
    let (status, _) = request(c, "GARBAGE", "/", None).await;
    assert_eq!(status, 404);
    let mut s = TcpStream::connect(c).await.unwrap();
    s.write_all(b"nonsense\r\n\r\n").await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    assert!(out.starts_with("HTTP/1.1 400"), "{out}");
    // Still serving.
    let (status, list) = get(c, "/api").await;
    assert_eq!(status, 200);
    assert!(list.as_array().unwrap().len() >= 10);
}

/// Reads server-sent events until one's data contains `needle`; returns the
/// time it took.
async fn until_event(lines: &mut tokio::io::Lines<BufReader<TcpStream>>, needle: &str) -> Duration {
    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if line.starts_with("data:") && line.contains(needle) {
                return;
            }
        }
        panic!("stream ended before {needle}");
    })
    .await
    .unwrap_or_else(|_| panic!("no event with {needle}"));
    started.elapsed()
}

async fn open_stream(addr: SocketAddr, workflow: &str) -> tokio::io::Lines<BufReader<TcpStream>> {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let req = format!("GET /api/stream?workflow={workflow} HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut lines = BufReader::new(s).lines();
    assert_eq!(
        lines.next_line().await.unwrap().as_deref(),
        Some("HTTP/1.1 200 OK")
    );
    until_event(&mut lines, "now").await; // hello
    lines
}

/// 10,000 live tasks: the board and the live feed stay small and fast.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_live_tasks_stay_fast() {
    let mut rig = Rig::start().await;
    let c = rig.console;
    let stages = ["plan", "draft", "review", "edit", "publish"];
    let started = Instant::now();
    // Acks awaited in windows: the client holds at most 5,000 in flight.
    let mut acks: Vec<jetstream::context::PublishAckFuture> = Vec::with_capacity(1000);
    for i in 0..10_000u32 {
        if acks.len() == 1000 {
            for ack in acks.drain(..) {
                ack.await.expect("stored");
            }
        }
        rig.n += 1;
        let event = Event::new(
            format!("big-{}-{}", std::process::id(), rig.n),
            TaskId::new(format!("big-{i:05}")).unwrap(),
            WorkflowId::new("big").unwrap(),
            AgentId::new("planner").unwrap(),
            created(stages[i as usize % stages.len()]),
        );
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Msg-Id", event.event_id.as_str());
        acks.push(
            rig.js
                .publish_with_headers(
                    subjects::event(&event.task, &event.agent),
                    headers,
                    event.encode_to_vec().into(),
                )
                .await
                .expect("publish"),
        );
    }
    for ack in acks {
        ack.await.expect("stored");
    }
    until(c, "/api/workflows", "10,000 tasks in the console", |w| {
        w[0]["tasks"] == 10_000
    })
    .await;
    eprintln!(
        "10,000 tasks published, folded and in the console in {:?}",
        started.elapsed()
    );

    let t = Instant::now();
    let (status, body) = request(c, "GET", "/api/pipeline?workflow=big", None).await;
    let board_time = t.elapsed();
    assert_eq!(status, 200);
    let board: Value = serde_json::from_str(&body).unwrap();
    let columns = board["columns"].as_array().unwrap();
    assert_eq!(columns.len(), 5);
    assert!(
        columns
            .iter()
            .all(|col| col["total"] == 2000 && col["cards"].as_array().unwrap().len() == 50)
    );
    eprintln!(
        "board of 10,000 tasks (50 cards per column): {} bytes in {board_time:?}",
        body.len()
    );
    assert!(
        body.len() < 200_000,
        "the board sends what it shows, not every task: {} bytes",
        body.len()
    );
    assert!(
        board_time < Duration::from_secs(1),
        "board took {board_time:?}"
    );

    // One change among 10,000: the page gets that card, not a reload.
    let mut lines = open_stream(c, "big").await;
    let t = Instant::now();
    rig.publish(
        "big-04242",
        "big",
        "a1",
        0,
        claimed(Duration::from_secs(60)),
    )
    .await;
    until_event(&mut lines, "\"id\":\"big-04242\"").await;
    let delta_time = t.elapsed();
    eprintln!("one claim among 10,000 tasks reached the page in {delta_time:?}");
    assert!(
        delta_time < Duration::from_secs(1),
        "delta took {delta_time:?}"
    );
}
