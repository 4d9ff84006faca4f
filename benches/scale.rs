//! Scale benchmark: N replicas on one ZooKeeper. For each N it prints the
//! handover time (SIGTERM of the leader to the successor's first file),
//! the ZooKeeper packets the handover cost above the background rate
//! (pings), and the memory per replica. Run with:
//!
//! ```sh
//! cargo bench --bench scale              # SCALE_SIZES=3,10,50 by default
//! ```
//!
//! A herd-free recipe keeps the packets per handover flat as N grows.
//!
//! Then, at the settings of the comparison in docs/performance.md (session 2 s,
//! leader-timeout 200 ms, attempter-timeout 1 s), it prints the ZooKeeper
//! packets per second at rest with `SCALE_REST` replicas (default 20), and
//! the memory of one replica with everything on as the chart runs it: the
//! HTTP listener, the admin listener and the Pod labeller (against the
//! test suite's fake API server), leader and idle candidate.
//!
//! The rest window lasts `SCALE_REST_SECS` (default 10) seconds on a
//! server of tickTime `SCALE_TICK_MS` (default 200, also passed as
//! `--zk-tick-time`); over it the bench prints the packets both ways
//! (`zk_packets_received` + `zk_packets_sent`) and received only (one
//! per request or ping, as the comparison with Curator and kazoo counts
//! them, docs/performance.md "Cadence against the peers"), and the
//! leader's CPU (user + system, `/proc/PID/stat`) in seconds per minute.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant, SystemTime};

use common::free_port;
use common::group::Group;
use common::kube_api::{FakeApi, http_get};
use common::procfs::{cpu_seconds, median, rss_mb};
use common::wait_until;
use common::zk::ZkCluster;

fn packets_received(zk: &ZkCluster) -> f64 {
    zk.mntr(0)
        .get("zk_packets_received")
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN)
}

