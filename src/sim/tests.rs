//! Tests of the simulator's DynamoDB Streams semantics.

use std::collections::HashSet;
use std::time::{Duration, UNIX_EPOCH};

use super::*;
use crate::error::SourceErrorKind;
use crate::record::{AttributeValue, RecordKind, SequenceNumber, StreamViewType};
use crate::source::{DescribeStreamRequest, IteratorPosition, Shard, StreamStatus, StreamsApi};

const MIN: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);

fn keys(pk: &str) -> Item {
    let mut item = Item::default();
    item.insert("pk".into(), AttributeValue::S(pk.into()));
    item
}

fn item(pk: &str, v: i64) -> Item {
    let mut item = keys(pk);
    item.insert("v".into(), AttributeValue::N(v.to_string()));
    item
}

fn seq(s: &str) -> SequenceNumber {
    s.parse().expect("valid sequence number")
}

fn describe_request(sim: &Simulator) -> DescribeStreamRequest {
    DescribeStreamRequest {
        stream_arn: sim.stream_arn(),
        ..Default::default()
    }
}

/// Every visible shard, following pages; also returns the page sizes.
async fn describe_all(sim: &Simulator, limit: Option<u32>) -> (Vec<Shard>, Vec<usize>) {
    let mut request = DescribeStreamRequest {
        limit,
        ..describe_request(sim)
    };
    let (mut shards, mut pages) = (Vec::new(), Vec::new());
    loop {
        let page = sim
            .describe_stream(request.clone())
            .await
            .expect("describe");
        pages.push(page.shards.len());
        shards.extend(page.shards);
        match page.last_evaluated_shard_id {
            Some(last) => request.exclusive_start_shard_id = Some(last),
            None => return (shards, pages),
        }
    }
}

async fn iterator(sim: &Simulator, shard_id: &str, position: IteratorPosition) -> String {
    sim.get_shard_iterator(sim.stream_arn(), shard_id.to_owned(), position)
        .await
        .expect("iterator")
}

/// Reads a shard from `position` until it ends, or until an empty page on an open shard.
/// Returns the records and the number of pages.
async fn read(
    sim: &Simulator,
    shard_id: &str,
    position: IteratorPosition,
    limit: Option<u32>,
) -> (Vec<StreamRecord>, usize) {
    let mut it = Some(iterator(sim, shard_id, position).await);
    let (mut records, mut pages) = (Vec::new(), 0);
    while let Some(current) = it {
        let page = sim.get_records(current, limit).await.expect("get_records");
        pages += 1;
        let empty = page.records.is_empty();
        records.extend(page.records);
        it = page.next_shard_iterator;
        if empty && it.is_some() {
            break;
        }
    }
    (records, pages)
}

fn record_values(records: &[StreamRecord]) -> Vec<String> {
    records
        .iter()
        .map(|r| match r.keys().get("pk") {
            Some(AttributeValue::S(s)) => s.clone(),
            other => format!("{other:?}"),
        })
        .collect()
}

fn only_shard(sim: &Simulator) -> String {
    let open = sim.open_shards();
    assert_eq!(open.len(), 1);
    open[0].clone()
}

// ----- DescribeStream -----

#[tokio::test]
async fn describe_paginates_past_100_shards() {
    let sim = Simulator::builder().initial_shards(250).build();
    let (shards, pages) = describe_all(&sim, None).await;
    assert_eq!(pages, vec![100, 100, 50]);
    let ids: Vec<_> = shards.iter().map(|s| s.shard_id.clone()).collect();
    assert_eq!(
        ids.iter().collect::<HashSet<_>>().len(),
        250,
        "each id once"
    );
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(ids, sorted, "id order");
    assert_eq!(ids, sim.open_shards());

    // A request cannot exceed the cap, and a smaller limit is honoured.
    let (_, pages) = describe_all(&sim, Some(500)).await;
    assert_eq!(pages, vec![100, 100, 50]);
    let (shards, pages) = describe_all(&sim, Some(60)).await;
    assert_eq!(pages, vec![60, 60, 60, 60, 10]);
    assert_eq!(shards.len(), 250);

    // The hash space is split evenly and completely.
    let ranges: Vec<_> = ids.iter().filter_map(|id| sim.hash_range(id)).collect();
    assert_eq!(ranges[0].0, 0);
    assert_eq!(ranges[249].1, u64::MAX);
    for pair in ranges.windows(2) {
        assert_eq!(pair[0].1 + 1, pair[1].0);
    }
}

#[tokio::test]
async fn describe_page_limit_is_configurable_and_last_page_has_no_continuation() {
    let sim = Simulator::builder()
        .initial_shards(4)
        .describe_page_limit(2)
        .build();
    let first = sim
        .describe_stream(describe_request(&sim))
        .await
        .expect("ok");
    assert_eq!(first.shards.len(), 2);
    assert_eq!(
        first.last_evaluated_shard_id.as_deref(),
        Some(first.shards[1].shard_id.as_str())
    );
    let (_, pages) = describe_all(&sim, None).await;
    assert_eq!(pages, vec![2, 2], "no empty trailing page");
    assert_eq!(first.stream_status, StreamStatus::Enabled);
    assert_eq!(first.table_name.as_deref(), Some("sim-table"));
    assert_eq!(
        first.stream_view_type,
        Some(StreamViewType::NewAndOldImages)
    );
}

