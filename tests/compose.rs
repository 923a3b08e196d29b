//! `docker-compose.yml` for real: the file users run, started on this
//! machine's Docker engine with images built here without any registry
//! (`tests/compose/local-images.yml` swaps the images and nothing else):
//!
//! - the three NATS nodes form one JetStream cluster and every stream and
//!   bucket the services create has 3 replicas, all current;
//! - the demo agents run and Baton catches every failure mode they play,
//!   read back from the cluster;
//! - `docker kill` of the events stream's leader: no acknowledged event is
//!   lost and the orchestrator keeps materialising tasks; the node comes
//!   back and catches up;
//! - `docker network disconnect` of the (new) leader: the same, and after
//!   `docker network connect` the cluster is whole again.
//!
//! Without a Docker engine it prints `SKIPPED: no Docker engine` and
//! passes (the nextest profile shows that line; see .config/nextest.toml).
//! Everything it starts is under a unique compose project name on ports
//! Docker picks, and is removed (`down -v`) even when it fails.
// It prints what it measured, and SKIPPED when it cannot run.
#![allow(clippy::print_stderr)]

mod support;

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use async_nats::jetstream;
use baton_core::{Alert, AlertKind, AlertState, Event, EventBody, Task, subjects};
use baton_jetstream::{Retry, auth::IdentityFile, publish_durable};
use baton_proto::{prost::Message as _, v1 as pb};
use futures::StreamExt;
use support::{Events, read_all};

