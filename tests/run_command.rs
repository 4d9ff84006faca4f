//! `election run -- CMD`: the leader runs a command instead of writing
//! files, against a real ZooKeeper with replicas as real processes. The
//! commands are shell loops appending to one shared log, so the order of
//! their lines is the order in which the children of all replicas acted.
//!
//! Bounds are generous (a loaded 2-core machine); speed is measured by
//! `cargo bench --bench failover`, not asserted.

mod common;

use std::path::Path;
use std::time::Duration;

use common::group::Group;
use common::proxy::{FaultProxy, Mode};
use common::wait_until;
use common::zk::ZkCluster;

/// A command that logs `start <token> <node> <pid>`, then `beat <token>`
/// every 20 ms; on SIGTERM it logs `term <token>` and exits 0. With
/// `grandchild`, it first starts a `sleep` in its process group and logs
/// `grand <pid>`.
fn looping_command(log: &Path, grandchild: bool) -> Vec<String> {
    let log = log.display();
    let grand = if grandchild {
        format!("sleep 1000 & echo \"grand $!\" >> {log}; ")
    } else {
        String::new()
    };
    let script = format!(
        "{grand}echo \"start $ELECTION_FENCING_TOKEN $ELECTION_NODE_ID $$\" >> {log}; \
         trap 'echo \"term $ELECTION_FENCING_TOKEN\" >> {log}; exit 0' TERM; \
         while :; do echo \"beat $ELECTION_FENCING_TOKEN\" >> {log}; sleep 0.02; done"
    );
    vec!["--".into(), "sh".into(), "-c".into(), script]
}

fn group_running(zk: &ZkCluster, command: Vec<String>) -> Group {
    let mut g = Group::new(&zk.connect_string());
    g.extra = command;
    g
}

fn log_lines(log: &Path) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// The `start` lines: (token, node id, pid).
fn starts(log: &Path) -> Vec<(u64, String, i32)> {
    log_lines(log)
        .iter()
        .filter_map(|l| {
            let mut w = l.strip_prefix("start ")?.split(' ');
            Some((
                w.next()?.parse().ok()?,
                w.next()?.to_owned(),
                w.next()?.parse().ok()?,
            ))
        })
        .collect()
}

fn wait_starts(log: &Path, n: usize, timeout: Duration, g: &Group) -> Vec<(u64, String, i32)> {
    let ok = wait_until(timeout, Duration::from_millis(10), || {
        starts(log).len() >= n
    });
    assert!(
        ok,
        "fewer than {n} command starts\n{}\n{}",
        log_lines(log).join("\n"),
        g.logs()
    );
    starts(log)
}

/// Whether process `pid` is gone (no process, not even a zombie).
fn gone(pid: i32) -> bool {
    !Path::new(&format!("/proc/{pid}")).exists()
}

/// Lines of token `old` logged after the first line `start <new> ...`.
fn overlap(log: &Path, old: u64, new: u64) -> Vec<String> {
    let lines = log_lines(log);
    let Some(at) = lines
        .iter()
        .position(|l| l.starts_with(&format!("start {new} ")))
    else {
        return Vec::new();
    };
    let old_beat = format!("beat {old}");
    let old_term = format!("term {old}");
    lines[at..]
        .iter()
        .filter(|l| **l == old_beat || **l == old_term)
        .cloned()
        .collect()
}

fn index_of_node(node: &str) -> usize {
    node.strip_prefix('r').unwrap().parse().unwrap()
}

/// Two replicas running the looping command (logging to `log`), one
/// leading and the other queued: the group, the leader's start (token,
/// node, pid) and the leader's index.
fn two_running(zk: &ZkCluster, log: &Path) -> (Group, (u64, String, i32), usize) {
    let mut g = group_running(zk, looping_command(log, false));
    g.spawn(2);
    let first = wait_starts(log, 1, Duration::from_secs(20), &g)[0].clone();
    let leader = index_of_node(&first.1);
    g.replica(1 - leader)
        .wait_status(|s| s.state == "attempter", Duration::from_secs(10));
    (g, first, leader)
}

