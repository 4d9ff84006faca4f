//! The margins of the guarantee (docs/design.md, "The margin of the
//! lease"): a successor waits out the lease of a holder whose session is
//! longer than its own, and a leader whose disk hangs gives leadership up
//! within about one session timeout, whatever its leader-timeout.
//!
//! The disk fault is injected with strace (root): that test is
//! `#[ignore]`d, and `cargo xtask test` runs it when it is root.

mod common;

use std::time::{Duration, SystemTime};

use common::faults::Strace;
use common::group::{Group, read_records};
use common::wait_until;
use common::zk::ZkCluster;
use election::cmd::verify::parse_time_ms;
use election::files::LeaderRecord;
use election::lease::{Lease, assumed_tick_time};

/// The harness's tickTime, as the group tells the replicas.
const TICK: Duration = Duration::from_millis(200);

fn written_ms(r: &LeaderRecord) -> i64 {
    parse_time_ms(&r.written_at).expect("written_at parses")
}

/// Waits until a new file has landed, then returns at once: the leader has
/// just confirmed its leadership and written.
fn wait_new_file(g: &Group, timeout: Duration) {
    let before = g.records().len();
    let ok = wait_until(timeout, Duration::from_millis(5), || {
        g.records().len() > before
    });
    assert!(ok, "no new file within {timeout:?}\n{}", g.logs());
}

#[test]
fn a_successor_with_a_shorter_session_waits_out_the_lease_of_a_holder_with_a_longer_one() {
    // Given a leader r0 with a 20 s session, and r1 with a 4 s session
    // queued behind it (a rolling change of --zk-session-timeout)
    let holder_session = Duration::from_secs(20);
    let zk = ZkCluster::standalone();
    let mut g = Group::new(&zk.connect_string());
    g.extra = vec!["--zk-session-timeout".into(), "20s".into()];
    g.spawn(1);
    g.wait_leader(Duration::from_secs(20));
    g.extra = vec!["--zk-session-timeout".into(), "4s".into()];
    g.spawn(1);
    g.replica(1)
        .wait_status(|s| s.state == "attempter", Duration::from_secs(20));
    let znode = g
        .replica(0)
        .status()
        .and_then(|s| s.znode)
        .expect("r0 leads");
    // When r0 freezes right after a write (its session and its writer node
    // stay, its lease keeps running) and its candidate node is deleted
    wait_new_file(&g, Duration::from_secs(10));
    assert!(g.replica(0).signal(libc::SIGSTOP));
    let frozen_ms = election::published::unix_ms(SystemTime::now()) as i64;
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let c = common::zk_client(&zk.connect_string()).await;
        c.delete(&znode, None).await.expect("delete r0's node");
        common::close_client(c).await;
    });
    // Then r1 leads, but writes its first file only once any lease r0 may
    // hold has run out: at most r0's lease after it froze
    let ok = wait_until(Duration::from_secs(60), Duration::from_millis(20), || {
        g.records().iter().any(|r| r.node_id == "r1")
    });
    assert!(ok, "r1 never wrote\n{}", g.logs());
    let records = g.records();
    let first = records.iter().find(|r| r.node_id == "r1").unwrap();
    let lease = Lease::new(
        holder_session,
        assumed_tick_time(holder_session, Some(TICK)),
    )
    .bound();
    let waited = written_ms(first) - frozen_ms;
    eprintln!("r1's first file {waited} ms after r0 froze; r0's lease is {lease:?}");
    assert!(
        waited >= lease.as_millis() as i64,
        "r1 wrote {waited} ms after r0 froze, within r0's lease of {lease:?}\n{}",
        g.logs()
    );
    assert!(g.replica(0).signal(libc::SIGCONT));
    g.stop_all();
    g.assert_invariants();
}