/// How long one fault may take to be absorbed. A service connected to a
/// node that is cut off only notices when its client's pings go
/// unanswered, so this is generous.
const FAULT_PATIENCE: Duration = Duration::from_secs(180);

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn output(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// Runs a command that must succeed; returns its stdout.
fn run(cmd: &mut Command) -> String {
    let out = output(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn docker(args: &[&str]) -> String {
    run(Command::new("docker").args(args))
}

/// Whether a Docker engine answers (not just whether the CLI exists).
fn docker_engine() -> bool {
    Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// `docker-compose` (v1) or `docker compose` (v2), whichever works.
fn compose_command() -> Vec<String> {
    let works = |prog: &str, args: &[&str]| {
        Command::new(prog)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if works("docker-compose", &["version"]) {
        vec!["docker-compose".into()]
    } else if works("docker", &["compose", "version"]) {
        vec!["docker".into(), "compose".into()]
    } else {
        panic!(
            "a Docker engine is running but neither `docker-compose` nor `docker compose` works: \
             install Docker Compose to run this test"
        )
    }
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// Copies `binary` into `root` at `dest`, with the shared libraries `ldd`
/// lists (and the dynamic loader) at their own paths.
fn install(root: &Path, binary: &Path, dest: &str, strip: bool) {
    let target = root.join(dest.trim_start_matches('/'));
    fs::create_dir_all(target.parent().expect("parent")).expect("mkdir");
    let stripped = strip
        && Command::new("objcopy")
            .arg("--strip-debug")
            .arg(binary)
            .arg(&target)
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
    if !stripped {
        fs::copy(binary, &target).expect("copy binary");
    }
    let ldd = output(Command::new("ldd").arg(binary));
    if !ldd.status.success() {
        return; // static ("not a dynamic executable")
    }
    for lib in String::from_utf8_lossy(&ldd.stdout)
        .split_whitespace()
        .filter(|w| w.starts_with('/'))
    {
        let to = root.join(lib.trim_start_matches('/'));
        if !to.exists() {
            fs::create_dir_all(to.parent().expect("parent")).expect("mkdir");
            fs::copy(lib, &to).unwrap_or_else(|e| panic!("copy {lib}: {e}"));
        }
    }
}

/// Builds the two local images (`baton`, and `nats-server`) from one root
/// filesystem: the `baton` binary under test, the nats-server the tests
/// use, and `wget` for the healthchecks (the public images have it too).
fn build_images(dir: &Path, tag: &str) -> (String, String) {
    let root = dir.join("rootfs");
    let baton = std::env::var_os("BATON_COMPOSE_BATON_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(support::baton_bin()));
    install(&root, &baton, "/usr/local/bin/baton", true);
    let nats = baton_testkit::find_nats_server().expect("nats-server");
    install(&root, &nats, "/usr/local/bin/nats-server", false);
    let wget = which("wget").expect(
        "the compose test needs `wget` on this machine: the local images take it for the \
         healthchecks docker-compose.yml runs (`apt-get install wget`)",
    );
    install(&root, &wget, "/usr/bin/wget", false);
    let tmp = root.join("tmp");
    fs::create_dir_all(&tmp).expect("tmp");
    run(Command::new("chmod").arg("1777").arg(&tmp));
    // /auth: where `baton auth` writes the identities (a volume that takes
    // the image directory's owner, the services' user), as in Dockerfile.
    fs::create_dir_all(root.join("auth")).expect("auth dir");
    let tar = dir.join("rootfs.tar");
    run(Command::new("tar")
        .arg("-C")
        .arg(&root)
        .args([
            "--owner=0",
            "--group=0",
            "--numeric-owner",
            "--exclude=./auth",
            "-cf",
        ])
        .arg(&tar)
        .arg("."));
    run(Command::new("tar")
        .arg("-C")
        .arg(&root)
        .args(["--owner=10001", "--group=10001", "--numeric-owner", "-rf"])
        .arg(&tar)
        .arg("./auth"));
    let tar = tar.to_string_lossy().to_string();
    let baton_image = format!("baton-compose-test:{tag}");
    let nats_image = format!("baton-compose-test-nats:{tag}");
    let path = "ENV PATH=/usr/local/bin:/usr/bin:/bin";
    docker(&[
        "import",
        "--change",
        path,
        "--change",
        "USER 10001:10001",
        "--change",
        r#"ENTRYPOINT ["/usr/local/bin/baton"]"#,
        &tar,
        &baton_image,
    ]);
    docker(&[
        "import",
        "--change",
        path,
        "--change",
        r#"ENTRYPOINT ["/usr/local/bin/nats-server"]"#,
        &tar,
        &nats_image,
    ]);
    (baton_image, nats_image)
}

/// One compose project; `down -v` and image removal on drop (or, should
/// the test process be killed, by a watchdog).
struct Stack {
    compose: Vec<String>,
    project: String,
    images: Vec<String>,
    watchdog: Option<std::process::Child>,
    dir: tempfile::TempDir,
}

impl Stack {
    /// Starts a shell that removes the project and images if this process
    /// dies without dropping the stack (e.g. a test runner's timeout).
    fn guard(&mut self) {
        let down = self.cmd(&["down", "-v", "--remove-orphans", "-t", "5"]);
        let mut sh = Command::new("sh");
        sh.arg("-c")
            .arg(
                "pid=$1; shift; while kill -0 \"$pid\" 2>/dev/null; do sleep 2; done; \
                 \"$@\" >/dev/null 2>&1; docker rmi -f $IMAGES >/dev/null 2>&1",
            )
            .arg("baton-compose-watchdog")
            .arg(std::process::id().to_string())
            .arg(down.get_program())
            .args(down.get_args())
            .current_dir(repo_root())
            .env("IMAGES", self.images.join(" "))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        for (k, v) in down.get_envs() {
            if let Some(v) = v {
                sh.env(k, v);
            }
        }
        self.watchdog = sh.spawn().ok();
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let root = repo_root();
        let mut cmd = Command::new(&self.compose[0]);
        cmd.args(&self.compose[1..])
            .arg("-p")
            .arg(&self.project)
            .arg("-f")
            .arg(root.join("docker-compose.yml"))
            .arg("-f")
            .arg(root.join("tests/compose/local-images.yml"))
            .args(args)
            .current_dir(&root)
            .env("BATON_LOCAL_IMAGE", &self.images[0])
            .env("BATON_LOCAL_NATS_IMAGE", &self.images[1]);
        // Empty host ports: Docker picks free ones, so runs never clash.
        for var in [
            "BATON_N1_PORT",
            "BATON_N2_PORT",
            "BATON_N3_PORT",
            "BATON_MONITOR_PORT",
            "BATON_ORCHESTRATOR_PORT",
            "BATON_ORCHESTRATOR_B_PORT",
            "BATON_DETECTOR_PORT",
            "BATON_DETECTOR_B_PORT",
        ] {
            cmd.env(var, "");
        }
        cmd
    }

    /// An identity file from the stack's `auth` volume (written by the
    /// one-shot `auth` service).
    fn identity(&self, name: &str) -> IdentityFile {
        let auth = self.container("auth");
        let to = self.dir.path().join(format!("{name}.nk"));
        docker(&[
            "cp",
            &format!("{auth}:/auth/{name}.nk"),
            &to.to_string_lossy(),
        ]);
        IdentityFile::parse(&fs::read_to_string(&to).expect("identity file"))
            .expect("an identity file baton auth wrote")
    }

    fn compose(&self, args: &[&str]) -> String {
        run(&mut self.cmd(args))
    }

    fn container(&self, service: &str) -> String {
        let id = self.compose(&["ps", "-q", service]);
        assert!(!id.is_empty(), "no container for {service}");
        id
    }

    /// `nats://127.0.0.1:<port>` of a node (asked each time: a restarted
    /// or reconnected container gets a new host port).
    fn nats_url(&self, node: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let out = output(&mut self.cmd(&["port", node, "4222"]));
            let addr = String::from_utf8_lossy(&out.stdout).trim().to_string();
            if out.status.success() && addr.contains(':') && !addr.ends_with(":0") {
                return format!("nats://{addr}");
            }
            assert!(Instant::now() < deadline, "{node} publishes no port");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn state(&self, service: &str) -> (String, i64, i64) {
        let out = docker(&[
            "inspect",
            "-f",
            "{{.State.Status}} {{.State.ExitCode}} {{.RestartCount}}",
            &self.container(service),
        ]);
        let mut parts = out.split_whitespace();
        (
            parts.next().unwrap_or_default().to_string(),
            parts.next().and_then(|s| s.parse().ok()).unwrap_or(-1),
            parts.next().and_then(|s| s.parse().ok()).unwrap_or(-1),
        )
    }

    fn network(&self, service: &str) -> String {
        docker(&[
            "inspect",
            "-f",
            "{{range $k, $v := .NetworkSettings.Networks}}{{$k}}{{end}}",
            &self.container(service),
        ])
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let out = output(&mut self.cmd(&["ps"]));
            eprintln!("{}", String::from_utf8_lossy(&out.stdout));
            let out = output(&mut self.cmd(&["logs", "--no-color", "--tail", "40"]));
            eprintln!("--- docker-compose logs (last 40 lines each) ---");
            eprintln!("{}", String::from_utf8_lossy(&out.stdout));
        }
        let _ = output(&mut self.cmd(&["down", "-v", "--remove-orphans", "-t", "5"]));
        for image in &self.images {
            let _ = output(Command::new("docker").args(["rmi", "-f", image]));
        }
        if let Some(mut w) = self.watchdog.take() {
            let _ = w.kill();
            let _ = w.wait();
        }
    }
}

/// Connects from the host with an identity `baton auth` wrote in the
/// stack's `auth` volume (the nodes accept nobody else).
async fn connect(urls: &[String], identity: &IdentityFile) -> jetstream::Context {
    let client = async_nats::ConnectOptions::with_nkey(identity.seed.clone())
        .custom_inbox_prefix(
            identity
                .inbox
                .clone()
                .expect("identity file names its inbox"),
        )
        .connection_timeout(Duration::from_secs(3))
        .connect(urls.to_vec())
        .await
        .expect("connect to the cluster from the host");
    jetstream::new(client)
}

/// Every stream's replica set: `name -> (replicas configured, peers that
/// are leader or current, why not healthy)`.
async fn replica_report(js: &jetstream::Context) -> Result<BTreeMap<String, String>, String> {
    use futures::TryStreamExt;
    let names: Vec<String> = js
        .stream_names()
        .try_collect()
        .await
        .map_err(|e| format!("stream names: {e}"))?;
    let mut report = BTreeMap::new();
    for name in names {
        let mut stream = js
            .get_stream(&name)
            .await
            .map_err(|e| format!("{name}: {e}"))?;
        let info = stream.info().await.map_err(|e| format!("{name}: {e}"))?;
        let cluster = info.cluster.clone().unwrap_or_default();
        let mut peers = BTreeSet::new();
        peers.extend(cluster.leader.clone());
        let mut problem = Vec::new();
        for p in &cluster.replicas {
            if p.current && !p.offline {
                peers.insert(p.name.clone());
            } else {
                problem.push(format!("{} behind", p.name));
            }
        }
        if cluster.leader.is_none() {
            problem.push("no leader".into());
        }
        if info.config.num_replicas != 3 {
            problem.push(format!("R{}", info.config.num_replicas));
        }
        let peers: Vec<_> = peers.into_iter().collect();
        if peers != ["n1", "n2", "n3"] {
            problem.push(format!("peers {peers:?}"));
        }
        report.insert(name, problem.join(", "));
    }
    Ok(report)
}

/// Waits until every stream (and bucket) has 3 replicas on n1, n2 and n3,
/// with a leader and the others current.
async fn wait_whole(js: &jetstream::Context, when: &str) -> BTreeSet<String> {
    let deadline = Instant::now() + FAULT_PATIENCE;
    let mut last = Err("not asked yet".to_string());
    while Instant::now() < deadline {
        last = replica_report(js).await;
        if let Ok(report) = &last
            && report.contains_key(subjects::EVENTS_STREAM)
            && report.contains_key(&format!("KV_{}", subjects::TASKS_BUCKET))
            && report.values().all(String::is_empty)
        {
            return report.keys().cloned().collect();
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("{when}: the cluster is not whole (3 current replicas of every stream): {last:?}");
}

/// The server name of the events stream's leader.
async fn events_leader(js: &jetstream::Context) -> String {
    let deadline = Instant::now() + FAULT_PATIENCE;
    loop {
        if let Ok(mut s) = js.get_stream(subjects::EVENTS_STREAM).await
            && let Ok(info) = s.info().await
            && let Some(leader) = info.cluster.as_ref().and_then(|c| c.leader.clone())
        {
            return leader;
        }
        assert!(Instant::now() < deadline, "the events stream has no leader");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Publishes `TaskCreated` for `tasks`, each until acknowledged (retries
/// keep the event id, so a retry is stored once); calls `fault` once after
/// `fault_after` acknowledgements. Returns the acknowledged event ids.
async fn publish_tasks(
    js: &jetstream::Context,
    events: &mut Events,
    tasks: &[String],
    fault_after: usize,
    mut fault: impl FnMut(),
) -> Vec<String> {
    let mut acked = Vec::new();
    for (i, task) in tasks.iter().enumerate() {
        if i == fault_after {
            fault();
        }
        let event: Event = events.created(task, "compose-tester");
        let retry = Retry {
            budget: FAULT_PATIENCE,
            attempt_timeout: Duration::from_secs(3),
        };
        publish_durable(
            js,
            &subjects::event(&event.task, &event.agent),
            event.encode_to_vec().into(),
            &event.event_id,
            None,
            retry,
        )
        .await
        .unwrap_or_else(|e| panic!("task {task} was never acknowledged: {e}"));
        acked.push(event.event_id.clone());
    }
    acked
}

/// Waits until the orchestrator has materialised every task in KV.
async fn wait_materialised(js: &jetstream::Context, tasks: &[String], when: &str) -> Duration {
    let started = Instant::now();
    let deadline = started + FAULT_PATIENCE;
    let mut missing: BTreeSet<&String> = tasks.iter().collect();
    while !missing.is_empty() {
        if let Ok(kv) = js.get_key_value(subjects::TASKS_BUCKET).await {
            let mut found = Vec::new();
            for task in &missing {
                if let Ok(Some(bytes)) = kv.get(task.as_str()).await
                    && Task::decode(&bytes).is_ok()
                {
                    found.push(*task);
                }
            }
            for task in found {
                missing.remove(task);
            }
        }
        if missing.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{when}: {} of {} acknowledged tasks never materialised, e.g. {:?}",
            missing.len(),
            tasks.len(),
            missing.iter().take(3).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    started.elapsed()
}

fn tasks(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_compose_runs_the_cluster_the_demo_and_survives_faults() {
    if !docker_engine() {
        eprintln!(
            "\n*** SKIPPED: no Docker engine: tests/compose.rs (docker-compose.yml on a real \
             3-node cluster) did not run. Start Docker to run it. ***\n"
        );
        return;
    }
    let started = Instant::now();
    let compose = compose_command();
    let dir = tempfile::tempdir().expect("tmp");
    let tag = format!(
        "{}-{}",
        std::process::id(),
        nuid_like(&dir.path().to_string_lossy())
    );
    let images = build_images(dir.path(), &tag);
    let mut stack = Stack {
        compose,
        project: format!("batontest{}", tag.replace('-', "")),
        images: vec![images.0, images.1],
        watchdog: None,
        dir,
    };
    stack.guard();
    stack.compose(&["up", "-d", "--no-build"]);
    let up = started.elapsed();
    let nodes = ["n1", "n2", "n3"];
    let urls: Vec<String> = nodes.iter().map(|n| stack.nats_url(n)).collect();
    // Secure by default: nobody connects without an identity, and the
    // services' identity is in the stack's auth volume.
    let anonymous = async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(3))
        .max_reconnects(Some(1))
        .connect(urls.to_vec())
        .await;
    assert!(
        anonymous.is_err(),
        "an anonymous client must not connect to the compose cluster"
    );
    let service = stack.identity("baton");
    let js = connect(&urls, &service).await;

    // 1. One cluster, every stream and bucket at R3.
    let streams = wait_whole(&js, "at start").await;
    eprintln!("cluster whole after {:?}: {streams:?}", started.elapsed());

    // 2. The demo: exits 0 having caught everything; the alerts are in the
    // cluster.
    let deadline = Instant::now() + Duration::from_secs(120);
    let demo = loop {
        let state = stack.state("demo-agents");
        if state.0 == "exited" {
            break state;
        }
        assert!(
            Instant::now() < deadline,
            "the demo did not finish: {state:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let demo_log = {
        let out = output(&mut stack.cmd(&["logs", "--no-color", "demo-agents"]));
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    assert_eq!(demo.1, 0, "the demo failed:\n{demo_log}");
    for catch in [
        "CAUGHT CLAIM RACE",
        "CAUGHT HANDOFF_NOT_ACCEPTED",
        "RESOLVED HANDOFF_NOT_ACCEPTED",
        "CAUGHT STALE_CONTEXT",
        "CAUGHT OWNERSHIP_VIOLATION",
    ] {
        assert!(demo_log.contains(catch), "missing {catch}:\n{demo_log}");
    }
    let alerts = support::all_alerts(&js).await;
    for (kind, state) in [
        (AlertKind::HandoffNotAccepted, AlertState::Firing),
        (AlertKind::HandoffNotAccepted, AlertState::Resolved),
        (AlertKind::StaleContext, AlertState::Firing),
        (AlertKind::OwnershipViolation, AlertState::Firing),
    ] {
        assert!(
            alerts.iter().any(|a| a.kind == kind && a.state == state),
            "no {kind:?} {state:?} alert in the cluster; alerts: {:?}",
            alerts.iter().map(|a| (a.kind, a.state)).collect::<Vec<_>>()
        );
    }
    eprintln!("demo done after {:?}", started.elapsed());

    // 3. docker kill the events stream's leader while publishing.
    let mut events = Events::new("compose");
    let leader = events_leader(&js).await;
    let killed = stack.container(&leader);
    let batch = tasks("killed", 120);
    let mut acked = publish_tasks(&js, &mut events, &batch, 40, || {
        docker(&["kill", &killed]);
    })
    .await;
    let took = wait_materialised(&js, &batch, "after docker kill").await;
    eprintln!("docker kill {leader}: every task materialised {took:?} after the last ack");
    if stack.state(&leader).0 != "running" {
        docker(&["start", &killed]);
    }
    wait_whole(&js, &format!("after restarting {leader}")).await;
    eprintln!("{leader} back, cluster whole after {:?}", started.elapsed());

    // 4. Cut the (new) leader off the network, publish through the others,
    // then reconnect it.
    let cut = events_leader(&js).await;
    let others: Vec<String> = nodes
        .iter()
        .filter(|n| **n != cut)
        .map(|n| stack.nats_url(n))
        .collect();
    let js_others = connect(&others, &service).await;
    let network = stack.network(&cut);
    let cut_container = stack.container(&cut);
    let batch2 = tasks("partitioned", 120);
    acked.extend(
        publish_tasks(&js_others, &mut events, &batch2, 0, || {
            docker(&["network", "disconnect", &network, &cut_container]);
        })
        .await,
    );
    let took = wait_materialised(&js_others, &batch2, "while a node is cut off").await;
    eprintln!("{cut} cut off: every task materialised {took:?} after the last ack");
    docker(&[
        "network",
        "connect",
        "--alias",
        &cut,
        &network,
        &cut_container,
    ]);
    wait_whole(&js_others, &format!("after reconnecting {cut}")).await;
    eprintln!(
        "{cut} reconnected, cluster whole after {:?}",
        started.elapsed()
    );

    // 5. Nothing acknowledged was lost or stored twice, and every task of
    // both faults is materialised.
    let all: Vec<String> = batch.iter().chain(&batch2).cloned().collect();
    wait_materialised(&js_others, &all, "at the end").await;
    let stored = read_all(&js_others, subjects::EVENTS_STREAM, subjects::EVENTS_ALL).await;
    let mut count: BTreeMap<String, usize> = BTreeMap::new();
    for m in &stored {
        if let Some(id) = m
            .headers
            .as_ref()
            .and_then(|h| h.get("Nats-Msg-Id"))
            .map(|v| v.to_string())
        {
            *count.entry(id).or_default() += 1;
        }
    }
    for id in &acked {
        assert_eq!(
            count.get(id).copied().unwrap_or(0),
            1,
            "acknowledged event {id} must be stored exactly once"
        );
    }

    // 6. docker kill the active orchestrator while publishing: the standby
    // takes over and materialises everything; then the active detector
    // while a task's lease runs out: its HEARTBEAT_MISSED is paged once.
    let mut pages = js_others
        .client()
        .subscribe(subjects::ALERTS_ALL)
        .await
        .expect("subscribe to pages");
    let (orchestrator, term) = active_instance(&js_others, "orchestrator").await;
    let batch3 = tasks("takeover", 60);
    let killed_at = Instant::now();
    acked.extend(
        publish_tasks(&js_others, &mut events, &batch3, 20, || {
            docker(&["kill", &stack.container(&orchestrator)]);
        })
        .await,
    );
    let took =
        wait_materialised(&js_others, &batch3, "after killing the active orchestrator").await;
    let (successor, next) = active_instance(&js_others, "orchestrator").await;
    assert!(
        next > term,
        "a new term began ({orchestrator} {term} -> {successor} {next})"
    );
    eprintln!(
        "docker kill {orchestrator}: {successor} took over (term {next}); every task materialised {took:?} after the last ack ({:?} after the kill)",
        killed_at.elapsed()
    );
    let (detector, term) = active_instance(&js_others, "stall-detector").await;
    let silent = "silent-after-takeover";
    let sent = publish_tasks(&js_others, &mut events, &[silent.to_string()], 0, || {}).await;
    acked.extend(sent);
    let claim = events.make(
        silent,
        "quiet",
        0,
        EventBody::Claimed {
            heartbeat_within: Some(Duration::from_secs(2)),
        },
    );
    support::publish(&js_others, &claim).await;
    docker(&["kill", &stack.container(&detector)]);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut missed = Vec::new();
    while Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_secs(1), pages.next()).await {
            Ok(Some(msg)) => {
                if let Ok(a) = Alert::decode(&msg.payload)
                    && a.kind == AlertKind::HeartbeatMissed
                    && a.task.as_ref().map(|t| t.as_str()) == Some(silent)
                {
                    missed.push(a);
                }
            }
            Ok(None) => break,
            Err(_) if !missed.is_empty() => break,
            Err(_) => {}
        }
    }
    // The standby, or the killed one restarted by Docker (it takes its own
    // lease back at once): either way a new term, fenced.
    let (successor, next) = active_instance(&js_others, "stall-detector").await;
    assert!(
        next > term,
        "a new detector term began ({detector} {term} -> {successor} {next})"
    );
    assert_eq!(
        missed
            .iter()
            .filter(|a| a.state == AlertState::Firing && a.notification == 0)
            .count(),
        1,
        "the missed heartbeat is paged exactly once across the takeover: {missed:?}"
    );
    eprintln!("docker kill {detector}: {successor} took over and paged HEARTBEAT_MISSED once");

    for service in [
        "orchestrator-a",
        "orchestrator-b",
        "stall-detector-a",
        "stall-detector-b",
    ] {
        let state = stack.state(service);
        eprintln!(
            "{service}: {} (restarted {} times by Docker)",
            state.0, state.2
        );
    }
    eprintln!(
        "compose test: up in {up:?}, total {:?}, {} acknowledged events checked",
        started.elapsed(),
        acked.len()
    );
}

/// The instance holding `service`'s leadership lease (the compose service
/// name: instances are named after their service), once one does.
async fn active_instance(js: &jetstream::Context, service: &str) -> (String, u64) {
    let leaders = js
        .get_key_value(subjects::LEADERS_BUCKET)
        .await
        .expect("leaders bucket");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(Some(v)) = leaders.get(service).await
            && let Ok(lease) = pb::Leadership::decode(v)
            && !lease.instance.is_empty()
        {
            return (lease.instance, lease.term);
        }
        assert!(Instant::now() < deadline, "no active {service}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A short id unique to this run (from the temp dir's random name).
fn nuid_like(path: &str) -> String {
    path.rsplit('/')
        .next()
        .unwrap_or("x")
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .take(8)
        .collect()
}
