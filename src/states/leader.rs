//! Leader: write a file every leader-timeout (or run the command), and
//! never without leadership.
//!
//! It claims the fencing token and the `writer` node
//! ([`crate::recipe::claim`]), then writes only under a [`Lease`] that
//! ZooKeeper confirmed ([`crate::recipe::confirm`]; a tick with less than
//! half the lease left confirms first, [`Lease::is_fresh`]), commits only
//! through the leadership's [`CommitGate`], and closes that gate before
//! any way out. Disconnection suspends it; write failures, overruns and
//! fenced writes count towards max-write-failures (then Failover), and a
//! write still running a session timeout after it started ends the
//! leadership at once. Why each rule holds: `docs/design.md` ("Never
//! write without leadership", "The margin of the lease").

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::time::{Instant, MissedTickBehavior};
use tracing::{error, info, warn};
use zookeeper_client::{EventType, SessionState};

mod child;
mod write;

use super::health::on_state;
use crate::files::CommitGate;
use crate::lease::Lease;
use crate::machine::{Cause, Context, Reason, Recovery, State, Step};
use crate::recipe::{self, ClaimError, Confirm, Leadership, NodeWatch};
use crate::zk::session::{Health, Liveness, gave_up, until_deadline};
use crate::zk::{self, ZkSession};
use write::{InFlight, wait_write};

/// How many times a claim is tried before Failover.
const CLAIM_ATTEMPTS: u32 = 5;

/// How long a claim that lost its connection waits for news of the
/// session before trying again when no disconnection was reported.
const RECONNECT_PAUSE: Duration = Duration::from_millis(100);

/// The least time leaving Leader waits for a commit in flight, as a
/// fraction of the session timeout (100 ms for 2 s), when the lease has
/// less left.
const COMMIT_GRACE_DIVISOR: u32 = 20;

/// Where Leader goes next.
enum Exit {
    /// Back to the queue with the same session.
    Attempter(Reason),
    /// Give the session up.
    Failover(Reason),
    /// Stop requested.
    Stop,
}

/// Leader's data.
struct Leader<'a> {
    ctx: &'a Context,
    session: ZkSession,
    leadership: Leadership,
    recovery: Recovery,
    token: u64,
    device: u64,
    live: Liveness,
    lease: Lease,
    gate: Arc<CommitGate>,
    /// Set as soon as the watch reports our node deleted; read at commit.
    node_gone: Arc<AtomicBool>,
    /// Files committed by this leadership (the last seq used).
    seq: u64,
    failures: usize,
    writing: Option<InFlight>,
    pruning: Arc<AtomicBool>,
    /// The command run instead of writing files (`election run -- CMD`).
    job: Option<crate::job::Job>,
    /// When its watchdog kills it unless renewed.
    job_deadline: Option<Instant>,
}

/// Runs Leader.
pub async fn run(
    ctx: &Context,
    session: ZkSession,
    leadership: Leadership,
    recovery: Recovery,
) -> Step {
    let device = match (ctx.cfg.job(), ctx.file_dir_device.get()) {
        // A command runs instead of the file writer: no file-dir.
        (Some(_), _) => 0,
        (None, Some(&device)) => device,
        // Init records it before Attempter; never reached.
        (None, None) => {
            return Step::failover(
                Some(session),
                recovery,
                Cause::FileDirError.because("file-dir device unknown"),
            );
        }
    };
    let mut me = Leader {
        live: Liveness::new(session.timeout(), session.state()),
        lease: Lease::negotiated(session.negotiated_timeout(), ctx.cfg.zk_tick_time),
        ctx,
        session,
        leadership,
        recovery: recovery.healthy(),
        token: 0,
        device,
        gate: Arc::new(CommitGate::new()),
        node_gone: Arc::new(AtomicBool::new(false)),
        seq: 0,
        failures: 0,
        writing: None,
        pruning: Arc::new(AtomicBool::new(false)),
        job: None,
        job_deadline: None,
    };
    let exit = match me.lease.bound() {
        b if b.is_zero() => Exit::Failover(Cause::ZookeeperError.because(format!(
            "the negotiated session timeout {:?} leaves no lease with tickTime {:?}: \
             ZooKeeper may expire the session before a confirmation could be used \
             (raise --zk-session-timeout or the servers' minSessionTimeout, or check --zk-tick-time)",
            me.session.timeout(),
            tick_time(ctx, &me.session)
        ))),
        _ => me.lead().await,
    };
    me.leave(exit).await
}

