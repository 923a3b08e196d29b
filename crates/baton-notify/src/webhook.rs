//! What a webhook is sent, and when to try again, as pure functions.
//!
//! - [`json_body`]: the alert in the same shape as `baton alerts --json`,
//!   plus a `delivery_id` (`<webhook>:<Nats-Msg-Id>`, the same for every
//!   attempt, so a receiver can drop the one duplicate a crash mid-delivery
//!   can cause) and the Slack-style `text`.
//! - [`slack_body`]: `{"text": "..."}`, which Slack, Mattermost, Rocket.Chat
//!   and Teams-compatible incoming webhooks accept.
//! - [`judge`]: after an attempt, deliver / retry after a backoff / give up.
//!
//! The give-up rule (the only way an alert is acknowledged without being
//! delivered): the target refused it (HTTP 4xx other than 408, 425, 429)
//! `refused_attempts` times — a payload it will never take — or the alert
//! was stored more than `give_up_after` ago and still cannot be delivered.
//! Each is counted in `baton_notify_given_up_total` and logged as an error.

use std::time::Duration;

use baton_core::{Alert, AlertState, Time, subjects};
use serde::Serialize;

use crate::{
    client::{HttpError, Reply},
    config::Retry,
};

/// The `version` field of JSON bodies.
pub const BODY_VERSION: &str = "baton.notify.v1";

/// An alert, field for field as `baton alerts --json` writes it.
pub use baton_core::alert::json::{AlertJson, EventRefJson};

/// The JSON body of a delivery.
#[derive(Debug, Clone, Serialize)]
pub struct JsonBody {
    pub version: &'static str,
    /// `<webhook>:<Nats-Msg-Id>`: the same on every attempt and after a
    /// restart; receivers may de-duplicate on it.
    pub delivery_id: String,
    pub alert: AlertJson,
    pub console_url: Option<String>,
    /// The same text the Slack form carries.
    pub text: String,
}

/// The id a delivery of `alert` to webhook `target` carries.
pub fn delivery_id(target: &str, alert: &Alert) -> String {
    format!("{target}:{}", alert.msg_id())
}

/// The JSON form.
pub fn json_body(target: &str, alert: &Alert, seq: u64, console: Option<&str>) -> Vec<u8> {
    let body = JsonBody {
        version: BODY_VERSION,
        delivery_id: delivery_id(target, alert),
        alert: AlertJson::from_alert(alert, seq),
        console_url: console.map(str::to_string),
        text: text(alert, console),
    };
    serde_json::to_vec(&body).unwrap_or_default()
}

/// The Slack-compatible form.
pub fn slack_body(alert: &Alert, console: Option<&str>) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({ "text": text(alert, console) })).unwrap_or_default()
}

/// A few lines a person reads in a chat channel.
pub fn text(alert: &Alert, console: Option<&str>) -> String {
    let head = match (alert.state, alert.kind.is_report()) {
        (AlertState::Resolved, _) => "RESOLVED",
        (AlertState::Firing, true) => "REPORT",
        (AlertState::Firing, false) if alert.notification > 0 => "STILL FIRING",
        (AlertState::Firing, false) => "FIRING",
    };
    let task = alert
        .task
        .as_ref()
        .map_or(subjects::SYSTEM_TOKEN, |t| t.as_str());
    let mut where_ = format!("task {task}");
    if let Some(w) = &alert.workflow {
        where_.push_str(&format!(", workflow {w}"));
    }
    if let Some(s) = &alert.stage {
        where_.push_str(&format!(", stage {s}"));
    }
    let mut out = format!(
        "[{head}] {} ({}) on {where_}\n{}",
        alert.kind.as_str().to_ascii_uppercase(),
        alert.severity.as_str(),
        alert.summary
    );
    if alert.state == AlertState::Firing {
        if !alert.expected.is_empty() {
            out.push_str(&format!("\nExpected: {}", alert.expected));
            if let Some(due) = alert.due_at {
                out.push_str(&format!(" (due {due})"));
            }
        }
        if let Some(e) = &alert.last_event {
            out.push_str(&format!(
                "\nLast event: {} from {} at {}",
                e.kind, e.agent, e.at
            ));
        }
        if !alert.agents.is_empty() {
            let agents: Vec<&str> = alert.agents.iter().map(|a| a.as_str()).collect();
            out.push_str(&format!("\nAgents: {}", agents.join(", ")));
        }
    }
    if let Some(link) = console {
        out.push_str(&format!("\n{link}"));
    }
    out
}

/// What to do after an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Delivered,
    RetryAfter(Duration),
    GiveUp(String),
}

/// The wait before attempt `attempt + 1` (attempts count from 1).
pub fn backoff(retry: &Retry, attempt: u32) -> Duration {
    let factor = 1u32 << attempt.saturating_sub(1).min(20);
    retry.initial.saturating_mul(factor).min(retry.max)
}

