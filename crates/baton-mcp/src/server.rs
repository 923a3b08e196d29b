//! The MCP face of the desk: tools with JSON schemas, resources, and
//! notifications, on the official Rust MCP SDK (`rmcp`).
//!
//! Every tool answers with JSON (as text and as structured content). A
//! refusal is a tool error (`isError: true`) whose text says what happened
//! and what to do; arguments that do not fit a tool's schema are tool
//! errors too (rmcp reports the field). Nothing a model sends stops the
//! server. Notices of what happened since the last call (a task lost, a
//! handoff offered) ride along with every answer under `notices`.
//!
//! Notifications: on 2026-07-28 sessions through `subscriptions/listen`
//! (resource updates of `baton://tasks/<id>` and `baton://agent/ready`,
//! and the resource list changing); on older sessions through
//! `resources/subscribe`.

#![allow(deprecated)] // resources/subscribe: legacy hosts still use it.

use std::{
    collections::{HashSet, VecDeque},
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::sync::broadcast;

use rmcp::{
    ErrorData, RoleServer, ServerHandler,
    handler::server::{router::tool::ToolRouter, tool::ToolCallContext, wrapper::Parameters},
    model::{
        CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
        ListResourceTemplatesResult, ListResourcesResult, PaginatedRequestParams,
        ReadResourceRequestParams, ReadResourceResponse, ReadResourceResult, Resource,
        ResourceContents, ResourceTemplate, ResourceUpdatedNotificationParam, ServerCapabilities,
        ServerConfig, SubscribeRequestParams, SubscriptionFilter, UnsubscribeRequestParams,
    },
    service::{Peer, RequestContext, SubscriptionContext},
    tool, tool_handler, tool_router,
};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::{
    desk::{Change, Creation, Desk, Outcome, Target},
    explain::{self, Refusal},
};

/// The resource listing the tasks ready for this agent.
pub const READY_URI: &str = "baton://agent/ready";
const TASK_PREFIX: &str = "baton://tasks/";
const WORKFLOW_PREFIX: &str = "baton://workflows/";
const DECISIONS_SUFFIX: &str = "/decisions";

fn task_uri(task: &str) -> String {
    format!("{TASK_PREFIX}{task}")
}

fn decisions_uri(workflow: &str) -> String {
    format!("{WORKFLOW_PREFIX}{workflow}{DECISIONS_SUFFIX}")
}

/// Legacy (`resources/subscribe`) subscribers.
#[derive(Debug, Default)]
struct Legacy {
    peer: Option<Peer<RoleServer>>,
    uris: HashSet<String>,
    /// The forwarding task runs (from the first subscription on).
    forwarding: bool,
}

/// One MCP session's handler (over HTTP: one per older host's session, one
/// per request of a 2026-07-28 host); all of one process share the desk.
#[derive(Debug, Clone)]
pub struct BatonMcp {
    desk: Arc<Desk>,
    legacy: Arc<Mutex<Legacy>>,
    /// Change feeds opened when a `subscriptions/listen` was accepted, before
    /// rmcp acknowledges it to the host: what changes after the host saw
    /// the acknowledgement reaches the stream, even if `listen` runs later.
    accepted_listens: Arc<Mutex<VecDeque<broadcast::Receiver<Change>>>>,
    tool_router: ToolRouter<BatonMcp>,
}

/// Accepted listens whose handler has not run yet, kept at most (a listen
/// whose acknowledgement failed leaves its feed behind).
const ACCEPTED_LISTENS: usize = 16;

// ---- tool arguments ----------------------------------------------------

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NoArgs {}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskArg {
    /// The task's id.
    pub task_id: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateArgs {
    /// A new, unique task id: 1-128 of A-Z a-z 0-9 _ - (starting with a letter or digit).
    pub task_id: String,
    /// The workflow the task belongs to (its decision record is shared by the workflow's tasks).
    pub workflow: String,
    /// The stage the task is in (e.g. "draft", "review"); agents serving that stage may claim it.
    pub stage: Option<String>,
    /// A short title.
    pub title: Option<String>,
    /// Only this agent may claim it.
    pub assignee: Option<String>,
    /// Must be claimed within this many seconds.
    pub start_within_seconds: Option<f64>,
    /// Must end within this many seconds.
    pub deadline_within_seconds: Option<f64>,
    /// The owner's heartbeat lease, in seconds.
    pub heartbeat_within_seconds: Option<f64>,
    /// Output must advance (report_progress with progress=true) within this many seconds.
    pub progress_within_seconds: Option<f64>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClaimArgs {
    /// The task to claim.
    pub task_id: String,
    /// The lease you commit to, in seconds (default: the server's --lease). Heartbeats are sent for you at a third of it.
    pub lease_seconds: Option<f64>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProgressArgs {
    /// A task you hold.
    pub task_id: String,
    /// What you did or are doing (at most 1024 bytes).
    pub note: String,
    /// True when your output advanced since your last report; false if you are only alive.
    pub progress: bool,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReasonArgs {
    /// The task.
    pub task_id: String,
    /// Why (at most 2048 bytes).
    pub reason: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OfferArgs {
    /// A task you hold.
    pub task_id: String,
    /// The agent to hand it to (give this or to_stage, not both).
    pub to_agent: Option<String>,
    /// The stage to hand it to: any agent serving that stage may accept.
    pub to_stage: Option<String>,
    /// Where your output is (a path or URL the recipient can read).
    pub output_location: String,
    /// The recipient must accept within this many seconds (default: the stall rules).
    pub accept_within_seconds: Option<f64>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CompleteArgs {
    /// A task you hold.
    pub task_id: String,
    /// Where the final output is.
    pub output_location: String,
    /// What was done (at most 4096 bytes).
    pub summary: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FailArgs {
    /// A task you hold.
    pub task_id: String,
    /// Why it failed.
    pub reason: String,
    /// True: the task goes back to unowned so someone may retry; false: it ends as FAILED.
    pub retryable: bool,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkflowArg {
    /// The workflow.
    pub workflow: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RecordArgs {
    /// The workflow.
    pub workflow: String,
    /// One line: what was decided (at most 1024 bytes).
    pub summary: String,
    /// The full decision and its reasons.
    pub body: Option<String>,
    /// The version of an earlier decision this one replaces.
    pub supersedes: Option<u64>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AcquireLeaseArgs {
    /// The artifact: a file path, document id or record key ("drafts/post.md"; "drafts/" covers everything under it).
    pub artifact: String,
    /// The workflow whose artifacts these are (default: the global scope).
    pub workflow: Option<String>,
    /// True for a reader's lease (many readers, no writer); false or absent for the one writer's.
    pub shared: Option<bool>,
    /// How long the lease lives without a renewal, in seconds (default 15); renewals are sent for you.
    pub ttl_seconds: Option<f64>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LeaseArg {
    /// The artifact.
    pub artifact: String,
    /// Its workflow scope (default: global).
    pub workflow: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LeasesArg {
    /// Only this workflow's scope (default: every scope).
    pub workflow: Option<String>,
}

fn seconds(field: &str, value: Option<f64>) -> Result<Option<Duration>, Refusal> {
    match value {
        None => Ok(None),
        Some(s) if s.is_finite() && s > 0.0 && s <= 31.0 * 86_400.0 => {
            Ok(Some(Duration::from_secs_f64(s)))
        }
        Some(s) => Err(explain::invalid_argument(format!(
            "{field} must be a number of seconds above 0 and at most 31 days; got {s}"
        ))),
    }
}

// ---- tools ------------------------------------------------------------

#[tool_router]
impl BatonMcp {
    pub fn new(desk: Arc<Desk>) -> BatonMcp {
        BatonMcp {
            desk,
            legacy: Arc::new(Mutex::new(Legacy::default())),
            accepted_listens: Arc::default(),
            tool_router: Self::tool_router(),
        }
    }

    /// A tool's answer, with the notices gathered since the last call.
    fn answer(&self, outcome: Outcome) -> CallToolResult {
        let notices = self.desk.take_notices();
        match outcome {
            Ok(mut value) => {
                if !notices.is_empty() {
                    value["notices"] = json!(notices);
                }
                CallToolResult::structured(value)
            }
            Err(refusal) => {
                let mut value = refusal.to_json();
                let mut text = refusal.message.clone();
                if !notices.is_empty() {
                    value["notices"] = json!(notices);
                    text.push_str("\nNotices: ");
                    text.push_str(&notices.join(" "));
                }
                let mut result = CallToolResult::error(vec![ContentBlock::text(text)]);
                result.structured_content = Some(value);
                result
            }
        }
    }

    #[tool(
        description = "List the tasks ready for you: handoffs offered to you (or to a stage you serve), unowned tasks in your stages you may claim, and the tasks you own. Start here.",
        annotations(read_only_hint = true)
    )]
    async fn list_ready_tasks(&self, Parameters(_): Parameters<NoArgs>) -> CallToolResult {
        self.answer(self.desk.list_ready().await)
    }

    #[tool(
        description = "Show one task exactly as Baton sees it now: status, owner, epoch (the fencing token), pending handoff offer, output location, and its timeline (every event with the owner and epoch after it).",
        annotations(read_only_hint = true)
    )]
    async fn show_task(&self, Parameters(a): Parameters<TaskArg>) -> CallToolResult {
        self.answer(self.desk.show_task(&a.task_id).await)
    }

    #[tool(
        description = "Create a task in a workflow (optionally in a stage, for an assignee, with deadlines). Refused if the id exists: task ids are unique for good."
    )]
    async fn create_task(&self, Parameters(a): Parameters<CreateArgs>) -> CallToolResult {
        let outcome = async {
            let creation = Creation {
                task_id: a.task_id,
                workflow: a.workflow,
                stage: a.stage,
                title: a.title,
                assignee: a.assignee,
                start_within: seconds("start_within_seconds", a.start_within_seconds)?,
                deadline_within: seconds("deadline_within_seconds", a.deadline_within_seconds)?,
                heartbeat_within: seconds("heartbeat_within_seconds", a.heartbeat_within_seconds)?,
                progress_within: seconds("progress_within_seconds", a.progress_within_seconds)?,
            };
            self.desk.create(creation).await
        }
        .await;
        self.answer(outcome)
    }

    #[tool(
        description = "Claim an unowned task: you become its single owner at a new epoch, and heartbeats are sent for you while this session lasts. Of agents claiming at once exactly one wins; the others are told who owns it. Claiming a task you already own resumes it. Refused while the workflow has decisions you have not read (read_decisions first).",
        annotations(idempotent_hint = true)
    )]
    async fn claim_task(&self, Parameters(a): Parameters<ClaimArgs>) -> CallToolResult {
        let outcome = async {
            let lease = seconds("lease_seconds", a.lease_seconds)?;
            self.desk.claim(&a.task_id, lease).await
        }
        .await;
        self.answer(outcome)
    }

    #[tool(
        description = "Report on a task you own: a note, and progress=true when your output advanced since your last report (progress is your own signal: heartbeats alone say you are alive, not that you are getting anywhere). A blocked task resumes with this."
    )]
    async fn report_progress(&self, Parameters(a): Parameters<ProgressArgs>) -> CallToolResult {
        self.answer(self.desk.progress(&a.task_id, &a.note, a.progress).await)
    }

    #[tool(
        description = "Say a task you own is blocked waiting for input (the reason says on what). Heartbeat expectations pause; report_progress resumes."
    )]
    async fn block_task(&self, Parameters(a): Parameters<ReasonArgs>) -> CallToolResult {
        self.answer(self.desk.block(&a.task_id, &a.reason).await)
    }

    #[tool(
        description = "Hand a task you own to an agent (to_agent) or to any agent of a stage (to_stage), with where your output is. You stay accountable until the recipient accepts, and may not act on the task meanwhile; if it is rejected it comes back to you. Refused while the workflow has decisions you have not read."
    )]
    async fn offer_handoff(&self, Parameters(a): Parameters<OfferArgs>) -> CallToolResult {
        let outcome = async {
            let to = match (a.to_agent, a.to_stage) {
                (Some(agent), None) => Target::Agent(agent),
                (None, Some(stage)) => Target::Stage(stage),
                _ => {
                    return Err(explain::invalid_argument(
                        "give exactly one of to_agent and to_stage",
                    ));
                }
            };
            let within = seconds("accept_within_seconds", a.accept_within_seconds)?;
            self.desk
                .offer(&a.task_id, to, &a.output_location, within)
                .await
        }
        .await;
        self.answer(outcome)
    }

    #[tool(
        description = "Accept a handoff offered to you (or to a stage you serve): you become the owner at the next epoch, heartbeats start, and the sender's output location is in the answer. Refused while the workflow has decisions you have not read."
    )]
    async fn accept_handoff(&self, Parameters(a): Parameters<TaskArg>) -> CallToolResult {
        self.answer(self.desk.accept(&a.task_id).await)
    }

    #[tool(
        description = "Decline a handoff offered to you, with a reason; the sender keeps the task."
    )]
    async fn reject_handoff(&self, Parameters(a): Parameters<ReasonArgs>) -> CallToolResult {
        self.answer(self.desk.reject(&a.task_id, &a.reason).await)
    }

    #[tool(
        description = "Complete a task you own (final): where the output is and what was done. Refused while the workflow has decisions you have not read.",
        annotations(destructive_hint = true)
    )]
    async fn complete_task(&self, Parameters(a): Parameters<CompleteArgs>) -> CallToolResult {
        self.answer(
            self.desk
                .complete(&a.task_id, &a.output_location, &a.summary)
                .await,
        )
    }

    #[tool(
        description = "Give up a task you own: retryable=true puts it back unowned for someone to retry; retryable=false ends it as FAILED.",
        annotations(destructive_hint = true)
    )]
    async fn fail_task(&self, Parameters(a): Parameters<FailArgs>) -> CallToolResult {
        self.answer(self.desk.fail(&a.task_id, &a.reason, a.retryable).await)
    }

    #[tool(
        description = "Let go of a task you own, with a reason: it is unowned again and anyone may claim it."
    )]
    async fn release_task(&self, Parameters(a): Parameters<ReasonArgs>) -> CallToolResult {
        self.answer(self.desk.release(&a.task_id, &a.reason).await)
    }

    #[tool(
        description = "Take a lease on a shared artifact (a file, document or record) before writing it: one writer (exclusive, the default) or many readers (shared=true). A folder (\"drafts/\") conflicts with what is under it. If another agent holds a conflicting lease you are told who and since when, and must not write. The answer's token goes with every write you make (fenced stores refuse older tokens). Renewed for you while this session lasts."
    )]
    async fn acquire_lease(&self, Parameters(a): Parameters<AcquireLeaseArgs>) -> CallToolResult {
        let outcome = async {
            let ttl = seconds("ttl_seconds", a.ttl_seconds)?;
            self.desk
                .acquire_lease(
                    &a.artifact,
                    a.workflow.as_deref(),
                    a.shared.unwrap_or(false),
                    ttl,
                )
                .await
        }
        .await;
        self.answer(outcome)
    }

    #[tool(
        description = "Release a lease you hold on an artifact, once you are done writing (or reading) it."
    )]
    async fn release_lease(&self, Parameters(a): Parameters<LeaseArg>) -> CallToolResult {
        self.answer(
            self.desk
                .release_lease(&a.artifact, a.workflow.as_deref())
                .await,
        )
    }

    #[tool(
        description = "Who holds which artifact lease (holder, mode, token, since, until), in one workflow's scope or everywhere.",
        annotations(read_only_hint = true)
    )]
    async fn list_leases(&self, Parameters(a): Parameters<LeasesArg>) -> CallToolResult {
        self.answer(self.desk.list_leases(a.workflow.as_deref()).await)
    }

    #[tool(
        description = "Read a workflow's decision record (append-only, versioned). Read it before claiming, accepting, offering or completing: your events carry the version you read, and acting on an outdated record is refused here and flagged by Baton.",
        annotations(read_only_hint = true)
    )]
    async fn read_decisions(&self, Parameters(a): Parameters<WorkflowArg>) -> CallToolResult {
        self.answer(self.desk.read_decisions(&a.workflow).await)
    }

    #[tool(
        description = "Record a decision others in the workflow depend on. Refused if someone recorded a decision since you last read the record: the refusal names the versions; read them and decide again."
    )]
    async fn record_decision(&self, Parameters(a): Parameters<RecordArgs>) -> CallToolResult {
        self.answer(
            self.desk
                .record_decision(
                    &a.workflow,
                    &a.summary,
                    a.body.as_deref().unwrap_or(""),
                    a.supersedes,
                )
                .await,
        )
    }
}

