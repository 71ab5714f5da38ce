//! D7: batching. `batching(250, 2 s)` gathers records trickling in over many small GetRecords
//! pages into fewer, larger handler calls — up to 250 records, spanning pages, handed over when
//! full or when the window expires, also under the default configuration where the pages of a
//! trickle are far smaller than `max_records_per_call`. With a zero window every page is handed
//! over at once: a call never holds more than one page.

use std::time::Duration;

use dynamodb_stream::checkpoint::MemoryCheckpointStore;
use dynamodb_stream::sim::Simulator;
use dynamodb_stream::{Consumer, ConsumerConfig, SequenceNumber};

use crate::common::{check_deliveries, periodic_check, Call, Events, Log, Pages, Written};

/// How many pages a call's records came from.
fn pages_spanned(pages: &Pages, call: &Call) -> usize {
    let mut p: Vec<usize> = call
        .records
        .iter()
        .map(|r| {
            pages
                .page_of(&r.sequence_number)
                .expect("read in some page")
        })
        .collect();
    p.dedup();
    p.len()
}

/// One shard; GetRecords pages of at most `page_limit`; `per_tick` records written every 100 ms
/// for `ticks` ticks while the consumer runs. Returns the calls and the pages.
async fn trickle(
    page_limit: u32,
    per_tick: u64,
    ticks: u64,
    batch_size: usize,
    window: Duration,
    configure: impl FnOnce(&mut ConsumerConfig),
) -> (Vec<Call>, Pages) {
    let sim = Simulator::builder()
        .initial_shards(1)
        .records_page_limit(page_limit)
        .seed(109)
        .build();
    let pages = Pages::new(sim.clone());
    let log = Log::new();
    let l = log.clone();
    let builder = Consumer::builder(pages.clone(), sim.stream_arn())
        .handler_factory(move |s| l.handler(s))
        .checkpoints(MemoryCheckpointStore::new())
        .batching(batch_size, window)
        .configure(configure);
    let _events = Events::collect(builder.events());
    let consumer = builder.spawn().await.expect("spawn");
    let mut written = Written::default();
    for tick in 0..ticks {
        for i in 0..per_tick {
            written.put(&sim, &format!("k{}", (tick * per_tick + i) % 97));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    periodic_check(
        || log.len() as u64 >= written.total(),
        Duration::from_secs(120),
        "every record handled",
    )
    .await;
    consumer.shutdown().await.expect("shutdown");
    // Whatever the batching, each record once, in order.
    check_deliveries(&written, &log.snapshot(), true);
    let delivered: Vec<SequenceNumber> = log
        .snapshot()
        .into_iter()
        .map(|d| d.sequence_number)
        .collect();
    let read: Vec<SequenceNumber> = pages.pages().concat();
    assert_eq!(delivered, read);
    (log.calls(), pages)
}

#[tokio::test(start_paused = true)]
async fn full_batches_span_pages() {
    // 150 records/s written, read in pages of 20 up to 20 times a second: a batch of 250 fills
    // (13 pages) well within the 2 s window.
    let (calls, pages) = trickle(20, 15, 40, 250, Duration::from_secs(2), |c| {
        c.max_records_per_call = 20;
        c.min_poll_interval = Duration::from_millis(50);
    })
    .await;
    let sizes: Vec<usize> = calls.iter().map(|c| c.records.len()).collect();
    assert!(sizes.iter().all(|n| *n <= 250), "{sizes:?}");
    let full: Vec<&Call> = calls.iter().filter(|c| c.records.len() == 250).collect();
    assert!(!full.is_empty(), "{sizes:?}");
    for c in full {
        assert!(
            pages_spanned(&pages, c) >= 13,
            "250 records span 13 pages of 20"
        );
    }
    assert!(
        calls.len() * 4 <= pages.pages().len(),
        "{} calls for {} pages",
        calls.len(),
        pages.pages().len()
    );
}

#[tokio::test(start_paused = true)]
async fn the_window_hands_over_what_it_gathered() {
    // Read at 5 pages of 20 a second (catch-up slowed to the polite pace): 250 records take
    // longer than the 2 s window, which hands over about 200 at a time.
    let (calls, pages) = trickle(20, 15, 40, 250, Duration::from_secs(2), |c| {
        c.max_records_per_call = 20;
        c.catch_up_poll_interval = c.min_poll_interval;
    })
    .await;
    let sizes: Vec<usize> = calls.iter().map(|c| c.records.len()).collect();
    let last = calls.len() - 1;
    assert!(calls.len() >= 3, "{sizes:?}");
    for (i, c) in calls.iter().enumerate().take(last) {
        let n = c.records.len();
        assert!((150..250).contains(&n), "call {i}: {sizes:?}");
        assert!(pages_spanned(&pages, c) >= 8, "call {i}");
    }
    for w in calls[..last].windows(2) {
        let gap = w[1].at - w[0].at;
        assert!(
            gap >= Duration::from_millis(1900) && gap <= Duration::from_millis(2500),
            "{gap:?}"
        );
    }
    assert!(calls.len() * 5 <= pages.pages().len());
}

#[tokio::test(start_paused = true)]
async fn without_a_window_each_call_holds_one_page() {
    let (calls, pages) = trickle(20, 15, 40, 250, Duration::ZERO, |_| {}).await;
    assert_eq!(calls.len(), pages.pages().len());
    for (c, p) in calls.iter().zip(pages.pages()) {
        assert_eq!(c.sequence_numbers(), p, "one call per page, the whole page");
    }
}

/// Records trickle in (5 every 100 ms, so each 200 ms poll returns a page of about 10) under the
/// default configuration: the 2 s window gathers about 100 records per call, from about ten
/// small pages. (The in-flight bound once counted pages as if each were full, so a window handed
/// over every two pages, ~20 records every ~400 ms.)
#[tokio::test(start_paused = true)]
async fn a_window_gathers_a_trickle_under_the_default_configuration() {
    let (calls, pages) = trickle(1000, 5, 60, 250, Duration::from_secs(2), |_| {}).await;
    let sizes: Vec<usize> = calls.iter().map(|c| c.records.len()).collect();
    let spans: Vec<usize> = calls.iter().map(|c| pages_spanned(&pages, c)).collect();
    let why = format!(
        "{} calls for {} pages: sizes {sizes:?}, pages spanned {spans:?}",
        calls.len(),
        pages.pages().len()
    );
    assert!(calls.len() <= 5, "{why}");
    let last = calls.len() - 1;
    for (n, span) in sizes.iter().zip(&spans).take(last) {
        assert!(*n >= 80 && *span >= 8, "{why}");
    }
}
