//! The election against a real ZooKeeper, with replicas as real processes
//! of the built binary (signals matter). Each test starts its own
//! ZooKeeper on free loopback ports and ends by running the invariant
//! checker on the file-dir.
//!
//! Timing bounds here are generous on purpose (a loaded 2-core machine);
//! speed is measured by `cargo bench --bench failover`, not asserted.

mod common;

use std::path::Path;
use std::time::{Duration, SystemTime};

use common::group::{
    Group, LEADER_TIMEOUT, SESSION, TRANSITIONS, assert_clean_takeover_by_r1, partitioned_pair,
};
use common::procfs::cpu_seconds;
use common::proxy::{FaultProxy, SYNC};
use common::wait_until;
use common::zk::ZkCluster;
use election::cmd::verify;
use election::files::{self, FileKey};

fn files_by_token(dir: &Path) -> Vec<FileKey> {
    files::list(dir).unwrap_or_default()
}

#[test]
fn exactly_one_leader_among_three_replicas() {
    // Given a ZooKeeper and three replicas
    let zk = ZkCluster::standalone();
    let mut g = Group::new(&zk.connect_string());
    g.spawn(3);
    // When they have run for a while: the two others wait in the queue,
    // and the leader has written 10 files (2 s at one per 200 ms)
    let leader = g.wait_leader(Duration::from_secs(20));
    for i in (0..3).filter(|&i| i != leader) {
        g.replica(i)
            .wait_status(|s| s.state == "attempter", Duration::from_secs(20));
    }
    let token = g.newest_record().unwrap().token;
    g.wait_more_files_of(token, 10, Duration::from_secs(20));
    // Then exactly one of them ever became leader, and only its token is on disk
    let leaders: Vec<usize> = (0..3).filter(|&i| g.times_leader(i) > 0.0).collect();
    assert_eq!(leaders, vec![leader], "{}", g.logs());
    // And the leader timed one takeover (entering Leader to its first
    // file), however many files followed; the candidates none
    let takeovers = g.replica(leader).wait_metric(
        "election_takeover_seconds_count",
        &[],
        |n| n >= 1.0,
        Duration::from_secs(10),
    );
    assert_eq!(takeovers, 1.0, "{}", g.logs());
    for i in (0..3).filter(|&i| i != leader) {
        let none = g.replica(i).metric("election_takeover_seconds_count", &[]);
        assert_eq!(none, Some(0.0), "{}", g.logs());
    }
    let tokens: std::collections::BTreeSet<u64> = files_by_token(&g.files_dir())
        .iter()
        .map(|k| k.token)
        .collect();
    assert_eq!(tokens.len(), 1);
    assert!(
        g.records().len() >= 5,
        "the leader writes every {LEADER_TIMEOUT}"
    );
    g.stop_all();
    g.assert_invariants();
}

#[test]
fn a_leader_at_rest_confirms_about_every_half_lease_not_before_every_write() {
    // Given a leader behind a proxy that counts its requests
    let zk = ZkCluster::standalone();
    let proxy = FaultProxy::start(zk.server_addr(0));
    let mut g = Group::new(&proxy.addr().to_string());
    g.spawn(1);
    g.wait_leader(Duration::from_secs(30));
    let ok = wait_until(Duration::from_secs(10), Duration::from_millis(20), || {
        g.records().len() >= 2
    });
    assert!(ok, "the leader writes\n{}", g.logs());
    let first = g.newest_record().unwrap();
    let syncs = proxy.requests(SYNC);
    // When it writes ten files more at rest
    g.wait_more_files_of(first.token, 10, Duration::from_secs(30));
    let last = g.newest_record().unwrap();
    let writes = (last.seq - first.seq) as usize;
    let confirmations = proxy.requests(SYNC) - syncs;
    // Then it asked ZooKeeper at most once per two writes (each
    // confirmation is a sync), yet never skipped a write for want of a lease
    println!("{writes} writes, {confirmations} confirmations");
    assert!(confirmations >= 1, "{}", g.logs());
    assert!(
        confirmations * 2 <= writes + 1,
        "{confirmations} confirmations for {writes} writes\n{}",
        g.logs()
    );
    assert_eq!(g.writes_fenced(0), 0.0, "{}", g.logs());
    // and the status shows the lease it writes on
    let status = g.replica(0).status().expect("a status");
    let (confirmed, wrote) = (status.confirmed_ms.unwrap(), status.last_write_ms.unwrap());
    assert!(confirmed <= wrote, "{status:?}");
    g.stop_all();
    g.assert_invariants();
}

