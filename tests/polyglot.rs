//! A Python agent (clients/python) and Rust agents through the real Rust
//! services: a handoff chain across languages, a cross-language claim race,
//! and a Python subscriber receiving a stall alert from the Rust detector.
//!
//! Needs the Python venv (`scripts/python-env`, which `scripts/test` runs;
//! `BATON_PYTHON` names its interpreter).

mod support;

use std::{
    io::{BufRead, BufReader},
    path::PathBuf,
    process::{Command, Stdio},
    time::Duration,
};

use baton_agent::{Agent, AgentOptions, ClaimError, NewTask};
use baton_core::TaskStatus;
use serde_json::Value;
use support::*;

fn python() -> PathBuf {
    let path = std::env::var_os("BATON_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../clients/python/.venv/bin/python")
        });
    assert!(
        path.exists(),
        "no Python venv at {}: run scripts/python-env (scripts/test does) or set BATON_PYTHON",
        path.display()
    );
    path
}

fn scenario() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../clients/python/scenarios/agent.py")
}

/// Runs the Python scenario agent to completion; returns its JSON lines.
async fn py(url: &str, agent: &str, args: &[&str]) -> Vec<Value> {
    let out = tokio::process::Command::new(python())
        .arg(scenario())
        .args(["--nats", url, "--agent", agent])
        .args(args)
        .output()
        .await
        .expect("run python agent");
    assert!(
        out.status.success(),
        "python agent {agent} {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect()
}

async fn rust_agent(url: &str, id: &str) -> Agent {
    Agent::connect(AgentOptions::new(id, url))
        .await
        .expect("agent")
}

#[tokio::test]
async fn a_task_passes_from_rust_to_python_and_back() {
    let mut rig = Rig::new().await;
    rig.start_orchestrator(&[]).await;
    let url = rig.server.url();
    let (writer, publisher) = (
        rust_agent(&url, "rust-writer").await,
        rust_agent(&url, "rust-publisher").await,
    );
    writer
        .create_task(NewTask::new("essay", "poly").expect("ids"))
        .await
        .expect("create");
    let owned = writer.claim(&task("essay")).await.expect("claim");
    // The Python agent waits for the offer, accepts it, works, offers on.
    let relay = tokio::spawn({
        let url = url.clone();
        async move {
            py(
                &url,
                "py-editor",
                &["relay", "--task", "essay", "--to", "rust-publisher"],
            )
            .await
        }
    });
    owned
        .offer_to_agent(&agent("py-editor"), "s3://essay/draft", None)
        .await
        .expect("offer");
    let lines = relay.await.expect("relay");
    assert_eq!(lines.last().expect("result")["accepted_epoch"], 2);
    let kv = wait_task(&rig.js, "essay", |t| {
        t.status == TaskStatus::HandoffPending && t.epoch == 2
    })
    .await;
    assert_eq!(
        kv.owner.as_ref().map(|o| o.as_str()),
        Some("py-editor"),
        "the Python agent owned it at epoch 2"
    );
    assert!(kv.last_heartbeat_at.is_some(), "its heartbeat was applied");
    let back = publisher
        .accept_handoff(&task("essay"))
        .await
        .expect("accept from python");
    assert_eq!(back.epoch(), 3);
    back.complete("s3://essay/final", "published")
        .await
        .expect("complete");
    let kv = wait_task(&rig.js, "essay", |t| t.status == TaskStatus::Completed).await;
    assert_eq!(
        (
            kv.owner.as_ref().map(|o| o.as_str()),
            kv.epoch,
            kv.violations
        ),
        (Some("rust-publisher"), 3, 0)
    );
}

#[tokio::test]
async fn python_and_rust_claimers_race_one_owner() {
    let mut rig = Rig::new().await;
    rig.start_orchestrator(&[]).await;
    let url = rig.server.url();
    let planner = rust_agent(&url, "planner").await;
    planner
        .create_task(NewTask::new("prize", "poly").expect("ids"))
        .await
        .expect("create");
    let rust = futures::future::join_all((0..4).map(|i| {
        let url = url.clone();
        async move { rust_agent(&url, &format!("rust-{i}")).await }
    }))
    .await;
    let prize = task("prize");
    let pythons = (0..3).map(|i| {
        let url = url.clone();
        tokio::spawn(
            async move { py(&url, &format!("py-{i}"), &["claim", "--task", "prize"]).await },
        )
    });
    let (rust_results, py_results) = tokio::join!(
        futures::future::join_all(rust.iter().map(|a| a.claim(&prize))),
        futures::future::join_all(pythons)
    );
    let mut winners = Vec::new();
    for (a, r) in rust.iter().zip(&rust_results) {
        match r {
            Ok(_) => winners.push(a.id().to_string()),
            Err(ClaimError::Lost { .. }) => {}
            Err(e) => panic!("unexpected {e}"),
        }
    }
    for (i, r) in py_results.into_iter().enumerate() {
        let line = r.expect("python").pop().expect("a result line");
        if line["ok"] == true {
            winners.push(format!("py-{i}"));
        } else {
            assert_eq!(line["error"], "ClaimLost", "{line}");
        }
    }
    assert_eq!(winners.len(), 1, "exactly one owner: {winners:?}");
    let kv = wait_task(&rig.js, "prize", |t| t.owner.is_some()).await;
    assert_eq!(
        kv.owner.as_ref().map(ToString::to_string),
        Some(winners[0].clone())
    );
    assert_eq!(kv.violations, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_subscriber_receives_the_rust_detectors_alert() {
    let mut rig = Rig::new().await;
    rig.start_orchestrator(&[]).await;
    rig.start_detector("[defaults]\nheartbeat = \"1s\"\nstart = \"1h\"\n")
        .await;
    let url = rig.server.url();
    let mut sub = Command::new(python())
        .arg(scenario())
        .args([
            "--nats",
            &url,
            "--agent",
            "py-ops",
            "alerts",
            "--kind",
            "heartbeat_missed",
            "--task",
            "quiet",
            "--count",
            "1",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn python subscriber");
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = sub.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let ready =
        tokio::task::block_in_place(|| rx.recv_timeout(PATIENCE)).expect("subscriber ready");
    assert_eq!(
        serde_json::from_str::<Value>(&ready).expect("json")["ready"],
        true
    );
    // A Rust agent claims and then goes silent (detached: no heartbeats).
    let worker = rust_agent(&url, "silent-worker").await;
    worker
        .create_task(NewTask::new("quiet", "poly").expect("ids"))
        .await
        .expect("create");
    worker
        .claim_with_lease(&task("quiet"), Duration::from_secs(1))
        .await
        .expect("claim")
        .detach();
    let line = tokio::task::block_in_place(|| rx.recv_timeout(PATIENCE))
        .expect("the alert reaches Python");
    let alert: Value = serde_json::from_str(&line).expect("json");
    assert_eq!(
        (
            alert["kind"].as_str(),
            alert["state"].as_str(),
            alert["task_id"].as_str()
        ),
        (Some("heartbeat_missed"), Some("firing"), Some("quiet"))
    );
    assert_eq!(alert["agents"], serde_json::json!(["silent-worker"]));
    let status = sub.wait().expect("exit");
    assert!(status.success());
}