#[tokio::test]
async fn unknown_stream_shard_and_garbage_iterator_are_classified() {
    let sim = Simulator::new();
    let shard = only_shard(&sim);
    let err = sim
        .describe_stream(DescribeStreamRequest {
            stream_arn: "arn:aws:dynamodb:us-east-1:000000000000:table/x/stream/y".into(),
            ..Default::default()
        })
        .await
        .expect_err("unknown arn");
    assert_eq!(err.kind(), SourceErrorKind::NotFound);
    let err = sim
        .get_shard_iterator("arn:nope".into(), shard, IteratorPosition::TrimHorizon)
        .await
        .expect_err("unknown arn");
    assert_eq!(err.kind(), SourceErrorKind::NotFound);
    let err = sim
        .get_shard_iterator(
            sim.stream_arn(),
            "shardId-nope".into(),
            IteratorPosition::TrimHorizon,
        )
        .await
        .expect_err("unknown shard");
    assert_eq!(err.kind(), SourceErrorKind::NotFound);
    for garbage in ["", "garbage", &format!("{}|1|00", sim.stream_arn())] {
        let err = sim
            .get_records(garbage.to_owned(), None)
            .await
            .expect_err("garbage");
        assert_eq!(err.kind(), SourceErrorKind::Fatal, "{garbage:?}");
    }
    // An iterator of another simulator, even one with the same table and seed, is rejected.
    let other = Simulator::builder().seed(1).build();
    let it = iterator(&other, &only_shard(&other), IteratorPosition::TrimHorizon).await;
    let err = sim.get_records(it, None).await.expect_err("foreign");
    assert_eq!(err.kind(), SourceErrorKind::Fatal);
}

#[test]
fn stream_arn_names_table_and_start_time() {
    let start = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
    let sim = Simulator::builder()
        .table_name("orders")
        .start_time(start)
        .build();
    assert_eq!(
        sim.stream_arn(),
        "arn:aws:dynamodb:us-east-1:000000000000:table/orders/stream/2023-11-14T22:13:20.123"
    );
    assert_eq!(sim.table_name(), "orders");
    let id = only_shard(&sim);
    assert!(
        id.starts_with("shardId-00000001700000000123-"),
        "{id}: creation ms"
    );
    assert_eq!(id.len(), "shardId-".len() + 20 + 1 + 8);
}

// ----- topology -----

#[tokio::test]
async fn split_and_rollover_keep_lineage_and_ranges() {
    let sim = Simulator::new();
    let root = only_shard(&sim);
    let (left, right) = sim.split_shard(&root).expect("split");
    assert_eq!(sim.hash_range(&root), Some((0, u64::MAX)));
    assert_eq!(sim.hash_range(&left), Some((0, u64::MAX / 2)));
    assert_eq!(sim.hash_range(&right), Some((u64::MAX / 2 + 1, u64::MAX)));
    assert!(root < left && left < right, "ids sort in creation order");

    let rolled = sim.rollover_shard(&right).expect("rollover");
    assert_eq!(sim.hash_range(&rolled), sim.hash_range(&right));
    assert_eq!(sim.open_shards(), vec![left.clone(), rolled.clone()]);

    let shards = sim.shards();
    let by_id = |id: &str| {
        shards
            .iter()
            .find(|s| s.shard_id == id)
            .cloned()
            .expect("listed")
    };
    assert_eq!(by_id(&root).parent_shard_id, None);
    assert_eq!(by_id(&left).parent_shard_id.as_deref(), Some(root.as_str()));
    assert_eq!(
        by_id(&right).parent_shard_id.as_deref(),
        Some(root.as_str())
    );
    assert_eq!(
        by_id(&rolled).parent_shard_id.as_deref(),
        Some(right.as_str())
    );
    assert!(by_id(&root).is_closed() && by_id(&right).is_closed());
    assert!(!by_id(&left).is_closed() && !by_id(&rolled).is_closed());
    // A child's numbers all come after its parent's.
    assert!(by_id(&left).starting_sequence_number > by_id(&root).ending_sequence_number);

    assert_eq!(
        sim.split_shard(&root),
        Err(SimError::ShardClosed(root.clone()))
    );
    assert_eq!(
        sim.rollover_shard("shardId-x"),
        Err(SimError::ShardNotFound("shardId-x".into()))
    );

    let new = sim.rollover_all();
    assert_eq!(new.len(), 2);
    assert_eq!(sim.open_shards(), new);
    let (described, _) = describe_all(&sim, None).await;
    assert_eq!(described, sim.shards());
}

#[tokio::test]
async fn writes_after_a_split_land_in_the_children() {
    let sim = Simulator::new();
    let root = only_shard(&sim);
    for i in 0..20 {
        sim.put_item(item(&format!("k{i}"), 0)).expect("put");
    }
    let (left, right) = sim.split_shard(&root).expect("split");
    for i in 0..20 {
        sim.put_item(item(&format!("k{i}"), 1)).expect("put");
    }
    let (parent, _) = read(&sim, &root, IteratorPosition::TrimHorizon, None).await;
    assert_eq!(parent.len(), 20);
    assert!(parent.iter().all(|r| r.kind() == &RecordKind::Insert));
    let (l, _) = read(&sim, &left, IteratorPosition::TrimHorizon, None).await;
    let (r, _) = read(&sim, &right, IteratorPosition::TrimHorizon, None).await;
    assert_eq!(l.len() + r.len(), 20);
    assert!(!l.is_empty() && !r.is_empty(), "both halves take keys");
    assert!(l.iter().chain(&r).all(|r| r.kind() == &RecordKind::Modify));
    for rec in &l {
        assert_eq!(sim.shard_for_keys(rec.keys()), Ok(left.clone()));
    }
    for rec in &r {
        assert_eq!(sim.shard_for_keys(rec.keys()), Ok(right.clone()));
    }
    // The same key keeps going to the same child.
    let written = sim.written_records();
    assert_eq!(written.len(), 40);
    for w in &written[20..] {
        assert_eq!(
            sim.shard_for_keys(w.record.keys()).as_ref(),
            Ok(&w.shard_id)
        );
    }
}

