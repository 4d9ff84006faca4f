//! What the daemon is doing right now, shared with the HTTP endpoints and
//! the Pod labeller: a [`Status`] snapshot published through a watch channel
//! and a set of [`Metrics`] counters.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio::sync::{broadcast, watch};

/// Name of a state, as used in logs, labels and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StateName {
    /// Checking resources and connecting.
    Init,
    /// Competing for leadership.
    Attempter,
    /// Leading and writing files.
    Leader,
    /// Repairing after a failure.
    Failover,
    /// Shutting down.
    Stopping,
}

impl StateName {
    /// All states, in diagram order.
    pub const ALL: [StateName; 5] = [
        StateName::Init,
        StateName::Attempter,
        StateName::Leader,
        StateName::Failover,
        StateName::Stopping,
    ];

    /// Lowercase name (the value of the `election-state` label).
    pub fn as_str(self) -> &'static str {
        match self {
            StateName::Init => "init",
            StateName::Attempter => "attempter",
            StateName::Leader => "leader",
            StateName::Failover => "failover",
            StateName::Stopping => "stopping",
        }
    }
}

impl std::fmt::Display for StateName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A snapshot of the daemon, served as `/status` and mirrored on the Pod.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Status {
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
    /// Why the last transition happened.
    pub cause: String,
    /// Last successful file write, unix milliseconds.
    pub last_write_ms: Option<u64>,
    /// Set once Stopping has released the ZooKeeper node (the session
    /// close was acknowledged).
    pub released: bool,
    /// Set once Stopping is done, released or not.
    #[serde(default)]
    pub release_done: bool,
}

impl Status {
    fn new(node_id: &str) -> Status {
        Status {
            node_id: node_id.to_owned(),
            state: StateName::Init,
            since_ms: unix_ms(SystemTime::now()),
            leader: None,
            token: None,
            session_id: None,
            znode: None,
            cause: "start".into(),
            last_write_ms: None,
            released: false,
            release_done: false,
        }
    }

    /// Ready means: a healthy candidate with a live session (Attempter or Leader).
    pub fn is_ready(&self) -> bool {
        matches!(self.state, StateName::Attempter | StateName::Leader)
    }
}

/// Milliseconds since the unix epoch.
pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Counters and gauges exposed on `/metrics`.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Transitions by (from, to).
    pub transitions: Mutex<BTreeMap<(StateName, StateName), u64>>,
    /// Times this replica became leader.
    pub leadership_acquisitions: AtomicU64,
    /// Leader files written.
    pub files_written: AtomicU64,
    /// Failed leader file writes.
    pub write_errors: AtomicU64,
    /// Leader files deleted by retention.
    pub files_pruned: AtomicU64,
    /// Failed retention deletions or listings.
    pub prune_errors: AtomicU64,
    /// Writes skipped because leadership could not be confirmed.
    pub writes_fenced: AtomicU64,
    /// ZooKeeper session state changes seen, by state.
    pub zk_session_events: Mutex<BTreeMap<String, u64>>,
    /// Failed Pod patches.
    pub kube_patch_errors: AtomicU64,
    /// Successful Pod patches.
    pub kube_patches: AtomicU64,
    /// Connection attempts made in Init.
    pub zk_connect_attempts: AtomicU64,
    /// Kubernetes Events posted.
    pub kube_events: AtomicU64,
    /// Kubernetes Events that could not be posted.
    pub kube_event_errors: AtomicU64,
    /// Stale sibling leader labels corrected.
    pub kube_stale_corrected: AtomicU64,
    /// Lease mirror writes.
    pub kube_lease_writes: AtomicU64,
    /// Failed Lease mirror writes.
    pub kube_lease_errors: AtomicU64,
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
    pub cause: String,
}

/// The status channel, the metrics and the liveness heartbeat.
#[derive(Debug)]
pub struct Board {
    status: watch::Sender<Status>,
    transitions: broadcast::Sender<Transition>,
    /// Counters.
    pub metrics: Metrics,
    started: Instant,
    heartbeat_ms: AtomicU64,
    last_write: Mutex<Option<Instant>>,
}

impl Board {
    /// A board for replica `node_id`, in Init.
    pub fn new(node_id: &str) -> Board {
        Board {
            status: watch::channel(Status::new(node_id)).0,
            // Bounded: a follower that falls behind skips steps (Lagged).
            transitions: broadcast::channel(32).0,
            metrics: Metrics::default(),
            started: Instant::now(),
            heartbeat_ms: AtomicU64::new(0),
            last_write: Mutex::new(None),
        }
    }

    /// Current snapshot.
    pub fn status(&self) -> Status {
        self.status.borrow().clone()
    }

    /// Follow status changes.
    pub fn subscribe(&self) -> watch::Receiver<Status> {
        self.status.subscribe()
    }

    /// Follow every transition (for Kubernetes Events).
    pub fn transitions(&self) -> broadcast::Receiver<Transition> {
        self.transitions.subscribe()
    }

    /// Records a transition and publishes the new state.
    pub fn transition(&self, from: StateName, to: StateName, cause: &str) {
        // No receiver (no Events task) is fine.
        let _ = self.transitions.send(Transition {
            from,
            to,
            cause: cause.to_owned(),
        });
        *self
            .metrics
            .transitions
            .lock()
            .unwrap()
            .entry((from, to))
            .or_default() += 1;
        if to == StateName::Leader {
            self.metrics
                .leadership_acquisitions
                .fetch_add(1, Ordering::Relaxed);
        }
        self.status.send_modify(|s| {
            s.state = to;
            s.since_ms = unix_ms(SystemTime::now());
            s.cause = cause.to_owned();
            if to != StateName::Leader {
                s.token = None;
            }
            if matches!(to, StateName::Init | StateName::Failover) {
                s.leader = None;
                s.session_id = None;
                s.znode = None;
            }
        });
        self.beat();
    }

    /// Updates fields of the snapshot (publishes only if something changed).
    pub fn update(&self, f: impl FnOnce(&mut Status)) {
        self.status.send_if_modified(|s| {
            let before = s.clone();
            f(s);
            *s != before
        });
    }

    /// Records a ZooKeeper session state change.
    pub fn zk_event(&self, state: &str) {
        *self
            .metrics
            .zk_session_events
            .lock()
            .unwrap()
            .entry(state.to_owned())
            .or_default() += 1;
    }

    /// Records a successful write.
    pub fn wrote_file(&self) {
        self.metrics.files_written.fetch_add(1, Ordering::Relaxed);
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

    #[test]
    fn transitions_publish_state_and_count() {
        let board = Board::new("n1");
        let mut rx = board.subscribe();
        board.transition(StateName::Init, StateName::Attempter, "connected");
        assert!(rx.has_changed().unwrap());
        let s = rx.borrow_and_update().clone();
        assert_eq!(s.state, StateName::Attempter);
        assert!(s.is_ready());
        board.transition(StateName::Attempter, StateName::Leader, "first");
        assert_eq!(
            board
                .metrics
                .leadership_acquisitions
                .load(Ordering::Relaxed),
            1
        );
        let t = board.metrics.transitions.lock().unwrap();
        assert_eq!(t.get(&(StateName::Init, StateName::Attempter)), Some(&1));
    }

    #[test]
    fn identical_updates_do_not_wake_followers() {
        let board = Board::new("n1");
        let mut rx = board.subscribe();
        rx.borrow_and_update();
        board.update(|s| s.leader = None);
        assert!(!rx.has_changed().unwrap());
        board.update(|s| s.leader = Some("x".into()));
        assert!(rx.has_changed().unwrap());
    }
}
