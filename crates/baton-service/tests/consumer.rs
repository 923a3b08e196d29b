//! Delivery facts read from real deliveries agree with async-nats' own
//! parser of the ack subject.

use std::time::Duration;

use async_nats::jetstream::{self, stream};
use baton_service::consumer::{Batches, ConsumerSpec, delivery_of, ensure_durable_from};
use baton_testkit::NatsServer;

#[tokio::test]
async fn delivery_facts_match_the_clients_parser() {
    let server = NatsServer::start().await.expect("nats-server");
    let client = async_nats::connect(server.url()).await.expect("connect");
    let js = jetstream::new(client);
    js.create_stream(stream::Config {
        name: "EV".into(),
        subjects: vec!["ev.>".into()],
        ..Default::default()
    })
    .await
    .expect("stream");
    for i in 0..5 {
        js.publish(format!("ev.{i}"), "x".into())
            .await
            .expect("publish")
            .await
            .expect("stored");
    }
    let spec = ConsumerSpec {
        stream: "EV".into(),
        durable: "d".into(),
        filter: "ev.>".into(),
        max_ack_pending: 100,
        ack_wait: Duration::from_secs(30),
        max_batch: 10,
    };
    let consumer = ensure_durable_from(&js, &spec, Some(2))
        .await
        .expect("consumer");
    let mut batches = Batches::new(&consumer, 10).await.expect("batches");
    let (_trigger, mut shutdown) = baton_service::shutdown::channel();
    let mut seen = Vec::new();
    while seen.len() < 4 {
        let batch = batches
            .next(Duration::from_secs(5), &mut shutdown)
            .await
            .expect("open");
        assert!(!batch.is_empty(), "deliveries within 5 s");
        for msg in batch {
            let ours = delivery_of(&msg).expect("parsed");
            let theirs = msg.info().expect("info");
            assert_eq!(ours.meta.seq, theirs.stream_sequence);
            assert_eq!(ours.consumer_seq, theirs.consumer_sequence);
            assert_eq!(ours.pending, theirs.pending);
            assert_eq!(ours.delivered, theirs.delivered);
            assert_eq!(
                i128::from(ours.meta.stored_at.unix_nanos()),
                theirs.published.unix_timestamp_nanos()
            );
            seen.push(ours.meta.seq);
        }
    }
    assert_eq!(seen, vec![2, 3, 4, 5], "from sequence 2, in order");
}
