//! `ddbstream replicate` without `--once` follows the table after catching up, and SIGTERM
//! stops it gracefully (exit 0).

use std::process::Stdio;
use std::time::Duration;

use aws_sdk_dynamodb::types::StreamViewType;

use crate::common::{
    ddbstream, item, keys, put, put_many, read_replica, wait_until, Lines, Running,
};
use crate::ddb_local::{clients, create_table};

const WAIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicate_follows_the_table_until_sigterm() {
    let c = clients("cli_replicate_follow");
    create_table(&c, "orders", StreamViewType::NewImage).await;
    let initial: Vec<_> = (0..50).map(|id| item(id, 1)).collect();
    put_many(&c, "orders", &initial).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("orders.sqlite");

    let mut cmd = ddbstream(&c);
    cmd.args(["replicate", "--table", "orders", "--db"])
        .arg(&db)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut running = Running::spawn(cmd);
    let log = Lines::new(running.child.stderr.take().expect("stderr"));
    let mut seen = Vec::new();
    while !seen.iter().any(|l: &String| l.contains("caught up")) {
        seen.push(log.next(WAIT).await);
    }
    assert_eq!(read_replica(&db).len(), 50);

    // It keeps following.
    put(&c, "orders", &item(7, 2)).await;
    put(&c, "orders", &item(99, 1)).await;
    let key = |id| dynamodb_stream::record::item_key_string(&keys(id));
    wait_until("the new writes reach the replica", WAIT, || {
        let replica = read_replica(&db);
        let ok = replica.get(&key(7)) == Some(&item(7, 2)) && replica.contains_key(&key(99));
        async move { ok }
    })
    .await;

    running.terminate();
    let status = running.wait(WAIT).await;
    seen.extend(log.until_end(WAIT).await);
    assert!(
        status.success(),
        "exit {status:?}; stderr:\n{}",
        seen.join("\n")
    );
    assert!(
        seen.iter().any(|l| l.contains("ddbstream: stopped")),
        "{}",
        seen.join("\n")
    );
}
