//! Nothing the ZooKeeper client does may starve the daemon: while its
//! client fails to reconnect (a route that vanished, a server that refuses),
//! the replica stays idle, `/healthz` answers and SIGTERM ends it cleanly.
//!
//! The connect errors that return at once (ENETUNREACH, ECONNREFUSED on
//! loopback) are the ones that made zookeeper-client 0.11.2 loop without
//! yielding once its reconnect deadline had passed (see
//! `vendor/zookeeper-client/PATCHES.md`). The network-namespace tests need
//! root and are `#[ignore]`d otherwise (`scripts/test.sh` runs them as root).

mod common;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use common::free_port;
use common::kube_api::http_get;
use common::procfs::cpu_seconds;
use common::replica::Replica;
use common::zk::ZkCluster;

/// Session timeout of the replica under test (the server's minimum with
/// the harness's `tickTime=200` is 400 ms).
const SESSION: Duration = Duration::from_secs(1);

fn replica_args(servers: &str, http: SocketAddr, dir: &std::path::Path) -> Vec<String> {
    [
        "run",
        "--zk-servers",
        servers,
        "--zk-root",
        "/election/isolation",
        "--zk-session-timeout",
        &format!("{}ms", SESSION.as_millis()),
        "--leader-timeout",
        "200ms",
        "--attempter-timeout",
        "1s",
        "--file-dir",
        dir.to_str().unwrap(),
        "--node-id",
        "r0",
        "--http-addr",
        &http.to_string(),
        "--admin-addr",
        "off",
        "--failover-max-backoff",
        "500ms",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Over 10 session timeouts of failing reconnection: less than 10 % of a
/// core, `/healthz` answering every second; then SIGTERM exits 0 within 2 s.
fn assert_idle_responsive_and_stoppable(replica: &Replica, http: SocketAddr) {
    let pid = replica.pid();
    let cpu0 = cpu_seconds(pid);
    let t0 = Instant::now();
    let mut silent = Vec::new();
    while t0.elapsed() < SESSION * 10 {
        let asked = Instant::now();
        match http_get(http, "/healthz") {
            Some(a) if a.status == 200 => {}
            other => silent.push(format!(
                "{:?}: {:?} after {:?}",
                t0.elapsed(),
                other.map(|a| a.status),
                asked.elapsed()
            )),
        }
        std::thread::sleep(Duration::from_secs(1).saturating_sub(asked.elapsed()));
    }
    let cpu = (cpu_seconds(pid) - cpu0) / t0.elapsed().as_secs_f64();
    // Every Failover drops a client, and with it its session thread: the
    // thread count stays small however many clients were built.
    let threads = std::fs::read_dir(format!("/proc/{pid}/task")).map_or(0, |d| d.count());
    println!("threads after reconnecting: {threads}");
    println!(
        "cpu while reconnecting: {:.1} % of a core over {:?}",
        cpu * 100.0,
        t0.elapsed()
    );
    let stop = Instant::now();
    let signalled = replica.signal(libc::SIGTERM);
    let status = replica.wait_exit(Duration::from_secs(10));
    let took = stop.elapsed();
    println!("/healthz silences: {}", silent.len());
    println!("exit after SIGTERM: {status:?} in {took:?}");
    // All three checked together, so a failure shows the whole picture.
    let mut failures = Vec::new();
    if cpu >= 0.10 {
        failures.push(format!("used {:.0} % of a core", cpu * 100.0));
    }
    if threads > 16 {
        failures.push(format!("runs {threads} threads (a session thread leaks?)"));
    }
    if !silent.is_empty() {
        failures.push(format!("/healthz did not answer 200: {silent:#?}"));
    }
    if !(signalled && status.is_some_and(|s| s.success()) && took < Duration::from_secs(2)) {
        failures.push(format!("SIGTERM: {status:?} after {took:?}"));
    }
    assert!(
        failures.is_empty(),
        "while its client reconnected, the replica {failures:#?}\n{}",
        replica.output()
    );
}

/// Waits until the replica leads and has written (Leader is entered
/// before the claim: a fault injected in between would fail the claim,
/// not test a leader's reconnection).
fn wait_leading(replica: &Replica) {
    replica.wait_status(
        |s| s.state == "leader" && s.last_write_ms.is_some(),
        Duration::from_secs(30),
    );
}

#[test]
fn a_replica_whose_zookeeper_refuses_connections_stays_idle_and_responsive() {
    // Given a leader on a loopback IP literal
    let mut zk = ZkCluster::standalone();
    let dir = tempfile::tempdir().unwrap();
    let http = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let args = replica_args(&zk.connect_string(), http, dir.path());
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let replica = Replica::spawn(&refs, &[]);
    wait_leading(&replica);
    // When ZooKeeper is killed (every reconnection is refused at once)
    zk.kill(0);
    // Then the replica idles, answers and stops on SIGTERM
    assert_idle_responsive_and_stoppable(&replica, http);
}

#[test]
fn sigterm_while_the_session_waits_for_zookeeper_exits_at_once() {
    // Given a leader whose ZooKeeper has been down for two session
    // timeouts (the session is kept, suspended, for the server to decide)
    let mut zk = ZkCluster::standalone();
    let dir = tempfile::tempdir().unwrap();
    let http = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let args = replica_args(&zk.connect_string(), http, dir.path());
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let replica = Replica::spawn(&refs, &[]);
    wait_leading(&replica);
    zk.kill(0);
    std::thread::sleep(SESSION * 2);
    let failovers = replica.metric("election_transitions_total", &[("to", "failover")]);
    assert_eq!(
        failovers,
        Some(0.0),
        "the session is kept\n{}",
        replica.output()
    );
    // When it gets SIGTERM
    let stop = Instant::now();
    assert!(replica.signal(libc::SIGTERM));
    let status = replica.wait_exit(Duration::from_secs(10));
    let took = stop.elapsed();
    println!("exit after SIGTERM while suspended: {status:?} in {took:?}");
    // Then it exits 0 within 2 s (the close cannot be delivered)
    assert!(
        status.is_some_and(|s| s.success()) && took < Duration::from_secs(2),
        "SIGTERM: {status:?} after {took:?}\n{}",
        replica.output()
    );
}

/// A network namespace with a veth pair to the host, removed (with its
/// veth pair) on drop, also when the test fails.
struct Netns {
    name: String,
    host_if: String,
}

fn ip(args: &[&str]) -> bool {
    Command::new("ip")
        .args(args)
        .status()
        .is_ok_and(|s| s.success())
}

impl Netns {
    fn create(tag: u32) -> Netns {
        let ns = Netns {
            name: format!("elzk{tag}"),
            host_if: format!("elzkh{tag}"),
        };
        let peer = format!("elzkn{tag}");
        assert!(ip(&["netns", "add", &ns.name]), "ip netns add");
        assert!(ip(&[
            "link",
            "add",
            &ns.host_if,
            "type",
            "veth",
            "peer",
            "name",
            &peer
        ]));
        assert!(ip(&["link", "set", &peer, "netns", &ns.name]));
        ns
    }

    fn exec(&self, args: &[&str]) -> bool {
        let mut all = vec!["netns", "exec", &self.name];
        all.extend_from_slice(args);
        ip(&all)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        ip(&["link", "del", &self.host_if]);
        ip(&["netns", "del", &self.name]);
    }
}

/// Forwards every connection accepted on `listener` to `upstream`, in
/// background threads, for the life of the test process.
fn forward(listener: TcpListener, upstream: SocketAddr) {
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(down) = conn else { return };
            let Ok(up) = TcpStream::connect(upstream) else {
                continue;
            };
            for (mut from, mut to) in [
                (down.try_clone().unwrap(), up.try_clone().unwrap()),
                (up, down),
            ] {
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut from, &mut to);
                    let _ = to.shutdown(std::net::Shutdown::Both);
                });
            }
        }
    });
}

