//! A group of daemon replicas sharing one file-dir and one election path,
//! with the queries the election tests need (who leads, the records on
//! disk, the invariant checker).

use std::path::PathBuf;
use std::time::Duration;

use election::cmd::verify;
use election::files::{self, LeaderRecord};

use super::proxy::FaultProxy;
use super::replica::Replica;
use super::wait_until;
use super::zk::ZkCluster;

/// Session timeout the groups run with.
pub const SESSION: &str = "2s";
/// Leader write interval the groups run with.
pub const LEADER_TIMEOUT: &str = "200ms";

/// A group of replicas sharing one file-dir and one election path.
pub struct Group {
    pub dir: tempfile::TempDir,
    pub servers: String,
    pub replicas: Vec<Option<Replica>>,
    pub extra: Vec<String>,
    /// Environment of every spawned replica (besides the harness defaults).
    pub env: Vec<(String, String)>,
}

impl Group {
    pub fn new(servers: &str) -> Group {
        Group {
            dir: tempfile::tempdir().unwrap(),
            servers: servers.to_owned(),
            replicas: Vec::new(),
            extra: Vec::new(),
            env: Vec::new(),
        }
    }

    pub fn files_dir(&self) -> PathBuf {
        self.dir.path().join("files")
    }

    pub fn args(&self, i: usize) -> Vec<String> {
        let mut a: Vec<String> = [
            "run",
            "--zk-servers",
            &self.servers,
            "--zk-root",
            "/election/test",
            "--zk-session-timeout",
            SESSION,
            "--leader-timeout",
            LEADER_TIMEOUT,
            "--attempter-timeout",
            "1s",
            "--file-dir",
            self.files_dir().to_str().unwrap(),
            "--storage-capacity",
            "1000",
            "--node-id",
            &format!("r{i}"),
            "--http-addr",
            "off",
            "--admin-addr",
            "off",
            "--failover-max-backoff",
            "500ms",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        // Flags in `extra` replace the defaults above.
        for flag in self.extra.iter().filter(|f| f.starts_with("--")) {
            if let Some(pos) = a.iter().position(|x| x == flag) {
                a.drain(pos..pos + 2);
            }
        }
        a.extend(self.extra.iter().cloned());
        a
    }

    pub fn spawn(&mut self, n: usize) {
        for _ in 0..n {
            let i = self.replicas.len();
            let args = self.args(i);
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            let env: Vec<(&str, &str)> = self
                .env
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            self.replicas.push(Some(Replica::spawn(&refs, &env)));
        }
    }

    pub fn replica(&self, i: usize) -> &Replica {
        self.replicas[i].as_ref().expect("replica running")
    }

    /// Index of the running replica that wrote the newest file, once there is one.
    pub fn wait_leader(&self, timeout: Duration) -> usize {
        self.wait_leader_other_than(usize::MAX, timeout)
    }

    /// Like [`Group::wait_leader`], but waits until the newest file is not by `old`.
    pub fn wait_leader_other_than(&self, old: usize, timeout: Duration) -> usize {
        let mut found = None;
        let ok = wait_until(timeout, Duration::from_millis(50), || {
            found = self
                .newest_record()
                .and_then(|r| r.node_id.strip_prefix('r').and_then(|n| n.parse().ok()));
            found.is_some_and(|i: usize| {
                i != old && self.replicas.get(i).is_some_and(|r| r.is_some())
            })
        });
        assert!(
            ok,
            "no new leader wrote a file within {timeout:?}\n{}",
            self.logs()
        );
        found.unwrap()
    }

    pub fn records(&self) -> Vec<LeaderRecord> {
        read_records(&self.files_dir())
    }

    pub fn newest_record(&self) -> Option<LeaderRecord> {
        self.records().pop()
    }

    pub fn count_leaders_in_logs(&self, i: usize) -> usize {
        self.replica(i).output().matches("to=leader").count()
    }

    pub fn logs(&self) -> String {
        let mut out = String::new();
        for (i, r) in self.replicas.iter().enumerate() {
            if let Some(r) = r {
                out.push_str(&format!("--- replica r{i} ---\n{}\n", r.output()));
            }
        }
        out
    }

    pub fn assert_invariants(&self) {
        let report = verify::check(&self.files_dir(), None).unwrap();
        assert!(
            report.is_clean(),
            "invariant violations: {:?}\n{}",
            report.violations,
            self.logs()
        );
        assert!(report.files > 0, "no files at all\n{}", self.logs());
    }

    pub fn stop_all(&mut self) {
        for r in self.replicas.iter().flatten() {
            r.signal(libc::SIGTERM);
        }
        for r in self.replicas.iter().flatten() {
            r.wait_exit(Duration::from_secs(10));
        }
    }
}

/// The leader records in `dir`, oldest first (unreadable files skipped).
pub fn read_records(dir: &std::path::Path) -> Vec<LeaderRecord> {
    files::list(dir)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|k| std::fs::read(dir.join(k.file_name())).ok())
        .filter_map(|b| serde_json::from_slice(&b).ok())
        .collect()
}

/// A leader `r0` behind `proxy`, and a second replica `r1` connected directly.
pub fn partitioned_pair(zk: &ZkCluster, proxy: &FaultProxy) -> Group {
    let mut g = Group::new(&proxy.addr().to_string());
    g.spawn(1);
    g.wait_leader(Duration::from_secs(20));
    g.servers = zk.connect_string();
    g.spawn(1);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(g.newest_record().unwrap().node_id, "r0");
    g
}

/// After a network fault on r0's link: r1 leads, and r0 wrote nothing
/// after r1's first file. Returns the records.
pub fn assert_clean_takeover_by_r1(g: &Group) -> Vec<LeaderRecord> {
    let ok = wait_until(Duration::from_secs(20), Duration::from_millis(50), || {
        g.newest_record().is_some_and(|r| r.node_id == "r1")
    });
    assert!(ok, "r1 did not take over\n{}", g.logs());
    std::thread::sleep(Duration::from_secs(3));
    let records = g.records();
    let first_new = records.iter().position(|r| r.node_id == "r1").unwrap();
    assert!(
        records[first_new..].iter().all(|r| r.node_id == "r1"),
        "{}",
        g.logs()
    );
    records
}