#[tokio::test]
async fn closed_shard_ends_on_the_page_with_its_last_records() {
    let sim = Simulator::builder().initial_shards(2).build();
    let [a, b] = [sim.open_shards()[0].clone(), sim.open_shards()[1].clone()];
    let mut on_a = Vec::new();
    let mut i = 0;
    while on_a.len() < 5 {
        let k = keys(&format!("k{i}"));
        if sim.shard_for_keys(&k) == Ok(a.clone()) {
            on_a.push(format!("k{i}"));
            sim.put_item(item(&format!("k{i}"), 1)).expect("put");
        }
        i += 1;
    }
    // A later write elsewhere moves the stream's counter past a's last record.
    let mut j = 0;
    while sim.shard_for_keys(&keys(&format!("b{j}"))) != Ok(b.clone()) {
        j += 1;
    }
    sim.put_item(item(&format!("b{j}"), 1)).expect("put");
    sim.rollover_shard(&a).expect("rollover");

    let shard = sim
        .shards()
        .into_iter()
        .find(|s| s.shard_id == a)
        .expect("a");
    let ending = shard.ending_sequence_number.clone().expect("closed");
    let (records, _) = read(&sim, &a, IteratorPosition::TrimHorizon, None).await;
    let last = records.last().expect("records").sequence_number().clone();
    assert!(ending > last, "ending {ending} is not a record of a");

    // Pages of 2: 2 + 2 + 1, the last page carrying the last record and no iterator.
    let mut it = iterator(&sim, &a, IteratorPosition::TrimHorizon).await;
    let mut sizes = Vec::new();
    loop {
        let page = sim.get_records(it, Some(2)).await.expect("page");
        sizes.push(page.records.len());
        match page.next_shard_iterator {
            Some(next) => it = next,
            None => break,
        }
    }
    assert_eq!(sizes, vec![2, 2, 1]);
    assert_eq!(record_values(&records), on_a);

    // The ending number is a valid position: nothing after it, and the shard ends at once.
    for position in [
        IteratorPosition::AtSequenceNumber(ending.clone()),
        IteratorPosition::AfterSequenceNumber(ending.clone()),
        IteratorPosition::AfterSequenceNumber(last.clone()),
        IteratorPosition::Latest,
    ] {
        let it = iterator(&sim, &a, position.clone()).await;
        let page = sim.get_records(it, None).await.expect("page");
        assert!(page.records.is_empty(), "{position:?}");
        assert_eq!(page.next_shard_iterator, None, "{position:?}");
    }
}

#[tokio::test]
async fn empty_closed_shard_ends_at_once() {
    let sim = Simulator::new();
    let root = only_shard(&sim);
    let (left, _) = sim.split_shard(&root).expect("split");
    let (_, _) = sim
        .split_shard(&left)
        .expect("split again, left never written");
    let shard = sim
        .shards()
        .into_iter()
        .find(|s| s.shard_id == left)
        .expect("left");
    assert!(shard.starting_sequence_number <= shard.ending_sequence_number);
    for shard_id in [&root, &left] {
        let it = iterator(&sim, shard_id, IteratorPosition::TrimHorizon).await;
        let page = sim.get_records(it, None).await.expect("page");
        assert!(page.records.is_empty());
        assert_eq!(page.next_shard_iterator, None);
    }
    let start = shard.starting_sequence_number.expect("start");
    let it = iterator(&sim, &left, IteratorPosition::AtSequenceNumber(start)).await;
    let page = sim.get_records(it, None).await.expect("page");
    assert_eq!((page.records.len(), page.next_shard_iterator), (0, None));
}

#[tokio::test]
async fn open_shard_always_gives_a_next_iterator() {
    let sim = Simulator::new();
    let shard = only_shard(&sim);
    let mut it = iterator(&sim, &shard, IteratorPosition::TrimHorizon).await;
    for _ in 0..3 {
        let page = sim.get_records(it, None).await.expect("page");
        assert!(page.records.is_empty());
        it = page.next_shard_iterator.expect("open shard continues");
    }
    // The empty polls' iterator still sees later writes.
    sim.put_item(item("a", 1)).expect("put");
    let page = sim.get_records(it, None).await.expect("page");
    assert_eq!(record_values(&page.records), ["a"]);
    let it = page.next_shard_iterator.expect("open");
    let page = sim.get_records(it, None).await.expect("page");
    assert!(page.records.is_empty() && page.next_shard_iterator.is_some());
}

#[tokio::test]
async fn latest_sees_only_later_writes() {
    let sim = Simulator::new();
    let shard = only_shard(&sim);
    sim.put_item(item("before", 1)).expect("put");
    let it = iterator(&sim, &shard, IteratorPosition::Latest).await;
    sim.put_item(item("after", 1)).expect("put");
    let page = sim.get_records(it, None).await.expect("page");
    assert_eq!(record_values(&page.records), ["after"]);
}

