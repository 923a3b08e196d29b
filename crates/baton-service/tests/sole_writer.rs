//! The sole-writer fast path against a real server: every write is stored,
//! and a write it cannot prove (another writer in between) is sent again
//! with an acknowledgement each rather than lost.

use async_nats::jetstream::{self, stream};
use baton_service::{
    outbox::{Outbox, Outgoing, SoleWriter},
    shutdown,
};
use baton_testkit::NatsServer;

fn writes(round: usize, n: usize) -> Vec<Outgoing> {
    (0..n)
        .map(|i| Outgoing::new(format!("state.k{i}"), format!("round {round} key {i}")))
        .collect()
}

/// The latest payload per subject, and the stream's message count.
async fn latest(js: &jetstream::Context, n: usize) -> (Vec<String>, u64) {
    let mut s = js.get_stream("STATE").await.expect("stream");
    let count = s.info().await.expect("info").state.messages;
    let mut out = Vec::new();
    for i in 0..n {
        let m = s
            .get_last_raw_message_by_subject(&format!("state.k{i}"))
            .await
            .expect("stored");
        out.push(String::from_utf8(m.payload.to_vec()).expect("utf8"));
    }
    (out, count)
}

#[tokio::test]
async fn stores_every_write_and_falls_back_when_it_cannot_prove_it() {
    let server = NatsServer::start().await.expect("nats-server");
    let client = async_nats::connect(server.url()).await.expect("connect");
    let js = jetstream::new(client);
    js.create_stream(stream::Config {
        name: "STATE".into(),
        subjects: vec!["state.>".into()],
        ..Default::default()
    })
    .await
    .expect("stream");
    let outbox = Outbox::new(js.clone());
    let (_trigger, shutdown) = shutdown::channel();
    let mut writer = SoleWriter::new("STATE");
    let n = 500;

    // First delivery: learns the stream's sequence, one ack.
    let d = writer
        .deliver(&outbox, &writes(1, n), &shutdown)
        .await
        .expect("delivered");
    assert!(!d.fell_back, "nothing else writes: the fast path is proven");
    let (payloads, count) = latest(&js, n).await;
    assert_eq!(count, n as u64);
    assert!(
        payloads
            .iter()
            .enumerate()
            .all(|(i, p)| *p == format!("round 1 key {i}"))
    );

    // Someone else writes: the next delivery cannot prove itself and
    // sends everything again with acknowledgements.
    js.publish("state.foreign", "x".into())
        .await
        .expect("publish")
        .await
        .expect("stored");
    let d = writer
        .deliver(&outbox, &writes(2, n), &shutdown)
        .await
        .expect("delivered");
    assert!(
        d.fell_back,
        "a foreign write in between must not pass as ours"
    );
    let (payloads, _) = latest(&js, n).await;
    assert!(
        payloads
            .iter()
            .enumerate()
            .all(|(i, p)| *p == format!("round 2 key {i}"))
    );

    // It re-reads the stream's sequence and is fast again.
    let d = writer
        .deliver(&outbox, &writes(3, n), &shutdown)
        .await
        .expect("delivered");
    assert!(!d.fell_back);
    let (payloads, _) = latest(&js, n).await;
    assert!(
        payloads
            .iter()
            .enumerate()
            .all(|(i, p)| *p == format!("round 3 key {i}"))
    );
}