// ---- resources ----------------------------------------------------------

impl BatonMcp {
    async fn read_uri(&self, uri: &str) -> Result<Value, ErrorData> {
        let refusal =
            |r: Refusal| ErrorData::resource_not_found(r.message.clone(), Some(r.to_json()));
        if uri == READY_URI {
            return self.desk.list_ready().await.map_err(refusal);
        }
        if let Some(task) = uri.strip_prefix(TASK_PREFIX) {
            return self.desk.show_task(task).await.map_err(refusal);
        }
        if let Some(workflow) = uri
            .strip_prefix(WORKFLOW_PREFIX)
            .and_then(|rest| rest.strip_suffix(DECISIONS_SUFFIX))
        {
            let workflow = crate::desk::parse_workflow(workflow).map_err(refusal)?;
            return self.desk.peek_decisions(&workflow).await.map_err(refusal);
        }
        Err(ErrorData::resource_not_found(
            format!(
                "no such resource {uri}: Baton serves {READY_URI}, {TASK_PREFIX}<task_id> and {WORKFLOW_PREFIX}<workflow>{DECISIONS_SUFFIX}"
            ),
            None,
        ))
    }

    /// Sends legacy `resources/updated` notifications for a change; false
    /// once the session is over.
    async fn notify_legacy(&self, change: &Change) -> bool {
        let (peer, uris) = {
            let legacy = self
                .legacy
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let Some(peer) = legacy.peer.clone() else {
                return true;
            };
            if peer.is_transport_closed() {
                return false;
            }
            let uris: Vec<String> = change_uris(change)
                .into_iter()
                .filter(|u| legacy.uris.contains(u))
                .collect();
            (peer, uris)
        };
        for uri in uris {
            if let Err(e) = peer
                .notify_resource_updated(ResourceUpdatedNotificationParam::new(uri))
                .await
            {
                tracing::debug!(error = %e, "could not notify the host");
            }
        }
        true
    }

