//! What the daemon is doing right now, shared with the HTTP endpoints and
//! the Pod labeller: a [`Snapshot`] of its status published through a watch channel
//! and the [`Metrics`] counters.

use std::collections::HashSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::lease::Lease;
use crate::metrics::Metrics;
use crate::names::StateName;
use crate::names::{Cause, Reason};
use tokio::sync::{broadcast, watch};

/// A snapshot of the daemon, served as `/status` and mirrored on the Pod.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Snapshot {
    /// This replica's id.
    pub node_id: String,
    /// Current state.
    pub state: StateName,
    /// When the current state was entered, unix milliseconds.
    pub since_ms: u64,
    /// Node id of the current leader as last seen, if known.
    pub leader: Option<String>,
    /// Fencing token while leading.
    pub token: Option<u64>,
    /// ZooKeeper session id, hex.
    pub session_id: Option<String>,
    /// Our candidate znode.
    pub znode: Option<String>,
    /// Why the last transition happened (a bounded set of values).
    pub cause: Cause,
    /// What happened, in words.
    pub cause_detail: String,
    /// Last successful file write, unix milliseconds.
    pub last_write_ms: Option<u64>,
    /// Set once Stopping has released the ZooKeeper node (the session
    /// close was acknowledged).
    pub released: bool,
    /// Set once Stopping is done, released or not.
    pub release_done: bool,
    /// Files named like leader files that this replica refused to trust
    /// since it started (the first [`REFUSED_LISTED`]).
    pub refused_files: Vec<RefusedFile>,
    /// The session timeout the server negotiated, in milliseconds: at the
    /// session's connection, and while leading at the latest reconnection
    /// (as of the last confirmation).
    pub session_timeout_ms: Option<u64>,
    /// While leading, how long a confirmation lets the leader write, in
    /// milliseconds (see docs/design.md, the margin of the lease).
    pub lease_ms: Option<u64>,
    /// While leading, when the request of the latest good confirmation was
    /// sent (Unix milliseconds): the lease runs from there.
    pub confirmed_ms: Option<u64>,
    /// The command run while leading (`election run -- CMD`); `None`
    /// with the file writer.
    pub child: Option<ChildStatus>,
}

/// The leader's command, as `/status` shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ChildStatus {
    /// Its pid (and process group) while it runs.
    pub pid: Option<u32>,
    /// Times it was started since the daemon started.
    pub starts: u64,
    /// How its last run ended: `code=N`, `signal=N`, or why it did not run.
    pub last_exit: Option<String>,
    /// Who ended its last run: `self`, `stop`, `deadline`, `daemon-gone`,
    /// `start-failed`, `watchdog-lost`.
    pub last_ended_by: Option<String>,
    /// How long its last stop took, SIGTERM to exit, in milliseconds.
    pub last_stop_ms: Option<u64>,
}

/// A file named like a leader file whose token does not count (see
/// [`crate::readback`]), as `/status` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RefusedFile {
    /// Its name in file-dir.
    pub file: String,
    /// Why it is not trusted.
    pub reason: String,
}

/// How many refused files `/status` lists.
pub const REFUSED_LISTED: usize = 8;

/// How many refused file names the published status remembers, each reported once.
const REFUSED_REMEMBERED: usize = 1024;

impl Snapshot {
    /// The status of a daemon that just started as `node_id`.
    pub(crate) fn new(node_id: &str) -> Snapshot {
        Snapshot {
            node_id: node_id.to_owned(),
            state: StateName::Init,
            since_ms: unix_ms(SystemTime::now()),
            leader: None,
            token: None,
            session_id: None,
            znode: None,
            cause: Cause::Start,
            cause_detail: "the daemon started".into(),
            last_write_ms: None,
            released: false,
            release_done: false,
            refused_files: Vec::new(),
            session_timeout_ms: None,
            lease_ms: None,
            confirmed_ms: None,
            child: None,
        }
    }

    /// Ready means: a healthy candidate with a live session (Attempter or Leader).
    pub fn is_ready(&self) -> bool {
        matches!(self.state, StateName::Attempter | StateName::Leader)
    }
}

/// A duration in whole milliseconds.
fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Milliseconds since the unix epoch.
pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// One step of the state machine, as posted in a Kubernetes Event (the
/// status channel only keeps the latest state; this keeps every step).
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    /// State left.
    pub from: StateName,
    /// State entered.
    pub to: StateName,
    /// Why.
    pub why: Reason,
}

