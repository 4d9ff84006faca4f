//! Bad input from outside the daemon gets a clear answer: files in
//! file-dir named like leader files that are not (refused, named, left
//! alone), garbage in ZooKeeper nodes anyone may write (bounded and
//! sanitised before it reaches `/status`, Pod annotations or `election
//! status`). Against a real ZooKeeper.

mod common;

use std::process::Command;
use std::time::Duration;

use common::group::Group;
use common::wait_until;
use common::zk::ZkCluster;
use election::files::FileKey;

const ROOT: &str = "/election/test";

/// Puts a valid leader file of `token` (seq 1) into `dir`.
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
    std::fs::write(
        dir.join(key.file_name()),
        serde_json::to_vec(&record).unwrap(),
    )
    .unwrap();
    key
}

/// The leader files in `dir` a leader trusts, oldest first.
fn trusted_files(dir: &std::path::Path) -> Vec<FileKey> {
    election::files::list(dir)
        .unwrap()
        .into_iter()
        .filter(|k| election::readback::read(dir, *k).is_ok())
        .collect()
}

#[test]
fn foreign_files_named_like_leader_files_are_refused_named_and_left_alone() {
    // Given a file-dir with a valid file of an earlier leadership and three
    // foreign files named like leader files: an empty one with the largest
    // token, one whose content names another file, and a FIFO with a token
    // so low that retention would pick it
    let zk = ZkCluster::standalone();
    let mut g = Group::new(&zk.connect_string());
    let dir = g.files_dir();
    std::fs::create_dir_all(&dir).unwrap();
    let valid = plant_leader_file(&dir, 1_000_000_000_000);
    let empty = FileKey {
        token: u64::MAX,
        seq: 1,
    };
    std::fs::write(dir.join(empty.file_name()), b"").unwrap();
    let mismatched = FileKey {
        token: 1_000_000_000_000_000,
        seq: 1,
    };
    let other = std::fs::read(dir.join(valid.file_name())).unwrap();
    std::fs::write(dir.join(mismatched.file_name()), &other).unwrap();
    let fifo = FileKey { token: 1, seq: 1 };
    let c = std::ffi::CString::new(dir.join(fifo.file_name()).to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
    let foreign = [empty, mismatched, fifo];
    let before: Vec<_> = foreign
        .iter()
        .map(|k| std::fs::symlink_metadata(dir.join(k.file_name())).unwrap())
        .collect();
    // When two replicas start, with a retention that keeps 3 files
    g.extra = vec!["--storage-capacity".into(), "3".into()];
    g.spawn(2);
    // Then one leads and writes with a token above the valid file's (the
    // foreign ones do not count), and goes on writing
    let ok = wait_until(Duration::from_secs(30), Duration::from_millis(50), || {
        trusted_files(&dir).iter().any(|k| k.token > valid.token)
    });
    assert!(ok, "nobody wrote\n{}", g.logs());
    let token = trusted_files(&dir).last().unwrap().token;
    assert_eq!(token, valid.token + 1, "{}", g.logs());
    // (not `g.wait_leader`: the newest record by name is a foreign one)
    let leader = (0..2)
        .find(|i| {
            g.replica(*i)
                .status()
                .is_some_and(|s| s.token == Some(token))
        })
        .expect("the writer says it leads");
    g.wait_more_files_of(token, 4, Duration::from_secs(20));
    // And /status names every refused file, with the reason
    let status = g.replica(leader).status().unwrap();
    let names: Vec<&str> = status
        .refused_files
        .iter()
        .map(|f| f.file.as_str())
        .collect();
    for k in &foreign {
        assert!(
            names.contains(&k.file_name().as_str()),
            "{k:?} not in {:?}",
            status.refused_files
        );
    }
    // And the log names each one once, however many writes went by
    let log = g.replica(leader).output();
    for k in &foreign {
        let warned = log
            .lines()
            .filter(|l| l.contains(&k.file_name()) && l.contains("WARN"))
            .count();
        assert_eq!(warned, 1, "{k:?}:\n{log}");
    }
    // And the foreign files are untouched: same inode, size and time
    for (k, was) in foreign.iter().zip(&before) {
        use std::os::unix::fs::MetadataExt;
        let now = std::fs::symlink_metadata(dir.join(k.file_name()))
            .unwrap_or_else(|e| panic!("{k:?} is gone: {e}"));
        assert_eq!(
            (now.ino(), now.size(), now.mtime_nsec(), now.file_type()),
            (was.ino(), was.size(), was.mtime_nsec(), was.file_type()),
            "{k:?}"
        );
    }
    g.stop_all();
    // And `election verify` reports exactly the foreign files, no overlap
    let report = election::cmd::verify::check(&dir, None).unwrap();
    assert_eq!(report.violations.len(), 3, "{:?}", report.violations);
}

/// Replaces the data of the leading candidate node (the first in the
/// queue) with `data`, as a foreign client without credentials may.
fn overwrite_leader_candidate(zk: &ZkCluster, data: &[u8]) -> String {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let client = common::zk_client(&zk.connect_string()).await;
        let children = client.list_children(ROOT).await.unwrap();
        let first = election::recipe::order_candidates(&children)
            .into_iter()
            .next()
            .expect("a candidate");
        let path = format!("{ROOT}/{}", first.name);
        client.set_data(&path, data, None).await.unwrap();
        common::close_client(client).await;
        path
    })
}

