use std::sync::Arc;

use super::DeliveryFailure;
use crate::error::BoxError;
use crate::source::BoxFuture;

/// Where records go that the handler could not process, so the shard can move on.
///
/// Contract: `send` returns `Ok` only once the failure is stored durably; the checkpoint then
/// moves past the records. An `Err` is retried with backoff; the shard does not move on until
/// the sink accepted them.
pub trait FailureSink: Send + Sync + 'static {
    /// Store one failure.
    fn send(&self, failure: DeliveryFailure) -> BoxFuture<'_, Result<(), BoxError>>;
}

impl<T: FailureSink + ?Sized> FailureSink for Arc<T> {
    fn send(&self, failure: DeliveryFailure) -> BoxFuture<'_, Result<(), BoxError>> {
        (**self).send(failure)
    }
}
