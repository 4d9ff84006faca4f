//! A group of daemon replicas sharing one file-dir and one election path,
//! with the queries the election tests need (who leads, the records on
//! disk, the invariant checker).

use std::path::PathBuf;
use std::time::Duration;

use election::files::{self, LeaderRecord};
use election::verify;

use super::replica::Replica;
use super::wait_until;

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
}

impl Group {
    pub fn new(servers: &str) -> Group {
        Group {
            dir: tempfile::tempdir().unwrap(),
            servers: servers.to_owned(),
            replicas: Vec::new(),
            extra: Vec::new(),
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
            self.replicas.push(Some(Replica::spawn(&refs, &[])));
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
        let dir = self.files_dir();
        files::list(&dir)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|k| std::fs::read(dir.join(k.file_name())).ok())
            .filter_map(|b| serde_json::from_slice(&b).ok())
            .collect()
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
