//! The safety promise under faults of the leader's own disk and of the
//! election data: no file of an old leadership lands after the first file
//! of the next one, and a leader whose writes cannot succeed steps down.
//!
//! Disk faults are injected into the running daemon with strace's fault
//! injection (`-e inject=fsync:delay_enter=…`), which needs root and the
//! `strace` binary: those tests are `#[ignore]`d, and `scripts/test.sh`
//! runs them (`--include-ignored`) when it is root. Elsewhere they show as
//! ignored, never as passed.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::faults::{Arrivals, Strace, main_thread_exited};
use common::group::{Group, TRANSITIONS, partitioned_pair};
use common::proxy::{FaultProxy, Mode};
use common::wait_until;
use common::zk::ZkCluster;
use election::files::{FileKey, LeaderRecord};
use zookeeper_client::{Acls, CreateMode};

const ROOT: &str = "/election/test";

/// Asserts that no file of `old_token` appeared after the first file of a
/// newer token.
fn assert_no_old_file_after_successor(order: &[FileKey], old_token: u64) {
    eprintln!("files in order of arrival: {order:?}");
    let Some(first_new) = order.iter().position(|k| k.token > old_token) else {
        panic!("no successor wrote: {order:?}");
    };
    let late: Vec<_> = order[first_new..]
        .iter()
        .filter(|k| k.token == old_token)
        .collect();
    assert!(
        late.is_empty(),
        "files of the old leadership {old_token} landed after the successor's first file {:?}: {late:?}",
        order[first_new]
    );
}

/// Creates `path` (its parents open to all) with `data`, `mode` and `acls`
/// through a client of `zk` that is closed afterwards.
fn plant(zk: &ZkCluster, path: &str, data: &[u8], mode: CreateMode, acls: Acls<'static>) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let client = common::zk_client(&zk.connect_string()).await;
        let parent = &path[..path.rfind('/').unwrap()];
        client
            .mkdir(
                parent,
                &CreateMode::Persistent.with_acls(Acls::anyone_all()),
            )
            .await
            .unwrap();
        client
            .create(path, data, &mode.with_acls(acls))
            .await
            .unwrap();
        common::close_client(client).await;
    });
}

fn is_root() -> bool {
    unsafe { libc::geteuid() == 0 }
}

/// The newest token written so far.
fn newest_token(g: &Group) -> u64 {
    g.newest_record().expect("a leader wrote").token
}

/// A standalone ZooKeeper and one replica, leading; its token.
fn a_lone_leader() -> (ZkCluster, Group, u64) {
    let zk = ZkCluster::standalone();
    let mut g = Group::new(&zk.connect_string());
    g.spawn(1);
    g.wait_leader(Duration::from_secs(20));
    let token = newest_token(&g);
    (zk, g, token)
}

/// A standalone ZooKeeper and two replicas, one of them leading: the
/// leader's index and its token.
fn two_with_a_leader() -> (ZkCluster, Group, usize, u64) {
    let zk = ZkCluster::standalone();
    let mut g = Group::new(&zk.connect_string());
    g.spawn(2);
    let leader = g.wait_leader(Duration::from_secs(20));
    let token = newest_token(&g);
    (zk, g, leader, token)
}

/// The first file of a leadership later than `old_token`, waited for up
/// to `within`; the test fails with `nobody` if none comes.
fn first_file_after(g: &Group, old_token: u64, within: Duration, nobody: &str) -> LeaderRecord {
    let later = || g.records().into_iter().find(|r| r.token > old_token);
    let ok = wait_until(within, Duration::from_millis(10), || later().is_some());
    assert!(ok, "{nobody}\n{}", g.logs());
    later().unwrap()
}

/// The leadership wrote the file after `key` (seq + 1): it did not reuse
/// or skip past the name.
fn assert_the_next_seq_follows(g: &Group, key: FileKey) {
    let next = FileKey {
        token: key.token,
        seq: key.seq + 1,
    };
    assert!(
        g.files_dir().join(next.file_name()).exists(),
        "{next:?}\n{}",
        g.logs()
    );
}

