//! Issue 17, point 4: what `ddbstream` writes holds whole items or names streams, so it is
//! created 0600 — the SQLite replica and its `-wal` and `-shm` files, `tail`'s checkpoint file —
//! and an output that cannot be written is refused with one sentence before any record is read.

use std::os::unix::fs::PermissionsExt;
use std::process::Stdio;
use std::time::Duration;

use aws_sdk_dynamodb::types::StreamViewType;

use crate::common::{assert_one_line_error, ddbstream, item, put, run_cli, stderr, Lines, Running};
use crate::ddb_local::{clients, create_table};

const WAIT: Duration = Duration::from_secs(90);

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_wal_and_checkpoint_files_are_private() {
    let c = clients("cli_private_files");
    create_table(&c, "orders", StreamViewType::NewAndOldImages).await;
    for id in 0..5 {
        put(&c, "orders", &item(id, 1)).await;
    }
    let dir = tempfile::tempdir().expect("tempdir");

    // The replica, while a follower has it open (WAL mode: -wal and -shm exist).
    let db = dir.path().join("orders.sqlite");
    let mut cmd = ddbstream(&c);
    cmd.args(["replicate", "--table", "orders", "--db"])
        .arg(&db)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut follower = Running::spawn(cmd);
    let log = Lines::new(follower.child.stderr.take().expect("stderr"));
    loop {
        if log.next(WAIT).await.contains("caught up") {
            break;
        }
    }
    for suffix in ["", "-wal", "-shm"] {
        let mut path = db.clone().into_os_string();
        path.push(suffix);
        let path = std::path::PathBuf::from(path);
        assert_eq!(mode(&path), 0o600, "{}", path.display());
    }
    follower.terminate();
    assert!(follower.wait(WAIT).await.success());

    // tail's checkpoint file.
    let checkpoint = dir.path().join("tail.json");
    let out = run_cli(
        &c,
        &[
            &crate::common::TAIL_ORDERS_ONCE[..],
            &["--checkpoint", checkpoint.to_str().expect("utf-8")],
        ]
        .concat(),
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(mode(&checkpoint), 0o600);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unwritable_outputs_are_refused_before_anything_is_read() {
    let c = clients("cli_unwritable");
    create_table(&c, "orders", StreamViewType::NewAndOldImages).await;
    put(&c, "orders", &item(1, 1)).await;
    let dir = tempfile::tempdir().expect("tempdir");
    // A regular file where a directory should be: no one can create files "in" it, root included.
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"not a directory").expect("write");

    for checkpoint in [
        file.join("tail.json"),
        dir.path().join("missing").join("tail.json"),
        dir.path().to_path_buf(),
    ] {
        let out = run_cli(
            &c,
            &[
                &crate::common::TAIL_ORDERS_ONCE[..],
                &["--checkpoint", checkpoint.to_str().expect("utf-8")],
            ]
            .concat(),
        )
        .await;
        assert_one_line_error(&out, "cannot keep positions in --checkpoint");
        assert_one_line_error(&out, "choose a file in a writable directory");
        assert!(
            out.stdout.is_empty(),
            "a record was printed: {:?}",
            out.stdout
        );
    }

    for db in [
        file.join("r.sqlite"),
        dir.path().join("missing").join("r.sqlite"),
    ] {
        let out = run_cli(
            &c,
            &[
                "replicate",
                "--table",
                "orders",
                "--db",
                db.to_str().expect("utf-8"),
                "--once",
            ],
        )
        .await;
        assert_one_line_error(&out, "cannot write the replica");
        assert!(!db.exists());
    }
    // Nothing was left behind by the checks.
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .expect("list")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(left, [std::ffi::OsString::from("a-file")]);
}
