//! Racing takers: ten tasks take one lease at once with the same expected counter; exactly one
//! wins, the others get `Conflict`. Repeated over several rounds, each a steal from the previous
//! winner.

use std::sync::Arc;

use dynamodb_stream::lease::{LeaseErrorKind, LeaseStore};
use tokio::sync::Barrier;

use crate::common::{key, now_ms, one_lease, the_lease, SHARD};

both_stores!(exactly_one_of_ten_racing_takers_wins);

const TAKERS: usize = 10;
const ROUNDS: u64 = 5;

async fn exactly_one_of_ten_racing_takers_wins(store: impl LeaseStore) {
    let store = Arc::new(store);
    one_lease(&store).await;
    for round in 0..ROUNDS {
        let expected = round;
        let barrier = Arc::new(Barrier::new(TAKERS));
        let tasks: Vec<_> = (0..TAKERS)
            .map(|i| {
                let store = store.clone();
                let barrier = barrier.clone();
                tokio::spawn(async move {
                    let owner = format!("r{round}w{i}");
                    barrier.wait().await;
                    let result = store
                        .take(&key(), SHARD, expected, &owner, now_ms() + 60_000)
                        .await;
                    (owner, result)
                })
            })
            .collect();
        let mut winners = Vec::new();
        for task in tasks {
            let (owner, result) = task.await.expect("taker task");
            match result {
                Ok(lease) => winners.push((owner, lease)),
                Err(e) => assert_eq!(e.kind(), LeaseErrorKind::Conflict, "{owner}: {e}"),
            }
        }
        assert_eq!(winners.len(), 1, "round {round}: winners {winners:?}");
        let (owner, lease) = &winners[0];
        assert_eq!(lease.owner.as_deref(), Some(owner.as_str()));
        assert_eq!(lease.counter, expected + 1);
        assert_eq!(
            &the_lease(&store).await,
            lease,
            "the winner's take is stored"
        );
    }
}