#[tokio::test]
async fn at_and_after_sequence_number_position_exactly() {
    let sim = Simulator::new();
    let shard = only_shard(&sim);
    for k in ["a", "b", "c"] {
        sim.put_item(item(k, 1)).expect("put");
    }
    let (all, _) = read(&sim, &shard, IteratorPosition::TrimHorizon, None).await;
    let b = all[1].sequence_number().clone();
    let (at, _) = read(
        &sim,
        &shard,
        IteratorPosition::AtSequenceNumber(b.clone()),
        None,
    )
    .await;
    assert_eq!(record_values(&at), ["b", "c"]);
    let (after, _) = read(&sim, &shard, IteratorPosition::AfterSequenceNumber(b), None).await;
    assert_eq!(record_values(&after), ["c"]);
}

#[tokio::test]
async fn sequence_numbers_have_21_digits_and_increase_across_shards() {
    let sim = Simulator::builder().initial_shards(3).build();
    for i in 0..30 {
        sim.put_item(item(&format!("k{i}"), i)).expect("put");
    }
    let written = sim.written_records();
    for pair in written.windows(2) {
        assert!(pair[0].record.sequence_number() < pair[1].record.sequence_number());
    }
    for w in &written {
        assert_eq!(w.record.sequence_number().as_str().len(), 21);
    }
    let ids: HashSet<_> = written
        .iter()
        .map(|w| w.record.event_id().to_owned())
        .collect();
    assert_eq!(ids.len(), 30, "event ids are unique");
    assert!(
        written
            .iter()
            .map(|w| &w.shard_id)
            .collect::<HashSet<_>>()
            .len()
            > 1
    );
}

#[tokio::test]
async fn out_of_range_sequence_number_is_fatal() {
    let sim = Simulator::builder().initial_shards(2).build();
    let [a, b] = [sim.open_shards()[0].clone(), sim.open_shards()[1].clone()];
    let start_b = sim.shards()[1]
        .starting_sequence_number
        .clone()
        .expect("start");
    let (_, _) = sim.split_shard(&a).expect("split");
    let ending_a = sim.shards()[0].ending_sequence_number.clone().expect("end");
    let cases = [
        (a.clone(), seq("100000000000000000000")), // before every shard
        (a.clone(), seq("100000000000000000099")), // past a's end
        (b.clone(), seq("100000000000000000099")), // not issued yet
        (b.clone(), seq(&"9".repeat(40))),
    ];
    for (shard, number) in cases {
        for position in [
            IteratorPosition::AtSequenceNumber(number.clone()),
            IteratorPosition::AfterSequenceNumber(number.clone()),
        ] {
            let err = sim
                .get_shard_iterator(sim.stream_arn(), shard.clone(), position)
                .await
                .expect_err("out of range");
            assert_eq!(err.kind(), SourceErrorKind::Fatal);
            assert!(err.message().contains(number.as_str()), "{err}");
            assert!(err.message().contains(&shard), "{err}");
        }
    }
    // The bounds themselves are fine.
    iterator(&sim, &b, IteratorPosition::AtSequenceNumber(start_b)).await;
    iterator(&sim, &a, IteratorPosition::AfterSequenceNumber(ending_a)).await;
}

// ----- time -----

#[tokio::test(start_paused = true)]
async fn iterators_expire_after_15_minutes() {
    let sim = Simulator::new();
    let shard = only_shard(&sim);
    let it = iterator(&sim, &shard, IteratorPosition::TrimHorizon).await;
    sim.advance(14 * MIN);
    let page = sim
        .get_records(it.clone(), None)
        .await
        .expect("still valid");
    let fresh = page.next_shard_iterator.expect("open");
    sim.advance(MIN);
    let err = sim.get_records(it, None).await.expect_err("expired");
    assert_eq!(err.kind(), SourceErrorKind::ExpiredIterator);
    // The iterator from the later call was issued a minute ago.
    sim.get_records(fresh, None)
        .await
        .expect("fresh one is valid");

    // Plain tokio time ages iterators too.
    let it = iterator(&sim, &shard, IteratorPosition::TrimHorizon).await;
    tokio::time::advance(15 * MIN).await;
    let err = sim.get_records(it, None).await.expect_err("expired");
    assert_eq!(err.kind(), SourceErrorKind::ExpiredIterator);
    assert!(sim.elapsed() >= 30 * MIN);
}

