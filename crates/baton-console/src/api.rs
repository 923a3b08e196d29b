//! The routes: the page and its assets, the JSON API under `/api`, and the
//! live feed (`/api/stream`, server-sent events). Reads come from the
//! [`Model`](crate::model::Model) the feeds keep, or, for a task's page, from
//! the orchestrator's query API and the streams; the only writes are
//! silences, through `baton_jetstream::silences` with the operator
//! connection.

use std::{sync::Arc, time::Duration};

use async_nats::{Client, jetstream};
use baton_core::{
    Task, TaskId, TaskStatus, WorkflowId, subjects,
    wire::{read_context_entry, read_event, time_from_wire},
};
use baton_jetstream::{read, silences};
use baton_proto::{prost::Message, v1 as pb};
use baton_service::shutdown::Shutdown;
use serde::{Deserialize, Serialize};
use tokio::{io::AsyncWriteExt, net::TcpStream, sync::broadcast};

use crate::{
    feed::{Shared, lock},
    http::{Reply, Request, StreamBody},
    model::{Card, Delta, TaskFilter, silence_json},
};

const INDEX: &[u8] = include_bytes!("../assets/index.html");
const CSS: &[u8] = include_bytes!("../assets/console.css");
const JS: &[u8] = include_bytes!("../assets/console.js");

/// Default and largest number of cards per column.
pub const DEFAULT_CARDS: usize = 50;
pub const MAX_CARDS: usize = 1000;
/// Default and largest page of `/api/tasks`.
pub const DEFAULT_PAGE: usize = 1000;
pub const MAX_PAGE: usize = 10_000;
/// How long a query to the orchestrator may take.
const API_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest decision body the task page carries (the CLI shows the rest).
const MAX_BODY_SHOWN: usize = 4096;

/// Whether operator actions are possible, and with which connection.
// One per console: variant sizes do not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum Operator {
    /// Silences are written with this connection, as `name`.
    Enabled {
        js: jetstream::Context,
        name: String,
    },
    /// Read-only; the reason is shown next to the disabled buttons.
    Disabled { why: String },
}

/// What every handler shares.
#[derive(Debug, Clone)]
pub struct App {
    pub model: Shared,
    pub client: Client,
    pub js: jetstream::Context,
    pub operator: Arc<Operator>,
    pub deltas: broadcast::Sender<Arc<Delta>>,
    pub shutdown: Shutdown,
    /// Serving on a loopback address: only requests naming a loopback host
    /// are answered (a page elsewhere cannot rebind its name to us).
    pub loopback: bool,
}

/// Whether `Host` names this machine's loopback (`localhost`,
/// `127.0.0.1`, `[::1]`, with or without a port).
fn loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => host.rsplit_once(':').map_or(host, |(h, _)| h),
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The endpoints, for `/api` (and the README).
pub const ENDPOINTS: [(&str, &str); 13] = [
    (
        "GET /api/pipeline?workflow=W&limit=N",
        "a workflow's board: columns (stages, then finished) with counts and their first N cards",
    ),
    (
        "GET /api/workflows",
        "workflows with task counts and decision-record versions",
    ),
    (
        "GET /api/tasks?workflow=&stage=&status=&owner=&stalled=true&after=ID&limit=N",
        "tasks as cards, in id order, paged by id",
    ),
    (
        "GET /api/tasks/ID",
        "one task: state, alerts, timeline (owner and epoch after each event, refusals with why), its workflow's decision record",
    ),
    (
        "GET /api/workflows/W/context",
        "a workflow's decision record",
    ),
    (
        "GET /api/alerts",
        "firing conditions, recently resolved ones, protocol reports, silences",
    ),
    ("GET /api/silences", "every silence, active and ended"),
    (
        "POST /api/silences",
        "operators: add a silence {task, kind, agent, for, reason, by} (JSON)",
    ),
    (
        "POST /api/silences/ID/expire",
        "operators: end a silence now",
    ),
    (
        "GET /api/health",
        "services and their instances, stream sizes, consumer lag, the last alert, decision-record versions",
    ),
    (
        "GET /api/me",
        "whether this console may act as an operator, and why not",
    ),
    (
        "GET /api/stream?workflow=W",
        "server-sent events: changed cards and columns of W, changed alerts, silences",
    ),
    ("GET /api", "this list"),
];