/// The servers' tickTime the lease is sized for.
fn tick_time(ctx: &Context, session: &ZkSession) -> Duration {
    crate::lease::assumed_tick_time(session.timeout(), ctx.cfg.zk_tick_time)
}

impl Leader<'_> {
    /// Claims the leadership, then writes until something ends it.
    async fn lead(&mut self) -> Exit {
        // A stop request does not wait for the claim's requests (each
        // bounded by a session timeout): a multi-op that lands anyway only
        // created ephemeral nodes of this session, which Stopping's close
        // removes, and no file is written before the claim returned.
        let ctx = self.ctx;
        let claimed = tokio::select! {
            claimed = self.claim() => claimed,
            _ = ctx.cancel.cancelled() => Err(Exit::Stop),
        };
        match claimed {
            Ok(token) => self.token = token,
            Err(exit) => return exit,
        }
        let sid = self.session.id_hex();
        info!(token = self.token, znode = %self.leadership.path, session_id = %sid, "leadership acquired");
        self.ctx.published.leading(&self.ctx.node_id, self.token);
        let watched = tokio::select! {
            watched = self.watch_node() => watched,
            _ = ctx.cancel.cancelled() => Err(Exit::Stop),
        };
        let mut node_watch = match watched {
            Ok(w) => w,
            Err(exit) => return exit,
        };
        let mut tick = tokio::time::interval(self.tick_interval());
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut rewatch = false;
        let hang_after = self.session.timeout();
        loop {
            self.ctx.published.beat();
            tokio::select! {
                biased;
                _ = self.ctx.cancel.cancelled() => return Exit::Stop,
                state = self.session.state_changed() => {
                    let was_connected = self.live.is_connected();
                    if let Some(exit) = self.on_session_change(state).await {
                        return exit;
                    }
                    if rewatch && self.live.is_connected() {
                        // Resumed with a new client: watch our node again.
                        rewatch = false;
                        node_watch = match self.watch_node().await {
                            Ok(w) => w,
                            Err(exit) => return exit,
                        };
                    }
                    if !was_connected && self.live.is_connected() {
                        // Back after a suspension: write at once (the tick
                        // confirms leadership first, as always).
                        tick.reset_immediately();
                    }
                }
                _ = until_deadline(&self.live) => {
                    return Exit::Failover(gave_up());
                }
                ev = &mut node_watch => {
                    if ev.event_type == EventType::NodeDeleted {
                        self.node_gone.store(true, Ordering::SeqCst);
                        return Exit::Attempter(Cause::LeadershipLost.because("leader node deleted"));
                    }
                    if ev.event_type == EventType::Session {
                        // The client reported the session over; the
                        // session's state decides (it may be resumed).
                        rewatch = true;
                        node_watch = Box::pin(std::future::pending());
                        continue;
                    }
                    // A data change: look again.
                    node_watch = match self.watch_node().await {
                        Ok(w) => w,
                        Err(exit) => return exit,
                    };
                }
                ended = child::ended(&mut self.job) => {
                    return self.on_child_end(ended);
                }
                end = wait_write(&mut self.writing, hang_after) => {
                    if let Some(exit) = self.on_write_end(end) {
                        return exit;
                    }
                }
                _ = tick.tick() => {
                    if let Some(exit) = self.on_tick().await {
                        return exit;
                    }
                }
            }
        }
    }

    /// Leaves Leader: closes the commit gate (waiting, bounded, for a
    /// commit in flight), then gives up the writer node or the session.
    async fn leave(self, exit: Exit) -> Step {
        // /leader says no more from here: a sidecar's work stops while the
        // command does (the lease itself is kept until the gate closes).
        let mut leaving = self.lease.clone();
        leaving.revoke();
        self.ctx.published.lease(&leaving);
        // The command first: it has exited before anything is given up.
        let mut me = self;
        me.stop_child().await;
        let Leader {
            ctx,
            session,
            recovery,
            gate,
            mut lease,
            ..
        } = me;
        // A commit in flight passed its checks under the lease: a healthy
        // rename ends long before the lease does.
        let bound = lease
            .remaining()
            .max(session.timeout() / COMMIT_GRACE_DIVISOR);
        lease.revoke();
        ctx.published.lease(&lease);
        if !close_gate(&gate, bound).await {
            return abandon(ctx, session, recovery, exit, bound);
        }
        match exit {
            Exit::Stop => Step::stop(ctx, Some(session)),
            Exit::Failover(why) => Step::failover(Some(session), recovery, why),
            Exit::Attempter(why) => {
                let released = session.bounded(recipe::delete_writer_of(
                    session.client(),
                    &ctx.cfg.zk_root,
                    session.id(),
                ));
                match released.await {
                    Ok(()) => Step::Next(State::Attempter { session, recovery }, why),
                    Err(e) => Step::failover(
                        Some(session),
                        recovery,
                        Cause::ZookeeperError.because(format!(
                            "{}; cannot release the writer node: {e}",
                            why.detail
                        )),
                    ),
                }
            }
        }
    }

    /// Claims the leadership's token together with the writer node,
    /// waiting out another session's writer node if need be.
    async fn claim(&mut self) -> Result<u64, Exit> {
        let root = self.ctx.cfg.zk_root.as_str();
        for _ in 0..CLAIM_ATTEMPTS {
            let on_disk = self.newest_on_disk().await?;
            let claimed = recipe::claim(
                &self.session,
                root,
                &self.leadership,
                on_disk,
                self.lease.pin(),
            )
            .await;
            match claimed {
                Ok(token) => return Ok(token),
                Err(ClaimError::BadFloor(bad)) => {
                    return Err(Exit::Failover(Cause::FencingError.because(bad.to_string())));
                }
                Err(ClaimError::FloorUnread(e)) if zk::is_unanswered(&e) => {
                    self.until_reconnected("reading the token floor").await?;
                }
                Err(e @ ClaimError::FloorUnread(_)) => {
                    return Err(Exit::Failover(Cause::ZookeeperError.because(e.to_string())));
                }
                Err(e @ ClaimError::Exhausted { floor, on_disk }) => {
                    error!(floor, ?on_disk, "fencing tokens exhausted");
                    return Err(Exit::Failover(Cause::FencingError.because(e.to_string())));
                }
                Err(ClaimError::WriterHeld { owner, .. }) if owner == self.session.id() => {
                    // Ours from an earlier leadership of this session.
                    self.release_writer_of(self.session.id()).await?;
                }
                Err(ClaimError::WriterHeld { owner: 0, .. }) => {}
                // A session of this process given up without the server's
                // word: it left Leader through its closed commit gate, so
                // no file of it can land; no lock-delay.
                Err(ClaimError::WriterHeld { owner, .. })
                    if self.ctx.abandoned_list().contains(&owner) =>
                {
                    info!(owner = %format!("{owner:#x}"), "clearing the writer node of a session this replica abandoned");
                    self.release_writer_of(owner).await?;
                }
                Err(ClaimError::WriterHeld { owner, lease }) => {
                    self.lock_delay(owner, lease).await?
                }
                Err(ClaimError::Rejected(zookeeper_client::Error::BadVersion)) => {
                    info!("token floor changed while claiming; trying again");
                }
                // Not allowed to move the floor (the fencing node's ACL names
                // other credentials): retrying at once from Attempter would
                // spin; Failover backs off and keeps saying why.
                Err(ClaimError::Rejected(e @ zookeeper_client::Error::NoAuth)) => {
                    return Err(Exit::Failover(
                        Cause::ZookeeperError
                            .because(format!("claim rejected: {}", zk::describe(&e))),
                    ));
                }
                Err(ClaimError::Rejected(e)) => {
                    return Err(Exit::Attempter(
                        Cause::LeadershipLost
                            .because(format!("claim rejected: {}", zk::describe(&e))),
                    ));
                }
                // The multi-op may or may not have landed: once connected
                // again, the next attempt finds out (our own writer node
                // is released and the token chosen again above the floor).
                Err(ClaimError::Request(e)) if zk::is_unanswered(&e) => {
                    self.until_reconnected("claiming leadership").await?;
                }
                Err(ClaimError::Request(e)) => {
                    return Err(Exit::Failover(
                        Cause::ZookeeperError.because(format!("cannot claim leadership: {e}")),
                    ));
                }
            }
        }
        Err(Exit::Failover(Cause::ZookeeperError.because(format!(
            "leadership not claimed after {CLAIM_ATTEMPTS} attempts"
        ))))
    }

    /// Deletes the writer node if `owner` holds it.
    async fn release_writer_of(&self, owner: i64) -> Result<(), Exit> {
        let release = recipe::delete_writer_of(self.session.client(), &self.ctx.cfg.zk_root, owner);
        self.session.bounded(release).await.map_err(|e| {
            Exit::Failover(
                Cause::ZookeeperError.because(format!("cannot remove our old writer node: {e}")),
            )
        })
    }

    /// Waits out the writer node of session `owner` ([`recipe::lock_delay`]).
    async fn lock_delay(&self, owner: i64, lease: Option<Duration>) -> Result<(), Exit> {
        let waited = recipe::lock_delay(
            &self.session,
            &self.ctx.cfg.zk_root,
            owner,
            lease,
            self.lease.bound(),
            tick_time(self.ctx, &self.session),
        );
        tokio::select! {
            _ = self.ctx.cancel.cancelled() => Err(Exit::Stop),
            waited = waited => waited.map_err(|e| {
                Exit::Failover(Cause::ZookeeperError.because(e.to_string()))
            }),
        }
    }

    /// Watches our node; leaves if it is already gone.
    async fn watch_node(&mut self) -> Result<NodeWatch, Exit> {
        let mut watched = Err(zookeeper_client::Error::ConnectionLoss);
        for attempt in 0..CLAIM_ATTEMPTS {
            if attempt > 0 {
                self.until_reconnected("watching the leader node").await?;
            }
            watched = recipe::watch_node(&self.session, &self.leadership.path).await;
            if !watched.as_ref().is_err_and(zk::is_unanswered) {
                break;
            }
        }
        match watched {
            Ok(Some(w)) => Ok(w),
            Ok(None) => {
                self.node_gone.store(true, Ordering::SeqCst);
                Err(Exit::Attempter(
                    Cause::LeadershipLost.because("leader node lost"),
                ))
            }
            Err(e) => Err(Exit::Failover(
                Cause::ZookeeperError.because(format!("cannot watch leader node: {e}")),
            )),
        }
    }

    /// A request of the claim or the watch lost its connection: the
    /// session is suspended, not lost (a ZooKeeper server restarting leaves
    /// a quorum gap of a second or so). Waits until the session is
    /// connected again, as a suspended leader does, then the caller tries
    /// again; gives the session up at the usual deadline. Nothing is
    /// written meanwhile: no file is written before the claim and the watch.
    async fn until_reconnected(&mut self, doing: &str) -> Result<(), Exit> {
        warn!(
            doing,
            "connection lost; waiting for the session to reconnect"
        );
        let ctx = self.ctx;
        loop {
            tokio::select! {
                biased;
                _ = ctx.cancel.cancelled() => return Err(Exit::Stop),
                state = self.session.state_changed() => match on_state(ctx, &mut self.live, state) {
                    Health::Connected => return Ok(()),
                    Health::Suspended => {}
                    Health::Lost(why) => return Err(Exit::Failover(why)),
                },
                _ = until_deadline(&self.live) => return Err(Exit::Failover(gave_up())),
                // Connected all along (a request that outlived its bound):
                // try again after a pause.
                _ = tokio::time::sleep(RECONNECT_PAUSE), if self.live.is_connected() => return Ok(()),
            }
        }
    }

    async fn on_session_change(&mut self, state: SessionState) -> Option<Exit> {
        match on_state(self.ctx, &mut self.live, state) {
            Health::Connected => {
                // Same session back in time (perhaps with a new client, and
                // a timeout another server negotiated): make sure the node
                // survived.
                self.lease.follow(self.session.negotiated_timeout());
                match self.confirm().await {
                    Confirm::Lost(why) => {
                        return Some(Exit::Attempter(Cause::LeadershipLost.because(why)));
                    }
                    Confirm::Held => info!("leadership confirmed after reconnection; resuming"),
                    Confirm::Unknown(why) => warn!(why, "cannot confirm leadership yet"),
                }
                None
            }
            Health::Suspended => {
                self.lease.revoke();
                self.ctx.published.lease(&self.lease);
                warn!("suspended: no writes until the session is confirmed again");
                None
            }
            Health::Lost(why) => Some(Exit::Failover(why)),
        }
    }

    async fn on_tick(&mut self) -> Option<Exit> {
        match &self.writing {
            // Slow but within its lease: let it finish.
            Some(w) if !w.overdue => return None,
            Some(_) => return self.failed("the previous write hangs past its lease"),
            None => {}
        }
        if !self.live.is_connected() {
            self.ctx.published.metrics.writes_fenced.inc();
            warn!("skipping write: suspended");
            return None;
        }
        // A lease with half its bound left carries a write: writing on it
        // is as safe as right after the confirmation that granted it. A
        // command is confirmed at every tick (every L/4 at most), so that
        // a lost confirmation or two never let its deadline pass.
        if self.ctx.cfg.job().is_some() || !self.lease.is_fresh() {
            match self.confirm().await {
                Confirm::Held => {}
                Confirm::Lost(why) => {
                    return Some(Exit::Attempter(Cause::LeadershipLost.because(why)));
                }
                Confirm::Unknown(why) => {
                    self.ctx.published.metrics.writes_fenced.inc();
                    return self.failed(&format!("leadership not confirmed: {why}"));
                }
            }
        }
        if self.ctx.cfg.job().is_some() {
            self.failures = 0;
            return self.run_child();
        }
        self.start_write();
        None
    }

    /// Counts one failure; steps down after max-write-failures in a row.
    fn failed(&mut self, why: &str) -> Option<Exit> {
        self.failures += 1;
        error!(why, failures = self.failures, "write failed");
        (self.failures >= self.ctx.cfg.max_write_failures).then(|| {
            Exit::Failover(Cause::WriteFailures.because(format!(
                "{} consecutive write failures: {why}",
                self.failures
            )))
        })
    }

    /// Confirms that our node is still ours ([`recipe::confirm`]); a good
    /// answer extends the lease.
    async fn confirm(&mut self) -> Confirm {
        let max_rtt = self.lease.max_round_trip();
        let (found, sent) = recipe::confirm(&self.session, &self.leadership.path, max_rtt).await;
        if let Confirm::Held = found {
            self.lease.confirm(sent);
            self.ctx.published.lease(&self.lease);
        }
        found
    }
}