#[tokio::test(start_paused = true)]
async fn records_are_trimmed_after_24_hours() {
    let start = UNIX_EPOCH + Duration::from_secs(1_000_000);
    let sim = Simulator::builder()
        .start_time(start)
        .iterator_ttl(48 * HOUR)
        .build();
    let shard = only_shard(&sim);
    let old_iterator = iterator(&sim, &shard, IteratorPosition::TrimHorizon).await;
    sim.put_item(item("old1", 1)).expect("put");
    sim.put_item(item("old2", 1)).expect("put");
    sim.advance(12 * HOUR);
    sim.put_item(item("new", 1)).expect("put");
    let (all, _) = read(&sim, &shard, IteratorPosition::TrimHorizon, None).await;
    assert_eq!(record_values(&all), ["old1", "old2", "new"]);
    assert_eq!(all[0].approximate_creation_time(), Some(start));
    assert_eq!(all[2].approximate_creation_time(), Some(start + 12 * HOUR));
    assert_eq!(sim.now_system_time(), start + 12 * HOUR);

    sim.advance(12 * HOUR);
    assert_eq!(sim.retained_records(&shard).map(|r| r.len()), Some(1));
    // TRIM_HORIZON moves to the oldest retained record.
    let (rest, _) = read(&sim, &shard, IteratorPosition::TrimHorizon, None).await;
    assert_eq!(record_values(&rest), ["new"]);
    // Positions before trimmed records fail; the position right after them does not.
    for position in [
        IteratorPosition::AtSequenceNumber(all[0].sequence_number().clone()),
        IteratorPosition::AfterSequenceNumber(all[0].sequence_number().clone()),
        IteratorPosition::AtSequenceNumber(all[1].sequence_number().clone()),
    ] {
        let err = sim
            .get_shard_iterator(sim.stream_arn(), shard.clone(), position.clone())
            .await
            .expect_err("trimmed");
        assert_eq!(err.kind(), SourceErrorKind::TrimmedData, "{position:?}");
    }
    let (after, _) = read(
        &sim,
        &shard,
        IteratorPosition::AfterSequenceNumber(all[1].sequence_number().clone()),
        None,
    )
    .await;
    assert_eq!(record_values(&after), ["new"]);
    // An iterator issued before the trim now points into trimmed data.
    let err = sim
        .get_records(old_iterator, None)
        .await
        .expect_err("trimmed");
    assert_eq!(err.kind(), SourceErrorKind::TrimmedData);
    // The ground truth keeps everything.
    assert_eq!(sim.records_written(), 3);
}

#[tokio::test(start_paused = true)]
async fn closed_shards_disappear_24_hours_after_closing() {
    let sim = Simulator::new();
    let root = only_shard(&sim);
    sim.put_item(item("a", 1)).expect("put");
    sim.advance(HOUR);
    let (left, right) = sim.split_shard(&root).expect("split");
    sim.advance(23 * HOUR);
    // The record is trimmed, but the shard stays until 24 hours after it closed.
    assert_eq!(sim.retained_records(&root), Some(vec![]));
    let (shards, _) = describe_all(&sim, None).await;
    assert_eq!(shards.len(), 3);
    let it = iterator(&sim, &root, IteratorPosition::TrimHorizon).await;
    let page = sim.get_records(it.clone(), None).await.expect("page");
    assert_eq!((page.records.len(), page.next_shard_iterator), (0, None));

    sim.advance(HOUR);
    let (shards, _) = describe_all(&sim, None).await;
    let ids: Vec<_> = shards.iter().map(|s| s.shard_id.clone()).collect();
    assert_eq!(ids, [left.clone(), right]);
    assert!(
        shards
            .iter()
            .all(|s| s.parent_shard_id.as_deref() == Some(root.as_str())),
        "children still name their trimmed parent"
    );
    let err = sim
        .get_shard_iterator(
            sim.stream_arn(),
            root.clone(),
            IteratorPosition::TrimHorizon,
        )
        .await
        .expect_err("gone");
    assert_eq!(err.kind(), SourceErrorKind::NotFound);
    assert_eq!(sim.hash_range(&root), None);
    assert!(sim.shards().iter().all(|s| s.shard_id != root));
    assert_eq!(
        sim.split_shard(&root),
        Err(SimError::ShardNotFound(root.clone()))
    );
}

#[tokio::test(start_paused = true)]
async fn late_children_are_hidden_then_visible() {
    let sim = Simulator::builder()
        .child_visibility_delay(Duration::from_secs(30))
        .build();
    let root = only_shard(&sim);
    let (left, right) = sim.split_shard(&root).expect("split");
    let (shards, _) = describe_all(&sim, None).await;
    assert_eq!(shards.len(), 1);
    assert!(
        shards[0].is_closed(),
        "parent shows closed, children missing"
    );
    let children = sim
        .describe_stream(DescribeStreamRequest {
            child_shards_of: Some(root.clone()),
            ..describe_request(&sim)
        })
        .await
        .expect("children");
    assert!(children.shards.is_empty());
    assert_eq!(sim.shards().len(), 3, "hidden shards exist");

    // Hidden children already take writes and can be read by id.
    for i in 0..10 {
        sim.put_item(item(&format!("k{i}"), 1)).expect("put");
    }
    let (l, _) = read(&sim, &left, IteratorPosition::TrimHorizon, None).await;
    let (r, _) = read(&sim, &right, IteratorPosition::TrimHorizon, None).await;
    assert_eq!(l.len() + r.len(), 10);

    tokio::time::advance(Duration::from_secs(29)).await;
    assert_eq!(describe_all(&sim, None).await.0.len(), 1);
    sim.advance(Duration::from_secs(1));
    let (shards, _) = describe_all(&sim, None).await;
    assert_eq!(shards, sim.shards());
    assert_eq!(shards.len(), 3);
}

