//! What others do, as it happens: the events other agents publish and the
//! alerts Baton raises, handed to the [`Desk`] so the agent hears at once
//! when a handoff is offered to it or it loses a task, instead of at its
//! next heartbeat.
//!
//! Events are read with an ordered pull consumer named in its create
//! subject (the agent role's permissions allow exactly that, see
//! `baton_jetstream::auth`), through the one read path; alerts are a plain
//! subscription on `baton.alert.>`, which agents may read.

use std::{sync::Arc, time::Duration};

use async_nats::jetstream::{
    self,
    consumer::{DeliverPolicy, pull::OrderedConfig},
};
use baton_core::{Alert, subjects, wire::read_event};
use futures::StreamExt as _;

use crate::desk::Desk;

/// Follows events and alerts until the process ends; reconnects after
/// errors with a pause.
pub async fn run(desk: Arc<Desk>) {
    tokio::join!(events(desk.clone()), alerts(desk));
}

async fn events(desk: Arc<Desk>) {
    let js = jetstream::new(desk.agent().client().clone());
    loop {
        if let Err(e) = follow_events(&js, &desk).await {
            tracing::warn!(error = %e, "following events failed; retrying");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn follow_events(js: &jetstream::Context, desk: &Desk) -> Result<(), String> {
    let stream = js
        .get_stream_no_info(subjects::EVENTS_STREAM)
        .await
        .map_err(|e| e.to_string())?;
    let consumer = stream
        .create_consumer(OrderedConfig {
            name: Some(format!("baton-mcp-{}-{}", desk.me(), nuid::next())),
            filter_subject: subjects::EVENTS_ALL.to_string(),
            deliver_policy: DeliverPolicy::New,
            ..Default::default()
        })
        .await
        .map_err(|e| e.to_string())?;
    let mut messages = consumer.messages().await.map_err(|e| e.to_string())?;
    while let Some(msg) = messages.next().await {
        let msg = msg.map_err(|e| e.to_string())?;
        // The one read path: forgeries and oversized events are not news.
        if let Ok(event) = read_event(&msg.subject, &msg.payload) {
            desk.observe(&event).await;
        }
    }
    Err("the event stream ended".into())
}

async fn alerts(desk: Arc<Desk>) {
    loop {
        match desk
            .agent()
            .client()
            .subscribe(subjects::ALERTS_ALL.to_string())
            .await
        {
            Ok(mut sub) => {
                while let Some(msg) = sub.next().await {
                    if let Ok(alert) = Alert::decode(&msg.payload) {
                        desk.observe_alert(&alert).await;
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "subscribing to alerts failed; retrying"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