#[test]
fn graceful_handover_on_sigterm_of_the_leader() {
    // Given three replicas with a leader, on a 10 s session (so that a
    // handover that waited for the session to expire shows clearly)
    let zk = ZkCluster::standalone();
    let mut g = Group::new(&zk.connect_string());
    g.extra = vec!["--zk-session-timeout".into(), "10s".into()];
    g.spawn(3);
    let old = g.wait_leader(Duration::from_secs(20));
    let old_token = g.newest_record().unwrap().token;
    // When the leader gets SIGTERM
    let t0 = SystemTime::now();
    g.replica(old).signal(libc::SIGTERM);
    // Then it exits 0, and another replica leads with a higher token
    let status = g
        .replica(old)
        .wait_exit(Duration::from_secs(10))
        .expect("leader exits after SIGTERM");
    assert_eq!(status.code(), Some(0), "{}", g.logs());
    g.replicas[old] = None;
    let new = g.wait_leader(Duration::from_secs(10));
    assert_ne!(new, old);
    let new_token = g.newest_record().unwrap().token;
    assert!(
        new_token > old_token,
        "fencing tokens increase: {old_token} -> {new_token}"
    );
    // The handover did not wait for a session timeout: the successor's
    // first file came well before the old session could have expired
    // (10 s; half of it is slack for a loaded machine).
    let first_new = g
        .records()
        .into_iter()
        .find(|r| r.token == new_token)
        .unwrap();
    let took_ms = verify::parse_time_ms(&first_new.written_at).unwrap()
        - election::published::unix_ms(t0) as i64;
    eprintln!("successor's first file {took_ms} ms after SIGTERM");
    assert!(
        took_ms < 5000,
        "the successor wrote {took_ms} ms after SIGTERM\n{}",
        g.logs()
    );
    g.stop_all();
    g.assert_invariants();
}

#[test]
fn crash_of_the_leader_fails_over_within_about_the_session_timeout() {
    // Given three replicas with a leader
    let zk = ZkCluster::standalone();
    let mut g = Group::new(&zk.connect_string());
    g.spawn(3);
    let old = g.wait_leader(Duration::from_secs(20));
    let old_token = g.newest_record().unwrap().token;
    // When the leader is killed without warning
    let t0 = SystemTime::now();
    g.replica(old).signal(libc::SIGKILL);
    g.replica(old).wait_exit(Duration::from_secs(5));
    g.replicas[old] = None;
    // Then another replica takes over once ZooKeeper expires the session:
    // its first file comes within the session timeout (2 s) plus 5 s of
    // slack for the server's expiry tick, a loaded machine and the claim
    // (a successor that waited for the daemon's own give-up bound, 8
    // session timeouts, would be far later)
    let new = g.wait_leader(Duration::from_secs(15));
    assert_ne!(new, old);
    let first_new = g
        .records()
        .into_iter()
        .find(|r| r.token > old_token)
        .unwrap();
    let took_ms = verify::parse_time_ms(&first_new.written_at).unwrap()
        - election::published::unix_ms(t0) as i64;
    eprintln!("crash failover: successor's first file {took_ms} ms after SIGKILL");
    let session_ms = humantime::parse_duration(SESSION).unwrap().as_millis() as i64;
    assert!(
        took_ms < session_ms + 5000,
        "the successor wrote {took_ms} ms after the crash\n{}",
        g.logs()
    );
    g.stop_all();
    g.assert_invariants();
}

#[test]
fn a_frozen_leader_writes_nothing_after_the_successor_starts() {
    // Given three replicas with a leader
    let zk = ZkCluster::standalone();
    let mut g = Group::new(&zk.connect_string());
    g.spawn(3);
    let old = g.wait_leader(Duration::from_secs(20));
    let old_token = g.newest_record().unwrap().token;
    // When the leader is frozen past its session timeout, until its
    // successor has written 5 files
    g.replica(old).signal(libc::SIGSTOP);
    let new = g.wait_leader_other_than(old, Duration::from_secs(15));
    assert_ne!(new, old);
    let new_token = g.newest_record().unwrap().token;
    g.wait_more_files_of(new_token, 4, Duration::from_secs(10));
    // and then woken up
    g.replica(old).signal(libc::SIGCONT);
    // Then it steps down (it lost its session and competes again), and
    // by then, and 3 files of the successor later, it has written nothing
    // after the successor's first file
    g.wait_stepped_down(old, Duration::from_secs(20));
    g.wait_more_files_of(new_token, 3, Duration::from_secs(10));
    let records = g.records();
    let first_new = records
        .iter()
        .position(|r| r.token > old_token)
        .expect("successor wrote");
    assert!(
        records[first_new..].iter().all(|r| r.token != old_token),
        "old leader wrote after the successor's first file\n{}",
        g.logs()
    );
    g.stop_all();
    g.assert_invariants();
}

