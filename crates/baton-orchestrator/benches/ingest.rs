//! Orchestrator ingest against the raw broker, in the same run, on the same
//! stream; prints figures (not a pass/fail test).
//!
//! 1. Pre-publishes `BATON_BENCH_EVENTS` (default 1,000,000) events over
//!    `BATON_BENCH_TASKS` (default 100,000) tasks: create, claim, heartbeats.
//! 2. Raw JetStream consume rate: a durable pull consumer with the
//!    orchestrator's settings (AckPolicy::All, one ack per batch) doing no
//!    work.
//! 3. Orchestrator ingest rate to fully materialised state (every event's
//!    effects acknowledged by the broker, KV written).
//! 4. Publish → KV-visible latency p50/p99 at a steady offered load
//!    (`BATON_BENCH_RATE`, default 10,000 events/s, for 10 s; 0 skips it).
//!
//! `BATON_BENCH_CLUSTER=3` runs all of it on a 3-node cluster with every
//! stream replicated three times (R3). Besides the human lines, one JSON
//! line per measure (`baton_testkit::bench::Figures`; `scripts/bench`
//! collects them).
//!
//! Run: `cargo bench -p baton-orchestrator --bench ingest`
#![allow(clippy::print_stdout)]

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use async_nats::jetstream::{self, message::PublishMessage};
use baton_core::{AgentId, Event, EventBody, TaskCreated, TaskId, WorkflowId, subjects};
use baton_jetstream::{NatsOptions, Topology};
use baton_service::shutdown;
use baton_testkit::bench::{Broker, Figures, RawConsume, env_usize, raw_consume};
use futures::{StreamExt, stream::FuturesUnordered};

// The allocator the `baton` binary runs with.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn events_for(total: usize, tasks: usize) -> Vec<Event> {
    let wf = WorkflowId::new("bench").expect("id");
    let agents: Vec<AgentId> = (0..64)
        .map(|i| AgentId::new(format!("agent-{i}")).expect("id"))
        .collect();
    let ids: Vec<TaskId> = (0..tasks)
        .map(|i| TaskId::new(format!("task-{i:06}")).expect("id"))
        .collect();
    let mut out = Vec::with_capacity(total);
    let mut n = 0u64;
    let mut push =
        |out: &mut Vec<Event>, t: usize, agent: &AgentId, epoch: u64, body: EventBody| {
            n += 1;
            out.push(
                Event::new(
                    format!("ev-{n}"),
                    ids[t].clone(),
                    wf.clone(),
                    agent.clone(),
                    body,
                )
                .with_epoch(epoch),
            );
        };
    for t in 0..tasks {
        push(
            &mut out,
            t,
            &agents[0],
            0,
            EventBody::Created(TaskCreated::default()),
        );
    }
    for t in 0..tasks {
        push(
            &mut out,
            t,
            &agents[t % 64],
            0,
            EventBody::Claimed {
                heartbeat_within: None,
            },
        );
    }
    // Heartbeats spread over the tasks in a scrambled order.
    let mut i = 0usize;
    while out.len() < total {
        let t = (i.wrapping_mul(7919)) % tasks;
        push(
            &mut out,
            t,
            &agents[t % 64],
            1,
            EventBody::Heartbeat {
                note: String::new(),
                progress: i.is_multiple_of(3),
            },
        );
        i += 1;
    }
    out
}