#[test]
#[ignore = "needs root and strace: run by scripts/test.sh as root"]
fn a_leader_with_a_hung_fsync_steps_down_and_its_write_never_lands_later() {
    assert!(is_root(), "run as root");
    // Given two replicas with a leader
    let (_zk, mut g, leader, old_token) = two_with_a_leader();
    let arrivals = Arrivals::watch(g.files_dir());
    // When every fsync of the leader hangs for 30 s
    let hang = Duration::from_secs(30);
    let strace = Strace::delay(g.replica(leader).pid(), "fsync", hang);
    let hung_at = Instant::now();
    // Then another replica writes within session + 3 x leader-timeout + 1 s
    let bound = Duration::from_millis(2000 + 3 * 200 + 1000);
    first_file_after(&g, old_token, Duration::from_secs(60), "nobody took over");
    let took = hung_at.elapsed();
    assert!(
        took <= bound,
        "takeover took {took:?}, more than {bound:?}\n{}",
        g.logs()
    );
    let errors = g.replica(leader).metric("election_write_errors_total", &[]);
    assert!(
        errors.is_some_and(|n| n >= 1.0),
        "the hung write counts as failed: {errors:?}\n{}",
        g.logs()
    );
    // And when the hung fsyncs finally return (no sign of that but the
    // clock), the old write is refused: no old file by the time the
    // successor has written 3 more
    while hung_at.elapsed() < hang + Duration::from_secs(2) {
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(strace);
    g.wait_more_files_of(newest_token(&g), 3, Duration::from_secs(10));
    let order = arrivals.finish();
    assert_no_old_file_after_successor(&order, old_token);
    g.stop_all();
    g.assert_invariants();
}

#[test]
#[ignore = "needs root and strace: run by scripts/test.sh as root"]
fn a_leader_whose_rename_hangs_abandons_its_session_and_never_wedges() {
    assert!(is_root(), "run as root");
    // Given two replicas with a leader
    let (_zk, mut g, leader, old_token) = two_with_a_leader();
    let arrivals = Arrivals::watch(g.files_dir());
    // When its rename (the commit, made holding the commit gate) hangs 30 s
    let hang = Duration::from_secs(30);
    let strace = Strace::delay(g.replica(leader).pid(), "renameat2", hang);
    let hung_at = Instant::now();
    // Then another replica writes within session + 3 x leader-timeout + 1 s,
    // plus what abandoning costs: the bounded wait for the gate (at most
    // the lease left, 0 here, or 100 ms), the server's expiry tick (200 ms)
    // and the successor's claim and first write (honest slack: 0.6 s)
    let bound = Duration::from_millis(2000 + 3 * 200 + 1000 + 600);
    let first_new = first_file_after(&g, old_token, Duration::from_secs(25), "nobody took over");
    let took = hung_at.elapsed();
    eprintln!("successor wrote {took:?} after the hang began");
    assert!(
        took <= bound,
        "takeover took {took:?}, more than {bound:?}\n{}",
        g.logs()
    );
    // And the hung replica is not wedged: it left Leader, and a SIGTERM
    // ends it within 2 s while its rename still hangs (its main thread
    // exits; the process is reaped once the kernel lets go of the thread
    // stuck in the rename, here when strace detaches)
    let r = g.replica(leader);
    let down = r.metric(TRANSITIONS, &[("from", "leader"), ("to", "failover")]);
    assert!(down.is_some_and(|n| n >= 1.0), "{down:?}\n{}", g.logs());
    let abandoned = r
        .wait_for_line("abandoning the ZooKeeper session", Duration::ZERO)
        .unwrap_or_else(|| panic!("the abandonment is logged\n{}", g.logs()));
    // (and the session was abandoned, not closed: its nodes stayed until the
    // server expired it, at least session - ping interval (2 s - 2/3 s)
    // after the abandonment; a close would have let the successor write
    // within milliseconds)
    let ms = |t: &str| election::cmd::verify::parse_time_ms(t).unwrap();
    let abandoned_ms = ms(abandoned.split_whitespace().next().unwrap());
    let waited = ms(&first_new.written_at) - abandoned_ms;
    eprintln!("successor's first write {waited} ms after the abandonment");
    assert!(waited >= 1300, "{waited} ms\n{}", g.logs());
    assert!(hung_at.elapsed() < hang - Duration::from_secs(5));
    let signalled = Instant::now();
    r.signal(libc::SIGTERM);
    let exited = wait_until(Duration::from_secs(10), Duration::from_millis(5), || {
        main_thread_exited(r.pid())
    });
    let exit_took = signalled.elapsed();
    eprintln!("SIGTERM: main thread exited after {exit_took:?}");
    assert!(exited, "SIGTERM did not end it\n{}", g.logs());
    assert!(
        exit_took <= Duration::from_secs(2),
        "SIGTERM took {exit_took:?}\n{}",
        g.logs()
    );
    drop(strace);
    let status = r.wait_exit(Duration::from_secs(10));
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{}", g.logs());
    // And no file of the old leadership landed after the successor's first
    // (its temp file was removed by the successor before its first write)
    g.wait_more_files_of(newest_token(&g), 3, Duration::from_secs(10));
    let order = arrivals.finish();
    assert_no_old_file_after_successor(&order, old_token);
    g.stop_all();
    g.assert_invariants();
}

#[test]
#[ignore = "needs root and strace: run by scripts/test.sh as root"]
fn sigterm_while_the_leaders_rename_hangs_exits_at_once_without_releasing() {
    assert!(is_root(), "run as root");
    // Given two replicas with a leader whose rename hangs 30 s, and whose
    // write has already overrun its lease
    let (_zk, mut g, leader, old_token) = two_with_a_leader();
    let r = g.replica(leader);
    let since = r.line_count();
    let strace = Strace::delay(r.pid(), "renameat2", Duration::from_secs(30));
    r.wait_for_new_line(
        since,
        "did not finish within the lease",
        Duration::from_secs(10),
    )
    .unwrap_or_else(|| panic!("no write overran\n{}", g.logs()));
    // When it gets a SIGTERM (the first one: that used to hang)
    let signalled = Instant::now();
    let signalled_ms = election::published::unix_ms(std::time::SystemTime::now()) as i64;
    r.signal(libc::SIGTERM);
    // Then its main thread exits within 2 s (abandoning the session)
    let exited = wait_until(Duration::from_secs(10), Duration::from_millis(5), || {
        main_thread_exited(r.pid())
    });
    let took = signalled.elapsed();
    eprintln!("SIGTERM: main thread exited after {took:?}");
    assert!(
        exited && took <= Duration::from_secs(2),
        "{took:?}\n{}",
        g.logs()
    );
    assert!(
        r.output().contains("abandoning the ZooKeeper session"),
        "{}",
        g.logs()
    );
    // And the successor starts only once that session expired (a clean
    // close would have let it write within milliseconds)
    let first_new = first_file_after(&g, old_token, Duration::from_secs(10), "nobody took over");
    let waited =
        election::cmd::verify::parse_time_ms(&first_new.written_at).unwrap() - signalled_ms;
    eprintln!("successor's first write {waited} ms after the SIGTERM");
    assert!(waited >= 1300, "{waited} ms\n{}", g.logs());
    drop(strace);
    let status = g.replica(leader).wait_exit(Duration::from_secs(10));
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{}", g.logs());
    g.stop_all();
    g.assert_invariants();
}

#[test]
#[ignore = "needs root and strace: run by scripts/test.sh as root"]
fn a_leader_whose_writes_are_always_fenced_steps_down() {
    assert!(is_root(), "run as root");
    // Given two replicas with a leader
    let (_zk, mut g, leader, old_token) = two_with_a_leader();
    // When each of its fsyncs takes longer than its whole lease (1 s), so
    // that every write would commit after the lease ran out
    let _strace = Strace::delay(
        g.replica(leader).pid(),
        "fsync",
        Duration::from_millis(1200),
    );
    // Then it counts those writes as failures and steps down, and another
    // replica leads
    first_file_after(
        &g,
        old_token,
        Duration::from_secs(20),
        "the fenced leader never stepped down",
    );
    // (to Failover, having counted failed writes)
    let r = g.replica(leader);
    let down = r.metric(TRANSITIONS, &[("from", "leader"), ("to", "failover")]);
    let failed = r.metric("election_write_errors_total", &[]);
    assert!(
        down.is_some_and(|n| n >= 1.0) && failed.is_some_and(|n| n >= 1.0),
        "step-downs {down:?}, write errors {failed:?}\n{}",
        g.logs()
    );
    g.stop_all();
    g.assert_invariants();
}

/// Two replicas; the leader's `syscall` is slowed by `delay`; `moment`
/// waits for the instant at which an operator deletes the leader's node.
/// Then the other replica must take over, and no file of the old
/// leadership may arrive after the successor's first file.
fn delete_the_leader_node_mid_write(syscall: &str, delay: Duration, moment: impl FnOnce(&Group)) {
    assert!(is_root(), "run as root");
    let (zk, mut g, leader, old_token) = two_with_a_leader();
    let arrivals = Arrivals::watch(g.files_dir());
    let strace = Strace::delay(g.replica(leader).pid(), syscall, delay);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = rt.block_on(common::zk_client(&zk.connect_string()));
    let children = rt.block_on(client.list_children(ROOT)).unwrap();
    let leader_node = format!(
        "{ROOT}/{}",
        election::recipe::order_candidates(&children)[0].name
    );
    moment(&g);
    let deleted = rt.block_on(client.delete(&leader_node, None));
    assert!(
        deleted.is_ok(),
        "{deleted:?}: the leader left by itself\n{}",
        g.logs()
    );
    rt.block_on(common::close_client(client));
    first_file_after(&g, old_token, Duration::from_secs(20), "nobody took over");
    // Checked once the old leader has stepped down (its commit gate is
    // closed) and the successor has written 10 more files (2 s: a write
    // in flight at the deletion, its syscalls slowed, had time to land),
    // and again 3 files after the slowing ended
    g.wait_stepped_down(leader, Duration::from_secs(20));
    let new_token = newest_token(&g);
    g.wait_more_files_of(new_token, 10, Duration::from_secs(20));
    drop(strace);
    g.wait_more_files_of(new_token, 3, Duration::from_secs(10));
    let order = arrivals.finish();
    if std::env::var_os("SAFETY_DEBUG").is_some() {
        eprintln!("{}", g.logs());
    }
    assert_no_old_file_after_successor(&order, old_token);
    g.stop_all();
    g.assert_invariants();
}

#[test]
#[ignore = "needs root and strace: run by scripts/test.sh as root"]
fn deleting_the_leader_node_during_a_slow_write_never_lets_the_old_write_land_late() {
    // Given a leader whose fsyncs take 400 ms (a write takes about 0.8 s,
    // within its 1 s lease), when its node is deleted right after a write's
    // temp file appears (while that file's fsync runs), then no file of its
    // leadership lands after the successor's first
    delete_the_leader_node_mid_write("fsync", Duration::from_millis(400), |g| {
        let files = g.files_dir();
        let in_write = wait_until(Duration::from_secs(10), Duration::from_millis(1), || {
            std::fs::read_dir(&files).is_ok_and(|d| {
                d.filter_map(|e| e.ok())
                    .any(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
            })
        });
        assert!(in_write, "no write in flight seen");
    });
}

#[test]
#[ignore = "needs root and strace: run by scripts/test.sh as root"]
fn deleting_the_leader_node_after_its_confirmation_never_lets_that_write_land_late() {
    // Given a leader whose file opens take 250 ms (a write's temp file is
    // created well after its confirmation, and after a successor's
    // clean-up of stale temp files; its writes stay within the lease),
    // when its node is deleted 380 ms after a file lands (the next write
    // is then confirmed and being opened or committed), then no file of
    // its leadership lands after the successor's first
    delete_the_leader_node_mid_write("openat", Duration::from_millis(250), |g| {
        let count = || election::files::list(&g.files_dir()).map_or(0, |l| l.len());
        let before = count();
        let landed = wait_until(Duration::from_secs(10), Duration::from_millis(1), || {
            count() > before
        });
        assert!(landed, "the slowed leader wrote nothing\n{}", g.logs());
        std::thread::sleep(Duration::from_millis(380));
    });
}

#[test]
fn a_writer_node_held_by_a_live_session_delays_the_first_write_then_is_cleared() {
    // Given a writer node held by another live session (a leader whose
    // candidate node was deleted but which did not release it)
    let zk = ZkCluster::standalone();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let holder = rt.block_on(async {
        let client = common::zk_client(&zk.connect_string()).await;
        client
            .mkdir(ROOT, &CreateMode::Persistent.with_acls(Acls::anyone_all()))
            .await
            .unwrap();
        client
            .create(
                &format!("{ROOT}/writer"),
                b"1",
                &CreateMode::Ephemeral.with_acls(Acls::anyone_all()),
            )
            .await
            .unwrap();
        client
    });
    // When a replica becomes leader
    let mut g = Group::new(&zk.connect_string());
    g.spawn(1);
    // Then it waits for that leader's lease to run out, clears the node
    // and writes
    let ok = wait_until(Duration::from_secs(20), Duration::from_millis(20), || {
        !g.records().is_empty()
    });
    assert!(ok, "{}", g.logs());
    let status = g.replica(0).status().expect("the leader answers");
    assert_eq!(status.state, "leader", "{status:?}");
    let first = &g.records()[0];
    let waited_ms =
        election::cmd::verify::parse_time_ms(&first.written_at).unwrap() - status.since_ms as i64;
    let bound = election::recipe::lock_delay_bound(
        Duration::from_secs(2),
        Some(Duration::from_millis(200)),
    );
    assert!(
        waited_ms >= bound.as_millis() as i64 - 10,
        "first file {waited_ms} ms after becoming leader, the lock-delay is {bound:?}\n{}",
        g.logs()
    );
    // (the holder still lives: the node now held is the new leader's)
    let (_, stat) = rt
        .block_on(holder.get_data(&format!("{ROOT}/writer")))
        .expect("a writer node");
    let session = status.session_id.clone().unwrap_or_default();
    let session = u64::from_str_radix(session.trim_start_matches("0x"), 16).unwrap();
    assert_eq!(stat.ephemeral_owner as u64, session, "{status:?}");
    assert_ne!(stat.ephemeral_owner, holder.session_id().0, "{status:?}");
    rt.block_on(common::close_client(holder));
    g.stop_all();
    g.assert_invariants();
}

#[test]
fn failures_right_after_init_back_off_and_reach_failover_give_up() {
    // Given an election path on which the replicas may read but not create
    let zk = ZkCluster::standalone();
    plant(&zk, ROOT, b"", CreateMode::Persistent, Acls::anyone_read());
    // When a replica with failover-give-up 3s starts
    let mut g = Group::new(&zk.connect_string());
    g.extra = vec!["--failover-give-up".into(), "3s".into()];
    g.spawn(1);
    // Then every Attempter fails, the failures add up, and it gives up with
    // exit 1 instead of retrying every 100 ms forever
    let status = g.replica(0).wait_exit(Duration::from_secs(30));
    assert!(status.is_some(), "never gave up\n{}", g.logs());
    assert_eq!(status.unwrap().code(), Some(1), "{}", g.logs());
    assert!(
        g.logs().contains("failover-give-up reached"),
        "{}",
        g.logs()
    );
}

#[test]
fn a_persistent_node_named_like_session_zero_does_not_block_the_election() {
    // Given a persistent node that looks like a candidate of "session 0"
    let zk = ZkCluster::standalone();
    let impostor = format!("{ROOT}/c_0000000000000000_0000000000");
    plant(
        &zk,
        &impostor,
        b"",
        CreateMode::Persistent,
        Acls::anyone_all(),
    );
    // When replicas start
    let mut g = Group::new(&zk.connect_string());
    g.spawn(2);
    // Then one of them leads all the same
    g.wait_leader(Duration::from_secs(20));
    // And `election status` does not call the impostor the leader
    let out = Command::new(env!("CARGO_BIN_EXE_election"))
        .args([
            "status",
            "--json",
            "--zk-servers",
            &zk.connect_string(),
            "--zk-root",
            ROOT,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let leader = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["leader"] == true)
        .expect("a leader row");
    assert!(
        !leader["znode"]
            .as_str()
            .unwrap()
            .contains("c_0000000000000000_"),
        "{rows}"
    );
    assert_eq!(rows.as_array().unwrap().len(), 2, "{rows}");
    g.stop_all();
    g.assert_invariants();
}

#[test]
fn an_impostor_named_after_our_session_never_makes_us_delete_our_node() {
    // Given a leader and a waiting candidate, whose queue position is known
    let zk = ZkCluster::standalone();
    let mut g = Group::new(&zk.connect_string());
    g.spawn(1);
    g.wait_leader(Duration::from_secs(20));
    g.spawn(1);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let list = || {
        rt.block_on(async {
            let client = common::zk_client(&zk.connect_string()).await;
            let c = client.list_children(ROOT).await.unwrap();
            common::close_client(client).await;
            election::recipe::order_candidates(&c)
        })
    };
    assert!(wait_until(
        Duration::from_secs(10),
        Duration::from_millis(50),
        || list().len() == 2
    ));
    let waiting = list()[1].clone();
    assert!(waiting.seq > 0, "{waiting:?}");
    // When someone creates a persistent node named after the candidate's
    // session that sorts before its real node
    let impostor = format!(
        "{ROOT}/{}{:010}",
        election::recipe::candidate_prefix(waiting.session),
        0
    );
    rt.block_on(async {
        let client = common::zk_client(&zk.connect_string()).await;
        client
            .create(
                &impostor,
                b"",
                &CreateMode::Persistent.with_acls(Acls::anyone_all()),
            )
            .await
            .unwrap();
        common::close_client(client).await;
    });
    // Then after a few safety-net rounds the candidate still holds its real node
    std::thread::sleep(Duration::from_secs(4));
    let names: Vec<String> = list().into_iter().map(|c| c.name).collect();
    assert!(
        names.contains(&waiting.name),
        "the real node was deleted: {names:?}\n{}",
        g.logs()
    );
    g.stop_all();
    g.assert_invariants();
}

/// A fencing node that leaves no usable token: content that is not a
/// token (refused, not read as 0), or the last token (u64::MAX: a
/// saturating token would be shared with an earlier leadership).
#[rstest::rstest]
#[case::garbage(b"not-a-number".to_vec(), "fencing node")]
#[case::last_token(u64::MAX.to_string().into_bytes(), "fencing tokens exhausted")]
fn a_fencing_node_without_a_usable_token_stops_the_leader_from_writing(
    #[case] content: Vec<u8>,
    #[case] says: &str,
) {
    // Given such a fencing node
    let zk = ZkCluster::standalone();
    let fencing = format!("{ROOT}/fencing");
    plant(
        &zk,
        &fencing,
        &content,
        CreateMode::Persistent,
        Acls::anyone_all(),
    );
    // When a replica starts
    let mut g = Group::new(&zk.connect_string());
    g.spawn(1);
    // Then it fails closed and says why (in /status and its log): Failover
    // with fencing-error, three times, and no file
    let r = g.replica(0);
    r.wait_status(
        |s| s.state == "failover" && s.cause == "fencing-error",
        Duration::from_secs(20),
    );
    r.wait_metric(
        TRANSITIONS,
        &[("from", "leader"), ("to", "failover")],
        |n| n >= 3.0,
        Duration::from_secs(20),
    );
    assert!(r.output().contains(says), "{}", g.logs());
    assert!(g.records().is_empty(), "{:?}", g.records());
    g.stop_all();
}

#[test]
fn a_low_connect_timeout_does_not_disconnect_a_healthy_leader_on_a_slower_link() {
    // Given a leader with a 300 ms zk-connect-timeout behind a proxy
    let zk = ZkCluster::standalone();
    let proxy = FaultProxy::start(zk.server_addr(0));
    let mut g = Group::new(&proxy.addr().to_string());
    g.extra = vec!["--zk-connect-timeout".into(), "300ms".into()];
    g.spawn(1);
    g.wait_leader(Duration::from_secs(20));
    // When the link's round trip grows to 400 ms (answers still well within
    // the session timeout and the confirmation bound)
    proxy.set_mode(Mode::Delay(Duration::from_millis(200)));
    let token = g.newest_record().unwrap().token;
    // Then the leader keeps writing (8 more files: at least 3 s at 400 ms
    // a round trip, and within 10 s, the rate of more than 3 in 4 s), and
    // the session stayed connected all along (the connect timeout bounds
    // only establishing a session)
    g.wait_more_files_of(token, 8, Duration::from_secs(10));
    let disconnected = g.replica(0).metric(
        "election_zk_session_events_total",
        &[("state", "Disconnected")],
    );
    assert_eq!(disconnected, Some(0.0), "{}", g.logs());
    assert_eq!(g.newest_record().unwrap().token, token, "{}", g.logs());
    proxy.set_mode(Mode::Pass);
    g.stop_all();
    g.assert_invariants();
}

#[test]
fn confirmations_slower_than_a_quarter_session_never_let_the_leader_write() {
    // Given a leader r0 behind a proxy and r1 waiting, connected directly
    let zk = ZkCluster::standalone();
    let proxy = FaultProxy::start(zk.server_addr(0));
    let g = partitioned_pair(&zk, &proxy);
    let token = newest_token(&g);
    let fenced_before = g.writes_fenced(0);
    // When r0's round trip grows to 600 ms (300 ms each way): above the
    // confirmation bound (session/4 = 500 ms), under the lease (session/2),
    // and no trouble for the session (pings still arrive in time)
    proxy.set_mode(Mode::Delay(Duration::from_millis(300)));
    // Then once a confirmation sent before the change has run out its
    // lease (1 s), r0 writes no file more
    std::thread::sleep(Duration::from_secs(1));
    let seq_of = |g: &Group| {
        g.records()
            .iter()
            .filter(|r| r.token == token)
            .map(|r| r.seq)
            .max()
            .unwrap_or(0)
    };
    let last_seq = seq_of(&g);
    // it counts each slow confirmation as a fenced write and a failure,
    // and after max-write-failures (3) steps down to Failover
    let r0 = g.replica(0);
    r0.wait_metric(
        TRANSITIONS,
        &[("from", "leader"), ("to", "failover")],
        |n| n >= 1.0,
        Duration::from_secs(10),
    );
    let fenced = g.writes_fenced(0) - fenced_before;
    assert!(fenced >= 3.0, "fenced {fenced}\n{}", g.logs());
    let stepped_down = r0
        .wait_for_line(
            |l: &str| l.contains("from=leader to=failover"),
            Duration::ZERO,
        )
        .unwrap();
    assert!(
        stepped_down.contains("cause=write-failures")
            && stepped_down.contains("leadership not confirmed"),
        "{stepped_down}"
    );
    // and r1 leads afterwards (r0's close reaches the server, slowly)
    let ok = wait_until(Duration::from_secs(10), Duration::from_millis(20), || {
        g.newest_record().is_some_and(|r| r.node_id == "r1")
    });
    assert!(ok, "r1 did not take over\n{}", g.logs());
    assert_eq!(
        seq_of(&g),
        last_seq,
        "r0 wrote on a slow link\n{}",
        g.logs()
    );
    proxy.set_mode(Mode::Pass);
    let mut g = g;
    g.stop_all();
    g.assert_invariants();
}

/// Puts a leader file of `token` (seq 1, from a node "planted") into
/// `dir`, atomically, as a newer leadership would.
fn plant_leader_file(dir: &std::path::Path, token: u64) -> FileKey {
    let key = FileKey { token, seq: 1 };
    let record = election::files::LeaderRecord {
        node_id: "planted".into(),
        token,
        seq: 1,
        written_at: election::files::now_rfc3339(),
        session_id: "0x0".into(),
        znode: "/planted".into(),
    };
    let temp = dir.join("planted.tmp");
    std::fs::write(&temp, serde_json::to_vec(&record).unwrap()).unwrap();
    std::fs::rename(&temp, dir.join(key.file_name())).unwrap();
    key
}

#[test]
fn a_leader_whose_writes_are_all_superseded_steps_down_and_tokens_jump_above() {
    // Given two replicas with a leader
    let (_zk, mut g, leader, old_token) = two_with_a_leader();
    let fenced_before = g.writes_fenced(leader);
    let arrivals = Arrivals::watch(g.files_dir());
    // When a file of a much newer leadership appears in file-dir
    let planted = plant_leader_file(&g.files_dir(), old_token + 1000);
    // Then every later write of the leader is refused at the commit point
    // (superseded), counted as fenced and as a failure, and after
    // max-write-failures (3) it steps down with cause write-failures
    let r = g.replica(leader);
    r.wait_metric(
        TRANSITIONS,
        &[("from", "leader"), ("to", "failover")],
        |n| n >= 1.0,
        Duration::from_secs(10),
    );
    let fenced = g.writes_fenced(leader) - fenced_before;
    assert!(fenced >= 3.0, "fenced {fenced}\n{}", g.logs());
    let stepped_down = r
        .wait_for_line(
            |l: &str| l.contains("from=leader to=failover"),
            Duration::ZERO,
        )
        .unwrap();
    assert!(
        stepped_down.contains("cause=write-failures")
            && stepped_down.contains("belongs to a newer leadership"),
        "{stepped_down}"
    );
    // And writing resumes only with a token above the planted one: one
    // more than the newest token on disk (the claim reads file-dir)
    let ok = wait_until(Duration::from_secs(20), Duration::from_millis(20), || {
        newest_token(&g) > planted.token
    });
    assert!(ok, "nobody wrote above the planted token\n{}", g.logs());
    let new_token = newest_token(&g);
    assert_eq!(new_token, planted.token + 1, "{}", g.logs());
    g.wait_more_files_of(new_token, 3, Duration::from_secs(10));
    let order = arrivals.finish();
    eprintln!("files in order of arrival: {order:?}");
    let at = order.iter().position(|k| *k == planted).unwrap();
    // (a write whose check ran just before the planting may still land:
    // its check and its rename are microseconds apart)
    let late = order[at..].iter().filter(|k| k.token == old_token).count();
    assert!(
        late <= 1,
        "{late} old files after the planted one: {order:?}"
    );
    assert!(
        order
            .iter()
            .all(|k| k.token <= old_token || k.token >= planted.token),
        "a token between the old and the planted one: {order:?}"
    );
    g.stop_all();
    g.assert_invariants();
}

#[test]
#[ignore = "needs root and strace: run by scripts/test.sh as root"]
fn a_failed_directory_fsync_after_a_rename_never_reuses_the_file_name() {
    assert!(is_root(), "run as root");
    // Given a leader
    let (_zk, mut g, token) = a_lone_leader();
    let r = g.replica(0);
    let since = r.line_count();
    // When the fsync of file-dir after a rename fails with EIO once (the
    // file is in place, its name taken)
    let strace = Strace::inject(r.pid(), "fsync", "error=EIO:when=1", Some(&g.files_dir()));
    let failed = r
        .wait_for_new_line(
            since,
            "syncing the directory failed",
            Duration::from_secs(10),
        )
        .unwrap_or_else(|| panic!("no directory fsync failed\n{}", g.logs()));
    drop(strace);
    eprintln!("{failed}");
    let name = failed
        .split(|c: char| c == '/' || c.is_whitespace())
        .find_map(FileKey::parse)
        .unwrap_or_else(|| panic!("no file named in {failed}"));
    // Then that file stays, the next write of the leadership uses seq + 1,
    // and no write fails on a name already taken
    assert!(g.files_dir().join(name.file_name()).exists(), "{name:?}");
    g.wait_more_files_of(token, 3, Duration::from_secs(10));
    assert_the_next_seq_follows(&g, name);
    let out = r.output();
    assert!(
        !out.contains("File exists") && !out.contains("cannot rename"),
        "{out}"
    );
    let errors = r.metric("election_write_errors_total", &[]);
    assert!(errors.is_some_and(|n| n >= 1.0), "{errors:?}");
    g.stop_all();
    g.assert_invariants();
}

/// Renames the first leader temp file that appears in `dir` to its final
/// name (`leader_<token>_<seq>.json`, from the temp name) and returns
/// that key: the effect of a rename whose first transmission took effect
/// on an NFS server, before the retransmit answers ENOENT.
fn publish_the_next_temp_file(dir: &std::path::Path, timeout: Duration) -> Option<FileKey> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            // .leader_<token>_<seq>.<pid>.<random>.tmp
            let Some(stem) = name
                .strip_prefix(election::files::TEMP_PREFIX)
                .and_then(|s| s.split('.').next())
            else {
                continue;
            };
            let Some((token, seq)) = stem.split_once('_') else {
                continue;
            };
            let (Ok(token), Ok(seq)) = (token.parse(), seq.parse()) else {
                continue;
            };
            let key = FileKey { token, seq };
            if std::fs::rename(entry.path(), dir.join(key.file_name())).is_ok() {
                return Some(key);
            }
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    None
}

#[test]
#[ignore = "needs root and strace: run by scripts/test.sh as root"]
fn a_rename_that_took_effect_but_reported_enoent_never_reuses_the_file_name() {
    assert!(is_root(), "run as root");
    // Given a leader
    let (_zk, mut g, token) = a_lone_leader();
    let r = g.replica(0);
    // When one of its renames takes effect but answers ENOENT, as an NFS
    // retransmit of a rename that already happened does: each rename waits
    // 300 ms before it runs, and meanwhile the temp file is moved to its
    // final name, so the call that follows finds no source
    let strace = Strace::delay(r.pid(), "renameat2", Duration::from_millis(300));
    let published = publish_the_next_temp_file(&g.files_dir(), Duration::from_secs(10));
    let published = published.unwrap_or_else(|| panic!("no temp file seen\n{}", g.logs()));
    let ok = wait_until(Duration::from_secs(5), Duration::from_millis(20), || {
        r.output().contains("No such file or directory") || r.output().contains("took effect")
    });
    drop(strace);
    assert!(ok, "the rename did not answer ENOENT\n{}", g.logs());
    eprintln!("published {published:?} behind the leader's back");
    // Then the file counts as published: the leadership goes on with
    // seq + 1, no write fails on a name already taken, and it never steps
    // down for it
    g.wait_more_files_of(token, 5, Duration::from_secs(10));
    assert_the_next_seq_follows(&g, published);
    let out = r.output();
    assert!(!out.contains("File exists"), "{out}");
    let failovers = r.metric(TRANSITIONS, &[("to", "failover")]);
    assert_eq!(failovers, Some(0.0), "{}", g.logs());
    g.stop_all();
    g.assert_invariants();
}

/// The candidate nodes under the election path, straight from the server
/// (not through any proxy).
fn candidates_on_server(zk: &ZkCluster) -> Vec<String> {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let client = common::zk_client(&zk.connect_string()).await;
        let children = client.list_children(ROOT).await.unwrap_or_default();
        common::close_client(client).await;
        children
            .into_iter()
            .filter(|c| c.starts_with("c_"))
            .collect()
    })
}