#[test]
fn exactly_one_child_runs_with_the_token_of_the_leadership() {
    // Given three replicas running a command while they lead
    let zk = ZkCluster::standalone();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("child.log");
    let mut g = group_running(&zk, looping_command(&log, false));
    g.spawn(3);
    // When one of them leads
    let first = wait_starts(&log, 1, Duration::from_secs(20), &g);
    let (token, node, pid) = first[0].clone();
    let leader = index_of_node(&node);
    let status = g.replica(leader).wait_status(
        |s| s.child.as_ref().is_some_and(|c| c.pid.is_some()),
        Duration::from_secs(10),
    );
    // Then its child got the token of the leadership, and the node id
    assert_eq!(status.state, "leader", "{}", g.logs());
    assert_eq!(status.token, Some(token), "{}", g.logs());
    assert_eq!(status.child.as_ref().unwrap().pid, Some(pid as u32));
    // And for a while (many confirmations) it is the only child ever started
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(starts(&log).len(), 1, "{}", g.logs());
    assert!(!gone(pid), "the child stopped\n{}", g.logs());
    for i in (0..3).filter(|&i| i != leader) {
        let s = g.replica(i).status().unwrap();
        assert_eq!(s.state, "attempter", "{}", g.logs());
        assert!(s.child.is_none(), "a follower ran a command: {s:?}");
    }
    // And no file was written (a command replaces the file writer)
    assert!(!g.files_dir().exists() || std::fs::read_dir(g.files_dir()).unwrap().next().is_none());
    g.stop_all();
}

#[test]
fn on_sigterm_the_child_exits_before_the_successor_starts_its_own() {
    // Given two replicas running a command, and one leading
    let zk = ZkCluster::standalone();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("child.log");
    let (mut g, (old, node, pid), leader) = two_running(&zk, &log);
    // When the leader gets SIGTERM
    assert!(g.replica(leader).signal(libc::SIGTERM));
    // Then the other replica's child starts with a newer token
    let (new, new_node, _) = wait_starts(&log, 2, Duration::from_secs(20), &g)[1].clone();
    assert!(new > old, "{}", g.logs());
    assert_ne!(new_node, node);
    // And the old child logged its SIGTERM and nothing after the new start
    let lines = log_lines(&log);
    assert!(
        lines.contains(&format!("term {old}")),
        "{}",
        lines.join("\n")
    );
    assert!(overlap(&log, old, new).is_empty(), "{}", lines.join("\n"));
    assert!(gone(pid));
    // And the old leader exited 0 after a stop that the child made short
    let exit = g.replica(leader).wait_exit(Duration::from_secs(10));
    assert!(exit.is_some_and(|e| e.success()), "{exit:?}\n{}", g.logs());
    g.stop_all();
}

#[test]
fn a_child_that_exits_ends_the_leadership_and_another_replica_takes_over() {
    // Given two replicas whose command exits with status 3 after 300 ms
    let zk = ZkCluster::standalone();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("child.log");
    let script = format!(
        "echo \"start $ELECTION_FENCING_TOKEN $ELECTION_NODE_ID $$\" >> {}; sleep 0.3; exit 3",
        log.display()
    );
    let mut g = group_running(&zk, vec!["--".into(), "sh".into(), "-c".into(), script]);
    g.spawn(2);
    let (_, node, _) = wait_starts(&log, 1, Duration::from_secs(20), &g)[0].clone();
    let first = index_of_node(&node);
    // When it exits, the leader steps down with a bounded cause, and reports it
    let status = g
        .replica(first)
        .wait_status(|s| s.cause == "child-exited", Duration::from_secs(10));
    let child = status.child.expect("child status");
    assert_eq!(child.last_exit.as_deref(), Some("code=3"), "{}", g.logs());
    assert_eq!(child.last_ended_by.as_deref(), Some("self"));
    assert_eq!(child.starts, 1);
    assert_ne!(status.state, "leader");
    // And the other replica leads next and starts its own child
    let ok = wait_until(Duration::from_secs(20), Duration::from_millis(20), || {
        starts(&log).iter().any(|(_, n, _)| *n != node)
    });
    assert!(ok, "{}\n{}", log_lines(&log).join("\n"), g.logs());
    // And the metrics count starts and exits
    let m = g.replica(first).metrics().unwrap();
    assert!(m.sum("election_child_starts_total", &[]) >= 1.0);
    assert!(m.sum("election_child_exits_total", &[]) >= 1.0);
    g.stop_all();
}

