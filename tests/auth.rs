//! Identities the server enforces: `baton auth` provisions them, a real
//! nats-server runs with the generated configuration, and each role can do
//! what it needs and nothing else. The services are the real `baton`
//! binary running as the service identity.

#![allow(clippy::print_stderr)]

mod support;

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use async_nats::jetstream;
use baton_agent::{Agent, AgentError, AgentOptions, BrokerError, CreateError, NewTask};
use baton_core::{AlertKind, EventBody, TaskStatus, TaskWindows, subjects};
use baton_jetstream::{
    Denied, NatsOptions, PublishError, Retry, auth::IdentityFile, publish_durable_watched,
};
use baton_proto::prost::Message;
use baton_testkit::{NatsServer, ServerOptions};
use support::*;
use tokio::sync::broadcast;

/// A server enforcing the identities `baton auth` made, with the
/// orchestrator running as the service identity.
struct AuthRig {
    dir: tempfile::TempDir,
    server: NatsServer,
    /// The service identity's connection (trusted: checks outcomes).
    svc: jetstream::Context,
    services: Vec<BatonProcess>,
}

impl AuthRig {
    fn identities(&self) -> PathBuf {
        self.dir.path().join("ids")
    }

    fn file(&self, name: &str) -> PathBuf {
        self.identities().join(format!("{name}.nk"))
    }

    fn file_arg(&self, name: &str) -> String {
        self.file(name).to_string_lossy().to_string()
    }

    fn options(&self, name: &str) -> NatsOptions {
        let mut o = NatsOptions::new(self.server.url());
        o.nkey_seed_file = Some(self.file(name));
        o.request_timeout = Duration::from_secs(2);
        o
    }

    /// Connects as `name`, with the server's refusals on that connection.
    async fn connect(&self, name: &str) -> Conn {
        let (client, denials) = self
            .options(name)
            .connect_watched()
            .await
            .unwrap_or_else(|e| panic!("{name} connects: {e}"));
        Conn {
            js: jetstream::new(client.clone()),
            client,
            refusals: denials.watch(),
            denials,
        }
    }

    /// Runs the `baton` binary as identity `name`; returns (success, stdout, stderr).
    fn cli(&self, name: &str, args: &[&str]) -> (bool, String, String) {
        let out = Command::new(baton_bin())
            .arg("--nats")
            .arg(self.server.url())
            .arg("--nkey")
            .arg(self.file(name))
            .args(args)
            .output()
            .expect("run baton");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Starts a service (`orchestrator` or `stall-detector`) as the
    /// service identity and waits for its liveness record.
    async fn start_service(&mut self, service: &str, extra: &[&str]) {
        let log = self.dir.path().join(format!("{service}.log"));
        let nkey = self.file_arg("svc");
        let mut args = vec![
            "--nkey",
            &nkey,
            service,
            "--instance",
            "a",
            "--liveness-interval",
            "200ms",
        ];
        args.extend_from_slice(extra);
        self.services
            .push(BatonProcess::spawn(&self.server.url(), &args, &log));
        wait_liveness(&self.svc, &format!("{service}.a")).await;
    }
}

struct Conn {
    client: async_nats::Client,
    js: jetstream::Context,
    denials: baton_jetstream::Denials,
    refusals: broadcast::Receiver<Denied>,
}

impl Conn {
    /// Waits (briefly) for the server to refuse `what`.
    async fn refused(&mut self, what: Denied) {
        let seen = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                match self.refusals.recv().await {
                    Ok(d) if d == what => return,
                    Ok(_) => {}
                    Err(e) => panic!("refusals: {e}"),
                }
            }
        })
        .await;
        assert!(seen.is_ok(), "the server did not refuse {what:?}");
    }

    /// Publishes on `subject` through the durable path; the outcome.
    async fn publish(&self, subject: &str, payload: Vec<u8>) -> Result<u64, PublishError> {
        publish_durable_watched(
            &self.js,
            Some(&self.denials),
            subject,
            payload.into(),
            &nuid::next().to_string(),
            None,
            Retry {
                budget: Duration::from_secs(10),
                attempt_timeout: Duration::from_secs(5),
            },
        )
        .await
        .map(|ack| ack.sequence)
    }
}

