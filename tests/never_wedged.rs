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

use common::group::{Group, TRANSITIONS};
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

/// Threads of `pid` inside a `mkdir` (or `mkdirat`) system call now.
fn threads_in_mkdir(pid: u32) -> usize {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .flatten()
        .filter(|t| {
            std::fs::read_to_string(t.path().join("syscall")).is_ok_and(|s| {
                let nr = s
                    .split_whitespace()
                    .next()
                    .and_then(|n| n.parse::<i64>().ok());
                nr == Some(libc::SYS_mkdir) || nr == Some(libc::SYS_mkdirat)
            })
        })
        .count()
}

#[test]
#[ignore = "needs root and strace: run by scripts/test.sh as root"]
fn a_hung_file_dir_check_is_never_started_twice_and_fails_healthz() {
    assert!(unsafe { libc::geteuid() } == 0, "run as root");
    // Given a replica whose ZooKeeper refuses connections, so that it
    // keeps going through Init (a file-dir check, then the connect)
    let zk = ZkCluster::standalone();
    let proxy = FaultProxy::start(zk.server_addr(0));
    proxy.set_mode(Mode::Refuse);
    let mut g = Group::new(&proxy.addr().to_string());
    // Liveness bound: 2 x the longest wait (the 2 s session) + 5 s = 9 s.
    g.extra = ["--zk-connect-timeout", "1s"].map(String::from).to_vec();
    let bound = Duration::from_secs(9);
    g.spawn(1);
    let r = g.replica(0);
    r.wait_metric(
        TRANSITIONS,
        &[("to", "failover")],
        |n| n >= 1.0,
        Duration::from_secs(20),
    );
    // When file-dir hangs (every mkdir of it waits 60 s) and ZooKeeper is back
    let strace = common::faults::Strace::inject(
        r.pid(),
        "mkdir,mkdirat",
        "delay_enter=60000000",
        Some(&g.files_dir()),
    );
    proxy.set_mode(Mode::Pass);
    let hung_at = Instant::now();
    let inits = r.metric(TRANSITIONS, &[("to", "init")]).unwrap_or(0.0);
    // Then /healthz answers 503 within the liveness bound (+ one backoff
    // and the poll), while Init keeps retrying on the one hung check
    let mut most_hung = 0;
    let mut answer = None;
    let failed = wait_until(Duration::from_secs(30), Duration::from_millis(100), || {
        most_hung = most_hung.max(threads_in_mkdir(r.pid()));
        answer = http_get(r.http_addr(), "/healthz");
        answer.as_ref().is_some_and(|a| a.status == 503)
    });
    let took = hung_at.elapsed();
    eprintln!(
        "/healthz 503 after {took:?}: {answer:?}; at most {most_hung} thread(s) in the hung mkdir so far"
    );
    assert!(failed, "/healthz never failed: {answer:?}\n{}", g.logs());
    assert!(
        took <= bound + Duration::from_secs(2),
        "{took:?}\n{}",
        g.logs()
    );
    assert!(
        answer.unwrap().body.contains("file-dir check"),
        "{}",
        g.logs()
    );
    let retried = r.metric(TRANSITIONS, &[("to", "init")]).unwrap_or(0.0) - inits;
    assert!(retried >= 4.0, "only {retried} Init retries\n{}", g.logs());
    // And the blocking threads are not used up: one hung check, not one per retry
    most_hung = most_hung.max(threads_in_mkdir(r.pid()));
    eprintln!("{retried} Init retries, at most {most_hung} thread(s) in the hung mkdir");
    assert_eq!(most_hung, 1, "{}", g.logs());
    // And when file-dir answers again, the same check ends, /healthz is
    // 200 again and the replica leads
    drop(strace);
    g.wait_leader(Duration::from_secs(20));
    assert_eq!(healthz(r.http_addr()), Some(200));
    g.stop_all();
    g.assert_invariants();
}

/// Mounts a fresh tmpfs on `dir` (a new device id each time).
fn mount_tmpfs(dir: &std::path::Path) {
    std::fs::create_dir_all(dir).unwrap();
    let ok = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(dir)
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "mount a tmpfs on {}", dir.display());
}

fn unmount(dir: &std::path::Path) {
    let _ = Command::new("umount")
        .arg("-l")
        .arg(dir)
        .stderr(Stdio::null())
        .status();
}

/// Unmounts everything mounted on a directory when dropped.
struct Mounted(std::path::PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        for _ in 0..3 {
            unmount(&self.0);
        }
    }
}

#[test]
#[ignore = "needs root to mount a tmpfs: run by scripts/test.sh as root"]
fn a_file_dir_remounted_on_another_device_fails_healthz_and_a_restart_recovers() {
    assert!(unsafe { libc::geteuid() } == 0, "run as root");
    // Given a leader writing into a volume
    let zk = ZkCluster::standalone();
    let mut g = Group::new(&zk.connect_string());
    let dir = g.files_dir();
    mount_tmpfs(&dir);
    let _mounted = Mounted(dir.clone());
    // Liveness bound: 2 x the longest wait (the 2 s session) + 5 s = 9 s.
    g.extra = ["--zk-connect-timeout", "1s"].map(String::from).to_vec();
    let bound = Duration::from_secs(9);
    g.spawn(1);
    g.wait_leader(Duration::from_secs(20));
    // When another volume is mounted over it (a new device id: a freed
    // tmpfs id would be handed out again, so the old one stays below)
    mount_tmpfs(&dir);
    let remounted = Instant::now();
    // Then the replica refuses it (it pinned the device at start) and
    // /healthz answers 503 within the liveness bound (+ the leader's
    // three failed writes, a backoff and the poll)
    let r = g.replica(0);
    let mut answer = None;
    let failed = wait_until(Duration::from_secs(30), Duration::from_millis(100), || {
        answer = http_get(r.http_addr(), "/healthz");
        answer.as_ref().is_some_and(|a| a.status == 503)
    });
    let took = remounted.elapsed();
    eprintln!("/healthz 503 after {took:?}: {answer:?}");
    assert!(failed, "/healthz never failed: {answer:?}\n{}", g.logs());
    assert!(
        took <= bound + Duration::from_secs(3),
        "{took:?}\n{}",
        g.logs()
    );
    assert!(
        answer.unwrap().body.contains("another device"),
        "{}",
        g.logs()
    );
    assert!(
        std::fs::read_dir(&dir).unwrap().next().is_none(),
        "wrote into the new volume"
    );
    // And a restart (what the kubelet does) pins the new volume and leads
    g.replicas[0].take().unwrap().kill();
    g.spawn(1);
    g.wait_leader(Duration::from_secs(20));
    g.stop_all();
    g.assert_invariants();
}
