//! Attempter: compete for leadership through an ephemeral sequential znode.
//!
//! Each round lists the election path once. With no node of our session we
//! create one (retries after a lost reply find it by name: no duplicate).
//! Extra nodes of our session, left by an earlier round, are deleted. If
//! ours is first, we verify it is owned by our session and lead. Otherwise
//! we watch our predecessor only and wait: its deletion wakes exactly one
//! replica, so a failover costs O(1) requests. A waiting candidate does not
//! poll: the watch on its predecessor and the session's events tell it
//! everything that can change its standing (see docs/design.md), so at rest
//! it sends only the client's pings. attempter-timeout bounds one round
//! (list, create, watch): a slower round counts as failed and is retried.
//! The round itself is [`crate::recipe::round`].

use std::collections::HashSet;
use std::time::Duration;

use tokio::time::MissedTickBehavior;
use tracing::{debug, info, warn};
use zookeeper_client::{Error as ZkErr, EventType, SessionState, WatchedEvent};

use super::health::on_state;
use crate::machine::{Cause, Context, Reason, Recovery, State, Step};
use crate::recipe::{Candidacy, Leadership, Round, round};
use crate::zk::session::{Health, Liveness, gave_up, until_deadline};
use crate::zk::{self, ZkError, ZkSession};

/// Consecutive failed rounds (other than disconnections) before Failover.
const MAX_ROUND_ERRORS: u32 = 3;
/// Pause before retrying a failed round.
const RETRY_PAUSE: Duration = Duration::from_millis(200);

/// What a candidate waits for between two rounds.
enum Wait {
    /// Its predecessor's node to change.
    Predecessor(zookeeper_client::OneshotWatcher, String),
    /// A short pause after a failed round.
    Retry,
    /// The session to reconnect (no request can be answered meanwhile).
    Reconnect,
}

/// What an event means for a waiting candidate.
enum Then {
    /// Nothing changed for us.
    KeepWaiting,
    /// Our standing may have changed: run a round.
    LookAgain,
    /// Leave Attempter.
    Leave(Exit),
}

/// Where Attempter goes next.
enum Exit {
    /// First in the queue.
    Lead(Leadership),
    /// Give the session up.
    Failover(Reason),
    /// Stop requested.
    Stop,
}

/// Attempter's data.
struct Attempter<'a> {
    ctx: &'a Context,
    session: ZkSession,
    live: Liveness,
    /// Heartbeat tick (attempter-timeout).
    tick: tokio::time::Interval,
    /// Bound on one round.
    round_bound: Duration,
    /// Failed rounds in a row (other than disconnections).
    errors: u32,
    /// Nodes that only look like candidates (see [`crate::recipe::round`]).
    impostors: HashSet<String>,
}

/// Runs Attempter.
pub async fn run(ctx: &Context, session: ZkSession, recovery: Recovery) -> Step {
    let recovery = recovery.healthy();
    let mut tick = tokio::time::interval(ctx.cfg.attempter_timeout);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    tick.tick().await;
    let mut me = Attempter {
        live: Liveness::new(session.timeout(), session.state()),
        round_bound: ctx.cfg.attempter_timeout.min(session.timeout()),
        ctx,
        session,
        tick,
        errors: 0,
        impostors: HashSet::new(),
    };
    let exit = me.compete().await;
    let session = me.session;
    match exit {
        Exit::Lead(leadership) => Step::Next(
            State::Leader {
                session,
                leadership,
                recovery,
            },
            Cause::FirstInQueue.because("first in the election queue"),
        ),
        Exit::Failover(why) => Step::failover(Some(session), recovery, why),
        Exit::Stop => Step::stop(ctx, Some(session)),
    }
}

