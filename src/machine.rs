//! The state machine: one [`State`] enum, the [`Step`] each state returns,
//! and the [`Context`] they share. One module per state and the loop are in
//! [`crate::states`].
//!
//! ```text
//! Init ──ok──> Attempter ──first in queue──> Leader
//!  │              │  ^                          │
//!  │ error        │  └──── node lost ───────────┤
//!  v              v                             │ session lost / disk broken
//! Failover <──────┴─────────────────────────────┘
//!  │ (backoff, fresh client)
//!  └──> Init
//! any state ── SIGTERM / SIGINT / `election release` ──> Stopping ──> exit 0
//! ```
//!
//! Each state is `async fn run(ctx, data) -> Step`: it never returns an
//! error, it logs the cause and names the next state.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::RunArgs;
pub use crate::names::{Cause, Reason, StateName};
use crate::published::{Entered, PublishedStatus};
use crate::state_dir::StateDir;
use crate::states::init::dir_check::DirCheck;
use crate::zk::{Origin, ZkSession};
use zookeeper_client::SessionInfo;

/// Everything the states share.
#[derive(Debug, Clone)]
pub struct Context {
    /// Configuration.
    pub cfg: Arc<RunArgs>,
    /// This replica's id.
    pub node_id: String,
    /// Cancelled by the first stop request (SIGTERM, SIGINT or release).
    pub cancel: CancellationToken,
    /// What asked the daemon to stop, set with `cancel` (see [`Context::stop`]).
    stop_request: Arc<OnceLock<StopRequest>>,
    /// Status, metrics and heartbeat.
    pub published: Arc<PublishedStatus>,
    /// The device file-dir was on at the first successful Init; the leader
    /// writes nowhere else (a vanished mount must not swallow files).
    pub file_dir_device: Arc<OnceLock<u64>>,
    /// Sessions of this process given up without the server's word (no
    /// acknowledged close, no `Expired` from a server): their nodes may
    /// linger until the server expires them. Attempter deletes them, the
    /// leader clears their writer node at once (their commit gate was
    /// closed), and Stopping closes them for real.
    pub abandoned_sessions: Arc<Mutex<Vec<(SessionInfo, Origin)>>>,
    /// Init's file-dir check, one at a time (read by `/healthz`).
    pub dir_check: Arc<DirCheck>,
    /// `--state-dir`, locked for the life of the process.
    pub state_dir: Option<Arc<StateDir>>,
}

/// What asked the daemon to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopRequest {
    /// SIGTERM or SIGINT.
    Signal,
    /// `election release` (`POST /release` on the admin listener), the
    /// preStop hook: leave the election, then wait for the SIGTERM.
    Release,
}

impl Context {
    /// A context for `cfg`, with a fresh published status.
    pub fn new(cfg: RunArgs) -> Context {
        let node_id = cfg.resolved_node_id();
        Context {
            published: Arc::new(PublishedStatus::new(&node_id)),
            cfg: Arc::new(cfg),
            node_id,
            cancel: CancellationToken::new(),
            stop_request: Arc::new(OnceLock::new()),
            file_dir_device: Arc::new(OnceLock::new()),
            abandoned_sessions: Arc::new(Mutex::new(Vec::new())),
            dir_check: Arc::new(DirCheck::default()),
            state_dir: None,
        }
    }

    /// This context with its locked state directory.
    pub fn with_state_dir(self, state_dir: StateDir) -> Context {
        Context {
            state_dir: Some(Arc::new(state_dir)),
            ..self
        }
    }

    /// Asks the daemon to stop: the one way in, for signals and release
    /// alike. The first request decides how the daemon ends.
    pub fn stop(&self, request: StopRequest) {
        let _ = self.stop_request.set(request);
        self.cancel.cancel();
    }

    /// What asked the daemon to stop, if anything did.
    pub fn stop_request(&self) -> Option<StopRequest> {
        self.stop_request.get().copied()
    }