/// A leader r0, and a candidate r1 that reaches ZooKeeper only through
/// `proxy`, with an admin listener; after r1's link turned half-open (the
/// server hears every packet, so it keeps r1's session; r1's client hears
/// nothing and declares the session expired on its own clock), once r1
/// left Attempter for that. Returns the group, r1's admin address and the
/// node the server still holds for r1's old session.
fn candidate_whose_client_declared_expiry(
    zk: &ZkCluster,
    proxy: &FaultProxy,
) -> (Group, String, String) {
    let mut g = Group::new(&zk.connect_string());
    g.spawn(1);
    g.wait_leader(Duration::from_secs(20));
    let before = candidates_on_server(zk);
    g.servers = proxy.addr().to_string();
    let admin = format!("127.0.0.1:{}", common::free_port());
    g.extra = vec!["--admin-addr".into(), admin.clone()];
    g.spawn(1);
    let r1 = g.replica(1);
    r1.wait_status(
        |s| s.state == "attempter" && s.znode.is_some(),
        Duration::from_secs(20),
    );
    let node = candidates_on_server(zk)
        .into_iter()
        .find(|c| !before.contains(c))
        .expect("r1's node");
    let since = r1.line_count();
    proxy.set_mode(Mode::HalfOpen);
    let left = r1
        .wait_for_new_line(since, "to=failover", Duration::from_secs(30))
        .unwrap_or_else(|| panic!("r1 never left Attempter\n{}", g.logs()));
    assert!(left.contains("Expired"), "{left}");
    assert!(
        candidates_on_server(zk).contains(&node),
        "the server still holds r1's node (its session is alive there)\n{}",
        g.logs()
    );
    (g, admin, node)
}