#[test]
fn sigint_stops_the_child_and_its_process_group_without_zombies() {
    // Given a leader whose command started a grandchild in its group
    let zk = ZkCluster::standalone();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("child.log");
    let mut g = group_running(&zk, looping_command(&log, true));
    g.spawn(1);
    let (_, _, pid) = wait_starts(&log, 1, Duration::from_secs(20), &g)[0].clone();
    let grand: i32 = log_lines(&log)
        .iter()
        .find_map(|l| l.strip_prefix("grand ")?.parse().ok())
        .expect("grandchild pid");
    assert!(!gone(grand));
    // When it gets SIGINT
    assert!(g.replica(0).signal(libc::SIGINT));
    // Then the daemon exits 0, and the child and the grandchild are gone
    // (not even zombies)
    let exit = g.replica(0).wait_exit(Duration::from_secs(15));
    assert!(exit.is_some_and(|e| e.success()), "{exit:?}\n{}", g.logs());
    assert!(gone(pid), "child {pid} left\n{}", g.logs());
    assert!(gone(grand), "grandchild {grand} left\n{}", g.logs());
}

#[test]
fn release_stops_the_child_and_leaves_no_zombie_of_the_daemon() {
    // Given a leader running a command
    let zk = ZkCluster::standalone();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("child.log");
    let admin = format!("127.0.0.1:{}", common::free_port());
    let mut g = group_running(&zk, {
        let mut a = vec!["--admin-addr".to_owned(), admin.clone()];
        a.extend(looping_command(&log, true));
        a
    });
    g.spawn(1);
    let (token, _, pid) = wait_starts(&log, 1, Duration::from_secs(20), &g)[0].clone();
    // When it is released (it then lingers, waiting for SIGTERM)
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_election"))
        .args(["release", "--admin-addr", &admin])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}\n{}", g.logs());
    // Then the child stopped (it logged its SIGTERM) and the daemon has no
    // child process left, not even a zombie
    assert!(log_lines(&log).contains(&format!("term {token}")));
    assert!(gone(pid));
    let daemon = g.replica(0).pid();
    let children = std::fs::read_to_string(format!("/proc/{daemon}/task/{daemon}/children"))
        .unwrap_or_default();
    let ok = wait_until(Duration::from_secs(3), Duration::from_millis(20), || {
        std::fs::read_dir(format!("/proc/{daemon}/task"))
            .unwrap()
            .flatten()
            .all(|t| {
                std::fs::read_to_string(t.path().join("children"))
                    .unwrap_or_default()
                    .trim()
                    .is_empty()
            })
    });
    assert!(
        ok,
        "daemon {daemon} still has children: {children}\n{}",
        g.logs()
    );
    g.stop_all();
}

