//! The state machine: one [`State`] enum, one module per state, one loop.
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
//! Each state is `async fn run(self, ctx) -> Step`: it never returns an error,
//! it logs the cause and names the next state.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info, info_span};

use crate::config::RunArgs;
use crate::states::{attempter, failover, init, leader, stopping};
use crate::status::{Board, StateName};
use crate::zk::ZkSession;

/// Everything the states share.
#[derive(Debug, Clone)]
pub struct Context {
    /// Configuration.
    pub cfg: Arc<RunArgs>,
    /// This replica's id.
    pub node_id: String,
    /// Cancelled by SIGTERM, SIGINT or a release request.
    pub cancel: CancellationToken,
    /// Status, metrics and heartbeat.
    pub board: Arc<Board>,
    /// Set when the stop was asked through `election release`.
    pub released_by_request: Arc<AtomicBool>,
}

impl Context {
    /// A context for `cfg`, with a fresh board.
    pub fn new(cfg: RunArgs, cancel: CancellationToken) -> Context {
        let node_id = cfg.resolved_node_id();
        Context {
            board: Arc::new(Board::new(&node_id)),
            cfg: Arc::new(cfg),
            node_id,
            cancel,
            released_by_request: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Asks the daemon to release leadership and stop (the preStop path).
    pub fn request_release(&self) {
        self.released_by_request.store(true, Ordering::SeqCst);
        self.cancel.cancel();
    }
}

/// Consecutive failures since the daemon last reached Attempter.
#[derive(Debug, Clone, Copy, Default)]
pub struct Recovery {
    /// Failed attempts so far.
    pub attempt: u32,
    /// When the first of them happened.
    pub since: Option<Instant>,
}

impl Recovery {
    /// One more failure.
    pub fn failed(self) -> Recovery {
        Recovery {
            attempt: self.attempt.saturating_add(1),
            since: Some(self.since.unwrap_or_else(Instant::now)),
        }
    }
}

/// A state and the data it owns.
#[derive(Debug)]
pub enum State {
    /// Entered at start and after each Failover pause. Checks file-dir,
    /// connects to ZooKeeper, makes sure the election path exists. Left to
    /// Attempter on success, to Failover on any error.
    Init(Recovery),
    /// Holds a live session. Makes sure exactly one candidate node of this
    /// session exists and waits, watching only its predecessor, until it is
    /// first. Left to Leader when first, to Failover when the session is lost.
    Attempter(ZkSession),
    /// First in the queue. Writes a file every leader-timeout while its lease
    /// is valid; suspends on disconnection. Left to Attempter if its node
    /// disappears, to Failover when the session is lost or the disk fails.
    Leader(ZkSession, leader::Leadership),
    /// Something broke. Closes the old session, waits with exponential
    /// backoff and jitter, then goes to Init with a fresh client (or stops
    /// with exit 1 after failover-give-up).
    Failover(Option<ZkSession>, Recovery),
    /// Entered from any state on SIGTERM/SIGINT/release. Deletes our node,
    /// closes the session, then the process exits.
    Stopping(Option<ZkSession>, Outcome),
}

impl State {
    /// The name of this state.
    pub fn name(&self) -> StateName {
        match self {
            State::Init(_) => StateName::Init,
            State::Attempter(_) => StateName::Attempter,
            State::Leader(..) => StateName::Leader,
            State::Failover(..) => StateName::Failover,
            State::Stopping(..) => StateName::Stopping,
        }
    }
}

/// How the daemon ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Stopped on request: exit 0.
    Stopped,
    /// Gave up after failover-give-up: exit 1.
    GaveUp,
}

/// What a state returns.
#[derive(Debug)]
pub enum Step {
    /// Move to the next state, with the reason.
    Next(State, String),
    /// The daemon is done.
    Exit(Outcome),
}

/// Runs the machine from Init until it exits.
pub async fn run(ctx: Context) -> Outcome {
    let mut state = State::Init(Recovery::default());
    info!(node_id = %ctx.node_id, zk_servers = %ctx.cfg.zk_servers, zk_root = %ctx.cfg.zk_root,
        file_dir = %ctx.cfg.file_dir.display(), "starting");
    loop {
        let from = state.name();
        let span = info_span!("state", state = %from);
        let step = async {
            match state {
                State::Init(recovery) => init::run(&ctx, recovery).await,
                State::Attempter(session) => attempter::run(&ctx, session).await,
                State::Leader(session, leadership) => leader::run(&ctx, session, leadership).await,
                State::Failover(session, recovery) => failover::run(&ctx, session, recovery).await,
                State::Stopping(session, outcome) => stopping::run(&ctx, session, outcome).await,
            }
        }
        .instrument(span)
        .await;
        match step {
            Step::Next(next, cause) => {
                let to = next.name();
                info!(state = %to, from = %from, to = %to, cause = %cause, "transition");
                ctx.board.transition(from, to, &cause);
                state = next;
            }
            Step::Exit(outcome) => {
                info!(state = %from, ?outcome, "stopped");
                return outcome;
            }
        }
    }
}

/// Sleeps for `d` unless the daemon is asked to stop first (returns false then).
pub async fn sleep_or_cancel(ctx: &Context, d: Duration) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => true,
        _ = ctx.cancel.cancelled() => false,
    }
}
