//! Runs the user's [`Handler`](crate::Handler) for one shard, one call at a time.
//!
//! Batches arrive in order (one mailbox, one sender); acknowledgements go back to the shard
//! worker in the same order. After a failure nothing more is handled: a later batch must never
//! be acknowledged past an unacknowledged one (I3).

use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tracing::Instrument;

use super::worker::WorkerMsg;
use crate::handler::{Batch, DynHandler, ShardInfo};
use crate::record::SequenceNumber;

pub(crate) struct HandlerActor;

pub(crate) struct HandlerArgs {
    pub(crate) handler: Box<dyn DynHandler>,
    pub(crate) shard: Arc<ShardInfo>,
    pub(crate) worker: ActorRef<WorkerMsg>,
    pub(crate) timeout: Duration,
}

pub(crate) enum HandlerMsg {
    Start(RpcReplyPort<Result<(), String>>),
    /// Records to hand over (`None` when every record of the page was skipped), acknowledged
    /// through `through`.
    Deliver {
        batch: Option<Batch>,
        through: SequenceNumber,
    },
    End(RpcReplyPort<Result<(), String>>),
    Shutdown(RpcReplyPort<()>),
}

pub(crate) struct HandlerState {
    handler: Box<dyn DynHandler>,
    shard: Arc<ShardInfo>,
    worker: ActorRef<WorkerMsg>,
    timeout: Duration,
    failed: bool,
}

impl Actor for HandlerActor {
    type Msg = HandlerMsg;
    type State = HandlerState;
    type Arguments = HandlerArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: HandlerArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(HandlerState {
            handler: args.handler,
            shard: args.shard,
            worker: args.worker,
            timeout: args.timeout,
            failed: false,
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let timeout = state.timeout;
        match msg {
            HandlerMsg::Start(reply) => {
                let r =
                    match tokio::time::timeout(timeout, state.handler.on_shard_start(&state.shard))
                        .await
                    {
                        Ok(Ok(())) => Ok(()),
                        Ok(Err(e)) => Err(format!("on_shard_start failed: {e}")),
                        Err(_) => Err(format!("on_shard_start did not return within {timeout:?}")),
                    };
                state.failed = r.is_err();
                let _ = reply.send(r);
            }
            HandlerMsg::Deliver { batch, through } => {
                if state.failed {
                    return Ok(());
                }
                if let Some(batch) = batch {
                    let span = tracing::debug_span!(
                        "handle",
                        stream = %state.shard.stream_arn,
                        shard = %state.shard.shard_id,
                        sequence_number = %through,
                        records = batch.len()
                    );
                    let result = tokio::time::timeout(timeout, state.handler.handle(batch))
                        .instrument(span)
                        .await;
                    let failure = match result {
                        Ok(Ok(())) => None,
                        Ok(Err(e)) => Some(format!("handler failed: {e}")),
                        Err(_) => Some(format!("handler did not return within {timeout:?}")),
                    };
                    if let Some(f) = failure {
                        state.failed = true;
                        let _ = state.worker.cast(WorkerMsg::HandlerFailed(f));
                        return Ok(());
                    }
                }
                let _ = state.worker.cast(WorkerMsg::Acked { through });
            }
            HandlerMsg::End(reply) => {
                let r =
                    match tokio::time::timeout(timeout, state.handler.on_shard_end(&state.shard))
                        .await
                    {
                        Ok(Ok(())) => Ok(()),
                        Ok(Err(e)) => Err(format!("on_shard_end failed: {e}")),
                        Err(_) => Err(format!("on_shard_end did not return within {timeout:?}")),
                    };
                let _ = reply.send(r);
            }
            HandlerMsg::Shutdown(reply) => {
                if tokio::time::timeout(timeout, state.handler.on_shutdown(&state.shard))
                    .await
                    .is_err()
                {
                    tracing::warn!(shard = %state.shard.shard_id, "on_shutdown did not return within {timeout:?}");
                }
                let _ = reply.send(());
            }
        }
        Ok(())
    }
}