#[tokio::test(start_paused = true)]
async fn stale_describe_shows_recently_closed_shards_open() {
    let sim = Simulator::builder().stale_describe_probability(1.0).build();
    let root = only_shard(&sim);
    sim.split_shard(&root).expect("split");
    let (shards, _) = describe_all(&sim, None).await;
    assert_eq!(shards.len(), 3);
    assert!(shards.iter().all(|s| !s.is_closed()), "{shards:?}");
    assert!(sim.shards()[0].is_closed(), "the true view is exact");
    sim.advance(Duration::from_secs(10));
    let (shards, _) = describe_all(&sim, None).await;
    assert!(shards[0].is_closed());

    // With a probability below 1 some answers are stale and some are not.
    let sim = Simulator::builder()
        .stale_describe_probability(0.5)
        .seed(3)
        .build();
    let root = only_shard(&sim);
    sim.split_shard(&root).expect("split");
    let mut stale = 0;
    for _ in 0..100 {
        let (shards, _) = describe_all(&sim, None).await;
        stale += usize::from(!shards[0].is_closed());
    }
    assert!((20..=80).contains(&stale), "{stale} stale of 100");
}

async fn children_of(sim: &Simulator, parent: &str) -> Vec<String> {
    let request = DescribeStreamRequest {
        child_shards_of: Some(parent.to_owned()),
        ..describe_request(sim)
    };
    let page = sim.describe_stream(request).await.expect("ok");
    page.shards.into_iter().map(|s| s.shard_id).collect()
}

#[tokio::test]
async fn child_shards_of_filters_to_one_parent() {
    let sim = Simulator::builder().initial_shards(3).build();
    let open = sim.open_shards();
    let (a1, a2) = sim.split_shard(&open[0]).expect("split");
    let b1 = sim.rollover_shard(&open[1]).expect("rollover");
    assert_eq!(children_of(&sim, &open[0]).await, [a1.clone(), a2]);
    assert_eq!(children_of(&sim, &open[1]).await, [b1]);
    assert!(children_of(&sim, &open[2]).await.is_empty());
    assert!(children_of(&sim, "shardId-unknown").await.is_empty());
    let page = sim
        .describe_stream(DescribeStreamRequest {
            child_shards_of: Some(open[0].clone()),
            limit: Some(1),
            ..describe_request(&sim)
        })
        .await
        .expect("ok");
    assert_eq!(page.shards.len(), 1);
    assert_eq!(page.last_evaluated_shard_id, Some(a1));
}

#[tokio::test]
async fn disabling_closes_every_shard_and_stops_records() {
    let sim = Simulator::builder().initial_shards(2).build();
    sim.put_item(item("a", 1)).expect("put");
    sim.disable_stream();
    assert!(sim.is_disabled());
    assert!(sim.open_shards().is_empty());
    sim.put_item(item("b", 1))
        .expect("the table still takes writes");
    assert_eq!(sim.item_count(), 2);
    assert_eq!(sim.records_written(), 1);
    assert_eq!(
        sim.shard_for_keys(&keys("b")),
        Err(SimError::StreamDisabled)
    );
    let (shards, _) = describe_all(&sim, None).await;
    assert_eq!(shards.len(), 2);
    assert!(shards.iter().all(Shard::is_closed));
    let page = sim
        .describe_stream(describe_request(&sim))
        .await
        .expect("ok");
    assert_eq!(page.stream_status, StreamStatus::Disabled);
    let mut total = 0;
    for s in &shards {
        total += read(&sim, &s.shard_id, IteratorPosition::TrimHorizon, None)
            .await
            .0
            .len();
    }
    assert_eq!(total, 1);
    assert!(sim.rollover_all().is_empty());
}

// ----- table and records -----

#[tokio::test]
async fn table_writes_produce_the_right_records() {
    let sim = Simulator::new();
    let shard = only_shard(&sim);
    sim.put_item(item("a", 1)).expect("insert");
    sim.put_item(item("a", 1)).expect("identical: no record");
    sim.put_item(item("a", 2)).expect("modify");
    sim.delete_item(&keys("a")).expect("remove");
    sim.delete_item(&keys("a")).expect("absent: no record");
    sim.put_item(item("t", 1)).expect("insert");
    sim.ttl_delete(&item("t", 99))
        .expect("ttl remove, extra attributes ignored");
    let (records, _) = read(&sim, &shard, IteratorPosition::TrimHorizon, None).await;
    let kinds: Vec<_> = records.iter().map(|r| r.kind().clone()).collect();
    assert_eq!(
        kinds,
        [
            RecordKind::Insert,
            RecordKind::Modify,
            RecordKind::Remove { ttl: false },
            RecordKind::Insert,
            RecordKind::Remove { ttl: true },
        ]
    );
    assert_eq!(records[1].old_image(), Some(&item("a", 1)));
    assert_eq!(records[1].new_image(), Some(&item("a", 2)));
    assert_eq!(records[2].old_image(), Some(&item("a", 2)));
    assert_eq!(records[2].new_image(), None);
    assert_eq!(records[0].keys(), &keys("a"));
    assert_eq!(records[0].old_image(), None);
    let identity = records[4].user_identity().expect("ttl identity");
    assert_eq!(identity.kind, "Service");
    assert_eq!(identity.principal_id, "dynamodb.amazonaws.com");
    assert!(records[2].user_identity().is_none());
    assert!(records.iter().all(|r| r.size_bytes() > 0));
    assert_eq!(
        records[0].size_bytes(),
        2 + 1 + 1 + 1 + 2 + 1,
        "keys + new image"
    );
    assert_eq!(sim.item_count(), 0);
    assert_eq!(sim.get_item(&keys("a")), None);
}