#[test]
fn a_frozen_daemon_cannot_leave_its_child_running_past_its_lease() {
    // Given two replicas running a command, and one leading
    let zk = ZkCluster::standalone();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("child.log");
    let (mut g, (old, node, pid), leader) = two_running(&zk, &log);
    // When the leader's daemon freezes (SIGSTOP: none of its threads run)
    let frozen = std::time::Instant::now();
    assert!(g.replica(leader).signal(libc::SIGSTOP));
    // Then its child dies before ZooKeeper can expire the session (one
    // session timeout, 2 s), killed by the watchdog at the lease's end
    let ok = wait_until(Duration::from_secs(10), Duration::from_millis(5), || {
        gone(pid)
    });
    let dead_after = frozen.elapsed();
    assert!(ok, "child {pid} still runs\n{}", g.logs());
    assert!(
        dead_after < Duration::from_secs(2),
        "child died {dead_after:?} after the freeze"
    );
    eprintln!("child dead {dead_after:?} after SIGSTOP");
    // And the successor's child starts only after it, with a newer token
    let (new, new_node, _) = wait_starts(&log, 2, Duration::from_secs(20), &g)[1].clone();
    assert!(new > old);
    assert_ne!(new_node, node);
    assert!(
        overlap(&log, old, new).is_empty(),
        "{}",
        log_lines(&log).join("\n")
    );
    // And the old leader, thawed, does not start its command again with
    // its old token
    assert!(g.replica(leader).signal(libc::SIGCONT));
    g.replica(leader)
        .wait_status(|s| s.state != "leader", Duration::from_secs(10));
    std::thread::sleep(Duration::from_secs(1));
    let old_starts = starts(&log).iter().filter(|(t, _, _)| *t == old).count();
    assert_eq!(old_starts, 1, "{}", log_lines(&log).join("\n"));
    g.stop_all();
}

#[test]
fn a_killed_daemon_never_leaves_its_child_running() {
    // Given two replicas running a command, and one leading
    let zk = ZkCluster::standalone();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("child.log");
    let (mut g, (old, _, pid), leader) = two_running(&zk, &log);
    // When the leader's daemon is SIGKILLed
    g.replica(leader).kill();
    // Then its child is stopped (SIGTERM, which it logs) and is gone
    let ok = wait_until(Duration::from_secs(10), Duration::from_millis(5), || {
        gone(pid)
    });
    assert!(ok, "child {pid} outlived its daemon\n{}", g.logs());
    assert!(log_lines(&log).contains(&format!("term {old}")));
    // And the successor's child starts after it
    let (new, _, _) = wait_starts(&log, 2, Duration::from_secs(20), &g)[1].clone();
    assert!(
        overlap(&log, old, new).is_empty(),
        "{}",
        log_lines(&log).join("\n")
    );
    g.stop_all();
}

#[test]
fn the_leader_endpoint_answers_200_with_the_token_only_on_the_leader() {
    // Given two replicas (the sidecar recipe runs `sleep` as its command)
    let zk = ZkCluster::standalone();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("child.log");
    let (mut g, (token, _, _), leader) = two_running(&zk, &log);
    // Then the leader answers /leader with 200 and its token, the other 503
    let yes = common::kube_api::http_get(g.replica(leader).http_addr(), "/leader").unwrap();
    assert_eq!(
        (yes.status, yes.body.trim()),
        (200, token.to_string().as_str())
    );
    let no = common::kube_api::http_get(g.replica(1 - leader).http_addr(), "/leader").unwrap();
    assert_eq!(no.status, 503, "{}", no.body);
    g.stop_all();
}

/// Polls `/leader` of `r` every 10 ms until it answers 503 (or `timeout`);
/// returns each answer's status with the time its request was sent.
fn poll_leader_until_503(
    r: &common::replica::Replica,
    timeout: Duration,
) -> Vec<(std::time::Instant, u16)> {
    let mut answers = Vec::new();
    wait_until(timeout, Duration::from_millis(10), || {
        let sent = std::time::Instant::now();
        let status = common::kube_api::http_get(r.http_addr(), "/leader").map_or(0, |a| a.status);
        answers.push((sent, status));
        status == 503
    });
    answers
}

