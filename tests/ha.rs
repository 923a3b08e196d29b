//! Both services highly available on a real 3-node cluster (R3 streams and
//! buckets), with two instances of each as child processes:
//!
//! - under steady load from many agents (claims, contested claims,
//!   handoffs, heartbeats, releases), the active instance is killed (or
//!   stopped gracefully) again and again; after every takeover processing
//!   resumes, and at the end the stored state is the fold of the stream,
//!   every violation is alerted once and every missed heartbeat paged once;
//! - the node the active detector is connected to is frozen (cut off for
//!   its clients and peers alike) for longer than the lease: the standby on
//!   the majority side takes over and pages, the old leader's writes are
//!   refused when the node comes back, and after that the healed old
//!   leader takes over again when the new one is killed.
//!
//! Timings are printed (takeover after a kill), never asserted.
#![allow(clippy::print_stderr)]

mod support;

use std::{
    collections::{BTreeMap, HashMap},
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use async_nats::jetstream;
use baton_core::{Alert, AlertKind, AlertState, Event, EventBody, HandoffTarget, subjects};
use baton_proto::{prost::Message, v1 as pb};
use baton_testkit::NatsCluster;
use futures::StreamExt;
use support::*;

/// Alerts only where a test asks for them: the silent tasks' claims carry
/// their own heartbeat window.
const RULES: &str = r#"
[defaults]
heartbeat = "off"
accept = "off"
start = "off"
blocked = "off"
progress = "off"
renotify = "off"
"#;

/// How long one fault on the cluster may take to be absorbed: a frozen
/// node's elections took 20 s on a loaded 2-core machine.
const FAULT_PATIENCE: Duration = Duration::from_secs(90);

/// The heartbeat window of the tasks that go silent on purpose.
const SILENT_WITHIN: Duration = Duration::from_secs(2);

/// Service processes against a cluster.
struct Fleet {
    cluster: NatsCluster,
    js: jetstream::Context,
    dir: tempfile::TempDir,
    rules: PathBuf,
    running: HashMap<String, BatonProcess>,
    starts: usize,
}

impl Fleet {
    async fn new() -> Fleet {
        Fleet::with_rules(RULES).await
    }

    async fn with_rules(rules_toml: &str) -> Fleet {
        let cluster = NatsCluster::start(3).await.expect("3-node cluster");
        let client = connect_to(&cluster.urls()).await;
        let dir = tempfile::tempdir().expect("tmp");
        let rules = dir.path().join("rules.toml");
        std::fs::write(&rules, rules_toml).expect("rules");
        Fleet {
            cluster,
            js: jetstream::new(client),
            dir,
            rules,
            running: HashMap::new(),
            starts: 0,
        }
    }

    /// Starts `service` instance `instance` connected to `urls`.
    fn spawn(&mut self, service: &str, instance: &str, urls: &[String]) {
        self.starts += 1;
        let log = self
            .dir
            .path()
            .join(format!("{instance}-{}.log", self.starts));
        let rules = self.rules.to_string_lossy().to_string();
        let mut args = vec![
            if service == "orchestrator" {
                "orchestrator"
            } else {
                "stall-detector"
            },
            "--instance",
            instance,
            "--replicas",
            "3",
            "--liveness-interval",
            "200ms",
            "--lease-ttl",
            TEST_LEASE_TTL,
        ];
        if service != "orchestrator" {
            args.extend(["--rules", rules.as_str()]);
        }
        let process = BatonProcess::spawn(&urls.join(","), &args, &log);
        self.running.insert(instance.to_string(), process);
    }

    /// The lease holder of `service` (instance, term), once there is one.
    async fn leader(&self, service: &str) -> (String, u64) {
        self.leader_after(service, 0).await
    }

    /// The lease holder of `service` once its term is past `term` (after a
    /// fault, within the patience a fault is given: a frozen node's groups
    /// may take over 30 s to elect new leaders on a loaded 2-core machine).
    async fn leader_after(&self, service: &str, term: u64) -> (String, u64) {
        wait_kv_within(
            &self.js,
            subjects::LEADERS_BUCKET,
            service,
            FAULT_PATIENCE,
            |b| {
                let lease = pb::Leadership::decode(b).ok()?;
                (!lease.instance.is_empty() && lease.term > term)
                    .then_some((lease.instance, lease.term))
            },
        )
        .await
    }

    /// Waits until an instance other than `gone` holds `service`'s lease in
    /// a term after `term`. (The lease may still name `gone` in a later
    /// term for a moment: it may have re-taken the lease just before it was
    /// stopped; that lease must lapse first.)
    async fn taken_over_from(&self, service: &str, gone: &str, term: u64) -> (String, u64) {
        wait_kv_within(
            &self.js,
            subjects::LEADERS_BUCKET,
            service,
            FAULT_PATIENCE,
            |b| {
                let lease = pb::Leadership::decode(b).ok()?;
                (!lease.instance.is_empty() && lease.instance != gone && lease.term > term)
                    .then_some((lease.instance, lease.term))
            },
        )
        .await
    }

    /// Waits until `instance` of `service` reports `role` in its liveness.
    async fn wait_role(&self, service: &str, instance: &str, role: &str) {
        wait_kv_within(
            &self.js,
            subjects::SERVICES_BUCKET,
            &format!("{service}.{instance}"),
            FAULT_PATIENCE,
            |b| {
                let s = pb::ServiceStatus::decode(b).ok()?;
                (s.role == role).then_some(())
            },
        )
        .await;
    }

    /// The active orchestrator's applied sequence, once past `seq`.
    async fn applied_past(&self, seq: u64) -> u64 {
        let (instance, _) = self.leader("orchestrator").await;
        wait_kv_within(
            &self.js,
            subjects::SERVICES_BUCKET,
            &format!("orchestrator.{instance}"),
            FAULT_PATIENCE,
            |b| {
                let s = pb::ServiceStatus::decode(b).ok()?;
                (s.role == "active" && s.applied_seq > seq).then_some(s.applied_seq)
            },
        )
        .await
    }

    /// Waits until the lease holder of `service` reports itself active in
    /// the lease's term and the other instance stands by; returns the
    /// holder and term.
    async fn settled(&self, service: &str, instances: [&str; 2]) -> (String, u64) {
        let deadline = Instant::now() + FAULT_PATIENCE;
        loop {
            if let Some((holder, term)) = self.settled_now(service, instances).await {
                return (holder, term);
            }
            assert!(
                Instant::now() < deadline,
                "{service} did not settle to one active and one standby"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn settled_now(&self, service: &str, instances: [&str; 2]) -> Option<(String, u64)> {
        let leaders = self.js.get_key_value(subjects::LEADERS_BUCKET).await.ok()?;
        let services = self
            .js
            .get_key_value(subjects::SERVICES_BUCKET)
            .await
            .ok()?;
        let lease = pb::Leadership::decode(leaders.get(service).await.ok()??).ok()?;
        let other = instances.iter().find(|i| **i != lease.instance)?;
        if !instances.contains(&lease.instance.as_str()) {
            return None;
        }
        let status = |b: bytes::Bytes| pb::ServiceStatus::decode(b).ok();
        let holder = status(
            services
                .get(format!("{service}.{}", lease.instance))
                .await
                .ok()??,
        )?;
        let standby = status(services.get(format!("{service}.{other}")).await.ok()??)?;
        (holder.role == "active" && holder.term == lease.term && standby.role == "standby")
            .then_some((lease.instance, lease.term))
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        // BATON_TEST_KEEP_LOGS=1 keeps them after a pass too.
        if std::thread::panicking() || std::env::var_os("BATON_TEST_KEEP_LOGS").is_some() {
            eprint!("{}", log_tails(self.dir.path()));
            let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().expect("tmp"));
            eprintln!("service logs kept in {}", dir.keep().display());
        }
    }
}

/// A client of these nodes only.
async fn connect_to(urls: &[String]) -> async_nats::Client {
    let addrs: Vec<async_nats::ServerAddr> = urls
        .iter()
        .map(|u| u.parse().expect("server url"))
        .collect();
    async_nats::connect(addrs).await.expect("connect")
}

/// Publishes `e` with its event id as `Nats-Msg-Id`, retrying on timeouts
/// (a node may be electing); returns once the broker stored it.
async fn publish_retrying(js: &jetstream::Context, e: &Event) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let msg = jetstream::message::PublishMessage::build()
            .payload(e.encode_to_vec().into())
            .message_id(e.event_id.as_str());
        match js
            .send_publish(subjects::event(&e.task, &e.agent), msg)
            .await
        {
            Ok(ack) => match ack.await {
                Ok(_) => return,
                Err(err) => assert!(Instant::now() < deadline, "not stored: {err}"),
            },
            Err(err) => assert!(Instant::now() < deadline, "not sent: {err}"),
        }
    }
}

/// The events of round `round` for task `id`: every task is created,
/// claimed by the first agent and contested by the second (a violation),
/// heartbeated, handed to the second, released and claimed again, over and
/// over.
fn round_events(
    ev: &mut Events,
    id: &str,
    (a0, a1): &(String, String),
    round: usize,
) -> Vec<Event> {
    let (a0, a1) = (a0.as_str(), a1.as_str());
    match round {
        0 => vec![ev.created(id, "planner")],
        1 => vec![ev.claimed(id, a0), ev.claimed(id, a1)],
        r if r % 4 == 2 => vec![ev.heartbeat(id, a0, 1), ev.heartbeat(id, a1, 1)],
        r if r % 4 == 3 => vec![ev.make(
            id,
            a0,
            1,
            EventBody::HandoffOffered {
                to: HandoffTarget::Agent(agent(a1)),
                output_location: format!("out/{r}"),
                accept_within: None,
            },
        )],
        r if r % 4 == 0 => vec![
            ev.make(
                id,
                a1,
                0,
                EventBody::HandoffAccepted {
                    heartbeat_within: None,
                },
            ),
            ev.heartbeat(id, a1, 2),
        ],
        _ => vec![
            ev.make(
                id,
                a1,
                2,
                EventBody::Released {
                    reason: "next".into(),
                },
            ),
            ev.claimed(id, a0),
        ],
    }
}

/// A task created and claimed with a heartbeat window, then left silent:
/// the detector must page `HEARTBEAT_MISSED` for it exactly once.
async fn go_silent(js: &jetstream::Context, ev: &mut Events, id: &str) {
    publish_retrying(js, &ev.created(id, "planner")).await;
    let claim = ev.make(
        id,
        "quiet",
        0,
        EventBody::Claimed {
            heartbeat_within: Some(SILENT_WITHIN),
        },
    );
    publish_retrying(js, &claim).await;
}

/// Every notification seen on the core subjects, by (id, state, number).
fn count_pages(pages: &[Alert]) -> BTreeMap<(String, String, u32), usize> {
    let mut count = BTreeMap::new();
    for a in pages {
        *count
            .entry((a.id.clone(), format!("{:?}", a.state), a.notification))
            .or_default() += 1;
    }
    count
}

/// Every page published on the core alert subjects, collected as it
/// arrives (a subscriber read only at the end overflows its buffer under
/// load, and the client drops what does not fit).
struct Pages {
    seen: Arc<Mutex<Vec<Alert>>>,
    arrived: Arc<tokio::sync::Notify>,
    collector: tokio::task::JoinHandle<()>,
}

impl Pages {
    async fn subscribe(js: &jetstream::Context) -> Pages {
        let mut sub = js
            .client()
            .subscribe(subjects::ALERTS_ALL)
            .await
            .expect("subscribe to pages");
        // The subscription is registered once the server has it.
        js.client().flush().await.expect("flush");
        let seen: Arc<Mutex<Vec<Alert>>> = Arc::default();
        let arrived = Arc::new(tokio::sync::Notify::new());
        let (into, wake) = (seen.clone(), arrived.clone());
        let collector = tokio::spawn(async move {
            while let Some(msg) = sub.next().await {
                let alert = Alert::decode(&msg.payload).expect("alert decodes");
                into.lock().expect("pages").push(alert);
                wake.notify_waiters();
            }
        });
        Pages {
            seen,
            arrived,
            collector,
        }
    }

    /// Waits until `done(pages)` holds; false if it did not within
    /// FAULT_PATIENCE.
    async fn until(&self, mut done: impl FnMut(&[Alert]) -> bool) -> bool {
        let deadline = Instant::now() + FAULT_PATIENCE;
        loop {
            let arrived = self.arrived.notified();
            if done(&self.seen.lock().expect("pages")) {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            let _ = tokio::time::timeout(left.min(Duration::from_millis(200)), arrived).await;
        }
    }

    /// The pages so far.
    fn snapshot(&self) -> Vec<Alert> {
        self.seen.lock().expect("pages").clone()
    }
}

impl Drop for Pages {
    fn drop(&mut self) {
        self.collector.abort();
    }
}

fn missed_heartbeat_for<'a>(pages: &'a [Alert], task: &str) -> Vec<&'a Alert> {
    pages
        .iter()
        .filter(|a| {
            a.kind == AlertKind::HeartbeatMissed
                && a.state == AlertState::Firing
                && a.task.as_ref().is_some_and(|t| t.as_str() == task)
        })
        .collect()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Twenty kills of each service's active instance (every fourth a
/// graceful stop, as in a rolling restart), at varying points of the load,
/// on a 3-node cluster.
#[tokio::test]
async fn twenty_takeovers_of_each_under_load_lose_nothing_and_page_once() {
    let mut fleet = Fleet::new().await;
    let urls = fleet.cluster.urls();
    for (service, instance) in [
        ("orchestrator", "oa"),
        ("orchestrator", "ob"),
        ("stall-detector", "da"),
        ("stall-detector", "db"),
    ] {
        fleet.spawn(service, instance, &urls);
    }
    fleet.leader("orchestrator").await;
    fleet.leader("stall-detector").await;
    for (service, instance) in [
        ("orchestrator", "oa"),
        ("orchestrator", "ob"),
        ("stall-detector", "da"),
        ("stall-detector", "db"),
    ] {
        wait_kv(
            &fleet.js,
            subjects::SERVICES_BUCKET,
            &format!("{service}.{instance}"),
            |b| {
                let s = pb::ServiceStatus::decode(b).ok()?;
                (s.role == "active" || s.role == "standby").then_some(())
            },
        )
        .await;
    }
    let pages = Pages::subscribe(&fleet.js).await;

    // Steady load until the faults are done: 50 agents (two contend for
    // each task), rounds paced so the services are busy throughout, plus
    // two tasks per round that go silent.
    let tasks = 500;
    let js = fleet.js.clone();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let publisher = tokio::spawn(async move {
        let mut ev = Events::new("ha");
        let mut silent = Vec::new();
        let mut sent = 0usize;
        let mut round = 0;
        while round < 2 || !*stopped.borrow() {
            let started = Instant::now();
            let mut acks = futures::stream::FuturesUnordered::new();
            for t in 0..tasks {
                let id = format!("t{t}");
                let pair = (format!("a{}", t % 25), format!("b{}", t % 25));
                for e in round_events(&mut ev, &id, &pair, round) {
                    let js = js.clone();
                    acks.push(async move { publish_retrying(&js, &e).await });
                    sent += 1;
                    if acks.len() >= 256 {
                        acks.next().await;
                    }
                }
            }
            while acks.next().await.is_some() {}
            for k in 0..2 {
                let id = format!("silent-{round}-{k}");
                go_silent(&js, &mut ev, &id).await;
                sent += 2;
                silent.push(id);
            }
            round += 1;
            // Pacing, not synchronisation: spreads the load over the kills.
            tokio::time::sleep(Duration::from_millis(1000).saturating_sub(started.elapsed())).await;
        }
        (sent, silent, round)
    });

    let mut takeovers = Vec::new();
    let mut seen = 0;
    // A fixed pseudo-random sequence: each fault lands at a different point
    // of the work, the same in every run.
    let mut jitter = 0x9e37_79b9_u32;
    for k in 0..40 {
        let service = if k % 2 == 0 {
            "orchestrator"
        } else {
            "stall-detector"
        };
        // Processing is under way before each fault.
        seen = fleet.applied_past(seen).await;
        jitter ^= jitter << 13;
        jitter ^= jitter >> 17;
        jitter ^= jitter << 5;
        tokio::time::sleep(Duration::from_millis(u64::from(jitter % 300))).await;
        let (instance, term) = fleet.leader(service).await;
        let graceful = k % 4 == 3;
        let at = Instant::now();
        let process = fleet.running.get_mut(&instance).expect("running");
        if graceful {
            assert!(process.terminate(), "{instance} stops cleanly on SIGTERM");
        } else {
            process.kill9();
        }
        let (successor, _) = fleet.taken_over_from(service, &instance, term).await;
        takeovers.push((graceful, at.elapsed()));
        fleet.wait_role(service, &successor, "active").await;
        // The stopped one comes back as the standby.
        fleet.spawn(service, &instance, &urls);
        fleet.wait_role(service, &instance, "standby").await;
    }
    stop.send(true).expect("publisher running");
    let (sent, silent, rounds) = publisher.await.expect("publisher");

    // Everything is materialised: KV is the fold of the stream.
    let last = {
        let mut s = fleet
            .js
            .get_stream(subjects::EVENTS_STREAM)
            .await
            .expect("events stream");
        s.info().await.expect("info").state.last_sequence
    };
    assert_eq!(last, sent as u64, "every event stored exactly once");
    fleet.applied_past(last - 1).await;
    let (expected, refused) = fold_of_stream(&fleet.js).await;
    assert_eq!(expected.len(), tasks + silent.len());
    for (id, want) in &expected {
        let got = stored_task(&fleet.js, id).await.expect("stored");
        assert_eq!(&got, want, "task {id}");
    }

    // Each violation stored once, and paged once.
    let stored = all_alerts(&fleet.js).await;
    let violations: Vec<_> = stored
        .iter()
        .filter(|a| a.kind == AlertKind::OwnershipViolation)
        .collect();
    assert_eq!(violations.len(), refused, "each violation stored once");
    let all_paged = pages
        .until(|p| {
            p.iter()
                .filter(|a| a.kind == AlertKind::OwnershipViolation)
                .count()
                >= refused
                && silent
                    .iter()
                    .all(|t| !missed_heartbeat_for(p, t).is_empty())
        })
        .await;
    let seen_pages = pages.snapshot();
    let missing: Vec<_> = silent
        .iter()
        .filter(|t| missed_heartbeat_for(&seen_pages, t).is_empty())
        .collect();
    assert!(
        all_paged,
        "not paged: {missing:?}; {} of {refused} violations",
        seen_pages
            .iter()
            .filter(|a| a.kind == AlertKind::OwnershipViolation)
            .count()
    );
    for (key, n) in count_pages(&seen_pages) {
        assert_eq!(n, 1, "paged {n} times: {key:?}");
    }
    // Read once: every page is in by now (once per silent task, the reads
    // of a few thousand alerts made the test's end take minutes).
    let stored_now = all_alerts(&fleet.js).await;
    for t in &silent {
        let firing: Vec<_> = stored
            .iter()
            .chain(stored_now.iter())
            .filter(|a| {
                a.kind == AlertKind::HeartbeatMissed
                    && a.state == AlertState::Firing
                    && a.notification == 0
                    && a.task.as_ref().is_some_and(|x| x.as_str() == t)
            })
            .map(|a| a.id.clone())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        assert_eq!(firing.len(), 1, "one missed-heartbeat fault for {t}");
    }

    assert_eq!(takeovers.len(), 40);
    let mut kills: Vec<_> = takeovers.iter().filter(|t| !t.0).map(|t| t.1).collect();
    let mut stops: Vec<_> = takeovers.iter().filter(|t| t.0).map(|t| t.1).collect();
    kills.sort();
    stops.sort();
    eprintln!(
        "{sent} events in {rounds} rounds, {} silent tasks, {refused} violations; takeover after kill -9 \
         (lease ttl {TEST_LEASE_TTL}): p50 {:?} max {:?}; after SIGTERM: p50 {:?} max {:?}",
        silent.len(),
        percentile(&kills, 0.5),
        kills.last().expect("kills"),
        percentile(&stops, 0.5),
        stops.last().expect("stops"),
    );
}

/// SIGSTOP / SIGCONT a node: to its clients and peers it is cut off.
fn signal_node(cluster: &NatsCluster, i: usize, sig: &str) {
    let pid = cluster.node(i).pid().expect("node pid").to_string();
    let ok = std::process::Command::new("kill")
        .args([sig, &pid])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "kill {sig} {pid}");
}