impl Attempter<'_> {
    /// Rounds and waits until the candidate leads, fails or is stopped.
    async fn compete(&mut self) -> Exit {
        loop {
            self.ctx.published.beat();
            if self.ctx.cancel.is_cancelled() {
                return Exit::Stop;
            }
            let wait = if self.live.is_connected() {
                match self.look().await {
                    Ok(Some(wait)) => wait,
                    Ok(None) => continue,
                    Err(exit) => return exit,
                }
            } else {
                Wait::Reconnect
            };
            if let Some(exit) = self.wait(wait).await {
                return exit;
            }
        }
    }

    /// Runs one round, bounded: requests wait in the client's queue while
    /// it is disconnected. `None` means look again at once.
    async fn look(&mut self) -> Result<Option<Wait>, Exit> {
        let abandoned = self.ctx.abandoned_list();
        let me = Candidacy {
            root: &self.ctx.cfg.zk_root,
            node_id: &self.ctx.node_id,
            abandoned: &abandoned,
            impostors: &mut self.impostors,
        };
        let found = tokio::select! {
            r = tokio::time::timeout(self.round_bound, round(&self.session, me, &self.ctx.published)) => {
                r.unwrap_or_else(|_| Err(ZkError::request("round", &self.ctx.cfg.zk_root, ZkErr::Timeout)))
            }
            _ = self.ctx.cancel.cancelled() => return Err(Exit::Stop),
        };
        match found {
            Ok(Round::Lead(leadership)) => Err(Exit::Lead(leadership)),
            Ok(Round::Again) => {
                self.errors = 0;
                Ok(None)
            }
            Ok(Round::Wait(watcher, predecessor)) => {
                self.errors = 0;
                Ok(Some(Wait::Predecessor(watcher, predecessor)))
            }
            Err(e) => self.on_round_error(e).map(Some),
        }
    }

    /// A failed round: retried after a pause, unless the session is
    /// useless or rounds keep failing.
    fn on_round_error(&mut self, e: ZkError) -> Result<Wait, Exit> {
        let source = e.client_error();
        // A lost connection is the session's business (on_session_change);
        // other errors count towards Failover.
        if !source.is_some_and(zk::is_unanswered) {
            self.errors += 1;
        }
        if source.is_some_and(zk_fatal) || matches!(e, ZkError::SessionReplaced { .. }) {
            return Err(Exit::Failover(
                Cause::SessionLost.because(format!("election round failed: {e}")),
            ));
        }
        if self.errors >= MAX_ROUND_ERRORS {
            return Err(Exit::Failover(
                Cause::ZookeeperError.because(format!("election round failed: {e}")),
            ));
        }
        warn!(error = %e, errors = self.errors, "election round failed; retrying");
        Ok(Wait::Retry)
    }

    /// Waits for something that can change our standing. `None`: look again.
    async fn wait(&mut self, wait: Wait) -> Option<Exit> {
        let woken = async {
            match wait {
                Wait::Predecessor(watcher, predecessor) => {
                    Some((watcher.changed().await, predecessor))
                }
                Wait::Retry => {
                    tokio::time::sleep(RETRY_PAUSE).await;
                    None
                }
                Wait::Reconnect => std::future::pending().await,
            }
        };
        tokio::pin!(woken);
        let mut woke_up = false;
        loop {
            let then = tokio::select! {
                woke = &mut woken, if !woke_up => {
                    woke_up = true;
                    match woke {
                        Some((event, predecessor)) => on_node_event(&event, &predecessor),
                        None => Then::LookAgain,
                    }
                }
                state = self.session.state_changed() => self.on_session_change(state),
                _ = until_deadline(&self.live) => Then::Leave(Exit::Failover(gave_up())),
                // Only the heartbeat: /healthz sees a waiting candidate alive.
                _ = self.tick.tick() => Then::KeepWaiting,
                _ = self.ctx.cancel.cancelled() => Then::Leave(Exit::Stop),
            };
            self.ctx.published.beat();
            match then {
                Then::KeepWaiting => {}
                Then::LookAgain => return None,
                Then::Leave(exit) => return Some(exit),
            }
        }
    }

    fn on_session_change(&mut self, state: SessionState) -> Then {
        match on_state(self.ctx, &mut self.live, state) {
            Health::Connected => Then::LookAgain,
            Health::Suspended => Then::KeepWaiting,
            Health::Lost(why) => Then::Leave(Exit::Failover(why)),
        }
    }
}

/// The predecessor's node changed (or the session ended).
fn on_node_event(event: &WatchedEvent, predecessor: &str) -> Then {
    debug!(event = ?event.event_type, path = %event.path, "predecessor changed");
    match event.event_type {
        // Only terminal session states reach node watchers. The client
        // also reports them on its own clock: the session's state decides
        // (it may be resumed, then the next round watches again).
        EventType::Session => Then::KeepWaiting,
        EventType::NodeDeleted => {
            info!(predecessor = %predecessor, "predecessor left; re-checking");
            Then::LookAgain
        }
        _ => Then::LookAgain,
    }
}

/// Errors after which this session is useless.
fn zk_fatal(e: &ZkErr) -> bool {
    matches!(
        e,
        ZkErr::SessionExpired | ZkErr::ClientClosed | ZkErr::AuthFailed | ZkErr::SessionMoved
    )
}
