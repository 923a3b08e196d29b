//! Tool-call latency through the MCP server vs the SDK directly, in the
//! same run; prints figures (not a pass/fail test).
//!
//! Claim and progress (a heartbeat with progress) latency p50/p99:
//!
//! 1. the SDK (`Agent::claim`, `Ownership::heartbeat`);
//! 2. the same acts as MCP `tools/call` requests (JSON-RPC lines, as a
//!    host writes them on the server's stdin) to the server, in process
//!    over a pipe: the MCP layer's cost (framing, schemas, the context
//!    gate, the bookkeeping) on top of the SDK.
//!
//! A real nats-server and the real orchestrator run, as in production.
//!
//! Besides the human lines, one JSON line per measure
//! (`baton_testkit::bench::Figures`; `scripts/bench` collects them).
//!
//! Run: `cargo bench -p baton-mcp --bench tools`
#![allow(clippy::print_stdout)]

use std::time::{Duration, Instant};

use async_nats::jetstream;
use baton_agent::{AgentOptions, NewTask};
use baton_core::TaskId;
use baton_jetstream::{NatsOptions, Topology};
use baton_service::shutdown;
use baton_testkit::{
    NatsServer,
    bench::{Figures, env_usize},
};
use rmcp::ServiceExt as _;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Prints the line and the figures `<measure>_p50`, `<measure>_p99`.
fn report(
    figures: &Figures,
    what: &str,
    measure: &str,
    mut lat: Vec<Duration>,
) -> (Duration, Duration) {
    lat.sort();
    let (p50, p99) = (percentile(&lat, 0.5), percentile(&lat, 0.99));
    figures.emit(&format!("{measure}_p50"), p50.as_secs_f64() * 1e3, "ms");
    figures.emit(&format!("{measure}_p99"), p99.as_secs_f64() * 1e3, "ms");
    println!(
        "{what:<28} n={:<5} p50 {:>6.2} ms  p99 {:>6.2} ms",
        lat.len(),
        p50.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3
    );
    (p50, p99)
}

/// A host's side of a stdio MCP session, by hand: one JSON-RPC request per
/// line, answers read back by id (notifications skipped).
struct Host {
    writer: tokio::io::WriteHalf<tokio::io::DuplexStream>,
    reader: BufReader<tokio::io::ReadHalf<tokio::io::DuplexStream>>,
    next_id: u64,
}

impl Host {
    async fn send(&mut self, message: Value) {
        let mut line = message.to_string();
        line.push('\n');
        self.writer.write_all(line.as_bytes()).await.expect("write");
    }

    async fn request(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        self.send(json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))
            .await;
        let mut line = String::new();
        loop {
            line.clear();
            self.reader.read_line(&mut line).await.expect("read");
            let answer: Value = serde_json::from_str(&line).expect("json");
            if answer.get("id") == Some(&json!(id)) {
                return answer;
            }
        }
    }

    async fn call(&mut self, tool: &str, arguments: Value) -> Value {
        let answer = self
            .request("tools/call", json!({"name": tool, "arguments": arguments}))
            .await;
        let result = &answer["result"];
        assert_eq!(result["isError"], json!(false), "{tool}: {answer}");
        result["structuredContent"].clone()
    }
}

fn main() {
    let n = env_usize("BATON_BENCH_CALLS", 500);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let server = rt.block_on(NatsServer::start()).expect("nats-server");
    let url = server.url();
    println!("MCP tool-call latency against nats-server at {url}");
    let figures = Figures::new("tools", &format!("{n} calls each"));
    rt.block_on(async {
        let client = async_nats::connect(&url).await.expect("connect");
        baton_jetstream::ensure(&jetstream::new(client), &Topology::default())
            .await
            .expect("topology");
    });
    let (trigger, signal) = shutdown::channel();
    let orch_url = url.clone();
    let orch = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            baton_orchestrator::start(
                baton_orchestrator::Config::new(NatsOptions::new(orch_url)),
                signal,
            )
            .await
            .expect("orchestrator")
            .wait()
            .await
            .expect("orchestrator");
        });
    });

    rt.block_on(async {
        let planner = baton_agent::Agent::connect(AgentOptions::new("planner", url.clone()))
            .await
            .expect("agent");
        for i in 0..n {
            for prefix in ["sdk", "mcp"] {
                planner
                    .create_task(NewTask::new(&format!("{prefix}{i}"), "bench").expect("ids"))
                    .await
                    .expect("create");
            }
        }

        // 1. The SDK directly.
        let agent = baton_agent::Agent::connect(AgentOptions::new("sdk-agent", url.clone()))
            .await
            .expect("agent");
        let (mut claim, mut progress) = (Vec::with_capacity(n), Vec::with_capacity(n));
        for i in 0..n {
            let task = TaskId::new(format!("sdk{i}")).expect("id");
            let started = Instant::now();
            let owned = agent.claim(&task).await.expect("claim");
            claim.push(started.elapsed());
            let started = Instant::now();
            owned.heartbeat("step", true).await.expect("heartbeat");
            progress.push(started.elapsed());
            owned.detach();
        }
        let sdk_claim = report(&figures, "SDK claim", "sdk_claim", claim);
        let sdk_progress = report(&figures, "SDK progress", "sdk_progress", progress);

        // 2. The same acts through the MCP server.
        let desk = baton_mcp::start(baton_mcp::Config {
            agent: AgentOptions::new("mcp-agent", url.clone()),
            stages: Vec::new(),
        })
        .await
        .expect("desk");
        let (host_side, server_side) = tokio::io::duplex(1 << 16);
        let handler = baton_mcp::BatonMcp::new(desk.clone());
        let session = tokio::spawn(async move {
            let running = handler.serve(server_side).await.expect("serve");
            let _ = running.waiting().await;
        });
        let (reader, writer) = tokio::io::split(host_side);
        let mut host = Host {
            writer,
            reader: BufReader::new(reader),
            next_id: 0,
        };
        let init = host
            .request(
                "initialize",
                json!({
                    "protocolVersion": "2025-11-25",
                    "capabilities": {},
                    "clientInfo": {"name": "bench", "version": "0"},
                }),
            )
            .await;
        assert!(init.get("result").is_some(), "initialize: {init}");
        host.send(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
            .await;
        let (mut claim, mut progress) = (Vec::with_capacity(n), Vec::with_capacity(n));
        for i in 0..n {
            let task = format!("mcp{i}");
            let started = Instant::now();
            host.call("claim_task", json!({"task_id": task})).await;
            claim.push(started.elapsed());
            let started = Instant::now();
            host.call(
                "report_progress",
                json!({"task_id": task, "note": "step", "progress": true}),
            )
            .await;
            progress.push(started.elapsed());
        }
        let mcp_claim = report(&figures, "MCP claim_task", "mcp_claim", claim);
        let mcp_progress = report(&figures, "MCP report_progress", "mcp_progress", progress);
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        println!(
            "MCP overhead: claim p50 +{:.2} ms, p99 +{:.2} ms; progress p50 +{:.2} ms, p99 +{:.2} ms",
            ms(mcp_claim.0.saturating_sub(sdk_claim.0)),
            ms(mcp_claim.1.saturating_sub(sdk_claim.1)),
            ms(mcp_progress.0.saturating_sub(sdk_progress.0)),
            ms(mcp_progress.1.saturating_sub(sdk_progress.1)),
        );
        drop(host);
        let _ = session.await;
        desk.detach_all().await;
    });
    trigger.trigger();
    let _ = orch.join();
}