#[test]
fn release_after_a_client_declared_expiry_never_answers_released_while_the_server_holds_the_node() {
    // Given a candidate whose client declared its session expired while
    // the server still holds it (a half-open link)
    let zk = ZkCluster::standalone();
    let proxy = FaultProxy::start(zk.server_addr(0));
    let (mut g, admin, node) = candidate_whose_client_declared_expiry(&zk, &proxy);
    // When the preStop hook releases it
    let out = Command::new(env!("CARGO_BIN_EXE_election"))
        .args(["release", "--admin-addr", &admin, "--timeout", "20s"])
        .output()
        .expect("run `election release`");
    let answer = String::from_utf8_lossy(&out.stdout).into_owned();
    let held = candidates_on_server(&zk).contains(&node);
    eprintln!(
        "release answered {:?} {answer:?}; node held: {held}",
        out.status.code()
    );
    // Then it answers "released" only if the node is really gone
    assert!(
        !(out.status.success() && held),
        "answered released while the server holds {node}\n{}",
        g.logs()
    );
    proxy.set_mode(Mode::Pass);
    g.stop_all();
}

#[test]
fn after_a_client_declared_expiry_the_replica_never_queues_behind_its_own_ghost() {
    // Given a candidate whose client declared its session expired while
    // the server still holds it (a half-open link)
    let zk = ZkCluster::standalone();
    let proxy = FaultProxy::start(zk.server_addr(0));
    let (mut g, _admin, node) = candidate_whose_client_declared_expiry(&zk, &proxy);
    // When the link heals
    proxy.set_mode(Mode::Pass);
    // Then r1 queues again with a new session, and never behind the node
    // of its old session (sampled from the server every 10 ms): the old
    // session was closed, or its node removed, first
    let mut queued_behind_ghost = Vec::new();
    let ok = wait_until(Duration::from_secs(30), Duration::from_millis(10), || {
        let now = candidates_on_server(&zk);
        if now.contains(&node) && now.len() > 2 {
            queued_behind_ghost = now.clone();
        }
        !now.contains(&node) && now.len() == 2
    });
    assert!(ok, "r1 never queued again\n{}", g.logs());
    assert!(
        queued_behind_ghost.is_empty(),
        "r1 queued behind the node of its own old session: {queued_behind_ghost:?}\n{}",
        g.logs()
    );
    g.stop_all();
    g.assert_invariants();
}