/// Routes a request.
pub async fn handle(app: App, req: Request) -> Reply {
    if app.loopback && req.header("host").is_some_and(|h| !loopback_host(h)) {
        return Reply::error(403, "this console answers requests for localhost only");
    }
    let segments: Vec<&str> = req.path.trim_matches('/').split('/').collect();
    let now = crate::now();
    match (req.method.as_str(), segments.as_slice()) {
        ("GET", [""]) | ("GET", ["index.html"]) => Reply::asset("text/html; charset=utf-8", INDEX),
        ("GET", ["console.css"]) => Reply::asset("text/css; charset=utf-8", CSS),
        ("GET", ["console.js"]) => Reply::asset("text/javascript; charset=utf-8", JS),
        ("GET", ["api"]) => Reply::json(
            200,
            &ENDPOINTS
                .iter()
                .map(|(path, what)| serde_json::json!({ "endpoint": path, "what": what }))
                .collect::<Vec<_>>(),
        ),
        ("GET", ["api", "pipeline"]) => {
            let limit = match number(&req, "limit", DEFAULT_CARDS, MAX_CARDS) {
                Ok(n) => n,
                Err(r) => return r,
            };
            let board = lock(&app.model).board(req.param("workflow"), limit, now);
            Reply::json(200, &board)
        }
        ("GET", ["api", "workflows"]) => Reply::json(200, &lock(&app.model).workflows()),
        ("GET", ["api", "workflows", w, "context"]) => match WorkflowId::new(*w) {
            Ok(w) => match decision_record(&app.js, &w).await {
                Ok(record) => Reply::json(200, &record),
                Err(e) => Reply::error(503, &e),
            },
            Err(e) => Reply::error(400, &format!("invalid workflow id: {e}")),
        },
        ("GET", ["api", "tasks"]) => list_tasks(&app, &req, now),
        ("GET", ["api", "tasks", id]) => task_page(&app, id, now).await,
        ("GET", ["api", "alerts"]) => Reply::json(200, &lock(&app.model).alerts(now)),
        ("GET", ["api", "silences"]) => match silences::list(&app.js).await {
            Ok(list) => Reply::json(
                200,
                &list
                    .iter()
                    .map(|s| silence_json(s, now))
                    .collect::<Vec<_>>(),
            ),
            Err(e) => Reply::error(503, &e.to_string()),
        },
        ("POST", ["api", "silences"]) => add_silence(&app, &req, now).await,
        ("POST", ["api", "silences", id, "expire"]) => expire_silence(&app, &req, id, now).await,
        ("GET", ["api", "health"]) => Reply::json(200, &lock(&app.model).health(now)),
        ("GET", ["api", "me"]) => Reply::json(200, &me(&app)),
        ("GET", ["api", "stream"]) => Reply::Stream(Box::new(Feed {
            rx: app.deltas.subscribe(),
            workflow: req.param("workflow").map(str::to_string),
            shutdown: app.shutdown.clone(),
        })),
        (_, ["api", ..]) if !matches!(req.method.as_str(), "GET" | "POST") => {
            Reply::error(405, "GET or POST only")
        }
        _ => Reply::error(404, &format!("no such page {:?}; see /api", req.path)),
    }
}

fn number(req: &Request, name: &str, default: usize, max: usize) -> Result<usize, Reply> {
    match req.param(name) {
        None => Ok(default),
        Some(v) => match v.parse::<usize>() {
            Ok(0) => Ok(default),
            Ok(n) => Ok(n.min(max)),
            Err(_) => Err(Reply::error(
                400,
                &format!("{name} must be a number, not {v:?}"),
            )),
        },
    }
}

#[derive(Serialize)]
struct MeJson {
    operator: bool,
    /// The identity silences are made as.
    identity: Option<String>,
    /// Why operator actions are off.
    why: Option<String>,
}

