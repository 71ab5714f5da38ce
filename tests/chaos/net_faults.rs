//! Scenario 6, network faults below HTTP. The real `ddbstream tail` runs in a private network
//! namespace that has nothing but its own loopback interface; it reaches DynamoDB Local through
//! a plain TCP relay (`tcp_relay.rs`) that listens inside the namespace and forwards to the
//! server on this process's loopback. A writer puts ~20 items/s the whole time, and iptables
//! rules in the namespace's INPUT chain, on the relay's port, break the consumer's TCP
//! connections, one fault after another:
//!
//! 1. blackhole: `-j DROP` both ways for `DDBSTREAM_CHAOS_SECS` + 2 s (12 s by default: longer
//!    than the SDK's 10 s attempt timeout, so calls hang until it fires);
//! 2. reset: `-j REJECT --reject-with tcp-reset` towards the server for half of
//!    `DDBSTREAM_CHAOS_SECS`;
//! 3. unreachable: `-j REJECT --reject-with icmp-port-unreachable` towards the server for half
//!    of it (new connections are refused; on open ones Linux takes it as a soft error and
//!    retransmits);
//! 4. loss: `-m statistic --mode random --probability 0.3 -j DROP` both ways for
//!    `DDBSTREAM_CHAOS_SECS`.
//!
//! INPUT, not OUTPUT: a packet dropped in OUTPUT is a local send error to its sender's stack
//! (which then waits on its probe timer), not a packet lost on the way.
//!
//! Pass: the process never exits; each rule matched packets; during the three hard faults no
//! record gets through (the fault is real); after each fault everything written before its end
//! is delivered (the recovery time is reported); at the end nothing is lost, reordered or
//! regressed, and nothing is delivered twice unless a worker restarted (at-least-once); the
//! process stops cleanly on SIGTERM.
//!
//! Where network namespaces are not permitted (not root), the test prints why and passes
//! without running; where they are, a missing `ip` or `iptables` fails it (`scripts/test.sh`
//! installs both).

use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::StreamViewType;

use crate::common::{
    chaos_secs, check, cli_env, has_all, lineage, missing, now_ms, seed, TailProcess, Writer,
};
use crate::ddb_local::{clients, create_table, server};
use crate::netns::NetNs;
use crate::tcp_relay::TcpRelay;

const TABLE: &str = "netfaults";
/// How long after a fault ends everything written before its end must be delivered.
const RECOVERY_LIMIT: Duration = Duration::from_secs(60);
/// A page fetched just before a hard fault may still be printed in its first moments.
const IN_FLIGHT: u64 = 1_500;

struct Fault {
    name: &'static str,
    /// What follows `-A INPUT -i lo -p tcp --dport PORT` (and `--sport PORT`).
    target: &'static [&'static str],
    /// Also the packets from the relay to the consumer. Not for REJECT: the RST or ICMP error
    /// it sends back to the consumer would be rejected in turn.
    both_ways: bool,
    length: Duration,
    /// Nothing can get through while it lasts.
    hard: bool,
}

