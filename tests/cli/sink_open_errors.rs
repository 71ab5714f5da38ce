//! Files the SQLite replica refuses to open or bind, leaving them byte for byte as they were.

use dynamodb_stream::record::StreamViewType;
use dynamodb_stream::replicate::{
    KeyAttribute, KeyRole, ReplicaSink, ScalarType, SqliteReplica, TableInfo,
};
use dynamodb_stream::Error;

fn table(name: &str, stream: &str) -> TableInfo {
    TableInfo {
        table_name: name.into(),
        stream_arn: format!("arn:aws:dynamodb:us-east-1:000000000000:table/{name}/stream/{stream}"),
        view_type: Some(StreamViewType::NewImage),
        key_schema: vec![KeyAttribute {
            name: "pk".into(),
            role: KeyRole::Partition,
            scalar_type: Some(ScalarType::S),
        }],
        item_count: None,
    }
}

fn message(r: dynamodb_stream::Result<impl std::fmt::Debug>) -> String {
    match r {
        Err(Error::InvalidArgument(m)) => m,
        other => panic!("expected InvalidArgument, got {other:?}"),
    }
}

#[tokio::test]
async fn unreadable_and_foreign_files_are_left_alone() {
    let dir = tempfile::tempdir().expect("tempdir");

    let garbage = dir.path().join("garbage.sqlite");
    let bytes: Vec<u8> = (0..8192u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(&garbage, &bytes).expect("write");
    let m = message(SqliteReplica::open(&garbage).await);
    assert!(m.contains("is not a readable SQLite database"), "{m}");
    assert_eq!(std::fs::read(&garbage).expect("read"), bytes);

    let foreign = dir.path().join("foreign.sqlite");
    {
        let conn = rusqlite::Connection::open(&foreign).expect("create");
        conn.execute_batch("CREATE TABLE notes (body TEXT); INSERT INTO notes VALUES ('keep me');")
            .expect("fill");
    }
    let before = std::fs::read(&foreign).expect("read");
    let m = message(SqliteReplica::open(&foreign).await);
    assert!(m.contains("another application"), "{m}");
    assert_eq!(std::fs::read(&foreign).expect("read"), before);
}

#[tokio::test]
async fn a_replica_of_another_table_or_stream_is_left_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("r.sqlite");
    {
        let sink = SqliteReplica::open(&path).await.expect("open");
        sink.bind(&table("orders", "2024-01-01T00:00:00.000"))
            .await
            .expect("bind");
    }
    let before = std::fs::read(&path).expect("read");
    for (other, expected) in [
        (
            table("users", "2024-01-01T00:00:00.000"),
            "is a replica of table \"orders\", not \"users\"",
        ),
        (
            table("orders", "2025-01-01T00:00:00.000"),
            "but the table now streams",
        ),
    ] {
        let sink = SqliteReplica::open(&path).await.expect("open");
        let m = message(sink.bind(&other).await);
        assert!(m.contains(expected), "{m}");
        drop(sink);
        assert_eq!(
            std::fs::read(&path).expect("read"),
            before,
            "the file changed"
        );
    }
    // The right table still binds.
    let sink = SqliteReplica::open(&path).await.expect("open");
    sink.bind(&table("orders", "2024-01-01T00:00:00.000"))
        .await
        .expect("bind");
}