fn me(app: &App) -> MeJson {
    match app.operator.as_ref() {
        Operator::Enabled { name, .. } => MeJson {
            operator: true,
            identity: Some(name.clone()),
            why: None,
        },
        Operator::Disabled { why } => MeJson {
            operator: false,
            identity: None,
            why: Some(why.clone()),
        },
    }
}

fn list_tasks(app: &App, req: &Request, now: baton_core::Time) -> Reply {
    let limit = match number(req, "limit", DEFAULT_PAGE, MAX_PAGE) {
        Ok(n) => n,
        Err(r) => return r,
    };
    let status = match req.param("status") {
        None => None,
        Some(s) => match TaskStatus::parse(s) {
            Some(s) => Some(s),
            None => {
                return Reply::error(
                    400,
                    &format!(
                        "unknown status {s:?}: use one of {}",
                        TaskStatus::ALL.map(TaskStatus::as_str).join(", ")
                    ),
                );
            }
        },
    };
    let stalled = match req.param("stalled") {
        None | Some("false") | Some("0") => false,
        Some("true") | Some("1") => true,
        Some(v) => return Reply::error(400, &format!("stalled must be true or false, not {v:?}")),
    };
    let filter = TaskFilter {
        workflow: req.param("workflow").map(str::to_string),
        stage: req.param("stage").map(str::to_string),
        status,
        owner: req.param("owner").map(str::to_string),
        stalled,
        after: req.param("after").map(str::to_string),
        limit,
    };
    let (tasks, total) = lock(&app.model).list_tasks(&filter, now);
    let truncated = tasks.len() < total && tasks.len() == limit;
    Reply::json(
        200,
        &serde_json::json!({ "tasks": tasks, "total": total, "truncated": truncated }),
    )
}

/// Sends a query to the orchestrator; `Err` says why there is no answer.
async fn query<Req: Message, Resp: Message + Default>(
    client: &Client,
    endpoint: &str,
    req: &Req,
) -> Result<Resp, String> {
    let subject = format!("{}.{endpoint}", subjects::API_PREFIX);
    let reply = tokio::time::timeout(
        API_TIMEOUT,
        client.request(subject, req.encode_to_vec().into()),
    )
    .await
    .map_err(|_| "the orchestrator did not answer within 5s".to_string())?
    .map_err(|e| match e.kind() {
        async_nats::client::RequestErrorKind::NoResponders => {
            "no orchestrator answers (is one running?)".to_string()
        }
        _ => format!("query {endpoint} failed: {e}"),
    })?;
    if let Some(h) = &reply.headers
        && let Some(code) = h.get("Nats-Service-Error-Code")
    {
        let why = h
            .get("Nats-Service-Error")
            .map_or_else(String::new, |v| v.to_string());
        return Err(format!(
            "the orchestrator refused {endpoint} ({code}): {why}"
        ));
    }
    Resp::decode(reply.payload).map_err(|e| format!("undecodable {endpoint} reply: {e}"))
}

#[derive(Serialize)]
struct TimelineJson {
    seq: u64,
    stored_at: Option<String>,
    agent: String,
    kind: String,
    /// The epoch the sender claimed to hold.
    event_epoch: u64,
    /// Owner and epoch after the event.
    owner: Option<String>,
    epoch: u64,
    status: Option<&'static str>,
    /// Why the event was refused; `None` when applied.
    refused: Option<String>,
    detail: String,
    event_id: String,
    /// The decision-record version the event carried (0 = none).
    context_version: u64,
}

#[derive(Serialize)]
struct DecisionJson {
    version: u64,
    author: String,
    summary: String,
    body: String,
    body_truncated: bool,
    supersedes: u64,
    stored_at: String,
}

#[derive(Serialize)]
struct RecordJson {
    workflow: String,
    /// The version of the record: its last entry's stream sequence.
    version: u64,
    decisions: Vec<DecisionJson>,
}

