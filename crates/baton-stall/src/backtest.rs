//! Replaying recorded history with a set of rules, on virtual time: which
//! alerts the rules would have raised, and when. Lets thresholds be tuned
//! before a rollout. Uses the same engine as the live detector.

use std::time::Duration;

use async_nats::jetstream::{
    self,
    consumer::{DeliverPolicy, pull::OrderedConfig},
};
use baton_core::{
    Alert, EventMeta, Policy, Time, rules::Rules, stall::Detector, subjects, wire::read_event,
};
use futures::StreamExt;

use crate::DetectorError;

/// What to replay.
#[derive(Debug, Clone)]
pub struct BacktestOptions {
    pub rules: Rules,
    pub policy: Policy,
    /// First stream sequence (1 = the beginning).
    pub from: u64,
    /// Last stream sequence (None = the end of the stream now).
    pub to: Option<u64>,
    /// Also evaluate deadlines this long after the last event's stored time.
    pub tail: Duration,
}

/// What the rules would have done.
#[derive(Debug, Default)]
pub struct BacktestReport {
    /// Every notification, in the order it would have been published.
    pub alerts: Vec<Alert>,
    pub events: u64,
    pub undecodable: u64,
    pub first: Option<(u64, Time)>,
    pub last: Option<(u64, Time)>,
}

/// Replays `BATON_EVENTS`; `progress(done, total)` is called now and then.
pub async fn backtest(
    js: &jetstream::Context,
    options: &BacktestOptions,
    mut progress: impl FnMut(u64, u64),
) -> Result<BacktestReport, DetectorError> {
    let err = |e: &dyn std::fmt::Display| {
        DetectorError::Setup(format!("reading {}: {e}", subjects::EVENTS_STREAM))
    };
    let mut stream = js
        .get_stream(subjects::EVENTS_STREAM)
        .await
        .map_err(|e| err(&e))?;
    let state = stream.info().await.map_err(|e| err(&e))?.state.clone();
    let from = options.from.max(state.first_sequence).max(1);
    let to = options
        .to
        .unwrap_or(state.last_sequence)
        .min(state.last_sequence);
    let mut report = BacktestReport::default();
    let mut det = Detector::new(options.rules.clone(), options.policy.clone());
    if to >= from {
        let total = to - from + 1;
        let consumer = stream
            .create_consumer(OrderedConfig {
                filter_subject: subjects::EVENTS_ALL.into(),
                deliver_policy: DeliverPolicy::ByStartSequence {
                    start_sequence: from,
                },
                ..Default::default()
            })
            .await
            .map_err(|e| err(&e))?;
        let mut messages = consumer.messages().await.map_err(|e| err(&e))?;
        let mut done = 0u64;
        progress(0, total);
        while let Some(next) = tokio::time::timeout(Duration::from_secs(10), messages.next())
            .await
            .map_err(|_| err(&"timed out"))?
        {
            let msg = next.map_err(|e| err(&e))?;
            let info = msg.info().map_err(|e| err(&e))?;
            let meta = EventMeta {
                seq: info.stream_sequence,
                stored_at: baton_jetstream::read::time_of(info.published),
            };
            if meta.seq > to {
                break;
            }
            report.first.get_or_insert((meta.seq, meta.stored_at));
            report.last = Some((meta.seq, meta.stored_at));
            match read_event(msg.subject.as_str(), &msg.payload) {
                Ok(event) => {
                    // Deadlines fire at their due time, as the live
                    // detector's timers fire them, not when the next
                    // event happens to arrive.
                    report.alerts.extend(
                        det.run_until(meta.stored_at.saturating_sub(Duration::from_nanos(1))),
                    );
                    report.alerts.extend(det.handle_event(&event, meta));
                    report.events += 1;
                }
                Err(_) => report.undecodable += 1,
            }
            done += 1;
            if done.is_multiple_of(1000) {
                progress(done, total);
            }
            if meta.seq >= to {
                break;
            }
        }
        progress(done, total);
    }
    if let Some((_, last)) = report.last {
        report
            .alerts
            .extend(det.run_until(last.saturating_add(options.tail)));
    }
    Ok(report)
}