/// What the published status learns from the state entered (see
/// `State::entered` in the machine).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entered<'a> {
    /// Its name.
    pub state: StateName,
    /// Its ZooKeeper session, hex.
    pub session_id: Option<String>,
    /// The session timeout the server negotiated.
    pub session_timeout: Option<Duration>,
    /// Our candidate node, while leading.
    pub znode: Option<&'a str>,
}

/// The status channel, the metrics and the liveness heartbeat.
#[derive(Debug)]
pub struct PublishedStatus {
    status: watch::Sender<Snapshot>,
    transitions: broadcast::Sender<Transition>,
    /// Counters.
    pub metrics: Metrics,
    started: Instant,
    heartbeat_ms: AtomicU64,
    last_write: Mutex<Option<Instant>>,
    /// When this replica entered Leader, until its first file of that
    /// leadership (`election_takeover_seconds`).
    took_over: Mutex<Option<Instant>>,
    /// Names of the refused files reported so far.
    refused: Mutex<HashSet<String>>,
    /// The leader's lease as of its last confirmation or revocation;
    /// `None` outside Leader. Time-based, so it runs out by itself even
    /// when no one updates it.
    lease: Mutex<Option<Lease>>,
}

impl PublishedStatus {
    /// The published status of replica `node_id`, in Init.
    pub fn new(node_id: &str) -> PublishedStatus {
        PublishedStatus {
            status: watch::channel(Snapshot::new(node_id)).0,
            // Bounded: a follower that falls behind skips steps (Lagged).
            transitions: broadcast::channel(32).0,
            metrics: Metrics::default(),
            started: Instant::now(),
            heartbeat_ms: AtomicU64::new(0),
            last_write: Mutex::new(None),
            took_over: Mutex::new(None),
            refused: Mutex::new(HashSet::new()),
            lease: Mutex::new(None),
        }
    }

    /// Current snapshot.
    pub fn status(&self) -> Snapshot {
        self.status.borrow().clone()
    }

    /// Follow status changes.
    pub fn subscribe(&self) -> watch::Receiver<Snapshot> {
        self.status.subscribe()
    }

    /// Follow every transition (for Kubernetes Events).
    pub fn transitions(&self) -> broadcast::Receiver<Transition> {
        self.transitions.subscribe()
    }

    /// Records a transition to `next` and publishes the new snapshot. The
    /// snapshot is derived from the state entered: its name, its session,
    /// its node. What a state learns later goes through the methods below
    /// ([`PublishedStatus::saw_leader`], [`PublishedStatus::queued`], [`PublishedStatus::leading`],
    /// [`PublishedStatus::wrote_file`], [`PublishedStatus::stopped`]).
    pub fn transition(&self, from: StateName, next: Entered<'_>, why: Reason) {
        let to = next.state;
        self.metrics.transition(from, to);
        // A new state holds no lease until Leader confirms one.
        *self.lease.lock().unwrap() = None;
        self.entered(to);
        let has_session = next.session_id.is_some();
        let session_id = next.session_id;
        let session_timeout_ms = next.session_timeout.map(millis);
        let znode = next.znode.map(str::to_owned);
        self.status.send_modify(|s| {
            s.state = to;
            s.since_ms = unix_ms(SystemTime::now());
            s.cause = why.cause;
            s.cause_detail.clone_from(&why.detail);
            // Who leads is known only through a session.
            if !has_session {
                s.leader = None;
            }
            s.session_id = session_id;
            s.session_timeout_ms = session_timeout_ms;
            s.lease_ms = None;
            s.confirmed_ms = None;
            s.znode = znode;
            // The token is known once Leader has claimed it.
            s.token = None;
        });
        // No receiver (no Events task) is fine.
        let _ = self.transitions.send(Transition { from, to, why });
        self.beat();
    }

    /// Starts the takeover clock on entering Leader; a leadership that ends
    /// before its first file observes nothing.
    fn entered(&self, to: StateName) {
        *self.took_over.lock().unwrap() = (to == StateName::Leader).then(Instant::now);
    }

    fn update(&self, f: impl FnOnce(&mut Snapshot)) {
        self.status.send_if_modified(|s| {
            let before = s.clone();
            f(s);
            *s != before
        });
    }

    /// Attempter saw who leads (the node id in the first candidate's data).
    pub fn saw_leader(&self, leader: Option<String>) {
        self.update(|s| s.leader = leader);
    }

    /// Attempter found its candidate node in the queue.
    pub fn queued(&self, znode: &str) {
        self.update(|s| {
            if s.znode.as_deref() != Some(znode) {
                s.znode = Some(znode.to_owned());
            }
        });
    }

    /// Leader claimed its fencing token: this replica leads.
    pub fn leading(&self, node_id: &str, token: u64) {
        self.update(|s| {
            s.token = Some(token);
            s.leader = Some(node_id.to_owned());
        });
    }