#[test]
#[ignore = "needs root for ip netns: run by scripts/test.sh as root"]
fn a_replica_whose_route_to_zookeeper_vanishes_stays_idle_and_responsive() {
    // When the route to ZooKeeper disappears (connect fails with
    // ENETUNREACH at once)
    in_netns_when(0, |ns, zk_ip, _| {
        assert!(ns.exec(&["ip", "route", "del", &format!("{zk_ip}/32")]));
    });
}

#[test]
#[ignore = "needs root for ip netns and nft: run by scripts/test.sh as root"]
fn a_replica_whose_egress_to_zookeeper_is_firewalled_stays_idle_and_responsive() {
    // When an egress rule drops packets to ZooKeeper (connect fails with
    // EPERM at once); the nft table lives and dies with the namespace
    in_netns_when(1, |ns, zk_ip, zk_port| {
        let port = zk_port.to_string();
        assert!(ns.exec(&["nft", "add", "table", "inet", "elzk"]));
        assert!(ns.exec(&[
            "nft",
            "add",
            "chain",
            "inet",
            "elzk",
            "out",
            "{ type filter hook output priority 0 ; }",
        ]));
        assert!(ns.exec(&[
            "nft", "add", "rule", "inet", "elzk", "out", "ip", "daddr", zk_ip, "tcp", "dport",
            &port, "drop",
        ]));
    });
}