/// The active detector's node is cut off for longer than the lease: a new
/// term begins (the standby's, or da's own after its client moved to
/// another node: async-nats learns the cluster's other addresses) and pages
/// what ran out meanwhile, once; when the node is back, the other instance
/// stands by, and it takes over (and pages) when the holder is killed.
#[tokio::test]
async fn a_detector_cut_off_with_its_node_is_replaced_and_fenced() {
    let mut fleet = Fleet::new().await;
    let urls = fleet.cluster.urls();
    let majority = urls[1..].to_vec();
    // The test's own connection avoids the node it will freeze.
    let client = connect_to(&majority).await;
    fleet.js = jetstream::new(client);
    fleet.spawn("orchestrator", "oa", &majority);
    fleet.spawn("stall-detector", "da", &urls[..1]);
    fleet.leader("stall-detector").await;
    fleet.wait_role("stall-detector", "da", "active").await;
    fleet.spawn("stall-detector", "db", &majority);
    fleet.wait_role("stall-detector", "db", "standby").await;
    let (_, first_term) = fleet.leader("stall-detector").await;
    let pages = Pages::subscribe(&fleet.js).await;
    let mut ev = Events::new("cut");

    // A silent task whose deadline falls while da's node is frozen.
    go_silent(&fleet.js, &mut ev, "during").await;
    signal_node(&fleet.cluster, 0, "-STOP");
    let frozen_at = Instant::now();
    let (successor, term) = fleet.leader_after("stall-detector", first_term).await;
    let ok = pages
        .until(|p| !missed_heartbeat_for(p, "during").is_empty())
        .await;
    assert!(ok, "HEARTBEAT_MISSED paged while da's node is cut off");
    eprintln!(
        "node 0 frozen: {successor} began term {term} and paged {:?} after the freeze",
        frozen_at.elapsed()
    );
    signal_node(&fleet.cluster, 0, "-CONT");
    // The cluster settles: one holder reports active in its term, the other
    // stands by (a deposed leader's writes were refused by the new term's
    // fences). While the cluster re-elects, the lease may change hands
    // again; each change is a new, fenced term.
    let (successor, term) = fleet.settled("stall-detector", ["da", "db"]).await;
    let other = if successor == "da" { "db" } else { "da" };

    // Now the other one must take over when the holder dies, and page.
    go_silent(&fleet.js, &mut ev, "after").await;
    fleet.running.get_mut(&successor).expect("holder").kill9();
    let (back, last_term) = fleet
        .taken_over_from("stall-detector", &successor, term)
        .await;
    assert_eq!(back, other);
    fleet.wait_role("stall-detector", other, "active").await;
    let ok = pages
        .until(|p| !missed_heartbeat_for(p, "after").is_empty())
        .await;
    assert!(
        ok,
        "HEARTBEAT_MISSED paged by {other} after the partition healed"
    );
    let seen = pages.snapshot();
    for task in ["during", "after"] {
        let firing: Vec<_> = missed_heartbeat_for(&seen, task)
            .into_iter()
            .filter(|a| a.notification == 0)
            .collect();
        assert_eq!(firing.len(), 1, "{task} paged once: {firing:?}");
    }
    for (key, n) in count_pages(&seen) {
        assert_eq!(n, 1, "paged {n} times: {key:?}");
    }
    eprintln!("{successor} killed: {other} took over (term {last_term}) and paged");
}

