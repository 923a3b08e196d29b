//! What the operator commands share: connecting, reading tasks (from the
//! orchestrator, or KV when it is not running), and the firing alerts.

use std::{collections::HashMap, time::Duration};

use anyhow::Context as _;
use async_nats::jetstream;
use baton_core::{Alert, AlertState, Task, TaskId, Time, subjects};
use baton_jetstream::read;
use baton_proto::{prost::Message, v1 as pb};

use crate::args::NatsArgs;

/// A connection for an operator command.
pub struct Conn {
    pub client: async_nats::Client,
    pub js: jetstream::Context,
}

/// Connects, or says which URL failed and how to start a server.
pub async fn connect(nats: &NatsArgs) -> anyhow::Result<Conn> {
    let client = nats.options("baton-cli").connect().await?;
    let js = jetstream::new(client.clone());
    Ok(Conn { client, js })
}

impl Conn {
    /// Checks that the Baton streams exist (the services create them).
    pub async fn require_baton(&self) -> anyhow::Result<()> {
        self.js.get_stream(subjects::EVENTS_STREAM).await.map_err(|_| {
            anyhow::anyhow!(
                "no Baton streams on this server (stream {} not found): start the services with `baton dev` or `baton orchestrator`",
                subjects::EVENTS_STREAM
            )
        })?;
        Ok(())
    }

    /// Sends a query to the orchestrator's API; `None` if no orchestrator
    /// answers.
    pub async fn api<Req: Message, Resp: Message + Default>(
        &self,
        endpoint: &str,
        req: &Req,
    ) -> Option<Resp> {
        let subject = format!("{}.{endpoint}", subjects::API_PREFIX);
        let reply = tokio::time::timeout(
            Duration::from_secs(5),
            self.client.request(subject, req.encode_to_vec().into()),
        )
        .await
        .ok()?
        .ok()?;
        Resp::decode(reply.payload).ok()
    }

    /// Every task's state: from the orchestrator (freshest), else from KV.
    pub async fn all_tasks(&self) -> anyhow::Result<(Vec<Task>, bool)> {
        let mut tasks = Vec::new();
        let mut after = String::new();
        loop {
            let req = pb::ListTasksRequest {
                limit: 10_000,
                after_task_id: after.clone(),
                ..Default::default()
            };
            let Some(resp) = self
                .api::<_, pb::ListTasksResponse>("task.list", &req)
                .await
            else {
                return Ok((self.kv_tasks().await?, false));
            };
            for t in resp.tasks {
                tasks.push(Task::try_from(t).context("orchestrator sent an invalid task")?);
            }
            match (resp.truncated, tasks.last()) {
                (true, Some(last)) => after = last.id.to_string(),
                _ => return Ok((tasks, true)),
            }
        }
    }

    /// Every task's state as stored in KV `baton-tasks`.
    pub async fn kv_tasks(&self) -> anyhow::Result<Vec<Task>> {
        let mut tasks = Vec::new();
        read::for_each_kv_value(&self.js, subjects::TASKS_BUCKET, |_, stored| {
            if let Ok(t) = Task::decode(&stored.payload) {
                tasks.push(t);
            }
        })
        .await?;
        Ok(tasks)
    }

    /// One task's state: orchestrator, else KV.
    pub async fn task(&self, id: &TaskId) -> anyhow::Result<Option<Task>> {
        let req = pb::GetTaskRequest {
            task_id: id.to_string(),
        };
        if let Some(resp) = self.api::<_, pb::GetTaskResponse>("task.get", &req).await {
            return Ok(match resp.task {
                Some(t) => Some(Task::try_from(t)?),
                None => None,
            });
        }
        let store = self.js.get_key_value(subjects::TASKS_BUCKET).await?;
        Ok(match store.get(id.as_str()).await? {
            Some(bytes) => Some(Task::decode(&bytes)?),
            None => None,
        })
    }

    /// The latest notification of every (kind, task) whose alert is firing,
    /// with its stream sequence.
    pub async fn firing_alerts(&self) -> anyhow::Result<Vec<(Alert, u64)>> {
        Ok(self.alert_view(Duration::ZERO).await?.firing)
    }

    /// The one view of alerts every command counts from: conditions firing
    /// now (the latest notification per kind and task is a firing stall or
    /// system alert), and protocol reports observed within `reports_since`.
    pub async fn alert_view(&self, reports_since: Duration) -> anyhow::Result<AlertView> {
        let mut view = AlertView::default();
        let cutoff = now().saturating_sub(reports_since);
        read::for_each_last_per_subject(
            &self.js,
            subjects::ALERTS_STREAM,
            subjects::ALERTS_RAISE_ALL,
            |stored| {
                let Ok(a) = Alert::decode(&stored.payload) else {
                    return;
                };
                if a.kind.is_report() {
                    if a.observed_at >= cutoff && !reports_since.is_zero() {
                        view.recent_reports.push((a, stored.seq));
                    }
                } else if a.state == AlertState::Firing {
                    view.firing.push((a, stored.seq));
                }
            },
        )
        .await?;
        Ok(view)
    }

    /// Firing stall alerts by task id.
    pub async fn firing_by_task(&self) -> anyhow::Result<HashMap<String, Vec<Alert>>> {
        let mut by_task: HashMap<String, Vec<Alert>> = HashMap::new();
        for (a, _) in self.firing_alerts().await? {
            if let Some(t) = &a.task {
                by_task.entry(t.to_string()).or_default().push(a);
            }
        }
        Ok(by_task)
    }
}

/// Alerts as every view counts them: conditions firing, recent reports.
#[derive(Debug, Default)]
pub struct AlertView {
    /// Stall and system conditions whose latest notification is firing.
    pub firing: Vec<(Alert, u64)>,
    /// One-shot protocol reports (latest per kind and task) in the window.
    pub recent_reports: Vec<(Alert, u64)>,
}

/// Wall-clock now, for ages shown to people.
pub fn now() -> Time {
    baton_service::liveness::wall_now()
}
