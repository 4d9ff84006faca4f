//! Restart takeover (`--state-dir`): a leader killed and restarted at once
//! closes its earlier session, so its successor leads in restart time;
//! a process that cannot take the state dir's lock never touches the
//! session in it. Real processes, a real ZooKeeper, `election verify`'s
//! checker after each scenario.

mod common;

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use common::group::Group;
use common::proxy::{CLOSE_SESSION, Cut, FaultProxy};
use common::replica::Replica;
use common::wait_until;
use common::zk::ZkCluster;

/// The session timeout of these tests (the chart's default).
const SESSION: &str = "6s";
/// The least a successor of a crashed leader waits when the session must
/// expire: the server expires it one session timeout after the last packet
/// it heard, at most `3/10` of it (the longest silence) before the crash.
const EXPIRY_FLOOR: Duration = Duration::from_secs(3);

/// A group of `n` replicas with a 6 s session, each with a state dir of
/// its own (`<group dir>/state-<i>`).
fn group(zk: &ZkCluster, n: usize) -> Group {
    let mut g = Group::new(&zk.connect_string());
    g.extra = vec!["--zk-session-timeout".into(), SESSION.into()];
    for i in 0..n {
        g.replicas.push(Some(spawn(&g, i, &state_dir(&g, i))));
    }
    g
}

fn state_dir(g: &Group, i: usize) -> PathBuf {
    g.dir.path().join(format!("state-{i}"))
}

/// Replica `i` of `g` (its node id, flags and environment) on `state`.
fn spawn(g: &Group, i: usize, state: &std::path::Path) -> Replica {
    let mut args = g.args(i);
    args.extend(["--state-dir".into(), state.to_str().unwrap().to_owned()]);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    Replica::spawn(&refs, &[])
}

fn unix_ms(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Waits for the first file of a leadership newer than `token`; returns
/// it with ms from `t0` to its `written_at`.
fn first_file_after(g: &Group, token: u64, t0: SystemTime) -> (election::files::LeaderRecord, i64) {
    let mut first = None;
    let ok = wait_until(Duration::from_secs(30), Duration::from_millis(10), || {
        first = g.records().into_iter().find(|r| r.token > token);
        first.is_some()
    });
    assert!(ok, "no new leadership\n{}", g.logs());
    let first = first.unwrap();
    let at = election::cmd::verify::parse_time_ms(&first.written_at).unwrap();
    let after = at - unix_ms(t0);
    (first, after)
}

/// The candidate nodes of the election, by name.
fn candidates(zk: &ZkCluster) -> Vec<String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = common::zk_client(&zk.connect_string()).await;
        let children = client.list_children("/election/test").await.unwrap();
        common::close_client(client).await;
        children
    })
}

/// The leader's index, session id (`0x…`, as in `/status`) and token.
fn leader(g: &Group) -> (usize, String, u64) {
    let i = g.wait_leader(Duration::from_secs(30));
    let status = g.replica(i).wait_status(
        |s| s.state == "leader" && s.token.is_some(),
        Duration::from_secs(10),
    );
    (
        i,
        status.session_id.unwrap(),
        g.newest_record().unwrap().token,
    )
}

/// Whether a candidate node of session `sid` (`0x…`) exists.
fn has_node_of(zk: &ZkCluster, sid: &str) -> bool {
    let hex = format!(
        "{:016x}",
        u64::from_str_radix(sid.trim_start_matches("0x"), 16).unwrap()
    );
    candidates(zk).iter().any(|c| c.contains(&hex))
}

#[test]
fn a_leader_killed_and_restarted_at_once_is_succeeded_in_restart_time() {
    // Given three replicas with a 6 s session, each with its state dir
    let zk = ZkCluster::standalone();
    let mut g = group(&zk, 3);
    let (old, sid, token) = leader(&g);
    assert!(has_node_of(&zk, &sid));
    // When the leader is killed and restarted at once with the same flags
    let t0 = SystemTime::now();
    g.replica(old).signal(libc::SIGKILL);
    g.replica(old).wait_exit(Duration::from_secs(5));
    g.replicas[old] = Some(spawn(&g, old, &state_dir(&g, old)));
    // Then the restarted process closes its earlier session, and a new
    // leadership writes its first file before the 6 s session could have
    // expired (the speed, tens of milliseconds, is the failover bench's
    // "kill and restart"; a timed bound here would flake under load)
    let (first, after) = first_file_after(&g, token, t0);
    assert!(
        after < EXPIRY_FLOOR.as_millis() as i64,
        "first file of the new leadership {after} ms after the kill\n{}",
        g.logs()
    );
    assert!(
        g.replica(old)
            .wait_for_line(
                "closed the session of this replica's earlier process",
                Duration::from_secs(5)
            )
            .is_some(),
        "{}",
        g.logs()
    );
    assert!(!has_node_of(&zk, &sid), "the old session's node is gone");
    g.wait_more_files_of(first.token, 3, Duration::from_secs(10));
    g.stop_all();
    g.assert_invariants();
    // A clean stop leaves no session to close.
    for i in 0..3 {
        assert!(!state_dir(&g, i).join("session.json").exists());
    }
}

