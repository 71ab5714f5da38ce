//! The consumer against a real DynamoDB Local server (installed by
//! `scripts/install-dynamodb-local.sh`; needs Java 17+ and npm), with real AWS SDK clients.
//! One server per test binary; every test has its own access key, so its own database.

#[path = "../support/ddb_local.rs"]
mod ddb_local;

#[path = "../support/events.rs"]
mod events;

mod common;

mod aging;
mod attribute_types;
mod end_race;
mod resume;
mod rollovers;
mod start_positions;
mod stream_changed;
mod table_resolution;
mod trimmed;
mod ttl_events;
mod view_types;
