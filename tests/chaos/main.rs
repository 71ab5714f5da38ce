//! Chaos on the real server: the consumer against DynamoDB Local through a fault-injecting HTTP
//! proxy (throttling, 5xx, hung calls, resets, truncated answers), through stream lifecycle
//! changes (disable, re-enable, delete), `ddbstream tail` under rollovers and SIGKILL, and
//! `ddbstream tail` in a private network namespace under iptables drops, rejects and loss.
//!
//! Durations scale with `DDBSTREAM_CHAOS_SECS` (default 10; see docs/reliability.md for the long
//! settings); `DDBSTREAM_CHAOS_SEED` replays a run's random choices.

#[path = "../support/ddb_local.rs"]
mod ddb_local;
#[path = "../support/netns.rs"]
mod netns;

#[path = "../support/events.rs"]
mod events;

mod common;
mod fault_proxy;
mod tcp_relay;

mod hangs;
mod lifecycle;
mod net_faults;
mod proxy_faults;
mod soak;
mod storm;
