//! A byte-for-byte TCP relay: accepts on a listener (in `net_faults.rs`, one bound inside a
//! private network namespace) and pipes each connection to an upstream address (DynamoDB
//! Local on this process's loopback). It understands nothing of HTTP, so what iptables does to
//! the accepted connections reaches the client as it would from a broken network.
//!
//! Bounded: a connection lives at most [`MAX_LIFE`] (a half-dead one, whose peer vanished
//! behind a DROP rule, would otherwise wait for ever); dropping the relay aborts the accept
//! loop and every connection.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

/// How long one relayed connection may live.
const MAX_LIFE: Duration = Duration::from_secs(600);
/// How long connecting upstream may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

pub struct TcpRelay {
    port: u16,
    accepted: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl TcpRelay {
    /// Relay connections accepted on `listener` to `upstream` (`host:port`). Call from a tokio
    /// runtime.
    pub fn start(listener: std::net::TcpListener, upstream: String) -> Self {
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let port = listener.local_addr().expect("listener address").port();
        let listener = TcpListener::from_std(listener).expect("tokio listener");
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        let task = tokio::spawn(async move {
            // Dropped (so every connection aborted) when this task is aborted.
            let mut connections = JoinSet::new();
            loop {
                tokio::select! {
                    r = listener.accept() => {
                        let Ok((downstream, _)) = r else { continue };
                        count.fetch_add(1, Ordering::SeqCst);
                        connections.spawn(pipe(downstream, upstream.clone()));
                    }
                    Some(_) = connections.join_next(), if !connections.is_empty() => {}
                }
            }
        });
        Self {
            port,
            accepted,
            task,
        }
    }

    /// The port it listens on (on the listener's loopback address).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for TcpRelay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn pipe(mut downstream: TcpStream, upstream: String) {
    let Ok(Ok(mut up)) = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&upstream)).await
    else {
        return;
    };
    let _ = downstream.set_nodelay(true);
    let _ = up.set_nodelay(true);
    // Ends at end of stream both ways, on the first error (a reset), or at MAX_LIFE.
    let _ = tokio::time::timeout(
        MAX_LIFE,
        tokio::io::copy_bidirectional(&mut downstream, &mut up),
    )
    .await;
}