fn provision(dir: &Path) {
    let out = Command::new(baton_bin())
        .args(["auth", "--dir"])
        .arg(dir)
        .args([
            "--agent",
            "alice,bob",
            "--operator",
            "op",
            "--service",
            "svc",
            "--viewer",
            "view",
        ])
        .output()
        .expect("run baton auth");
    assert!(
        out.status.success(),
        "baton auth failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Provisions, starts the server with the generated config, and the
/// orchestrator as the service identity (trusting operator `op`).
async fn rig() -> AuthRig {
    let dir = tempfile::tempdir().expect("tmp");
    let ids = dir.path().join("ids");
    provision(&ids);
    let seed = |name: &str| {
        let text = std::fs::read_to_string(ids.join(format!("{name}.nk"))).expect("identity");
        IdentityFile::parse(&text).expect("identity file").seed
    };
    let server = NatsServer::start_with(ServerOptions {
        include: Some(ids.join("auth.conf")),
        ready_nkey: Some((seed("svc"), "_INBOX_svc".into())),
        ..ServerOptions::default()
    })
    .await
    .expect("server with the generated auth config");
    let mut svc_options = NatsOptions::new(server.url());
    svc_options.nkey_seed_file = Some(ids.join("svc.nk"));
    let svc = jetstream::new(svc_options.connect().await.expect("service connects"));
    let mut rig = AuthRig {
        dir,
        server,
        svc,
        services: Vec::new(),
    };
    rig.start_service("orchestrator", &["--operators", "op"])
        .await;
    rig
}

async fn alice_agent(rig: &AuthRig, agent_id: &str) -> Result<Agent, AgentError> {
    let mut opts = AgentOptions::new(agent_id, rig.server.url());
    opts.nats.nkey_seed_file = Some(rig.file("alice"));
    opts.retry = Retry {
        budget: Duration::from_secs(30),
        attempt_timeout: Duration::from_secs(5),
    };
    Agent::connect(opts).await
}

#[tokio::test]
async fn no_credentials_no_connection() {
    let rig = rig().await;
    let anonymous = NatsOptions::new(rig.server.url()).connect().await;
    assert!(
        matches!(anonymous, Err(baton_jetstream::ConnectError::Auth { .. })),
        "{anonymous:?}"
    );
}

#[tokio::test]
async fn an_agent_publishes_as_itself_and_not_as_another_agent() {
    let rig = rig().await;
    let mut alice = rig.connect("alice").await;
    let mut ev = Events::new("w");
    let own = ev.created("t1", "alice");
    alice
        .publish(&subjects::event(&own.task, &own.agent), own.encode_to_vec())
        .await
        .expect("alice publishes her own event");
    wait_task(&rig.svc, "t1", |t| t.status == TaskStatus::Submitted).await;

    let forged = ev.created("t2", "bob");
    let started = Instant::now();
    let err = alice
        .publish("baton.evt.t2.bob", forged.encode_to_vec())
        .await
        .expect_err("publishing as bob is refused");
    assert!(
        matches!(&err, PublishError::NotPermitted { subject } if subject == "baton.evt.t2.bob"),
        "{err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "refused at once, not after the ack timeout: {:?}",
        started.elapsed()
    );
    alice
        .refused(Denied::Publish("baton.evt.t2.bob".into()))
        .await;
    assert!(stored_task(&rig.svc, "t2").await.is_none());
}

#[tokio::test]
async fn an_agent_records_decisions_only_as_itself() {
    let rig = rig().await;
    let alice = rig.connect("alice").await;
    alice
        .publish("baton.ctx.wf.alice", b"decision".to_vec())
        .await
        .expect("alice records her own decision");
    let err = alice
        .publish("baton.ctx.wf.bob", b"forged".to_vec())
        .await
        .expect_err("recording as bob is refused");
    assert!(matches!(err, PublishError::NotPermitted { .. }), "{err}");
    let mut ctx = rig
        .svc
        .get_stream(subjects::CONTEXT_STREAM)
        .await
        .expect("context stream");
    assert_eq!(ctx.info().await.expect("info").state.messages, 1);
}

#[tokio::test]
async fn an_agent_cannot_write_tasks_nor_delete_or_purge_streams() {
    let rig = rig().await;
    let mut ev = Events::new("w");
    let seq = publish(&rig.svc, &ev.created("t1", "alice")).await;
    wait_task(&rig.svc, "t1", |t| t.last_event.seq == seq).await;
    let before = stored_task(&rig.svc, "t1").await.expect("state");

    let mut alice = rig.connect("alice").await;
    // Reading is allowed.
    let tasks = alice
        .js
        .get_key_value(subjects::TASKS_BUCKET)
        .await
        .expect("alice opens baton-tasks");
    assert!(tasks.get("t1").await.expect("alice reads a task").is_some());

    let _ = tokio::time::timeout(
        Duration::from_millis(500),
        tasks.put("t1", b"forged".to_vec().into()),
    )
    .await;
    alice
        .refused(Denied::Publish("$KV.baton-tasks.t1".into()))
        .await;
    let _ = tokio::time::timeout(Duration::from_millis(500), tasks.delete("t1")).await;
    alice
        .refused(Denied::Publish("$KV.baton-tasks.t1".into()))
        .await;
    let _ = alice.js.delete_stream(subjects::EVENTS_STREAM).await;
    alice
        .refused(Denied::Publish(format!(
            "$JS.API.STREAM.DELETE.{}",
            subjects::EVENTS_STREAM
        )))
        .await;
    let _ = alice
        .js
        .delete_stream(format!("KV_{}", subjects::TASKS_BUCKET))
        .await;
    alice
        .refused(Denied::Publish(format!(
            "$JS.API.STREAM.DELETE.KV_{}",
            subjects::TASKS_BUCKET
        )))
        .await;
    let purge = alice
        .js
        .get_stream(subjects::EVENTS_STREAM)
        .await
        .expect("alice reads the events stream's info");
    let _ = purge.purge().await;
    alice
        .refused(Denied::Publish(format!(
            "$JS.API.STREAM.PURGE.{}",
            subjects::EVENTS_STREAM
        )))
        .await;
    // Nor may it take over a service's durable consumer.
    let _ = alice
        .js
        .delete_consumer_from_stream(subjects::ORCHESTRATOR_CONSUMER, subjects::EVENTS_STREAM)
        .await;
    alice
        .refused(Denied::Publish(format!(
            "$JS.API.CONSUMER.DELETE.{}.{}",
            subjects::EVENTS_STREAM,
            subjects::ORCHESTRATOR_CONSUMER
        )))
        .await;

    // Nothing changed.
    assert_eq!(stored_task(&rig.svc, "t1").await, Some(before));
    let mut events = rig
        .svc
        .get_stream(subjects::EVENTS_STREAM)
        .await
        .expect("events stream still there");
    assert_eq!(events.info().await.expect("info").state.messages, 1);
    rig.svc
        .get_consumer_from_stream::<jetstream::consumer::pull::Config, _, _>(
            subjects::ORCHESTRATOR_CONSUMER,
            subjects::EVENTS_STREAM,
        )
        .await
        .expect("the orchestrator's consumer is still there");
}

#[tokio::test]
async fn an_agent_cannot_read_another_agents_replies() {
    let rig = rig().await;
    let mut alice = rig.connect("alice").await;
    for subject in ["_INBOX_bob.>", "_INBOX.>", "baton.evt.>"] {
        let _sub = alice
            .client
            .subscribe(subject)
            .await
            .expect("subscribe call");
        alice.client.flush().await.expect("flush");
        alice.refused(Denied::Subscribe(subject.into())).await;
    }
    // Its own inbox works: a request (stream info) gets its reply.
    alice
        .js
        .get_stream(subjects::EVENTS_STREAM)
        .await
        .expect("alice gets replies on _INBOX_alice");
}

#[tokio::test]
async fn an_operator_revokes_and_manages_silences_an_agent_does_not() {
    let rig = rig().await;
    let alice = alice_agent(&rig, "alice").await.expect("alice connects");
    alice
        .create_task(NewTask::new("t1", "w").expect("ids"))
        .await
        .expect("create");
    let owned = alice.claim(&task("t1")).await.expect("claim");
    let claimed = wait_task(&rig.svc, "t1", |t| t.owner == Some(agent("alice"))).await;
    owned.detach();

    let op = rig.connect("op").await;
    let mut ev = Events::new("w");
    let revoke = ev.make(
        "t1",
        "op",
        0,
        EventBody::Revoked {
            reason: "reassigning".into(),
        },
    );
    op.publish(
        &subjects::event(&revoke.task, &revoke.agent),
        revoke.encode_to_vec(),
    )
    .await
    .expect("the operator revokes on its own subject");
    let revoked = wait_task(&rig.svc, "t1", |t| t.owner.is_none()).await;
    assert!(revoked.epoch > claimed.epoch, "revoking bumps the epoch");

    // Silences: the operator writes them (through the CLI), an agent cannot.
    let (ok, _, stderr) = rig.cli(
        "op",
        &[
            "silence",
            "add",
            "--task",
            "t1",
            "--for",
            "1h",
            "--reason",
            "maintenance",
        ],
    );
    assert!(ok, "operator adds a silence: {stderr}");
    let silences = rig
        .svc
        .get_key_value(subjects::SILENCES_BUCKET)
        .await
        .expect("silences");
    let keys: Vec<String> =
        futures::StreamExt::collect::<Vec<_>>(silences.keys().await.expect("keys"))
            .await
            .into_iter()
            .map(|k| k.expect("key"))
            .collect();
    assert_eq!(keys.len(), 1, "{keys:?}");
    let mut bob = rig.connect("bob").await;
    let bob_silences = bob.js.get_key_value(subjects::SILENCES_BUCKET).await;
    assert!(
        bob_silences.is_err(),
        "an agent cannot even open the silences bucket"
    );
    let _ = tokio::time::timeout(
        Duration::from_millis(500),
        bob.js
            .publish("$KV.baton-silences.s1", b"x".to_vec().into()),
    )
    .await;
    bob.refused(Denied::Publish("$KV.baton-silences.s1".into()))
        .await;
}

#[tokio::test]
async fn a_viewer_reads_and_does_nothing_else() {
    let rig = rig().await;
    let mut ev = Events::new("w");
    let seq = publish(&rig.svc, &ev.created("t1", "alice")).await;
    wait_task(&rig.svc, "t1", |t| t.last_event.seq == seq).await;

    // The CLI's read commands work as the viewer.
    let (ok, out, stderr) = rig.cli("view", &["tasks"]);
    assert!(
        ok && out.contains("t1"),
        "baton tasks as viewer: {out}{stderr}"
    );
    let (ok, out, stderr) = rig.cli("view", &["task", "t1"]);
    assert!(
        ok && out.contains("t1"),
        "baton task as viewer: {out}{stderr}"
    );
    let (ok, _, stderr) = rig.cli("view", &["alerts"]);
    assert!(ok, "baton alerts as viewer: {stderr}");

    let mut view = rig.connect("view").await;
    let tasks = view
        .js
        .get_key_value(subjects::TASKS_BUCKET)
        .await
        .expect("viewer opens baton-tasks");
    assert!(tasks.get("t1").await.expect("viewer reads").is_some());
    let _ = view
        .client
        .subscribe(subjects::ALERTS_ALL)
        .await
        .expect("sub");
    view.client.flush().await.expect("flush");

    let forged = ev.created("t2", "view");
    let err = view
        .publish("baton.evt.t2.view", forged.encode_to_vec())
        .await
        .expect_err("a viewer publishes no events");
    assert!(matches!(err, PublishError::NotPermitted { .. }), "{err}");
    let _ = tokio::time::timeout(
        Duration::from_millis(500),
        tasks.put("t1", b"forged".to_vec().into()),
    )
    .await;
    view.refused(Denied::Publish("$KV.baton-tasks.t1".into()))
        .await;
    let _ = view.js.delete_stream(subjects::ALERTS_STREAM).await;
    view.refused(Denied::Publish(format!(
        "$JS.API.STREAM.DELETE.{}",
        subjects::ALERTS_STREAM
    )))
    .await;
    assert!(stored_task(&rig.svc, "t2").await.is_none());
}

#[tokio::test]
async fn the_services_run_as_the_service_identity() {
    let mut rig = rig().await;
    rig.start_service("stall-detector", &[]).await;
    let alice = alice_agent(&rig, "alice").await.expect("alice connects");
    alice
        .create_task(
            NewTask::new("idle", "w")
                .expect("ids")
                .windows(TaskWindows {
                    start_within: Some(Duration::from_secs(1)),
                    ..Default::default()
                }),
        )
        .await
        .expect("create");
    // The orchestrator materialises the state ...
    wait_task(&rig.svc, "idle", |t| t.status == TaskStatus::Submitted).await;
    // ... and the detector raises the stall alert, which a viewer reads.
    let view = rig.connect("view").await;
    wait_alert(&view.js, is_alert(AlertKind::NotStarted, "idle")).await;
    // The query API answers an agent.
    let reply = alice
        .client()
        .request(
            format!("{}.task.get", subjects::API_PREFIX),
            baton_proto::v1::GetTaskRequest {
                task_id: "idle".into(),
            }
            .encode_to_vec()
            .into(),
        )
        .await
        .expect("the orchestrator answers alice on her inbox");
    let resp = baton_proto::v1::GetTaskResponse::decode(reply.payload).expect("decodes");
    assert_eq!(resp.task.expect("task").task_id, "idle");
}

#[tokio::test]
async fn the_sdk_reports_a_refused_publish_as_a_typed_error_at_once() {
    let rig = rig().await;
    // Alice's credentials work for alice (her inbox comes from the file) ...
    let alice = alice_agent(&rig, "alice").await.expect("alice connects");
    alice
        .create_task(NewTask::new("t1", "w").expect("ids"))
        .await
        .expect("alice creates a task");
    alice
        .claim(&task("t1"))
        .await
        .expect("alice claims")
        .detach();

    // ... and not for bob.
    let posing = alice_agent(&rig, "bob")
        .await
        .expect("connecting is allowed; publishing as bob is not");
    let started = Instant::now();
    let err = posing
        .create_task(NewTask::new("t2", "w").expect("ids"))
        .await
        .expect_err("publishing as bob with alice's credentials");
    let elapsed = started.elapsed();
    match &err {
        CreateError::Broker(BrokerError::NotPermitted { identity, subject }) => {
            assert_eq!(identity, "bob");
            assert!(subject.ends_with(".bob"), "{subject}");
        }
        other => panic!("expected NotPermitted, got {other:?}"),
    }
    assert!(
        err.to_string().contains("not permitted to publish as bob"),
        "{err}"
    );
    assert!(
        elapsed < Duration::from_secs(1),
        "reported in {elapsed:?}; the ack timeout is 5s"
    );
    eprintln!("refused publish reported after {elapsed:?}");
}

#[test]
fn baton_auth_keeps_keys_adds_identities_and_refuses_bad_input() {
    let dir = tempfile::tempdir().expect("tmp");
    let ids = dir.path().join("ids");
    provision(&ids);
    let alice = std::fs::read_to_string(ids.join("alice.nk")).expect("alice");
    let run = |args: &[&str]| {
        Command::new(baton_bin())
            .args(["auth", "--dir"])
            .arg(&ids)
            .args(args)
            .output()
            .expect("run baton auth")
    };
    // Adding an agent keeps every existing key and adds a user.
    let out = run(&["--agent", "carol"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(ids.join("alice.nk")).expect("alice"),
        alice
    );
    let config = std::fs::read_to_string(ids.join("auth.conf")).expect("auth.conf");
    for name in ["alice", "bob", "carol", "op", "svc", "view"] {
        assert!(
            config.contains(&format!("\"_INBOX_{name}.>\"")),
            "{name} in auth.conf"
        );
    }
    let seed = IdentityFile::parse(&alice).expect("identity").seed;
    let public = nkeys::KeyPair::from_seed(&seed).expect("seed").public_key();
    assert!(
        config.contains(&public),
        "alice's key is the one in auth.conf"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(ids.join("carol.nk"))
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "identity files are private: {mode:o}");
    }

    // A name that is not a subject token, or a role change, is refused
    // with a clear error and changes nothing.
    let out = run(&["--agent", "bad.name"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("\"bad.name\""),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run(&["--viewer", "alice"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("already exists as agent"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(ids.join("alice.nk")).expect("alice"),
        alice
    );
    assert!(!ids.join("bad.name.nk").exists());
}

#[tokio::test]
async fn baton_dev_auth_runs_the_services_as_the_service_identity() {
    let dir = tempfile::tempdir().expect("tmp");
    let data = dir.path().join("data");
    let log_path = dir.path().join("dev.log");
    let log = std::fs::File::create(&log_path).expect("log");
    let mut dev = BatonProcess {
        child: Command::new(baton_bin())
            .args([
                "dev",
                "--auth",
                "--port",
                "0",
                "--auth-agent",
                "writer",
                "--data",
            ])
            .arg(&data)
            .env_remove("BATON_NATS_URL")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn baton dev"),
        name: "dev".into(),
    };
    // Wait for the banner (it lists the identity files once all is running).
    let deadline = Instant::now() + PATIENCE;
    let banner = loop {
        let text = std::fs::read_to_string(&log_path).unwrap_or_default();
        if text.contains("Add an agent:") {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "baton dev --auth did not start:\n{text}"
        );
        assert!(
            dev.child.try_wait().expect("wait").is_none(),
            "baton dev --auth exited:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let url = banner
        .split_whitespace()
        .find(|w| w.starts_with("nats://"))
        .expect("url in the banner")
        .to_string();
    let ids = data.join("auth");
    for name in ["baton", "operator", "viewer", "writer"] {
        let file = ids.join(format!("{name}.nk"));
        assert!(
            banner.contains(&file.display().to_string()),
            "banner names {}",
            file.display()
        );
    }
    // Anonymous clients are refused; the printed agent identity works, and
    // the orchestrator (running as `baton`) materialises its task.
    assert!(NatsOptions::new(url.clone()).connect().await.is_err());
    let mut opts = AgentOptions::new("writer", url.clone());
    opts.nats.nkey_seed_file = Some(ids.join("writer.nk"));
    let writer = Agent::connect(opts).await.expect("writer connects");
    writer
        .create_task(NewTask::new("t1", "w").expect("ids"))
        .await
        .expect("writer creates a task");
    let mut view = NatsOptions::new(url);
    view.nkey_seed_file = Some(ids.join("viewer.nk"));
    let view = jetstream::new(view.connect().await.expect("viewer connects"));
    wait_task(&view, "t1", |t| t.status == TaskStatus::Submitted).await;
    assert!(dev.terminate(), "baton dev stops cleanly");
}

#[tokio::test]
async fn an_agent_cannot_take_over_a_service_consumer_through_the_nameless_create() {
    let rig = rig().await;
    let alice = rig.connect("alice").await;
    let stream = subjects::EVENTS_STREAM;
    let before = rig
        .svc
        .get_consumer_from_stream::<jetstream::consumer::pull::Config, _, _>(
            subjects::ORCHESTRATOR_CONSUMER,
            stream,
        )
        .await
        .expect("orchestrator consumer")
        .cached_info()
        .config
        .clone();
    // The orchestrator's own config with one harmless change: if the
    // server accepted it, an agent could rewrite the consumer at will.
    let mut hijacked = before.clone();
    hijacked.description = Some("hijacked".into());
    let mut hijacked = serde_json::to_value(&hijacked).expect("config json");
    // By name only: a durable name on this subject is refused anyway.
    hijacked
        .as_object_mut()
        .expect("object")
        .remove("durable_name");
    for action in ["update", ""] {
        let body = serde_json::json!({
            "stream_name": stream,
            "config": hijacked.clone(),
            "action": action,
        });
        let reply = alice
            .client
            .request(
                format!("$JS.API.CONSUMER.CREATE.{stream}"),
                body.to_string().into(),
            )
            .await;
        let text = reply
            .map(|m| String::from_utf8_lossy(&m.payload).into_owned())
            .unwrap_or_else(|e| format!("no reply: {e}"));
        assert!(
            !text.contains("\"config\""),
            "{action}: the server changed the orchestrator's consumer: {text}"
        );
    }
    let after = rig
        .svc
        .get_consumer_from_stream::<jetstream::consumer::pull::Config, _, _>(
            subjects::ORCHESTRATOR_CONSUMER,
            stream,
        )
        .await
        .expect("orchestrator consumer")
        .cached_info()
        .config
        .clone();
    assert_eq!(after.description, before.description);
}