#[test]
fn zookeeper_outage_longer_than_the_session_suspends_then_one_leader_goes_on() {
    // Given three replicas with a leader
    let mut zk = ZkCluster::standalone();
    let mut g = Group::new(&zk.connect_string());
    g.spawn(3);
    let leader = g.wait_leader(Duration::from_secs(20));
    let fenced_before = g.writes_fenced(leader);
    // When ZooKeeper is down for several session timeouts
    let cut = SystemTime::now();
    zk.kill(0);
    // Then the leader stops writing within its lease (session/2 = 1 s)
    // plus 1 s of slack
    let files_during_outage =
        g.assert_last_write_within(leader, fenced_before, cut, Duration::from_secs(2));
    // and nobody writes afterwards, nor spins a core retrying (the client
    // paces its reconnection attempts)
    let cpu0: Vec<f64> = (0..3).map(|i| cpu_seconds(g.replica(i).pid())).collect();
    std::thread::sleep(Duration::from_secs(3));
    for (i, c0) in cpu0.iter().enumerate() {
        let used = cpu_seconds(g.replica(i).pid()) - c0;
        assert!(
            used < 1.0,
            "r{i} used {used:.2} s of CPU in 3 s while ZooKeeper was down"
        );
    }
    assert_eq!(
        g.records().len(),
        files_during_outage,
        "nobody writes without ZooKeeper"
    );
    for i in 0..3 {
        // Every replica keeps its session, suspended, for the server to
        // decide (it restarts with its data below and restores them).
        let disconnected = g.replica(i).metric(
            "election_zk_session_events_total",
            &[("state", "Disconnected")],
        );
        assert!(
            disconnected.is_some_and(|n| n >= 1.0),
            "r{i} is suspended: {disconnected:?} disconnections\n{}",
            g.logs()
        );
    }
    // and comes back
    zk.start(0);
    // Then the replicas recover by themselves to exactly one leader
    let ok = wait_until(Duration::from_secs(30), Duration::from_millis(100), || {
        g.records().len() > files_during_outage + 3
    });
    assert!(ok, "no leader after ZooKeeper came back\n{}", g.logs());
    // (and after 5 more files of the newest leadership)
    g.wait_more_files_of(g.newest_record().unwrap().token, 5, Duration::from_secs(10));
    let after: Vec<u64> = g.records()[files_during_outage..]
        .iter()
        .map(|r| r.token)
        .collect();
    let distinct: std::collections::BTreeSet<_> = after.iter().collect();
    assert_eq!(
        distinct.len(),
        1,
        "one leadership after recovery: {after:?}\n{}",
        g.logs()
    );
    g.stop_all();
    g.assert_invariants();
}

#[test]
fn losing_one_server_of_a_three_node_ensemble_changes_no_leadership() {
    // Given a 3-node ensemble and three replicas with a leader
    let mut zk = ZkCluster::ensemble(3);
    let mut g = Group::new(&zk.connect_string());
    g.spawn(3);
    g.wait_leader(Duration::from_secs(30));
    let token = g.newest_record().unwrap().token;
    // When one ZooKeeper server dies (clients connected to it move on)
    zk.kill(0);
    let before = g.records().len();
    // Then the same leadership keeps writing
    let ok = wait_until(Duration::from_secs(20), Duration::from_millis(100), || {
        g.records().len() > before + 10
    });
    assert!(ok, "writes continue\n{}", g.logs());
    let tokens: std::collections::BTreeSet<u64> = g.records().iter().map(|r| r.token).collect();
    assert_eq!(
        tokens.into_iter().collect::<Vec<_>>(),
        vec![token],
        "{}",
        g.logs()
    );
    g.stop_all();
    g.assert_invariants();
}

#[test]
fn retention_keeps_capacity_files_and_never_touches_foreign_ones() {
    // Given a file-dir holding foreign files and a replica with capacity 3
    let zk = ZkCluster::standalone();
    let mut g = Group::new(&zk.connect_string());
    std::fs::create_dir_all(g.files_dir()).unwrap();
    for name in ["notes.txt", "leader_backup.json", "leader_1_2.json"] {
        std::fs::write(g.files_dir().join(name), "foreign").unwrap();
    }
    g.extra = vec!["--storage-capacity".into(), "3".into()];
    g.spawn(1);
    // When the leader has written many more files than that
    g.wait_leader(Duration::from_secs(20));
    let ok = wait_until(Duration::from_secs(20), Duration::from_millis(100), || {
        g.records().last().is_some_and(|r| r.seq >= 10)
    });
    assert!(ok, "{}", g.logs());
    g.stop_all();
    // Then exactly the newest 3 remain, and every foreign file is intact
    let keys = files_by_token(&g.files_dir());
    assert_eq!(keys.len(), 3, "{keys:?}");
    assert!(keys.windows(2).all(|w| w[0].seq + 1 == w[1].seq));
    for name in ["notes.txt", "leader_backup.json", "leader_1_2.json"] {
        assert_eq!(
            std::fs::read_to_string(g.files_dir().join(name)).unwrap(),
            "foreign"
        );
    }
    g.assert_invariants();
}

