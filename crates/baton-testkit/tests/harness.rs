//! The harness against real servers: single node, parallel nodes, restart,
//! and a 3-node cluster that survives losing its stream leader.

use std::{collections::BTreeSet, time::Duration};

use async_nats::jetstream::{self, stream};
use baton_testkit::{NatsCluster, NatsServer};

async fn publish_and_count(url: &str, stream_name: &str, n: usize) -> u64 {
    let client = async_nats::connect(url).await.expect("connect");
    let js = jetstream::new(client);
    let s = js
        .get_or_create_stream(stream::Config {
            name: stream_name.into(),
            subjects: vec![format!("{stream_name}.>")],
            ..Default::default()
        })
        .await
        .expect("stream");
    for i in 0..n {
        js.publish(format!("{stream_name}.x"), format!("m{i}").into())
            .await
            .expect("publish")
            .await
            .expect("ack");
    }
    let mut s = s;
    s.info().await.expect("info").state.messages
}

#[tokio::test]
async fn a_single_node_has_jetstream() {
    let server = NatsServer::start().await.expect("server");
    assert_eq!(publish_and_count(&server.url(), "ONE", 10).await, 10);
    assert!(server.store_dir().exists());
}

#[tokio::test]
async fn parallel_servers_never_clash() {
    let servers = futures::future::join_all((0..4).map(|_| NatsServer::start())).await;
    let servers: Vec<_> = servers.into_iter().map(|s| s.expect("server")).collect();
    let ports: BTreeSet<_> = servers.iter().map(NatsServer::port).collect();
    assert_eq!(ports.len(), 4, "each server has its own port");
    let dirs: BTreeSet<_> = servers
        .iter()
        .map(|s| s.store_dir().to_path_buf())
        .collect();
    assert_eq!(dirs.len(), 4, "each server has its own store");
    for (i, s) in servers.iter().enumerate() {
        assert_eq!(
            publish_and_count(&s.url(), "PAR", i + 1).await,
            (i + 1) as u64
        );
    }
}

#[tokio::test]
async fn a_killed_node_restarts_with_its_data_on_the_same_port() {
    let mut server = NatsServer::start().await.expect("server");
    assert_eq!(publish_and_count(&server.url(), "KEEP", 5).await, 5);
    let port = server.port();
    server.kill();
    assert!(!server.is_running());
    server.restart().await.expect("restart");
    assert_eq!(server.port(), port);
    assert_eq!(publish_and_count(&server.url(), "KEEP", 1).await, 6);
}

#[tokio::test]
async fn dropping_the_server_stops_it_and_removes_its_files() {
    let server = NatsServer::start().await.expect("server");
    let store = server.store_dir().to_path_buf();
    let pid = server.pid().expect("running");
    drop(server);
    assert!(!store.exists(), "store removed");
    // The process is gone (reaped), not just disconnected.
    let status = std::process::Command::new("kill")
        .args(["-0", &pid.to_string()])
        .stderr(std::process::Stdio::null())
        .status()
        .expect("kill -0");
    assert!(!status.success(), "nats-server {pid} still running");
}

/// An R3 stream keeps accepting publishes after its leader is killed, and no
/// acknowledged message is lost.
#[tokio::test]
async fn an_r3_stream_survives_losing_its_leader() {
    let mut cluster = NatsCluster::start(3).await.expect("cluster");
    let client = async_nats::ConnectOptions::new()
        .connect(cluster.urls())
        .await
        .expect("connect");
    let js = jetstream::new(client);
    let mut s = js
        .create_stream(stream::Config {
            name: "R3".into(),
            subjects: vec!["r3.>".into()],
            num_replicas: 3,
            ..Default::default()
        })
        .await
        .expect("R3 stream");
    let leader = s
        .info()
        .await
        .expect("info")
        .cluster
        .as_ref()
        .and_then(|c| c.leader.clone())
        .expect("a leader");
    let leader = cluster.index_of(&leader).expect("leader is one of ours");

    let total = 400;
    let mut acked = BTreeSet::new();
    let mut acked_after_kill = 0;
    for i in 0..total {
        if i == total / 2 {
            cluster.kill(leader);
        }
        let id = format!("m{i}");
        // Retry with the same Nats-Msg-Id until stored: a retry of a publish
        // that was in fact stored is deduplicated by the broker.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let msg = jetstream::message::PublishMessage::build()
                .payload(id.clone().into())
                .message_id(id.clone());
            let attempt = async { js.send_publish("r3.x", msg).await?.await };
            match tokio::time::timeout(Duration::from_secs(2), attempt).await {
                Ok(Ok(_)) => break,
                Ok(Err(_)) | Err(_) if tokio::time::Instant::now() < deadline => continue,
                other => panic!("publish {id} never succeeded: {other:?}"),
            }
        }
        acked.insert(id);
        if i >= total / 2 {
            acked_after_kill += 1;
        }
    }
    assert_eq!(acked_after_kill, total / 2, "publishes kept being accepted");

    // The cluster may still be settling after the failover: ask again
    // until a leader answers.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let info = loop {
        match s.info().await {
            Ok(info) => break info.clone(),
            Err(_) if tokio::time::Instant::now() < deadline => continue,
            Err(e) => panic!("no stream info after failover: {e}"),
        }
    };
    let new_leader = info
        .cluster
        .as_ref()
        .and_then(|c| c.leader.clone())
        .expect("new leader");
    assert_ne!(cluster.index_of(&new_leader), Some(leader));
    assert_eq!(
        info.state.messages, total as u64,
        "every ack stored exactly once"
    );

    // Read every stored message back from the leader.
    let mut seen = BTreeSet::new();
    for seq in info.state.first_sequence..=info.state.last_sequence {
        let m = s.get_raw_message(seq).await.expect("stored message");
        assert!(
            seen.insert(String::from_utf8_lossy(&m.payload).to_string()),
            "duplicate"
        );
    }
    assert_eq!(seen, acked, "no acknowledged message lost");
}
