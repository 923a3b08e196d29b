//! The `baton` binary as an operator uses it, against real servers: every
//! operator command's table and `--json`, clear errors, and `baton dev
//! --demo` catching every failure mode and stopping cleanly.

mod support;

use std::{
    io::{BufRead, BufReader},
    process::{Command, Output, Stdio},
    time::Duration,
};

use baton_proto::prost::Message as _;
use baton_testkit::NatsServer;
use serde_json::Value;
use support::*;

fn baton(url: &str, args: &[&str]) -> Output {
    Command::new(baton_bin())
        .arg("--nats")
        .arg(url)
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .expect("run baton")
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

fn json(out: &Output) -> Value {
    serde_json::from_str(&ok(out)).expect("valid JSON")
}

/// A server with both services as child processes.
async fn stack() -> Rig {
    let mut rig = Rig::new().await;
    rig.start_orchestrator(&[]).await;
    rig.start_detector("[defaults]\nheartbeat = \"1h\"\naccept = \"1s\"\nstart = \"1h\"\n")
        .await;
    rig
}

#[tokio::test]
async fn an_operator_session() {
    let rig = stack().await;
    let url = rig.server.url();
    // A shell script acting as agents.
    ok(&baton(
        &url,
        &[
            "emit",
            "created",
            "--task",
            "post-1",
            "--agent",
            "planner",
            "--workflow",
            "blog",
            "--stage",
            "draft",
            "--title",
            "Launch post",
        ],
    ));
    let claim = json(&baton(
        &url,
        &[
            "emit", "claimed", "--task", "post-1", "--agent", "writer", "--json",
        ],
    ));
    assert_eq!(
        (claim["epoch"].as_u64(), claim["kind"].as_str()),
        (Some(1), Some("claimed"))
    );
    let lost = baton(
        &url,
        &["emit", "claimed", "--task", "post-1", "--agent", "thief"],
    );
    assert_eq!(lost.status.code(), Some(2), "a lost claim exits 2");
    assert!(String::from_utf8_lossy(&lost.stderr).contains("owned by writer"));
    ok(&baton(
        &url,
        &[
            "emit",
            "heartbeat",
            "--task",
            "post-1",
            "--agent",
            "writer",
            "--progress",
            "--note",
            "outline",
        ],
    ));
    let not_owner = baton(
        &url,
        &["emit", "heartbeat", "--task", "post-1", "--agent", "thief"],
    );
    assert_eq!(not_owner.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&not_owner.stderr).contains("use --raw"),
        "{}",
        String::from_utf8_lossy(&not_owner.stderr)
    );
    ok(&baton(
        &url,
        &[
            "emit",
            "handoff_offered",
            "--task",
            "post-1",
            "--agent",
            "writer",
            "--to-agent",
            "editor",
            "--output",
            "s3://d/1",
        ],
    ));
    ok(&baton(
        &url,
        &[
            "emit",
            "completed",
            "--task",
            "post-1",
            "--agent",
            "intern",
            "--raw",
        ],
    ));
    ok(&baton(
        &url,
        &[
            "emit",
            "created",
            "--task",
            "post-2",
            "--agent",
            "planner",
            "--workflow",
            "blog",
        ],
    ));
    let (_, _) = wait_alert(
        &rig.js,
        is_alert(baton_core::AlertKind::HandoffNotAccepted, "post-1"),
    )
    .await;
    wait_task(&rig.js, "post-1", |t| t.violations == 1).await;

    // tasks: table and JSON, with filters.
    let table = ok(&baton(&url, &["tasks"]));
    let header = table.lines().next().expect("header");
    for col in [
        "TASK",
        "STATUS",
        "OWNER",
        "EPOCH",
        "STAGE",
        "WORKFLOW",
        "LAST EVENT",
        "ALERTS",
    ] {
        assert!(header.contains(col), "{header}");
    }
    let row = table
        .lines()
        .find(|l| l.starts_with("post-1"))
        .expect("post-1 row");
    assert!(
        row.contains("handoff_pending")
            && row.contains("writer")
            && row.contains("handoff_not_accepted"),
        "{row}"
    );
    let all = json(&baton(&url, &["tasks", "--json"]));
    assert_eq!(all.as_array().expect("array").len(), 2);
    let stalled = json(&baton(&url, &["tasks", "--stalled", "--json"]));
    assert_eq!(
        stalled.as_array().map(|a| a
            .iter()
            .map(|t| t["task_id"].as_str().unwrap_or(""))
            .collect::<Vec<_>>()),
        Some(vec!["post-1"])
    );
    assert_eq!(stalled[0]["pending_handoff"]["to_agent"], "editor");
    let owned = json(&baton(&url, &["tasks", "--owner", "writer", "--json"]));
    assert_eq!(owned.as_array().expect("array").len(), 1);
    let submitted = json(&baton(&url, &["tasks", "--status", "submitted", "--json"]));
    assert_eq!(submitted[0]["task_id"], "post-2");
    let bad = baton(&url, &["tasks", "--status", "sleeping"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("unknown status \"sleeping\""));

    // task: timeline with owner and epoch after each event.
    let detail = ok(&baton(&url, &["task", "post-1"]));
    assert!(
        detail.contains("handoff pending: writer -> agent editor"),
        "{detail}"
    );
    assert!(
        detail.contains("REFUSED: intern is not the owner (owner: writer)"),
        "{detail}"
    );
    assert!(
        detail.contains("Firing alerts:") && detail.contains("handoff_not_accepted"),
        "{detail}"
    );
    let detail = json(&baton(&url, &["task", "post-1", "--json"]));
    let kinds: Vec<_> = detail["timeline"]
        .as_array()
        .expect("timeline")
        .iter()
        .map(|e| e["kind"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(
        kinds,
        vec![
            "created",
            "claimed",
            "heartbeat",
            "handoff_offered",
            "completed"
        ]
    );
    assert_eq!(detail["timeline"][1]["owner_after"], "writer");
    assert_eq!(detail["timeline"][1]["epoch_after"], 1);
    assert!(detail["timeline"][4]["refused"].as_str().is_some());
    let unknown = baton(&url, &["task", "nope"]);
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("unknown task nope"));

    // alerts: table, filters, JSON.
    let alerts = ok(&baton(&url, &["alerts"]));
    assert!(
        alerts.contains("handoff_not_accepted") && alerts.contains("ownership_violation"),
        "{alerts}"
    );
    let only = json(&baton(
        &url,
        &["alerts", "--kind", "ownership_violation", "--json"],
    ));
    assert_eq!(only.as_array().expect("array").len(), 1);
    assert_eq!(only[0]["agents"], serde_json::json!(["intern", "writer"]));
    // A violation is a one-shot report, never "firing": every view says so
    // and counts it the same way.
    assert_eq!(only[0]["lifecycle"], "report");
    let violation_row = alerts
        .lines()
        .find(|l| l.contains("ownership_violation"))
        .expect("row");
    assert!(
        violation_row.contains("REPORT") && !violation_row.contains("FIRING"),
        "{violation_row}"
    );
    let st = status_json(&url, &[]);
    assert_eq!(
        st["recent_reports_by_kind"]["ownership_violation"], 1,
        "{st:#}"
    );
    assert!(
        st["firing_alerts_by_kind"]
            .get("ownership_violation")
            .is_none(),
        "{st:#}"
    );
    let none = json(&baton(&url, &["alerts", "--task", "post-2", "--json"]));
    assert_eq!(none, serde_json::json!([]));

    // context: record and read.
    let rec = json(&baton(
        &url,
        &[
            "context",
            "blog",
            "record",
            "--as",
            "editor",
            "--summary",
            "British spelling",
            "--json",
        ],
    ));
    assert!(rec["version"].as_u64().is_some_and(|v| v > 0));
    let ctx = ok(&baton(&url, &["context", "blog"]));
    assert!(
        ctx.contains("British spelling") && ctx.contains("editor"),
        "{ctx}"
    );
    let ctx = json(&baton(&url, &["context", "blog", "--json"]));
    assert_eq!(ctx["entries"][0]["summary"], "British spelling");

    // silence: add, list, expire.
    let s = json(&baton(
        &url,
        &[
            "silence", "add", "--task", "post-1", "--for", "10m", "--reason", "known", "--json",
        ],
    ));
    let id = s["id"].as_str().expect("id").to_string();
    let list = ok(&baton(&url, &["silence", "list"]));
    assert!(list.contains(&id) && list.contains("post-1"), "{list}");
    ok(&baton(&url, &["silence", "expire", &id]));
    let list = json(&baton(&url, &["silence", "list", "--json"]));
    assert_eq!(list, serde_json::json!([]));
    let refuse = baton(&url, &["silence", "add", "--for", "1h"]);
    assert!(
        !refuse.status.success()
            && String::from_utf8_lossy(&refuse.stderr).contains("at least one of")
    );

    // status: services, streams, consumers, counts, firing; exit 1 while
    // alerts are firing.
    let out = baton(&url, &["status"]);
    assert_eq!(out.status.code(), Some(1), "firing alerts: degraded");
    let status = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(status.contains("Health DEGRADED"), "{status}");
    for needle in [
        "orchestrator",
        "stall-detector",
        "active",
        "BATON_EVENTS",
        "baton-orchestrator",
        "handoff_pending 1",
        "handoff_not_accepted 1",
    ] {
        assert!(status.contains(needle), "missing {needle:?} in\n{status}");
    }
    let status = status_json(&url, &[]);
    assert_eq!(status["health"], "degraded");
    assert_eq!(status["tasks_by_status"]["submitted"], 1);
    assert!(
        status["services"]
            .as_array()
            .expect("services")
            .iter()
            .all(|s| s["alive"] == true)
    );
}

#[tokio::test]
async fn alerts_follow_streams_new_alerts() {
    let rig = stack().await;
    let url = rig.server.url();
    let mut follow = Command::new(baton_bin())
        .args(["--nats", &url, "alerts", "--follow", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let stdout = follow.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut ev = Events::new("w");
    publish(&rig.js, &ev.created("t", "p")).await;
    publish(&rig.js, &ev.claimed("t", "a")).await;
    publish(&rig.js, &ev.heartbeat("t", "intruder", 1)).await;
    let line = tokio::task::spawn_blocking(move || rx.recv_timeout(PATIENCE))
        .await
        .expect("join")
        .expect("a line");
    let alert: Value = serde_json::from_str(&line).expect("json line");
    assert_eq!(alert["kind"], "ownership_violation");
    assert_eq!(alert["task_id"], "t");
    let _ = Command::new("kill")
        .args(["-INT", &follow.id().to_string()])
        .status();
    let status = follow.wait().expect("exit");
    assert!(status.success(), "ctrl-c ends --follow cleanly");
}

#[tokio::test]
async fn errors_say_what_to_do() {
    // Nothing listens on this port (a server was started and stopped).
    let dead = {
        let s = NatsServer::start().await.expect("server");
        s.url()
    };
    let out = baton(&dead, &["tasks"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("cannot reach NATS at {dead}")) && err.contains("baton dev"),
        "{err}"
    );

    // A server without Baton's streams.
    let bare = NatsServer::start().await.expect("server");
    let out = baton(&bare.url(), &["status"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no Baton streams"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = baton(
        &bare.url(),
        &["emit", "nonsense", "--task", "t", "--agent", "a"],
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown event kind \"nonsense\""));
    let out = baton(
        &bare.url(),
        &[
            "emit",
            "created",
            "--task",
            "bad.id",
            "--agent",
            "a",
            "--workflow",
            "w",
        ],
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid task id \"bad.id\""));
}

/// `baton dev --demo`: every catch (the four failure modes and the draft
/// file's lease held and expired), then SIGINT stops everything it
/// started.
#[test]
fn dev_demo_catches_every_failure_mode_and_stops_cleanly() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut dev = Command::new(baton_bin())
        .args(["dev", "--demo", "--port", "0", "--data"])
        .arg(dir.path().join("data"))
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn baton dev");
    let stdout = dev.stdout.take().expect("stdout");
    let mut lines = Vec::new();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !lines
        .iter()
        .any(|l: &String| l.starts_with("Demo complete"))
    {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => lines.push(line),
            Err(_) => panic!("the demo did not complete:\n{}", lines.join("\n")),
        }
    }
    let all = lines.join("\n");
    for catch in [
        "CAUGHT CLAIM RACE",
        "CAUGHT HANDOFF_NOT_ACCEPTED",
        "RESOLVED HANDOFF_NOT_ACCEPTED",
        "CAUGHT STALE_CONTEXT",
        "CAUGHT OWNERSHIP_VIOLATION",
        "CAUGHT LEASE HELD",
        "CAUGHT LEASE_EXPIRED",
    ] {
        assert!(all.contains(catch), "missing {catch}:\n{all}");
    }
    let pid = dev.id();
    // Its nats-server is a child process.
    let children = Command::new("ps")
        .args(["-o", "pid=,args=", "--ppid", &pid.to_string()])
        .output()
        .expect("ps");
    let servers: Vec<String> = String::from_utf8_lossy(&children.stdout)
        .lines()
        .filter(|l| l.contains("nats-server"))
        .filter_map(|l| l.split_whitespace().next().map(String::from))
        .collect();
    assert_eq!(servers.len(), 1, "baton dev runs one nats-server");
    let _ = Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status();
    let status = dev.wait().expect("exit");
    assert!(status.success(), "baton dev exits 0 on SIGINT");
    let alive = Command::new("kill")
        .args(["-0", &servers[0]])
        .stderr(Stdio::null())
        .status()
        .expect("kill -0");
    let orphans: Vec<&String> = if alive.success() {
        servers.iter().collect()
    } else {
        Vec::new()
    };
    assert!(orphans.is_empty(), "left behind: {orphans:?}");
}

/// `baton status` as a healthcheck: its exit status is 0 only when an
/// orchestrator and a stall detector are alive and nothing fires; 2 when
/// either is missing or down; instances that stopped cleanly are forgotten.
#[tokio::test]
async fn status_says_when_nothing_is_watching() {
    let mut rig = Rig::new().await;
    let url = rig.server.url();
    rig.start_orchestrator(&[]).await;
    // Only the orchestrator: nothing raises stall alerts.
    let out = baton(&url, &["status"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(
        text.contains("Health DOWN")
            && text.contains("no stall-detector has reported: nothing raises stall alerts")
            && text.contains("no stall detector is watching"),
        "{text}"
    );
    let js = status_json(&url, &[]);
    assert_eq!(js["health"], "down");
    assert_eq!(js["required"][1]["state"], "missing");

    // Both services: healthy, exit 0.
    rig.start_detector("[defaults]\nheartbeat = \"1h\"\naccept = \"1h\"\nstart = \"1h\"\n")
        .await;
    let out = baton(&url, &["status"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("Health healthy"));

    // The detector stops cleanly: it is gone (not listed as DOWN), and
    // status says nothing raises stall alerts.
    assert!(rig.extra[0].terminate(), "the detector exits 0 on SIGTERM");
    let js = status_json(&url, &[]);
    assert_eq!(js["health"], "down");
    assert_eq!(js["required"][1]["state"], "missing", "{js:#}");
    let services: Vec<&str> = js["services"]
        .as_array()
        .expect("services")
        .iter()
        .map(|s| s["service"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(services, vec!["orchestrator"], "{js:#}");

    // The orchestrator crashes: its record stays, goes stale, and status
    // says it is down.
    rig.orchestrator.as_mut().expect("orchestrator").kill9();
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let js = status_json(&url, &[]);
        if js["required"][0]["state"] == "down" {
            assert_eq!(js["services"][0]["alive"], false);
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the crashed orchestrator never showed as down: {js:#}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let out = baton(&url, &["status"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("no orchestrator has reported for"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// A service that still writes its liveness record but does not consume
/// (wedged) is stuck: status exits 2 and says so.
#[tokio::test]
async fn status_says_when_a_service_is_stuck() {
    let mut rig = Rig::new().await;
    let url = rig.server.url();
    let record = rig.start_orchestrator(&[]).await;
    rig.start_detector("[defaults]\nheartbeat = \"1h\"\naccept = \"1h\"\nstart = \"1h\"\n")
        .await;
    // The orchestrator's consumer stops moving, while its liveness record
    // stays fresh (as a wedged process's timer would keep it).
    rig.orchestrator.as_mut().expect("orchestrator").kill9();
    let services = wait_bucket(&rig.js, baton_core::subjects::SERVICES_BUCKET).await;
    let keep_fresh = tokio::spawn(async move {
        loop {
            let _ = services
                .put("orchestrator.o1", record.encode_to_vec().into())
                .await;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    let mut ev = Events::new("w");
    publish(&rig.js, &ev.created("t", "p")).await;
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let js = status_json(&url, &["--stuck-after", "1s"]);
        if js["required"][0]["state"] == "stuck" {
            break;
        }
        assert_eq!(js["required"][0]["state"], "ok", "{js:#}");
        assert!(
            std::time::Instant::now() < deadline,
            "never reported stuck: {js:#}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let out = baton(&url, &["status", "--stuck-after", "1s"]);
    keep_fresh.abort();
    assert_eq!(out.status.code(), Some(2));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("the orchestrator is alive but stuck"),
        "{text}"
    );
}

/// `baton status --json` (any exit status).
fn status_json(url: &str, extra: &[&str]) -> Value {
    let mut args = vec!["status", "--json"];
    args.extend_from_slice(extra);
    let out = baton(url, &args);
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "status --json is not JSON ({e}): {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// `baton emit created` on a task that exists is refused before anything
/// is published (exit 2), so a script run twice raises no alert.
#[tokio::test]
async fn emit_created_refuses_a_task_that_exists() {
    let mut rig = Rig::new().await;
    let url = rig.server.url();
    rig.start_orchestrator(&[]).await;
    let create = [
        "emit",
        "created",
        "--task",
        "t",
        "--agent",
        "p",
        "--workflow",
        "w",
    ];
    ok(&baton(&url, &create));
    let again = baton(&url, &create);
    assert_eq!(again.status.code(), Some(2), "an existing task exits 2");
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(
        err.contains("task t already exists (submitted): nothing was published"),
        "{err}"
    );
    let stored = read_all(
        &rig.js,
        baton_core::subjects::EVENTS_STREAM,
        "baton.evt.t.*",
    )
    .await;
    assert_eq!(stored.len(), 1, "the second creation was not stored");
}

/// A refusal names the act and the rule that refused it, not a claim.
#[tokio::test]
async fn refusals_name_the_act_and_the_rule() {
    let mut rig = Rig::new().await;
    let url = rig.server.url();
    rig.start_orchestrator(&[]).await;
    let emit = |kind: &'static str, agent: &'static str| {
        vec![
            "emit",
            kind,
            "--task",
            "t",
            "--agent",
            agent,
            "--workflow",
            "w",
        ]
    };
    ok(&baton(&url, &emit("created", "p")));
    ok(&baton(&url, &emit("claimed", "writer")));
    let out = baton(&url, &emit("heartbeat", "intruder"));
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("heartbeat for task t refused: only the owner may send it, and the owner is writer (epoch 1)"),
        "{err}"
    );
    assert!(!err.contains("claim"), "{err}");
    ok(&baton(&url, &emit("completed", "writer")));
    let out = baton(&url, &emit("completed", "writer"));
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("completed for task t refused: the task is already completed"),
        "{err}"
    );
    assert!(!err.contains("claimed"), "{err}");
}

/// `baton status | head -1` and `baton alerts --follow | head -1`: a
/// closed stdout ends baton quietly (no panic message), with the status a
/// shell reports for a command stopped by a closed pipe.
#[tokio::test]
async fn a_closed_pipe_ends_baton_quietly() {
    let mut rig = Rig::new().await;
    let url = rig.server.url();
    rig.start_orchestrator(&[]).await;
    // A pipe whose reader is gone before baton writes anything.
    let closed_stdout = || {
        let (reader, writer) = std::io::pipe().expect("pipe");
        drop(reader);
        writer
    };
    let out = Command::new(baton_bin())
        .args(["--nats", &url, "status"])
        .stdout(closed_stdout())
        .stderr(Stdio::piped())
        .output()
        .expect("run baton");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !err.contains("panicked") && !err.contains("Broken pipe"),
        "{err}"
    );
    assert_eq!(out.status.code(), Some(141), "{err}");

    // Following: the first alert written to the closed pipe ends it.
    let follow = Command::new(baton_bin())
        .args(["--nats", &url, "alerts", "--follow", "--json"])
        .stdout(closed_stdout())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut ev = Events::new("w");
    publish(&rig.js, &ev.created("t", "p")).await;
    publish(&rig.js, &ev.claimed("t", "a")).await;
    publish(&rig.js, &ev.heartbeat("t", "intruder", 1)).await;
    let out = tokio::task::spawn_blocking(move || {
        let (tx, rx) = std::sync::mpsc::channel();
        let pid = follow.id();
        std::thread::spawn(move || {
            let _ = tx.send(follow.wait_with_output());
        });
        let result = rx.recv_timeout(PATIENCE);
        if result.is_err() {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
        result
    })
    .await
    .expect("join")
    .expect("alerts --follow ends when its stdout is closed")
    .expect("output");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(out.status.code(), Some(141), "{err}");
}

/// In a workflow with decisions, `baton emit` sends the record's current
/// version (as an SDK agent that read it would), so a shell script acting
/// as an agent raises no STALE_CONTEXT; `--context-version` overrides it.
#[tokio::test]
async fn emit_sends_the_decision_record_version() {
    let mut rig = Rig::new().await;
    let url = rig.server.url();
    rig.start_orchestrator(&[]).await;
    let rec = json(&baton(
        &url,
        &[
            "context",
            "w",
            "record",
            "--as",
            "editor",
            "--summary",
            "en-GB",
            "--json",
        ],
    ));
    let version = rec["version"].as_u64().expect("version");
    ok(&baton(
        &url,
        &[
            "emit",
            "created",
            "--task",
            "t",
            "--agent",
            "p",
            "--workflow",
            "w",
        ],
    ));
    ok(&baton(
        &url,
        &["emit", "claimed", "--task", "t", "--agent", "a"],
    ));
    ok(&baton(
        &url,
        &[
            "emit",
            "heartbeat",
            "--task",
            "t",
            "--agent",
            "a",
            "--progress",
        ],
    ));
    ok(&baton(
        &url,
        &[
            "emit",
            "heartbeat",
            "--task",
            "t",
            "--agent",
            "a",
            "--raw",
            "--epoch",
            "1",
        ],
    ));
    let sent: Vec<u64> = read_all(
        &rig.js,
        baton_core::subjects::EVENTS_STREAM,
        "baton.evt.t.*",
    )
    .await
    .iter()
    .map(|m| {
        baton_core::wire::decode_event(&m.payload)
            .expect("event")
            .context_version
    })
    .collect();
    assert_eq!(
        sent,
        vec![version; 4],
        "every event carries the version read"
    );
    rig.wait_caught_up().await;
    let stale: Vec<_> = all_alerts(&rig.js)
        .await
        .into_iter()
        .filter(|a| a.kind == baton_core::AlertKind::StaleContext)
        .collect();
    assert!(stale.is_empty(), "{stale:?}");
    // Told otherwise, it sends what it is told.
    ok(&baton(
        &url,
        &[
            "emit",
            "heartbeat",
            "--task",
            "t",
            "--agent",
            "a",
            "--context-version",
            "0",
        ],
    ));
    let last = read_all(
        &rig.js,
        baton_core::subjects::EVENTS_STREAM,
        "baton.evt.t.*",
    )
    .await;
    let last = baton_core::wire::decode_event(&last.last().expect("event").payload).expect("event");
    assert_eq!(last.context_version, 0);
}

/// Small things a newcomer trips over: both spellings of cancel(l)ed, JSON
/// from `rules check`, a zero-length silence refused, `--help` that groups
/// connection flags apart from a command's own.
#[tokio::test]
async fn small_inconsistencies_are_gone() {
    let mut rig = Rig::new().await;
    let url = rig.server.url();
    rig.start_orchestrator(&[]).await;
    ok(&baton(
        &url,
        &[
            "emit",
            "created",
            "--task",
            "t",
            "--agent",
            "p",
            "--workflow",
            "w",
        ],
    ));
    // The task status is spelled `canceled`, the event `cancelled`: both work.
    ok(&baton(
        &url,
        &["emit", "canceled", "--task", "t", "--agent", "op"],
    ));
    wait_task(&rig.js, "t", |t| {
        t.status == baton_core::TaskStatus::Canceled
    })
    .await;
    for spelling in ["cancelled", "canceled"] {
        let listed = json(&baton(&url, &["tasks", "--status", spelling, "--json"]));
        assert_eq!(listed[0]["task_id"], "t", "--status {spelling}");
    }

    // rules check --json, valid and not.
    let good = rig.dir.path().join("good.toml");
    std::fs::write(
        &good,
        "[defaults]\nheartbeat = \"45s\"\n[workflows.blog]\naccept = \"1m\"\n",
    )
    .expect("write");
    let checked = json(&baton(
        &url,
        &["rules", "check", "--json", &good.to_string_lossy()],
    ));
    assert_eq!(checked["valid"], true);
    assert_eq!(checked["defaults"]["heartbeat_ms"], 45_000);
    assert_eq!(checked["defaults"]["progress_ms"], Value::Null, "off");
    assert_eq!(checked["workflows"]["blog"]["accept_ms"], 60_000);
    let bad = rig.dir.path().join("bad.toml");
    std::fs::write(&bad, "[defaults]\nheartbeat = \"soon\"\n").expect("write");
    let out = baton(&url, &["rules", "check", "--json", &bad.to_string_lossy()]);
    assert!(!out.status.success());
    let checked: Value = serde_json::from_slice(&out.stdout).expect("JSON even when invalid");
    assert_eq!(checked["valid"], false);
    assert!(
        checked["error"]
            .as_str()
            .is_some_and(|e| e.contains("heartbeat")),
        "{checked}"
    );

    // A silence of zero length mutes nothing: refused.
    let out = baton(&url, &["silence", "add", "--task", "t", "--for", "0s"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("a silence must last longer than 0s"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let list = json(&baton(&url, &["silence", "list", "--json"]));
    assert_eq!(list, serde_json::json!([]), "nothing was stored");

    // `emit --help`: its own flags first, grouped by event; connection
    // flags under their own heading.
    let help = ok(&baton(&url, &["emit", "--help"]));
    let at = |needle: &str| {
        help.find(needle)
            .unwrap_or_else(|| panic!("{needle:?} not in\n{help}"))
    };
    assert!(at("Connection:") < at("--nats <URL>"), "{help}");
    assert!(at("--task <TASK>") < at("Connection:"), "{help}");
    assert!(at("For created:") < at("--stage <STAGE>"), "{help}");
    let help = ok(&baton(&url, &["tasks", "--help"]));
    assert!(help.contains("Only tasks of this workflow"), "{help}");
    let help = ok(&baton(&url, &["status", "--help"]));
    assert!(
        help.contains("Exit status:") && help.contains("2  down"),
        "{help}"
    );
}

/// `baton dlq`: list and show what the services could not use (reason,
/// subject, headers, bytes), and re-drive a dead letter to the events
/// stream once it passes the checks (stored once however often re-driven).
#[tokio::test]
async fn dlq_lists_shows_and_redrives() {
    use baton_core::subjects::{DLQ_ALL, DLQ_STREAM, EVENTS_STREAM};
    let mut rig = Rig::new().await;
    let url = rig.server.url();
    rig.start_orchestrator(&[]).await;
    publish_raw(
        &rig.js,
        "baton.evt.t.a",
        b"\xde\xad\xbe\xef not protobuf".to_vec(),
        Some("junk-1"),
    )
    .await;
    let deadline = std::time::Instant::now() + PATIENCE;
    while read_all(&rig.js, DLQ_STREAM, DLQ_ALL).await.is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "nothing was dead-lettered"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let list = json(&baton(&url, &["dlq", "list", "--json"]));
    let letter = &list[0];
    assert_eq!(letter["subject"], "baton.evt.t.a", "{list:#}");
    assert_eq!(letter["original_msg_id"], "junk-1");
    assert!(
        letter["source"]
            .as_str()
            .is_some_and(|s| s.starts_with("BATON_EVENTS:"))
    );
    assert!(letter["reason"].as_str().is_some_and(|r| !r.is_empty()));
    let seq = letter["seq"].as_u64().expect("seq").to_string();
    let table = ok(&baton(&url, &["dlq", "list"]));
    assert!(table.contains("baton.evt.t.a"), "{table}");
    let shown = ok(&baton(&url, &["dlq", "show", &seq]));
    assert!(
        shown.contains("subject   baton.evt.t.a")
            && shown.contains("00000000  de ad be ef 20 6e 6f 74"),
        "{shown}"
    );
    let shown = json(&baton(&url, &["dlq", "show", &seq, "--json"]));
    assert!(
        shown["payload_hex"]
            .as_str()
            .is_some_and(|h| h.starts_with("deadbeef"))
    );
    // Still undecodable: refused, nothing published.
    let before = read_all(&rig.js, EVENTS_STREAM, "baton.evt.>").await.len();
    let out = baton(&url, &["dlq", "redrive", &seq]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("would be refused again"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        read_all(&rig.js, EVENTS_STREAM, "baton.evt.>").await.len(),
        before
    );
    let missing = baton(&url, &["dlq", "show", "999"]);
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no dead letter at sequence 999"));

    // A dead letter whose event passes now (as after a fix), stored as the
    // services store one.
    let mut ev = Events::new("w");
    let created = ev.created("t2", "p");
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Baton-Dlq-Subject", "baton.evt.t2.p");
    headers.insert("Baton-Dlq-Reason", "refused by a bug since fixed");
    headers.insert("Baton-Dlq-Source", "BATON_EVENTS:1");
    let fixed = rig
        .js
        .publish_with_headers("baton.dlq.invalid", headers, created.encode_to_vec().into())
        .await
        .expect("publish")
        .await
        .expect("stored")
        .sequence
        .to_string();
    let redriven = json(&baton(&url, &["dlq", "redrive", &fixed, "--json"]));
    assert_eq!(redriven["duplicate"], false);
    assert_eq!(redriven["subject"], "baton.evt.t2.p");
    wait_task(&rig.js, "t2", |_| true).await;
    let again = json(&baton(&url, &["dlq", "redrive", &fixed, "--json"]));
    assert_eq!(again["duplicate"], true, "re-driving twice stores it once");
    assert_eq!(
        read_all(&rig.js, EVENTS_STREAM, "baton.evt.t2.*")
            .await
            .len(),
        1
    );
}

/// `baton dev` as a child process whose banner (stderr) is read line by
/// line; killed on drop.
struct Dev {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Dev {
    fn spawn(args: &[&str], env: &[(&str, &str)]) -> Dev {
        let mut cmd = Command::new(baton_bin());
        cmd.arg("dev")
            .args(args)
            .env("NO_COLOR", "1")
            .env_remove("BATON_NATS_URL")
            .env_remove("BATON_DEV_NATS_URL")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn baton dev");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        Dev {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits for the banner and returns its NATS URL(s) and what it says
    /// about them.
    fn banner(&mut self) -> (String, String) {
        let deadline = std::time::Instant::now() + PATIENCE;
        loop {
            if let Some(line) = self
                .seen
                .iter()
                .find(|l| l.trim_start().starts_with("NATS "))
            {
                let rest = line.trim_start().trim_start_matches("NATS").trim();
                let (url, what) = rest.split_once(' ').unwrap_or((rest, ""));
                return (url.to_string(), what.trim().to_string());
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.seen.push(line),
                Err(_) => panic!("baton dev printed no banner:\n{}", self.seen.join("\n")),
            }
        }
    }

    /// The pids of the nats-server processes it started.
    fn servers(&self) -> Vec<String> {
        let children = Command::new("ps")
            .args(["-o", "pid=,args=", "--ppid", &self.child.id().to_string()])
            .output()
            .expect("ps");
        String::from_utf8_lossy(&children.stdout)
            .lines()
            .filter(|l| l.contains("nats-server"))
            .filter_map(|l| l.split_whitespace().next().map(String::from))
            .collect()
    }

    /// SIGTERM; asserts a clean exit and that no server it started is left.
    fn terminate(mut self) {
        let servers = self.servers();
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let status = self.child.wait().expect("exit");
        assert!(status.success(), "baton dev exits 0 on SIGTERM");
        let left: Vec<&String> = servers
            .iter()
            .filter(|pid| {
                Command::new("kill")
                    .args(["-0", pid])
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success())
            })
            .collect();
        assert!(left.is_empty(), "left behind: {left:?}");
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `baton dev --cluster 3`: three nats-server processes forming one
/// JetStream cluster with every stream at R3, the printed URLs work, an
/// event emitted through them materialises, and SIGTERM stops all three.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_cluster_3_runs_a_real_cluster_and_stops_it() {
    let mut dev = Dev::spawn(&["--cluster", "3", "--port", "0"], &[]);
    let (url, what) = dev.banner();
    assert!(what.contains("3-node JetStream cluster"), "{what}");
    let urls: Vec<String> = url.split(',').map(String::from).collect();
    assert_eq!(urls.len(), 3, "one URL per node: {url}");
    assert_eq!(dev.servers().len(), 3, "baton dev runs three nats-servers");

    // Every URL it printed is a node of the same cluster.
    for u in &urls {
        let client = async_nats::connect(u.as_str()).await.expect("connect");
        let js = async_nats::jetstream::new(client);
        let mut stream = js
            .get_stream(baton_core::subjects::EVENTS_STREAM)
            .await
            .expect("events stream");
        let info = stream.info().await.expect("info");
        assert_eq!(info.config.num_replicas, 3, "streams at R3");
        let cluster = info.cluster.clone().expect("clustered");
        assert!(cluster.leader.is_some(), "a leader");
        assert_eq!(cluster.replicas.len(), 2, "two more replicas");
    }

    // A task created through the printed URL (all nodes) materialises.
    ok(&baton(
        &url,
        &[
            "emit",
            "created",
            "--task",
            "dev-cluster-1",
            "--agent",
            "planner",
            "--workflow",
            "w",
        ],
    ));
    let client = async_nats::connect(urls.clone()).await.expect("connect");
    let js = async_nats::jetstream::new(client);
    let task = wait_task(&js, "dev-cluster-1", |_| true).await;
    assert_eq!(task.workflow.as_str(), "w");
    dev.terminate();
}

/// Issue 15: an exported BATON_NATS_URL (as the banner suggests) does not
/// stop `baton dev` from starting its own server; only `--nats` on the
/// command line or BATON_DEV_NATS_URL points it at an existing one; and its
/// help says so.
#[tokio::test]
async fn dev_starts_its_own_server_unless_told_on_its_own_flag() {
    let help = ok(&Command::new(baton_bin())
        .args(["dev", "--help"])
        .output()
        .expect("help"));
    assert!(help.contains("[env: BATON_DEV_NATS_URL=]"), "{help}");
    assert!(help.contains("[default: start a local server]"), "{help}");
    assert!(!help.contains("[env: BATON_NATS_URL"), "{help}");
    assert!(!help.contains("default: nats://127.0.0.1:4222"), "{help}");

    // Nothing listens on the exported URL: dev must not use it.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        format!("nats://127.0.0.1:{}", l.local_addr().expect("addr").port())
    };
    let mut dev = Dev::spawn(&["--port", "0"], &[("BATON_NATS_URL", &dead)]);
    let (url, what) = dev.banner();
    assert_ne!(url, dead);
    assert!(what.contains("one server"), "{what}");
    assert_eq!(dev.servers().len(), 1, "it started its own server");
    dev.terminate();

    // An existing server, named on dev's own flag or env var, is used.
    let server = NatsServer::start().await.expect("server");
    let theirs = server.url();
    for (args, env) in [
        (
            vec!["--nats", theirs.as_str()],
            vec![("BATON_NATS_URL", dead.as_str())],
        ),
        (
            vec![],
            vec![
                ("BATON_DEV_NATS_URL", theirs.as_str()),
                ("BATON_NATS_URL", dead.as_str()),
            ],
        ),
    ] {
        let mut dev = Dev::spawn(&args, &env);
        let (url, what) = dev.banner();
        assert_eq!(url, theirs, "{args:?} {env:?}");
        assert!(what.contains("an existing server"), "{what}");
        assert!(dev.servers().is_empty(), "no server of its own");
        dev.terminate();
    }
}

/// `baton dev` serves the web console and prints its address with the
/// others; `--console off` runs none.
#[test]
fn dev_serves_the_console_at_the_printed_address() {
    use std::io::{Read, Write};
    let mut dev = Dev::spawn(&["--port", "0", "--console", "127.0.0.1:0"], &[]);
    dev.banner();
    let deadline = std::time::Instant::now() + PATIENCE;
    let url = loop {
        if let Some(l) = dev
            .seen
            .iter()
            .find(|l| l.trim_start().starts_with("console "))
        {
            break l
                .trim_start()
                .trim_start_matches("console")
                .trim()
                .to_string();
        }
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match dev.lines.recv_timeout(left) {
            Ok(line) => dev.seen.push(line),
            Err(_) => panic!("no console line:\n{}", dev.seen.join("\n")),
        }
    };
    let addr = url
        .strip_prefix("http://")
        .and_then(|a| a.strip_suffix('/'))
        .unwrap_or_else(|| panic!("console address {url:?}"));
    let get = |path: &str| {
        let mut s = std::net::TcpStream::connect(addr).expect("connect to the console");
        write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    };
    assert!(get("/").contains("<title>Baton console</title>"));
    let deadline = std::time::Instant::now() + PATIENCE;
    while !get("/api/health").contains("\"service\":\"stall-detector\"") {
        assert!(
            std::time::Instant::now() < deadline,
            "the console never saw the services"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    dev.terminate();

    let mut dev = Dev::spawn(&["--port", "0", "--console", "off"], &[]);
    dev.banner();
    while !dev
        .seen
        .iter()
        .any(|l| l.trim_start().starts_with("console "))
    {
        dev.seen
            .push(dev.lines.recv_timeout(PATIENCE).expect("the console line"));
    }
    assert!(
        dev.seen.iter().any(|l| l.trim() == "console        off"),
        "{:?}",
        dev.seen
    );
    dev.terminate();
}