/// Judges attempt number `attempt` (from 1), of which `refusals` (this one
/// included) were refusals, for an alert stored at `stored_at`.
pub fn judge(
    outcome: Result<&Reply, &HttpError>,
    attempt: u32,
    refusals: u32,
    stored_at: Time,
    now: Time,
    retry: &Retry,
) -> Verdict {
    let why = match outcome {
        Ok(reply) if reply.is_success() => return Verdict::Delivered,
        Ok(reply) if reply.is_refusal() && refusals >= retry.refused_attempts => {
            return Verdict::GiveUp(format!(
                "refused {refusals} time(s), last with HTTP {}: {}",
                reply.status,
                baton_core::alert::clip(&reply.body, 300)
            ));
        }
        Ok(reply) => format!("HTTP {}", reply.status),
        Err(e) => e.to_string(),
    };
    if now.since(stored_at) >= retry.give_up_after {
        return Verdict::GiveUp(format!(
            "still undeliverable {} after it was stored (give_up_after): {why}",
            baton_core::time::human_duration(now.since(stored_at))
        ));
    }
    Verdict::RetryAfter(backoff(retry, attempt))
}

#[cfg(test)]
mod tests {
    use super::*;
    use baton_core::{AgentId, AlertKind, TaskId};

    fn retry() -> Retry {
        Retry {
            initial: Duration::from_millis(500),
            max: Duration::from_secs(30),
            give_up_after: Duration::from_secs(3600),
            refused_attempts: 3,
        }
    }

    fn alert() -> Alert {
        let mut a = Alert::firing(
            AlertKind::HandoffNotAccepted,
            "handoff_not_accepted.t1.e1.s4".into(),
            Some(TaskId::new("t1").expect("id")),
            Time::from_unix_millis(1_800_000_000_000),
        );
        a.agents = vec![
            AgentId::new("writer").expect("id"),
            AgentId::new("editor").expect("id"),
        ];
        a.summary = "nobody accepted".into();
        a.expected = "editor to accept".into();
        a
    }

    #[test]
    fn bodies_carry_the_alert_and_a_stable_delivery_id() {
        let a = alert();
        let v: serde_json::Value =
            serde_json::from_slice(&json_body("ops", &a, 7, Some("http://c/tasks/t1")))
                .expect("json");
        assert_eq!(v["delivery_id"], "ops:handoff_not_accepted.t1.e1.s4");
        assert_eq!(v["alert"]["kind"], "handoff_not_accepted");
        assert_eq!(v["alert"]["seq"], 7);
        assert_eq!(v["alert"]["agents"][1], "editor");
        let s: serde_json::Value = serde_json::from_slice(&slack_body(&a, None)).expect("json");
        let line = s["text"].as_str().expect("text");
        assert!(
            line.starts_with("[FIRING] HANDOFF_NOT_ACCEPTED (critical) on task t1"),
            "{line}"
        );
        assert!(line.contains("Agents: writer, editor"), "{line}");
        let r = a.resolved(Time::from_unix_millis(1_800_000_100_000), "accepted".into());
        assert_eq!(
            delivery_id("ops", &r),
            "ops:handoff_not_accepted.t1.e1.s4.resolved"
        );
        assert!(text(&r, None).starts_with("[RESOLVED]"));
    }

    #[test]
    fn retries_back_off_and_give_up_by_the_rule() {
        let r = retry();
        let t0 = Time::from_unix_millis(1_800_000_000_000);
        let ok = Reply {
            status: 204,
            body: String::new(),
        };
        let down = Reply {
            status: 503,
            body: String::new(),
        };
        let refused = Reply {
            status: 400,
            body: "bad".into(),
        };
        assert_eq!(judge(Ok(&ok), 1, 0, t0, t0, &r), Verdict::Delivered);
        assert_eq!(
            judge(Ok(&down), 1, 0, t0, t0, &r),
            Verdict::RetryAfter(Duration::from_millis(500))
        );
        assert_eq!(
            judge(Ok(&down), 3, 0, t0, t0, &r),
            Verdict::RetryAfter(Duration::from_secs(2))
        );
        assert_eq!(
            judge(Ok(&down), 40, 0, t0, t0, &r),
            Verdict::RetryAfter(Duration::from_secs(30))
        );
        assert!(matches!(
            judge(Ok(&refused), 2, 2, t0, t0, &r),
            Verdict::RetryAfter(_)
        ));
        assert!(matches!(
            judge(Ok(&refused), 3, 3, t0, t0, &r),
            Verdict::GiveUp(_)
        ));
        let late = t0.saturating_add(Duration::from_secs(3600));
        assert!(matches!(
            judge(Ok(&down), 9, 0, t0, late, &r),
            Verdict::GiveUp(_)
        ));
    }
}