/// What one fault did, for the report.
#[derive(Debug)]
struct Outcome {
    name: &'static str,
    length: Duration,
    /// SYNs the consumer sent while it lasted (retransmissions included).
    connection_attempts: u64,
    /// Packets the fault's rules matched (dropped or rejected), both directions.
    packets: u64,
    /// Records printed while the fault lasted (after its first [`IN_FLIGHT`] ms).
    delivered_during: usize,
    /// Connections the relay accepted from the fault's start until the recovery.
    connections: usize,
    /// From the end of the fault until every write made before it was delivered.
    recovered_after: Duration,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drops_rejects_and_packet_loss_lose_nothing() {
    let ns = match NetNs::create() {
        Ok(ns) => ns,
        Err(reason) => {
            println!("net_faults: SKIPPED: {reason}");
            return;
        }
    };
    let secs = chaos_secs();
    let half = Duration::from_millis(secs * 500);
    let faults = [
        Fault {
            name: "blackhole (DROP)",
            target: &["-j", "DROP"],
            both_ways: true,
            length: Duration::from_secs(secs + 2),
            hard: true,
        },
        Fault {
            name: "reset (REJECT tcp-reset)",
            target: &["-j", "REJECT", "--reject-with", "tcp-reset"],
            both_ways: false,
            length: half,
            hard: true,
        },
        Fault {
            name: "unreachable (REJECT icmp-port-unreachable)",
            target: &["-j", "REJECT", "--reject-with", "icmp-port-unreachable"],
            both_ways: false,
            length: half,
            hard: true,
        },
        Fault {
            name: "30 % loss (statistic DROP)",
            target: &[
                "-m",
                "statistic",
                "--mode",
                "random",
                "--probability",
                "0.3",
                "-j",
                "DROP",
            ],
            both_ways: true,
            length: Duration::from_secs(secs),
            hard: false,
        },
    ];
    let seed = seed("net_faults");
    let debug = std::env::var_os("DDBSTREAM_CHAOS_DEBUG").is_some();
    let test_started = Instant::now();
    let c = clients("chaos_net_faults");
    let arn = create_table(&c, TABLE, StreamViewType::NewAndOldImages).await;
    let upstream = server()
        .endpoint
        .strip_prefix("http://")
        .expect("an http endpoint")
        .to_owned();
    let relay = TcpRelay::start(ns.bind_loopback(), upstream);
    let port = relay.port().to_string();
    let dir = tempfile::tempdir().expect("tempdir");

    let writer = Writer::start(&c, TABLE, 50, Duration::from_millis(50), seed);
    let mut cmd = ns.command(env!("CARGO_BIN_EXE_ddbstream"));
    cli_env(&mut cmd, &c);
    cmd.env("AWS_ENDPOINT_URL", format!("http://127.0.0.1:{port}"))
        .args(["tail", "--table", TABLE, "--from", "trim-horizon"]);
    let mut tail = TailProcess::spawn(cmd, dir.path().join("tail.log"));
    let first_line = Instant::now() + Duration::from_secs(30);
    while tail.lines.lock().unwrap().is_empty() {
        if let Some(status) = tail.exited() {
            panic!("tail exited ({status}):\n{}", tail.stderr_text());
        }
        assert!(
            Instant::now() < first_line,
            "no record within 30 s of starting tail in the namespace:\n{}",
            tail.stderr_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;

    let mut outcomes = Vec::new();
    for fault in &faults {
        let connections_before = relay.accepted();
        // No target: only counts the consumer's connection attempts (SYNs) while it lasts.
        ns.iptables(&[
            "-A", "INPUT", "-i", "lo", "-p", "tcp", "--dport", &port, "--syn",
        ]);
        let directions: &[&str] = if fault.both_ways {
            &["--dport", "--sport"]
        } else {
            &["--dport"]
        };
        for direction in directions {
            let mut rule = vec!["-A", "INPUT", "-i", "lo", "-p", "tcp", direction, &port];
            rule.extend_from_slice(fault.target);
            ns.iptables(&rule);
        }
        let from = now_ms();
        let started = Instant::now();
        let mut next_dump = Duration::ZERO;
        while started.elapsed() < fault.length {
            if debug && started.elapsed() >= next_dump {
                dump_sockets(&ns, fault.name, started.elapsed());
                next_dump += Duration::from_secs(1);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            if let Some(status) = tail.exited() {
                panic!(
                    "tail exited during the {} ({status}):\n{}",
                    fault.name,
                    tail.stderr_text()
                );
            }
        }
        let counters = packet_counters(&ns.iptables(&["-L", "INPUT", "-n", "-v", "-x"]));
        ns.iptables(&["-F", "INPUT"]);
        let to = now_ms();
        let ended = Instant::now();
        if debug {
            dump_sockets(&ns, "after", started.elapsed());
        }
        let written = writer.snapshot();
        loop {
            let (deliveries, _) = tail.deliveries(0);
            if has_all(&written, &deliveries) {
                break;
            }
            if let Some(status) = tail.exited() {
                panic!(
                    "tail exited after the {} ({status}):\n{}",
                    fault.name,
                    tail.stderr_text()
                );
            }
            assert!(
                ended.elapsed() < RECOVERY_LIMIT,
                "{} writes made before the end of the {} still undelivered {RECOVERY_LIMIT:?} \
                 after it:\n{}",
                missing(&written, &deliveries),
                fault.name,
                tail.stderr_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let recovered_after = ended.elapsed();
        let delivered_during = tail
            .lines
            .lock()
            .unwrap()
            .iter()
            .filter(|(at, _)| *at > from + IN_FLIGHT && *at <= to)
            .count();
        outcomes.push(Outcome {
            name: fault.name,
            length: fault.length,
            connection_attempts: counters.first().copied().unwrap_or(0),
            packets: counters.iter().skip(1).sum(),
            delivered_during,
            connections: relay.accepted() - connections_before,
            recovered_after,
        });
    }

    let written = writer.stop().await;
    let drained = Instant::now() + RECOVERY_LIMIT;
    while !has_all(&written, &tail.deliveries(0).0) {
        assert!(
            Instant::now() < drained,
            "writes undelivered {RECOVERY_LIMIT:?} after the writer stopped:\n{}",
            tail.stderr_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tail.terminate().await;
    let (deliveries, unparsed) = tail.deliveries(0);
    let shards = lineage(&c, &arn).await;
    let report = check(&written, &deliveries, &shards);
    let stderr = tail.stderr_text();
    let restarts = stderr
        .lines()
        .filter(|l| l.contains("; retrying in"))
        .count();

    println!(
        "net_faults: {} in the namespace; {} writes, {} shards; {}; {unparsed} unparsed lines; \
         {} relay connections; {restarts} worker restarts logged; {:.1} s in all",
        ns.iptables_command(),
        written.total(),
        shards.len(),
        report.summary(),
        relay.accepted(),
        test_started.elapsed().as_secs_f64(),
    );
    for o in &outcomes {
        println!(
            "net_faults: {}: {:?}, {} packets dropped or rejected, {} SYNs sent, {} records \
             delivered during it, {} connections accepted until the recovery, everything \
             written before its end delivered {:.2} s after it",
            o.name,
            o.length,
            o.packets,
            o.connection_attempts,
            o.delivered_during,
            o.connections,
            o.recovered_after.as_secs_f64(),
        );
    }
    println!("net_faults: tail's stderr:\n{stderr}");

    for (fault, o) in faults.iter().zip(&outcomes) {
        assert!(o.packets > 0, "the {} matched no packet", o.name);
        if fault.hard {
            assert_eq!(
                o.delivered_during, 0,
                "records got through the {}: the rule did not hold",
                o.name
            );
        }
    }
    report.assert_clean(restarts == 0);
    assert_eq!(unparsed, 0, "tail printed lines that are not records");
}

/// The packet counter of each rule in `iptables -L CHAIN -n -v -x`, in order.
fn packet_counters(listing: &str) -> Vec<u64> {
    listing
        .lines()
        .skip(2) // the chain's line and the column headers
        .filter_map(|l| l.split_whitespace().next()?.parse::<u64>().ok())
        .collect()
}

/// `DDBSTREAM_CHAOS_DEBUG`: the namespace's TCP sockets (state, timers, retransmissions).
fn dump_sockets(ns: &NetNs, fault: &str, at: Duration) {
    let out = ns
        .command("ss")
        .args(["-tnoi"])
        .stdin(std::process::Stdio::null())
        .output();
    let text = match out {
        Ok(o) => String::from_utf8_lossy(&o.stdout).into_owned(),
        Err(e) => format!("cannot run ss: {e}"),
    };
    println!("net_faults: {fault} +{:.1} s:\n{text}", at.as_secs_f64());
}
