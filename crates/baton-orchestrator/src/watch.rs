//! The orchestrator watches the stall detector (decision 8: the watchers
//! watch each other): `DETECTOR_DOWN` when no detector instance has renewed
//! its leadership lease for a while — none running, all stuck, or all cut
//! off — and its resolution when one is active again. The detector does
//! the same for the orchestrator (`ORCHESTRATOR_DOWN`). The judgement is
//! [`baton_core::watch::ServiceWatch`]; this is its executor, run by the
//! active orchestrator only, publishing through the term's fenced outbox.

use std::time::Duration;

use async_nats::jetstream;
use baton_core::{
    Alert, AlertKind, AlertState, subjects,
    watch::{DownLimits, ServiceWatch},
};
use baton_service::{
    leader,
    liveness::wall_now,
    outbox::{Outbox, Outgoing},
    shutdown::Shutdown,
};
use futures::StreamExt;

/// The detector's lease key.
pub const DETECTOR_SERVICE: &str = "stall-detector";

/// Starts watching the detector's lease until `shutdown` (the term's end).
pub async fn spawn_detector_watch(
    js: jetstream::Context,
    outbox: Outbox,
    mut shutdown: Shutdown,
) -> Result<(), String> {
    let leaders = js
        .get_key_value(subjects::LEADERS_BUCKET)
        .await
        .map_err(|e| e.to_string())?;
    let mut renewals = leaders
        .watch_with_history(DETECTOR_SERVICE)
        .await
        .map_err(|e| e.to_string())?;
    let mut watch = ServiceWatch::new(AlertKind::DetectorDown, DownLimits::default());
    // A DETECTOR_DOWN raised by an earlier term stays the same alert.
    if let Some(firing) = last_firing(&js, AlertKind::DetectorDown).await {
        watch.restore(firing);
    }
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let alerts = tokio::select! {
                _ = shutdown.wait() => break,
                entry = renewals.next() => match entry {
                    Some(Ok(entry)) => match leader::renewal(&entry, wall_now()) {
                        Some(r) => watch.seen(&r.instance, r.ttl, r.at),
                        None => Vec::new(),
                    },
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "watch of the detector's lease failed");
                        Vec::new()
                    }
                    None => {
                        tracing::warn!("the watch of the detector's lease ended; DETECTOR_DOWN is not raised until the next term");
                        break;
                    }
                },
                _ = tick.tick() => watch.check(wall_now()),
            };
            if alerts.is_empty() {
                continue;
            }
            let out: Vec<Outgoing> = alerts
                .iter()
                .map(|a| {
                    Outgoing::new(a.raise_subject(), a.encode_to_vec()).with_msg_id(a.msg_id())
                })
                .collect();
            match outbox.deliver(&out, &shutdown).await {
                Ok(_) => {
                    for a in &alerts {
                        tracing::info!(alert = %a.id, kind = %a.kind, state = a.state.as_str(), "{}", a.summary);
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "DETECTOR_DOWN not stored; the next term derives it again");
                    break;
                }
            }
        }
    });
    Ok(())
}

/// The newest notification of `kind` about the system, if it is firing.
pub async fn last_firing(js: &jetstream::Context, kind: AlertKind) -> Option<Alert> {
    let stream = js.get_stream_no_info(subjects::ALERTS_STREAM).await.ok()?;
    let last = stream
        .get_last_raw_message_by_subject(&subjects::raise(kind, None))
        .await
        .ok()?;
    let alert = Alert::decode(&last.payload).ok()?;
    (alert.state == AlertState::Firing).then_some(alert)
}