/// The events stream's leader, as a node index.
async fn events_leader(fleet: &Fleet) -> usize {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Ok(mut s) = fleet.js.get_stream(subjects::EVENTS_STREAM).await
            && let Ok(info) = s.info().await
            && let Some(leader) = info.cluster.as_ref().and_then(|c| c.leader.clone())
            && let Some(i) = fleet.cluster.index_of(&leader)
        {
            return i;
        }
        assert!(Instant::now() < deadline, "the events stream has no leader");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn last_event_seq(js: &jetstream::Context) -> u64 {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Ok(mut s) = js.get_stream(subjects::EVENTS_STREAM).await
            && let Ok(info) = s.info().await
        {
            return info.state.last_sequence;
        }
        assert!(
            Instant::now() < deadline,
            "the events stream does not answer"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// SIGKILL of the node that leads the events stream while agents keep
/// heartbeating well within their leases: no acknowledged event is lost,
/// processing resumes, and the election is not blamed on any agent (no
/// `HEARTBEAT_MISSED`, decision 9).
#[tokio::test]
async fn killing_the_events_leader_node_loses_nothing_and_blames_no_agent() {
    let rules = RULES.replace("heartbeat = \"off\"", "heartbeat = \"3s\"");
    let mut fleet = Fleet::with_rules(&rules).await;
    let urls = fleet.cluster.urls();
    for (service, instance) in [
        ("orchestrator", "oa"),
        ("orchestrator", "ob"),
        ("stall-detector", "da"),
        ("stall-detector", "db"),
    ] {
        fleet.spawn(service, instance, &urls);
    }
    fleet.leader("orchestrator").await;
    fleet.leader("stall-detector").await;
    let pages = Pages::subscribe(&fleet.js).await;
    let tasks: Vec<String> = (0..20).map(|i| format!("beating-{i}")).collect();
    let mut ev = Events::new("beats");
    for t in &tasks {
        publish_retrying(&fleet.js, &ev.created(t, "planner")).await;
        publish_retrying(&fleet.js, &ev.claimed(t, &format!("agent-{t}"))).await;
    }
    let js = fleet.js.clone();
    let beating = tasks.clone();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    // Every owner heartbeats twice a second (a 3 s lease), each heartbeat
    // retried until stored, as the SDK does.
    let publisher = tokio::spawn(async move {
        let mut sent = 0usize;
        while !*stopped.borrow() {
            let started = Instant::now();
            let round: Vec<Event> = beating
                .iter()
                .map(|t| ev.heartbeat(t, &format!("agent-{t}"), 1))
                .collect();
            futures::future::join_all(round.iter().map(|e| publish_retrying(&js, e))).await;
            sent += round.len();
            // Pacing, not synchronisation.
            tokio::time::sleep(Duration::from_millis(500).saturating_sub(started.elapsed())).await;
        }
        sent
    });
    let before = fleet.applied_past(0).await;
    let seen = fleet.applied_past(before + 100).await;
    let leader = events_leader(&fleet).await;
    let at_kill = last_event_seq(&fleet.js).await.max(seen);
    let killed_at = Instant::now();
    fleet.cluster.kill(leader);
    // Processing resumes on the other two nodes.
    let resumed = fleet.applied_past(at_kill + 40).await;
    let resumed_after = killed_at.elapsed();
    fleet.cluster.restart(leader).await.expect("node restarts");
    fleet.applied_past(resumed + 200).await;
    stop.send(true).expect("publisher running");
    let beats = publisher.await.expect("publisher");
    let mut ev = Events::new("beats-end");
    // The owners release their tasks: no lease is left to run out, so any
    // HEARTBEAT_MISSED below was raised while they were heartbeating.
    for t in &tasks {
        let release = ev.make(
            t,
            &format!("agent-{t}"),
            1,
            EventBody::Released {
                reason: "done".into(),
            },
        );
        publish_retrying(&fleet.js, &release).await;
    }
    let sent = beats + 3 * tasks.len();

    let last = last_event_seq(&fleet.js).await;
    assert_eq!(
        last, sent as u64,
        "every acknowledged event stored exactly once"
    );
    fleet.applied_past(last - 1).await;
    let (expected, _) = fold_of_stream(&fleet.js).await;
    for (id, want) in &expected {
        let got = stored_task(&fleet.js, id).await.expect("stored");
        assert_eq!(&got, want, "task {id}");
    }
    // Everything the detector derived from the events is stored before its
    // checkpoint moves past them.
    wait_kv_within(
        &fleet.js,
        subjects::CHECKPOINTS_BUCKET,
        subjects::DETECTOR_CONSUMER,
        FAULT_PATIENCE,
        |b| {
            let at: u64 = std::str::from_utf8(b).ok()?.trim().parse().ok()?;
            (at >= last).then_some(())
        },
    )
    .await;
    let seen_pages = pages.snapshot();
    let blamed: Vec<_> = all_alerts(&fleet.js)
        .await
        .into_iter()
        .chain(seen_pages)
        .filter(|a| a.kind == AlertKind::HeartbeatMissed)
        .map(|a| a.summary)
        .collect();
    assert!(
        blamed.is_empty(),
        "agents blamed for the election: {blamed:?}"
    );
    eprintln!(
        "node {leader} (events leader) SIGKILLed: processing resumed after {resumed_after:?}; {sent} events, none lost, no agent blamed"
    );
}
