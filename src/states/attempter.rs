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
//!
//! Nodes that only look like candidates are not trusted blindly: a
//! predecessor (or a second node "of ours") whose `ephemeralOwner` is not
//! the session its name claims, for example a persistent node someone
//! created by hand, is ignored for the rest of the session instead of
//! blocking the queue forever. It costs one stat, and only in that case.

use std::collections::HashSet;
use std::time::Duration;

use tokio::time::MissedTickBehavior;
use tracing::{debug, info, warn};
use zookeeper_client::{CreateMode, Error as ZkErr, EventType};

use super::leader::Leadership;
use crate::machine::{Context, Recovery, State, Step};
use crate::zk::session::{Health, Liveness, on_state, until_deadline};
use crate::zk::{
    CandidateData, Standing, ZkSession, candidate_prefix, child_path, is_live_candidate,
    order_candidates, standing,
};

/// Consecutive failed rounds (other than disconnections) before Failover.
const MAX_ROUND_ERRORS: u32 = 3;
/// Pause before retrying a failed round.
const RETRY_PAUSE: Duration = Duration::from_millis(200);

/// What one round found.
enum Round {
    /// We are first.
    Lead(Leadership),
    /// Wait for this predecessor's node to change.
    Wait(zookeeper_client::OneshotWatcher, String),
    /// Something changed under us: look again at once.
    Again,
}

