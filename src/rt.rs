//! The runtime seam: every task, timer and clock the crate uses comes from here.
//!
//! Natively these are tokio's own items, re-exported unchanged, so `tokio::time::pause()` drives
//! every backoff, poll interval and expiry exactly as before. In the browser
//! (`wasm32-unknown-unknown`) there is no tokio runtime and `std::time::{Instant, SystemTime}::now`
//! panic, so tasks and timers run on the JavaScript event loop through `tokio_with_wasm` (what
//! ractor itself uses there, through `ractor::concurrency`, whose timers are `Send`) and clocks come
//! from `web-time` (`performance.now()` and `Date`).

#[cfg(not(all(target_arch = "wasm32", target_os = "unknown")))]
mod imp {
    use std::time::SystemTime;

    pub(crate) use tokio::task::{spawn, JoinHandle, JoinSet};
    pub(crate) use tokio::time::{sleep, sleep_until, timeout, Instant};

    /// The wall clock.
    pub(crate) fn system_now() -> SystemTime {
        SystemTime::now()
    }
}

#[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
mod imp {
    use std::time::{SystemTime, UNIX_EPOCH};

    // ractor's browser primitives (over tokio_with_wasm) return `Send` futures, as the actors
    // need; tokio_with_wasm's own timers are `!Send`.
    pub(crate) use ractor::concurrency::{sleep, spawn, Instant, JoinHandle, JoinSet};

    /// The time ran out (what `tokio::time::error::Elapsed` says natively).
    #[derive(Debug)]
    pub(crate) struct Elapsed;

    /// Runs `future` for at most `duration` (ractor's `timeout` wants a `Send` future; the
    /// handler futures are `Send` only when the handler is).
    pub(crate) async fn timeout<F: std::future::Future>(
        duration: std::time::Duration,
        future: F,
    ) -> Result<F::Output, Elapsed> {
        use futures_util::future::{select, Either};
        let future = std::pin::pin!(future);
        let sleep = std::pin::pin!(sleep(duration));
        match select(future, sleep).await {
            Either::Left((output, _)) => Ok(output),
            Either::Right(_) => Err(Elapsed),
        }
    }

    /// Sleeps until `deadline` (`tokio_with_wasm` has no `sleep_until`).
    pub(crate) async fn sleep_until(deadline: Instant) {
        sleep(deadline.saturating_duration_since(Instant::now())).await
    }

    /// The wall clock, from JavaScript's `Date.now()` (`std`'s panics in the browser).
    pub(crate) fn system_now() -> SystemTime {
        let since_epoch = web_time::SystemTime::now()
            .duration_since(web_time::UNIX_EPOCH)
            .unwrap_or_default();
        UNIX_EPOCH + since_epoch
    }
}

pub(crate) use imp::*;
