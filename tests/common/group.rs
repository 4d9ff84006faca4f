//! A group of daemon replicas sharing one file-dir and one election path,
//! with the queries the election tests need (who leads, the records on
//! disk, the invariant checker). Every replica serves HTTP on a loopback
//! port of its own, so tests can ask it what it does
//! ([`Replica::status`], [`Replica::metric`]).

use std::path::PathBuf;
use std::time::Duration;

use election::cmd::verify;
use election::files::{self, LeaderRecord};

use super::observe::{self, Status};
use super::proxy::FaultProxy;
use super::replica::Replica;
use super::zk::ZkCluster;
use super::{free_port, wait_until};

/// Session timeout the groups run with.
pub const SESSION: &str = "2s";
/// The harness's ZooKeeper tickTime (`tests/common/zk.rs`), told to the
/// replicas so that their leases are those of a 200 ms tick.
pub const TICK_TIME: &str = "200ms";
/// Leader write interval the groups run with.
pub const LEADER_TIMEOUT: &str = "200ms";
/// The metric counting state transitions by `from` and `to`.
pub const TRANSITIONS: &str = "election_transitions_total";
/// The metric counting writes refused for want of a confirmed leadership.
pub const FENCED: &str = "election_writes_fenced_total";

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

    /// The command line of replica `i`: the group's defaults (HTTP on a
    /// free loopback port), with the flags in `extra` replacing them.
    pub fn args(&self, i: usize) -> Vec<String> {
        let http = format!("127.0.0.1:{}", free_port());
        let mut a: Vec<String> = [
            "run",
            "--zk-servers",
            &self.servers,
            "--zk-root",
            "/election/test",
            "--zk-session-timeout",
            SESSION,
            "--zk-tick-time",
            TICK_TIME,
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
            &http,
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

    /// How many times replica `i` has entered Leader, from its
    /// `election_transitions_total` (0 if its listener does not answer).
    pub fn times_leader(&self, i: usize) -> f64 {
        self.replica(i)
            .metric(TRANSITIONS, &[("to", "leader")])
            .unwrap_or(0.0)
    }

    /// Waits until replica `i` has left Leader (at least one transition
    /// from it) and is not leading now: from then on no file of its
    /// leadership may land (it closes its commit gate on the way out).
    #[track_caller]
    pub fn wait_stepped_down(&self, i: usize, timeout: Duration) -> Status {
        let r = self.replica(i);
        let http = r.http_addr();
        let mut last = None;
        let ok = wait_until(timeout, Duration::from_millis(20), || {
            let left = observe::metrics(http)
                .is_some_and(|m| m.sum(TRANSITIONS, &[("from", "leader")]) >= 1.0);
            last = observe::status(http);
            left && last.as_ref().is_some_and(|s| s.state != "leader")
        });
        assert!(
            ok,
            "r{i} did not step down within {timeout:?}; last status {last:#?}\n{}",
            self.logs()
        );
        last.unwrap()
    }

    /// Replica `i`'s count of writes it refused for want of a confirmed
    /// leadership (`election_writes_fenced_total`; 0 if it does not answer).
    pub fn writes_fenced(&self, i: usize) -> f64 {
        self.replica(i).metric(FENCED, &[]).unwrap_or(0.0)
    }

    /// Waits until replica `i` can write no more: it refused a write for
    /// want of a confirmed leadership after having refused
    /// `fenced_before` (a refusal happens only with no write in flight,
    /// and no write starts again before leadership is confirmed), or it
    /// has stepped down (see [`Group::wait_stepped_down`]).
    #[track_caller]
    pub fn wait_writes_stopped(&self, i: usize, fenced_before: f64, timeout: Duration) {
        let http = self.replica(i).http_addr();
        let ok = wait_until(timeout, Duration::from_millis(20), || {
            let Some(m) = observe::metrics(http) else {
                return false;
            };
            m.sum(FENCED, &[]) > fenced_before
                || (m.sum(TRANSITIONS, &[("from", "leader")]) >= 1.0
                    && observe::status(http).is_some_and(|s| s.state != "leader"))
        });
        assert!(
            ok,
            "r{i} still writes (or its listener is silent) after {timeout:?}\n{}",
            self.logs()
        );
    }

    /// [`Group::wait_writes_stopped`], then checks that the last file
    /// landed less than `bound` after `cut` (the moment ZooKeeper was cut
    /// off). Returns how many files there are.
    #[track_caller]
    pub fn assert_last_write_within(
        &self,
        i: usize,
        fenced_before: f64,
        cut: std::time::SystemTime,
        bound: Duration,
    ) -> usize {
        self.wait_writes_stopped(i, fenced_before, Duration::from_secs(10));
        let records = self.records();
        let last = records.last().expect("the leader wrote before the cut");
        let last_ms = election::cmd::verify::parse_time_ms(&last.written_at).unwrap();
        let after = last_ms - election::published::unix_ms(cut) as i64;
        assert!(
            after < bound.as_millis() as i64,
            "last write {after} ms after ZooKeeper was cut off (bound {bound:?})\n{}",
            self.logs()
        );
        records.len()
    }

    /// Waits until the leadership of `token` has written `n` more files
    /// than now (counted by sequence number, so retention does not hide
    /// progress): time passing, measured in the leader's own writes.
    #[track_caller]
    pub fn wait_more_files_of(&self, token: u64, n: u64, timeout: Duration) {
        let newest_seq = || {
            self.records()
                .iter()
                .filter(|r| r.token == token)
                .map(|r| r.seq)
                .max()
                .unwrap_or(0)
        };
        let from = newest_seq();
        let ok = wait_until(timeout, Duration::from_millis(20), || {
            newest_seq() >= from + n
        });
        assert!(
            ok,
            "token {token} wrote fewer than {n} files after seq {from} within {timeout:?}\n{}",
            self.logs()
        );
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

/// The leader records in `dir`, oldest first (files a leader would refuse
/// skipped; a FIFO named like a leader file never blocks).
pub fn read_records(dir: &std::path::Path) -> Vec<LeaderRecord> {
    files::list(dir)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|k| election::readback::read(dir, k).ok())
        .collect()
}

/// A leader `r0` behind `proxy`, and a second replica `r1` connected
/// directly, waiting in the queue behind it.
pub fn partitioned_pair(zk: &ZkCluster, proxy: &FaultProxy) -> Group {
    let mut g = Group::new(&proxy.addr().to_string());
    g.spawn(1);
    g.wait_leader(Duration::from_secs(20));
    g.servers = zk.connect_string();
    g.spawn(1);
    g.replica(1)
        .wait_status(|s| s.state == "attempter", Duration::from_secs(20));
    assert_eq!(g.newest_record().unwrap().node_id, "r0");
    assert_eq!(g.times_leader(1), 0.0, "{}", g.logs());
    g
}

/// After a network fault on r0's link (just applied): r1 leads, and r0
/// wrote nothing after r1's first file, checked once r0 can write no more
/// (see [`Group::wait_writes_stopped`]) and r1 has written 3 more files
/// since. Returns the records.
pub fn assert_clean_takeover_by_r1(g: &Group) -> Vec<LeaderRecord> {
    let fenced_before = g.writes_fenced(0);
    let mut token = None;
    let ok = wait_until(Duration::from_secs(20), Duration::from_millis(50), || {
        token = g
            .newest_record()
            .filter(|r| r.node_id == "r1")
            .map(|r| r.token);
        token.is_some()
    });
    assert!(ok, "r1 did not take over\n{}", g.logs());
    g.wait_writes_stopped(0, fenced_before, Duration::from_secs(20));
    g.wait_more_files_of(token.unwrap(), 3, Duration::from_secs(10));
    let records = g.records();
    let first_new = records.iter().position(|r| r.node_id == "r1").unwrap();
    assert!(
        records[first_new..].iter().all(|r| r.node_id == "r1"),
        "{}",
        g.logs()
    );
    records
}
