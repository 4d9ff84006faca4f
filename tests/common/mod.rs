//! The harness shared by the integration tests: a real ZooKeeper
//! ([`zk::ZkCluster`]), a fault-injecting TCP proxy ([`proxy::FaultProxy`]),
//! daemon processes ([`replica::Replica`]) and what they publish over HTTP
//! ([`observe`]), and small helpers to pick
//! ports, wait for conditions and read ZooKeeper with `zookeeper-client`.
//!
//! Every test binary includes this module with `mod common;` but uses only
//! part of it, hence the `dead_code` allowance.
#![allow(dead_code)]

pub mod faults;
pub mod group;
pub mod kube_api;
pub mod observe;
pub mod procfs;
pub mod proxy;
pub mod replica;
pub mod zk;

use std::collections::HashSet;
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::net::{Ipv4Addr, TcpListener};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use zookeeper_client::{Client, SessionState};

/// Session timeout of the clients made by [`zk_client`].
pub const CLIENT_SESSION_TIMEOUT: Duration = Duration::from_secs(10);

/// Ports handed out by [`free_port`] in this process, never handed out twice:
/// a port is free only until somebody binds it, and two servers of one test
/// are configured before either starts.
static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// Returns a loopback TCP port that nothing listens on right now.
///
/// Ports come from below the kernel's ephemeral range when possible, so
/// that a port released while a server restarts cannot be taken by an
/// outgoing connection (they pick their local port from that range). A
/// port is never returned twice by one process. Falls back to binding port
/// 0. Another process may still take the port before it is used: callers
/// that start a server retry on a clash.
pub fn free_port() -> u16 {
    let mut handed = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    let handed = handed.get_or_insert_with(HashSet::new);
    let (low, high) = non_ephemeral_range();
    for _ in 0..200 {
        let port = low + (random_u64() % u64::from(high - low)) as u16;
        if !handed.contains(&port) && TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
            handed.insert(port);
            return port;
        }
    }
    loop {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0");
        let port = listener.local_addr().expect("local addr").port();
        if handed.insert(port) {
            return port;
        }
    }
}

/// The range `[low, high)` that [`free_port`] draws from: from 10000 up to
/// the start of the kernel's ephemeral range (32768 by default).
fn non_ephemeral_range() -> (u16, u16) {
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    if ephemeral_low > 11000 {
        (10000, ephemeral_low)
    } else {
        // An unusual kernel setting: use the range above 61000 instead.
        (61000, 65000)
    }
}

/// A random number from the standard library's per-process hash keys.
fn random_u64() -> u64 {
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    hasher.finish()
}

/// Calls `condition` every `poll` until it returns true (then returns true)
/// or `timeout` has passed (then returns false). The condition is always
/// checked at least once, and once more at the deadline.
pub fn wait_until(timeout: Duration, poll: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        std::thread::sleep(poll.min(deadline - now));
    }
}

/// The async form of [`wait_until`]: sleeps with tokio between checks, so
/// it can run inside a runtime (also one with paused time).
pub async fn wait_until_async(
    timeout: Duration,
    poll: Duration,
    mut condition: impl FnMut() -> bool,
) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return false;
        }
        tokio::time::sleep(poll.min(deadline - now)).await;
    }
}

/// Connects a `zookeeper-client` session to `connect` (a connect string
/// such as `127.0.0.1:2181,127.0.0.1:2182`) with a
/// [`CLIENT_SESSION_TIMEOUT`] session, for tests that read or change the
/// data behind the daemon's back. Panics if no session is established
/// within 30 s. Close it with [`close_client`].
pub async fn zk_client(connect: &str) -> Client {
    zk_client_with_timeout(connect, CLIENT_SESSION_TIMEOUT).await
}

/// [`zk_client`] with a chosen session timeout. The client declares the
/// connection lost after 2/5 of it without a byte from the server (it
/// pings after 3/20 of it idle), and gives the session up as `Expired`
/// by itself after 7/5 of it without reconnecting.
pub async fn zk_client_with_timeout(connect: &str, session_timeout: Duration) -> Client {
    let connecting = Client::connector()
        .with_session_timeout(session_timeout)
        .connect(connect);
    match tokio::time::timeout(Duration::from_secs(30), connecting).await {
        Ok(Ok(client)) => client,
        Ok(Err(e)) => panic!("cannot connect a ZooKeeper client to {connect}: {e}"),
        Err(_) => panic!("no ZooKeeper session with {connect} within 30 s"),
    }
}

/// Closes `client` and waits (up to 2 s) until its session is closed on
/// the server.
///
/// Dropping the last handle of a client sends the close request from a
/// background task: a test that drops it and returns at once (ending the
/// runtime) leaves the session open until it expires, with its ephemeral
/// nodes. Clones of `client` that are still alive keep the session open;
/// this then returns after 2 s. Returns at once if the session has already
/// ended (`Expired`, `Closed`, `AuthFailed`).
pub async fn close_client(client: Client) {
    let mut watcher = client.state_watcher();
    drop(client);
    let closed = async {
        loop {
            let state = watcher.peek_state();
            if state.is_terminated() {
                return state;
            }
            watcher.changed().await;
        }
    };
    let _: Result<SessionState, _> = tokio::time::timeout(Duration::from_secs(2), closed).await;
}