async fn publish_all(js: &jetstream::Context, events: &[Event]) -> Duration {
    let started = Instant::now();
    let mut inflight = FuturesUnordered::new();
    for e in events {
        let msg = PublishMessage::build()
            .payload(e.encode_to_vec().into())
            .message_id(e.event_id.as_str());
        let ack = js
            .send_publish(subjects::event(&e.task, &e.agent), msg)
            .await
            .expect("send");
        inflight.push(ack.into_future());
        if inflight.len() >= 4096 {
            inflight.next().await.expect("ack").expect("stored");
        }
    }
    while let Some(a) = inflight.next().await {
        a.expect("stored");
    }
    started.elapsed()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn main() {
    // e.g. BATON_BENCH_TRACE=baton_orchestrator=debug
    if let Ok(filter) = std::env::var("BATON_BENCH_TRACE") {
        tracing_subscriber::fmt().with_env_filter(filter).init();
    }
    let total = env_usize("BATON_BENCH_EVENTS", 1_000_000);
    let tasks = env_usize("BATON_BENCH_TASKS", 100_000);
    let rate = env_usize("BATON_BENCH_RATE", 10_000);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let broker = rt.block_on(Broker::from_env()).expect("nats-server");
    let url = broker.url();
    let topology = Topology {
        replicas: broker.nodes(),
        ..Topology::default()
    };
    let figures = Figures::new(
        &format!("ingest{}", broker.suffix()),
        &format!("{total} events over {tasks} tasks, R{}", broker.nodes()),
    );
    println!(
        "orchestrator ingest benchmark: {total} events over {tasks} tasks, nats-server at {url} (streams R{})",
        broker.nodes()
    );

    let (js, last_seq) = rt.block_on(async {
        let client = broker.connect().await;
        let js = jetstream::new(client);
        baton_jetstream::ensure(&js, &topology)
            .await
            .expect("topology");
        let events = events_for(total, tasks);
        let took = publish_all(&js, &events).await;
        let publish_rate = events.len() as f64 / took.as_secs_f64();
        println!(
            "pre-published {} events in {:.2}s ({publish_rate:.0} events/s)",
            events.len(),
            took.as_secs_f64(),
        );
        figures.emit("prepublish", publish_rate, "events/s");
        let mut s = js
            .get_stream(subjects::EVENTS_STREAM)
            .await
            .expect("stream");
        let last = s.info().await.expect("info").state.last_sequence;
        (js, last)
    });

    // Raw consume: the orchestrator's consumer settings (filter,
    // AckPolicy::All, max_ack_pending, ack wait, pull batch), no work.
    let defaults = baton_orchestrator::Config::new(NatsOptions::new(url.clone()));
    let raw = rt.block_on(raw_consume(
        &js,
        &RawConsume {
            stream: subjects::EVENTS_STREAM,
            filter: subjects::EVENTS_ALL,
            durable: "bench-raw",
            max_ack_pending: i64::try_from(defaults.max_batch * 4).unwrap_or(i64::MAX),
            ack_wait: defaults.ack_wait,
            batch: defaults.max_batch,
        },
        last_seq,
    ));
    let raw_rate = last_seq as f64 / raw.as_secs_f64();
    println!(
        "raw JetStream consume (AckPolicy::All, ack per batch, no work): {:.2}s = {raw_rate:.0} events/s",
        raw.as_secs_f64()
    );
    figures.emit("raw_consume", raw_rate, "events/s");

    // The orchestrator on its own thread and runtime, as in its own process
    // (the thread is named so a profile can be cut to it).
    let (trigger, shutdown) = shutdown::channel();
    let orch_url = url.clone();
    let orch_topology = topology.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    let orch = std::thread::Builder::new()
        .name("orchestrator".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let started = Instant::now();
                let mut config = baton_orchestrator::Config::new(NatsOptions::new(orch_url));
                config.topology = orch_topology;
                if let Some(ms) = std::env::var("BATON_BENCH_MAX_LAG_MS")
                    .ok()
                    .and_then(|v| v.parse().ok())
                {
                    config.max_lag = Duration::from_millis(ms);
                }
                let running = baton_orchestrator::start(config, shutdown)
                    .await
                    .expect("start");
                tx.send((running.progress.clone(), running.metrics.clone(), started))
                    .expect("send");
                running.wait().await.expect("orchestrator");
            });
        })
        .expect("thread");
    let (progress, metrics, started) = rx.recv().expect("progress");
    let mut all_folded: Option<Duration> = None;
    while progress.applied_seq() < last_seq {
        if all_folded.is_none() && metrics.events_applied.get() >= last_seq {
            all_folded = Some(started.elapsed());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let ingest = started.elapsed();
    if let Some(folded) = all_folded {
        println!(
            "  (every event folded and acknowledged after {:.2}s; the last state flush took the rest)",
            folded.as_secs_f64()
        );
    }
    let ingest_rate = last_seq as f64 / ingest.as_secs_f64();
    println!(
        "orchestrator ingest to fully materialised state: {:.2}s = {ingest_rate:.0} events/s",
        ingest.as_secs_f64()
    );
    println!(
        "  ({} KV writes in {} flushes, {} of them re-sent with an ack per write; {:.2} writes per event)",
        metrics.kv_writes.get(),
        metrics.flushes.get(),
        metrics.flush_fallbacks.get(),
        metrics.kv_writes.get() as f64 / last_seq as f64
    );
    println!(
        "ratio orchestrator / raw consume = {:.2}",
        ingest_rate / raw_rate
    );
    figures.emit("orchestrator_ingest", ingest_rate, "events/s");
    figures.emit("orchestrator_vs_raw", ingest_rate / raw_rate, "ratio");
    figures.emit(
        "kv_writes_per_event",
        metrics.kv_writes.get() as f64 / last_seq as f64,
        "writes/event",
    );

    if rate == 0 {
        trigger.trigger();
        let _ = orch.join();
        return;
    }
    // Latency at a steady offered load.
    let lat = rt.block_on(async {
        let client = broker.connect().await;
        let js = jetstream::new(client);
        let kv = js.get_key_value(subjects::TASKS_BUCKET).await.expect("kv");
        let from = kv.status().await.expect("status").info.state.last_sequence + 1;
        let mut watch = kv.watch_all_from_revision(from).await.expect("watch");
        let secs = 10usize;
        let count = rate * secs;
        // Every KV update seen: (task, last_event_seq it reflects, when).
        let seen: Arc<Mutex<Vec<(String, u64, Instant)>>> = Arc::default();
        let seen_w = seen.clone();
        let watcher = tokio::spawn(async move {
            while let Ok(Some(Ok(entry))) =
                tokio::time::timeout(Duration::from_secs(3), watch.next()).await
            {
                let now = Instant::now();
                if let Ok(task) = baton_core::Task::decode(&entry.value) {
                    seen_w.lock().expect("lock").push((
                        entry.key.to_string(),
                        task.last_seq(),
                        now,
                    ));
                }
            }
        });
        let wf = WorkflowId::new("bench").expect("id");
        let period = Duration::from_secs(1) / u32::try_from(rate).unwrap_or(u32::MAX);
        let start = tokio::time::Instant::now();
        let mut inflight = FuturesUnordered::new();
        let mut sent: Vec<(String, u64, Instant)> = Vec::with_capacity(count);
        for i in 0..count {
            tokio::time::sleep_until(start + period * u32::try_from(i).unwrap_or(u32::MAX)).await;
            let t = (i * 104_729) % tasks;
            let e = Event::new(
                format!("lat-{i}"),
                TaskId::new(format!("task-{t:06}")).expect("id"),
                wf.clone(),
                AgentId::new(format!("agent-{}", t % 64)).expect("id"),
                EventBody::Heartbeat {
                    note: String::new(),
                    progress: true,
                },
            )
            .with_epoch(1);
            let at = Instant::now();
            let msg = PublishMessage::build()
                .payload(e.encode_to_vec().into())
                .message_id(e.event_id.as_str());
            let ack = js
                .send_publish(subjects::event(&e.task, &e.agent), msg)
                .await
                .expect("send");
            let task = e.task.to_string();
            inflight.push(async move { (task, ack.await.expect("stored").sequence, at) });
            while let Some(Some(done)) = futures::FutureExt::now_or_never(inflight.next()) {
                sent.push(done);
            }
        }
        while let Some(done) = inflight.next().await {
            sent.push(done);
        }
        watcher.await.expect("watcher");
        let seen = seen.lock().expect("lock");
        let mut by_task: HashMap<&str, Vec<(u64, Instant)>> = HashMap::new();
        for (task, seq, at) in seen.iter() {
            by_task.entry(task.as_str()).or_default().push((*seq, *at));
        }
        let mut latencies: Vec<Duration> = sent
            .iter()
            .filter_map(|(task, seq, at)| {
                let visible = by_task
                    .get(task.as_str())?
                    .iter()
                    .find(|(s, _)| s >= seq)?
                    .1;
                Some(visible.saturating_duration_since(*at))
            })
            .collect();
        latencies.sort();
        latencies
    });
    println!(
        "publish -> KV-visible at {rate} events/s offered ({} samples): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        lat.len(),
        percentile(&lat, 0.5).as_secs_f64() * 1e3,
        percentile(&lat, 0.99).as_secs_f64() * 1e3,
        lat.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
    );
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    figures.emit(
        &format!("kv_visible_p50_at_{rate}"),
        ms(percentile(&lat, 0.5)),
        "ms",
    );
    figures.emit(
        &format!("kv_visible_p99_at_{rate}"),
        ms(percentile(&lat, 0.99)),
        "ms",
    );
    figures.emit(
        &format!("kv_visible_max_at_{rate}"),
        ms(lat.last().copied().unwrap_or_default()),
        "ms",
    );
    trigger.trigger();
    let _ = orch.join();
}