/// Runs Attempter.
pub async fn run(ctx: &Context, mut session: ZkSession, recovery: Recovery) -> Step {
    let recovery = recovery.healthy();
    let mut live = Liveness::new(session.timeout(), session.state());
    let mut tick = tokio::time::interval(ctx.cfg.attempter_timeout);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    tick.tick().await;
    let round_bound = ctx.cfg.attempter_timeout.min(session.timeout());
    let mut errors = 0u32;
    let mut impostors = HashSet::new();
    loop {
        ctx.board.beat();
        if ctx.cancel.is_cancelled() {
            return Step::stop(Some(session));
        }
        let mut retry = false;
        let round = if live.is_connected() {
            // Requests wait in the client's queue while it is disconnected:
            // bound a round by the session timeout, and stay stoppable.
            let result = tokio::select! {
                r = tokio::time::timeout(round_bound, round(ctx, &session, &mut impostors)) => {
                    Some(r.unwrap_or(Err(ZkErr::Timeout)))
                }
                _ = ctx.cancel.cancelled() => None,
            };
            match result {
                Some(r) => Some(r),
                None => return Step::stop(Some(session)),
            }
        } else {
            None
        };
        let (watcher, predecessor) = match round {
            Some(Ok(Round::Lead(leadership))) => {
                return Step::Next(
                    State::Leader {
                        session,
                        leadership,
                        recovery,
                    },
                    "first in the election queue".into(),
                );
            }
            Some(Ok(Round::Again)) => {
                errors = 0;
                continue;
            }
            Some(Ok(Round::Wait(w, p))) => {
                errors = 0;
                (Some(w), p)
            }
            Some(Err(e)) => {
                // A lost connection is the session's business (the state
                // branch below); other errors count towards Failover.
                if !matches!(e, ZkErr::ConnectionLoss) {
                    errors += 1;
                }
                if zk_fatal(&e) || errors >= MAX_ROUND_ERRORS {
                    return Step::failover(
                        Some(session),
                        recovery,
                        format!("election round failed: {}", crate::zk::describe(&e)),
                    );
                }
                warn!(error = %e, errors, "election round failed; retrying");
                retry = true;
                (None, String::new())
            }
            None => (None, String::new()),
        };
        let changed = async {
            match watcher {
                Some(w) => w.changed().await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(changed);
        let retry_soon = async {
            match retry {
                true => tokio::time::sleep(RETRY_PAUSE).await,
                false => std::future::pending().await,
            }
        };
        tokio::pin!(retry_soon);
        // Wait for something that can change our standing.
        loop {
            tokio::select! {
                ev = &mut changed => {
                    debug!(event = ?ev.event_type, path = %ev.path, "predecessor changed");
                    if ev.event_type == EventType::Session {
                        // Only terminal session states reach node watchers.
                        return Step::failover(Some(session), recovery, format!("session {:?}", ev.session_state));
                    }
                    if ev.event_type == EventType::NodeDeleted {
                        info!(predecessor = %predecessor, "predecessor left; re-checking");
                    }
                    break;
                }
                state = session.state_changed() => match on_state(ctx, &mut live, state) {
                    Health::Connected => break,
                    Health::Suspended => {}
                    Health::Lost(why) => return Step::failover(Some(session), recovery, why),
                },
                _ = until_deadline(&live) => {
                    return Step::failover(Some(session), recovery, crate::zk::session::GIVE_UP_CAUSE);
                }
                // Only the heartbeat: /healthz sees a waiting candidate alive.
                _ = tick.tick() => {}
                _ = &mut retry_soon => break,
                _ = ctx.cancel.cancelled() => return Step::stop(Some(session)),
            }
            ctx.board.beat();
        }
    }
}

/// Errors after which this session is useless.
fn zk_fatal(e: &ZkErr) -> bool {
    matches!(
        e,
        ZkErr::SessionExpired | ZkErr::ClientClosed | ZkErr::AuthFailed | ZkErr::SessionMoved
    )
}

/// One look at the election.
async fn round(
    ctx: &Context,
    session: &ZkSession,
    impostors: &mut HashSet<String>,
) -> Result<Round, ZkErr> {
    let client = session.client();
    let root = ctx.cfg.zk_root.as_str();
    let sid = session.id();
    let children = match client.list_children(root).await {
        Ok(c) => c,
        Err(ZkErr::NoNode) => {
            // The election path vanished (a wiped ensemble, an operator): recreate it.
            warn!(path = root, "election path missing; recreating it");
            session.ensure_path(root).await.map_err(|e| match e {
                crate::zk::ZkError::Request { source, .. } => source,
                crate::zk::ZkError::NotAuthorized { .. } => ZkErr::NoAuth,
                other => ZkErr::UnexpectedError(other.to_string()),
            })?;
            return Ok(Round::Again);
        }
        Err(e) => return Err(e),
    };
    let mut ordered = order_candidates(&children);
    ordered.retain(|c| !impostors.contains(&c.name));
    // Nodes of sessions this process gave up without an acknowledged close
    // would sit in the queue until the server expires them: remove them.
    let abandoned = ctx.abandoned_list();
    if let Some(stale) = ordered.iter().find(|c| abandoned.contains(&c.session)) {
        let path = child_path(root, &stale.name);
        match client.check_stat(&path).await? {
            Some(stat) if is_live_candidate(stat.ephemeral_owner, stale.session) => {
                info!(node = %stale.name, "deleting the candidate node of a session this replica abandoned");
                match client.delete(&path, Some(stat.version)).await {
                    Ok(()) | Err(ZkErr::NoNode) => {}
                    Err(e) => return Err(e),
                }
            }
            Some(_) => {
                impostors.insert(stale.name.clone());
            }
            None => {}
        }
        return Ok(Round::Again);
    }
    let (standing, extra) = standing(&ordered, sid);
    if !extra.is_empty() {
        // Several nodes carry our session's name. Only those really owned by
        // this session count: an impostor that sorts first must not make
        // us delete our real node.
        let own = match &standing {
            Standing::First(c) | Standing::Behind { own: c, .. } => c.clone(),
            Standing::Absent => unreachable!("extra nodes imply one of ours"),
        };
        let mut real = Vec::new();
        for node in std::iter::once(own).chain(extra) {
            match client.check_stat(&child_path(root, &node.name)).await? {
                Some(stat) if is_live_candidate(stat.ephemeral_owner, sid) => real.push(node),
                Some(stat) => {
                    warn!(node = %node.name, owner = stat.ephemeral_owner, "ignoring a node that imitates this session");
                    impostors.insert(node.name);
                }
                None => {}
            }
        }
        // Keep the oldest real one; delete the rest (a create whose reply
        // was lost, an earlier round).
        for orphan in real.iter().skip(1) {
            warn!(node = %orphan.name, "deleting an extra candidate node of this session");
            match client.delete(&child_path(root, &orphan.name), None).await {
                Ok(()) | Err(ZkErr::NoNode) => {}
                Err(e) => return Err(e),
            }
        }
        return Ok(Round::Again);
    }
    if let Some(first) = ordered.first() {
        let leader_id = if first.session == sid {
            Some(ctx.node_id.clone())
        } else {
            match client.get_data(&child_path(root, &first.name)).await {
                Ok((data, _)) => serde_json::from_slice::<CandidateData>(&data)
                    .ok()
                    .map(|d| d.node_id),
                Err(_) => None,
            }
        };
        ctx.board.update(|s| s.leader = leader_id);
    }
    match standing {
        Standing::Absent => {
            let data = CandidateData {
                node_id: ctx.node_id.clone(),
                host: hostname(),
                pid: std::process::id(),
            };
            let body = serde_json::to_vec(&data).expect("candidate data serializes");
            let prefix = child_path(root, &candidate_prefix(sid));
            let options = CreateMode::EphemeralSequential.with_acls(session.acls());
            match client.create(&prefix, &body, &options).await {
                Ok((_, seq)) => {
                    info!(node = %format!("{prefix}{seq}"), "candidate node created");
                    Ok(Round::Again)
                }
                // The create may have landed: the next round finds it by name.
                Err(ZkErr::ConnectionLoss) => Ok(Round::Again),
                Err(e) => Err(e),
            }
        }
        Standing::First(own) => {
            let path = child_path(root, &own.name);
            match client.check_stat(&path).await? {
                Some(stat) if is_live_candidate(stat.ephemeral_owner, sid) => {
                    ctx.board.update(|s| s.znode = Some(path.clone()));
                    Ok(Round::Lead(Leadership {
                        path,
                        czxid: stat.czxid,
                    }))
                }
                Some(stat) => {
                    // Named after our session but not ours: ignore it, and
                    // the next round creates a real node.
                    warn!(path = %path, owner = stat.ephemeral_owner, "ignoring a node that imitates this session");
                    impostors.insert(own.name);
                    Ok(Round::Again)
                }
                None => Ok(Round::Again),
            }
        }
        Standing::Behind { own, predecessor } => {
            let own_path = child_path(root, &own.name);
            ctx.board.update(|s| s.znode = Some(own_path));
            let pred_path = child_path(root, &predecessor.name);
            match client.check_and_watch_stat(&pred_path).await? {
                (Some(stat), _)
                    if !is_live_candidate(stat.ephemeral_owner, predecessor.session) =>
                {
                    warn!(node = %pred_path, owner = stat.ephemeral_owner,
                        "ignoring a node that is not a live candidate of the session it names");
                    impostors.insert(predecessor.name);
                    Ok(Round::Again)
                }
                (Some(_), watcher) => {
                    debug!(predecessor = %pred_path, "waiting for predecessor");
                    Ok(Round::Wait(watcher, pred_path))
                }
                (None, _) => Ok(Round::Again),
            }
        }
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_default()
}
