//! Never wedged: whatever stalls around the daemon (its log reader, a
//! ZooKeeper request of the claim, a hung file-dir), it keeps its state
//! machine, `/healthz` and SIGTERM working, or says it cannot
//! (`/healthz` 503) so that the kubelet restarts it. Real processes, a
//! real ZooKeeper; the file-dir faults need root (strace, tmpfs) and are
//! `#[ignore]`d elsewhere, never silently passed.

mod common;

use std::ffi::OsString;
use std::os::fd::AsRawFd as _;
use std::process::{Child, ChildStderr, Command, Stdio};
use std::time::{Duration, Instant};

use common::group::Group;
use common::kube_api::http_get;
use common::observe;
use common::proxy::{FaultProxy, Mode};
use common::wait_until;
use common::zk::ZkCluster;

/// The binary under test (as [`common::replica::Replica::spawn`] picks it).
fn program() -> OsString {
    std::env::var_os("ELECTION_TEST_BIN")
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_election").into())
}

/// A daemon whose stderr is a one-page pipe that nobody reads.
struct Unread {
    child: Child,
    stderr: ChildStderr,
}

impl Unread {
    fn spawn(args: &[String]) -> Unread {
        let mut child = Command::new(program())
            .args(args)
            // The client's debug lines (a few per request): the log
            // queue fills within seconds.
            .env("RUST_LOG", "info,zookeeper_client=debug")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn the daemon");
        let stderr = child.stderr.take().expect("piped stderr");
        // The smallest pipe the kernel allows (one page): a few dozen log
        // lines fill it.
        let size = unsafe { libc::fcntl(stderr.as_raw_fd(), libc::F_SETPIPE_SZ, 4096) };
        assert!(
            size >= 4096,
            "F_SETPIPE_SZ: {}",
            std::io::Error::last_os_error()
        );
        Unread { child, stderr }
    }

    /// Bytes waiting in the pipe.
    fn queued(&self) -> usize {
        let mut n: libc::c_int = 0;
        let rc = unsafe { libc::ioctl(self.stderr.as_raw_fd(), libc::FIONREAD, &mut n) };
        assert_eq!(rc, 0, "FIONREAD: {}", std::io::Error::last_os_error());
        usize::try_from(n).unwrap_or(0)
    }
}

impl Drop for Unread {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn healthz(http: std::net::SocketAddr) -> Option<u16> {
    http_get(http, "/healthz").map(|a| a.status)
}

#[test]
fn a_leader_whose_stderr_nobody_reads_keeps_writing_answers_and_hands_over() {
    // Given a leader r0 whose stderr is a pipe nobody reads, and that
    // pipe full (a stalled log reader: Docker's blocking mode, a stuck
    // shipper)
    let zk = ZkCluster::standalone();
    let mut g = Group::new(&zk.connect_string());
    g.extra = ["--leader-timeout", "100ms"].map(String::from).to_vec();
    let args = g.args(0);
    let http: std::net::SocketAddr = args
        [args.iter().position(|a| a == "--http-addr").unwrap() + 1]
        .parse()
        .unwrap();
    let mut r0 = Unread::spawn(&args);
    g.replicas.push(None); // r0 is not the harness's: r1 is next
    let token = {
        let mut token = None;
        let led = wait_until(Duration::from_secs(20), Duration::from_millis(50), || {
            token = g
                .newest_record()
                .filter(|r| r.node_id == "r0")
                .map(|r| r.token);
            token.is_some()
        });
        assert!(led, "r0 did not lead");
        token.unwrap()
    };
    // A line that does not fit waits for room: full is within one line of 4 KiB.
    let full = wait_until(Duration::from_secs(30), Duration::from_millis(50), || {
        r0.queued() >= 4096 - 512
    });
    assert!(full, "the pipe holds only {} bytes", r0.queued());
    let full_at = r0.queued();
    // Then its log queue fills too, and it drops lines and counts them
    let filled = Instant::now();
    let dropped = wait_until(Duration::from_secs(60), Duration::from_millis(100), || {
        observe::metrics(http)
            .is_some_and(|m| m.sum("election_log_lines_dropped_total", &[]) >= 1.0)
    });
    assert!(dropped, "no dropped line counted");
    eprintln!(
        "pipe full to the first dropped line: {:?}",
        filled.elapsed()
    );
    // And it keeps writing files (time measured in its own writes) and
    // answering /healthz
    g.wait_more_files_of(token, 20, Duration::from_secs(20));
    assert_eq!(healthz(http), Some(200));
    assert!(r0.queued() >= full_at, "nobody read the pipe");
    // And when a candidate queues and r0 gets SIGTERM, it hands over and exits 0
    g.spawn(1);
    g.replica(1)
        .wait_status(|s| s.state == "attempter", Duration::from_secs(20));
    let signalled = Instant::now();
    unsafe { libc::kill(r0.child.id() as i32, libc::SIGTERM) };
    // (bound: Stopping's close, 2 s, + the listeners' shutdown, 0.5 s, + the
    // log flush the writer thread gives up after, 1.1 s, + 1 s)
    let mut status = None;
    let exited = wait_until(Duration::from_secs(20), Duration::from_millis(10), || {
        status = r0.child.try_wait().unwrap();
        status.is_some()
    });
    let took = signalled.elapsed();
    assert!(exited, "r0 did not exit after SIGTERM\n{}", g.logs());
    eprintln!("SIGTERM to exit with a full stderr pipe: {took:?}");
    assert!(took <= Duration::from_millis(4600), "{took:?}");
    assert_eq!(status.unwrap().code(), Some(0));
    g.wait_leader_other_than(0, Duration::from_secs(5));
    g.stop_all();
    g.assert_invariants();
}

#[test]
fn sigterm_while_the_claim_of_a_new_leader_hangs_exits_at_once() {
    // Given a leader r0 and a candidate r1 whose link to ZooKeeper is slow
    // (1 s each way; sessions of 10 s, so the link only slows requests)
    let zk = ZkCluster::standalone();
    let proxy = FaultProxy::start(zk.server_addr(0));
    let mut g = Group::new(&zk.connect_string());
    g.extra = ["--zk-session-timeout", "10s", "--attempter-timeout", "10s"]
        .map(String::from)
        .to_vec();
    g.spawn(1);
    g.wait_leader(Duration::from_secs(20));
    g.servers = proxy.addr().to_string();
    g.spawn(1);
    let r1 = g.replica(1);
    r1.wait_status(|s| s.state == "attempter", Duration::from_secs(20));
    proxy.set_mode(Mode::Delay(Duration::from_secs(1)));
    // When r0 hands over, and r1's claim (the token floor read, the
    // claiming multi-op) is cut off from ZooKeeper as soon as r1 enters Leader
    g.replica(0).signal(libc::SIGTERM);
    r1.wait_status(|s| s.state == "leader", Duration::from_secs(30));
    proxy.set_mode(Mode::Blackhole);
    let claiming = r1.status().is_some_and(|s| s.token.is_none());
    assert!(claiming, "r1 claimed before the cut\n{}", g.logs());
    // And r1 gets SIGTERM in the middle of its claim
    let signalled = Instant::now();
    r1.signal(libc::SIGTERM);
    // Then it exits 0 within Stopping's close bound (2 s) + 1 s, not after
    // the claim's requests time out (a session timeout each)
    let status = r1.wait_exit(Duration::from_secs(30));
    let took = signalled.elapsed();
    eprintln!("SIGTERM during the claim to exit: {took:?}");
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{}", g.logs());
    assert!(took <= Duration::from_secs(3), "{took:?}\n{}", g.logs());
}
