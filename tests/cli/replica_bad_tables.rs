//! Tables the replicator refuses, before anything is written to the sink.

use dynamodb_stream::record::StreamViewType;
use dynamodb_stream::replicate::{Replicator, SqliteReplica};
use dynamodb_stream::sim::Simulator;
use dynamodb_stream::Error;

async fn refusal(sim: Simulator, table: &str) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let sink = SqliteReplica::open(dir.path().join("r.sqlite"))
        .await
        .expect("open");
    match Replicator::builder(sim.clone(), sim, table, sink.clone())
        .spawn()
        .await
    {
        Err(Error::InvalidArgument(m)) => {
            assert!(sink.items().await.is_err(), "no items table may be created");
            m
        }
        other => panic!("expected InvalidArgument, got {other:?}"),
    }
}

#[tokio::test]
async fn keys_only_and_old_image_streams_are_refused() {
    for (view, name) in [
        (StreamViewType::KeysOnly, "KEYS_ONLY"),
        (StreamViewType::OldImage, "OLD_IMAGE"),
    ] {
        let sim = Simulator::builder()
            .table_name("orders")
            .view_type(view)
            .build();
        assert_eq!(
            refusal(sim, "orders").await,
            format!("replicate needs NEW_IMAGE or NEW_AND_OLD_IMAGES, table orders streams {name}")
        );
    }
}

#[tokio::test]
async fn unknown_tables_are_refused() {
    let sim = Simulator::builder().table_name("orders").build();
    assert_eq!(refusal(sim, "nope").await, "table \"nope\" not found");
}