#[test]
fn a_new_process_cannot_take_the_state_dir_of_a_hung_leader() {
    // Given three replicas with a 6 s session, and a leader that hangs (SIGSTOP)
    let zk = ZkCluster::standalone();
    let mut g = group(&zk, 3);
    let (old, sid, token) = leader(&g);
    let t0 = SystemTime::now();
    g.replica(old).signal(libc::SIGSTOP);
    // When a new process starts on its state dir
    let newcomer = spawn(&g, old, &state_dir(&g, old));
    let status = newcomer.wait_exit(Duration::from_secs(3));
    // Then the hung leader's session is untouched: its node is still
    // there, and the takeover waits for the session to expire, as after a
    // crash
    assert!(
        has_node_of(&zk, &sid),
        "the hung leader's node is gone\n{}",
        newcomer.output()
    );
    let (first, after) = first_file_after(&g, token, t0);
    assert!(
        after >= EXPIRY_FLOOR.as_millis() as i64,
        "a successor led {after} ms after the hang: the session did not wait for expiry\n{}",
        newcomer.output()
    );
    // and the new process, which cannot take the lock, refused to start
    // with a clear error
    assert!(
        status.is_some_and(|s| s.code() == Some(1)),
        "{status:?}\n{}",
        newcomer.output()
    );
    assert!(
        newcomer
            .output()
            .contains("is locked by another election process"),
        "{}",
        newcomer.output()
    );
    g.wait_more_files_of(first.token, 3, Duration::from_secs(10));
    // The old leader, woken up, wrote nothing after its successor's first file.
    g.replica(old).signal(libc::SIGCONT);
    g.wait_stepped_down(old, Duration::from_secs(20));
    g.stop_all();
    g.assert_invariants();
}

#[test]
fn a_second_process_on_the_live_leaders_state_dir_leaves_it_leading() {
    // Given three replicas with a leader
    let zk = ZkCluster::standalone();
    let mut g = group(&zk, 3);
    let (old, sid, token) = leader(&g);
    // When a second process is given the leader's state dir
    let intruder = spawn(&g, 3, &state_dir(&g, old));
    let status = intruder.wait_exit(Duration::from_secs(3));
    // Then the leader keeps its session and leads on
    assert!(has_node_of(&zk, &sid), "{}", intruder.output());
    g.wait_more_files_of(token, 5, Duration::from_secs(10));
    assert_eq!(
        g.newest_record().unwrap().token,
        token,
        "{}\n--- intruder ---\n{}",
        g.logs(),
        intruder.output()
    );
    assert_eq!(g.times_leader(old), 1.0);
    // and the second process refused to start
    assert!(
        status.is_some_and(|s| s.code() == Some(1)),
        "{status:?}\n{}",
        intruder.output()
    );
    g.stop_all();
    g.assert_invariants();
}

#[test]
fn a_leader_killed_without_a_restart_is_succeeded_after_its_session_expires() {
    // Given three replicas with a 6 s session and state dirs
    let zk = ZkCluster::standalone();
    let mut g = group(&zk, 3);
    let (old, _, token) = leader(&g);
    // When the leader is killed and not restarted
    let t0 = SystemTime::now();
    g.replica(old).signal(libc::SIGKILL);
    g.replica(old).wait_exit(Duration::from_secs(5));
    g.replicas[old] = None;
    // Then its successor waits for the session to expire, as without a state dir
    let (first, after) = first_file_after(&g, token, t0);
    assert!(
        after >= EXPIRY_FLOOR.as_millis() as i64,
        "a successor led {after} ms after the kill\n{}",
        g.logs()
    );
    g.wait_more_files_of(first.token, 3, Duration::from_secs(10));
    g.stop_all();
    g.assert_invariants();
}

#[test]
fn a_close_whose_answer_is_lost_still_clears_the_saved_session() {
    // Given a leader with a state dir, connected through a proxy that
    // swallows the answer to its close: the server closes the session and
    // the connection breaks before the client reads that it did
    let zk = ZkCluster::standalone();
    let proxy = FaultProxy::start(zk.server_addr(0));
    let mut g = Group::new(&proxy.addr().to_string());
    g.extra = vec!["--zk-session-timeout".into(), SESSION.into()];
    g.replicas.push(Some(spawn(&g, 0, &state_dir(&g, 0))));
    let (_, sid, _) = leader(&g);
    let saved = state_dir(&g, 0).join("session.json");
    assert!(saved.exists());
    proxy.cut_at_next(Cut {
        opcode: CLOSE_SESSION,
        landed: true,
    });
    // When it stops
    assert!(g.replica(0).signal(libc::SIGTERM));
    assert!(g.replica(0).wait_exit(Duration::from_secs(10)).is_some());
    // Then the server's answer on reconnecting (no such session) settles
    // the close: the node is gone and nothing is left for a next process
    assert_eq!(proxy.cuts(), 1, "{}", g.logs());
    assert!(!has_node_of(&zk, &sid));
    assert!(!saved.exists(), "the saved session is left\n{}", g.logs());
    assert!(
        !g.replica(0).output().contains("close not acknowledged"),
        "{}",
        g.logs()
    );
}