fn main() {
    let sizes: Vec<usize> = std::env::var("SCALE_SIZES")
        .unwrap_or_else(|_| "3,10,50".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let rounds: usize = std::env::var("SCALE_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    println!(
        "| replicas | handover median (ms) | ZooKeeper packets per handover (above pings) | RSS per replica (MB) |"
    );
    println!("|---:|---:|---:|---:|");
    for &n in &sizes {
        let zk = ZkCluster::standalone();
        let mut g = Group::new(&zk.connect_string());
        // A long session keeps the ping background low and steady.
        g.extra = ["--zk-session-timeout", "20s", "--attempter-timeout", "60s"]
            .map(String::from)
            .to_vec();
        g.env = vec![("RUST_LOG".into(), "warn".into())];
        g.spawn(n);
        g.wait_leader(Duration::from_secs(60));
        std::thread::sleep(Duration::from_secs(3));
        let rss: Vec<f64> = g
            .replicas
            .iter()
            .flatten()
            .map(|r| rss_mb(r.pid()))
            .collect();

        let mut times = Vec::new();
        let mut costs = Vec::new();
        for _ in 0..rounds {
            let leader = g.wait_leader(Duration::from_secs(30));
            let token = g.newest_record().unwrap().token;
            // Background: packets over a quiet second.
            let b0 = packets_received(&zk);
            let tb = Instant::now();
            std::thread::sleep(Duration::from_secs(1));
            let background_rate = (packets_received(&zk) - b0) / tb.elapsed().as_secs_f64();

            let p0 = packets_received(&zk);
            let t0 = Instant::now();
            let s0 = SystemTime::now();
            g.replica(leader).signal(libc::SIGTERM);
            let mut first = None;
            assert!(wait_until(
                Duration::from_secs(30),
                Duration::from_millis(5),
                || {
                    first = g.records().into_iter().find(|r| r.token > token);
                    first.is_some()
                }
            ));
            // Let the successor's first confirmation and write finish.
            std::thread::sleep(Duration::from_millis(100));
            let window = t0.elapsed().as_secs_f64();
            let cost = packets_received(&zk) - p0 - background_rate * window;
            let at = election::cmd::verify::parse_time_ms(&first.unwrap().written_at).unwrap();
            let s0_ms = s0
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap()
                .as_millis() as i64;
            times.push((at - s0_ms) as f64);
            costs.push(cost);
            if let Some(r) = g.replicas[leader].take() {
                r.wait_exit(Duration::from_secs(10));
            }
            // Keep N replicas: a replacement joins at the end of the queue.
            g.spawn(1);
            std::thread::sleep(Duration::from_millis(500));
        }
        println!(
            "| {n} | {:.0} | {:.0} | {:.1} |",
            median(times),
            median(costs),
            rss.iter().sum::<f64>() / rss.len() as f64
        );
        g.stop_all();
    }
    rest_and_memory();
}

/// Rest traffic of N replicas, and RSS with every feature on.
fn rest_and_memory() {
    let n: usize = std::env::var("SCALE_REST")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let secs: u64 = std::env::var("SCALE_REST_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let tick = Duration::from_millis(
        std::env::var("SCALE_TICK_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(200),
    );
    let tick_flag = [
        "--zk-tick-time".to_string(),
        format!("{}ms", tick.as_millis()),
    ];
    let zk = ZkCluster::standalone_with(common::zk::ZkOptions {
        tick_time: Some(tick),
        ..Default::default()
    });
    let api = FakeApi::start();
    let mut g = Group::new(&zk.connect_string());
    g.env = vec![
        ("RUST_LOG".into(), "warn".into()),
        (
            "KUBECONFIG".into(),
            api.kubeconfig("bench").display().to_string(),
        ),
    ];
    // Two replicas as the chart runs them (listeners and labeller on), the
    // rest plain, all at the comparison's settings (the Group's defaults:
    // session 2 s, leader-timeout 200 ms, attempter-timeout 1 s).
    let mut full = Vec::new();
    for i in 0..2 {
        let http = format!("127.0.0.1:{}", free_port());
        g.extra = [
            "--http-addr".to_string(),
            http.clone(),
            "--admin-addr".into(),
            format!("127.0.0.1:{}", free_port()),
            "--pod-name".into(),
            format!("election-{i}"),
            "--pod-namespace".into(),
            "bench".into(),
            tick_flag[0].clone(),
            tick_flag[1].clone(),
        ]
        .to_vec();
        g.spawn(1);
        full.push(http);
        if i == 0 {
            g.wait_leader(Duration::from_secs(60));
        }
    }
    g.extra = tick_flag.to_vec();
    g.spawn(n.saturating_sub(2));
    std::thread::sleep(Duration::from_secs(5));
    let leader = g.replica(0).pid();
    let c0 = cpu_seconds(leader);
    let p0 = zk.packets(0);
    let r0 = packets_received(&zk);
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(secs));
    let window = t0.elapsed().as_secs_f64();
    let rate = (zk.packets(0) - p0) / window;
    let received = (packets_received(&zk) - r0) / window;
    let cpu = (cpu_seconds(leader) - c0) / window * 60.0;
    println!(
        "ZooKeeper packets per second at rest, {n} replicas, session 2s, leader-timeout 200ms, \
         attempter-timeout 1s, tickTime {} ms, over {window:.0} s: {rate:.1} sent + received, \
         {received:.1} received",
        tick.as_millis()
    );
    println!("leader CPU at rest (listeners and labeller on): {cpu:.2} s per minute");
    for (i, http) in full.iter().enumerate() {
        let answered = http_get(http.parse().unwrap(), "/healthz").is_some_and(|a| a.status == 200);
        let role = if i == 0 { "leader" } else { "idle candidate" };
        println!(
            "RSS with HTTP + admin listeners + Pod labeller on, {role}: {:.1} MB (healthz answered: {answered})",
            rss_mb(g.replica(i).pid())
        );
    }
    let plain: Vec<f64> = (2..g.replicas.len())
        .map(|i| rss_mb(g.replica(i).pid()))
        .collect();
    println!(
        "RSS of a plain idle candidate (listeners off): median {:.1} MB",
        median(plain)
    );
    g.stop_all();
}