async fn decision_record(
    js: &jetstream::Context,
    workflow: &WorkflowId,
) -> Result<RecordJson, String> {
    let stored = read::read_subject(
        js,
        subjects::CONTEXT_STREAM,
        &subjects::workflow_context(workflow),
        0,
        None,
    )
    .await
    .map_err(|e| e.to_string())?;
    let decisions: Vec<DecisionJson> = stored
        .iter()
        .filter_map(|s| {
            let e = read_context_entry(&s.subject, &s.payload).ok()?;
            let body_truncated = e.body.len() > MAX_BODY_SHOWN;
            Some(DecisionJson {
                version: s.seq,
                author: e.author.to_string(),
                summary: e.summary,
                body: baton_core::alert::clip(&e.body, MAX_BODY_SHOWN).into_owned(),
                body_truncated,
                supersedes: e.supersedes,
                stored_at: s.stored_at.to_rfc3339(),
            })
        })
        .collect();
    Ok(RecordJson {
        workflow: workflow.to_string(),
        version: decisions.last().map_or(0, |d| d.version),
        decisions,
    })
}

#[derive(Serialize)]
struct TaskJson {
    #[serde(flatten)]
    card: Card,
    assignee: Option<String>,
    output_location: String,
    blocked_reason: String,
    outcome: String,
    lease_ms: Option<u128>,
    last_heartbeat_at: Option<String>,
    last_progress_at: Option<String>,
}

#[derive(Serialize)]
struct TaskPageJson {
    now: String,
    task: Option<TaskJson>,
    /// Where the state came from: `orchestrator` (freshest) or `kv`.
    source: &'static str,
    alerts: Vec<crate::model::AlertJson>,
    timeline: Vec<TimelineJson>,
    timeline_truncated: bool,
    /// Why the timeline is missing or incomplete.
    timeline_error: Option<String>,
    context: Option<RecordJson>,
    context_error: Option<String>,
}

async fn task_page(app: &App, id: &str, now: baton_core::Time) -> Reply {
    let id = match TaskId::new(id) {
        Ok(id) => id,
        Err(e) => return Reply::error(400, &format!("invalid task id: {e}")),
    };
    let fresh = query::<_, pb::GetTaskResponse>(
        &app.client,
        "task.get",
        &pb::GetTaskRequest {
            task_id: id.to_string(),
        },
    )
    .await
    .ok()
    .and_then(|r| r.task)
    .and_then(|t| Task::try_from(t).ok());
    let (task, source) = match fresh {
        Some(t) => (Some(t), "orchestrator"),
        None => (lock(&app.model).task(id.as_str()).cloned(), "kv"),
    };
    let timeline = query::<_, pb::TimelineResponse>(
        &app.client,
        "task.timeline",
        &pb::TimelineRequest {
            task_id: id.to_string(),
            limit: 0,
        },
    )
    .await;
    // The timeline does not say which decision-record version each event
    // carried; the events do.
    let versions: std::collections::HashMap<u64, u64> = read::read_subject(
        &app.js,
        subjects::EVENTS_STREAM,
        &subjects::task_events(&id),
        0,
        None,
    )
    .await
    .map(|stored| {
        stored
            .iter()
            .filter_map(|s| {
                Some((
                    s.seq,
                    read_event(&s.subject, &s.payload).ok()?.context_version,
                ))
            })
            .collect()
    })
    .unwrap_or_default();
    let (entries, truncated, timeline_error) = match timeline {
        Ok(r) => {
            let error = (!r.error.is_empty()).then_some(r.error);
            let entries = r
                .entries
                .into_iter()
                .map(|e| TimelineJson {
                    seq: e.seq,
                    stored_at: time_from_wire("stored_at", e.stored_at.as_ref())
                        .ok()
                        .flatten()
                        .map(|t| t.to_rfc3339()),
                    agent: e.agent_id,
                    kind: e.kind,
                    event_epoch: e.event_epoch,
                    owner: (!e.owner.is_empty()).then_some(e.owner),
                    epoch: e.epoch,
                    status: pb::TaskStatus::try_from(e.status)
                        .ok()
                        .and_then(|s| TaskStatus::try_from(s).ok())
                        .map(TaskStatus::as_str),
                    refused: (!e.violation.is_empty()).then_some(e.violation),
                    detail: e.detail,
                    event_id: e.event_id,
                    context_version: versions.get(&e.seq).copied().unwrap_or(0),
                })
                .collect();
            (entries, r.truncated, error)
        }
        Err(e) => (Vec::new(), false, Some(e)),
    };
    let (context, context_error) = match &task {
        Some(t) => match decision_record(&app.js, &t.workflow).await {
            Ok(r) => (Some(r), None),
            Err(e) => (None, Some(e)),
        },
        None => (None, None),
    };
    let model = lock(&app.model);
    let task_json = task.as_ref().map(|t| TaskJson {
        card: model.card(t, now),
        assignee: t.assignee().map(ToString::to_string),
        output_location: t.output_location().to_string(),
        blocked_reason: t.blocked_reason().to_string(),
        outcome: t.outcome().to_string(),
        lease_ms: t.lease.map(|l| l.as_millis()),
        last_heartbeat_at: t.last_heartbeat_at.map(|t| t.to_rfc3339()),
        last_progress_at: t.last_progress_at.map(|t| t.to_rfc3339()),
    });
    let alerts = model.task_alerts(id.as_str(), now);
    drop(model);
    if task_json.is_none() && entries.is_empty() {
        return Reply::error(404, &format!("unknown task {id}"));
    }
    Reply::json(
        200,
        &TaskPageJson {
            now: now.to_rfc3339(),
            task: task_json,
            source,
            alerts,
            timeline: entries,
            timeline_truncated: truncated,
            timeline_error,
            context,
            context_error,
        },
    )
}

