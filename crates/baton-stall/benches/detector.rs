//! The stall detector with many armed deadlines; prints figures (not a
//! pass/fail test).
//!
//! 1. Memory per tracked task: the engine alone, `BATON_BENCH_TASKS`
//!    (default 1,000,000) claimed tasks, each with armed deadlines; process
//!    RSS growth divided by the tasks.
//! 2. The service against a real server with those tasks in history:
//!    ingest time; alert latency after due time p50/p99 for probe tasks
//!    whose leases run out while the million deadlines stay armed; and
//!    restart-to-ready time (snapshot load) after a graceful stop.
//!    Before the detector starts, a raw consume of the same events (a
//!    durable pull consumer with the detector's settings: AckPolicy::All,
//!    max_ack_pending, ack wait, batch size; no work) gives the broker's
//!    pace in the same run, and the detector's ingest is reported as a
//!    ratio to it.
//!
//! `BATON_BENCH_CLUSTER=3` runs part 2 on a 3-node cluster with every
//! stream replicated three times (R3). Besides the human lines, one JSON
//! line per measure (`baton_testkit::bench::Figures`; `scripts/bench`
//! collects them).
//!
//! Run: `cargo bench -p baton-stall --bench detector`
#![allow(clippy::print_stdout)]

use std::time::{Duration, Instant};

use async_nats::jetstream::{self, message::PublishMessage};
use baton_core::{
    AgentId, Alert, AlertKind, AlertState, Event, EventBody, EventMeta, Policy, TaskCreated,
    TaskId, Time, WorkflowId, rules::Rules, stall::Detector, subjects,
};
use baton_jetstream::{NatsOptions, Topology};
use baton_service::shutdown;
use baton_testkit::bench::{Broker, Figures, RawConsume, env_usize, raw_consume};
use futures::{StreamExt, stream::FuturesUnordered};

// The allocator the `baton` binary runs with (RSS depends on it).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .unwrap_or(0)
        * 1024
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

const LONG_LEASE: Duration = Duration::from_secs(3600);

fn task_events(i: usize, wf: &WorkflowId, agents: &[AgentId]) -> [Event; 2] {
    let id = TaskId::new(format!("task-{i:07}")).expect("id");
    let agent = agents[i % agents.len()].clone();
    [
        Event::new(
            format!("c{i}"),
            id.clone(),
            wf.clone(),
            agent.clone(),
            EventBody::Created(TaskCreated::default()),
        ),
        Event::new(
            format!("k{i}"),
            id,
            wf.clone(),
            agent,
            EventBody::Claimed {
                heartbeat_within: Some(LONG_LEASE),
            },
        ),
    ]
}