    /// Forwards changes to this session's legacy subscribers until the
    /// session is over (2026-07-28 sessions get them through `listen`).
    /// Started by the first `resources/subscribe`, so the handlers made
    /// for every HTTP request of a 2026-07-28 host start none.
    fn spawn_legacy_notifier(&self) {
        let this = self.clone();
        let mut changes = self.desk.changes();
        tokio::spawn(async move {
            loop {
                match changes.recv().await {
                    Ok(change) => {
                        if !this.notify_legacy(&change).await {
                            return;
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(_) => return,
                }
            }
        });
    }
}

fn change_uris(change: &Change) -> Vec<String> {
    match change {
        Change::Task(t) => vec![task_uri(t.as_str())],
        Change::Ready => vec![READY_URI.to_string()],
    }
}

fn text_resource(uri: &str, value: &Value) -> ReadResourceResult {
    ReadResourceResult::new(vec![
        ResourceContents::text(
            serde_json::to_string_pretty(value).unwrap_or_default(),
            uri.to_string(),
        )
        .with_mime_type("application/json"),
    ])
    // Task state changes at any moment: never serve it from a cache.
    .with_ttl_ms(0)
}

const INSTRUCTIONS: &str = "Baton coordinates agents: every task has one owner at a time, moved only by explicit acts, and status signals are mandatory. \
As this agent: call list_ready_tasks to see what is for you; read_decisions for the task's workflow before you claim_task, accept_handoff, offer_handoff or complete_task; \
report_progress with progress=true whenever your output advances (heartbeats are sent for you while this session lasts, but they only say you are alive); \
end every task you own with exactly one of offer_handoff, complete_task, fail_task or release_task. \
A tool error tells you what happened and what to do (who owns a task you lost, which decisions you missed). Answers may carry `notices` about your tasks: read them.";

/// What a tool takes, from its input schema: `task_id (string, required),
/// note (string, required), ...`.
fn expected_arguments(schema: &serde_json::Map<String, Value>) -> String {
    let required: Vec<&str> = schema
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let Some(properties) = schema.get("properties").and_then(Value::as_object) else {
        return "no arguments".to_string();
    };
    if properties.is_empty() {
        return "no arguments".to_string();
    }
    // Required first, then optional, each alphabetically.
    let mut names: Vec<&String> = properties.keys().collect();
    names.sort_by_key(|n| (!required.contains(&n.as_str()), n.as_str()));
    names
        .into_iter()
        .map(|name| {
            let p = &properties[name];
            let kind = match p.get("type") {
                Some(Value::String(t)) => t.clone(),
                Some(Value::Array(ts)) => ts
                    .iter()
                    .filter_map(Value::as_str)
                    .filter(|t| *t != "null")
                    .collect::<Vec<_>>()
                    .join(" or "),
                _ => "value".to_string(),
            };
            let need = if required.contains(&name.as_str()) {
                "required"
            } else {
                "optional"
            };
            format!("{name} ({kind}, {need})")
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for BatonMcp {
    /// Calls the tool; arguments that do not fit its schema become a tool
    /// error that names what the tool takes, so the model can correct
    /// the call.
    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let name = request.name.clone();
        let call = ToolCallContext::new(self, request, context);
        let response = self.tool_router.call(call).await?;
        let CallToolResponse::Complete(result) = &response else {
            return Ok(response);
        };
        let serde_error = result
            .content
            .first()
            .and_then(|c| c.as_text())
            .map(|t| t.text.as_str())
            .filter(|t| {
                result.is_error == Some(true) && t.starts_with("failed to deserialize parameters")
            });
        let (Some(serde_error), Some(tool)) = (serde_error, self.tool_router.get(&name)) else {
            return Ok(response);
        };
        let why = serde_error
            .trim_start_matches("failed to deserialize parameters")
            .trim_start_matches(':')
            .trim();
        let expected = expected_arguments(&tool.input_schema);
        let refusal = explain::invalid_argument(format!(
            "invalid arguments for {name}: {why}. {name} takes: {expected}."
        ));
        Ok(CallToolResponse::Complete(self.answer(Err(refusal))))
    }

    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_resources()
                .enable_resources_subscribe()
                .enable_resources_list_changed()
                .build(),
        )
        .with_server_info(
            Implementation::new("baton", env!("CARGO_PKG_VERSION"))
                .with_title(format!("Baton (agent {})", self.desk.me())),
        )
        .with_instructions(format!("You are agent {}. {INSTRUCTIONS}", self.desk.me()))
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        let mut resources = vec![
            Resource::new(READY_URI, "ready tasks")
                .with_description("Tasks offered to you, claimable in your stages, and yours.")
                .with_mime_type("application/json"),
        ];
        for task in self.desk.held_tasks().await {
            resources.push(
                Resource::new(task_uri(task.as_str()), format!("task {task}"))
                    .with_description("A task you hold: state and timeline.")
                    .with_mime_type("application/json"),
            );
        }
        for workflow in self.desk.known_workflows() {
            resources.push(
                Resource::new(
                    decisions_uri(workflow.as_str()),
                    format!("decisions of {workflow}"),
                )
                .with_description("The workflow's decision record (reading it here does not mark it read; read_decisions does).")
                .with_mime_type("application/json"),
            );
        }
        Ok(ListResourcesResult::with_all_items(resources).with_ttl_ms(0))
    }

    async fn list_resource_templates(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, ErrorData> {
        Ok(ListResourceTemplatesResult::with_all_items(vec![
            ResourceTemplate::new(format!("{TASK_PREFIX}{{task_id}}"), "task")
                .with_description("A task's state, owner, epoch, pending offer and timeline.")
                .with_mime_type("application/json"),
            ResourceTemplate::new(
                format!("{WORKFLOW_PREFIX}{{workflow}}{DECISIONS_SUFFIX}"),
                "decision record",
            )
            .with_description("A workflow's decision record.")
            .with_mime_type("application/json"),
        ]))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        let value = self.read_uri(&request.uri).await?;
        Ok(ReadResourceResponse::Complete(text_resource(
            &request.uri,
            &value,
        )))
    }

    async fn subscribe(
        &self,
        request: SubscribeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        let start = {
            let mut legacy = self
                .legacy
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            legacy.peer = Some(context.peer.clone());
            legacy.uris.insert(request.uri);
            !std::mem::replace(&mut legacy.forwarding, true)
        };
        if start {
            self.spawn_legacy_notifier();
        }
        Ok(())
    }

    async fn unsubscribe(
        &self,
        request: UnsubscribeRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        self.legacy
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .uris
            .remove(&request.uri);
        Ok(())
    }

    fn accepted_subscription_filter(
        &self,
        requested: &SubscriptionFilter,
    ) -> Option<SubscriptionFilter> {
        // Called before the acknowledgement is sent: open the feed now.
        let mut accepted = self
            .accepted_listens
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        accepted.push_back(self.desk.changes());
        while accepted.len() > ACCEPTED_LISTENS {
            accepted.pop_front();
        }
        Some(requested.supported_by(&self.get_info().capabilities))
    }

    async fn listen(&self, context: SubscriptionContext) -> Result<(), ErrorData> {
        let early = self
            .accepted_listens
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .pop_front();
        let mut changes = early.unwrap_or_else(|| self.desk.changes());
        let sink = context.sink().clone();
        let accepted = context.accepted().clone();
        let wants = |uri: &str| {
            accepted
                .resource_subscriptions
                .as_ref()
                .is_some_and(|u| u.iter().any(|s| s == uri))
        };
        loop {
            tokio::select! {
                () = context.cancelled() => return Ok(()),
                change = changes.recv() => {
                    let change = match change {
                        Ok(c) => c,
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                        Err(_) => return Ok(()),
                    };
                    for uri in change_uris(&change) {
                        if wants(&uri) && sink.notify_resource_updated(uri).await.is_err() {
                            return Ok(());
                        }
                    }
                    if change == Change::Ready
                        && accepted.resources_list_changed == Some(true)
                        && sink.notify_resource_list_changed().await.is_err()
                    {
                        return Ok(());
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema_of(tool: rmcp::model::Tool) -> serde_json::Map<String, Value> {
        (*tool.input_schema).clone()
    }

    #[test]
    fn bad_arguments_name_what_the_tool_takes_required_first() {
        let claim = schema_of(BatonMcp::claim_task_tool_attr());
        assert_eq!(
            expected_arguments(&claim),
            "task_id (string, required), lease_seconds (number, optional)"
        );
        let progress = schema_of(BatonMcp::report_progress_tool_attr());
        assert_eq!(
            expected_arguments(&progress),
            "note (string, required), progress (boolean, required), task_id (string, required)"
        );
        let list = schema_of(BatonMcp::list_ready_tasks_tool_attr());
        assert_eq!(expected_arguments(&list), "no arguments");
    }

    #[test]
    fn every_tool_refuses_unknown_fields() {
        for tool in BatonMcp::tool_router().list_all() {
            let schema = &tool.input_schema;
            assert_eq!(
                schema.get("additionalProperties"),
                Some(&Value::Bool(false)),
                "{}",
                tool.name
            );
            assert!(
                tool.description.is_some_and(|d| d.len() > 40),
                "{}",
                tool.name
            );
        }
    }

    #[test]
    fn seconds_are_checked() {
        assert_eq!(seconds("x", None), Ok(None));
        assert_eq!(
            seconds("x", Some(1.5)),
            Ok(Some(Duration::from_millis(1500)))
        );
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY, 40.0 * 86_400.0] {
            let refusal = seconds("lease_seconds", Some(bad)).unwrap_err();
            assert!(refusal.message.contains("lease_seconds"), "{bad}");
        }
    }
}
