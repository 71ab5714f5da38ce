//! Waiting for a condition in tests, on tokio's clock (so paused time makes waits instant):
//! shared by the test binaries instead of a copy in each.

#![allow(dead_code)]

use std::future::Future;
use std::time::Duration;

/// Wait until `cond` holds, checking every 50 ms of (possibly paused) tokio time; panics with
/// `what` after `timeout`.
pub async fn periodic_check<F: FnMut() -> bool>(mut cond: F, timeout: Duration, what: &str) {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if cond() {
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Same, for an async condition.
pub async fn periodic_check_async<F, Fut>(mut cond: F, timeout: Duration, what: &str)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if cond().await {
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