/// Closes `gate` and waits, at most `bound`, until no commit runs; false
/// if one still does (it hangs).
async fn close_gate(gate: &CommitGate, bound: Duration) -> bool {
    gate.close();
    let deadline = Instant::now() + bound;
    while !gate.is_idle() {
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    true
}

/// Leaves Leader while a commit of this leadership hangs (a rename on a
/// hung mount): it may still land, so neither the writer node nor the
/// candidate node may go before the server expires the session. Closing
/// the session would delete both at once and let a successor write within
/// milliseconds; abandoning it (no close request, no more pings) makes the
/// successor wait for the expiry, as after a crash, and by then the
/// successor removes our temp file before its first write, so a rename
/// that has not reached the file system yet fails. Then on to Failover
/// (or out, when stopping): the daemon is not wedged.
fn abandon(
    ctx: &Context,
    session: ZkSession,
    recovery: Recovery,
    exit: Exit,
    waited: Duration,
) -> Step {
    let sid = session.id_hex();
    error!(session_id = %sid, waited = ?waited,
        "a commit hangs in file-dir holding the commit gate; abandoning the ZooKeeper session without closing it (its nodes go when the server expires it)");
    // Not remembered as abandoned: the next Attempter would delete its
    // node and shorten the successor's wait.
    session.abandon();
    match exit {
        Exit::Stop => {
            // Not released: the node goes only with the session's expiry.
            ctx.published.stopped(false);
            Step::Exit(ctx.stop_outcome())
        }
        Exit::Failover(why) | Exit::Attempter(why) => Step::failover(
            None,
            recovery,
            Reason {
                cause: why.cause,
                detail: format!(
                    "{}; a commit hangs holding the commit gate: session {sid} abandoned",
                    why.detail
                ),
            },
        ),
    }
}