    /// Leader confirmed its leadership or revoked its lease (a
    /// disconnection, leaving): [`PublishedStatus::confirmed_token`] follows it, and
    /// `/status` shows the session timeout as negotiated now and the lease.
    pub fn lease(&self, lease: &Lease) {
        *self.lease.lock().unwrap() = Some(lease.clone());
        self.update(|s| {
            s.session_timeout_ms = Some(millis(lease.session_timeout()));
            s.lease_ms = Some(millis(lease.bound()));
            if let Some(sent) = lease.confirmed_at() {
                s.confirmed_ms = Some(unix_ms(sent));
            }
        });
    }

    /// The token while this replica leads with a valid lease: confirmed by
    /// ZooKeeper less than a lease ago and not suspended since. `None`
    /// otherwise, also when Leader has stopped updating the published status.
    pub fn confirmed_token(&self) -> Option<u64> {
        let valid = self
            .lease
            .lock()
            .unwrap()
            .as_ref()
            .is_some_and(Lease::is_valid);
        let s = self.status.borrow();
        (valid && s.state == StateName::Leader)
            .then_some(s.token)
            .flatten()
    }

    /// Stopping is done; `released` when ZooKeeper acknowledged the close
    /// (`election release` reports it).
    pub fn stopped(&self, released: bool) {
        self.update(|s| {
            s.released = released;
            s.release_done = true;
        });
    }

    /// Records a refused file; true the first time its name is seen, when
    /// the caller logs it (up to [`REFUSED_REMEMBERED`] names).
    pub fn refused_file(&self, file: &str, reason: &str) -> bool {
        {
            let mut seen = self.refused.lock().unwrap();
            if seen.len() >= REFUSED_REMEMBERED || !seen.insert(file.to_owned()) {
                return false;
            }
        }
        self.update(|s| {
            if s.refused_files.len() < REFUSED_LISTED {
                s.refused_files.push(RefusedFile {
                    file: file.to_owned(),
                    reason: reason.to_owned(),
                });
            }
        });
        true
    }

    /// The leader's command started (`pid`, once known).
    pub fn child_started(&self, pid: Option<u32>) {
        self.metrics.child_starts.inc();
        self.update(|s| {
            let c = s.child.get_or_insert_with(ChildStatus::default);
            c.starts += 1;
            c.pid = pid;
        });
    }

    /// The leader's command reported its pid.
    pub fn child_pid(&self, pid: Option<u32>) {
        self.update(|s| s.child.get_or_insert_with(ChildStatus::default).pid = pid);
    }

    /// The leader's command ended.
    pub fn child_ended(&self, ended: &crate::job::Ended) {
        self.metrics.child_exits.inc();
        self.metrics
            .child_last_stop_seconds
            .set(ended.stop_time.as_secs_f64());
        self.update(|s| {
            let c = s.child.get_or_insert_with(ChildStatus::default);
            c.pid = None;
            c.last_exit = Some(ended.status.clone());
            c.last_ended_by = Some(ended.by.clone());
            c.last_stop_ms = Some(ended.stop_time.as_millis() as u64);
        });
    }

    /// Records a ZooKeeper session state change.
    pub fn zk_event(&self, state: &str) {
        self.metrics.zk_event(state);
    }

    /// Records a successful write.
    pub fn wrote_file(&self) {
        self.metrics.files_written.inc();
        if let Some(entered) = self.took_over.lock().unwrap().take() {
            self.metrics
                .takeover_seconds
                .observe(entered.elapsed().as_secs_f64());
        }
        *self.last_write.lock().unwrap() = Some(Instant::now());
        self.update(|s| s.last_write_ms = Some(unix_ms(SystemTime::now())));
    }

    /// Seconds since the last successful write, if any.
    pub fn since_last_write(&self) -> Option<Duration> {
        self.last_write.lock().unwrap().map(|t| t.elapsed())
    }

    /// The state machine is alive: called from every wait loop.
    pub fn beat(&self) {
        let ms = self.started.elapsed().as_millis() as u64;
        self.heartbeat_ms.store(ms, Ordering::Relaxed);
    }

    /// Time since the state machine last showed it is alive.
    pub fn since_heartbeat(&self) -> Duration {
        let now = self.started.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.heartbeat_ms.load(Ordering::Relaxed)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::TransitionLabels;

    /// A state entered without a session (Failover, Stopping).
    fn sessionless(state: StateName) -> Entered<'static> {
        Entered {
            state,
            session_id: None,
            session_timeout: None,
            znode: None,
        }
    }

