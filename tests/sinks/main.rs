//! Every `ReplicaSink` of the crate — the SQLite and the PostgreSQL replica — under one contract
//! suite, and the replicator over each, crashed again and again on the simulator and on
//! DynamoDB Local. PostgreSQL tests run a real server (Debian's `postgresql` package, started
//! once for this test binary on a free loopback port; see `tests/support/postgres.rs`); each
//! test takes a database of its own.

#[path = "../support/ddb_local.rs"]
mod ddb_local;
#[path = "../support/postgres.rs"]
mod postgres;
#[path = "../support/wait.rs"]
mod wait;

#[path = "../cli/common.rs"]
mod common;

mod harness;

mod backfill;
mod contract;
mod crashes;
mod pg;
