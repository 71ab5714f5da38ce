//! I10 and bad input: checkpoints are keyed by stream ARN and validated on resume; corrupt or
//! foreign checkpoints, bad ARNs and unknown streams are clear errors, never a silent restart.

use dynamodb_stream::checkpoint::{
    CheckpointStore, FileCheckpointStore, MemoryCheckpointStore, ShardCheckpoint, StreamKey,
};
use dynamodb_stream::error::CheckpointErrorKind;
use dynamodb_stream::sim::Simulator;
use dynamodb_stream::{Consumer, Error};

use crate::common::{start_err, Log};

#[tokio::test]
async fn a_corrupt_checkpoint_file_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("orders.checkpoints.json");
    std::fs::write(&path, b"{\"version\": 1, \"streams\": [").expect("write");
    let sim = Simulator::new();
    let log = Log::new();
    let l = log.clone();
    let err = Consumer::builder(sim.clone(), sim.stream_arn())
        .handler_factory(move |s| l.handler(s))
        .checkpoints(FileCheckpointStore::new(&path))
        .spawn()
        .await
        .unwrap_err();
    match &err {
        Error::Checkpoint(e) => assert_eq!(e.kind(), CheckpointErrorKind::Corrupt),
        other => panic!("unexpected {other}"),
    }
    assert!(err.to_string().contains("orders.checkpoints.json"), "{err}");
    assert_eq!(
        std::fs::read(&path).expect("read"),
        b"{\"version\": 1, \"streams\": [",
        "the file is untouched"
    );
}

#[tokio::test(start_paused = true)]
async fn a_checkpoint_outside_its_shard_is_refused() {
    let sim = Simulator::new();
    sim.put_item(crate::common::item("a", 1)).expect("put");
    let shard = sim.open_shards()[0].clone();
    let store = MemoryCheckpointStore::new();
    let key = StreamKey {
        application: "default".into(),
        stream_arn: sim.stream_arn(),
    };
    // Below the shard's first sequence number: from another stream (an open shard's listing
    // has no end, so a number past its newest record is caught by GetShardIterator instead).
    let foreign = "000000000000000000001".parse().expect("seq");
    store
        .save(
            &key,
            1,
            vec![(
                shard.clone(),
                ShardCheckpoint::Processed {
                    sequence_number: foreign,
                },
            )],
        )
        .await
        .expect("save");
    let log = Log::new();
    let (err, _) = start_err(&sim, &log, &store, |_| {}).await;
    match &err {
        Error::Checkpoint(e) => assert_eq!(e.kind(), CheckpointErrorKind::Mismatch),
        other => panic!("unexpected {other}"),
    }
    assert!(err.to_string().contains(&shard), "{err}");
    assert_eq!(log.len(), 0);
}

#[tokio::test]
async fn bad_arguments_are_named() {
    let sim = Simulator::new();
    let err = Consumer::builder(sim.clone(), "orders")
        .handler_fn(|_| async { Ok(()) })
        .spawn()
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::InvalidArgument(_)) && err.to_string().contains("\"orders\""),
        "{err}"
    );
    let err = Consumer::builder(sim.clone(), sim.stream_arn())
        .spawn()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no handler"), "{err}");
    let err = Consumer::builder(sim.clone(), sim.stream_arn())
        .handler_fn(|_| async { Ok(()) })
        .configure(|c| c.max_records_per_call = 5000)
        .spawn()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("max_records_per_call"), "{err}");
}

#[tokio::test(start_paused = true)]
async fn an_unknown_stream_stops_with_a_clear_error() {
    let sim = Simulator::new();
    let arn = "arn:aws:dynamodb:us-east-1:000000000000:table/nope/stream/2020";
    let err = Consumer::builder(sim, arn)
        .handler_fn(|_| async { Ok(()) })
        .spawn()
        .await
        .expect_err("an unknown stream cannot start");
    assert!(
        matches!(err, Error::InvalidArgument(_)) && err.to_string().contains("not found"),
        "{err}"
    );
}
