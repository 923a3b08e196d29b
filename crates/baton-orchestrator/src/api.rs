//! The query API: request/reply under `baton.api.v1`, built on the NATS
//! service framework so `$SRV.PING`, `$SRV.INFO` and `$SRV.STATS` discover
//! it. Requests and replies are protobuf (`baton.v1.*Request/*Response`).
//!
//! - `baton.api.v1.task.get`: one task's state (from memory: fresher than
//!   KV under load).
//! - `baton.api.v1.task.list`: tasks filtered by status, owner, workflow,
//!   stage; paged by task id.
//! - `baton.api.v1.task.timeline`: a task's events in order, with owner and
//!   epoch after each (re-folded from `BATON_EVENTS`).

use std::sync::{Arc, Mutex};

use async_nats::{
    Client, jetstream,
    service::{self, ServiceExt},
};
use baton_core::{
    Event, EventMeta, TaskId, TaskStatus, subjects,
    timeline::timeline,
    wire::{read_event, time_to_wire},
};
use baton_jetstream::read;
use baton_proto::{prost::Message, v1 as pb};
use bytes::Bytes;
use futures::StreamExt;

use crate::book::Book;
use baton_service::shutdown::Shutdown;

/// Default and largest page of `task.list`.
pub const DEFAULT_LIMIT: usize = 1000;
pub const MAX_LIMIT: usize = 10_000;

/// Starts the service and its endpoints.
pub async fn start(
    client: Client,
    js: jetstream::Context,
    book: Arc<Mutex<Book>>,
    shutdown: Shutdown,
) -> Result<(), async_nats::Error> {
    let svc = client
        .service_builder()
        .description("Baton orchestrator: task state, ownership and timelines")
        .start("baton-orchestrator", env!("CARGO_PKG_VERSION"))
        .await?;
    let group = svc.group(subjects::API_PREFIX);
    let get = group.endpoint("task.get").await?;
    let list = group.endpoint("task.list").await?;
    let tl = group.endpoint("task.timeline").await?;
    tokio::spawn(serve(get, shutdown.clone(), {
        let book = book.clone();
        move |payload| {
            let book = book.clone();
            async move { get_task(&book, &payload) }
        }
    }));
    tokio::spawn(serve(list, shutdown.clone(), {
        let book = book.clone();
        move |payload| {
            let book = book.clone();
            async move { list_tasks(&book, &payload) }
        }
    }));
    tokio::spawn(serve(tl, shutdown.clone(), move |payload| {
        let js = js.clone();
        let book = book.clone();
        async move { task_timeline(&js, &book, &payload).await }
    }));
    // The service stops (and deregisters) when dropped at shutdown.
    tokio::spawn(async move {
        let mut s = shutdown;
        s.wait().await;
        let _ = svc.stop().await;
    });
    Ok(())
}

type Reply = Result<Bytes, service::error::Error>;

async fn serve<F, Fut>(mut endpoint: service::endpoint::Endpoint, mut shutdown: Shutdown, handle: F)
where
    F: Fn(Bytes) -> Fut,
    Fut: Future<Output = Reply>,
{
    loop {
        let request = tokio::select! {
            _ = shutdown.wait() => break,
            r = endpoint.next() => match r {
                Some(r) => r,
                None => break,
            },
        };
        let reply = handle(request.message.payload.clone()).await;
        if let Err(e) = request.respond(reply).await {
            tracing::debug!(error = %e, "could not reply");
        }
    }
}

fn bad_request(what: &str, e: impl std::fmt::Display) -> service::error::Error {
    service::error::Error {
        status: format!("bad {what} request: {e}"),
        code: 400,
    }
}

fn lock(book: &Mutex<Book>) -> std::sync::MutexGuard<'_, Book> {
    book.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn get_task(book: &Mutex<Book>, payload: &[u8]) -> Reply {
    let req = pb::GetTaskRequest::decode(payload).map_err(|e| bad_request("task.get", e))?;
    let book = lock(book);
    let resp = match book.task(&req.task_id) {
        Some(task) => pb::GetTaskResponse {
            task: Some(pb::TaskState::from(task)),
            error: String::new(),
        },
        None => pb::GetTaskResponse {
            task: None,
            error: format!("unknown task {:?}", req.task_id),
        },
    };
    Ok(resp.encode_to_vec().into())
}

