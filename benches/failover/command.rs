//! Scenarios of `election run -- CMD` (`BENCH_SCENARIOS=command`): three
//! replicas running a command that logs its start (token, node, pid and
//! bash's `$EPOCHREALTIME`, microseconds, no fork) and then `exec`s
//! `sleep`, so it exits at once on SIGTERM. Each round measures:
//!
//! - handover: SIGTERM to the leader -> the successor's command starts;
//! - frozen daemon: SIGSTOP to the leader -> its command is dead (a pidfd,
//!   polled by the kernel) and -> the successor's command starts;
//! - crash of the command: SIGKILL to it -> the next command runs (on
//!   another replica: the one whose command crashed backs off).
//!
//! The session is 2 s (T), so the frozen leader's watchdog kills its command
//! by the lease's end, at most T/2 after the last confirmation.

use std::path::Path;
use std::time::{Duration, SystemTime};

use super::common::group::Group;
use super::common::procfs::median;
use super::common::wait_until;
use super::common::zk::ZkCluster;

/// One start of the command: its token, node id, pid and wall time (ms).
#[derive(Clone, Debug)]
struct Start {
    node: String,
    pid: i32,
    at_ms: f64,
}

fn now_ms() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
        * 1000.0
}

fn starts(log: &Path) -> Vec<Start> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut w = l.strip_prefix("start ")?.split(' ');
            let _token: u64 = w.next()?.parse().ok()?;
            Some(Start {
                node: w.next()?.to_owned(),
                pid: w.next()?.parse().ok()?,
                at_ms: w.next()?.replace(',', ".").parse::<f64>().ok()? * 1000.0,
            })
        })
        .collect()
}

/// Waits for start number `n + 1` (0-based `n`) and returns it.
fn wait_start(log: &Path, n: usize, g: &Group) -> Start {
    let ok = wait_until(Duration::from_secs(30), Duration::from_millis(1), || {
        starts(log).len() > n
    });
    assert!(ok, "no command start #{}\n{}", n + 1, g.logs());
    starts(log)[n].clone()
}

fn index_of(node: &str) -> usize {
    node.strip_prefix('r').unwrap().parse().unwrap()
}

/// Waits until every replica but the leader `leader` is a candidate.
fn wait_candidates(g: &Group, leader: usize) {
    for (i, r) in g.replicas.iter().enumerate() {
        if let Some(r) = r.as_ref().filter(|_| i != leader) {
            r.wait_status(|s| s.state == "attempter", Duration::from_secs(30));
        }
    }
}

/// Blocks until process `pid` has exited (a pidfd turns readable); returns
/// the time it was seen dead, or `None` after `timeout`.
fn wait_dead(pid: i32, timeout: Duration) -> Option<f64> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) } as libc::c_int;
    if fd < 0 {
        // Already gone (reaped).
        return Some(now_ms());
    }
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd; `fd` is ours and closed right after.
    let ready = unsafe { libc::poll(&mut pfd, 1, timeout.as_millis() as libc::c_int) };
    let at = now_ms();
    // SAFETY: closing the fd opened above.
    unsafe { libc::close(fd) };
    (ready > 0).then_some(at)
}

fn summary(v: &[f64]) -> String {
    format!(
        "median {:.0} ms (min {:.0}, max {:.0})",
        median(v.to_vec()),
        v.iter().cloned().fold(f64::MAX, f64::min),
        v.iter().cloned().fold(0.0, f64::max)
    )
}

/// Runs `rounds` rounds of the three scenarios and prints their times.
pub fn run(rounds: usize) {
    let zk = ZkCluster::standalone();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("child.log");
    let script = format!(
        "echo \"start $ELECTION_FENCING_TOKEN $ELECTION_NODE_ID $$ $EPOCHREALTIME\" >> {}; exec sleep 100000",
        log.display()
    );
    let mut g = Group::new(&zk.connect_string());
    g.env = vec![("RUST_LOG".into(), "warn".into())];
    g.extra = vec![
        "--attempter-timeout".into(),
        "10s".into(),
        "--".into(),
        "bash".into(),
        "-c".into(),
        script,
    ];
    g.spawn(3);
    let mut seen = 0;
    let mut current = wait_start(&log, seen, &g);
    seen += 1;

    let (mut handover, mut dead, mut frozen, mut crash) = (vec![], vec![], vec![], vec![]);
    let mut moved = 0;
    for round in 0..rounds {
        // Handover: SIGTERM to the leader.
        let leader = index_of(&current.node);
        wait_candidates(&g, leader);
        std::thread::sleep(Duration::from_millis(300));
        let t0 = now_ms();
        g.replica(leader).signal(libc::SIGTERM);
        current = wait_start(&log, seen, &g);
        seen += 1;
        handover.push(current.at_ms - t0);
        if let Some(r) = g.replicas[leader].take() {
            r.wait_exit(Duration::from_secs(10));
        }
        g.spawn(1);

        // Frozen daemon: SIGSTOP to the leader.
        let leader = index_of(&current.node);
        wait_candidates(&g, leader);
        std::thread::sleep(Duration::from_millis(300));
        let t0 = now_ms();
        g.replica(leader).signal(libc::SIGSTOP);
        let died = wait_dead(current.pid, Duration::from_secs(10));
        let died = died.unwrap_or_else(|| {
            panic!(
                "the frozen leader's command outlived its lease\n{}",
                g.logs()
            )
        });
        current = wait_start(&log, seen, &g);
        seen += 1;
        dead.push(died - t0);
        frozen.push(current.at_ms - t0);
        if let Some(r) = g.replicas[leader].take() {
            r.kill();
        }
        g.spawn(1);

        // Crash of the command: SIGKILL to it.
        let leader = index_of(&current.node);
        wait_candidates(&g, leader);
        std::thread::sleep(Duration::from_millis(300));
        let crashed = current.clone();
        let t0 = now_ms();
        // SAFETY: a signal to a pid we read from the command's own log.
        unsafe { libc::kill(crashed.pid, libc::SIGKILL) };
        current = wait_start(&log, seen, &g);
        seen += 1;
        crash.push(current.at_ms - t0);
        moved += usize::from(current.node != crashed.node);
        eprintln!(
            "command round {round}: handover {:.0} ms, frozen: dead {:.0} ms, successor {:.0} ms, crash {:.0} ms",
            handover[round], dead[round], frozen[round], crash[round]
        );
    }
    println!(
        "election run -- CMD: 3 replicas, session 2s (T), a command that exits at once on SIGTERM, {rounds} rounds"
    );
    println!(
        "handover on SIGTERM (signal -> successor's command start): {}",
        summary(&handover)
    );
    println!(
        "frozen daemon (SIGSTOP -> its command dead): {} (goal <= T/2 + 100 = 1100 ms)",
        summary(&dead)
    );
    println!(
        "frozen daemon (SIGSTOP -> successor's command start): {}",
        summary(&frozen)
    );
    println!(
        "crash of the command (SIGKILL -> next command start): {}, on another replica in {moved} of {rounds}",
        summary(&crash)
    );
    g.stop_all();
}