    /// How a stop ends the daemon: released on a release request,
    /// stopped otherwise.
    pub fn stop_outcome(&self) -> Outcome {
        match self.stop_request() {
            Some(StopRequest::Release) => Outcome::Released,
            _ => Outcome::Stopped,
        }
    }

    /// Remembers a session given up without the server's word (bounded
    /// list), with how to connect it again.
    pub fn abandoned(&self, session: SessionInfo, origin: Origin) {
        let mut list = self
            .abandoned_sessions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !list.iter().any(|(s, _)| s.id() == session.id()) {
            list.push((session, origin));
        }
        let excess = list.len().saturating_sub(16);
        list.drain(..excess);
    }

    /// The ids of the sessions [`Context::abandoned`] remembers.
    pub fn abandoned_list(&self) -> Vec<i64> {
        self.abandoned_sessions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .map(|(s, _)| s.id().0)
            .collect()
    }

    /// Takes the sessions [`Context::abandoned`] remembers.
    pub fn take_abandoned(&self) -> Vec<(SessionInfo, Origin)> {
        std::mem::take(
            &mut *self
                .abandoned_sessions
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }
}

/// How long a replica must stay healthy (Attempter or Leader) before its
/// failures are forgotten: the backoff starts small again and
/// failover-give-up counts from the next failure.
pub const HEALTHY_PERIOD: Duration = Duration::from_secs(30);

/// Consecutive failures, carried through every state until the daemon has
/// been healthy for [`HEALTHY_PERIOD`]. A failure that strikes right after
/// Init (an ACL that forbids our create, a fencing node we cannot write)
/// therefore keeps backing off and eventually reaches failover-give-up,
/// instead of looping every 100 ms.
#[derive(Debug, Clone, Copy, Default)]
pub struct Recovery {
    /// Failed attempts so far.
    pub attempt: u32,
    /// When the first of them happened.
    pub since: Option<Instant>,
    /// Since when the daemon is healthy (in Attempter or Leader).
    pub healthy_since: Option<Instant>,
}

impl Recovery {
    /// One more failure (the first of a new series after a healthy period).
    pub fn failed(self) -> Recovery {
        let fresh = self
            .healthy_since
            .is_some_and(|t| t.elapsed() >= HEALTHY_PERIOD);
        let base = if fresh { Recovery::default() } else { self };
        Recovery {
            attempt: base.attempt.saturating_add(1),
            since: Some(base.since.unwrap_or_else(Instant::now)),
            healthy_since: None,
        }
    }

    /// The daemon reached a healthy state (kept if it already was).
    pub fn healthy(self) -> Recovery {
        Recovery {
            healthy_since: Some(self.healthy_since.unwrap_or_else(Instant::now)),
            ..self
        }
    }
}

/// A state and the data it owns.
#[derive(Debug)]
pub enum State {
    /// Entered at start and after each Failover pause. Checks file-dir,
    /// connects to ZooKeeper, makes sure the election path exists. Left to
    /// Attempter on success, to Failover on any error.
    Init {
        /// Failures so far.
        recovery: Recovery,
    },
    /// Holds a live session. Makes sure exactly one candidate node of this
    /// session exists and waits, watching only its predecessor, until it is
    /// first. Left to Leader when first, to Failover when the session is lost.
    Attempter {
        /// The live session.
        session: ZkSession,
        /// Failures so far (reset after a healthy period).
        recovery: Recovery,
    },
    /// First in the queue. Writes a file every leader-timeout while its lease
    /// is valid; suspends on disconnection. Left to Attempter if its node
    /// disappears, to Failover when the session is lost or the disk fails.
    Leader {
        /// The live session.
        session: ZkSession,
        /// Our node and its zxid.
        leadership: crate::recipe::Leadership,
        /// Failures so far (reset after a healthy period).
        recovery: Recovery,
    },
    /// Something broke. Closes the old session, waits with exponential
    /// backoff and jitter, then goes to Init with a fresh client (or stops
    /// with exit 1 after failover-give-up).
    Failover {
        /// The session to close, if any.
        session: Option<ZkSession>,
        /// Failures so far, this one included.
        recovery: Recovery,
    },
    /// Entered from any state on SIGTERM/SIGINT/release. Deletes our node,
    /// closes the session, then the process exits.
    Stopping {
        /// The session to close, if any.
        session: Option<ZkSession>,
        /// How the daemon ends.
        outcome: Outcome,
    },
}

impl State {
    /// The ZooKeeper session this state holds, if any.
    pub fn session(&self) -> Option<&ZkSession> {
        match self {
            State::Init { .. } => None,
            State::Attempter { session, .. } | State::Leader { session, .. } => Some(session),
            State::Failover { session, .. } | State::Stopping { session, .. } => session.as_ref(),
        }
    }