/// Given a leader in its own network namespace, reaching ZooKeeper at an IP
/// literal through its own host route, and reached by the test on another
/// subnet of the same veth pair: applies `fault` (namespace, ZooKeeper's
/// address and port), then checks the replica idles, answers and stops.
fn in_netns_when(slot: u32, fault: impl FnOnce(&Netns, &str, u16)) {
    assert!(
        unsafe { libc::geteuid() } == 0,
        "network namespace tests need root (ip netns, nft): they are #[ignore]d for that"
    );
    let zk = ZkCluster::standalone();
    let tag = std::process::id() % 100 + 20 + 100 * slot;
    let ns = Netns::create(tag);
    let (host_ip, ns_ip, zk_ip) = (
        format!("10.231.{tag}.1"),
        format!("10.231.{tag}.2"),
        format!("10.232.{tag}.1"),
    );
    let peer = format!("elzkn{tag}");
    assert!(ip(&[
        "addr",
        "add",
        &format!("{host_ip}/24"),
        "dev",
        &ns.host_if
    ]));
    assert!(ip(&[
        "addr",
        "add",
        &format!("{zk_ip}/32"),
        "dev",
        &ns.host_if
    ]));
    assert!(ip(&["link", "set", &ns.host_if, "up"]));
    assert!(ns.exec(&["ip", "link", "set", "lo", "up"]));
    assert!(ns.exec(&["ip", "addr", "add", &format!("{ns_ip}/24"), "dev", &peer]));
    assert!(ns.exec(&["ip", "link", "set", &peer, "up"]));
    assert!(ns.exec(&["ip", "route", "add", &format!("{zk_ip}/32"), "dev", &peer]));
    let zk_port = free_port();
    let zk_addr: SocketAddr = format!("{zk_ip}:{zk_port}").parse().unwrap();
    forward(TcpListener::bind(zk_addr).unwrap(), zk.server_addr(0));
    let http: SocketAddr = format!("{ns_ip}:{}", free_port()).parse().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut args: Vec<String> = ["netns", "exec", &ns.name, env!("CARGO_BIN_EXE_election")]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.extend(replica_args(&zk_addr.to_string(), http, dir.path()));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let replica = Replica::spawn_program("ip", &refs, &[]);
    wait_leading(&replica);
    fault(&ns, &zk_ip, zk_port);
    assert!(
        TcpStream::connect_timeout(&http, Duration::from_secs(2)).is_ok(),
        "the test still reaches the replica"
    );
    // Then the replica idles, answers and stops on SIGTERM
    assert_idle_responsive_and_stoppable(&replica, http);
}
