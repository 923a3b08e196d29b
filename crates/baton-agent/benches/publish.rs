//! The SDK against the raw broker, in the same run; prints figures (not a
//! pass/fail test).
//!
//! 1. Events/s from one agent with pipelined publishing (`Agent::pipeline`)
//!    vs raw async JetStream publishing of the same payloads with the same
//!    window of acknowledgements in flight.
//! 2. Claim latency p50/p99 (`Agent::claim`, with the orchestrator running
//!    so the KV snapshot is fresh, as in production).
//! 3. Artifact lease acquisition p50/p99 (`Agent::acquire`: read the root,
//!    compare-and-set, read the stored event back) on fresh roots and on
//!    one root with a growing history, against a raw compare-and-set
//!    publish round trip (its lower bound).
//!
//! Besides the human lines, one JSON line per measure
//! (`baton_testkit::bench::Figures`; `scripts/bench` collects them).
//!
//! Run: `cargo bench -p baton-agent --bench publish`
#![allow(clippy::print_stdout)]

use std::time::{Duration, Instant};

use async_nats::jetstream::{self, message::PublishMessage};
use baton_agent::{Agent, AgentOptions, NewTask};
use baton_core::{EventBody, TaskId, WorkflowId, subjects};
use baton_jetstream::{NatsOptions, Topology};
use baton_service::shutdown;
use baton_testkit::{
    NatsServer,
    bench::{Figures, env_usize},
};
use futures::{StreamExt, stream::FuturesUnordered};

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn main() {
    let events = env_usize("BATON_BENCH_EVENTS", 300_000);
    let claims = env_usize("BATON_BENCH_CLAIMS", 2_000);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let server = rt.block_on(NatsServer::start()).expect("nats-server");
    let url = server.url();
    println!("SDK benchmark against nats-server at {url}");
    let figures = Figures::new(
        "publish",
        &format!("{events} events best of 3, {claims} claims"),
    );
    rt.block_on(async {
        let client = async_nats::connect(&url).await.expect("connect");
        let js = jetstream::new(client);
        baton_jetstream::ensure(&js, &Topology::default())
            .await
            .expect("topology");
    });

    // 1. Pipelined publishing: SDK vs raw, alternating runs, best of 3.
    let (sdk, raw) = rt.block_on(async {
        let agent = Agent::connect(AgentOptions::new("bench", url.clone()))
            .await
            .expect("agent");
        let wf = WorkflowId::new("bench").expect("id");
        let raw_js = jetstream::new(async_nats::connect(&url).await.expect("connect"));
        let mut best_sdk = 0f64;
        let mut best_raw = 0f64;
        for round in 0..3 {
            let task = |i: usize| TaskId::new(format!("r{round}-t{}", i % 10_000)).expect("id");
            // SDK: events built and published by the agent.
            let started = Instant::now();
            let mut pipe = agent.pipeline();
            for i in 0..events {
                let e = agent.event(
                    &task(i),
                    &wf,
                    1,
                    EventBody::Heartbeat {
                        note: String::new(),
                        progress: false,
                    },
                );
                pipe.send(&e).await.expect("send");
            }
            let flushed = pipe.flush().await;
            assert!(flushed.failed.is_empty(), "{:?}", flushed.failed.first());
            best_sdk = best_sdk.max(events as f64 / started.elapsed().as_secs_f64());
            // Raw: the same payloads (pre-encoded), the same window.
            let payloads: Vec<_> = (0..events)
                .map(|i| {
                    let e = agent.event(
                        &task(i),
                        &wf,
                        1,
                        EventBody::Heartbeat {
                            note: String::new(),
                            progress: false,
                        },
                    );
                    (
                        subjects::event(&e.task, &e.agent),
                        e.event_id.clone(),
                        bytes::Bytes::from(e.encode_to_vec()),
                    )
                })
                .collect();
            let started = Instant::now();
            type Ack =
                <jetstream::context::PublishAckFuture as std::future::IntoFuture>::IntoFuture;
            let mut inflight: FuturesUnordered<Ack> = FuturesUnordered::new();
            for (subject, id, payload) in payloads {
                if inflight.len() >= 4096 {
                    inflight.next().await.expect("ack").expect("stored");
                }
                let ack = raw_js
                    .send_publish(
                        subject,
                        PublishMessage::build()
                            .payload(payload)
                            .message_id(id.as_str()),
                    )
                    .await
                    .expect("send");
                inflight.push(std::future::IntoFuture::into_future(ack));
            }
            while let Some(a) = inflight.next().await {
                a.expect("stored");
            }
            best_raw = best_raw.max(events as f64 / started.elapsed().as_secs_f64());
        }
        (best_sdk, best_raw)
    });
    println!("pipelined publishing, {events} events, best of 3:");
    println!("  SDK (Agent::pipeline, events built per send): {sdk:.0} events/s");
    println!("  raw async JetStream publish (pre-encoded):     {raw:.0} events/s");
    println!("  ratio SDK / raw = {:.2}", sdk / raw);
    figures.emit("sdk_publish", sdk, "events/s");
    figures.emit("raw_publish", raw, "events/s");
    figures.emit("sdk_vs_raw", sdk / raw, "ratio");

    // 2. Claim latency with the orchestrator materialising state.
    let (trigger, shutdown) = shutdown::channel();
    let orch_url = url.clone();
    let orch = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let running = baton_orchestrator::start(
                baton_orchestrator::Config::new(NatsOptions::new(orch_url)),
                shutdown,
            )
            .await
            .expect("orchestrator");
            running.wait().await.expect("orchestrator");
        });
    });
    let mut lat = rt.block_on(async {
        let agent = Agent::connect(AgentOptions::new("claimer", url.clone()))
            .await
            .expect("agent");
        let planner = Agent::connect(AgentOptions::new("planner", url.clone()))
            .await
            .expect("agent");
        for i in 0..claims {
            planner
                .create_task(NewTask::new(&format!("c{i}"), "bench").expect("ids"))
                .await
                .expect("create");
        }
        let mut lat = Vec::with_capacity(claims);
        for i in 0..claims {
            let task = TaskId::new(format!("c{i}")).expect("id");
            let started = Instant::now();
            let owned = agent.claim(&task).await.expect("claim");
            lat.push(started.elapsed());
            owned.detach();
        }
        lat
    });
    lat.sort();
    println!(
        "claim latency ({claims} claims, CAS publish + state read): p50 {:.2} ms, p99 {:.2} ms",
        percentile(&lat, 0.5).as_secs_f64() * 1e3,
        percentile(&lat, 0.99).as_secs_f64() * 1e3
    );
    figures.emit("claim_p50", percentile(&lat, 0.5).as_secs_f64() * 1e3, "ms");
    figures.emit(
        "claim_p99",
        percentile(&lat, 0.99).as_secs_f64() * 1e3,
        "ms",
    );

    // 3. Lease acquisition vs a raw compare-and-set round trip.
    let leases = claims.min(1_000);
    let (fresh, busy, raw_cas, refused) = rt.block_on(async {
        let agent = Agent::connect(AgentOptions::new("leaser", url.clone()))
            .await
            .expect("agent");
        let mut fresh = Vec::with_capacity(leases);
        for i in 0..leases {
            let started = Instant::now();
            let lease = agent
                .acquire(
                    &format!("fresh{i}/file"),
                    baton_core::lease::LeaseMode::Exclusive,
                )
                .await
                .expect("acquire");
            fresh.push(started.elapsed());
            lease.detach();
        }
        // Refusals on those roots: recording the wait (the default, a
        // second publish) and not (a probe).
        let other = Agent::connect(AgentOptions::new("waiter", url.clone()))
            .await
            .expect("agent");
        let mut refused = [Vec::with_capacity(leases), Vec::with_capacity(leases)];
        for (record_wait, times) in [true, false].into_iter().zip(refused.iter_mut()) {
            for i in 0..leases {
                let options = baton_agent::LeaseOptions {
                    record_wait,
                    ..baton_agent::LeaseOptions::default()
                };
                let started = Instant::now();
                let result = other
                    .acquire_with(
                        &format!("fresh{i}/file"),
                        baton_core::lease::LeaseMode::Exclusive,
                        options,
                    )
                    .await;
                times.push(started.elapsed());
                assert!(result.is_err(), "held by the leaser");
            }
        }
        other.close().await;
        // One root whose history grows by two events per round.
        let mut busy = Vec::with_capacity(leases);
        for _ in 0..leases {
            let started = Instant::now();
            let lease = agent
                .acquire("busy/file", baton_core::lease::LeaseMode::Exclusive)
                .await
                .expect("acquire");
            busy.push(started.elapsed());
            lease.release("bench").await.expect("release");
        }
        let raw_js = jetstream::new(async_nats::connect(&url).await.expect("connect"));
        let mut raw = Vec::with_capacity(leases);
        for i in 0..leases {
            let mut headers = async_nats::HeaderMap::new();
            headers.insert("Nats-Expected-Last-Subject-Sequence", "0");
            let started = Instant::now();
            raw_js
                .send_publish(
                    format!("baton.art._.raw.raw{i}.~"),
                    PublishMessage::build()
                        .payload(bytes::Bytes::from_static(b"x"))
                        .headers(headers)
                        .message_id(nuid::next().as_str()),
                )
                .await
                .expect("send")
                .await
                .expect("stored");
            raw.push(started.elapsed());
        }
        agent.close().await;
        (fresh, busy, raw, refused)
    });
    let ms = |v: &[Duration], p: f64| percentile(v, p).as_secs_f64() * 1e3;
    let (mut fresh, mut busy, mut raw_cas) = (fresh, busy, raw_cas);
    let [mut refused_waiting, mut refused_probe] = refused;
    fresh.sort();
    busy.sort();
    raw_cas.sort();
    refused_waiting.sort();
    refused_probe.sort();
    println!(
        "lease refusal ({leases} each): recording the wait p50 {:.2} ms p99 {:.2} ms; a probe (record_wait off) p50 {:.2} ms p99 {:.2} ms",
        ms(&refused_waiting, 0.5),
        ms(&refused_waiting, 0.99),
        ms(&refused_probe, 0.5),
        ms(&refused_probe, 0.99),
    );
    figures.emit("lease_refused_waiting_p50", ms(&refused_waiting, 0.5), "ms");
    figures.emit("lease_refused_probe_p50", ms(&refused_probe, 0.5), "ms");
    println!(
        "lease acquisition ({leases} each): fresh roots p50 {:.2} ms p99 {:.2} ms; one root growing to {} events p50 {:.2} ms p99 {:.2} ms; raw CAS publish p50 {:.2} ms p99 {:.2} ms; ratio fresh/raw p50 = {:.1}",
        ms(&fresh, 0.5),
        ms(&fresh, 0.99),
        2 * leases,
        ms(&busy, 0.5),
        ms(&busy, 0.99),
        ms(&raw_cas, 0.5),
        ms(&raw_cas, 0.99),
        ms(&fresh, 0.5) / ms(&raw_cas, 0.5)
    );
    figures.emit("lease_acquire_p50", ms(&fresh, 0.5), "ms");
    figures.emit("lease_acquire_p99", ms(&fresh, 0.99), "ms");
    figures.emit("lease_acquire_busy_root_p50", ms(&busy, 0.5), "ms");
    figures.emit("lease_acquire_busy_root_p99", ms(&busy, 0.99), "ms");
    figures.emit("raw_cas_p50", ms(&raw_cas, 0.5), "ms");
    figures.emit(
        "lease_vs_raw_cas_p50",
        ms(&fresh, 0.5) / ms(&raw_cas, 0.5),
        "ratio",
    );
    trigger.trigger();
    let _ = orch.join();
}