#[test]
fn keys_are_validated_and_the_table_reads_back() {
    let sim = Simulator::builder().hash_key("id").range_key("sk").build();
    let mut full = Item::default();
    full.insert("id".into(), AttributeValue::S("x".into()));
    assert_eq!(
        sim.put_item(full.clone()),
        Err(SimError::MissingKey("sk".into()))
    );
    full.insert("sk".into(), AttributeValue::Bool(true));
    assert_eq!(
        sim.put_item(full.clone()),
        Err(SimError::InvalidKeyType("sk".into()))
    );
    full.insert("sk".into(), AttributeValue::N("1".into()));
    full.insert("data".into(), AttributeValue::S("d".into()));
    sim.put_item(full.clone()).expect("put");
    assert_eq!(sim.get_item(&full), Some(full.clone()));
    assert_eq!(sim.scan(), vec![full.clone()]);
    assert_eq!(sim.get_item(&keys("x")), None, "missing key reads nothing");
    assert_eq!(
        sim.delete_item(&keys("x")),
        Err(SimError::MissingKey("id".into()))
    );
    let record = &sim.written_records()[0].record;
    assert_eq!(record.keys().len(), 2, "only the key attributes");
}

#[tokio::test]
async fn images_follow_the_view_type() {
    let cases = [
        (StreamViewType::KeysOnly, false, false),
        (StreamViewType::NewImage, false, true),
        (StreamViewType::OldImage, true, false),
        (StreamViewType::NewAndOldImages, true, true),
    ];
    for (view, has_old, has_new) in cases {
        let sim = Simulator::builder().view_type(view).build();
        sim.put_item(item("a", 1)).expect("put");
        sim.put_item(item("a", 2)).expect("put");
        let (records, _) = read(&sim, &only_shard(&sim), IteratorPosition::TrimHorizon, None).await;
        let modify = &records[1];
        assert_eq!(modify.old_image().is_some(), has_old, "{view:?}");
        assert_eq!(modify.new_image().is_some(), has_new, "{view:?}");
        assert_eq!(modify.keys(), &keys("a"));
        let description = sim
            .describe_stream(describe_request(&sim))
            .await
            .expect("ok");
        assert_eq!(description.stream_view_type, Some(view));
    }
}

#[tokio::test]
async fn pages_respect_record_and_byte_limits() {
    let sim = Simulator::builder()
        .records_page_limit(3)
        .page_bytes_limit(100)
        .build();
    let shard = only_shard(&sim);
    for i in 0..7 {
        sim.put_item(item(&format!("k{i}"), i)).expect("put");
    }
    let (records, pages) = read(&sim, &shard, IteratorPosition::TrimHorizon, Some(50)).await;
    assert_eq!(records.len(), 7);
    assert_eq!(pages, 4, "3 + 3 + 1, then an empty poll");
    let (_, pages) = read(&sim, &shard, IteratorPosition::TrimHorizon, Some(2)).await;
    assert_eq!(pages, 5, "2 + 2 + 2 + 1, then an empty poll");

    // Each record here is 43 bytes: two fit into 100 bytes, and an oversized record
    // still comes alone.
    let sim = Simulator::builder().page_bytes_limit(100).build();
    let shard = only_shard(&sim);
    for i in 0..4 {
        let mut it = item(&format!("k{i}"), i);
        it.insert("pad".into(), AttributeValue::S("x".repeat(30)));
        sim.put_item(it).expect("put");
    }
    let mut big = item("big", 0);
    big.insert("pad".into(), AttributeValue::S("x".repeat(500)));
    sim.put_item(big).expect("put");
    let mut it = iterator(&sim, &shard, IteratorPosition::TrimHorizon).await;
    let mut sizes = Vec::new();
    loop {
        let page = sim.get_records(it, None).await.expect("page");
        if page.records.is_empty() {
            break;
        }
        let bytes: u64 = page.records.iter().map(StreamRecord::size_bytes).sum();
        assert!(page.records.len() == 1 || bytes <= 100, "{bytes} bytes");
        sizes.push(page.records.len());
        it = page.next_shard_iterator.expect("open");
    }
    assert_eq!(sizes, [2, 2, 1]);

    let it = iterator(&sim, &shard, IteratorPosition::TrimHorizon).await;
    let err = sim.get_records(it, Some(0)).await.expect_err("limit 0");
    assert_eq!(err.kind(), SourceErrorKind::Fatal);
}

// ----- faults and counters -----

