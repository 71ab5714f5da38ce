//! The replicator and the `ddbstream` tool, one file per behaviour.
//!
//! `replica_*` and `sink_*` run the library on the simulator (fast, no server). `cli_*` run the
//! real `ddbstream` binary against DynamoDB Local (started once for this test binary by the
//! shared fixture; each test has its own namespace).

#[path = "../support/ddb_local.rs"]
mod ddb_local;
#[path = "../support/postgres.rs"]
mod postgres;

mod common;

mod cli_bad_inputs;
mod cli_completions_help;
mod cli_crash;
mod cli_exit_codes;
mod cli_http;
mod cli_otlp;
mod cli_private_files;
mod cli_readme_local;
mod cli_replicate_follow;
mod cli_replicate_once;
mod cli_replicate_postgres;
mod cli_replicate_progress;
mod cli_setup_errors;
mod cli_smaller_points;
mod cli_status;
mod cli_tail;
mod cli_tail_broken_pipe;
mod cli_tail_filters;
mod cli_tail_formats;
mod cli_tail_leases;
mod cli_tail_once;
mod cli_warnings;
mod replica_bad_tables;
mod replica_crash_resume;
mod replica_equals_scan;
mod replica_one_transaction;
mod sink_checkpoints;
mod sink_failure_file;
mod sink_open_errors;