#[test]
fn the_lease_follows_the_session_timeout_a_server_renegotiates_on_reconnection() {
    // Given a 3-server ensemble where follower `small` grants sessions of
    // at most 2 s, and a leader with a 4 s session on follower `big`
    // (`small` is down while it connects)
    let mut zk = ZkCluster::ensemble(3);
    let zk_leader = zk.leader().expect("the ensemble has a leader");
    let followers: Vec<usize> = (0..3).filter(|&i| i != zk_leader).collect();
    let (big, small) = (followers[0], followers[1]);
    zk.stop(small);
    zk.set_max_session_timeout(small, Duration::from_secs(2));
    let servers = format!("{},{}", zk.server_addr(big), zk.server_addr(small));
    let mut g = Group::new(&servers);
    g.extra = vec!["--zk-session-timeout".into(), "4s".into()];
    g.spawn(1);
    g.wait_leader(Duration::from_secs(20));
    let before = g
        .replica(0)
        .wait_status(|s| s.lease_ms.is_some(), Duration::from_secs(10));
    assert_eq!(before.session_timeout_ms, Some(4000), "{before:#?}");
    assert_eq!(before.lease_ms, Some(2000), "{before:#?}");
    let token = before.token.expect("leading");
    // When `small` comes back and `big` stops: the client reconnects to
    // `small`, which clamps the session to its maximum
    zk.start(small);
    zk.stop(big);
    // Then the leader sizes its lease from the 2 s session, and goes on
    // leading under it
    let after = g.replica(0).wait_status(
        |s| s.session_timeout_ms != Some(4000) && s.lease_ms.is_some(),
        Duration::from_secs(30),
    );
    eprintln!(
        "before: session {:?} ms, lease {:?} ms; after: session {:?} ms, lease {:?} ms",
        before.session_timeout_ms, before.lease_ms, after.session_timeout_ms, after.lease_ms
    );
    assert_eq!(after.session_timeout_ms, Some(2000), "{after:#?}");
    assert_eq!(after.lease_ms, Some(1000), "{after:#?}");
    assert_eq!(after.token, Some(token), "same leadership: {after:#?}");
    wait_new_file(&g, Duration::from_secs(10));
    g.stop_all();
    g.assert_invariants();
}

#[test]
#[ignore = "needs root and strace: run by cargo xtask test as root"]
fn a_leader_whose_disk_hangs_steps_down_within_a_session_timeout_whatever_its_leader_timeout() {
    assert!(
        unsafe { libc::geteuid() } == 0,
        "run as root (strace attaches to the daemon)"
    );
    // Given two replicas with a 3 s session, writing every 10 s
    let session = Duration::from_secs(3);
    let leader_timeout = Duration::from_secs(10);
    let zk = ZkCluster::standalone();
    let mut g = Group::new(&zk.connect_string());
    g.extra = ["--zk-session-timeout", "3s", "--leader-timeout", "10s"]
        .map(String::from)
        .to_vec();
    g.spawn(2);
    let leader = g.wait_leader(Duration::from_secs(30));
    // When every fsync of the leader hangs from right after a write on
    // (so its next write, one leader-timeout later, is the one that hangs)
    wait_new_file(&g, leader_timeout * 2);
    let last_old = g.newest_record().unwrap();
    let _strace = Strace::delay(g.replica(leader).pid(), "fsync", Duration::from_secs(120));
    // Then the other replica, whose disk works, leads within about one
    // session timeout of the hang
    let ok = wait_until(Duration::from_secs(60), Duration::from_millis(20), || {
        g.newest_record().is_some_and(|r| r.token > last_old.token)
    });
    assert!(ok, "nobody took over\n{}", g.logs());
    let first_new = g
        .records()
        .into_iter()
        .find(|r| r.token > last_old.token)
        .unwrap();
    // The hung write started one leader-timeout after the last good one.
    let hung_ms = written_ms(&last_old) + leader_timeout.as_millis() as i64;
    let took = written_ms(&first_new) - hung_ms;
    let bound = 2 * session.as_millis() as i64;
    eprintln!("takeover {took} ms after the write hung (session {session:?}, bound {bound} ms)");
    assert!(
        took < bound,
        "the next leader wrote {took} ms after the leader's write hung, not within 2 x session\n{}",
        g.logs()
    );
    drop(_strace);
    g.stop_all();
    g.assert_invariants();
}

/// Sends `sig` to ZooKeeper server `i`.
fn signal_server(zk: &ZkCluster, i: usize, sig: libc::c_int) {
    let pid = zk.pid(i).expect("server running") as libc::pid_t;
    assert_eq!(
        unsafe { libc::kill(pid, sig) },
        0,
        "signal {sig} to server {i}"
    );
}