    #[test]
    fn a_transition_derives_the_snapshot_from_the_state_entered() {
        let published = PublishedStatus::new("n1");
        let mut rx = published.subscribe();
        let mut events = published.transitions();
        published.saw_leader(Some("n2".into()));
        published.leading("n1", 7);
        published.queued("/election/c_1_0000000001");
        published.transition(
            StateName::Leader,
            sessionless(StateName::Failover),
            Cause::SessionLost.because("session Expired"),
        );
        assert!(rx.has_changed().unwrap());
        let s = rx.borrow_and_update().clone();
        assert_eq!(s.state, StateName::Failover);
        assert_eq!(s.cause, Cause::SessionLost);
        assert_eq!(s.cause_detail, "session Expired");
        // No session: nothing learned through the old one survives.
        assert!(!s.is_ready());
        assert_eq!(
            (s.token, s.leader, s.session_id, s.znode),
            (None, None, None, None)
        );
        let t = events.try_recv().unwrap();
        assert_eq!(
            (t.from, t.to, t.why.cause),
            (StateName::Leader, StateName::Failover, Cause::SessionLost)
        );
        published.transition(
            StateName::Failover,
            sessionless(StateName::Stopping),
            Cause::StopRequested.because("stop requested"),
        );
        let count = |from, to| {
            let labels = TransitionLabels { from, to };
            published.metrics.transitions.get(&labels).map(|c| c.get())
        };
        assert_eq!(count(StateName::Leader, StateName::Failover), Some(1));
        assert_eq!(count(StateName::Failover, StateName::Stopping), Some(1));
    }

    #[test]
    fn the_first_file_of_each_leadership_is_its_takeover() {
        let published = PublishedStatus::new("n1");
        let count = |b: &PublishedStatus| {
            let text = b.metrics.encode(&crate::metrics::Now {
                state: StateName::Leader,
                token: None,
                since_last_write: None,
            });
            text.lines()
                .find_map(|l| l.strip_prefix("election_takeover_seconds_count "))
                .map(str::to_owned)
        };
        published.wrote_file();
        assert_eq!(count(&published).as_deref(), Some("0"), "no leadership yet");
        // (A Leader state needs a live session: what transition() does on
        // entering a state, without one.)
        published.entered(StateName::Leader);
        published.wrote_file();
        published.wrote_file();
        assert_eq!(
            count(&published).as_deref(),
            Some("1"),
            "the first file only"
        );
        published.transition(
            StateName::Leader,
            sessionless(StateName::Failover),
            Cause::SessionLost.because(""),
        );
        published.entered(StateName::Leader);
        published.entered(StateName::Attempter);
        published.wrote_file();
        assert_eq!(
            count(&published).as_deref(),
            Some("1"),
            "a leadership without a file"
        );
        published.entered(StateName::Leader);
        published.wrote_file();
        assert_eq!(
            count(&published).as_deref(),
            Some("2"),
            "one per leadership"
        );
    }

    #[test]
    fn the_cause_is_served_as_a_kebab_case_code() {
        let names: Vec<String> = Cause::ALL
            .iter()
            .map(|c| {
                serde_json::to_value(c)
                    .unwrap()
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect();
        let as_str: Vec<&str> = Cause::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(names, as_str);
        assert!(as_str.contains(&"first-in-queue"));
    }

    #[test]
    fn each_refused_file_is_reported_once_and_the_list_is_bounded() {
        let published = PublishedStatus::new("n1");
        assert!(published.refused_file("leader_a.json", "empty"));
        assert!(!published.refused_file("leader_a.json", "empty"));
        for i in 0..REFUSED_REMEMBERED * 2 {
            published.refused_file(&format!("f{i}"), "x");
        }
        let listed = published.status().refused_files;
        assert_eq!(listed.len(), REFUSED_LISTED);
        assert_eq!(listed[0].file, "leader_a.json");
        assert_eq!(published.refused.lock().unwrap().len(), REFUSED_REMEMBERED);
        assert!(!published.refused_file("one-more", "x"), "bounded memory");
    }

    #[test]
    fn identical_updates_do_not_wake_followers() {
        let published = PublishedStatus::new("n1");
        let mut rx = published.subscribe();
        rx.borrow_and_update();
        published.saw_leader(None);
        assert!(!rx.has_changed().unwrap());
        published.saw_leader(Some("x".into()));
        assert!(rx.has_changed().unwrap());
        rx.borrow_and_update();
        published.queued("/e/c_1");
        published.queued("/e/c_1");
        assert!(rx.has_changed().unwrap());
        rx.borrow_and_update();
        published.queued("/e/c_1");
        assert!(!rx.has_changed().unwrap());
    }
}