#[test]
fn a_partitioned_leader_stops_writing_before_its_session_can_expire() {
    // Given a leader whose only way to ZooKeeper is a proxy, and a second
    // replica connected directly
    let zk = ZkCluster::standalone();
    let proxy = common::proxy::FaultProxy::start(zk.server_addr(0));
    let mut g = partitioned_pair(&zk, &proxy);
    // When the leader's network to ZooKeeper goes silent
    proxy.set_mode(common::proxy::Mode::Blackhole);
    let cut = std::time::SystemTime::now();
    // Then the other replica takes over, and the partitioned leader wrote
    // nothing after the successor's first file
    let records = assert_clean_takeover_by_r1(&g);
    let last_old = records.iter().rev().find(|r| r.node_id == "r0").unwrap();
    let last_old_ms = verify::parse_time_ms(&last_old.written_at).unwrap();
    let cut_ms = election::published::unix_ms(cut) as i64;
    // The session timeout is 2 s: the leader stopped well before that.
    assert!(
        last_old_ms - cut_ms < 2000,
        "last old write {} ms after the cut",
        last_old_ms - cut_ms
    );
    proxy.set_mode(common::proxy::Mode::Pass);
    g.stop_all();
    g.assert_invariants();
}

#[test]
fn deleting_the_leader_node_makes_it_step_down_and_compete_again() {
    // Given two replicas with a leader
    let zk = ZkCluster::standalone();
    let mut g = Group::new(&zk.connect_string());
    g.spawn(2);
    let old = g.wait_leader(Duration::from_secs(20));
    // When an operator deletes the leader's znode
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let client = common::zk_client(&zk.connect_string()).await;
        let children = client.list_children("/election/test").await.unwrap();
        let order = election::recipe::order_candidates(&children);
        client
            .delete(&format!("/election/test/{}", order[0].name), None)
            .await
            .unwrap();
        common::close_client(client).await;
    });
    // Then the old leader steps down back into the queue, for that reason
    g.wait_stepped_down(old, Duration::from_secs(10));
    let back = g
        .replica(old)
        .metric(TRANSITIONS, &[("from", "leader"), ("to", "attempter")]);
    assert_eq!(back, Some(1.0), "{}", g.logs());
    g.replica(old).wait_status(
        |s| s.state == "attempter" && s.cause == "leadership-lost",
        Duration::from_secs(10),
    );
    // the other leads, and the old one is a candidate again with exactly
    // one node of its own
    let ok = wait_until(Duration::from_secs(10), Duration::from_millis(50), || {
        g.newest_record()
            .is_some_and(|r| r.node_id != format!("r{old}"))
    });
    assert!(ok, "{}", g.logs());
    let children = rt.block_on(async {
        let client = common::zk_client(&zk.connect_string()).await;
        let c = client.list_children("/election/test").await.unwrap();
        common::close_client(client).await;
        c
    });
    assert_eq!(
        election::recipe::order_candidates(&children).len(),
        2,
        "{children:?}"
    );
    g.stop_all();
    g.assert_invariants();
}

#[test]
fn a_new_leader_removes_temp_files_of_interrupted_writes_before_it_writes() {
    // Given a file-dir holding the temp file of a write interrupted by a crash
    let zk = ZkCluster::standalone();
    let mut g = Group::new(&zk.connect_string());
    std::fs::create_dir_all(g.files_dir()).unwrap();
    let stale = g.files_dir().join(format!(
        "{}{:020}_{:010}.1.00000000deadbeef.tmp",
        files::TEMP_PREFIX,
        7,
        3
    ));
    std::fs::write(&stale, b"half a record").unwrap();
    // When a replica becomes leader and writes
    g.spawn(1);
    g.wait_leader(Duration::from_secs(20));
    let first = g.newest_record().unwrap();
    g.wait_more_files_of(first.token, 1, Duration::from_secs(10));
    // Then the temp file is gone (fails with the clean-up removed), and the
    // file-dir checks clean
    assert!(!stale.exists(), "{}\n{}", stale.display(), g.logs());
    g.stop_all();
    g.assert_invariants();
}