#[tokio::test]
async fn faults_follow_their_rules_and_are_counted() {
    let sim = Simulator::new();
    let shard = only_shard(&sim);
    sim.set_fault(
        Operation::GetShardIterator,
        FaultRule::next(2, FaultKind::Throttled),
    );
    for _ in 0..2 {
        let err = sim
            .get_shard_iterator(sim.stream_arn(), shard.clone(), IteratorPosition::Latest)
            .await
            .expect_err("throttled");
        assert_eq!(err.kind(), SourceErrorKind::Throttled);
        assert!(err.is_retryable());
    }
    let it = iterator(&sim, &shard, IteratorPosition::Latest).await;
    assert_eq!(sim.stats().faults_injected, 2);
    assert_eq!(sim.stats().get_shard_iterator_calls, 3);

    let kinds = [
        (FaultKind::Throttled, SourceErrorKind::Throttled),
        (FaultKind::Retryable, SourceErrorKind::Retryable),
        (FaultKind::Fatal, SourceErrorKind::Fatal),
        (FaultKind::ExpiredIterator, SourceErrorKind::ExpiredIterator),
        (FaultKind::TrimmedData, SourceErrorKind::TrimmedData),
        (FaultKind::NotFound, SourceErrorKind::NotFound),
    ];
    for (fault, kind) in kinds {
        sim.set_fault(Operation::GetRecords, FaultRule::always(fault));
        let err = sim.get_records(it.clone(), None).await.expect_err("fault");
        assert_eq!(err.kind(), kind);
        assert!(err.message().contains("injected"));
    }
    sim.clear_faults();
    sim.get_records(it.clone(), None).await.expect("cleared");

    sim.set_fault(
        Operation::DescribeStream,
        FaultRule::with_probability(0.3, FaultKind::Retryable),
    );
    let mut random_failures = 0u64;
    for _ in 0..1000 {
        random_failures += u64::from(sim.describe_stream(describe_request(&sim)).await.is_err());
    }
    assert!(
        (230..=370).contains(&random_failures),
        "{random_failures} of 1000"
    );

    // `remaining` counts calls, not faults.
    sim.set_fault(
        Operation::DescribeStream,
        FaultRule {
            probability: 0.5,
            kind: FaultKind::Retryable,
            remaining: Some(100),
        },
    );
    let mut limited_failures = 0u64;
    for _ in 0..100 {
        limited_failures += u64::from(sim.describe_stream(describe_request(&sim)).await.is_err());
    }
    assert!(
        (20..=80).contains(&limited_failures),
        "{limited_failures} of 100"
    );
    for _ in 0..100 {
        sim.describe_stream(describe_request(&sim))
            .await
            .expect("rule used up");
    }

    let stats = sim.stats();
    assert_eq!(stats.describe_stream_calls, 1200);
    assert_eq!(stats.get_records_calls, 7);
    assert_eq!(stats.get_shard_iterator_calls, 3);
    assert_eq!(
        stats.faults_injected,
        2 + 6 + random_failures + limited_failures
    );
}

#[tokio::test(start_paused = true)]
async fn latency_and_call_times_use_sim_time() {
    let sim = Simulator::builder().initial_shards(2).build();
    let [a, b] = [sim.open_shards()[0].clone(), sim.open_shards()[1].clone()];
    sim.set_latency(Operation::GetRecords, Duration::from_millis(200));
    let mut it = iterator(&sim, &a, IteratorPosition::TrimHorizon).await;
    let started = sim.elapsed();
    for _ in 0..3 {
        it = sim
            .get_records(it, None)
            .await
            .expect("page")
            .next_shard_iterator
            .expect("open");
    }
    assert_eq!(sim.elapsed() - started, Duration::from_millis(600));
    let times = sim.get_records_call_times(&a);
    assert_eq!(
        times,
        [
            started,
            started + Duration::from_millis(200),
            started + Duration::from_millis(400)
        ]
    );
    assert!(sim.get_records_call_times(&b).is_empty());

    // Failed calls count too, and the fault comes after the latency.
    sim.set_fault(
        Operation::GetRecords,
        FaultRule::next(1, FaultKind::Throttled),
    );
    sim.get_records(it, None).await.expect_err("throttled");
    assert_eq!(sim.get_records_call_times(&a).len(), 4);
    assert_eq!(sim.elapsed() - started, Duration::from_millis(800));
}

#[tokio::test(start_paused = true)]
async fn same_seed_gives_the_same_run() {
    async fn run(seed: u64) -> Vec<String> {
        let sim = Simulator::builder()
            .seed(seed)
            .initial_shards(3)
            .start_time(UNIX_EPOCH + Duration::from_secs(1_600_000_000))
            .stale_describe_probability(0.5)
            .build();
        sim.set_fault(
            Operation::GetRecords,
            FaultRule::with_probability(0.4, FaultKind::Throttled),
        );
        let mut log = Vec::new();
        for i in 0..30 {
            sim.put_item(item(&format!("k{i}"), i)).expect("put");
        }
        let first = sim.open_shards()[0].clone();
        sim.split_shard(&first).expect("split");
        for i in 0..30 {
            sim.put_item(item(&format!("k{i}"), i + 1)).expect("put");
        }
        for _ in 0..5 {
            let (shards, _) = describe_all(&sim, None).await;
            log.push(format!("{shards:?}"));
        }
        for shard in sim.open_shards() {
            let mut it = iterator(&sim, &shard, IteratorPosition::TrimHorizon).await;
            for _ in 0..10 {
                match sim.get_records(it.clone(), Some(3)).await {
                    Ok(page) => {
                        for r in &page.records {
                            log.push(format!(
                                "{} {} {:?} {:?} {} {}",
                                r.sequence_number(),
                                r.event_id(),
                                r.kind(),
                                r.approximate_creation_time(),
                                r.size_bytes(),
                                // JSON with sorted names: `Item`'s Debug follows HashMap order.
                                r.new_image()
                                    .map(crate::record::item_to_json)
                                    .unwrap_or_default()
                            ));
                        }
                        it = page.next_shard_iterator.expect("open");
                        log.push(it.clone());
                    }
                    Err(e) => log.push(e.to_string()),
                }
            }
        }
        log.push(format!("{:?}", sim.stats()));
        log
    }
    let a = run(42).await;
    assert_eq!(a, run(42).await);
    assert_ne!(a, run(43).await);
    assert!(a.iter().any(|l| l.contains("Throttled")));
}