/// What `POST /api/silences` takes.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SilenceRequest {
    task: Option<String>,
    kind: Option<String>,
    agent: Option<String>,
    /// A duration such as `30m`, `2h`.
    #[serde(rename = "for")]
    duration: String,
    #[serde(default)]
    reason: String,
    by: Option<String>,
}

/// Operator requests must be JSON from this console's own page: a
/// cross-site form cannot send `application/json` without the browser
/// asking first (and this server never answers that question).
fn check_write(app: &App, req: &Request) -> Result<(jetstream::Context, String), Reply> {
    let (js, name) = match app.operator.as_ref() {
        Operator::Enabled { js, name } => (js.clone(), name.clone()),
        Operator::Disabled { why } => return Err(Reply::error(403, why)),
    };
    let json = req
        .header("content-type")
        .is_some_and(|c| c.to_ascii_lowercase().starts_with("application/json"));
    if !json {
        return Err(Reply::error(415, "send Content-Type: application/json"));
    }
    if let (Some(origin), Some(host)) = (req.header("origin"), req.header("host")) {
        let origin_host = origin.split_once("://").map_or(origin, |(_, h)| h);
        if origin_host != host {
            return Err(Reply::error(
                403,
                &format!("cross-origin request from {origin} refused"),
            ));
        }
    }
    Ok((js, name))
}

async fn add_silence(app: &App, req: &Request, now: baton_core::Time) -> Reply {
    let (js, name) = match check_write(app, req) {
        Ok(w) => w,
        Err(r) => return r,
    };
    let body: SilenceRequest = match serde_json::from_slice(&req.body) {
        Ok(b) => b,
        Err(e) => return Reply::error(400, &format!("bad silence request: {e}")),
    };
    let duration = match baton_core::rules::parse_duration(&body.duration) {
        Ok(d) => d,
        Err(e) => return Reply::error(400, &format!("bad \"for\": {e}")),
    };
    let silence = match (silences::NewSilence {
        task: body.task,
        kind: body.kind,
        agent: body.agent,
        duration,
        reason: body.reason,
        by: body.by.filter(|b| !b.is_empty()).unwrap_or(name),
    })
    .build(now)
    {
        Ok(s) => s,
        Err(e) => return Reply::error(400, &e.to_string()),
    };
    match silences::add(&js, &silence).await {
        Ok(()) => {
            lock(&app.model).put_silence(&silence.id, Some(silence.clone()));
            Reply::json(201, &silence_json(&silence, now))
        }
        Err(e) => Reply::error(502, &e.to_string()),
    }
}