/// Whether `s` is what a node id may be (`--node-id`'s rules).
fn sane(s: &str) -> bool {
    election::recipe::is_valid_node_id(s)
}

#[rstest::rstest]
#[case::huge_json(format!(r#"{{"node_id":"r0\u001b[2J\n{}"}}"#, "x".repeat(1_000_000)).into_bytes())]
#[case::control_characters(br#"{"node_id":"r0\u001b]0;owned\u0007\nFAKE LOG LINE"}"#.to_vec())]
#[case::binary(vec![0xff; 1_000_000])]
fn garbage_in_the_leaders_candidate_node_stays_out_of_status_and_annotations(
    #[case] garbage: Vec<u8>,
) {
    // Given two replicas, the follower seeing who leads
    let zk = ZkCluster::standalone();
    let mut g = Group::new(&zk.connect_string());
    g.spawn(2);
    let leader = g.wait_leader(Duration::from_secs(20));
    let follower = 1 - leader;
    let leader_id = format!("r{leader}");
    g.replica(follower).wait_status(
        |s| s.leader.as_deref() == Some(leader_id.as_str()),
        Duration::from_secs(10),
    );
    // When a foreign client overwrites the leader's candidate node with garbage
    let path = overwrite_leader_candidate(&zk, &garbage);
    // Then the follower's /status (what its Pod annotations mirror) drops
    // the leader's name instead of showing the garbage, and stays so
    let f = g.replica(follower);
    f.wait_status(|s| s.leader.is_none(), Duration::from_secs(10));
    for _ in 0..10 {
        let s = f.status().unwrap();
        assert!(
            s.leader.as_deref().is_none_or(sane),
            "leader: {:?}",
            s.leader.map(|l| l.chars().take(80).collect::<String>())
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // And `election status` shows `?` for that node, bounded
    let out = Command::new(env!("CARGO_BIN_EXE_election"))
        .args([
            "status",
            "--zk-servers",
            &zk.connect_string(),
            "--zk-root",
            ROOT,
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.len() < 1024, "{} bytes", text.len());
    assert!(!text.contains('\u{1b}') && !text.contains("FAKE"), "{text}");
    let row = text.lines().find(|l| l.contains(&path)).expect(&text);
    assert!(row.contains(" ? "), "{row}");
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
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let ids: Vec<&serde_json::Value> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| &r["node_id"])
        .collect();
    assert!(ids.contains(&&serde_json::Value::Null), "{rows}");
    // And the leader goes on writing
    let token = g.newest_record().unwrap().token;
    g.wait_more_files_of(token, 3, Duration::from_secs(10));
    g.stop_all();
    g.assert_invariants();
}

#[test]
fn a_tls_file_swapped_for_a_fifo_never_stalls_the_daemon_or_sigterm() {
    // Given a replica with TLS files, retrying a server that does not
    // answer, so it reads the files at every connect
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    let made = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args([
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=election-test",
            "-keyout",
        ])
        .arg(dir.path().join("ca.key"))
        .arg("-out")
        .arg(&ca)
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let servers = format!("127.0.0.1:{}", common::free_port());
    let http = format!("127.0.0.1:{}", common::free_port());
    let files = dir.path().join("files");
    let r = common::replica::Replica::spawn(
        &[
            "run",
            "--zk-servers",
            &servers,
            "--zk-tls-ca-file",
            ca.to_str().unwrap(),
            "--zk-connect-timeout",
            "1s",
            "--failover-max-backoff",
            "200ms",
            "--file-dir",
            files.to_str().unwrap(),
            "--node-id",
            "r0",
            "--http-addr",
            &http,
            "--admin-addr",
            "off",
        ],
        &[],
    );
    r.wait_status(|s| s.state == "failover", Duration::from_secs(10));
    // When the CA file becomes a FIFO that nobody writes (a read of it
    // blocks forever)
    std::fs::remove_file(&ca).unwrap();
    let c = std::ffi::CString::new(ca.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
    // Then the daemon keeps answering and says what is wrong with the file
    let s = r.wait_status(
        |s| s.cause_detail.contains("not a regular file"),
        Duration::from_secs(10),
    );
    assert!(s.cause_detail.contains("ca.pem"), "{}", s.cause_detail);
    for _ in 0..10 {
        assert!(
            r.status().is_some(),
            "/status stopped answering\n{}",
            r.output()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // And SIGTERM stops it at once, exit 0
    assert!(r.signal(libc::SIGTERM));
    let exit = r.wait_exit(Duration::from_secs(5));
    assert_eq!(exit.and_then(|e| e.code()), Some(0), "{}", r.output());
}
