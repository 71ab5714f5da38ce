//! Invariants I1–I10 on the simulator, one file per behaviour. Time is tokio's paused clock,
//! so backoffs, idle polls, 15-minute expiry and 24-hour trimming take milliseconds.

#[path = "../support/events.rs"]
mod events;

mod common;

mod c1_caught_up;
mod d1_bisect_sink;
mod d2_record_age;
mod d3_partial_failure;
mod d4_quarantine_without_sink;
mod d5_filters;
mod d6_key_parallelism;
mod d7_batching;
mod d8_filter_criteria;
mod i10_validation;
mod i1_order_pagination;
mod i2_lineage;
mod i3_crash;
mod i4_positions;
mod i5_gaps;
mod i6_bounded;
mod i7_polite;
mod i8_supervision;
mod i9_shutdown;
mod l1_leases;
mod l2_paused_worker;
mod n1_no_quiet_loss;
mod o1_metrics;
mod o2_watchdog;
mod o3_readiness;
mod r2_adversarial;
mod randomized;