async fn expire_silence(app: &App, req: &Request, id: &str, now: baton_core::Time) -> Reply {
    let (js, _) = match check_write(app, req) {
        Ok(w) => w,
        Err(r) => return r,
    };
    match silences::expire(&js, id, now).await {
        Ok(mut s) => {
            s.until = now;
            lock(&app.model).put_silence(id, Some(s.clone()));
            Reply::json(200, &silence_json(&s, now))
        }
        Err(e @ silences::SilenceError::NotFound(_)) => Reply::error(404, &e.to_string()),
        Err(e) => Reply::error(502, &e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn loopback_hosts() {
        for ok in [
            "127.0.0.1:9470",
            "localhost:1",
            "LOCALHOST",
            "[::1]:80",
            "127.0.0.1",
        ] {
            assert!(super::loopback_host(ok), "{ok}");
        }
        for bad in ["evil.example:9470", "10.0.0.1:80", "[2001:db8::1]:80", ""] {
            assert!(!super::loopback_host(bad), "{bad}");
        }
    }
}

/// A live client: the deltas of its workflow, as server-sent events.
#[derive(Debug)]
struct Feed {
    rx: broadcast::Receiver<Arc<Delta>>,
    workflow: Option<String>,
    shutdown: Shutdown,
}

/// How often an idle stream sends a comment, so proxies and the browser
/// keep it open and a gone client is noticed.
const KEEPALIVE: Duration = Duration::from_secs(15);

#[derive(Serialize)]
struct DeltaJson<'a> {
    now: String,
    workflow: Option<&'a str>,
    cards: &'a [Card],
    removed: &'a [String],
    columns: Option<&'a [crate::model::ColumnSummary]>,
    alerts: &'a [crate::model::AlertJson],
    silences_changed: bool,
    workflows: Option<&'a [crate::model::WorkflowJson]>,
}

fn event(name: &str, data: &str) -> String {
    format!("event: {name}\ndata: {data}\n\n")
}

impl Feed {
    fn render(&self, delta: &Delta) -> Option<String> {
        let w = self.workflow.as_deref();
        let cards = w
            .and_then(|w| delta.cards.get(w))
            .map_or(&[][..], Vec::as_slice);
        let removed = w
            .and_then(|w| delta.removed.get(w))
            .map_or(&[][..], Vec::as_slice);
        let columns = w.and_then(|w| delta.columns.get(w)).map(Vec::as_slice);
        let workflows = delta.workflows.as_deref();
        if cards.is_empty()
            && removed.is_empty()
            && delta.alerts.is_empty()
            && !delta.silences_changed
            && workflows.is_none()
        {
            return None;
        }
        let json = serde_json::to_string(&DeltaJson {
            now: crate::now().to_rfc3339(),
            workflow: w,
            cards,
            removed,
            columns,
            alerts: &delta.alerts,
            silences_changed: delta.silences_changed,
            workflows,
        })
        .ok()?;
        Some(event("delta", &json))
    }
}

impl StreamBody for Feed {
    fn run(
        mut self: Box<Self>,
        mut socket: TcpStream,
    ) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send>> {
        Box::pin(async move {
            let hello = serde_json::json!({ "now": crate::now().to_rfc3339() }).to_string();
            let first = format!("retry: 1000\n\n{}", event("hello", &hello));
            if socket.write_all(first.as_bytes()).await.is_err() {
                return;
            }
            let mut shutdown = self.shutdown.clone();
            loop {
                let out = tokio::select! {
                    _ = shutdown.wait() => return,
                    r = tokio::time::timeout(KEEPALIVE, self.rx.recv()) => match r {
                        Err(_) => Some(": keepalive\n\n".to_string()),
                        Ok(Ok(delta)) => self.render(&delta),
                        // Too slow to keep up: the page reloads its data.
                        Ok(Err(broadcast::error::RecvError::Lagged(_))) => Some(event("reset", "{}")),
                        Ok(Err(broadcast::error::RecvError::Closed)) => return,
                    },
                };
                if let Some(out) = out
                    && socket.write_all(out.as_bytes()).await.is_err()
                {
                    return;
                }
            }
        })
    }
}
