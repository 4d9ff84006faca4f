//! The HTTP listener's address family: `[::]` (the chart's and the
//! binary's default form) serves IPv4 and IPv6 clients whatever the host's
//! `net.ipv6.bindv6only`, and falls back to IPv4 on a host without IPv6.
//! Real daemon processes; no ZooKeeper is needed (the listener serves
//! whatever the election does).

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::kube_api::http_get;
use common::replica::Replica;
use common::{free_port, wait_until};
use serde_json::Value;

/// Poll interval of every wait.
const POLL: Duration = Duration::from_millis(50);
/// Bound on a listener coming up.
const ELECTION: Duration = Duration::from_secs(30);
/// Bound on a daemon exiting after SIGTERM.
const EXIT: Duration = Duration::from_secs(15);

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

/// `/status` as JSON, if the listener answers 200 with JSON.
fn status(http: SocketAddr) -> Option<Value> {
    let answer = http_get(http, "/status")?;
    (answer.status == 200)
        .then(|| serde_json::from_str(&answer.body).ok())
        .flatten()
}

/// `election run` against `zk` (nothing listens there), writing to
/// `dir`, its HTTP listener on `http`, no admin listener.
fn run_flags<'a>(zk: &'a str, dir: &'a tempfile::TempDir, http: &'a str) -> [&'a str; 9] {
    let dir = dir.path().to_str().unwrap();
    [
        "run",
        "--zk-servers",
        zk,
        "--file-dir",
        dir,
        "--http-addr",
        http,
        "--admin-addr",
        "off",
    ]
}

#[test]
fn an_http_listener_on_the_ipv6_any_address_answers_ipv4_and_ipv6_clients() {
    // Given a daemon whose HTTP listener is bound to [::] (the chart's and
    // the binary's default form), with no ZooKeeper to reach: the listener
    // serves whatever the election does
    let dir = tempfile::tempdir().unwrap();
    let zk = loopback().to_string();
    let port = free_port();
    let http = format!("[::]:{port}");
    let replica = Replica::spawn(&run_flags(&zk, &dir, &http), &[]);
    // When an IPv4 and an IPv6 client ask for /healthz and /status
    let v4 = SocketAddr::from(([127, 0, 0, 1], port));
    let v6 = SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port));
    // Then both are answered by the same daemon
    for addr in [v4, v6] {
        let answered = wait_until(ELECTION, POLL, || {
            http_get(addr, "/healthz").is_some_and(|a| a.status == 200)
        });
        assert!(answered, "no /healthz on {addr}\n{}", replica.output());
        let s = status(addr).unwrap_or_else(|| panic!("no /status on {addr}"));
        assert_eq!(s["node_id"], status(v4).unwrap()["node_id"], "{addr}");
    }
    assert!(replica.signal(libc::SIGTERM));
    assert!(replica.wait_exit(EXIT).is_some(), "{}", replica.output());
}

#[test]
#[ignore = "needs strace: run by scripts/test.sh as root"]
fn without_ipv6_the_ipv6_any_address_falls_back_to_ipv4() {
    // Given a host without IPv6: strace fails the daemon's first socket(2)
    // call, the AF_INET6 one of the HTTP listener, with EAFNOSUPPORT
    let dir = tempfile::tempdir().unwrap();
    let zk = loopback().to_string();
    let port = free_port();
    let http = format!("[::]:{port}");
    let tracer = Replica::spawn_program(
        "strace",
        &[
            "-f",
            "-qq",
            "-o",
            "/dev/null",
            "-e",
            "trace=socket",
            "-e",
            "inject=socket:error=EAFNOSUPPORT:when=1",
            env!("CARGO_BIN_EXE_election"),
        ]
        .iter()
        .chain(&run_flags(&zk, &dir, &http))
        .copied()
        .collect::<Vec<_>>(),
        &[],
    );
    // When the daemon starts
    let v4 = SocketAddr::from(([127, 0, 0, 1], port));
    let answered = wait_until(ELECTION, POLL, || {
        http_get(v4, "/healthz").is_some_and(|a| a.status == 200)
    });
    // Then it says so and serves on IPv4 instead of failing to start
    let output = tracer.output();
    assert!(answered, "no /healthz on {v4}\n{output}");
    assert!(output.contains("no IPv6 on this host"), "{output}");
    // strace ignores SIGTERM while its tracee runs: stop the daemon itself.
    let children =
        std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", tracer.pid())).unwrap();
    let daemon: i32 = children.split_whitespace().next().unwrap().parse().unwrap();
    assert_eq!(unsafe { libc::kill(daemon, libc::SIGTERM) }, 0);
    assert!(tracer.wait_exit(EXIT).is_some(), "{}", tracer.output());
}