/// A leader cut off from ZooKeeper (all its traffic swallowed) stays in
/// Leader, suspended, until it reconnects or gives up: `/leader` must turn
/// 503 no later than its lease ends, and 200 again once it leads confirmed.
fn the_leader_endpoint_follows_the_lease(extra: Vec<String>) {
    // Given a leader whose only link to ZooKeeper goes through a proxy
    let zk = ZkCluster::standalone();
    let proxy = FaultProxy::start(zk.server_addr(0));
    let mut g = Group::new(&proxy.addr().to_string());
    g.extra = extra;
    g.spawn(1);
    let r0 = g.replica(0);
    let ok = wait_until(Duration::from_secs(20), Duration::from_millis(20), || {
        common::kube_api::http_get(r0.http_addr(), "/leader").is_some_and(|a| a.status == 200)
    });
    assert!(ok, "/leader never answered 200\n{}", g.logs());
    let session = humantime::parse_duration(common::group::SESSION).unwrap();
    let tick = humantime::parse_duration(common::group::TICK_TIME).unwrap();
    let lease = election::lease::lease_bound(session, tick).unwrap();
    // When its link goes silent (no confirmation can come back after this)
    let cut = std::time::Instant::now();
    proxy.set_mode(Mode::Blackhole);
    let answers = poll_leader_until_503(r0, Duration::from_secs(10));
    // Then no request sent after the lease ended was answered 200
    let late: Vec<_> = answers
        .iter()
        .filter(|(sent, status)| *status == 200 && sent.duration_since(cut) > lease)
        .map(|(sent, _)| sent.duration_since(cut))
        .collect();
    assert!(
        late.is_empty(),
        "/leader said 200 {late:?} after the cut, past the lease ({lease:?})\n{}",
        g.logs()
    );
    let turned = answers
        .last()
        .map(|(sent, s)| (sent.duration_since(cut), *s));
    assert!(
        turned.is_some_and(|(_, s)| s == 503),
        "/leader never turned 503: {turned:?}\n{}",
        g.logs()
    );
    eprintln!("/leader 503 {turned:?} after the cut (lease {lease:?})");
    // And when the link heals, it answers 200 again once it leads confirmed
    proxy.set_mode(Mode::Pass);
    let ok = wait_until(Duration::from_secs(20), Duration::from_millis(20), || {
        common::kube_api::http_get(r0.http_addr(), "/leader").is_some_and(|a| a.status == 200)
    });
    assert!(ok, "/leader did not come back\n{}", g.logs());
    g.stop_all();
}

#[test]
fn the_leader_endpoint_turns_503_within_the_lease_when_the_file_writer_is_cut_off() {
    the_leader_endpoint_follows_the_lease(Vec::new());
}

#[test]
fn the_leader_endpoint_turns_503_within_the_lease_when_a_command_runner_is_cut_off() {
    the_leader_endpoint_follows_the_lease(vec!["--".into(), "sleep".into(), "1000".into()]);
}

#[test]
fn the_leader_endpoint_turns_503_as_soon_as_the_leader_steps_down_before_its_command_ends() {
    // Given a leader whose command is slow to stop after SIGTERM (it is
    // killed at its lease's end, about 0.9 s later)
    let zk = ZkCluster::standalone();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("child.log");
    let script = format!(
        "echo \"start $ELECTION_FENCING_TOKEN $ELECTION_NODE_ID $$\" >> {log}; \
         trap 'sleep 3; exit 0' TERM; while :; do sleep 0.02; done",
        log = log.display()
    );
    let mut g = group_running(&zk, vec!["--".into(), "sh".into(), "-c".into(), script]);
    g.spawn(1);
    let (_, _, pid) = wait_starts(&log, 1, Duration::from_secs(20), &g)[0].clone();
    let r0 = g.replica(0);
    let ok = wait_until(Duration::from_secs(10), Duration::from_millis(20), || {
        common::kube_api::http_get(r0.http_addr(), "/leader").is_some_and(|a| a.status == 200)
    });
    assert!(ok, "{}", g.logs());
    // When the daemon gets SIGTERM (it stops the command before anything else)
    assert!(r0.signal(libc::SIGTERM));
    // Then /leader says 503 while the command is still stopping
    let answers = poll_leader_until_503(r0, Duration::from_secs(10));
    assert_eq!(answers.last().map(|a| a.1), Some(503), "{}", g.logs());
    assert!(!gone(pid), "the command ended before /leader said 503");
    g.stop_all();
}