fn main() {
    let tasks = env_usize("BATON_BENCH_TASKS", 1_000_000);
    let probes = env_usize("BATON_BENCH_PROBES", 2_000);
    let wf = WorkflowId::new("bench").expect("id");
    let agents: Vec<AgentId> = (0..64)
        .map(|i| AgentId::new(format!("agent-{i}")).expect("id"))
        .collect();

    // 1. Memory per tracked task, engine only.
    let before = rss_bytes();
    let mut det = Detector::new(Rules::default(), Policy::default());
    let t0 = Time::from_unix_millis(1_800_000_000_000);
    let started = Instant::now();
    for i in 0..tasks {
        for (k, e) in task_events(i, &wf, &agents).iter().enumerate() {
            let seq = (i * 2 + k + 1) as u64;
            det.handle_event(
                e,
                EventMeta {
                    seq,
                    stored_at: t0.saturating_add(Duration::from_micros(seq)),
                },
            );
        }
    }
    let fold = started.elapsed();
    let after = rss_bytes();
    println!(
        "engine: {} tracked tasks with armed deadlines, folded in {:.2}s; RSS grew {:.1} MiB = {:.0} bytes per tracked task",
        det.len(),
        fold.as_secs_f64(),
        (after.saturating_sub(before)) as f64 / (1 << 20) as f64,
        after.saturating_sub(before) as f64 / det.len() as f64
    );
    let bytes_per_task = after.saturating_sub(before) as f64 / det.len() as f64;
    let next = det.poll_timeout();
    drop(det);
    let _ = next;

    // 2. The service against a real server.
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
        &format!("detector{}", broker.suffix()),
        &format!(
            "{tasks} tasks ({} events), {probes} probes, R{}",
            tasks * 2,
            broker.nodes()
        ),
    );
    figures.emit("engine_bytes_per_task", bytes_per_task, "bytes");
    let (js, last_seq) = rt.block_on(async {
        let js = jetstream::new(broker.connect().await);
        baton_jetstream::ensure(&js, &topology)
            .await
            .expect("topology");
        let started = Instant::now();
        let mut inflight = FuturesUnordered::new();
        for i in 0..tasks {
            for e in task_events(i, &wf, &agents) {
                if inflight.len() >= 4096 {
                    let r: Result<_, _> = inflight.next().await.expect("ack");
                    r.expect("stored");
                }
                let ack = js
                    .send_publish(
                        subjects::event(&e.task, &e.agent),
                        PublishMessage::build()
                            .payload(e.encode_to_vec().into())
                            .message_id(e.event_id.as_str()),
                    )
                    .await
                    .expect("send");
                inflight.push(std::future::IntoFuture::into_future(ack));
            }
        }
        while let Some(a) = inflight.next().await {
            a.expect("stored");
        }
        println!(
            "pre-published {} events in {:.1}s",
            tasks * 2,
            started.elapsed().as_secs_f64()
        );
        let mut s = js
            .get_stream(subjects::EVENTS_STREAM)
            .await
            .expect("stream");
        let last = s.info().await.expect("info").state.last_sequence;
        (js, last)
    });

    // Raw consume of the same events with the detector's consumer settings.
    let defaults = baton_stall::Config::new(NatsOptions::new(url.clone()));
    let raw = rt.block_on(raw_consume(
        &js,
        &RawConsume {
            stream: subjects::EVENTS_STREAM,
            filter: subjects::EVENTS_ALL,
            durable: "bench-raw",
            max_ack_pending: i64::try_from(defaults.max_batch * 4).unwrap_or(i64::MAX),
            ack_wait: Duration::from_secs(30),
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

    let start_detector = |url: String| {
        let topology = topology.clone();
        let (trigger, shutdown) = shutdown::channel();
        let (tx, rx) = std::sync::mpsc::channel();
        let handle = std::thread::Builder::new()
            .name("detector".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                rt.block_on(async move {
                    let started = Instant::now();
                    let mut config = baton_stall::Config::new(NatsOptions::new(url));
                    config.topology = topology;
                    let running = baton_stall::start(config, shutdown)
                        .await
                        .expect("detector");
                    tx.send((
                        running.progress.clone(),
                        running.restored_tasks,
                        started.elapsed(),
                    ))
                    .expect("send");
                    running.wait().await.expect("detector");
                });
            })
            .expect("thread");
        let (progress, restored, startup) = rx.recv().expect("started");
        (trigger, handle, progress, restored, startup)
    };

    let started = Instant::now();
    let (trigger, handle, progress, _, _) = start_detector(url.clone());
    while progress.applied_seq() < last_seq {
        std::thread::sleep(Duration::from_millis(10));
    }
    let ingest = started.elapsed();
    let ingest_rate = last_seq as f64 / ingest.as_secs_f64();
    println!(
        "detector ingest of {last_seq} events to a stored snapshot: {:.1}s = {ingest_rate:.0} events/s",
        ingest.as_secs_f64()
    );
    println!(
        "ratio detector / raw consume = {:.2}",
        ingest_rate / raw_rate
    );
    figures.emit("detector_ingest", ingest_rate, "events/s");
    figures.emit("detector_ingest_time", ingest.as_secs_f64(), "s");
    figures.emit("detector_vs_raw", ingest_rate / raw_rate, "ratio");

    // Alert latency: probe tasks whose leases run out 2..12 s from now
    // while the million long deadlines stay armed.
    let mut lat = rt.block_on(async {
        let client = broker.connect().await;
        let js = jetstream::new(client.clone());
        let mut sub = client
            .subscribe("baton.alert.heartbeat_missed.>")
            .await
            .expect("subscribe");
        let mut inflight = FuturesUnordered::new();
        for i in 0..probes {
            let id = TaskId::new(format!("probe-{i}")).expect("id");
            let lease = Duration::from_millis(2_000 + (i as u64 * 10_000 / probes as u64));
            for (n, body) in [
                EventBody::Created(TaskCreated::default()),
                EventBody::Claimed {
                    heartbeat_within: Some(lease),
                },
            ]
            .into_iter()
            .enumerate()
            {
                let e = Event::new(
                    format!("p{i}-{n}"),
                    id.clone(),
                    wf.clone(),
                    agents[0].clone(),
                    body,
                );
                let ack = js
                    .send_publish(
                        subjects::event(&e.task, &e.agent),
                        PublishMessage::build().payload(e.encode_to_vec().into()),
                    )
                    .await
                    .expect("send");
                inflight.push(std::future::IntoFuture::into_future(ack));
            }
        }
        while let Some(a) = inflight.next().await {
            a.expect("stored");
        }
        let mut lat = Vec::with_capacity(probes);
        while lat.len() < probes {
            let Ok(Some(msg)) = tokio::time::timeout(Duration::from_secs(30), sub.next()).await
            else {
                break;
            };
            let now = baton_service::liveness::wall_now();
            if let Ok(a) = Alert::decode(&msg.payload)
                && a.kind == AlertKind::HeartbeatMissed
                && a.state == AlertState::Firing
                && let Some(due) = a.due_at
            {
                lat.push(now.since(due));
            }
        }
        lat
    });
    lat.sort();
    println!(
        "alert latency after due time with {tasks} armed deadlines ({} probe alerts): p50 {:.0} ms, p99 {:.0} ms (includes the 100 ms grace)",
        lat.len(),
        percentile(&lat, 0.5).as_secs_f64() * 1e3,
        percentile(&lat, 0.99).as_secs_f64() * 1e3
    );
    figures.emit(
        "alert_latency_p50",
        percentile(&lat, 0.5).as_secs_f64() * 1e3,
        "ms",
    );
    figures.emit(
        "alert_latency_p99",
        percentile(&lat, 0.99).as_secs_f64() * 1e3,
        "ms",
    );

    // Restart-to-ready with the million tasks in history.
    trigger.trigger();
    let _ = handle.join();
    let (trigger, handle, _, restored, startup) = start_detector(url.clone());
    println!(
        "restart to ready with {} tasks in history: {:.2}s ({restored} tasks restored from the snapshot)",
        tasks + probes,
        startup.as_secs_f64()
    );
    figures.emit("restart_to_ready", startup.as_secs_f64(), "s");
    trigger.trigger();
    let _ = handle.join();
}
