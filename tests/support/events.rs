//! Consumer events collected in the background, for the test suites that assert on them
//! (included with `#[path]` by each test binary that needs it).

use std::sync::{Arc, Mutex};

use dynamodb_stream::ConsumerEvent;
use tokio::sync::broadcast;

/// Every event a consumer published, in order.
#[derive(Clone, Default)]
pub struct Events(Arc<Mutex<Vec<ConsumerEvent>>>);

impl Events {
    /// Start collecting from `rx` (taken before the consumer started, so nothing is missed). A
    /// receiver that lagged would hide events: that fails the test.
    pub fn collect(mut rx: broadcast::Receiver<ConsumerEvent>) -> Self {
        let events = Events::default();
        let out = events.0.clone();
        tokio::spawn(async move {
            loop {
                match rx.recv().await {
                    Ok(e) => out.lock().unwrap().push(e),
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        panic!("event receiver lagged by {n}")
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        events
    }

    pub fn count(&self, pred: impl Fn(&ConsumerEvent) -> bool) -> usize {
        self.0.lock().unwrap().iter().filter(|e| pred(e)).count()
    }

    pub fn all(&self) -> Vec<ConsumerEvent> {
        self.0.lock().unwrap().clone()
    }
}
