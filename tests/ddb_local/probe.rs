use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::{AttributeValue, StreamViewType};
use aws_sdk_dynamodbstreams::types::ShardIteratorType;

use crate::ddb_local::*;

async fn describe(c: &TestClients, arn: &str) {
    let d = c.streams.describe_stream().stream_arn(arn).send().await.unwrap();
    let d = d.stream_description.unwrap();
    println!("status {:?} shards {}", d.stream_status, d.shards().len());
    for s in d.shards() {
        let r = s.sequence_number_range.as_ref().unwrap();
        println!("  {} parent={:?} start={:?} end={:?}", s.shard_id().unwrap(), s.parent_shard_id, r.starting_sequence_number, r.ending_sequence_number);
    }
}

async fn put(c: &TestClients, t: &str, k: &str) {
    c.dynamodb.put_item().table_name(t).item("pk", AttributeValue::S(k.into())).item("v", AttributeValue::N("1".into())).send().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn probe() {
    let t0 = Instant::now();
    let c = clients("probe");
    println!("server up in {:?}", t0.elapsed());
    let arn = create_table(&c, "tbl", StreamViewType::NewAndOldImages).await;
    println!("arn {arn}");
    describe(&c, &arn).await;
    for i in 0..3 { put(&c, "tbl", &format!("k{i}")).await; }
    describe(&c, &arn).await;
    let d = c.streams.describe_stream().stream_arn(&arn).send().await.unwrap().stream_description.unwrap();
    let shard0 = d.shards()[0].shard_id().unwrap().to_string();
    let it = c.streams.get_shard_iterator().stream_arn(&arn).shard_id(&shard0).shard_iterator_type(ShardIteratorType::TrimHorizon).send().await.unwrap().shard_iterator.unwrap();
    let r = c.streams.get_records().shard_iterator(&it).send().await.unwrap();
    for rec in r.records() { println!("rec {:?} {:?} {:?} {:?}", rec.event_name, rec.dynamodb.as_ref().unwrap().sequence_number, rec.dynamodb.as_ref().unwrap().approximate_creation_date_time, rec.user_identity); }
    let last_seq = r.records().last().unwrap().dynamodb.as_ref().unwrap().sequence_number.clone().unwrap();
    let t = Instant::now();
    rollover(&c).await;
    println!("rollover took {:?}", t.elapsed());
    describe(&c, &arn).await;
    // old iterator after rollover
    let r2 = c.streams.get_records().shard_iterator(r.next_shard_iterator().unwrap()).send().await;
    println!("after rollover, next it: {:?}", r2.as_ref().map(|o| (o.records().len(), o.next_shard_iterator.is_some())));
    for i in 3..5 { put(&c, "tbl", &format!("k{i}")).await; }
    describe(&c, &arn).await;
    let t = Instant::now();
    for _ in 0..10 { rollover(&c).await; }
    println!("10 rollovers took {:?}", t.elapsed());
    describe(&c, &arn).await;
    // dilate 3h
    let held = c.streams.get_shard_iterator().stream_arn(&arn).shard_id(&shard0).shard_iterator_type(ShardIteratorType::AfterSequenceNumber).sequence_number(&last_seq).send().await.unwrap().shard_iterator.unwrap();
    let t = Instant::now();
    dilate(&c, Duration::from_secs(3 * 3600)).await;
    println!("dilate took {:?}", t.elapsed());
    let r3 = c.streams.get_records().shard_iterator(&held).send().await;
    println!("held iterator after 3h: {:?}", r3.map(|o| o.records().len()).map_err(|e| sdk_error(&e)));
    describe(&c, &arn).await;
    let it = c.streams.get_shard_iterator().stream_arn(&arn).shard_id(&shard0).shard_iterator_type(ShardIteratorType::TrimHorizon).send().await;
    println!("fresh TH iterator on shard0 after 3h: {:?}", it.as_ref().map(|_| ()).map_err(|e| sdk_error(e)));
    if let Ok(it) = it { let r = c.streams.get_records().shard_iterator(it.shard_iterator.unwrap()).send().await; println!(" -> {:?}", r.map(|o| o.records().len()).map_err(|e| sdk_error(&e))); }
    dilate(&c, Duration::from_secs(22 * 3600)).await;
    describe(&c, &arn).await;
    let it = c.streams.get_shard_iterator().stream_arn(&arn).shard_id(&shard0).shard_iterator_type(ShardIteratorType::AfterSequenceNumber).sequence_number(&last_seq).send().await;
    println!("after 25h AFTER_SEQ shard0: {:?}", it.as_ref().map(|_| ()).map_err(|e| sdk_error(e)));
    if let Ok(it) = it { let r = c.streams.get_records().shard_iterator(it.shard_iterator.unwrap()).send().await; println!(" -> {:?}", r.map(|o| o.records().len()).map_err(|e| sdk_error(&e))); }
    let it = c.streams.get_shard_iterator().stream_arn(&arn).shard_id(&shard0).shard_iterator_type(ShardIteratorType::TrimHorizon).send().await;
    println!("after 25h TH shard0: {:?}", it.as_ref().map(|_| ()).map_err(|e| sdk_error(e)));
    if let Ok(it) = it { let r = c.streams.get_records().shard_iterator(it.shard_iterator.unwrap()).send().await; println!(" -> {:?}", r.map(|o| o.records().len()).map_err(|e| sdk_error(&e))); }
    dilate(&c, Duration::from_secs(24 * 3600)).await;
    describe(&c, &arn).await;
    let it = c.streams.get_shard_iterator().stream_arn(&arn).shard_id(&shard0).shard_iterator_type(ShardIteratorType::TrimHorizon).send().await;
    println!("after 49h TH shard0: {:?}", it.as_ref().map(|_| ()).map_err(|e| sdk_error(e)));
    let ns = std::process::Command::new("curl").arg("-s").arg(format!("{}/namespaces", server().control)).output().unwrap();
    println!("namespaces: {}", String::from_utf8_lossy(&ns.stdout));
}

async fn try_read(c: &TestClients, arn: &str, shard: &str, ty: ShardIteratorType, seq: Option<&str>) -> String {
    let mut g = c.streams.get_shard_iterator().stream_arn(arn).shard_id(shard).shard_iterator_type(ty);
    if let Some(s) = seq { g = g.sequence_number(s); }
    match g.send().await {
        Err(e) => format!("GSI err {}", sdk_error(&e)),
        Ok(it) => match c.streams.get_records().shard_iterator(it.shard_iterator.unwrap()).send().await {
            Err(e) => format!("GR err {}", sdk_error(&e)),
            Ok(o) => format!("GR ok {} recs {:?} next={}", o.records().len(), o.records().iter().map(|r| r.dynamodb.as_ref().unwrap().sequence_number.clone().unwrap()).collect::<Vec<_>>(), o.next_shard_iterator.is_some()),
        },
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn probe_trim() {
    let c = clients("probetrim");
    let arn = create_table(&c, "tbl", StreamViewType::NewAndOldImages).await;
    for i in 0..5 { put(&c, "tbl", &format!("k{i}")).await; }
    let d = c.streams.describe_stream().stream_arn(&arn).send().await.unwrap().stream_description.unwrap();
    let s0 = d.shards()[0].shard_id().unwrap().to_string();
    println!("before: {}", try_read(&c, &arn, &s0, ShardIteratorType::TrimHorizon, None).await);
    dilate(&c, Duration::from_secs(25 * 3600)).await;
    describe(&c, &arn).await;
    println!("25h AFTER 2: {}", try_read(&c, &arn, &s0, ShardIteratorType::AfterSequenceNumber, Some("000000000000000000002")).await);
    println!("25h TH: {}", try_read(&c, &arn, &s0, ShardIteratorType::TrimHorizon, None).await);
    println!("25h LATEST: {}", try_read(&c, &arn, &s0, ShardIteratorType::Latest, None).await);
    for i in 5..7 { put(&c, "tbl", &format!("k{i}")).await; }
    describe(&c, &arn).await;
    dilate(&c, Duration::from_secs(3 * 3600)).await;
    println!("28h AFTER 2: {}", try_read(&c, &arn, &s0, ShardIteratorType::AfterSequenceNumber, Some("000000000000000000002")).await);
    dilate(&c, Duration::from_secs(22 * 3600)).await;
    describe(&c, &arn).await;
    println!("50h AFTER 2: {}", try_read(&c, &arn, &s0, ShardIteratorType::AfterSequenceNumber, Some("000000000000000000002")).await);
    println!("50h TH: {}", try_read(&c, &arn, &s0, ShardIteratorType::TrimHorizon, None).await);
    dilate(&c, Duration::from_secs(7 * 3600)).await;
    describe(&c, &arn).await;
    println!("57h TH: {}", try_read(&c, &arn, &s0, ShardIteratorType::TrimHorizon, None).await);
}

#[tokio::test(flavor = "multi_thread")]
async fn probe_ttl() {
    let c = clients("probettl");
    let arn = create_table(&c, "tbl", StreamViewType::NewAndOldImages).await;
    c.dynamodb.update_time_to_live().table_name("tbl").time_to_live_specification(aws_sdk_dynamodb::types::TimeToLiveSpecification::builder().enabled(true).attribute_name("exp").build().unwrap()).send().await.unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    c.dynamodb.put_item().table_name("tbl").item("pk", AttributeValue::S("gone".into())).item("exp", AttributeValue::N((now - 60).to_string())).send().await.unwrap();
    let t = Instant::now();
    loop {
        let g = c.dynamodb.get_item().table_name("tbl").key("pk", AttributeValue::S("gone".into())).send().await.unwrap();
        if g.item.is_none() { break; }
        if t.elapsed() > Duration::from_secs(60) { println!("TTL never deleted"); return; }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!("TTL deleted after {:?}", t.elapsed());
    let d = c.streams.describe_stream().stream_arn(&arn).send().await.unwrap().stream_description.unwrap();
    let s0 = d.shards()[0].shard_id().unwrap().to_string();
    let it = c.streams.get_shard_iterator().stream_arn(&arn).shard_id(&s0).shard_iterator_type(ShardIteratorType::TrimHorizon).send().await.unwrap();
    let o = c.streams.get_records().shard_iterator(it.shard_iterator.unwrap()).send().await.unwrap();
    for r in o.records() { println!("{:?}", r); }
}