fn list_tasks(book: &Mutex<Book>, payload: &[u8]) -> Reply {
    let req = pb::ListTasksRequest::decode(payload).map_err(|e| bad_request("task.list", e))?;
    let status = match pb::TaskStatus::try_from(req.status) {
        Ok(pb::TaskStatus::Unspecified) => None,
        Ok(s) => Some(TaskStatus::try_from(s).map_err(|e| bad_request("task.list", e))?),
        Err(_) => {
            return Err(bad_request(
                "task.list",
                format!("unknown status {}", req.status),
            ));
        }
    };
    let limit = match req.limit as usize {
        0 => DEFAULT_LIMIT,
        n => n.min(MAX_LIMIT),
    };
    let book = lock(book);
    let mut matching: Vec<_> = book
        .tasks()
        .filter(|t| status.is_none_or(|s| t.status == s))
        .filter(|t| {
            req.owner.is_empty() || t.owner.as_ref().is_some_and(|o| o.as_str() == req.owner)
        })
        .filter(|t| req.workflow_id.is_empty() || t.workflow.as_str() == req.workflow_id)
        .filter(|t| {
            req.stage.is_empty() || t.stage.as_ref().is_some_and(|s| s.as_str() == req.stage)
        })
        .collect();
    let total = matching.len();
    matching.sort_by(|a, b| a.id.cmp(&b.id));
    let page: Vec<_> = matching
        .into_iter()
        .filter(|t| req.after_task_id.is_empty() || t.id.as_str() > req.after_task_id.as_str())
        .take(limit + 1)
        .collect();
    let mut truncated = page.len() > limit;
    // Page by size too: the reply must fit the broker's max payload.
    let budget = book.reply_budget();
    let mut used = 0usize;
    let mut tasks = Vec::with_capacity(page.len().min(limit));
    for t in page.iter().take(limit) {
        let state = pb::TaskState::from(*t);
        let len = state.encoded_len() + 8;
        if used + len > budget && !tasks.is_empty() {
            truncated = true;
            break;
        }
        used += len;
        tasks.push(state);
    }
    let resp = pb::ListTasksResponse {
        tasks,
        truncated,
        total: total as u64,
        error: String::new(),
    };
    Ok(resp.encode_to_vec().into())
}

async fn task_timeline(js: &jetstream::Context, book: &Mutex<Book>, payload: &[u8]) -> Reply {
    let req = pb::TimelineRequest::decode(payload).map_err(|e| bad_request("task.timeline", e))?;
    let task = match TaskId::new(&req.task_id) {
        Ok(t) => t,
        Err(e) => {
            let resp = pb::TimelineResponse {
                error: e.to_string(),
                ..Default::default()
            };
            return Ok(resp.encode_to_vec().into());
        }
    };
    let policy = lock(book).policy().clone();
    let stored = match read::read_subject(
        js,
        subjects::EVENTS_STREAM,
        &subjects::task_events(&task),
        0,
        None,
    )
    .await
    {
        Ok(s) => s,
        Err(e) => {
            return Err(service::error::Error {
                status: e.to_string(),
                code: 503,
            });
        }
    };
    let mut undecodable = Vec::new();
    let mut events: Vec<(Event, EventMeta)> = Vec::with_capacity(stored.len());
    for s in &stored {
        let meta = EventMeta {
            seq: s.seq,
            stored_at: s.stored_at,
        };
        match read_event(&s.subject, &s.payload) {
            Ok(e) => events.push((e, meta)),
            Err(e) => undecodable.push(pb::TimelineEntry {
                seq: s.seq,
                stored_at: Some(time_to_wire(s.stored_at)),
                agent_id: subjects::parse_event(&s.subject)
                    .map(|(_, a)| a.to_string())
                    .unwrap_or_default(),
                kind: "malformed".into(),
                violation: format!("dead-lettered: {e}"),
                ..Default::default()
            }),
        }
    }
    if events.is_empty() && undecodable.is_empty() {
        let resp = pb::TimelineResponse {
            error: format!("unknown task {task}: no events"),
            ..Default::default()
        };
        return Ok(resp.encode_to_vec().into());
    }
    let mut entries: Vec<pb::TimelineEntry> = timeline(events, &policy)
        .into_iter()
        .map(|e| pb::TimelineEntry {
            seq: e.meta.seq,
            stored_at: Some(time_to_wire(e.meta.stored_at)),
            agent_id: e.event.agent.to_string(),
            kind: e.event.kind().as_str().to_string(),
            event_epoch: e.event.epoch,
            owner: e.owner.map(|o| o.to_string()).unwrap_or_default(),
            epoch: e.epoch,
            status: e.status.map_or(0, |s| pb::TaskStatus::from(s) as i32),
            violation: e.refused.unwrap_or_default(),
            detail: e.event.body.describe(),
            event_id: e.event.event_id.clone(),
        })
        .chain(undecodable)
        .collect();
    entries.sort_by_key(|e| e.seq);
    let mut truncated = false;
    if req.limit > 0 && entries.len() > req.limit as usize {
        entries.drain(..entries.len() - req.limit as usize);
        truncated = true;
    }
    // Keep the newest entries that fit the reply budget.
    let budget = lock(book).reply_budget();
    let mut used = 0usize;
    let keep_from = entries
        .iter()
        .rposition(|e| {
            used += e.encoded_len() + 8;
            used > budget
        })
        .map_or(0, |i| i + 1);
    if keep_from > 0 {
        entries.drain(..keep_from);
        truncated = true;
    }
    Ok(pb::TimelineResponse {
        entries,
        error: String::new(),
        truncated,
    }
    .encode_to_vec()
    .into())
}
