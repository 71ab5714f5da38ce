//! The first call of every command, which proves the set-up works: a configuration error ends
//! the command at once; a transient failure (a refused connection, a timeout, throttling) is
//! retried — one warning line, repeats folded — for [`START_BUDGET`], then ends it too.
//!
//! Why: the consumer retries transient failures forever, which is right once it has run (an
//! outage passes) but wrong for a tool that never reached its endpoint: `tail --stream-arn`
//! against an endpoint that accepts connections and never answers used to retry for ever,
//! printing a dump every 30 s.

use std::future::Future;
use std::time::{Duration, Instant};

use aws_config::SdkConfig;

use crate::fail::{explain, one_line, retry_at_start, sentence_for_cause, Failure, Setup, Signal};
use crate::output::Log;
use crate::Stop;

/// How long a command keeps retrying transient failures before it has ever reached the
/// service. A call that gets no answer takes the SDK's whole operation timeout (30 s,
/// `recommended_timeouts`), so such an endpoint fails after one call, like a refused one after
/// 30 s of retries.
pub(crate) const START_BUDGET: Duration = Duration::from_secs(30);

/// Run `call` until it succeeds, fails for good, [`START_BUDGET`] is spent, or a signal comes
/// (`Ok(Err(signal))`). `operation` names the call in warnings (`DescribeStream`).
pub(crate) async fn first_call<T, F, Fut>(
    operation: &str,
    setup: &Setup,
    stop: &mut Stop,
    mut call: F,
) -> Result<Result<T, Signal>, Failure>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = dynamodb_stream::Result<T>>,
{
    let started = Instant::now();
    let mut attempt: u32 = 0;
    loop {
        let result = tokio::select! {
            r = call() => r,
            signal = stop.as_mut() => return Ok(Err(stopped_before_start(signal))),
        };
        let error = match result {
            Ok(value) => return Ok(Ok(value)),
            Err(e) => e,
        };
        if !retry_at_start(&error) || started.elapsed() >= START_BUDGET {
            let mut failure = explain(error, setup);
            if attempt > 0 {
                failure.message = format!(
                    "{} (gave up after {} s of retries)",
                    failure.message,
                    started.elapsed().as_secs()
                );
            }
            return Err(failure);
        }
        let wait = Duration::from_millis(500 << attempt.min(2));
        let what = match sentence_for_cause(&error, setup) {
            Some((_, text)) => text,
            None => one_line(&error.to_string()),
        };
        // The same shape as the library's retry warnings, so they fold and read alike.
        let key = format!("start {operation} {what}");
        Log::get().warn(
            &key,
            &format!("ddbstream: WARN {operation} failed; retrying error={what} retry_in={wait:?}"),
        );
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            signal = stop.as_mut() => return Ok(Err(stopped_before_start(signal))),
        }
        attempt += 1;
    }
}

fn stopped_before_start(signal: Signal) -> Signal {
    Log::get().info("ddbstream: stopped before the stream was read");
    signal
}

/// The configuration for first calls: without the SDK's own retries, so [`first_call`] alone
/// decides when to try again (a refused connection is then retried every second or two, with
/// one warning, instead of in bursts hidden inside each call).
pub(crate) fn without_retries(aws: &SdkConfig) -> SdkConfig {
    aws.to_builder()
        .retry_config(aws_config::retry::RetryConfig::disabled())
        .build()
}