    /// What is published on entering this state.
    pub fn entered(&self) -> Entered<'_> {
        let session = self.session();
        Entered {
            state: self.name(),
            session_id: session.map(ZkSession::id_hex),
            session_timeout: session.map(ZkSession::timeout),
            znode: match self {
                State::Leader { leadership, .. } => Some(leadership.path.as_str()),
                _ => None,
            },
        }
    }

    /// The name of this state.
    pub fn name(&self) -> StateName {
        match self {
            State::Init { .. } => StateName::Init,
            State::Attempter { .. } => StateName::Attempter,
            State::Leader { .. } => StateName::Leader,
            State::Failover { .. } => StateName::Failover,
            State::Stopping { .. } => StateName::Stopping,
        }
    }
}

/// How the daemon ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Stopped by a signal: exit 0.
    Stopped,
    /// Left the election on a release request (the preStop hook): waits for
    /// the SIGTERM that follows, then exits 0.
    Released,
    /// Gave up after failover-give-up: exit 1.
    GaveUp,
}

/// What a state returns.
// One value per transition: its size does not matter, a Box would.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Step {
    /// Move to the next state, with the reason.
    Next(State, Reason),
    /// The daemon is done.
    Exit(Outcome),
}

impl Step {
    /// To Failover, closing `session`, with one more failure.
    pub fn failover(session: Option<ZkSession>, recovery: Recovery, why: Reason) -> Step {
        Step::Next(
            State::Failover {
                session,
                recovery: recovery.failed(),
            },
            why,
        )
    }

    /// To Stopping on a stop request (its kind decides the outcome).
    pub fn stop(ctx: &Context, session: Option<ZkSession>) -> Step {
        let outcome = ctx.stop_outcome();
        let why = match outcome {
            Outcome::Released => Cause::Released.because("release requested"),
            _ => Cause::StopRequested.because("stop requested"),
        };
        Step::Next(State::Stopping { session, outcome }, why)
    }
}

/// Sleeps for `d` unless the daemon is asked to stop first (returns false then).
pub async fn sleep_or_cancel(ctx: &Context, d: Duration) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => true,
        _ = ctx.cancel.cancelled() => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn failures_after_a_short_healthy_spell_keep_counting() {
        let r = Recovery::default().failed().healthy();
        tokio::time::advance(Duration::from_secs(1)).await;
        let r = r.failed();
        assert_eq!(
            r.attempt, 2,
            "a failure right after Init continues the series"
        );
        assert!(r.since.unwrap().elapsed() >= Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_healthy_period_starts_a_new_series() {
        let r = Recovery::default().failed().failed().healthy();
        tokio::time::advance(HEALTHY_PERIOD).await;
        // Staying healthy keeps the first moment of health.
        let r = r.healthy();
        let r = r.failed();
        assert_eq!(r.attempt, 1);
        assert_eq!(r.since.unwrap().elapsed(), Duration::ZERO);
    }
}