#[test]
#[ignore = "long (about 10 s a round): cargo test --test margins -- --include-ignored"]
fn a_leader_whose_follower_dies_right_after_a_confirmation_stops_writing_before_a_successor_starts()
{
    // Given a 3-server ensemble with a stock-like tickTime of 1 s, and two
    // replicas with a 2 s session (the shortest it grants) and a volume
    // each, each connected to a follower of its own (never to the
    // ZooKeeper leader: a lost ZooKeeper leader refuses every reconnect
    // for a while, another test)
    let rounds: usize = std::env::var("MARGIN_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(20);
    let tick = Duration::from_secs(1);
    let zk = ZkCluster::ensemble_with(
        3,
        common::zk::ZkOptions {
            tick_time: Some(tick),
            ..Default::default()
        },
    );
    let zk_leader = zk.leader().expect("the ensemble has a leader");
    let followers: Vec<usize> = (0..3).filter(|&i| i != zk_leader).collect();
    let mut g = Group::new("unused");
    let dirs: Vec<_> = (0..2).map(|i| g.dir.path().join(format!("r{i}"))).collect();
    for (i, dir) in dirs.iter().enumerate() {
        g.extra = [
            "--zk-servers",
            &zk.server_addr(followers[i]).to_string(),
            "--file-dir",
            dir.to_str().unwrap(),
            "--zk-session-timeout",
            "2s",
            "--zk-tick-time",
            "1s",
            "--storage-capacity",
            "100000",
        ]
        .map(String::from)
        .to_vec();
        g.spawn(1);
    }
    let lead_status = |i: usize| g.replica(i).status().filter(|s| s.state == "leader");
    let mut gaps = Vec::new();
    for round in 0..rounds {
        assert_eq!(
            zk.leader(),
            Some(zk_leader),
            "round {round}: the ZooKeeper leader moved"
        );
        // When the leader's follower stops dead (SIGSTOP: no FIN, no RST,
        // as a machine that lost power or a partition) right after the
        // leader's confirmation, seen in its status
        let mut leader = None;
        let ok = wait_until(Duration::from_secs(60), Duration::from_millis(20), || {
            leader = (0..2).find_map(|i| {
                lead_status(i).and_then(|s| s.last_write_ms.is_some().then_some((i, s)))
            });
            leader
                .as_ref()
                .is_some_and(|(_, s)| s.lease_ms.is_some() && s.confirmed_ms.is_some())
        });
        assert!(ok, "round {round}: nobody leads\n{}", g.logs());
        let (old, status) = leader.unwrap();
        let (token, lease) = (status.token.unwrap(), status.lease_ms.unwrap() as i64);
        let before = status.confirmed_ms;
        let mut confirmed = None;
        let again = wait_until(Duration::from_secs(10), Duration::from_millis(1), || {
            confirmed = g
                .replica(old)
                .status()
                .and_then(|s| s.confirmed_ms)
                .filter(|&c| Some(c) != before);
            confirmed.is_some()
        });
        assert!(
            again,
            "round {round}: r{old} stopped confirming\n{}",
            g.logs()
        );
        let server = followers[old];
        signal_server(&zk, server, libc::SIGSTOP);
        let confirmed = confirmed.unwrap() as i64;
        let frozen_ms = election::published::unix_ms(SystemTime::now());
        // Then the other replica takes over once the session expired, and
        // its first file comes after the old leader's lease ended: that
        // lease ran from when its last good confirmation was sent (it may
        // write on it after the freeze), so "first new file - confirmation
        // > lease" is what must hold, and no old file after the first new
        let new = 1 - old;
        let took = wait_until(Duration::from_secs(30), Duration::from_millis(20), || {
            lead_status(new)
                .is_some_and(|s| s.token > Some(token) && s.last_write_ms > Some(frozen_ms))
        });
        let old_records = read_records(&dirs[old]);
        let new_records = read_records(&dirs[new]);
        signal_server(&zk, server, libc::SIGCONT);
        assert!(
            took,
            "round {round}: r{new} did not take over\n{}",
            g.logs()
        );
        let last_old = old_records
            .iter()
            .filter(|r| r.token == token)
            .max_by_key(|r| r.seq)
            .expect("the old leader's files");
        let first_new = new_records
            .iter()
            .filter(|r| r.token > token)
            .min_by_key(|r| (r.token, r.seq))
            .expect("the new leader's files");
        let gap = written_ms(first_new) - confirmed;
        eprintln!(
            "round {round}: r{old} -> r{new}, lease {lease} ms, first new file {gap} ms after the last confirmation, {} ms after the last old file",
            written_ms(first_new) - written_ms(last_old)
        );
        gaps.push(gap - lease);
        assert!(
            gap > lease,
            "round {round}: r{new} wrote {gap} ms after r{old}'s last confirmation, within its lease of {lease} ms\n{}",
            g.logs()
        );
        assert!(
            written_ms(first_new) > written_ms(last_old),
            "round {round}: r{old} wrote after r{new}'s first file\n{}",
            g.logs()
        );
        // The server comes back; the old leader queues again on it.
        g.replica(old)
            .wait_status(|s| s.state == "attempter", Duration::from_secs(60));
    }
    g.stop_all();
    // And the merged volumes show no two writers at once
    let merged = tempfile::tempdir().unwrap();
    for dir in &dirs {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_file() {
                std::fs::copy(&path, merged.path().join(path.file_name().unwrap())).unwrap();
            }
        }
    }
    let verify = std::process::Command::new(env!("CARGO_BIN_EXE_election"))
        .args(["verify", "--file-dir", merged.path().to_str().unwrap()])
        .output()
        .expect("run election verify");
    let report = String::from_utf8_lossy(&verify.stdout);
    eprintln!(
        "{rounds} rounds; smallest margin of the successor over the lease: {:?} ms\n{report}",
        gaps.iter().min()
    );
    assert!(verify.status.success(), "election verify: {report}");
}
